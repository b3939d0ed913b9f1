/*
 * auth.c - AUTH relayed to the backend: the client's mechanism and answers
 * go to the backend as they are (after base64 checks), its replies come
 * back; answers never reach the log. The user a 235 names becomes the
 * session's auth_user.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include <openssl/evp.h>

#include "log.h"
#include "replies.h"
#include "session.h"

static int auth_answer_ok(const char *line, size_t len);
static const struct reply *auth_syntax(const char *arg, size_t len);
static char *auth_name(const char *mech, const char *b64, size_t len);
static void on_auth(void *arg, enum backend_result res, const struct smtp_reply *r);
static void on_auth_cancelled(void *arg, enum backend_result res, const struct smtp_reply *r);

/* ---- AUTH passthrough (RFC 4954) ---- */

int
check_auth(struct session *s)
{
	const struct reply *refuse = NULL;

	if (s->cmd.arg_len == 0)
		refuse = R_AUTH_SYNTAX;
	else if (s->helo == NULL)
		refuse = R_NEED_HELO;
	else if (s->auth_user != NULL)
		refuse = R_AUTH_TWICE;
	else if (s->tx.active)
		refuse = R_AUTH_IN_TX;
	else if (!s->be.caps.auth || s->blackhole || s->be.conn == NULL)
		refuse = R_AUTH_NOT_ENABLED;
	else if (s->tls_proto == NULL && !s->cfg->auth_plaintext)
		refuse = R_NEED_TLS; /* credentials never travel in the clear */
	else
		refuse = auth_syntax(s->cmd.arg, s->cmd.arg_len);
	if (refuse != NULL) {
		session_say(s, refuse);
		return PC_ERROR;
	}
	return PC_OK;
}

/* auth_answer_ok - RFC 4954 §4: an answer to a 334 is base64, or "*" to
 * cancel; an empty line is an empty answer. Nothing else reaches the
 * backend, which trusts us with it (a CR, NUL or command hidden inside). */
static int
auth_answer_ok(const char *line, size_t len)
{
	return len == 0 || (len == 1 && line[0] == '*') || smtp_base64_valid(line, len);
}

/* auth_syntax - "mechanism [initial-response]": NULL when well-formed, else
 * the reply; the initial response is base64 or "=" (empty, RFC 4954 §4) */
static const struct reply *
auth_syntax(const char *arg, size_t len)
{
	const char *sp = memchr(arg, ' ', len);
	size_t mlen = sp ? (size_t)(sp - arg) : len;

	if (!smtp_sasl_mech_valid(arg, mlen))
		return R_AUTH_BAD_MECH;
	if (sp == NULL)
		return NULL;
	sp++;
	len -= mlen + 1;
	if ((len == 1 && sp[0] == '=') || smtp_base64_valid(sp, len))
		return NULL;
	return R_AUTH_BAD_B64;
}

/* auth_name - the user an AUTH answer names (PLAIN's authcid, LOGIN's
 * user), printable only; NULL if it does not decode */
static char *
auth_name(const char *mech, const char *b64, size_t len)
{
	unsigned char out[1024];
	const unsigned char *u;
	char name[256];
	size_t o = 0;
	int n;

	if (len == 0 || len > 1360 || len % 4 != 0)
		return NULL;
	n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)len);
	if (n < 0)
		return NULL;
	n -= (b64[len - 1] == '=') + (len > 1 && b64[len - 2] == '=');
	u = out;
	if (strcasecmp(mech, "PLAIN") == 0) { /* authzid NUL authcid NUL password */
		const unsigned char *nul = memchr(out, '\0', (size_t)n);
		if (nul == NULL)
			return NULL;
		u = nul + 1;
		n -= (int)(u - out);
		nul = memchr(u, '\0', (size_t)n);
		if (nul == NULL)
			return NULL;
		n = (int)(nul - u);
	} else if (strcasecmp(mech, "LOGIN") != 0) {
		return NULL;
	}
	for (int i = 0; i < n && o + 1 < sizeof(name); i++)
		name[o++] = u[i] > ' ' && u[i] < 0x7f ? (char)u[i] : '?';
	name[o] = '\0';
	return o > 0 ? strdup(name) : NULL;
}

void
proceed_auth(struct session *s)
{
	const char *arg = s->cmd.arg, *sp = memchr(arg, ' ', s->cmd.arg_len);
	size_t mlen = sp ? (size_t)(sp - arg) : s->cmd.arg_len;

	snprintf(s->auth_mech, sizeof(s->auth_mech), "%.*s", (int)mlen, arg);
	s->auth_step = 0;
	free(s->auth_candidate);
	s->auth_candidate = NULL;
	if (sp != NULL)
		s->auth_candidate = auth_name(s->auth_mech, sp + 1, s->cmd.arg_len - mlen - 1);
	backend_commandf(
	    &s->be, s->cfg->backend_timeout_ms, on_auth, "AUTH %.*s", (int)s->cmd.arg_len, arg);
}

/* session_auth_line - the client's answer to a 334: to the backend, never
 * to the log */
void
session_auth_line(struct session *s, char *line, size_t len)
{
	free(s->line);
	s->line = line;
	s->busy = 1;
	if (!auth_answer_ok(line, len)) {
		/* The backend still waits for an answer: cancel the exchange
		 * there (RFC 4954 §4), and tell the client why. */
		log_info(s->id, "auth: client=%s mechanism=%s: answer is not base64; cancelled",
		    s->peer, s->auth_mech);
		auth_cancel(s, R_AUTH_BAD_B64);
		return;
	}
	if (s->auth_step++ == 0 && s->auth_candidate == NULL)
		s->auth_candidate = auth_name(s->auth_mech, line, len);
	backend_command(&s->be, line, len, s->cfg->backend_timeout_ms, on_auth);
}

static void
on_auth(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	if (!session_backend_ok(s, res, r, "2345"))
		return;
	session_relay(s, r);
	if (r->code == 334) {
		s->state = SESSION_AUTH;
		session_done(s);
		return;
	}
	s->state = SESSION_COMMAND;
	log_info(s->id, "auth: client=%s user=%s mechanism=%s result=%d", s->peer,
	    s->auth_candidate ? s->auth_candidate : "unknown", s->auth_mech, r->code);
	if (r->code == 235) {
		s->auth_user = s->auth_candidate ? s->auth_candidate : strdup("unknown");
		s->auth_candidate = NULL;
	}
	free(s->auth_candidate);
	s->auth_candidate = NULL;
	session_done(s);
}

/* auth_cancel - the client's answer cannot go to the backend: "*" goes
 * instead (RFC 4954 §4), and the client gets reply once the backend has
 * dropped the exchange */
void
auth_cancel(struct session *s, const struct reply *reply)
{
	s->state = SESSION_COMMAND;
	s->auth_refusal = reply;
	backend_command(&s->be, "*", 1, s->cfg->backend_timeout_ms, on_auth_cancelled);
}

/* on_auth_cancelled - the backend's answer to our "*" */
static void
on_auth_cancelled(void *arg, enum backend_result res, const struct smtp_reply *r)
{
	struct session *s = arg;
	if (!session_backend_ok(s, res, r, "2345"))
		return;
	free(s->auth_candidate);
	s->auth_candidate = NULL;
	session_say(s, s->auth_refusal);
	session_done(s);
}
