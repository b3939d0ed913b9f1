/*
 * smtp_parse.c - pure SMTP parsers (see smtp_parse.h).
 *
 * Exports smtp_parse_command, smtp_verb_name, smtp_parse_path, smtp_path_param,
 * smtp_reply_init, smtp_reply_feed, smtp_reply_line, smtp_caps_parse,
 * smtp_valid_hostname, smtp_utf8_check, smtp_base64_valid and
 * smtp_sasl_mech_valid. Input
 * is untrusted: every function bounds what it reads and what it writes.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

static int path_local(const char **pp, const char *end, char *out, size_t *olen);
static int path_domain(const char **pp, const char *end, char *out, size_t *olen);
static int path_params(const char *p, const char *end, struct smtp_path *out);
static int out_put(char *out, size_t *olen, char c);
static int is_atext(unsigned char c);
static int reply_text_ok(const char *p, size_t len);
static int cap_is(const char *line, size_t len, const char *kw, const char **arg, size_t *arglen);

static const char *const verb_names[SMTP_VERB_COUNT] = {
    [SMTP_VERB_UNKNOWN] = "UNKNOWN",
    [SMTP_VERB_HELO] = "HELO",
    [SMTP_VERB_EHLO] = "EHLO",
    [SMTP_VERB_MAIL] = "MAIL",
    [SMTP_VERB_RCPT] = "RCPT",
    [SMTP_VERB_DATA] = "DATA",
    [SMTP_VERB_RSET] = "RSET",
    [SMTP_VERB_NOOP] = "NOOP",
    [SMTP_VERB_QUIT] = "QUIT",
    [SMTP_VERB_HELP] = "HELP",
    [SMTP_VERB_VRFY] = "VRFY",
    [SMTP_VERB_EXPN] = "EXPN",
    [SMTP_VERB_STARTTLS] = "STARTTLS",
    [SMTP_VERB_AUTH] = "AUTH",
    [SMTP_VERB_BDAT] = "BDAT",
    [SMTP_VERB_XCLIENT] = "XCLIENT",
    [SMTP_VERB_XFORWARD] = "XFORWARD",
    [SMTP_VERB_ETRN] = "ETRN",
};

/* smtp_parse_command - split a command line into verb and argument */
int
smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
	size_t i, vlen;
	int v;

	memset(cmd, 0, sizeof(*cmd));
	cmd->arg = "";
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return PC_ERROR;
	}
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (len == 0)
		return PC_ERROR;
	for (vlen = 0; vlen < len && line[vlen] != ' '; vlen++)
		;
	cmd->verb_text = line;
	cmd->verb_len = vlen;
	cmd->verb = SMTP_VERB_UNKNOWN;
	for (v = 1; v < SMTP_VERB_COUNT; v++) {
		if (strlen(verb_names[v]) == vlen && strncasecmp(verb_names[v], line, vlen) == 0) {
			cmd->verb = (enum smtp_verb)v;
			break;
		}
	}
	i = vlen;
	while (i < len && line[i] == ' ')
		i++;
	cmd->arg = line + i;
	cmd->arg_len = len - i;
	return PC_OK;
}

/* smtp_verb_name - a verb's name in upper case */
const char *
smtp_verb_name(enum smtp_verb verb)
{
	if ((int)verb < 0 || verb >= SMTP_VERB_COUNT)
		return verb_names[SMTP_VERB_UNKNOWN];
	return verb_names[verb];
}

/* is_atext - RFC 5322 §3.2.3 atext, plus UTF-8 octets (RFC 6531) */
static int
is_atext(unsigned char c)
{
	if (isalnum(c) || c >= 0x80)
		return 1;
	return strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL && c != '\0';
}

/* out_put - append one octet to a path under construction */
static int
out_put(char *out, size_t *olen, char c)
{
	if (*olen >= SMTP_PATH_MAX)
		return SMTP_PATH_ETOOLONG;
	out[(*olen)++] = c;
	return SMTP_PATH_OK;
}

/* path_local - a dot-string or quoted-string local part (RFC 5321 §4.1.2) */
static int
path_local(const char **pp, const char *end, char *out, size_t *olen)
{
	const char *p = *pp;
	int r;

	if (p < end && *p == '"') {
		if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
			return r;
		for (;;) {
			if (p >= end)
				return SMTP_PATH_ESYNTAX;
			unsigned char c = (unsigned char)*p;
			if (c == '"')
				break;
			if (c == '\\') {
				if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
					return r;
				if (p >= end || (unsigned char)*p < 0x20 || *p == 0x7f)
					return SMTP_PATH_ESYNTAX;
			} else if (c < 0x20 || c == 0x7f) {
				return SMTP_PATH_ESYNTAX;
			}
			if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
				return r;
		}
		if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
			return r;
	} else {
		const char *start = p;
		while (p < end && (is_atext((unsigned char)*p) || *p == '.')) {
			if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
				return r;
		}
		if (p == start)
			return SMTP_PATH_ESYNTAX;
	}
	*pp = p;
	return SMTP_PATH_OK;
}

/* path_domain - a domain name or an address literal [..] */
static int
path_domain(const char **pp, const char *end, char *out, size_t *olen)
{
	const char *p = *pp, *start = p;
	int r;

	if (p < end && *p == '[') {
		while (p < end && *p != ']') {
			unsigned char c = (unsigned char)*p;
			if (c <= 0x20 || c >= 0x7f || c == '\\' || (c == '[' && p != start))
				return SMTP_PATH_ESYNTAX;
			if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
				return r;
		}
		if (p >= end || p - start < 2)
			return SMTP_PATH_ESYNTAX;
		if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
			return r;
	} else {
		while (p < end) {
			unsigned char c = (unsigned char)*p;
			if (!(isalnum(c) || c == '-' || c == '.' || c == '_' || c >= 0x80))
				break;
			if ((r = out_put(out, olen, *p++)) != SMTP_PATH_OK)
				return r;
		}
		if (p == start || *start == '.' || p[-1] == '-')
			return SMTP_PATH_ESYNTAX;
	}
	*pp = p;
	return SMTP_PATH_OK;
}

/* path_params - SP-separated esmtp-param list (RFC 5321 §4.1.2) */
static int
path_params(const char *p, const char *end, struct smtp_path *out)
{
	while (p < end) {
		struct smtp_param *sp;
		const char *k;

		while (p < end && *p == ' ')
			p++;
		if (p >= end)
			break;
		if (out->nparams >= SMTP_PARAMS_MAX)
			return SMTP_PATH_ETOOMANY;
		sp = &out->params[out->nparams];
		k = p;
		if (!isalnum((unsigned char)*p))
			return SMTP_PATH_EPARAM;
		while (p < end && (isalnum((unsigned char)*p) || *p == '-'))
			p++;
		sp->key = k;
		sp->key_len = (size_t)(p - k);
		sp->value = NULL;
		sp->value_len = 0;
		if (p < end && *p == '=') {
			const char *v = ++p;
			while (p < end && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f &&
			    *p != '=')
				p++;
			if (p == v)
				return SMTP_PATH_EPARAM;
			sp->value = v;
			sp->value_len = (size_t)(p - v);
		}
		if (p < end && *p != ' ')
			return SMTP_PATH_EPARAM;
		out->nparams++;
	}
	return SMTP_PATH_OK;
}

/* smtp_parse_path - "FROM:<path> params" or "TO:<path> params" */
enum smtp_path_result
smtp_parse_path(const char *arg, size_t len, const char *keyword, int allow_null,
    int allow_postmaster, struct smtp_path *out)
{
	const char *p = arg, *end = arg + len;
	size_t klen = strlen(keyword);
	const char *lt = NULL;
	int bracket = 0, r;

	memset(out, 0, sizeof(*out));
	if (len < klen || strncasecmp(arg, keyword, klen) != 0)
		return SMTP_PATH_ESYNTAX;
	p += klen;
	while (p < end && *p == ' ') /* Postfix tolerates "FROM: <a@b>"; so do we */
		p++;
	if (p < end && *p == '<') {
		bracket = 1;
		lt = p++;
		if (p < end && *p == '>') {
			if (!allow_null)
				return SMTP_PATH_ESYNTAX;
			p++;
			goto params;
		}
		/* Obsolete source route "@a,@b:" (RFC 5321 §4.1.2, §C): skip it. */
		if (p < end && *p == '@') {
			const char *colon = memchr(p, ':', (size_t)(end - p));
			const char *gt = memchr(p, '>', (size_t)(end - p));
			if (colon == NULL || (gt != NULL && gt < colon))
				return SMTP_PATH_ESYNTAX;
			for (const char *q = p; q < colon; q++) {
				unsigned char c = (unsigned char)*q;
				if (!(isalnum(c) || c == '@' || c == ',' || c == '.' || c == '-' ||
				        c == '[' || c == ']'))
					return SMTP_PATH_ESYNTAX;
			}
			p = colon + 1;
		}
	} else if (p >= end) {
		return SMTP_PATH_ESYNTAX;
	}

	if ((r = path_local(&p, end, out->addr, &out->addr_len)) != SMTP_PATH_OK)
		return r;
	if (p < end && *p == '@') {
		if ((r = out_put(out->addr, &out->addr_len, *p++)) != SMTP_PATH_OK)
			return r;
		out->domain_off = out->addr_len;
		if ((r = path_domain(&p, end, out->addr, &out->addr_len)) != SMTP_PATH_OK)
			return r;
	} else if (!(allow_postmaster && out->addr_len == 10 &&
	               strncasecmp(out->addr, "postmaster", 10) == 0)) {
		return SMTP_PATH_ESYNTAX;
	}
	if (bracket) {
		if (p >= end || *p != '>')
			return SMTP_PATH_ESYNTAX;
		p++;
	}
params:
	out->addr[out->addr_len] = '\0';
	if (p < end && *p != ' ')
		return SMTP_PATH_ESYNTAX;
	/* RFC 5321 §4.5.3.1.3 counts the whole path: brackets and any
	 * source route too. */
	if (out->addr_len + 2 > SMTP_PATH_MAX || (lt != NULL && (size_t)(p - lt) > SMTP_PATH_MAX))
		return SMTP_PATH_ETOOLONG;
	return (enum smtp_path_result)path_params(p, end, out);
}

/* smtp_path_param - look a parameter up by keyword */
const struct smtp_param *
smtp_path_param(const struct smtp_path *path, const char *key)
{
	size_t i, klen = strlen(key);

	for (i = 0; i < path->nparams; i++) {
		const struct smtp_param *sp = &path->params[i];
		if (sp->key_len == klen && strncasecmp(sp->key, key, klen) == 0)
			return sp;
	}
	return NULL;
}

/* smtp_reply_init - start reading a new reply */
void
smtp_reply_init(struct smtp_reply *reply)
{
	reply->code = 0;
	reply->nlines = 0;
	reply->text_len = 0;
	reply->text[0] = '\0';
}

/* reply_text_ok - printable text (TAB and UTF-8 allowed), nothing else */
static int
reply_text_ok(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}

/* smtp_reply_feed - add one line to a reply being read */
int
smtp_reply_feed(struct smtp_reply *reply, const char *line, size_t len)
{
	int code, last;
	const char *text;
	size_t tlen;

	if (len < 3 || len > SMTP_REPLY_LINE_MAX || reply->nlines >= SMTP_REPLY_LINES_MAX)
		return PC_ERROR;
	if (!isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]))
		return PC_ERROR;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (code < 200 || code > 599)
		return PC_ERROR;
	if (reply->nlines > 0 && code != reply->code)
		return PC_ERROR;
	if (len == 3) {
		last = 1;
		text = line + 3;
		tlen = 0;
	} else if (line[3] == ' ' || line[3] == '-') {
		last = line[3] == ' ';
		text = line + 4;
		tlen = len - 4;
	} else {
		return PC_ERROR;
	}
	if (!reply_text_ok(text, tlen) || reply->text_len + tlen + 1 >= SMTP_REPLY_MAX)
		return PC_ERROR;
	memcpy(reply->text + reply->text_len, text, tlen);
	reply->text_len += tlen;
	reply->text[reply->text_len++] = '\n';
	reply->text[reply->text_len] = '\0';
	reply->code = code;
	reply->nlines++;
	return last ? PC_OK : PC_AGAIN;
}

/* smtp_reply_line - the text of line n of a reply */
const char *
smtp_reply_line(const struct smtp_reply *reply, size_t n, size_t *len)
{
	const char *p = reply->text, *end = reply->text + reply->text_len;

	if (n >= reply->nlines)
		return NULL;
	while (n-- > 0) {
		p = memchr(p, '\n', (size_t)(end - p));
		if (p == NULL)
			return NULL;
		p++;
	}
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	*len = nl ? (size_t)(nl - p) : (size_t)(end - p);
	return p;
}

/* cap_is - does an EHLO line name keyword kw? If so, where is its argument */
static int
cap_is(const char *line, size_t len, const char *kw, const char **arg, size_t *arglen)
{
	size_t klen = strlen(kw);

	if (len < klen || strncasecmp(line, kw, klen) != 0)
		return 0;
	if (len > klen && line[klen] != ' ' && line[klen] != '=')
		return 0;
	*arg = line + klen;
	*arglen = len - klen;
	while (*arglen > 0 && (**arg == ' ' || **arg == '=')) {
		(*arg)++;
		(*arglen)--;
	}
	return 1;
}

/* smtp_caps_parse - what an EHLO reply offers */
void
smtp_caps_parse(const struct smtp_reply *reply, struct smtp_caps *caps)
{
	const char *line, *arg;
	size_t len, alen, n;

	memset(caps, 0, sizeof(*caps));
	for (n = 1; (line = smtp_reply_line(reply, n, &len)) != NULL; n++) {
		if (cap_is(line, len, "PIPELINING", &arg, &alen)) {
			caps->pipelining = 1;
		} else if (cap_is(line, len, "SIZE", &arg, &alen)) {
			caps->size = 1;
			caps->size_limit = 0;
			for (size_t i = 0; i < alen && isdigit((unsigned char)arg[i]); i++) {
				if (caps->size_limit > (~0ULL - 9) / 10)
					break;
				caps->size_limit = caps->size_limit * 10 + (unsigned)(arg[i] - '0');
			}
		} else if (cap_is(line, len, "8BITMIME", &arg, &alen)) {
			caps->eightbitmime = 1;
		} else if (cap_is(line, len, "SMTPUTF8", &arg, &alen)) {
			caps->smtputf8 = 1;
		} else if (cap_is(line, len, "ENHANCEDSTATUSCODES", &arg, &alen)) {
			caps->enhancedstatuscodes = 1;
		} else if (cap_is(line, len, "STARTTLS", &arg, &alen)) {
			caps->starttls = 1;
		} else if (cap_is(line, len, "AUTH", &arg, &alen)) {
			caps->auth = 1;
			if (alen >= sizeof(caps->auth_mechs))
				alen = sizeof(caps->auth_mechs) - 1;
			memcpy(caps->auth_mechs, arg, alen);
			caps->auth_mechs[alen] = '\0';
		} else if (cap_is(line, len, "XCLIENT", &arg, &alen)) {
			caps->xclient = 1;
			if (alen >= sizeof(caps->xclient_attrs))
				alen = sizeof(caps->xclient_attrs) - 1;
			memcpy(caps->xclient_attrs, arg, alen);
			caps->xclient_attrs[alen] = '\0';
		} else if (cap_is(line, len, "CHUNKING", &arg, &alen)) {
			caps->chunking = 1;
		} else if (cap_is(line, len, "DSN", &arg, &alen)) {
			caps->dsn = 1;
		}
	}
}

/* smtp_valid_hostname - see smtp_parse.h */
int
smtp_valid_hostname(const char *name, size_t len)
{
	size_t label = 0;
	int digits_only = 1;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > SMTP_HOSTNAME_MAX)
		return 0;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? name[i] : '.';

		if (c == '.') {
			if (label == 0 || label > 63 || name[i - 1] == '-')
				return 0;
			if (i < len) {
				label = 0;
				digits_only = 1;
			}
			continue;
		}
		if (c >= '0' && c <= '9') {
			label++;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
			return 0;
		if (c == '-' && label == 0)
			return 0;
		label++;
		digits_only = 0;
	}
	/* "192.0.2.1" is an address dressed as a name. */
	return !digits_only;
}

/* smtp_utf8_check - 0: ASCII only; 1: valid UTF-8 with non-ASCII; -1: not UTF-8 */
int
smtp_utf8_check(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	int wide = 0;

	while (p < end) {
		unsigned c = *p++, need, cp, min;
		if (c < 0x80)
			continue;
		wide = 1;
		/* RFC 3629 §4: no overlong forms, no surrogates, nothing past
		 * U+10FFFF (so no 0xC0, 0xC1 or 0xF5..0xFF lead octets). */
		if (c >= 0xC2 && c <= 0xDF)
			need = 1, cp = c & 0x1F, min = 0x80;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 2, cp = c & 0x0F, min = 0x800;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 3, cp = c & 0x07, min = 0x10000;
		else
			return -1;
		if ((size_t)(end - p) < need)
			return -1;
		for (unsigned i = 0; i < need; i++, p++) {
			if ((*p & 0xC0) != 0x80)
				return -1;
			cp = (cp << 6) | (*p & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return -1;
	}
	return wide;
}

/* smtp_base64_valid - RFC 4648 §4 base64 with padding, nothing else (no
 * spaces, no line breaks, no bytes outside the alphabet) */
int
smtp_base64_valid(const char *s, size_t len)
{
	size_t pad = 0;

	if (len == 0 || len % 4 != 0)
		return 0;
	while (pad < 2 && s[len - 1 - pad] == '=')
		pad++;
	for (size_t i = 0; i < len - pad; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '+' && c != '/')
			return 0;
	}
	return 1;
}

/* smtp_sasl_mech_valid - RFC 4422 §3.1: 1 to 20 of A-Z, 0-9, '-' and '_'
 * (any case: RFC 4954 mechanism names are case-insensitive) */
int
smtp_sasl_mech_valid(const char *s, size_t len)
{
	if (len == 0 || len > 20)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '-' && c != '_')
			return 0;
	}
	return 1;
}
