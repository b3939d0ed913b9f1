/*
 * test_smtp_parse.c - unit tests for proxy/smtp_parse.c: command lines, MAIL
 * and RCPT paths with ESMTP parameters, multi-line replies and EHLO
 * capabilities. Every input here is something a hostile client or a broken
 * backend can send; each test asserts exact results.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_parse.h"

/* ------------------------------------------------------------------ */
/* helpers */

static int
cmd_parse(const char *line, struct smtp_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	return smtp_parse_command(line, strlen(line), cmd);
}

/* Assert a command line splits into the given verb, verb text and argument. */
static void
check_cmd(const char *line, enum smtp_verb verb, const char *verb_text, const char *arg)
{
	struct smtp_cmd cmd;

	assert_int_equal(cmd_parse(line, &cmd), PC_OK);
	assert_int_equal(cmd.verb, verb);
	assert_int_equal(cmd.verb_len, strlen(verb_text));
	assert_memory_equal(cmd.verb_text, verb_text, cmd.verb_len);
	assert_non_null(cmd.arg);
	assert_int_equal(cmd.arg_len, strlen(arg));
	if (cmd.arg_len > 0)
		assert_memory_equal(cmd.arg, arg, cmd.arg_len);
}

static enum smtp_path_result
path_parse(
    const char *arg, const char *keyword, int allow_null, int allow_postmaster, struct smtp_path *p)
{
	memset(p, 0x5a, sizeof(*p));
	return smtp_parse_path(arg, strlen(arg), keyword, allow_null, allow_postmaster, p);
}

/* Assert arg parses and yields addr with its domain at domain_off. */
static void
check_path(const char *arg, const char *keyword, int allow_null, int allow_postmaster,
    const char *addr, size_t domain_off, size_t nparams)
{
	struct smtp_path p;

	assert_int_equal(path_parse(arg, keyword, allow_null, allow_postmaster, &p), SMTP_PATH_OK);
	assert_int_equal(p.addr_len, strlen(addr));
	assert_string_equal(p.addr, addr);
	assert_int_equal(p.domain_off, domain_off);
	assert_int_equal(p.nparams, nparams);
}

static void
check_path_err(const char *arg, const char *keyword, int allow_null, int allow_postmaster,
    enum smtp_path_result want)
{
	struct smtp_path p;
	enum smtp_path_result r;

	r = path_parse(arg, keyword, allow_null, allow_postmaster, &p);
	if (r != want)
		fail_msg(
		    "path \"%s\" (keyword %s): got %d, want %d", arg, keyword, (int)r, (int)want);
}

static void
check_param(const struct smtp_param *prm, const char *key, const char *value)
{
	assert_non_null(prm);
	assert_int_equal(prm->key_len, strlen(key));
	assert_memory_equal(prm->key, key, prm->key_len);
	if (value == NULL) {
		assert_null(prm->value);
	} else {
		assert_non_null(prm->value);
		assert_int_equal(prm->value_len, strlen(value));
		assert_memory_equal(prm->value, value, prm->value_len);
	}
}

static int
reply_feed(struct smtp_reply *r, const char *line)
{
	return smtp_reply_feed(r, line, strlen(line));
}

/* Feed the lines of a complete reply; every line but the last must say AGAIN. */
static void
reply_feed_all(struct smtp_reply *r, const char *const *lines, size_t n)
{
	size_t i;

	smtp_reply_init(r);
	for (i = 0; i < n; i++) {
		int rc = reply_feed(r, lines[i]);
		int want = i + 1 < n ? PC_AGAIN : PC_OK;
		if (rc != want)
			fail_msg("reply line %zu \"%s\": got %d, want %d", i, lines[i], rc, want);
	}
}

static void
check_reply_line(const struct smtp_reply *r, size_t n, const char *want)
{
	const char *s;
	size_t len = 12345;

	s = smtp_reply_line(r, n, &len);
	assert_non_null(s);
	assert_int_equal(len, strlen(want));
	if (len > 0)
		assert_memory_equal(s, want, len);
}

/* ------------------------------------------------------------------ */
/* command lines */

static void
test_cmd_verbs(void **state)
{
	static const struct {
		const char *text;
		enum smtp_verb verb;
	} verbs[] = {
	    {"HELO", SMTP_VERB_HELO},
	    {"EHLO", SMTP_VERB_EHLO},
	    {"MAIL", SMTP_VERB_MAIL},
	    {"RCPT", SMTP_VERB_RCPT},
	    {"DATA", SMTP_VERB_DATA},
	    {"RSET", SMTP_VERB_RSET},
	    {"NOOP", SMTP_VERB_NOOP},
	    {"QUIT", SMTP_VERB_QUIT},
	    {"HELP", SMTP_VERB_HELP},
	    {"VRFY", SMTP_VERB_VRFY},
	    {"EXPN", SMTP_VERB_EXPN},
	    {"STARTTLS", SMTP_VERB_STARTTLS},
	    {"AUTH", SMTP_VERB_AUTH},
	    {"BDAT", SMTP_VERB_BDAT},
	    {"XCLIENT", SMTP_VERB_XCLIENT},
	    {"XFORWARD", SMTP_VERB_XFORWARD},
	    {"ETRN", SMTP_VERB_ETRN},
	};
	size_t i, j;
	char buf[64], vt[32];

	(void)state;
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		/* upper case */
		check_cmd(verbs[i].text, verbs[i].verb, verbs[i].text, "");
		/* lower case */
		for (j = 0; verbs[i].text[j]; j++)
			buf[j] = (char)(verbs[i].text[j] | 0x20);
		buf[j] = '\0';
		check_cmd(buf, verbs[i].verb, buf, "");
		/* mixed case, with an argument */
		for (j = 0; verbs[i].text[j]; j++)
			buf[j] = (char)(j % 2 ? verbs[i].text[j] | 0x20 : verbs[i].text[j]);
		buf[j] = '\0';
		memcpy(vt, buf, j + 1);
		strcat(buf, " arg");
		check_cmd(buf, verbs[i].verb, vt, "arg");
		assert_string_equal(smtp_verb_name(verbs[i].verb), verbs[i].text);
	}
	assert_string_equal(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN");
}

static void
test_cmd_args(void **state)
{
	(void)state;
	check_cmd("MAIL FROM:<a@b>", SMTP_VERB_MAIL, "MAIL", "FROM:<a@b>");
	check_cmd("mail FROM:<a@b> SIZE=10", SMTP_VERB_MAIL, "mail", "FROM:<a@b> SIZE=10");
	/* several separating spaces, trailing spaces removed */
	check_cmd("RCPT    TO:<a@b>", SMTP_VERB_RCPT, "RCPT", "TO:<a@b>");
	check_cmd("RCPT TO:<a@b>   ", SMTP_VERB_RCPT, "RCPT", "TO:<a@b>");
	check_cmd("EHLO   client.example.org   ", SMTP_VERB_EHLO, "EHLO", "client.example.org");
	/* spaces inside the argument are kept */
	check_cmd("HELP  me  please ", SMTP_VERB_HELP, "HELP", "me  please");
	/* a verb followed by spaces only has an empty argument */
	check_cmd("QUIT   ", SMTP_VERB_QUIT, "QUIT", "");
	check_cmd("NOOP", SMTP_VERB_NOOP, "NOOP", "");
	/* TAB is not a forbidden control character */
	check_cmd("NOOP a\tb", SMTP_VERB_NOOP, "NOOP", "a\tb");
	/* SMTPUTF8: bytes >= 0x80 in the argument are not control characters */
	check_cmd(
	    "EHLO \xc3\xa9t\xc3\xa9.example", SMTP_VERB_EHLO, "EHLO", "\xc3\xa9t\xc3\xa9.example");
}

static void
test_cmd_unknown(void **state)
{
	(void)state;
	check_cmd("FOO bar", SMTP_VERB_UNKNOWN, "FOO", "bar");
	check_cmd("MAILX FROM:<a@b>", SMTP_VERB_UNKNOWN, "MAILX", "FROM:<a@b>");
	check_cmd("MAI FROM:<a@b>", SMTP_VERB_UNKNOWN, "MAI", "FROM:<a@b>");
	check_cmd("HELOEHLO", SMTP_VERB_UNKNOWN, "HELOEHLO", "");
	check_cmd("MAIL:FROM:<a@b>", SMTP_VERB_UNKNOWN, "MAIL:FROM:<a@b>", "");
	check_cmd("GET / HTTP/1.0", SMTP_VERB_UNKNOWN, "GET", "/ HTTP/1.0");
	check_cmd("X", SMTP_VERB_UNKNOWN, "X", "");
}

static void
test_cmd_bad(void **state)
{
	struct smtp_cmd cmd;
	char c;
	char line[16];

	(void)state;
	/* empty line */
	assert_int_equal(smtp_parse_command("", 0, &cmd), PC_ERROR);
	/* NUL anywhere */
	assert_int_equal(smtp_parse_command("\0", 1, &cmd), PC_ERROR);
	assert_int_equal(smtp_parse_command("NOOP\0x", 6, &cmd), PC_ERROR);
	assert_int_equal(smtp_parse_command("MAIL FROM:<a@b>\0", 16, &cmd), PC_ERROR);
	assert_int_equal(smtp_parse_command("RC\0PT TO:<a@b>", 14, &cmd), PC_ERROR);
	/* every other C0 control character, in the verb and in the argument */
	for (c = 1; c < 0x20; c++) {
		if (c == '\t')
			continue;
		snprintf(line, sizeof(line), "NO%cOP", c);
		if (smtp_parse_command(line, 5, &cmd) != PC_ERROR)
			fail_msg("control 0x%02x in the verb accepted", c);
		snprintf(line, sizeof(line), "NOOP a%cb", c);
		if (smtp_parse_command(line, 8, &cmd) != PC_ERROR)
			fail_msg("control 0x%02x in the argument accepted", c);
	}
	/* a CR or LF left in the line is the smuggling signature: refused */
	assert_int_equal(cmd_parse("MAIL FROM:<a@b>\r", &cmd), PC_ERROR);
	assert_int_equal(cmd_parse("NOOP\nMAIL FROM:<a@b>", &cmd), PC_ERROR);
}

/* DEL (0x7f) is a control character too (it is in iscntrl()). */
static void
test_cmd_del(void **state)
{
	struct smtp_cmd cmd;

	(void)state;
	assert_int_equal(cmd_parse("NOOP a\x7f"
	                           "b",
	                     &cmd),
	    PC_ERROR);
}

/* The length is honoured: bytes after len are not part of the line. */
static void
test_cmd_len(void **state)
{
	struct smtp_cmd cmd;

	(void)state;
	assert_int_equal(smtp_parse_command("NOOPXYZ", 4, &cmd), PC_OK);
	assert_int_equal(cmd.verb, SMTP_VERB_NOOP);
	assert_int_equal(cmd.arg_len, 0);
	assert_int_equal(smtp_parse_command("HELO a.b\r\n", 8, &cmd), PC_OK);
	assert_int_equal(cmd.verb, SMTP_VERB_HELO);
	assert_int_equal(cmd.arg_len, 3);
	assert_memory_equal(cmd.arg, "a.b", 3);
}

/* ------------------------------------------------------------------ */
/* paths */

static void
test_path_basic(void **state)
{
	(void)state;
	check_path("FROM:<user@example.com>", "FROM:", 1, 0, "user@example.com", 5, 0);
	check_path("TO:<user@example.com>", "TO:", 0, 1, "user@example.com", 5, 0);
	/* keyword case-insensitive */
	check_path("from:<user@example.com>", "FROM:", 1, 0, "user@example.com", 5, 0);
	check_path("To:<user@example.com>", "TO:", 0, 1, "user@example.com", 5, 0);
	/* case of the address is kept */
	check_path("FROM:<User@Example.COM>", "FROM:", 1, 0, "User@Example.COM", 5, 0);
	/* no angle brackets (common in the wild, Postfix accepts it) */
	check_path("FROM:user@example.com", "FROM:", 1, 0, "user@example.com", 5, 0);
	check_path("TO:user@example.com", "TO:", 0, 0, "user@example.com", 5, 0);
	/* space(s) after the colon */
	check_path("FROM: <a@b>", "FROM:", 1, 0, "a@b", 2, 0);
	check_path("FROM:   <a@b>", "FROM:", 1, 0, "a@b", 2, 0);
	check_path("TO: <a@b>", "TO:", 0, 0, "a@b", 2, 0);
	/* typical address shapes */
	check_path("FROM:<first.last+tag@sub.example.co.uk>", "FROM:", 1, 0,
	    "first.last+tag@sub.example.co.uk", 15, 0);
	check_path("TO:<a!#$%&'*+-/=?^_`{|}~b@example.org>", "TO:", 0, 0,
	    "a!#$%&'*+-/=?^_`{|}~b@example.org", 22, 0);
}

static void
test_path_null(void **state)
{
	(void)state;
	check_path("FROM:<>", "FROM:", 1, 0, "", 0, 0);
	check_path("from: <>", "FROM:", 1, 0, "", 0, 0);
	check_path("FROM:<> BODY=8BITMIME", "FROM:", 1, 0, "", 0, 1);
	/* not allowed: the null path is for MAIL only */
	check_path_err("TO:<>", "TO:", 0, 1, SMTP_PATH_ESYNTAX);
	check_path_err("FROM:<>", "FROM:", 0, 0, SMTP_PATH_ESYNTAX);
	/* an empty path without brackets is not the null path */
	check_path_err("FROM:", "FROM:", 1, 0, SMTP_PATH_ESYNTAX);
	check_path_err("FROM: ", "FROM:", 1, 0, SMTP_PATH_ESYNTAX);
}

static void
test_path_postmaster(void **state)
{
	(void)state;
	check_path("TO:<postmaster>", "TO:", 0, 1, "postmaster", 0, 0);
	/* RFC 5321 §4.5.1: "Postmaster" is case-insensitive; kept as sent */
	check_path("TO:<PostMaster>", "TO:", 0, 1, "PostMaster", 0, 0);
	check_path("TO:<postmaster> NOTIFY=NEVER", "TO:", 0, 1, "postmaster", 0, 1);
	/* with a domain it is an ordinary address */
	check_path("TO:<postmaster@example.com>", "TO:", 0, 0, "postmaster@example.com", 11, 0);
	/* not allowed unless asked for (MAIL FROM:<postmaster> is not valid) */
	check_path_err("TO:<postmaster>", "TO:", 0, 0, SMTP_PATH_ESYNTAX);
	check_path_err("FROM:<postmaster>", "FROM:", 1, 0, SMTP_PATH_ESYNTAX);
	/* any other local part without a domain is never allowed */
	check_path_err("TO:<root>", "TO:", 0, 1, SMTP_PATH_ESYNTAX);
	check_path_err("TO:<postmasterx>", "TO:", 0, 1, SMTP_PATH_ESYNTAX);
}

static void
test_path_quoted(void **state)
{
	(void)state;
	check_path(
	    "FROM:<\"john doe\"@example.com>", "FROM:", 1, 0, "\"john doe\"@example.com", 11, 0);
	check_path("TO:<\"a\\\"b\"@x.org>", "TO:", 0, 0, "\"a\\\"b\"@x.org", 7, 0);
	/* an '@' or '>' inside quotes is part of the local part */
	check_path("TO:<\"a@b\"@x.org>", "TO:", 0, 0, "\"a@b\"@x.org", 6, 0);
	check_path("TO:<\"a>b\"@x.org> NOTIFY=NEVER", "TO:", 0, 0, "\"a>b\"@x.org", 6, 1);
	/* unterminated quote */
	check_path_err("TO:<\"john doe@example.com>", "TO:", 0, 0, SMTP_PATH_ESYNTAX);
}

static void
test_path_source_route(void **state)
{
	(void)state;
	check_path(
	    "TO:<@a.example,@b.example:user@c.example>", "TO:", 0, 0, "user@c.example", 5, 0);
	check_path("FROM:<@a.example:joe@d.example> SIZE=5", "FROM:", 1, 0, "joe@d.example", 4, 1);
}

static void
test_path_literal_utf8(void **state)
{
	(void)state;
	check_path("TO:<user@[192.0.2.1]>", "TO:", 0, 0, "user@[192.0.2.1]", 5, 0);
	check_path("TO:<user@[IPv6:2001:db8::1]>", "TO:", 0, 0, "user@[IPv6:2001:db8::1]", 5, 0);
	/* SMTPUTF8 (RFC 6531): UTF-8 in local part and domain */
	check_path("FROM:<\xd1\x8e\xd0\xb7\xd0\xb5\xd1\x80@\xd0\xbf\xd1\x80\xd0\xb8\xd0\xbc\xd0"
	           "\xb5\xd1\x80.\xd1\x80\xd1\x84> SMTPUTF8",
	    "FROM:", 1, 0,
	    "\xd1\x8e\xd0\xb7\xd0\xb5\xd1\x80@\xd0\xbf\xd1\x80\xd0\xb8\xd0\xbc\xd0\xb5\xd1\x80."
	    "\xd1\x80\xd1\x84",
	    9, 1);
	check_path("TO:<j\xc3\xb6rg@example.de>", "TO:", 0, 0, "j\xc3\xb6rg@example.de", 6, 0);
}

static void
test_path_params(void **state)
{
	struct smtp_path p;
	const char *arg = "FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8";

	(void)state;
	assert_int_equal(path_parse(arg, "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b.example");
	assert_int_equal(p.nparams, 3);
	check_param(&p.params[0], "SIZE", "1000");
	check_param(&p.params[1], "BODY", "8BITMIME");
	check_param(&p.params[2], "SMTPUTF8", NULL);
	/* params point into the argument */
	assert_ptr_equal(p.params[0].key, arg + 19);
	assert_ptr_equal(p.params[0].value, arg + 24);

	/* lookup is case-insensitive, absent is NULL */
	check_param(smtp_path_param(&p, "SIZE"), "SIZE", "1000");
	check_param(smtp_path_param(&p, "size"), "SIZE", "1000");
	check_param(smtp_path_param(&p, "Body"), "BODY", "8BITMIME");
	check_param(smtp_path_param(&p, "smtputf8"), "SMTPUTF8", NULL);
	assert_null(smtp_path_param(&p, "RET"));
	assert_null(smtp_path_param(&p, "SIZ"));
	assert_null(smtp_path_param(&p, "SIZE="));
	assert_null(smtp_path_param(&p, "SIZEX"));

	/* lower-case keywords as sent; RCPT parameters */
	assert_int_equal(
	    path_parse("TO:<a@b> notify=SUCCESS,FAILURE orcpt=rfc822;a@b", "TO:", 0, 0, &p),
	    SMTP_PATH_OK);
	assert_int_equal(p.nparams, 2);
	check_param(&p.params[0], "notify", "SUCCESS,FAILURE");
	check_param(&p.params[1], "orcpt", "rfc822;a@b");
	check_param(smtp_path_param(&p, "NOTIFY"), "notify", "SUCCESS,FAILURE");

	/* params after an unbracketed path and after <> */
	assert_int_equal(path_parse("FROM:a@b SIZE=7", "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
	assert_int_equal(p.nparams, 1);
	check_param(&p.params[0], "SIZE", "7");
	assert_int_equal(
	    path_parse("FROM:<> RET=HDRS ENVID=x+2By", "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_int_equal(p.nparams, 2);
	check_param(&p.params[0], "RET", "HDRS");
	check_param(&p.params[1], "ENVID", "x+2By");

	/* esmtp-keyword may hold digits and '-' (after the first) */
	assert_int_equal(path_parse("FROM:<a@b> X-FOO-2=bar", "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_int_equal(p.nparams, 1);
	check_param(&p.params[0], "X-FOO-2", "bar");

	/* RFC 5321 grammar: "SI ZE" is two value-less keywords, not an error */
	assert_int_equal(path_parse("FROM:<a@b> SI ZE", "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_int_equal(p.nparams, 2);
	check_param(&p.params[0], "SI", NULL);
	check_param(&p.params[1], "ZE", NULL);
}

static void
test_path_params_bad(void **state)
{
	(void)state;
	check_path_err("FROM:<a@b> SIZE=", "FROM:", 1, 0, SMTP_PATH_EPARAM);
	check_path_err("FROM:<a@b> =x", "FROM:", 1, 0, SMTP_PATH_EPARAM);
	check_path_err("FROM:<a@b> SIZE=1 =x", "FROM:", 1, 0, SMTP_PATH_EPARAM);
	check_path_err("FROM:<a@b> SI ZE=", "FROM:", 1, 0, SMTP_PATH_EPARAM);
	/* '=' is not allowed in esmtp-value (RFC 5321 §4.1.2) */
	check_path_err("FROM:<a@b> SIZE=1=2", "FROM:", 1, 0, SMTP_PATH_EPARAM);
	/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
	check_path_err("FROM:<a@b> S_ZE=1", "FROM:", 1, 0, SMTP_PATH_EPARAM);
	check_path_err("FROM:<a@b> -SIZE=1", "FROM:", 1, 0, SMTP_PATH_EPARAM);
	check_path_err("TO:<a@b> NOTIFY=NEVER ORCPT:x", "TO:", 0, 0, SMTP_PATH_EPARAM);
}

static void
test_path_params_max(void **state)
{
	char arg[1024];
	size_t i, n;
	struct smtp_path p;

	(void)state;
	/* exactly SMTP_PARAMS_MAX is fine */
	n = (size_t)snprintf(arg, sizeof(arg), "FROM:<a@b>");
	for (i = 0; i < SMTP_PARAMS_MAX; i++)
		n += (size_t)snprintf(arg + n, sizeof(arg) - n, " P%zu=%zu", i, i);
	assert_int_equal(path_parse(arg, "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_int_equal(p.nparams, SMTP_PARAMS_MAX);
	check_param(&p.params[0], "P0", "0");
	check_param(&p.params[SMTP_PARAMS_MAX - 1], "P15", "15");
	check_param(smtp_path_param(&p, "p15"), "P15", "15");

	/* one more is an attack */
	snprintf(arg + n, sizeof(arg) - n, " P%d", SMTP_PARAMS_MAX);
	check_path_err(arg, "FROM:", 1, 0, SMTP_PATH_ETOOMANY);

	/* many more */
	for (i = SMTP_PARAMS_MAX; i < 60; i++)
		n += (size_t)snprintf(arg + n, sizeof(arg) - n, " Q%zu", i);
	check_path_err(arg, "FROM:", 1, 0, SMTP_PATH_ETOOMANY);
}

/* Build "<u@DOMAIN>" where the whole path (brackets included) is total octets. */
static void
make_long_path(char *buf, size_t total)
{
	size_t dlen = total - 4; /* '<' 'u' '@' ... '>' */
	size_t i;

	buf[0] = '<';
	buf[1] = 'u';
	buf[2] = '@';
	for (i = 0; i < dlen; i++)
		buf[3 + i] = (i % 50 == 49 && i + 1 < dlen) ? '.' : 'a';
	buf[3 + dlen] = '>';
	buf[4 + dlen] = '\0';
}

static void
test_path_too_long(void **state)
{
	char arg[1200];
	struct smtp_path p;

	(void)state;
	/* SMTP_PATH_MAX octets including the brackets is the limit itself */
	strcpy(arg, "TO:");
	make_long_path(arg + 3, SMTP_PATH_MAX);
	assert_int_equal(strlen(arg + 3), SMTP_PATH_MAX);
	assert_int_equal(path_parse(arg, "TO:", 0, 0, &p), SMTP_PATH_OK);
	assert_int_equal(p.addr_len, SMTP_PATH_MAX - 2);
	assert_int_equal(strlen(p.addr), SMTP_PATH_MAX - 2);
	assert_memory_equal(p.addr, arg + 4, SMTP_PATH_MAX - 2);
	assert_int_equal(p.domain_off, 2);

	make_long_path(arg + 3, SMTP_PATH_MAX + 1);
	check_path_err(arg, "TO:", 0, 0, SMTP_PATH_ETOOLONG);
	make_long_path(arg + 3, 1000);
	check_path_err(arg, "TO:", 0, 0, SMTP_PATH_ETOOLONG);
	/* also when followed by parameters */
	strcat(arg, " SIZE=1");
	check_path_err(arg, "TO:", 0, 0, SMTP_PATH_ETOOLONG);
}

/*
 * The 256-octet limit is on the path as sent (RFC 5321 §4.5.3.1.3), so a
 * source route counts even though it is dropped from addr.
 */
static void
test_path_too_long_route(void **state)
{
	char arg[600];
	size_t n;

	(void)state;
	n = (size_t)snprintf(arg, sizeof(arg), "TO:<@");
	while (n < 3 + SMTP_PATH_MAX)
		n += (size_t)snprintf(arg + n, sizeof(arg) - n, "relay%zu.example,@", n);
	snprintf(arg + n, sizeof(arg) - n, "last.example:user@example.com>");
	assert_true(strlen(arg) - 3 > SMTP_PATH_MAX);
	check_path_err(arg, "TO:", 0, 0, SMTP_PATH_ETOOLONG);
}

static void
test_path_garbage(void **state)
{
	static const char *const bad[] = {
	    "FROM:<a@b",
	    "FROM:a@b>",
	    "FROM:<a@@b>",
	    "FROM:<a b@c>",
	    "FROM:<<a@b>>",
	    "FROM:<a@b>>",
	    "FROM:<@b>",
	    "FROM:<a@>",
	    "FROM:<@>",
	    "FROM:<a>",
	    "FROM:<a@b@c>",
	    "FROM:<a@b",
	    "FROM:<",
	    "FROM:>",
	    "FROM:<\"a\"b@c>",
	    "FROM:<a@b,c>",
	    "FROM:<@a.example:>",
	    "FROM:<@a.example,user@c.example>",
	    "FROM:<a\x01@b>",
	    "FROM <a@b>",
	    "FROM<a@b>",
	    "FROM=<a@b>",
	    "FROM",
	    "",
	    "<a@b>",
	    "TO:<a@b>",
	    "FROMX:<a@b>",
	    "FRO:<a@b>",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_path_err(bad[i], "FROM:", 1, 1, SMTP_PATH_ESYNTAX);
	/* wrong keyword the other way round */
	check_path_err("FROM:<a@b>", "TO:", 0, 1, SMTP_PATH_ESYNTAX);
	/* a NUL inside the argument */
	{
		struct smtp_path p;
		assert_int_not_equal(
		    smtp_parse_path("FROM:<a\0@b>", 11, "FROM:", 1, 0, &p), SMTP_PATH_OK);
	}
}

/* Junk glued to the path is not a valid path, whatever the error code says. */
static void
test_path_junk_after(void **state)
{
	struct smtp_path p;

	(void)state;
	assert_int_not_equal(path_parse("FROM:<a@b>x", "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_int_not_equal(path_parse("FROM:<>x", "FROM:", 1, 0, &p), SMTP_PATH_OK);
	assert_int_not_equal(path_parse("FROM:<a@b>SIZE=1", "FROM:", 1, 0, &p), SMTP_PATH_OK);
}

/* The length is honoured; arg need not be NUL-terminated. */
static void
test_path_len(void **state)
{
	struct smtp_path p;
	const char *arg = "TO:<a@b.example> NOTIFY=NEVERxxxxx";

	(void)state;
	assert_int_equal(smtp_parse_path(arg, 29, "TO:", 0, 0, &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b.example");
	assert_int_equal(p.nparams, 1);
	check_param(&p.params[0], "NOTIFY", "NEVER");
	assert_int_equal(smtp_parse_path(arg, 16, "TO:", 0, 0, &p), SMTP_PATH_OK);
	assert_int_equal(p.nparams, 0);
	assert_int_equal(smtp_parse_path(arg, 15, "TO:", 0, 0, &p), SMTP_PATH_ESYNTAX);
}

/* ------------------------------------------------------------------ */
/* replies */

static void
test_reply_single(void **state)
{
	struct smtp_reply r;
	size_t len;

	(void)state;
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250 2.1.0 Ok"), PC_OK);
	assert_int_equal(r.code, 250);
	assert_int_equal(r.nlines, 1);
	assert_int_equal(r.text_len, 9);
	assert_memory_equal(r.text, "2.1.0 Ok\n", 9);
	check_reply_line(&r, 0, "2.1.0 Ok");
	assert_null(smtp_reply_line(&r, 1, &len));

	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "554 5.7.1 <x@y>: Relay access denied"), PC_OK);
	assert_int_equal(r.code, 554);
	check_reply_line(&r, 0, "5.7.1 <x@y>: Relay access denied");

	/* the bounds of the range */
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "200 x"), PC_OK);
	assert_int_equal(r.code, 200);
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "599 x"), PC_OK);
	assert_int_equal(r.code, 599);
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "421 4.4.2 bye"), PC_OK);
	assert_int_equal(r.code, 421);
}

static void
test_reply_code_only(void **state)
{
	struct smtp_reply r;

	(void)state;
	/* RFC 5321 §4.2: the text is optional; "250" alone is a reply */
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250"), PC_OK);
	assert_int_equal(r.code, 250);
	assert_int_equal(r.nlines, 1);
	assert_int_equal(r.text_len, 1);
	assert_memory_equal(r.text, "\n", 1);
	check_reply_line(&r, 0, "");

	/* "250 " (separator, empty text) is the same */
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250 "), PC_OK);
	check_reply_line(&r, 0, "");

	/* an empty continuation line */
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "250 done"), PC_OK);
	assert_int_equal(r.nlines, 2);
	check_reply_line(&r, 0, "");
	check_reply_line(&r, 1, "done");
}

static void
test_reply_multi(void **state)
{
	struct smtp_reply r;
	size_t len;

	(void)state;
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-a"), PC_AGAIN);
	assert_int_equal(r.code, 250);
	assert_int_equal(r.nlines, 1);
	assert_int_equal(reply_feed(&r, "250-b"), PC_AGAIN);
	assert_int_equal(r.nlines, 2);
	assert_int_equal(reply_feed(&r, "250 c"), PC_OK);
	assert_int_equal(r.code, 250);
	assert_int_equal(r.nlines, 3);
	assert_int_equal(r.text_len, 6);
	assert_memory_equal(r.text, "a\nb\nc\n", 6);
	check_reply_line(&r, 0, "a");
	check_reply_line(&r, 1, "b");
	check_reply_line(&r, 2, "c");
	len = 99;
	assert_null(smtp_reply_line(&r, 3, &len));
	assert_null(smtp_reply_line(&r, 1000, &len));

	/* lines of different lengths */
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "550-5.1.1 The email account that you tried"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "550-5.1.1 "), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "550 5.1.1 does not exist"), PC_OK);
	assert_int_equal(r.code, 550);
	check_reply_line(&r, 0, "5.1.1 The email account that you tried");
	check_reply_line(&r, 1, "5.1.1 ");
	check_reply_line(&r, 2, "5.1.1 does not exist");

	/* init resets a reply for reuse */
	smtp_reply_init(&r);
	assert_int_equal(r.nlines, 0);
	assert_int_equal(r.text_len, 0);
	assert_int_equal(reply_feed(&r, "354 go"), PC_OK);
	assert_int_equal(r.nlines, 1);
	assert_int_equal(r.code, 354);
	check_reply_line(&r, 0, "go");
	assert_null(smtp_reply_line(&r, 1, &len));
}

static void
check_reply_bad1(const char *line)
{
	struct smtp_reply r;
	int rc;

	smtp_reply_init(&r);
	rc = reply_feed(&r, line);
	if (rc != PC_ERROR)
		fail_msg("reply line \"%s\": got %d, want PC_ERROR", line, rc);
}

static void
test_reply_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "2",
	    "25",
	    "25 ok",
	    "abc ok",
	    "2x0 ok",
	    "25x ok",
	    "x250 ok",
	    " 250 ok",
	    "250x",
	    "250xok",
	    "250_ok",
	    "250\tok",
	    "250=ok",
	    "2500 ok",
	    "000 ok",
	    "100 ok",
	    "199 ok",
	    "600 ok",
	    "999 ok",
	    "-250 ok",
	    "+250 ok",
	    "250 a\x01z",
	    "250 a\rz",
	    "250 a\nz",
	    "250-a\x1b[31m",
	};
	struct smtp_reply r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_reply_bad1(bad[i]);
	/* NUL inside */
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r, "250 a\0b", 7), PC_ERROR);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r,
	                     "2\0"
	                     "0 ok",
	                     6),
	    PC_ERROR);
}

static void
test_reply_code_change(void **state)
{
	struct smtp_reply r;

	(void)state;
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-a"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "251 b"), PC_ERROR);

	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-a"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "250-b"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "550-c"), PC_ERROR);

	/* a garbage continuation line */
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-a"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "hello"), PC_ERROR);
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-a"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "250xb"), PC_ERROR);
	smtp_reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-a"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, ""), PC_ERROR);
}

static void
test_reply_long_line(void **state)
{
	struct smtp_reply r;
	char line[2100];

	(void)state;
	/* comfortably within SMTP_REPLY_LINE_MAX */
	memcpy(line, "250 ", 4);
	memset(line + 4, 'x', 900);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r, line, 904), PC_OK);
	assert_int_equal(r.text_len, 901);
	{
		size_t len;
		const char *s = smtp_reply_line(&r, 0, &len);
		assert_non_null(s);
		assert_int_equal(len, 900);
		assert_memory_equal(s, line + 4, 900);
	}
	/* far over it */
	memset(line + 4, 'x', 2000);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r, line, 1504), PC_ERROR);
	memcpy(line, "250-", 4);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX + 100), PC_ERROR);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_feed(&r, line, 2000), PC_ERROR);
}

static void
test_reply_too_big(void **state)
{
	struct smtp_reply r;
	char line[904];
	size_t i;

	(void)state;
	/* 9 lines of 900 octets of text fit in SMTP_REPLY_MAX with their '\n' */
	memcpy(line, "250-", 4);
	memset(line + 4, 'y', 900);
	smtp_reply_init(&r);
	for (i = 0; i < 9; i++)
		assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), PC_AGAIN);
	assert_int_equal(r.text_len, 9 * 901);
	/* the 10th would not */
	assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), PC_ERROR);
}

static void
test_reply_too_many_lines(void **state)
{
	struct smtp_reply r;
	size_t i;
	int rc = PC_AGAIN;

	(void)state;
	/* SMTP_REPLY_LINES_MAX lines is fine */
	smtp_reply_init(&r);
	for (i = 0; i + 1 < SMTP_REPLY_LINES_MAX; i++)
		assert_int_equal(reply_feed(&r, "250-x"), PC_AGAIN);
	assert_int_equal(reply_feed(&r, "250 x"), PC_OK);
	assert_int_equal(r.nlines, SMTP_REPLY_LINES_MAX);
	check_reply_line(&r, SMTP_REPLY_LINES_MAX - 1, "x");

	/* one more line is garbage; a backend streaming lines forever is stopped */
	smtp_reply_init(&r);
	for (i = 0; i + 1 < SMTP_REPLY_LINES_MAX; i++)
		assert_int_equal(reply_feed(&r, "250-x"), PC_AGAIN);
	for (i = 0; i < 1000 && rc == PC_AGAIN; i++)
		rc = reply_feed(&r, "250-x");
	assert_int_equal(rc, PC_ERROR);
	assert_true(i <= 2);
}

/* ------------------------------------------------------------------ */
/* EHLO capabilities */

static void
test_caps_postfix(void **state)
{
	static const char *const lines[] = {
	    "250-mx.example.org",
	    "250-PIPELINING",
	    "250-SIZE 10240000",
	    "250-VRFY",
	    "250-ETRN",
	    "250-STARTTLS",
	    "250-AUTH PLAIN LOGIN",
	    "250-ENHANCEDSTATUSCODES",
	    "250-8BITMIME",
	    "250-DSN",
	    "250-SMTPUTF8",
	    "250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
	    "250 CHUNKING",
	};
	struct smtp_reply r;
	struct smtp_caps c;

	(void)state;
	reply_feed_all(&r, lines, sizeof(lines) / sizeof(lines[0]));
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.pipelining, 1);
	assert_int_equal(c.size, 1);
	assert_true(c.size_limit == 10240000ULL);
	assert_int_equal(c.eightbitmime, 1);
	assert_int_equal(c.smtputf8, 1);
	assert_int_equal(c.enhancedstatuscodes, 1);
	assert_int_equal(c.starttls, 1);
	assert_int_equal(c.auth, 1);
	assert_string_equal(c.auth_mechs, "PLAIN LOGIN");
	assert_int_equal(c.xclient, 1);
	assert_string_equal(
	    c.xclient_attrs, "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT");
	assert_int_equal(c.chunking, 1);
	assert_int_equal(c.dsn, 1);
}

static void
test_caps_mixed_case(void **state)
{
	static const char *const lines[] = {
	    "250-mx.example.org Hello client [192.0.2.7]",
	    "250-pipelining",
	    "250-Size 52428800",
	    "250-8bitmime",
	    "250-SmtpUtf8",
	    "250-enhancedStatusCodes",
	    "250-starttls",
	    "250-auth plain login cram-md5",
	    "250-xclient name addr",
	    "250-Chunking",
	    "250 dsn",
	};
	struct smtp_reply r;
	struct smtp_caps c;

	(void)state;
	reply_feed_all(&r, lines, sizeof(lines) / sizeof(lines[0]));
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.pipelining, 1);
	assert_int_equal(c.size, 1);
	assert_true(c.size_limit == 52428800ULL);
	assert_int_equal(c.eightbitmime, 1);
	assert_int_equal(c.smtputf8, 1);
	assert_int_equal(c.enhancedstatuscodes, 1);
	assert_int_equal(c.starttls, 1);
	assert_int_equal(c.auth, 1);
	assert_string_equal(c.auth_mechs, "plain login cram-md5");
	assert_int_equal(c.xclient, 1);
	assert_string_equal(c.xclient_attrs, "name addr");
	assert_int_equal(c.chunking, 1);
	assert_int_equal(c.dsn, 1);
}

static void
test_caps_size_no_number(void **state)
{
	static const char *const lines[] = {
	    "250-mx.example.org",
	    "250-SIZE",
	    "250 8BITMIME",
	};
	static const char *const lines0[] = {
	    "250-mx.example.org",
	    "250 SIZE 0",
	};
	struct smtp_reply r;
	struct smtp_caps c;

	(void)state;
	reply_feed_all(&r, lines, 3);
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.size, 1);
	assert_true(c.size_limit == 0);
	assert_int_equal(c.eightbitmime, 1);
	assert_int_equal(c.pipelining, 0);

	reply_feed_all(&r, lines0, 2);
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.size, 1);
	assert_true(c.size_limit == 0);
}

static void
test_caps_none(void **state)
{
	static const char *const one[] = {"250 mx.example.org"};
	/* the first line is the greeting, whatever it says */
	static const char *const greet[] = {
	    "250-PIPELINING",
	    "250 8BITMIME",
	};
	static const char *const greet1[] = {"250 STARTTLS"};
	/* keywords must match whole, not as prefixes */
	static const char *const prefix[] = {
	    "250-mx.example.org",
	    "250-PIPELININGX",
	    "250-XSTARTTLS",
	    "250-DSNX",
	    "250-AUTHX PLAIN",
	    "250-SIZEX 100",
	    "250 8BITMIMEX",
	};
	struct smtp_reply r;
	struct smtp_caps c;

	(void)state;
	reply_feed_all(&r, one, 1);
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.pipelining | c.size | c.eightbitmime | c.smtputf8 |
	        c.enhancedstatuscodes | c.starttls | c.auth | c.xclient | c.chunking | c.dsn,
	    0);

	reply_feed_all(&r, greet, 2);
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.pipelining, 0);
	assert_int_equal(c.eightbitmime, 1);

	reply_feed_all(&r, greet1, 1);
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.starttls, 0);

	reply_feed_all(&r, prefix, sizeof(prefix) / sizeof(prefix[0]));
	memset(&c, 0, sizeof(c));
	smtp_caps_parse(&r, &c);
	assert_int_equal(c.pipelining, 0);
	assert_int_equal(c.starttls, 0);
	assert_int_equal(c.dsn, 0);
	assert_int_equal(c.auth, 0);
	assert_int_equal(c.size, 0);
	assert_true(c.size_limit == 0);
	assert_int_equal(c.eightbitmime, 0);
}

/* ---- host names from DNS answers ---- */

static int
hostname_ok(const char *name)
{
	return smtp_valid_hostname(name, strlen(name));
}

static void
test_hostname_valid(void **state)
{
	(void)state;
	assert_true(hostname_ok("mail.example.org"));
	assert_true(hostname_ok("mail.example.org."));
	assert_true(hostname_ok("localhost"));
	assert_true(hostname_ok("a-b.c_d.example"));
	assert_true(hostname_ok("1.2.3.example")); /* digits below the top label */
	assert_true(hostname_ok("x9"));
	char longest[SMTP_HOSTNAME_MAX + 1];
	/* 3 labels of 63 and one of 61, with dots: 253 octets */
	memset(longest, 'a', sizeof(longest) - 1);
	longest[63] = longest[127] = longest[191] = '.';
	longest[SMTP_HOSTNAME_MAX] = '\0';
	assert_true(hostname_ok(longest));
}

static void
test_hostname_invalid(void **state)
{
	(void)state;
	assert_false(hostname_ok(""));
	assert_false(hostname_ok("."));
	assert_false(hostname_ok("192.0.2.1")); /* an address, not a name */
	assert_false(hostname_ok("a..b"));
	assert_false(hostname_ok(".a"));
	assert_false(hostname_ok("-a.example"));
	assert_false(hostname_ok("a-.example"));
	assert_false(hostname_ok("a b.example"));
	assert_false(hostname_ok("[127.0.0.1]"));
	assert_false(hostname_ok("a.example\r\nMAIL"));
	assert_false(hostname_ok("caf\xc3\xa9.example"));
	char label[70];
	memset(label, 'a', 64);
	strcpy(label + 64, ".org"); /* a label of 64 */
	assert_false(hostname_ok(label));
	char big[SMTP_HOSTNAME_MAX + 3];
	memset(big, 'a', sizeof(big) - 1);
	for (size_t i = 50; i < sizeof(big) - 1; i += 50)
		big[i] = '.';
	big[sizeof(big) - 1] = '\0'; /* 254 octets */
	assert_false(hostname_ok(big));
	/* the length given is what counts, not the NUL */
	assert_false(smtp_valid_hostname("ab", 0));
	assert_true(smtp_valid_hostname("ab\x01", 2));
}

/* RFC 3629: what a command line may hold */
static void
test_utf8(void **state)
{
	static const struct {
		const char *s;
		int want;
	} cases[] = {
	    {"MAIL FROM:<a@b.test>", 0}, {"", 0}, {"j\xc3\xb6@a.test", 1}, /* U+00F6 */
	    {"\xe2\x82\xac", 1}, /* U+20AC */
	    {"\xf0\x9f\x98\x80", 1}, /* U+1F600 */
	    {"\xf4\x8f\xbf\xbf", 1}, /* U+10FFFF, the last */
	    {"\xff\xfe@a.test", -1}, {"\xc0\xaf", -1}, /* overlong "/" */
	    {"\xc1\xbf", -1}, {"\xe0\x80\xaf", -1}, /* overlong, three octets */
	    {"\xf0\x80\x80\xaf", -1}, /* overlong, four octets */
	    {"\xed\xa0\x80", -1}, /* U+D800, a surrogate */
	    {"\xf4\x90\x80\x80", -1}, /* past U+10FFFF */
	    {"\xf5\x80\x80\x80", -1}, {"\xc3", -1}, /* cut short */
	    {"\xe2\x82", -1}, {"a\x80", -1}, /* a continuation octet alone */
	    {"\xc3\x28", -1}, /* not a continuation */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = smtp_utf8_check(cases[i].s, strlen(cases[i].s));
		if (got != cases[i].want)
			fail_msg("case %zu: %d, want %d", i, got, cases[i].want);
	}
}

/* RFC 4954 §4: an AUTH answer is base64, nothing else */
static void
test_base64_and_mech(void **state)
{
	(void)state;
	assert_true(smtp_base64_valid("dXNlcg==", 8));
	assert_true(smtp_base64_valid("AGFAYg==", 8));
	assert_true(smtp_base64_valid("YWJj", 4));
	assert_true(smtp_base64_valid("a+/9", 4));
	assert_false(smtp_base64_valid("", 0));
	assert_false(smtp_base64_valid("dXNlcg=", 7)); /* not a multiple of 4 */
	assert_false(smtp_base64_valid("dXNl\rcg==", 9));
	assert_false(smtp_base64_valid("dXNlcg==\rMAIL FROM:<evil@x.test>", 33));
	assert_false(smtp_base64_valid("dX Nlcg=", 8));
	assert_false(smtp_base64_valid("dX\0Ncg==", 8));
	assert_false(smtp_base64_valid("d===", 4)); /* padding is at most two */
	assert_false(smtp_base64_valid("dX=l", 4)); /* padding only at the end */
	assert_false(smtp_base64_valid("\x1b[31", 4));
	assert_true(smtp_sasl_mech_valid("PLAIN", 5));
	assert_true(smtp_sasl_mech_valid("SCRAM-SHA-256", 13));
	assert_true(smtp_sasl_mech_valid("login", 5));
	assert_false(smtp_sasl_mech_valid("", 0));
	assert_false(smtp_sasl_mech_valid("PL@IN", 5));
	assert_false(smtp_sasl_mech_valid("ABCDEFGHIJKLMNOPQRSTU", 21)); /* 21 */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cmd_verbs),
	    cmocka_unit_test(test_cmd_args),
	    cmocka_unit_test(test_cmd_unknown),
	    cmocka_unit_test(test_cmd_bad),
	    cmocka_unit_test(test_cmd_del),
	    cmocka_unit_test(test_cmd_len),
	    cmocka_unit_test(test_path_basic),
	    cmocka_unit_test(test_path_null),
	    cmocka_unit_test(test_path_postmaster),
	    cmocka_unit_test(test_path_quoted),
	    cmocka_unit_test(test_path_source_route),
	    cmocka_unit_test(test_path_literal_utf8),
	    cmocka_unit_test(test_path_params),
	    cmocka_unit_test(test_path_params_bad),
	    cmocka_unit_test(test_path_params_max),
	    cmocka_unit_test(test_path_too_long),
	    cmocka_unit_test(test_path_too_long_route),
	    cmocka_unit_test(test_path_garbage),
	    cmocka_unit_test(test_path_junk_after),
	    cmocka_unit_test(test_path_len),
	    cmocka_unit_test(test_reply_single),
	    cmocka_unit_test(test_reply_code_only),
	    cmocka_unit_test(test_reply_multi),
	    cmocka_unit_test(test_reply_bad),
	    cmocka_unit_test(test_reply_code_change),
	    cmocka_unit_test(test_reply_long_line),
	    cmocka_unit_test(test_reply_too_big),
	    cmocka_unit_test(test_reply_too_many_lines),
	    cmocka_unit_test(test_caps_postfix),
	    cmocka_unit_test(test_caps_mixed_case),
	    cmocka_unit_test(test_caps_size_no_number),
	    cmocka_unit_test(test_caps_none),
	    cmocka_unit_test(test_hostname_valid),
	    cmocka_unit_test(test_hostname_invalid),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_base64_and_mech),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
