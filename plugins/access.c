/*
 * access.c - Postfix-style access lists: accept, refuse or drop mail by
 * client address, HELO name, sender or recipient, from plain text files.
 *
 * Exports only the descriptor portcullis_plugin (see plugin.h). Section keys:
 * client_list, helo_list, sender_list and recipient_list, each the path of a
 * list file checked at the connect, helo, mail and rcpt stage respectively.
 * A list file holds one "PATTERN ACTION [REPLY]" entry per line; the first
 * matching line in file order decides, no match is "continue". The format is
 * described in plugins/README.md.
 *
 * Files are read once, at init. Patterns that are looked up by their exact
 * text (addresses, domains, local parts, HELO names, single IP addresses) go
 * into a sorted array searched with bsearch; CIDR blocks and regular
 * expressions are tried in file order, and only until a line after the best
 * exact hit, so the first-matching-line rule holds whatever the mix.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "portcullis/plugin.h"

/* Which list: the index into the key and name tables below. */
enum access_kind {
	ACCESS_CLIENT = 0,
	ACCESS_HELO,
	ACCESS_SENDER,
	ACCESS_RCPT,
	ACCESS_NKINDS,
};

/* Key of the binary form of an IP address: family tag + 16 octets. */
#define ACCESS_IPKEY_MAX 17

/* What a list line does when it matches. */
struct access_rule {
	int line; /* in the list file */
	enum pc_action action;
	char *reply; /* NULL: the host's default text for the action */
};

/* A pattern found by its exact text (lower case) or binary address. */
struct access_exact {
	char *key;
	size_t len;
	struct access_rule rule;
};

/* A pattern tried in file order: a regex or a CIDR block. */
struct access_scan {
	struct access_rule rule;
	int is_regex;
	regex_t re;
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned prefix;
};

/* One list file, loaded. */
struct access_list {
	enum access_kind kind;
	char *path;
	struct access_exact *exact; /* sorted by key, then line */
	size_t nexact, capexact;
	struct access_scan *scan; /* in file order */
	size_t nscan, capscan;
};

/* An instance: one [plugin access] section. */
struct access {
	const struct pc_host *host;
	struct pc_instance *self;
	struct access_list *lists[ACCESS_NKINDS];
};

/* Where a list is being read, for error messages. */
struct access_load {
	struct pc_init *in;
	struct access_list *list;
	const char *key;
	int line;
};

static int access_init(struct pc_init *in, void **instance);
static void access_fini(void *instance);
static int access_connect(void *instance, struct pc_call *call, struct pc_verdict *v);
static int access_helo(void *instance, struct pc_call *call, struct pc_verdict *v);
static int access_mail(void *instance, struct pc_call *call, struct pc_verdict *v);
static int access_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v);

static int access_error(struct access_load *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int access_load_list(
    struct access *a, struct pc_init *in, const struct pc_option *o, enum access_kind kind);
static int access_parse_line(struct access_load *ld, char *line);
static int access_take_regex(struct access_load *ld, char **pp, char **pattern, int *icase);
static int access_parse_action(const char *word, enum pc_action *action);
static const char *access_check_reply(enum pc_action action, const char *reply);
static size_t access_enhanced_len(const char *p);
static int access_add_pattern(struct access_load *ld, const char *pattern, int is_regex, int icase,
    const struct access_rule *rule);
static int access_add_address(
    struct access_load *ld, const char *pattern, const struct access_rule *rule);
static int access_add_host(
    struct access_load *ld, const char *pattern, const struct access_rule *rule);
static int access_add_cidr(
    struct access_load *ld, const char *pattern, const struct access_rule *rule);
static int access_add_regex(
    struct access_load *ld, const char *pattern, int icase, const struct access_rule *rule);
static int access_add_exact(
    struct access_load *ld, const void *key, size_t len, int lower, const struct access_rule *rule);
static struct access_scan *access_new_scan(struct access_load *ld, const struct access_rule *rule);
static void access_sort(struct access *a, struct pc_init *in, struct access_list *l);
static int access_exact_cmp(const void *x, const void *y);
static int access_key_cmp(const void *x, const void *y);
static int access_parse_ip(const char *text, int *family, unsigned char *addr);
static size_t access_ipkey(int family, const unsigned char *addr, unsigned char *key);
static void access_list_free(struct access_list *l);

static const struct access_rule *access_find(
    const struct access_list *l, const void *key, size_t len);
static const struct access_rule *access_better(
    const struct access_rule *best, const struct access_rule *r);
static const struct access_rule *access_match_client(const struct access_list *l, const char *ip);
static const struct access_rule *access_match_host(const struct access_list *l, const char *name);
static const struct access_rule *access_match_address(
    const struct access_list *l, const char *addr);
static const struct access_rule *access_match_domain(
    const struct access_list *l, const char *domain, const struct access_rule *best);
static const struct access_rule *access_match_regex(
    const struct access_list *l, const char *subject, const struct access_rule *best);
static int access_check(struct access *a, struct pc_call *call, enum access_kind kind,
    enum pc_field field, struct pc_verdict *v);

/* The section keys, indexed by enum access_kind, NULL-terminated. */
static const char *const access_keys[] = {
    "client_list",
    "helo_list",
    "sender_list",
    "recipient_list",
    NULL,
};

/* What each list looks at, for the log line. */
static const char *const access_subject[] = {
    "client",
    "helo",
    "sender",
    "recipient",
};

/* Action words, indexed by enum pc_action (NULL: not allowed in a list). */
static const char *const access_actions[] = {
    [PC_CONTINUE] = NULL,
    [PC_ACCEPT] = "accept",
    [PC_REJECT] = "reject",
    [PC_TEMPFAIL] = "tempfail",
    [PC_DROP] = "drop",
    [PC_DISCONNECT] = "disconnect",
    [PC_FAIL] = NULL,
};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "access",
    .version = "1.0",
    .keys = access_keys,
    .init = access_init,
    .fini = access_fini,
    .connect = access_connect,
    .helo = access_helo,
    .mail = access_mail,
    .rcpt = access_rcpt,
};

/* access_init - load every list the section names */
static int
access_init(struct pc_init *in, void **instance)
{
	struct access *a;
	const struct pc_option *o;
	int kind, any = 0;

	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	a->host = in->host;
	a->self = in->self;
	for (o = in->options; o != NULL; o = o->next) {
		for (kind = 0; kind < ACCESS_NKINDS; kind++)
			if (strcmp(o->key, access_keys[kind]) == 0)
				break;
		if (kind == ACCESS_NKINDS) {
			snprintf(in->err, in->errlen, "unknown key \"%s\"", o->key);
			in->err_line = o->line;
			goto fail;
		}
		if (access_load_list(a, in, o, (enum access_kind)kind) < 0)
			goto fail;
		any = 1;
	}
	if (!any) {
		snprintf(in->err, in->errlen,
		    "no list given: set at least one of client_list, helo_list, sender_list, "
		    "recipient_list");
		in->err_line = in->line;
		goto fail;
	}
	*instance = a;
	return 0;
fail:
	access_fini(a);
	return -1;
}

/* access_fini - free an instance and its lists */
static void
access_fini(void *instance)
{
	struct access *a = instance;
	int kind;

	if (a == NULL)
		return;
	for (kind = 0; kind < ACCESS_NKINDS; kind++)
		access_list_free(a->lists[kind]);
	free(a);
}

/* access_list_free - free one list and everything it holds */
static void
access_list_free(struct access_list *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->nexact; i++) {
		free(l->exact[i].key);
		free(l->exact[i].rule.reply);
	}
	for (i = 0; i < l->nscan; i++) {
		if (l->scan[i].is_regex)
			regfree(&l->scan[i].re);
		free(l->scan[i].rule.reply);
	}
	free(l->exact);
	free(l->scan);
	free(l->path);
	free(l);
}

/* access_error - "KEY PATH:LINE: message" (or "KEY PATH: message") into
 * in->err, with the key's configuration line; always returns -1 */
static int
access_error(struct access_load *ld, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ld->line > 0)
		snprintf(ld->in->err, ld->in->errlen, "%s %s:%d: %s", ld->key, ld->list->path,
		    ld->line, msg);
	else
		snprintf(ld->in->err, ld->in->errlen, "%s %s: %s", ld->key, ld->list->path, msg);
	return -1;
}

/* access_load_list - read the list file named by option o */
static int
access_load_list(
    struct access *a, struct pc_init *in, const struct pc_option *o, enum access_kind kind)
{
	struct access_load ld = {in, NULL, o->key, 0};
	struct access_list *l;
	FILE *fp;
	char *buf = NULL;
	size_t cap = 0;
	int rc = 0, err;

	in->err_line = o->line;
	if (a->lists[kind] != NULL) {
		snprintf(in->err, in->errlen, "%s given twice: one list file per stage", o->key);
		return -1;
	}
	if (o->value == NULL || o->value[0] == '\0') {
		snprintf(in->err, in->errlen, "%s needs the path of a list file", o->key);
		return -1;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL || (l->path = strdup(o->value)) == NULL) {
		free(l);
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	l->kind = kind;
	a->lists[kind] = l;
	ld.list = l;
	if ((fp = fopen(l->path, "r")) == NULL)
		return access_error(&ld, "cannot open: %s", strerror(errno));
	while (getline(&buf, &cap, fp) >= 0) {
		ld.line++;
		if ((rc = access_parse_line(&ld, buf)) < 0)
			break;
	}
	err = ferror(fp) ? (errno != 0 ? errno : EIO) : 0;
	free(buf);
	fclose(fp);
	if (rc < 0)
		return -1;
	if (err != 0) {
		ld.line = 0;
		return access_error(&ld, "cannot read: %s", strerror(err));
	}
	access_sort(a, in, l);
	return 0;
}

/* access_parse_line - one line of a list file: PATTERN ACTION [REPLY] */
static int
access_parse_line(struct access_load *ld, char *line)
{
	struct access_rule rule = {ld->line, PC_CONTINUE, NULL};
	char *p = line, *pattern = NULL, *word, *end;
	const char *why;
	int is_regex = 0, icase = 0;

	end = p + strlen(p);
	while (end > p && isspace((unsigned char)end[-1]))
		*--end = '\0';
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	if (*p == '/') {
		if (access_take_regex(ld, &p, &pattern, &icase) < 0)
			return -1;
		is_regex = 1;
	} else {
		pattern = p;
		p += strcspn(p, " \t");
		if (*p != '\0')
			*p++ = '\0';
	}
	p += strspn(p, " \t");
	if (*p == '\0')
		return access_error(ld,
		    "\"%s\" has no action (reject, tempfail, accept, drop or disconnect)", pattern);
	word = p;
	p += strcspn(p, " \t");
	if (*p != '\0')
		*p++ = '\0';
	p += strspn(p, " \t");
	if (access_parse_action(word, &rule.action) < 0)
		return access_error(ld,
		    "unknown action \"%s\" (reject, tempfail, accept, drop or disconnect)", word);
	if (*p != '\0') {
		if ((why = access_check_reply(rule.action, p)) != NULL)
			return access_error(ld, "reply \"%s\": %s", p, why);
		rule.reply = p;
	}
	return access_add_pattern(ld, pattern, is_regex, icase, &rule);
}

/* access_take_regex - cut "/re/" or "/re/i" off the front of *pp: the
 * pattern ends at the first unescaped "/" followed by a blank (or "i" and a
 * blank, or the end), so it may hold blanks and slashes; "\/" is a "/" */
static int
access_take_regex(struct access_load *ld, char **pp, char **pattern, int *icase)
{
	char *start = *pp, *r = start + 1, *w = start;

	for (; *r != '\0'; r++) {
		if (r[0] == '\\' && r[1] == '/') {
			*w++ = '/';
			r++;
			continue;
		}
		if (r[0] == '\\' && r[1] != '\0') {
			*w++ = *r++;
			*w++ = *r;
			continue;
		}
		if (r[0] == '/' && (r[1] == '\0' || r[1] == ' ' || r[1] == '\t'))
			break;
		if (r[0] == '/' && r[1] == 'i' && (r[2] == '\0' || r[2] == ' ' || r[2] == '\t')) {
			*icase = 1;
			r++;
			break;
		}
		*w++ = *r;
	}
	*w = '\0';
	if (*r == '\0')
		return access_error(ld, "regular expression /%s has no closing \"/\"", start);
	r++;
	*pattern = start;
	if (w == start)
		return access_error(ld, "empty regular expression");
	*pp = r;
	return 0;
}

/* access_parse_action - the action named by word (any case); -1 if none */
static int
access_parse_action(const char *word, enum pc_action *action)
{
	size_t i;

	for (i = 0; i < sizeof(access_actions) / sizeof(access_actions[0]); i++) {
		if (access_actions[i] != NULL && strcasecmp(word, access_actions[i]) == 0) {
			*action = (enum pc_action)i;
			return 0;
		}
	}
	return -1;
}

/* access_check_reply - why reply cannot go with action, or NULL if it can:
 * "[CODE] [X.Y.Z] text" where CODE and X are of the action's class, so that
 * a typo shows at -t instead of as the on_error action at run time */
static const char *
access_check_reply(enum pc_action action, const char *reply)
{
	const char *p = reply;
	char class;
	size_t n;

	switch (action) {
	case PC_REJECT:
		class = '5';
		break;
	case PC_TEMPFAIL:
	case PC_DISCONNECT:
		class = '4';
		break;
	default:
		return "only reject, tempfail and disconnect take a reply text";
	}
	if (strlen(reply) > PC_REPLY_MAX)
		return "longer than 512 octets";
	for (p = reply; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "control character (a tab?) in the reply";
	p = reply;
	n = strcspn(p, " ");
	if (n == 3 && strspn(p, "0123456789") == 3) {
		/* a reply code, RFC 5321 §4.2: [2-5][0-5][0-9] */
		if (p[0] != class || p[1] > '5')
			return class == '5' ? "reject needs a 5xx reply code"
			                    : "tempfail and disconnect need a 4xx reply code";
		p += n;
		p += strspn(p, " ");
		n = strcspn(p, " ");
	}
	if (n > 0 && strspn(p, "0123456789.") == n && memchr(p, '.', n) != NULL) {
		/* an enhanced status code, RFC 3463 §2: class.subject.detail */
		if (access_enhanced_len(p) != n)
			return "bad enhanced status code (want X.Y.Z)";
		if (p[0] != class)
			return class == '5'
			    ? "reject needs a 5.Y.Z enhanced status code"
			    : "tempfail and disconnect need a 4.Y.Z enhanced status code";
	}
	return NULL;
}

/* access_enhanced_len - the length of the enhanced status code X.Y.Z
 * (X one digit, Y and Z one to three) at p, or 0 */
static size_t
access_enhanced_len(const char *p)
{
	size_t i = 0, part, n;

	if (p[0] < '2' || p[0] > '5' || p[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		n = strspn(p + i, "0123456789");
		if (n < 1 || n > 3)
			return 0;
		i += n;
		if (part == 0 && p[i++] != '.')
			return 0;
	}
	return i;
}

/* access_add_pattern - file one pattern of a line where its list wants it */
static int
access_add_pattern(struct access_load *ld, const char *pattern, int is_regex, int icase,
    const struct access_rule *rule)
{
	if (is_regex) {
		if (ld->list->kind == ACCESS_CLIENT)
			return access_error(ld,
			    "regular expressions are not allowed in client_list (use CIDR blocks)");
		return access_add_regex(ld, pattern, icase, rule);
	}
	switch (ld->list->kind) {
	case ACCESS_CLIENT:
		return access_add_cidr(ld, pattern, rule);
	case ACCESS_HELO:
		return access_add_host(ld, pattern, rule);
	default:
		return access_add_address(ld, pattern, rule);
	}
}

/* access_add_address - a sender or recipient pattern: user@example.com,
 * example.com, .example.com, user@ or (senders) <> */
static int
access_add_address(struct access_load *ld, const char *pattern, const struct access_rule *rule)
{
	const char *at = strchr(pattern, '@');

	if (strcmp(pattern, "<>") == 0) {
		if (ld->list->kind != ACCESS_SENDER)
			return access_error(
			    ld, "<> (the null sender) only makes sense in sender_list");
		return access_add_exact(ld, pattern, 2, 0, rule);
	}
	if (strchr(pattern, '<') != NULL || strchr(pattern, '>') != NULL)
		return access_error(ld, "bad pattern \"%s\": write addresses without <>", pattern);
	if (at == pattern)
		return access_error(ld,
		    "bad pattern \"%s\": write a domain as example.com (or .example.com for its "
		    "subdomains)",
		    pattern);
	if (at != NULL && strchr(at + 1, '@') != NULL)
		return access_error(ld, "bad pattern \"%s\": more than one @", pattern);
	if (at == NULL && (strcmp(pattern, ".") == 0 || strstr(pattern, "..") != NULL))
		return access_error(ld, "bad domain \"%s\"", pattern);
	return access_add_exact(ld, pattern, strlen(pattern), 1, rule);
}

/* access_add_host - a HELO pattern: host.example.com or .example.com */
static int
access_add_host(struct access_load *ld, const char *pattern, const struct access_rule *rule)
{
	if (strcmp(pattern, ".") == 0 || strstr(pattern, "..") != NULL)
		return access_error(ld, "bad host name \"%s\"", pattern);
	return access_add_exact(ld, pattern, strlen(pattern), 1, rule);
}

/* access_add_cidr - a client pattern: an IPv4 or IPv6 address, or a CIDR
 * block; a single address is an exact key, a block is scanned */
static int
access_add_cidr(struct access_load *ld, const char *pattern, const struct access_rule *rule)
{
	char text[INET6_ADDRSTRLEN + 8];
	unsigned char addr[16], key[ACCESS_IPKEY_MAX];
	const char *slash = strchr(pattern, '/');
	struct access_scan *s;
	unsigned long prefix;
	unsigned max, i;
	int family;
	char *end;

	if (strlen(pattern) >= sizeof(text))
		return access_error(ld, "bad address \"%s\"", pattern);
	strcpy(text, pattern);
	if (slash != NULL)
		text[slash - pattern] = '\0';
	if (access_parse_ip(text, &family, addr) < 0)
		return access_error(
		    ld, "bad address \"%s\" (want an IP address or CIDR block)", pattern);
	max = strchr(text, ':') != NULL ? 128 : 32;
	prefix = max;
	if (slash != NULL) {
		errno = 0;
		prefix = strtoul(slash + 1, &end, 10);
		if (!isdigit((unsigned char)slash[1]) || *end != '\0' || errno != 0 || prefix > max)
			return access_error(
			    ld, "bad CIDR \"%s\": prefix length must be 0 to %u", pattern, max);
	}
	if (max == 128 && family == AF_INET) {
		/* a v4-mapped IPv6 block is the IPv4 block it carries */
		if (prefix < 96)
			return access_error(ld,
			    "bad CIDR \"%s\": an IPv4-mapped block needs a prefix of 96 or more",
			    pattern);
		prefix -= 96;
		max = 32;
	}
	for (i = (unsigned)prefix; i < max; i++) {
		if (addr[i / 8] & (0x80u >> (i % 8)))
			return access_error(ld,
			    "bad CIDR \"%s\": address bits set beyond the /%lu prefix", pattern,
			    prefix);
	}
	if (prefix == max)
		return access_add_exact(ld, key, access_ipkey(family, addr, key), 0, rule);
	if ((s = access_new_scan(ld, rule)) == NULL)
		return -1;
	s->family = family;
	memcpy(s->addr, addr, sizeof(s->addr));
	s->prefix = (unsigned)prefix;
	return 0;
}

/* access_add_regex - a /regex/ or /regex/i pattern (POSIX extended) */
static int
access_add_regex(
    struct access_load *ld, const char *pattern, int icase, const struct access_rule *rule)
{
	struct access_scan *s;
	char why[256];
	regex_t re;
	int err;

	err = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB | (icase ? REG_ICASE : 0));
	if (err != 0) {
		regerror(err, &re, why, sizeof(why));
		return access_error(ld, "bad regular expression /%s/: %s", pattern, why);
	}
	if ((s = access_new_scan(ld, rule)) == NULL) {
		regfree(&re);
		return -1;
	}
	s->is_regex = 1;
	s->re = re;
	return 0;
}

/* access_new_scan - append a scanned entry with a copy of rule */
static struct access_scan *
access_new_scan(struct access_load *ld, const struct access_rule *rule)
{
	struct access_list *l = ld->list;
	struct access_scan *s;
	char *reply = NULL;

	if (l->nscan == l->capscan) {
		size_t cap = l->capscan ? l->capscan * 2 : 16;

		if ((s = realloc(l->scan, cap * sizeof(*s))) == NULL)
			goto nomem;
		l->scan = s;
		l->capscan = cap;
	}
	if (rule->reply != NULL && (reply = strdup(rule->reply)) == NULL)
		goto nomem;
	s = &l->scan[l->nscan++];
	memset(s, 0, sizeof(*s));
	s->rule = *rule;
	s->rule.reply = reply;
	return s;
nomem:
	access_error(ld, "out of memory");
	return NULL;
}

/* access_add_exact - append an exact key (lower-cased if lower) */
static int
access_add_exact(
    struct access_load *ld, const void *key, size_t len, int lower, const struct access_rule *rule)
{
	struct access_list *l = ld->list;
	struct access_exact *e;
	size_t i;

	if (l->nexact == l->capexact) {
		size_t cap = l->capexact ? l->capexact * 2 : 64;

		if ((e = realloc(l->exact, cap * sizeof(*e))) == NULL)
			return access_error(ld, "out of memory");
		l->exact = e;
		l->capexact = cap;
	}
	e = &l->exact[l->nexact];
	memset(e, 0, sizeof(*e));
	if ((e->key = malloc(len + 1)) == NULL)
		return access_error(ld, "out of memory");
	memcpy(e->key, key, len);
	e->key[len] = '\0';
	if (lower)
		for (i = 0; i < len; i++)
			e->key[i] = (char)tolower((unsigned char)e->key[i]);
	e->len = len;
	e->rule = *rule;
	if (rule->reply != NULL && (e->rule.reply = strdup(rule->reply)) == NULL) {
		free(e->key);
		return access_error(ld, "out of memory");
	}
	l->nexact++;
	return 0;
}

/* access_key_cmp - order exact entries by key (length first) */
static int
access_key_cmp(const void *x, const void *y)
{
	const struct access_exact *a = x, *b = y;

	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	return memcmp(a->key, b->key, a->len);
}

/* access_exact_cmp - order exact entries by key, then by line */
static int
access_exact_cmp(const void *x, const void *y)
{
	const struct access_exact *a = x, *b = y;
	int c;

	if ((c = access_key_cmp(x, y)) != 0)
		return c;
	if (a->rule.line != b->rule.line)
		return a->rule.line < b->rule.line ? -1 : 1;
	return 0;
}

/* access_sort - sort the exact keys and keep only the first line of each
 * duplicate key (a later one could never match: say so) */
static void
access_sort(struct access *a, struct pc_init *in, struct access_list *l)
{
	size_t i, out = 0;

	if (l->nexact == 0)
		return;
	qsort(l->exact, l->nexact, sizeof(*l->exact), access_exact_cmp);
	for (i = 0; i < l->nexact; i++) {
		struct access_exact *e = &l->exact[i];

		if (out > 0 && l->exact[out - 1].len == e->len &&
		    memcmp(l->exact[out - 1].key, e->key, e->len) == 0) {
			a->host->log(in->self, NULL, PC_LOG_WARN,
			    "%s %s:%d: duplicate pattern, line %d wins", access_keys[l->kind],
			    l->path, e->rule.line, l->exact[out - 1].rule.line);
			free(e->key);
			free(e->rule.reply);
			continue;
		}
		l->exact[out++] = *e;
	}
	l->nexact = out;
}

/* access_parse_ip - an IPv4 or IPv6 address in binary; a v4-mapped IPv6
 * address (::ffff:192.0.2.1) becomes the IPv4 address it carries */
static int
access_parse_ip(const char *text, int *family, unsigned char *addr)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(addr, 0, 16);
	if (strchr(text, ':') == NULL) {
		*family = AF_INET;
		return inet_pton(AF_INET, text, addr) == 1 ? 0 : -1;
	}
	if (inet_pton(AF_INET6, text, addr) != 1)
		return -1;
	*family = AF_INET6;
	if (memcmp(addr, mapped, sizeof(mapped)) == 0) {
		memmove(addr, addr + 12, 4);
		memset(addr + 4, 0, 12);
		*family = AF_INET;
	}
	return 0;
}

/* access_ipkey - the exact key of an address: family tag, then octets */
static size_t
access_ipkey(int family, const unsigned char *addr, unsigned char *key)
{
	size_t n = family == AF_INET ? 4 : 16;

	key[0] = family == AF_INET ? '4' : '6';
	memcpy(key + 1, addr, n);
	return n + 1;
}

/* access_find - the rule of an exact key, or NULL */
static const struct access_rule *
access_find(const struct access_list *l, const void *key, size_t len)
{
	struct access_exact want, *e;

	if (l->nexact == 0)
		return NULL;
	want.key = (char *)(uintptr_t)key;
	want.len = len;
	e = bsearch(&want, l->exact, l->nexact, sizeof(*l->exact), access_key_cmp);
	return e != NULL ? &e->rule : NULL;
}

/* access_better - the earlier (lower line) of two hits */
static const struct access_rule *
access_better(const struct access_rule *best, const struct access_rule *r)
{
	if (r == NULL)
		return best;
	if (best == NULL || r->line < best->line)
		return r;
	return best;
}

/* access_match_regex - the first regex at a line before best that matches
 * subject, else best */
static const struct access_rule *
access_match_regex(const struct access_list *l, const char *subject, const struct access_rule *best)
{
	size_t i;

	for (i = 0; i < l->nscan; i++) {
		const struct access_scan *s = &l->scan[i];

		if (best != NULL && s->rule.line > best->line)
			break;
		if (s->is_regex && regexec(&s->re, subject, 0, NULL, 0) == 0)
			return &s->rule;
	}
	return best;
}

/* access_match_client - the first line of a client list matching ip */
static const struct access_rule *
access_match_client(const struct access_list *l, const char *ip)
{
	unsigned char addr[16], key[ACCESS_IPKEY_MAX];
	const struct access_rule *best;
	int family;
	size_t i;

	if (ip == NULL || access_parse_ip(ip, &family, addr) < 0)
		return NULL;
	best = access_find(l, key, access_ipkey(family, addr, key));
	for (i = 0; i < l->nscan; i++) {
		const struct access_scan *s = &l->scan[i];
		unsigned full = s->prefix / 8, rest = s->prefix % 8;

		if (best != NULL && s->rule.line > best->line)
			break;
		if (s->family != family || memcmp(s->addr, addr, full) != 0)
			continue;
		if (rest == 0 || ((s->addr[full] ^ addr[full]) & (0xff00u >> rest) & 0xff) == 0)
			return &s->rule;
	}
	return best;
}

/* access_match_domain - the earliest of best and the rules for domain
 * itself (if name is a domain pattern) and ".parent" for each parent */
static const struct access_rule *
access_match_domain(const struct access_list *l, const char *domain, const struct access_rule *best)
{
	const char *p;

	for (p = domain; *p != '\0'; p++)
		if (*p == '.')
			best = access_better(best, access_find(l, p, strlen(p)));
	return best;
}

/* access_match_host - the first line of a HELO list matching name */
static const struct access_rule *
access_match_host(const struct access_list *l, const char *name)
{
	const struct access_rule *best;
	char *lower;
	size_t i, n;

	if (name == NULL)
		return NULL;
	n = strlen(name);
	if ((lower = malloc(n + 1)) == NULL)
		return NULL;
	for (i = 0; i <= n; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	best = access_find(l, lower, n);
	best = access_match_domain(l, lower, best);
	free(lower);
	return access_match_regex(l, name, best);
}

/* access_match_address - the first line of a sender or recipient list
 * matching addr ("" is the null sender) */
static const struct access_rule *
access_match_address(const struct access_list *l, const char *addr)
{
	const struct access_rule *best = NULL;
	char *lower, *at;
	size_t i, n;

	if (addr == NULL)
		return NULL;
	if (addr[0] == '\0')
		return access_match_regex(l, addr, access_find(l, "<>", 2));
	n = strlen(addr);
	if ((lower = malloc(n + 2)) == NULL)
		return NULL;
	for (i = 0; i <= n; i++)
		lower[i] = (char)tolower((unsigned char)addr[i]);
	if ((at = strrchr(lower, '@')) != NULL) {
		best = access_find(l, lower, n);
		best = access_better(best, access_find(l, lower, (size_t)(at - lower) + 1));
		if (at[1] != '\0') {
			best = access_better(best, access_find(l, at + 1, strlen(at + 1)));
			best = access_match_domain(l, at + 1, best);
		}
	} else {
		/* RCPT TO:<postmaster> has no domain: "postmaster@" still matches */
		lower[n] = '@';
		lower[n + 1] = '\0';
		best = access_better(best, access_find(l, lower, n + 1));
	}
	free(lower);
	return access_match_regex(l, addr, best);
}

/* access_check - look up the field of this stage in its list and fill in
 * the verdict of the first matching line */
static int
access_check(struct access *a, struct pc_call *call, enum access_kind kind, enum pc_field field,
    struct pc_verdict *v)
{
	const struct access_list *l = a->lists[kind];
	const struct access_rule *r;
	const char *what;

	if (l == NULL)
		return PC_HOOK_DONE;
	what = a->host->get(call, field);
	switch (kind) {
	case ACCESS_CLIENT:
		r = access_match_client(l, what);
		break;
	case ACCESS_HELO:
		r = access_match_host(l, what);
		break;
	default:
		r = access_match_address(l, what);
		break;
	}
	if (r == NULL)
		return PC_HOOK_DONE;
	if (kind == ACCESS_SENDER || kind == ACCESS_RCPT)
		a->host->log(a->self, call, PC_LOG_INFO, "access: %s <%s> matched %s:%d -> %s",
		    access_subject[kind], what, access_keys[kind], r->line,
		    access_actions[r->action]);
	else
		a->host->log(a->self, call, PC_LOG_INFO, "access: %s %s matched %s:%d -> %s",
		    access_subject[kind], what, access_keys[kind], r->line,
		    access_actions[r->action]);
	v->action = r->action;
	v->reply = r->reply;
	return PC_HOOK_DONE;
}

/* access_connect - the client list, by the client's address */
static int
access_connect(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return access_check(instance, call, ACCESS_CLIENT, PC_CLIENT_IP, v);
}

/* access_helo - the HELO list, by the HELO/EHLO name */
static int
access_helo(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return access_check(instance, call, ACCESS_HELO, PC_HELO, v);
}

/* access_mail - the sender list, by the MAIL FROM address */
static int
access_mail(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return access_check(instance, call, ACCESS_SENDER, PC_SENDER, v);
}

/* access_rcpt - the recipient list, by the RCPT TO address */
static int
access_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	return access_check(instance, call, ACCESS_RCPT, PC_RCPT, v);
}
