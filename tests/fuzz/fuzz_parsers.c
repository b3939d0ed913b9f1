/*
 * fuzz_parsers.c - libFuzzer harness for the pure code that reads what peers
 * send: command lines, MAIL/RCPT paths, backend replies and EHLO
 * capabilities, the DATA framer, PROXY headers, the header index, filter
 * replies, the configuration parser, host names, the greylist
 * plugin's sender normalisation and store keys, and the milter client's
 * packets, negotiation, socket syntax and macro names (make fuzz).
 *
 * The first input byte picks the target, the rest is its input. Besides
 * "no crash, no sanitizer report", the framer is held to the invariants of
 * DESIGN.md: what it emits for the backend has CR LF line ends only, no NUL,
 * and never a line that is a lone "." (the end of DATA: smuggling), however
 * the input is split across reads.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataread.h"
#include "message.h"
#include "proxyproto.h"
#include "smtp_parse.h"
#include "verdict.h"

/* The greylist plugin's key code: static functions, shared with the tool. */
#include "../../plugins/greylist_key.h"
/* The milter client's wire parsers. */
#include "../../plugins/milter_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the framer emitted, and the state of the check across emits. */
struct framed {
	int mode;
	unsigned long n; /* octets emitted */
	int at_sol; /* the next octet starts a line */
	int sol_dot; /* the line so far is "." */
	int prev_cr;
};

/* framed_emit - check each emitted octet as it comes */
static void
framed_emit(void *arg, const char *bytes, size_t len)
{
	struct framed *f = arg;

	for (size_t i = 0; i < len; i++) {
		char c = bytes[i];

		if (f->mode == DATAREAD_NORMALIZE)
			assert(c != '\0');
		if (c == '\n') {
			assert(f->prev_cr); /* no bare LF */
			assert(!f->sol_dot); /* never a lone "." line */
		} else if (f->prev_cr) {
			assert(0 && "bare CR");
		}
		if (f->at_sol)
			f->sol_dot = c == '.';
		else if (c != '\r')
			f->sol_dot = 0;
		f->prev_cr = c == '\r';
		f->at_sol = c == '\n';
	}
	f->n += len;
}

static void
fuzz_framer(const uint8_t *data, size_t size)
{
	struct dataread d;
	struct framed f = {0};
	size_t off = 0, consumed = 0;
	int r = PC_AGAIN;

	if (size < 3)
		return;
	f.mode = data[0] & 1 ? DATAREAD_NORMALIZE : DATAREAD_REJECT;
	f.at_sol = 1;
	dataread_init(&d, (enum dataread_mode)f.mode, data[0] & 2 ? 64 : 0, data[0] & 4 ? 8 : 0,
	    framed_emit, &f);
	/* The second byte sets the read size: every split shape gets tried. */
	size_t chunk = (size_t)data[1] % 17 + 1;
	data += 2;
	size -= 2;
	while (off < size && r == PC_AGAIN) {
		size_t n = size - off < chunk ? size - off : chunk;
		r = dataread_feed(&d, (const char *)data + off, n, &consumed);
		assert(r == PC_AGAIN || r == PC_OK);
		if (r == PC_OK)
			assert(consumed <= n);
		off += n;
	}
	/* A message the proxy would send on ends on a line end. */
	if (r == PC_OK && d.errors == 0 && f.n > 0)
		assert(f.at_sol);
}

static void
fuzz_command(const char *s, size_t n)
{
	struct smtp_cmd cmd;
	struct smtp_path path;

	if (smtp_parse_command(s, n, &cmd) != PC_OK)
		return;
	if (cmd.verb == SMTP_VERB_MAIL)
		smtp_parse_path(cmd.arg, cmd.arg_len, "FROM:", 1, 0, &path);
	else if (cmd.verb == SMTP_VERB_RCPT)
		smtp_parse_path(cmd.arg, cmd.arg_len, "TO:", 0, 1, &path);
}

static void
fuzz_reply(const char *s, size_t n)
{
	struct smtp_reply r;
	struct smtp_caps caps;
	const char *p = s, *end = s + n;
	int rc = PC_AGAIN;

	smtp_reply_init(&r);
	while (p <= end && rc == PC_AGAIN) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		rc = smtp_reply_feed(&r, p, len);
		p += len + 1;
	}
	if (rc != PC_OK)
		return;
	assert(r.code >= 200 && r.code <= 599);
	smtp_caps_parse(&r, &caps);
	for (size_t i = 0; i < r.nlines; i++) {
		size_t len;
		assert(smtp_reply_line(&r, i, &len) != NULL);
	}
}

static void
fuzz_proxyproto(const uint8_t *data, size_t size)
{
	struct proxyproto pp;
	size_t consumed = 0;
	const char *why = NULL;
	int r = proxyproto_parse(data, size, &pp, &consumed, &why);

	if (r == PC_OK)
		assert(consumed > 0 && consumed <= size);
	else if (r == PC_ERROR)
		assert(why != NULL);
	else
		assert(r == PC_AGAIN);
}

static void
fuzz_message(const char *s, size_t n, int whole)
{
	struct message m = {0};

	if (message_parse(&m, s, n, whole) == 0) {
		assert(m.body_off <= n);
		message_header(&m, "subject", 0);
		message_remove(&m, "received");
	}
	message_free(&m);
}

static void
fuzz_verdict(const char *s)
{
	char out[1024];
	const char *why = NULL;

	for (int a = PC_CONTINUE; a <= PC_DISCONNECT; a++) {
		if (verdict_reply((enum pc_action)a, PC_STAGE_RCPT, s, "mx.test", out, sizeof(out),
		        &why) == 0)
			assert(strpbrk(out, "\r\n") == NULL);
	}
}

static void
fuzz_config(const char *s, size_t n)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	config_defaults(&cfg);
	if (config_parse(&cfg, "fuzz.conf", s, n, err, sizeof(err)) == 0)
		config_check(&cfg, err, sizeof(err));
	config_free(&cfg);
}

/* fuzz_greylist - a client's address as sender, recipient and client IP:
 * the key fits the store's limit, whatever the input */
static void
fuzz_greylist(const char *s)
{
	char sender[GL_ADDR_MAX], rcpt[GL_ADDR_MAX], net[GL_NET_MAX], key[GL_KEY_BUF];
	size_t n;

	if (gl_normalise_sender(s, sender, sizeof(sender)) == 0) {
		assert(strlen(sender) <= strlen(s));
		for (const char *p = sender; *p != '\0'; p++)
			assert(!(*p >= 'A' && *p <= 'Z'));
	} else
		snprintf(sender, sizeof(sender), "x");
	if (gl_normalise_rcpt(s, rcpt, sizeof(rcpt)) != 0)
		snprintf(rcpt, sizeof(rcpt), "y");
	if (gl_network(s, 24, 64, net, sizeof(net)) != 0)
		snprintf(net, sizeof(net), "192.0.2.0/24");
	n = gl_triplet_key(net, sender, rcpt, key, sizeof(key));
	assert(n <= PC_STORE_KEY_MAX && strlen(key) == n);
	n = gl_awl_key(net, key, sizeof(key));
	assert(n <= PC_STORE_KEY_MAX);
}

/* fuzz_milter - a stream of packets from a milter: each frame, parsed as
 * the client parses it, has every string inside the packet and
 * NUL-terminated; then the input as a socket and as macro names */
static void
fuzz_milter(const uint8_t *d, size_t n, const char *s)
{
	size_t off = 0;
	struct mp_socket sock;
	char err[300], wire[72];

	while (off < n) {
		unsigned char cmd;
		const unsigned char *p;
		size_t dlen, total;
		struct mp_optneg o;
		struct mp_reply r;

		if (mp_frame(d + off, n - off, &cmd, &p, &dlen, &total, err, sizeof(err)) != 1)
			break;
		assert(total == dlen + 5 && total <= n - off);
		if (cmd == SMFIC_OPTNEG) {
			if (mp_optneg_parse(p, dlen, MP_ACTIONS_ALL, MP_PROTO_OFFER, &o, err,
			        sizeof(err)) == 0) {
				assert((o.actions & ~MP_ACTIONS_ALL) == 0);
				assert((o.protocol & ~MP_PROTO_OFFER) == 0);
				for (int i = 0; i < MP_M_COUNT; i++)
					assert(o.symlist[i] == NULL ||
					    (o.symlist[i] >= (const char *)p &&
					        o.symlist[i] + o.symlen[i] <
					            (const char *)p + dlen &&
					        o.symlist[i][o.symlen[i]] == '\0'));
			}
		} else if (mp_reply_parse(cmd, p, dlen, &r, err, sizeof(err)) == 0) {
			for (int i = 0; i < r.ns; i++)
				assert(r.s[i] >= (const char *)p &&
				    r.s[i] + strlen(r.s[i]) < (const char *)p + dlen);
		}
		off += total;
	}
	if (mp_socket_parse(s, &sock, err, sizeof(err)) == 0)
		assert(sock.path[0] != '\0' || (sock.port >= 1 && sock.port <= 65535));
	if (mp_macro_name(s, strlen(s), wire, sizeof(wire)) == 0)
		assert(strlen(wire) < sizeof(wire));
	mp_field_name(s, strlen(s));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1)
		return 0;
	/* A NUL-terminated copy for the targets that take C strings. */
	if ((s = malloc(size)) == NULL)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % 10) {
	case 0:
		fuzz_framer(data + 1, size - 1);
		break;
	case 1:
		fuzz_command(s, size - 1);
		break;
	case 2:
		fuzz_reply(s, size - 1);
		break;
	case 3:
		fuzz_proxyproto(data + 1, size - 1);
		break;
	case 4:
		fuzz_message(s, size - 1, data[0] & 8);
		break;
	case 5:
		fuzz_verdict(s);
		break;
	case 6:
		fuzz_config(s, size - 1);
		break;
	case 8:
		fuzz_greylist(s);
		break;
	case 9:
		fuzz_milter(data + 1, size - 1, s);
		break;
	default:
		smtp_valid_hostname(s, size - 1);
		break;
	}
	free(s);
	return 0;
}
