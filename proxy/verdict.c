/*
 * verdict.c - a filter's verdict into a reply line (see verdict.h).
 *
 * Exports verdict_reply, verdict_action_name and verdict_stage_name. A
 * filter's text is untrusted (STYLE.md, 6): the code must be of the
 * verdict's class, the enhanced code of the same class, no control
 * characters (CR or LF would let a filter inject a second reply), and the
 * whole line within 512 octets (RFC 5321 §4.5.3.1.5).
 */
#include <stdio.h>
#include <string.h>

#include "replies.h"
#include "verdict.h"

static int parse_code(const char **p, int *code);
static int parse_enhanced(const char **p, char *enh, size_t size);

static const char *const action_names[] = {
    [PC_CONTINUE] = "continue",
    [PC_ACCEPT] = "accept",
    [PC_REJECT] = "reject",
    [PC_TEMPFAIL] = "tempfail",
    [PC_DROP] = "drop",
    [PC_DISCONNECT] = "disconnect",
    [PC_FAIL] = "fail",
};

static const char *const stage_names[] = {
    [PC_STAGE_CONNECT] = "connect",
    [PC_STAGE_HELO] = "helo",
    [PC_STAGE_MAIL] = "mail",
    [PC_STAGE_RCPT] = "rcpt",
    [PC_STAGE_DATA] = "data",
};

/* verdict_action_name - for logs */
const char *
verdict_action_name(int action)
{
	if (action < 0 || (size_t)action >= sizeof(action_names) / sizeof(action_names[0]))
		return "invalid";
	return action_names[action];
}

/* verdict_stage_name - for logs and PC_STAGE_NAME */
const char *
verdict_stage_name(int stage)
{
	if (stage < 0 || (size_t)stage >= sizeof(stage_names) / sizeof(stage_names[0]))
		return "none";
	return stage_names[stage];
}

/* parse_code - "NNN" followed by a blank or the end; 0 if absent, -1 if bad */
static int
parse_code(const char **p, int *code)
{
	const char *s = *p;

	/* "5.7.1 ..." and "5 apples" are not codes; "55", "55x" and "5500"
	 * are broken ones. */
	if (!(s[0] >= '0' && s[0] <= '9') || !(s[1] >= '0' && s[1] <= '9'))
		return 0;
	if (!(s[2] >= '0' && s[2] <= '9') || (s[3] != ' ' && s[3] != '\0'))
		return -1;
	/* RFC 5321 §4.2: first digit 2-5, second 0-5. */
	if (s[0] < '2' || s[0] > '5' || s[1] > '5')
		return -1;
	*code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	*p = s[3] == ' ' ? s + 4 : s + 3;
	return 1;
}

/* parse_enhanced - "C.SSS.DDD" (RFC 3463) followed by a blank or the end */
static int
parse_enhanced(const char **p, char *enh, size_t size)
{
	const char *s = *p;
	size_t n, i = 1;

	if (!(s[0] >= '0' && s[0] <= '9') || s[1] != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		i++; /* past the dot */
		for (n = 0; s[i] >= '0' && s[i] <= '9'; i++)
			n++;
		if (n < 1 || n > 3)
			return -1;
		if (part == 0 && s[i] != '.')
			return -1;
	}
	if (s[i] != ' ' && s[i] != '\0')
		return -1;
	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return -1;
	if (i >= size)
		return -1;
	memcpy(enh, s, i);
	enh[i] = '\0';
	*p = s[i] == ' ' ? s + i + 1 : s + i;
	return 1;
}

/* verdict_reply - build and check the reply line */
int
verdict_reply(enum pc_action action, enum pc_stage stage, const char *given, const char *hostname,
    char *out, size_t outlen, const char **why)
{
	int code = 0, def_code;
	char enh[16] = "";
	const char *def_enh, *def_text, *p;
	int n, has_code, has_enh;

	*why = NULL;
	switch (action) {
	case PC_REJECT:
		def_code =
		    stage == PC_STAGE_CONNECT ? R_FILTER_REJECT_CONNECT_CODE : R_FILTER_REJECT_CODE;
		def_enh = R_FILTER_REJECT_ENH;
		def_text = R_FILTER_REJECT_TEXT;
		break;
	case PC_TEMPFAIL:
		def_code = stage == PC_STAGE_CONNECT ? R_FILTER_TEMPFAIL_CONNECT_CODE
		                                     : R_FILTER_TEMPFAIL_CODE;
		def_enh = R_FILTER_TEMPFAIL_ENH;
		def_text = R_FILTER_TEMPFAIL_TEXT;
		break;
	case PC_DISCONNECT:
		def_code = R_FILTER_DISCONNECT_CODE;
		def_enh = R_FILTER_DISCONNECT_ENH;
		def_text = R_FILTER_DISCONNECT_TEXT;
		break;
	default:
		if (outlen > 0)
			out[0] = '\0';
		return 0;
	}
	if (given == NULL)
		given = "";
	if (strlen(given) > PC_REPLY_MAX) {
		*why = "reply longer than 512 octets";
		return -1;
	}
	for (p = given; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			*why = *p == '\r' || *p == '\n' ? "CR or LF in the reply"
			                                : "control character in the reply";
			return -1;
		}
	}
	p = given;
	if ((has_code = parse_code(&p, &code)) < 0) {
		*why = "malformed reply code";
		return -1;
	}
	if ((has_enh = parse_enhanced(&p, enh, sizeof(enh))) < 0) {
		*why = "malformed enhanced status code";
		return -1;
	}
	if (!has_code)
		code = def_code;
	if (code / 100 != def_code / 100) {
		*why =
		    action == PC_REJECT ? "reject needs a 5xx code" : "tempfail needs a 4xx code";
		if (action == PC_DISCONNECT)
			*why = "disconnect needs 421";
		return -1;
	}
	if (action == PC_DISCONNECT && code != 421) {
		*why = "disconnect needs 421";
		return -1;
	}
	if (has_enh && enh[0] - '0' != code / 100) {
		*why = "enhanced status code of another class than the reply code";
		return -1;
	}
	if (!has_enh)
		snprintf(enh, sizeof(enh), "%c%s", '0' + code / 100, def_enh + 1);
	if (*p == '\0')
		p = def_text;
	/* RFC 5321 §3.8: a 421 names the host; ours do too. */
	if (code == 421 && !has_code)
		n = snprintf(out, outlen, "%d %s %s %s", code, enh, hostname, p);
	else
		n = snprintf(out, outlen, "%d %s %s", code, enh, p);
	if (n < 0 || (size_t)n >= outlen || (size_t)n > PC_REPLY_MAX) {
		*why = "reply longer than 512 octets";
		return -1;
	}
	return 0;
}
