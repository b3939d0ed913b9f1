/*
 * dnsbl_common.h - what the dnsbl and rhsbl plugins share: the zone lines
 * of a section, the section keys both take, the answer cache, and the
 * lookup job that asks N names in parallel on evdns and answers when the
 * last one is in. doc/dnsbl.md describes both plugins; its last section
 * walks through this code.
 *
 * Every function here is static: each plugin includes the header and
 * compiles its own copy (a plugin is one shared object linked only
 * against libevent; there is no library to share).
 *
 *	bl_conf_init, bl_conf_option, bl_conf_finish, bl_conf_free
 *		the section: zones and common keys, checked at init
 *	bl_job_new, bl_job_run, bl_job_cancel
 *		one lookup: names in parallel, cache first, a deadline
 *	bl_exempt_rcpt
 *		is this recipient one that a listing never refuses
 *	bl_warn
 *		a log line at most once a minute, with a count of the rest
 *
 * RFC 5782 is the DNSBL convention: a name under the zone with an A
 * record in 127.0.0.0/8 is listed; NXDOMAIN is not listed; answers in
 * 127.255.255.0/24 are the list telling us it will not answer (§2.1; a
 * query through a public resolver, a quota), never a listing.
 */
#ifndef DNSBL_COMMON_H
#define DNSBL_COMMON_H

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "portcullis/plugin.h"

/* Zones per section: every one is asked for every client, in parallel. */
#define BL_ZONES_MAX 32
/* A DNS name is at most 253 octets written out (RFC 1035 §2.3.4). */
#define BL_NAME_MAX 254
/* Code ranges per zone. */
#define BL_CODES_MAX 16
/* Addresses of one answer kept (a listing gives one or two). */
#define BL_ADDRS_MAX 8
/* A symbol for host->add_score: [A-Z0-9_], 1 to 64 octets. */
#define BL_SYMBOL_MAX 64
/* A weight past this is a typo, not a policy. */
#define BL_WEIGHT_MAX 1000.0
/* Failures and refusals are logged at most this often per instance: a
 * resolver that is down would otherwise write a line per client. */
#define BL_WARN_EVERY_MS 60000ULL
/* The whole lookup's deadline (key timeout), 100ms to 60s. */
#define BL_TIMEOUT_DEFAULT_MS 5000ULL
#define BL_TIMEOUT_MIN_MS 100ULL
#define BL_TIMEOUT_MAX_MS 60000ULL
/* The cache (key cache_size): entries, each a name and its answer. The
 * bound is what stops a flood of distinct clients from growing memory. */
#define BL_CACHE_DEFAULT 10000ULL
#define BL_CACHE_MAX 1000000ULL
/* How long "not listed" is kept when the answer has no usable TTL (key
 * negative_ttl), and the longest any answer is kept (key max_ttl). */
#define BL_NEG_TTL_DEFAULT_MS (60ULL * 1000)
#define BL_MAX_TTL_DEFAULT_MS (3600ULL * 1000)
#define BL_TTL_LIMIT_MS (7ULL * 86400 * 1000)
/* Recipients a listing never refuses (key exempt_recipients). */
#define BL_EXEMPT_MAX 64
#define BL_EXEMPT_DEFAULT "postmaster"

/* What a listing does (a zone's action=). */
enum bl_action {
	BL_ACT_REJECT = 0, /* refuse at once: dnsbl at connect, rhsbl at MAIL/DATA */
	BL_ACT_RCPT, /* refuse each RCPT but the exempt ones (postmaster) */
	BL_ACT_SCORE, /* only add the weight */
};

static const char *const bl_action_names[] = {"reject", "rcpt", "score"};

/* A range of answer codes, host byte order. */
struct bl_range {
	uint32_t lo, hi;
};

/* One zone = line. */
struct bl_zone {
	char name[BL_NAME_MAX]; /* lower case, no trailing dot */
	char symbol[BL_SYMBOL_MAX + 1];
	double weight;
	enum bl_action action;
	struct bl_range codes[BL_CODES_MAX];
	size_t ncodes;
	unsigned checks; /* rhsbl: which names (a bit per item); dnsbl: 1 */
};

/* A log line kept to once a minute. */
struct bl_warn {
	unsigned long long at_ms; /* the last line; 0: none yet */
	unsigned long quiet; /* lines left out since */
};

/* One cached answer: the name asked, and either "not listed" or the A
 * records. Entries hang in a hash chain and in an LRU list. */
struct bl_entry {
	struct bl_entry *hnext;
	struct bl_entry *prev, *next; /* prev: more recently used */
	unsigned long long expires_ms;
	size_t naddrs; /* 0: not listed (NXDOMAIN or no A record) */
	uint32_t addrs[BL_ADDRS_MAX];
	char name[]; /* NUL-terminated */
};

struct bl_cache {
	struct bl_entry **tab;
	size_t nbuckets, n, max;
	struct bl_entry *head, *tail; /* most and least recently used */
};

/* An instance's configuration: both plugins put one in their instance. */
struct bl_conf {
	const struct pc_host *host;
	struct pc_instance *self;
	const char *plugin; /* "dnsbl" or "rhsbl", for logs and symbols */
	const char *const *items; /* rhsbl: the names check= takes; NULL: none */
	struct bl_zone zones[BL_ZONES_MAX];
	size_t nzones;
	char dns_server[64]; /* "" : the daemon's resolver */
	struct evdns_base *own_dns; /* the section's resolver, or NULL */
	struct evdns_base *dns; /* the one used: own_dns or host->dns */
	unsigned long long timeout_ms, neg_ttl_ms, max_ttl_ms, cache_size;
	char *exempt[BL_EXEMPT_MAX]; /* "postmaster" or "user@domain", lower case */
	size_t nexempt;
	int exempt_set;
	struct bl_cache cache;
	struct bl_warn fail_warn, refused_warn;
};

/* What one name turned out to be. */
enum bl_result {
	BL_WAITING = 0, /* no answer yet */
	BL_NOT_LISTED, /* NXDOMAIN, no A record, or codes that do not count */
	BL_LISTED, /* an answer among the zone's codes: code says which */
	BL_REFUSED, /* 127.255.255.x: the list refuses us; code says which */
	BL_FAILED, /* timeout, SERVFAIL, a nonsense answer: why says */
};

struct bl_job;

/* One name of a job. */
struct bl_query {
	struct bl_job *job;
	struct evdns_request *req; /* in flight: its callback is still to come */
	size_t zone; /* index into conf->zones */
	int item; /* the plugin's: which name this is (rhsbl) */
	int same_as; /* -1, or an earlier query of the same name (not asked again) */
	enum bl_result result;
	uint32_t code;
	int cached; /* the answer came from the cache */
	char why[96];
	char name[BL_NAME_MAX];
};

/*
 * One lookup: one hook call's N names. It lives until both (a) it was
 * finished (done called) or cancelled, and (b) every evdns request it
 * started has called back: evdns calls back exactly once per request,
 * with the answer or, after evdns_cancel_request, with DNS_ERR_CANCEL.
 * refs counts (b); call is NULL once (a).
 */
struct bl_job {
	struct bl_conf *conf; /* NULL once cancelled: the instance may be gone */
	struct pc_call *call; /* NULL once finished or cancelled */
	struct evdns_base *dns; /* for evdns_cancel_request */
	struct event *deadline;
	void (*done)(struct bl_job *job); /* the plugin: read q[], resume */
	void *arg; /* the plugin's */
	size_t n; /* queries */
	size_t waiting; /* queries with no result yet */
	size_t refs; /* evdns callbacks still to come */
	int starting; /* bl_job_run's loop is on the stack */
	char session[32]; /* for the cancel log line */
	struct bl_query q[];
};

/* ---- small helpers ---- */

/* bl_now_ms - a monotonic clock, for expiry and the once-a-minute logs */
static unsigned long long
bl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000;
}

/* bl_warn - log one line, unless one went out less than a minute ago:
 * then count it, and say how many were left out with the next one */
static void bl_warn(struct bl_conf *c, struct bl_warn *w, struct pc_call *call,
    enum pc_log_level level, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
bl_warn(struct bl_conf *c, struct bl_warn *w, struct pc_call *call, enum pc_log_level level,
    const char *fmt, ...)
{
	unsigned long long now = bl_now_ms();
	char line[512];
	va_list ap;

	if (w->at_ms != 0 && now - w->at_ms < BL_WARN_EVERY_MS) {
		w->quiet++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (w->quiet > 0)
		c->host->log(
		    c->self, call, level, "%s (%lu more since the last report)", line, w->quiet);
	else
		c->host->log(c->self, call, level, "%s", line);
	w->at_ms = now;
	w->quiet = 0;
}

/* bl_domain - a domain name as we ask it: lower case, no trailing dot,
 * labels of 1 to 63 letters, digits, '-' or '_', at least two labels when
 * dots is set. Into out (size octets); 0, or -1 if it is not one. Names
 * come from clients (HELO, MAIL FROM, From:): anything odd is refused
 * rather than sent to a resolver. */
static int
bl_domain(const char *in, size_t len, int dots, char *out, size_t size)
{
	size_t i, label = 0, ndots = 0;

	while (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len >= size || len > 253)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];

		if (ch == '.') {
			if (label == 0)
				return -1;
			label = 0;
			ndots++;
		} else if (isalnum(ch) || ch == '-' || ch == '_') {
			if (++label > 63)
				return -1;
		} else {
			return -1;
		}
		out[i] = (char)tolower(ch);
	}
	out[len] = '\0';
	return dots && ndots == 0 ? -1 : 0;
}

/* ---- the section ---- */

/* bl_codes - "127.0.0.2-127.0.0.11,127.0.0.20,127.0.1.0/24" into z->codes */
static int
bl_codes(struct bl_zone *z, const char *v, char *err, size_t errlen)
{
	char item[64], *dash, *slash;
	struct in_addr a, b;
	const char *end, *all = v;
	size_t len;
	long bits;

	z->ncodes = 0;
	while (*v != '\0') {
		end = strchr(v, ',');
		len = end != NULL ? (size_t)(end - v) : strlen(v);
		if (len == 0 || len >= sizeof(item) || z->ncodes == BL_CODES_MAX)
			goto bad;
		memcpy(item, v, len);
		item[len] = '\0';
		dash = strchr(item, '-');
		slash = strchr(item, '/');
		if (dash != NULL) {
			*dash = '\0';
			if (inet_pton(AF_INET, item, &a) != 1 ||
			    inet_pton(AF_INET, dash + 1, &b) != 1)
				goto bad;
			z->codes[z->ncodes].lo = ntohl(a.s_addr);
			z->codes[z->ncodes].hi = ntohl(b.s_addr);
		} else if (slash != NULL) {
			*slash = '\0';
			bits = strtol(slash + 1, &dash, 10);
			if (inet_pton(AF_INET, item, &a) != 1 || *dash != '\0' ||
			    slash[1] == '\0' || bits < 8 || bits > 32)
				goto bad;
			z->codes[z->ncodes].lo = ntohl(a.s_addr);
			z->codes[z->ncodes].hi =
			    ntohl(a.s_addr) | (uint32_t)(0xffffffffULL >> bits);
			if (bits < 32 &&
			    (z->codes[z->ncodes].lo & (uint32_t)(0xffffffffULL >> bits)))
				goto bad;
		} else {
			if (inet_pton(AF_INET, item, &a) != 1)
				goto bad;
			z->codes[z->ncodes].lo = z->codes[z->ncodes].hi = ntohl(a.s_addr);
		}
		if (z->codes[z->ncodes].lo > z->codes[z->ncodes].hi ||
		    (z->codes[z->ncodes].lo >> 24) != 127 || (z->codes[z->ncodes].hi >> 24) != 127)
			goto bad;
		/* RFC 5782 §2.1: 127.255.255.0/24 are errors; a list of codes
		 * that counts them as listings would refuse mail whenever the
		 * list refuses us. */
		if (z->codes[z->ncodes].hi >= 0x7fffff00U) {
			snprintf(err, errlen,
			    "codes: \"%s\" reaches into 127.255.255.0/24, which are error answers "
			    "(RFC 5782 §2.1), never listings",
			    all);
			return -1;
		}
		z->ncodes++;
		v += len;
		if (*v == ',')
			v++;
	}
	if (z->ncodes > 0)
		return 0;
bad:
	snprintf(err, errlen,
	    "codes: bad value \"%s\": expected addresses, ranges (127.0.0.2-127.0.0.11) or "
	    "networks (127.0.1.0/24) in 127.0.0.0/8, separated by commas, at most %d",
	    all, BL_CODES_MAX);
	return -1;
}

/* bl_zone_attr - one NAME=VALUE after the zone name */
static int
bl_zone_attr(struct bl_conf *c, struct bl_zone *z, const char *key, const char *val, char *err,
    size_t errlen)
{
	char *end;
	size_t i, n;

	if (strcmp(key, "weight") == 0) {
		z->weight = strtod(val, &end);
		if (*val == '\0' || *end != '\0' || !isfinite(z->weight) ||
		    fabs(z->weight) > BL_WEIGHT_MAX) {
			snprintf(err, errlen,
			    "weight: bad value \"%s\": expected a number from -1000 to 1000", val);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "action") == 0) {
		for (i = 0; i < 3; i++) {
			if (strcmp(val, bl_action_names[i]) == 0) {
				z->action = (enum bl_action)i;
				return 0;
			}
		}
		snprintf(err, errlen, "action: bad value \"%s\": want reject, rcpt or score", val);
		return -1;
	}
	if (strcmp(key, "codes") == 0)
		return bl_codes(z, val, err, errlen);
	if (strcmp(key, "symbol") == 0) {
		n = strlen(val);
		for (i = 0; i < n; i++)
			if (!isupper((unsigned char)val[i]) && !isdigit((unsigned char)val[i]) &&
			    val[i] != '_')
				break;
		if (n == 0 || n > BL_SYMBOL_MAX || i < n) {
			snprintf(err, errlen,
			    "symbol: bad value \"%s\": expected 1 to 64 of A-Z, 0-9 and _", val);
			return -1;
		}
		memcpy(z->symbol, val, n + 1);
		return 0;
	}
	if (strcmp(key, "check") == 0 && c->items != NULL) {
		const char *cur = val, *it;

		z->checks = 0;
		while (c->host->opt_list(&cur, &it, &n)) {
			for (i = 0; c->items[i] != NULL; i++)
				if (strlen(c->items[i]) == n && strncmp(c->items[i], it, n) == 0)
					break;
			if (c->items[i] == NULL) {
				snprintf(err, errlen,
				    "check: bad value \"%s\": want sender, helo and/or from, "
				    "separated by commas",
				    val);
				return -1;
			}
			z->checks |= 1u << i;
		}
		return 0;
	}
	snprintf(err, errlen, "unknown attribute \"%s\" (a zone takes weight, action, codes, %s)",
	    key, c->items != NULL ? "symbol and check" : "and symbol");
	return -1;
}

/* bl_zone_line - "zen.spamhaus.org weight=5 action=rcpt codes=... symbol=..." */
static int
bl_zone_line(struct bl_conf *c, const char *value, char *err, size_t errlen)
{
	struct bl_zone *z;
	char word[512], *eq, tmp[1200];
	const char *p = value, *start;
	size_t len, i;
	int first = 1;

	if (c->nzones == BL_ZONES_MAX) {
		snprintf(err, errlen, "zone: more than %d zones in one section", BL_ZONES_MAX);
		return -1;
	}
	z = &c->zones[c->nzones];
	memset(z, 0, sizeof(*z));
	z->action = BL_ACT_RCPT;
	z->checks = c->items != NULL ? ~0u : 1u;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		for (start = p; *p != '\0' && *p != ' ' && *p != '\t'; p++)
			;
		len = (size_t)(p - start);
		if (len >= sizeof(word)) {
			snprintf(err, errlen, "zone: \"%.40s...\" is too long", start);
			return -1;
		}
		memcpy(word, start, len);
		word[len] = '\0';
		if (first) {
			/* The zone, plus a reversed IPv6 address (64 octets)
			 * or a domain, must fit in a DNS name. */
			if (bl_domain(word, len, 1, z->name, sizeof(z->name)) != 0 ||
			    strlen(z->name) > 253 - 64 - 1) {
				snprintf(err, errlen,
				    "zone: bad zone \"%s\": expected a domain name such as "
				    "zen.spamhaus.org, then NAME=VALUE attributes",
				    word);
				return -1;
			}
			first = 0;
			continue;
		}
		if ((eq = strchr(word, '=')) == NULL) {
			snprintf(err, errlen, "zone %s: \"%s\" is not NAME=VALUE", z->name, word);
			return -1;
		}
		*eq = '\0';
		if (bl_zone_attr(c, z, word, eq + 1, tmp, sizeof(tmp)) != 0) {
			snprintf(err, errlen, "zone %s: %s", z->name, tmp);
			return -1;
		}
	}
	if (first) {
		snprintf(
		    err, errlen, "zone: empty: expected a domain name such as zen.spamhaus.org");
		return -1;
	}
	for (i = 0; i < c->nzones; i++) {
		if (strcmp(c->zones[i].name, z->name) == 0) {
			snprintf(err, errlen, "zone %s: named twice in this section", z->name);
			return -1;
		}
	}
	if (z->action == BL_ACT_SCORE && z->weight == 0) {
		snprintf(err, errlen, "zone %s: action=score needs a weight other than 0", z->name);
		return -1;
	}
	if (z->checks == 0) {
		snprintf(err, errlen, "zone %s: check= names nothing", z->name);
		return -1;
	}
	if (z->ncodes == 0) {
		/* Any 127.0.0.0/8 answer but the error block. */
		z->codes[0].lo = 0x7f000000U;
		z->codes[0].hi = 0x7ffffeffU;
		z->ncodes = 1;
	}
	if (z->symbol[0] == '\0') {
		/* RBL_ZEN_SPAMHAUS_ORG: the prefix, then the zone in upper case. */
		len = (size_t)snprintf(z->symbol, sizeof(z->symbol), "%s_",
		    strcmp(c->plugin, "dnsbl") == 0 ? "RBL" : "RHSBL");
		for (i = 0; z->name[i] != '\0' && len < BL_SYMBOL_MAX; i++, len++)
			z->symbol[len] = isalnum((unsigned char)z->name[i])
			    ? (char)toupper((unsigned char)z->name[i])
			    : '_';
		z->symbol[len] = '\0';
	}
	c->nzones++;
	return 0;
}

/* bl_exempt - exempt_recipients = postmaster abuse@example.org */
static int
bl_exempt(struct bl_conf *c, const char *value, char *err, size_t errlen)
{
	const char *cur = value, *it;
	size_t n, i;

	for (i = 0; i < c->nexempt; i++)
		free(c->exempt[i]);
	c->nexempt = 0;
	c->exempt_set = 1;
	while (c->host->opt_list(&cur, &it, &n)) {
		if (c->nexempt == BL_EXEMPT_MAX || n > 256 || memchr(it, '<', n) != NULL ||
		    memchr(it, '>', n) != NULL || it[0] == '@' || it[n - 1] == '@') {
			snprintf(err, errlen,
			    "exempt_recipients: bad value \"%s\": expected up to %d local parts "
			    "(postmaster) or addresses (abuse@example.org)",
			    value, BL_EXEMPT_MAX);
			return -1;
		}
		if ((c->exempt[c->nexempt] = malloc(n + 1)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		for (i = 0; i < n; i++)
			c->exempt[c->nexempt][i] = (char)tolower((unsigned char)it[i]);
		c->exempt[c->nexempt][n] = '\0';
		c->nexempt++;
	}
	return 0;
}

/* bl_dns_server - dns_server = IP[:PORT], checked now (also at -t) */
static int
bl_dns_server(struct bl_conf *c, const char *value, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	int len = (int)sizeof(ss);

	if (strlen(value) >= sizeof(c->dns_server) ||
	    evutil_parse_sockaddr_port(value, (struct sockaddr *)&ss, &len) != 0) {
		snprintf(err, errlen,
		    "dns_server: bad value \"%s\": expected an IP address and an optional port "
		    "(192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53)",
		    value);
		return -1;
	}
	snprintf(c->dns_server, sizeof(c->dns_server), "%s", value);
	return 0;
}

/* bl_time_opt - a time key within [min, max] */
static int
bl_time_opt(struct bl_conf *c, const char *key, const char *value, unsigned long long min,
    unsigned long long max, const char *range, unsigned long long *out, char *err, size_t errlen)
{
	unsigned long long ms;

	if (c->host->opt_time(value, &ms, NULL, 0) == 0 && ms >= min && ms <= max) {
		*out = ms;
		return 0;
	}
	snprintf(err, errlen, "%s: bad value \"%s\": expected a time from %s (e.g. 500ms, 2s, 1m)",
	    key, value, range);
	return -1;
}

/* bl_conf_init - defaults, before the keys */
static void
bl_conf_init(
    struct bl_conf *c, const struct pc_init *in, const char *plugin, const char *const *items)
{
	memset(c, 0, sizeof(*c));
	c->host = in->host;
	c->self = in->self;
	c->plugin = plugin;
	c->items = items;
	c->timeout_ms = BL_TIMEOUT_DEFAULT_MS;
	c->neg_ttl_ms = BL_NEG_TTL_DEFAULT_MS;
	c->max_ttl_ms = BL_MAX_TTL_DEFAULT_MS;
	c->cache_size = BL_CACHE_DEFAULT;
}

/* bl_conf_option - one of the keys both plugins take: 1 if it was one
 * (0 or -1 in *rc), 0 if the key is the plugin's own */
static int
bl_conf_option(struct bl_conf *c, const struct pc_option *o, char *err, size_t errlen, int *rc)
{
	unsigned long long n;

	*rc = 0;
	if (strcmp(o->key, "zone") == 0)
		*rc = bl_zone_line(c, o->value, err, errlen);
	else if (strcmp(o->key, "dns_server") == 0)
		*rc = bl_dns_server(c, o->value, err, errlen);
	else if (strcmp(o->key, "timeout") == 0)
		*rc = bl_time_opt(c, "timeout", o->value, BL_TIMEOUT_MIN_MS, BL_TIMEOUT_MAX_MS,
		    "100ms to 60s", &c->timeout_ms, err, errlen);
	else if (strcmp(o->key, "negative_ttl") == 0)
		*rc = bl_time_opt(c, "negative_ttl", o->value, 0, BL_TTL_LIMIT_MS, "0 to 7d",
		    &c->neg_ttl_ms, err, errlen);
	else if (strcmp(o->key, "max_ttl") == 0)
		*rc = bl_time_opt(c, "max_ttl", o->value, 0, BL_TTL_LIMIT_MS, "0 to 7d",
		    &c->max_ttl_ms, err, errlen);
	else if (strcmp(o->key, "exempt_recipients") == 0)
		*rc = bl_exempt(c, o->value, err, errlen);
	else if (strcmp(o->key, "cache_size") == 0) {
		char *end;

		n = strtoull(o->value, &end, 10);
		if (!isdigit((unsigned char)o->value[0]) || *end != '\0' || n > BL_CACHE_MAX) {
			snprintf(err, errlen,
			    "cache_size: bad value \"%s\": expected a number of entries from 0 "
			    "(no cache) to %llu",
			    o->value, BL_CACHE_MAX);
			*rc = -1;
		} else {
			c->cache_size = n;
		}
	} else
		return 0;
	return 1;
}

/* bl_conf_finish - after the keys: at least one zone, the default exempt
 * list, and the section's own resolver (not at -t: nothing starts) */
static int
bl_conf_finish(struct bl_conf *c, const struct pc_init *in, char *err, size_t errlen)
{
	char secs[32];

	if (c->nzones == 0) {
		snprintf(err, errlen,
		    "no zone: add one or more lines such as \"zone = %s weight=5\"",
		    strcmp(c->plugin, "dnsbl") == 0 ? "zen.spamhaus.org" : "dbl.spamhaus.org");
		return -1;
	}
	if (!c->exempt_set && bl_exempt(c, BL_EXEMPT_DEFAULT, err, errlen) != 0)
		return -1;
	c->dns = c->host->dns;
	if (c->dns_server[0] != '\0' && !in->check_only) {
		/* Not reading resolv.conf: this resolver asks dns_server only. */
		if ((c->own_dns = evdns_base_new(c->host->base, 0)) == NULL ||
		    evdns_base_nameserver_ip_add(c->own_dns, c->dns_server) != 0) {
			snprintf(err, errlen, "dns_server: cannot use %s", c->dns_server);
			return -1;
		}
		/* Two tries within the lookup's deadline. */
		snprintf(secs, sizeof(secs), "%.3f", (double)c->timeout_ms / 2000.0);
		evdns_base_set_option(c->own_dns, "timeout:", secs);
		evdns_base_set_option(c->own_dns, "attempts:", "2");
		evdns_base_set_option(c->own_dns, "randomize-case:", "0");
		c->dns = c->own_dns;
	}
	if (c->cache_size > 0) {
		c->cache.max = (size_t)c->cache_size;
		c->cache.nbuckets = 64;
		while (c->cache.nbuckets < c->cache.max && c->cache.nbuckets < (1u << 20))
			c->cache.nbuckets <<= 1;
		if ((c->cache.tab = calloc(c->cache.nbuckets, sizeof(*c->cache.tab))) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	return 0;
}

/* bl_conf_free - at fini (or a failed init). Every job is over by then,
 * or cancelled: a cancelled job never touches its conf again. */
static void
bl_conf_free(struct bl_conf *c)
{
	struct bl_entry *e, *next;
	size_t i;

	for (e = c->cache.head; e != NULL; e = next) {
		next = e->next;
		free(e);
	}
	free(c->cache.tab);
	for (i = 0; i < c->nexempt; i++)
		free(c->exempt[i]);
	/* fail_requests = 1: a request still in flight calls back (with
	 * DNS_ERR_SHUTDOWN), so its job is freed rather than leaked. */
	if (c->own_dns != NULL)
		evdns_base_free(c->own_dns, 1);
}

/* ---- recipients a listing never refuses ---- */

/* bl_exempt_rcpt - 1 if addr (a recipient) is in exempt_recipients: an
 * entry without '@' is a local part at any domain (and the bare
 * "postmaster" RFC 5321 §4.5.1 lets a client use), one with '@' the whole
 * address; both compared without case */
static int
bl_exempt_rcpt(struct bl_conf *c, const char *addr)
{
	const char *at;
	size_t i, llen, alen;

	if (addr == NULL)
		return 0;
	alen = strlen(addr);
	at = strrchr(addr, '@');
	llen = at != NULL ? (size_t)(at - addr) : alen;
	for (i = 0; i < c->nexempt; i++) {
		const char *e = c->exempt[i];

		if (strchr(e, '@') != NULL) {
			if (strcasecmp(e, addr) == 0)
				return 1;
		} else if (strlen(e) == llen && strncasecmp(e, addr, llen) == 0) {
			return 1;
		}
	}
	return 0;
}

/* ---- the cache: a hash table of names with an LRU list ---- */

/* bl_hash - FNV-1a of a name (names are lower case already) */
static size_t
bl_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

/* bl_cache_unlink - take e out of the table and the list, and free it */
static void
bl_cache_drop(struct bl_cache *ca, struct bl_entry *e)
{
	struct bl_entry **pp = &ca->tab[bl_hash(e->name) & (ca->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		ca->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		ca->tail = e->prev;
	ca->n--;
	free(e);
}

/* bl_cache_get - the live entry for name, made the most recently used;
 * NULL if there is none (an expired one is dropped on the way) */
static struct bl_entry *
bl_cache_get(struct bl_cache *ca, const char *name, unsigned long long now)
{
	struct bl_entry *e;

	if (ca->tab == NULL)
		return NULL;
	for (e = ca->tab[bl_hash(name) & (ca->nbuckets - 1)]; e != NULL; e = e->hnext)
		if (strcmp(e->name, name) == 0)
			break;
	if (e == NULL)
		return NULL;
	if (now >= e->expires_ms) {
		bl_cache_drop(ca, e);
		return NULL;
	}
	if (e != ca->head) {
		e->prev->next = e->next;
		if (e->next != NULL)
			e->next->prev = e->prev;
		else
			ca->tail = e->prev;
		e->prev = NULL;
		e->next = ca->head;
		ca->head->prev = e;
		ca->head = e;
	}
	return e;
}

/* bl_cache_put - remember an answer for ttl_ms; at cache_size entries,
 * the least recently used one goes */
static void
bl_cache_put(struct bl_cache *ca, const char *name, const uint32_t *addrs, size_t naddrs,
    unsigned long long ttl_ms, unsigned long long now)
{
	struct bl_entry *e, **bucket;
	size_t len = strlen(name);

	if (ca->tab == NULL || ttl_ms == 0)
		return;
	if ((e = bl_cache_get(ca, name, now)) != NULL)
		bl_cache_drop(ca, e);
	while (ca->n >= ca->max && ca->tail != NULL)
		bl_cache_drop(ca, ca->tail);
	if ((e = calloc(1, sizeof(*e) + len + 1)) == NULL)
		return; /* not cached: the next client asks again */
	memcpy(e->name, name, len + 1);
	e->expires_ms = now + ttl_ms;
	e->naddrs = naddrs < BL_ADDRS_MAX ? naddrs : BL_ADDRS_MAX;
	if (e->naddrs > 0)
		memcpy(e->addrs, addrs, e->naddrs * sizeof(*addrs));
	bucket = &ca->tab[bl_hash(name) & (ca->nbuckets - 1)];
	e->hnext = *bucket;
	*bucket = e;
	e->next = ca->head;
	if (ca->head != NULL)
		ca->head->prev = e;
	ca->head = e;
	if (ca->tail == NULL)
		ca->tail = e;
	ca->n++;
}

/* ---- answers ---- */

/* bl_classify - what A records mean for zone z. Order matters: one
 * 127.255.255.x among them makes the whole answer a refusal; an address
 * outside 127.0.0.0/8 (a resolver that rewrites NXDOMAIN into an ad
 * server, a list that died and had its domain parked) is a failure, not
 * a listing; only then do the zone's codes decide. */
static void
bl_classify(const struct bl_zone *z, struct bl_query *q, const uint32_t *addrs, size_t n)
{
	char ip[INET_ADDRSTRLEN];
	struct in_addr a;
	size_t i, k;

	q->result = BL_NOT_LISTED;
	for (i = 0; i < n; i++) {
		if ((addrs[i] & 0xffffff00U) == 0x7fffff00U) {
			q->result = BL_REFUSED;
			q->code = addrs[i];
			return;
		}
	}
	for (i = 0; i < n; i++) {
		if ((addrs[i] >> 24) != 127) {
			a.s_addr = htonl(addrs[i]);
			inet_ntop(AF_INET, &a, ip, sizeof(ip));
			q->result = BL_FAILED;
			snprintf(q->why, sizeof(q->why),
			    "answer %s is outside 127.0.0.0/8 (a resolver rewriting NXDOMAIN?)",
			    ip);
			return;
		}
	}
	for (i = 0; i < n; i++) {
		for (k = 0; k < z->ncodes; k++) {
			if (addrs[i] >= z->codes[k].lo && addrs[i] <= z->codes[k].hi) {
				q->result = BL_LISTED;
				q->code = addrs[i];
				return;
			}
		}
	}
	if (n > 0)
		q->code = addrs[0]; /* not among the codes: kept for the log */
}

/* bl_code_str - a code as text, in buf */
static const char *
bl_code_str(uint32_t code, char *buf, size_t size)
{
	struct in_addr a;

	a.s_addr = htonl(code);
	if (inet_ntop(AF_INET, &a, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "?");
	return buf;
}

/* bl_error - a short word for an evdns failure */
static const char *
bl_error(int result)
{
	switch (result) {
	case DNS_ERR_TIMEOUT:
		return "timeout";
	case DNS_ERR_SERVERFAILED:
		return "SERVFAIL";
	case DNS_ERR_REFUSED:
		return "REFUSED";
	case DNS_ERR_CANCEL:
	case DNS_ERR_SHUTDOWN:
		return "cancelled";
	default:
		return evdns_err_to_string(result);
	}
}

/* ---- the job ---- */

static void bl_job_answer(int result, char type, int count, int ttl, void *addrs, void *arg);
static void bl_job_deadline(evutil_socket_t fd, short what, void *arg);

/* bl_job_new - a job for n queries of call; the plugin fills in each
 * q[i].name, .zone and .item, then calls bl_job_run */
static struct bl_job *
bl_job_new(
    struct bl_conf *c, struct pc_call *call, size_t n, void (*done)(struct bl_job *), void *arg)
{
	struct bl_job *job;
	const char *id;
	size_t i;

	if ((job = calloc(1, sizeof(*job) + n * sizeof(job->q[0]))) == NULL)
		return NULL;
	job->conf = c;
	job->call = call;
	job->dns = c->dns;
	job->done = done;
	job->arg = arg;
	job->n = n;
	for (i = 0; i < n; i++) {
		job->q[i].job = job;
		job->q[i].same_as = -1;
	}
	id = c->host->get(call, PC_SESSION_ID);
	snprintf(job->session, sizeof(job->session), "%s", id != NULL ? id : "-");
	return job;
}

/* bl_job_free_if_over - free the job once it is both finished (or
 * cancelled) and no evdns callback is still to come */
static void
bl_job_free_if_over(struct bl_job *job)
{
	if (job->call != NULL || job->refs > 0 || job->starting)
		return;
	if (job->deadline != NULL)
		event_free(job->deadline);
	free(job);
}

/* bl_job_finish - every query has a result (or the deadline passed):
 * cancel what is still in flight, copy results to the queries that
 * shared a name, and hand the job to the plugin, which resumes the call */
static void
bl_job_finish(struct bl_job *job)
{
	struct pc_call *call = job->call;
	size_t i;

	if (call == NULL)
		return; /* finished already, or cancelled */
	if (job->deadline != NULL)
		evtimer_del(job->deadline);
	for (i = 0; i < job->n; i++) {
		struct bl_query *q = &job->q[i];

		if (q->same_as >= 0) {
			/* Same name and zone: the same answer. */
			const struct bl_query *o = &job->q[q->same_as];

			q->result = o->result == BL_WAITING ? BL_FAILED : o->result;
			q->code = o->code;
			q->cached = o->cached;
			snprintf(q->why, sizeof(q->why), "%s",
			    o->result == BL_WAITING ? "no answer in time" : o->why);
			continue;
		}
		if (q->result != BL_WAITING)
			continue;
		/* The deadline passed: this one counts as failed, and its
		 * request is cancelled (its callback still comes, with
		 * DNS_ERR_CANCEL, and only drops a reference). */
		q->result = BL_FAILED;
		snprintf(q->why, sizeof(q->why), "no answer within %llu ms", job->conf->timeout_ms);
		if (q->req != NULL)
			evdns_cancel_request(job->dns, q->req);
	}
	job->done(job); /* resumes call */
	job->call = NULL;
	bl_job_free_if_over(job);
}

/* bl_job_answer - evdns calls back: an answer, a failure, or the
 * DNS_ERR_CANCEL of a request we cancelled */
static void
bl_job_answer(int result, char type, int count, int ttl, void *addrs, void *arg)
{
	struct bl_query *q = arg;
	struct bl_job *job = q->job;
	struct bl_conf *c = job->conf;
	uint32_t got[BL_ADDRS_MAX];
	unsigned long long now, ttl_ms;
	size_t n = 0, i;

	q->req = NULL;
	job->refs--;
	if (job->call == NULL || q->result != BL_WAITING) {
		/* The call is over (finished at the deadline, or cancelled):
		 * nothing to record, and the instance may be gone. */
		bl_job_free_if_over(job);
		return;
	}
	now = bl_now_ms();
	if (result == DNS_ERR_NONE && type == DNS_IPv4_A && count > 0 && addrs != NULL) {
		for (i = 0; i < (size_t)count && n < BL_ADDRS_MAX; i++)
			got[n++] = ntohl(((const struct in_addr *)addrs)[i].s_addr);
		bl_classify(&c->zones[q->zone], q, got, n);
		/* Only real answers are kept: not refusals, not nonsense. */
		if (q->result == BL_LISTED || q->result == BL_NOT_LISTED) {
			ttl_ms = ttl > 0 ? (unsigned long long)ttl * 1000 : 0;
			if (ttl_ms > c->max_ttl_ms)
				ttl_ms = c->max_ttl_ms;
			bl_cache_put(&c->cache, q->name, got, n, ttl_ms, now);
		}
	} else if (result == DNS_ERR_NOTEXIST || result == DNS_ERR_NODATA ||
	    result == DNS_ERR_NONE) {
		q->result = BL_NOT_LISTED;
		/* Negative caching (RFC 2308): the TTL evdns reports for the
		 * negative answer when it has one, at most negative_ttl;
		 * else negative_ttl. */
		ttl_ms = ttl > 0 ? (unsigned long long)ttl * 1000 : c->neg_ttl_ms;
		if (ttl_ms > c->neg_ttl_ms)
			ttl_ms = c->neg_ttl_ms;
		if (ttl_ms > c->max_ttl_ms)
			ttl_ms = c->max_ttl_ms;
		bl_cache_put(&c->cache, q->name, NULL, 0, ttl_ms, now);
	} else {
		q->result = BL_FAILED;
		snprintf(q->why, sizeof(q->why), "%s", bl_error(result));
	}
	if (--job->waiting == 0 && !job->starting)
		bl_job_finish(job);
	else
		bl_job_free_if_over(job);
}

/* bl_job_deadline - timeout passed with queries unanswered */
static void
bl_job_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	bl_job_finish(arg);
}

/* bl_job_cancel - the host gave up on the call (the client left, or
 * filter_timeout): cancel every request in flight and forget the call.
 * The job is freed when the last DNS_ERR_CANCEL callback comes in. */
static void
bl_job_cancel(void *arg)
{
	struct bl_job *job = arg;
	size_t i;

	job->conf->host->log(job->conf->self, NULL, PC_LOG_INFO,
	    "%s: lookup for session %s cancelled (the session ended, or filter_timeout passed)",
	    job->conf->plugin, job->session);
	job->call = NULL;
	job->conf = NULL;
	if (job->deadline != NULL)
		evtimer_del(job->deadline);
	for (i = 0; i < job->n; i++) {
		if (job->q[i].req != NULL)
			evdns_cancel_request(job->dns, job->q[i].req);
	}
	bl_job_free_if_over(job);
}

/*
 * bl_job_run - answer from the cache what it can, send the rest, all at
 * once. The caller has already called host->pending(call, bl_job_cancel,
 * job). Returns with the job finished (done called, inside this function)
 * when everything was cached, or with queries in flight and the deadline
 * armed. Either way the caller returns PC_HOOK_PENDING and must not touch
 * the job again.
 */
static void
bl_job_run(struct bl_job *job)
{
	struct bl_conf *c = job->conf;
	unsigned long long now = bl_now_ms();
	struct evdns_request *req;
	struct bl_entry *e;
	struct timeval tv;
	size_t i, k;

	job->starting = 1; /* callbacks record, but do not finish, meanwhile */
	job->waiting = job->n;
	for (i = 0; i < job->n; i++) {
		struct bl_query *q = &job->q[i];

		for (k = 0; k < i; k++) {
			if (job->q[k].same_as < 0 && job->q[k].zone == q->zone &&
			    strcmp(job->q[k].name, q->name) == 0) {
				q->same_as = (int)k; /* asked once, read by both */
				break;
			}
		}
		if (q->same_as >= 0) {
			job->waiting--;
			continue;
		}
		if ((e = bl_cache_get(&c->cache, q->name, now)) != NULL) {
			bl_classify(&c->zones[q->zone], q, e->addrs, e->naddrs);
			q->cached = 1;
			job->waiting--;
			continue;
		}
		job->refs++;
		req = evdns_base_resolve_ipv4(
		    job->dns, q->name, DNS_QUERY_NO_SEARCH, bl_job_answer, q);
		if (q->result != BL_WAITING)
			continue; /* it called back at once: req is spent */
		q->req = req;
		if (req == NULL) {
			job->refs--;
			q->result = BL_FAILED;
			snprintf(q->why, sizeof(q->why), "the resolver would not send the query");
			job->waiting--;
		}
	}
	job->starting = 0;
	if (job->waiting == 0) {
		bl_job_finish(job);
		return;
	}
	if ((job->deadline = evtimer_new(c->host->base, bl_job_deadline, job)) == NULL) {
		bl_job_finish(job); /* every query still out counts as failed */
		return;
	}
	tv.tv_sec = (time_t)(c->timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(c->timeout_ms % 1000) * 1000;
	evtimer_add(job->deadline, &tv);
}

/* bl_report - log a job's findings that are not listings: failures and
 * refusals, each kind at most once a minute, and not-counted codes */
static void
bl_report(struct bl_conf *c, struct pc_call *call, const struct bl_job *job, const char *what)
{
	char code[INET_ADDRSTRLEN];
	size_t i;

	for (i = 0; i < job->n; i++) {
		const struct bl_query *q = &job->q[i];
		const struct bl_zone *z = &c->zones[q->zone];

		if (q->result == BL_FAILED)
			bl_warn(c, &c->fail_warn, call, PC_LOG_WARN,
			    "%s: lookup of %s failed (%s): %s passes as not listed in %s",
			    c->plugin, q->name, q->why, what, z->name);
		else if (q->result == BL_REFUSED)
			bl_warn(c, &c->refused_warn, call, PC_LOG_ERR,
			    "%s: %s answered %s for %s: the list refuses our queries (RFC 5782 "
			    "§2.1: a public or shared resolver? over its quota?); not a listing, "
			    "%s passes",
			    c->plugin, z->name, bl_code_str(q->code, code, sizeof(code)), q->name,
			    what);
		else if (q->result == BL_NOT_LISTED && q->code != 0)
			c->host->log(c->self, call, PC_LOG_INFO,
			    "%s: %s answered %s for %s: not among its codes, not a listing",
			    c->plugin, z->name, bl_code_str(q->code, code, sizeof(code)), q->name);
	}
}

#endif
