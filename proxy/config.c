/*
 * config.c - the configuration file into struct config (see config.h).
 *
 * Exports config_defaults, config_parse, config_load, config_set,
 * config_check, config_free, config_trusted, config_dump (portcullis -T),
 * config_suggest ("did you mean") and the value parsers. Pure: no I/O
 * beyond reading the file and config_dump's writing to the stream given. Every top-level key is one row of the
 * table below, with the kind of value it takes; sizes, times, booleans and
 * CIDR lists go through options.c, the parsers plugins get too. Sections
 * are kept as key lists for the chain.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"

enum key_kind {
	K_SIZE,
	K_COUNT,
	K_TIME,
	K_ADDR,
	K_LISTEN,
	K_STRING,
	K_WORD, /* one of the key's words: its index into an int field */
	K_ON_ERROR,
	K_DNS_SERVER,
	K_BOOL,
	K_NETS,
	K_SCORE,
	K_WORKERS, /* "auto" (stored as 0) or a count */
};

struct key_def {
	const char *name;
	enum key_kind kind;
	size_t off; /* offset of the field in struct config */
	size_t size; /* K_STRING: the buffer size; K_NETS: the count's offset;
	              * K_ADDR, K_SCORE: the offset of the flag "given";
	              * K_WORD: its word list (enum word_list) */
	uint64_t min; /* for numbers: the smallest value that makes sense */
	uint64_t max; /* for numbers: the largest that does; 0: no bound */
};

#define F(field) offsetof(struct config, field)

/* The words of the K_WORD keys, in the order of their fields' values. */
enum word_list { W_BARE_LF, W_LOG, W_LOG_LEVEL, W_LOG_FORMAT, W_TLS_PROTO, W_BACKEND_TLS };
static const char *const *const words[] = {
    [W_BARE_LF] = (const char *const[]){"reject", "normalize", NULL},
    [W_LOG] = (const char *const[]){"stderr", "syslog", NULL},
    [W_LOG_LEVEL] = (const char *const[]){"info", "debug", NULL},
    [W_LOG_FORMAT] = (const char *const[]){"text", "json", NULL},
    [W_TLS_PROTO] = (const char *const[]){"TLSv1.2", "TLSv1.3", NULL},
    [W_BACKEND_TLS] = (const char *const[]){"no", "opportunistic", "required", NULL},
};

/* A K_WORD field is read and written as an int: the enums it holds are. */
_Static_assert(sizeof(enum config_bare_lf) == sizeof(int) &&
        sizeof(enum config_log) == sizeof(int) && sizeof(enum config_backend_tls) == sizeof(int),
    "K_WORD fields are ints");

static const struct key_def keys[] = {
    {"listen", K_LISTEN, 0, 0, 0, 0},
    {"backend", K_ADDR, F(backend), F(have_backend), 0, 0},
    {"metrics_listen", K_ADDR, F(metrics_listen), F(have_metrics_listen), 0, 0},
    {"hostname", K_STRING, F(hostname), CONFIG_HOST_MAX, 0, 0},
    {"max_message_size", K_SIZE, F(max_message_size), 0, 1, 0},
    {"max_recipients", K_COUNT, F(max_recipients), 0, 1, 0},
    {"max_connections", K_COUNT, F(max_connections), 0, 1, 0},
    {"max_connections_per_ip", K_COUNT, F(max_connections_per_ip), 0, 1, 0},
    {"max_line_length", K_SIZE, F(max_line_length), 0, 510, 0},
    {"max_data_line_length", K_SIZE, F(max_data_line_length), 0, 998, 0},
    {"max_errors", K_COUNT, F(max_errors), 0, 1, 0},
    {"max_header_size", K_SIZE, F(max_header_size), 0, 1024, 0},
    {"client_ipv6_prefix", K_COUNT, F(client_ipv6_prefix), 0, 1, 0},
    /* At least an AUTH line (RFC 4954 §4: 12288 octets) with its CR LF,
     * and config_check wants a command line to fit; at most 16M a
     * session, so max_connections sessions cannot take the machine. */
    {"max_client_buffer", K_SIZE, F(max_client_buffer), 0, 16 * 1024, 16 * 1024 * 1024},
    {"timeout", K_TIME, F(timeout_ms), 0, 1, 0},
    {"data_timeout", K_TIME, F(data_timeout_ms), 0, 1, 0},
    {"backend_connect_timeout", K_TIME, F(backend_connect_timeout_ms), 0, 1, 0},
    {"backend_timeout", K_TIME, F(backend_timeout_ms), 0, 1, 0},
    {"backend_data_timeout", K_TIME, F(backend_data_timeout_ms), 0, 1, 0},
    {"shutdown_timeout", K_TIME, F(shutdown_timeout_ms), 0, 0, 0},
    {"bare_lf", K_WORD, F(bare_lf), W_BARE_LF, 0, 0},
    {"spool_memory", K_SIZE, F(spool_memory), 0, 0, 0},
    {"spool_dir", K_STRING, F(spool_dir), sizeof(((struct config *)0)->spool_dir), 0, 0},
    {"log", K_WORD, F(log), W_LOG, 0, 0},
    {"log_level", K_WORD, F(log_debug), W_LOG_LEVEL, 0, 0},
    {"log_format", K_WORD, F(log_json), W_LOG_FORMAT, 0, 0},
    {"plugin_dir", K_STRING, F(plugin_dir), sizeof(((struct config *)0)->plugin_dir), 0, 0},
    {"on_error", K_ON_ERROR, F(on_error), 0, 0, 0},
    {"dns_server", K_DNS_SERVER, F(dns_server), 0, 0, 0},
    {"dns_timeout", K_TIME, F(dns_timeout_ms), 0, 100, 0},
    /* At most an hour: a resolver that is back must be noticed. */
    {"dns_retry_interval", K_TIME, F(dns_retry_ms), 0, 0, 3600 * 1000},
    {"filter_timeout", K_TIME, F(filter_timeout_ms), 0, 1, 0},
    {"tls_cert", K_STRING, F(tls_cert), sizeof(((struct config *)0)->tls_cert), 0, 0},
    {"tls_key", K_STRING, F(tls_key), sizeof(((struct config *)0)->tls_key), 0, 0},
    {"tls_chain", K_STRING, F(tls_chain), sizeof(((struct config *)0)->tls_chain), 0, 0},
    {"tls_ciphers", K_STRING, F(tls_ciphers), sizeof(((struct config *)0)->tls_ciphers), 0, 0},
    {"tls_min_protocol", K_WORD, F(tls_min_v13), W_TLS_PROTO, 0, 0},
    {"tls_required", K_BOOL, F(tls_required), 0, 0, 0},
    {"tls_session_cache", K_BOOL, F(tls_session_cache), 0, 0, 0},
    /* At least a second; at most 7 days, the longest a TLS 1.3 ticket may
     * live (RFC 8446 §4.6.1). */
    {"tls_session_timeout", K_TIME, F(tls_session_timeout_ms), 0, 1000, 7 * 24 * 3600 * 1000ULL},
    {"auth_plaintext", K_BOOL, F(auth_plaintext), 0, 0, 0},
    {"proxy_trusted", K_NETS, F(proxy_trusted), F(nproxy_trusted), 0, 0},
    {"trusted_networks", K_NETS, F(trusted_networks), F(ntrusted_networks), 0, 0},
    {"backend_tls", K_WORD, F(backend_tls), W_BACKEND_TLS, 0, 0},
    {"backend_tls_ca", K_STRING, F(backend_tls_ca), sizeof(((struct config *)0)->backend_tls_ca), 0,
        0},
    {"backend_tls_verify", K_BOOL, F(backend_tls_verify), 0, 0, 0},
    {"backend_tls_name", K_STRING, F(backend_tls_name), CONFIG_HOST_MAX, 0, 0},
    {"backend_xclient", K_BOOL, F(backend_xclient), 0, 0, 0},
    {"backend_chunking", K_BOOL, F(backend_chunking), 0, 0, 0},
    {"client_rdns", K_BOOL, F(client_rdns), 0, 0, 0},
    {"store", K_STRING, F(store), sizeof(((struct config *)0)->store), 0, 0},
    {"store_timeout", K_TIME, F(store_timeout_ms), 0, 1, 0},
    /* An LMDB map under 64k is a few pages: nothing fits. */
    {"store_max_size", K_SIZE, F(store_max_size), 0, 64 * 1024, 0},
    {"store_purge_interval", K_TIME, F(store_purge_ms), 0, 100, 0},
    /* Score thresholds at the end of DATA (issue 15): a number each, set or
     * not (the have_ flags). */
    {"reject_score", K_SCORE, F(reject_score), F(have_reject_score), 0, 0},
    {"tempfail_score", K_SCORE, F(tempfail_score), F(have_tempfail_score), 0, 0},
    {"header_score", K_SCORE, F(header_score), F(have_header_score), 0, 0},
    /* Processes (issue 18): auto is one per core, at most CONFIG_WORKERS_MAX. */
    {"workers", K_WORKERS, F(workers), 0, 1, CONFIG_WORKERS_MAX},
    {"user", K_STRING, F(user), sizeof(((struct config *)0)->user), 0, 0},
    {"group", K_STRING, F(group), sizeof(((struct config *)0)->group), 0, 0},
    {"chroot", K_STRING, F(chroot), sizeof(((struct config *)0)->chroot), 0, 0},
    {"seccomp", K_BOOL, F(seccomp), 0, 0, 0},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static int errf(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static char *trim(char *s);
static int parse_number(const char *s, uint64_t *out, const char **rest);
static int set_key(
    struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen);
static int set_number(
    struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen);
static int set_nets(
    struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen);
static int set_score(
    struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen);
static int parse_listen(const char *value, struct config_addr *out);
static int section_add_key(
    struct config_section *sec, const char *key, const char *value, int line);
static int unknown_key(char *err, size_t errlen, const char *file, int line, const char *key);
static size_t edit_distance(const char *a, const char *b, size_t cap);
static int affix(const char *a, const char *b);
static void dump_number(uint64_t v, enum key_kind kind, char *buf, size_t len);
static void dump_nets(const struct opt_net *nets, size_t n, char *buf, size_t len);
static void dump_key(const struct config *cfg, const struct key_def *k, char *buf, size_t len);

/* config_defaults - the values etc/portcullis.conf documents */
void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	if (gethostname(cfg->hostname, sizeof(cfg->hostname) - 1) != 0 || cfg->hostname[0] == '\0')
		strcpy(cfg->hostname, "localhost");
	strcpy(cfg->listen[0].host, "0.0.0.0");
	strcpy(cfg->listen[0].port, "25");
	cfg->nlisten = 1;
	cfg->listen_is_default = 1;
	cfg->max_message_size = 50ULL * 1024 * 1024;
	cfg->max_recipients = 1000;
	cfg->max_connections = 1000;
	cfg->max_connections_per_ip = 50;
	cfg->max_line_length = 2048;
	cfg->max_header_size = 256 * 1024;
	cfg->client_ipv6_prefix = 64;
	cfg->max_client_buffer = 256 * 1024;
	cfg->max_data_line_length = 65536;
	cfg->max_errors = 20;
	cfg->timeout_ms = 300 * 1000;
	cfg->data_timeout_ms = 600 * 1000;
	cfg->backend_connect_timeout_ms = 30 * 1000;
	cfg->backend_timeout_ms = 120 * 1000;
	cfg->backend_data_timeout_ms = 600 * 1000;
	cfg->shutdown_timeout_ms = 30 * 1000;
	cfg->bare_lf = CONFIG_BARE_LF_REJECT;
	cfg->spool_memory = 1024 * 1024;
	strcpy(cfg->spool_dir, "/tmp");
	cfg->log = CONFIG_LOG_STDERR;
	snprintf(cfg->plugin_dir, sizeof(cfg->plugin_dir), "%s", PLUGINDIR);
	snprintf(cfg->store, sizeof(cfg->store), "lmdb:%s/store", STOREDIR);
	cfg->store_timeout_ms = 1000;
	cfg->store_max_size = 256ULL * 1024 * 1024;
	cfg->store_purge_ms = 60 * 1000;
	cfg->on_error = CONFIG_ON_ERROR_TEMPFAIL;
	cfg->filter_timeout_ms = 30 * 1000;
	cfg->dns_timeout_ms = 5 * 1000;
	cfg->dns_retry_ms = 10 * 1000;
	strcpy(cfg->tls_ciphers, CONFIG_TLS_CIPHERS);
	cfg->tls_session_cache = 1;
	cfg->tls_session_timeout_ms = 3600 * 1000; /* Postfix's smtpd_tls_session_cache_timeout */
	cfg->backend_tls_verify = 1;
	cfg->workers = 1;
	cfg->seccomp = 1;
	cfg->backend_xclient = 1;
	cfg->backend_chunking = 1;
	cfg->client_rdns = 1;
}

/* errf - format "file:line: message" (or "file: message" for line 0) */
static int
errf(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (line > 0)
		n = snprintf(err, errlen, "%s:%d: ", file ? file : "-", line);
	else
		n = snprintf(err, errlen, "%s: ", file ? file : "command line");
	if (n < 0 || (size_t)n >= errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* trim - strip leading and trailing white space in place */
static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* parse_number - a decimal number without sign; *rest points after it */
static int
parse_number(const char *s, uint64_t *out, const char **rest)
{
	uint64_t v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	*rest = p;
	return 0;
}

/* config_parse_size - 10, 10k, 10M, 10G (powers of 1024) */
int
config_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;

	if (opt_size(s, &v, NULL, 0) != 0)
		return -1;
	*out = v;
	return 0;
}

/* config_parse_time - 250ms, 30s, 5m, 1h; a bare number is seconds */
int
config_parse_time(const char *s, uint64_t *ms)
{
	unsigned long long v;

	if (opt_time(s, &v, NULL, 0) != 0)
		return -1;
	*ms = v;
	return 0;
}

/* config_parse_addr - host:port or [v6]:port */
int
config_parse_addr(const char *s, struct config_addr *out)
{
	const char *colon, *host = s;
	size_t hlen;
	uint64_t port;
	const char *rest;

	if (*s == '[') {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':')
			return -1;
		host = s + 1;
		hlen = (size_t)(rb - host);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		hlen = (size_t)(colon - s);
		if (memchr(s, ':', hlen) != NULL) /* bare IPv6 needs brackets */
			return -1;
	}
	if (hlen == 0 || hlen >= sizeof(out->host))
		return -1;
	for (size_t i = 0; i < hlen; i++) {
		unsigned char c = (unsigned char)host[i];
		if (!(isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_' || c == '*'))
			return -1;
	}
	if (parse_number(colon + 1, &port, &rest) != 0 || *rest != '\0' || port == 0 ||
	    port > 65535)
		return -1;
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	snprintf(out->port, sizeof(out->port), "%u", (unsigned)port);
	return 0;
}

/* config_parse_bool - yes/no and friends */
int
config_parse_bool(const char *s, int *out)
{
	return opt_bool(s, out, NULL, 0);
}

/* parse_listen - "host:port [tls] [proxy_protocol]" */
static int
parse_listen(const char *value, struct config_addr *out)
{
	char copy[CONFIG_HOST_MAX + 64], *save = NULL, *tok;

	if (strlen(value) >= sizeof(copy))
		return -1;
	strcpy(copy, value);
	memset(out, 0, sizeof(*out));
	if ((tok = strtok_r(copy, " \t", &save)) == NULL || config_parse_addr(tok, out) != 0)
		return -1;
	while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
		if (strcmp(tok, "tls") == 0)
			out->tls = 1;
		else if (strcmp(tok, "proxy_protocol") == 0)
			out->proxy = 1;
		else
			return -1;
	}
	return 0;
}

/* config_net_match - is the address in one of the networks? */
int
config_net_match(const struct opt_net *nets, size_t n, const struct sockaddr *sa)
{
	return opt_nets_match(nets, n, sa);
}

/* config_trusted - is the client in trusted_networks? */
int
config_trusted(const struct config *cfg, const char *ip)
{
	return opt_nets_match_ip(cfg->trusted_networks, cfg->ntrusted_networks, ip) == 1;
}

/* config_key_line - where a key was set */
int
config_key_line(const struct config *cfg, const char *key)
{
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].name, key) == 0)
			return cfg->key_line[i];
	}
	return 0;
}

/* config_parse_on_error - tempfail, accept or reject */
int
config_parse_on_error(const char *s, enum config_on_error *out)
{
	if (strcmp(s, "tempfail") == 0)
		*out = CONFIG_ON_ERROR_TEMPFAIL;
	else if (strcmp(s, "accept") == 0)
		*out = CONFIG_ON_ERROR_ACCEPT;
	else if (strcmp(s, "reject") == 0)
		*out = CONFIG_ON_ERROR_REJECT;
	else
		return -1;
	return 0;
}

static const char *const kind_help[] = {
    [K_SIZE] = OPT_HELP_SIZE,
    [K_COUNT] = "a positive whole number",
    [K_TIME] = OPT_HELP_TIME,
    [K_ADDR] = "host:port (IPv6 as [addr]:port)",
    [K_LISTEN] = "host:port (IPv6 as [addr]:port), then options: tls, proxy_protocol",
    [K_STRING] = "a shorter string",
    [K_ON_ERROR] = "tempfail, accept or reject",
    [K_BOOL] = OPT_HELP_BOOL,
    [K_SCORE] = "a score (e.g. 5, 12.5, -1)",
    [K_NETS] = OPT_HELP_NETS,
    [K_DNS_SERVER] = "a numeric address, with a port or without (e.g. 127.0.0.1:5353)",
    [K_WORKERS] = "auto or a whole number",
};

/* set_score - a finite number, at most 1e6 either way; sets its have_ flag
 * (the key's size field holds the flag's offset, as K_NETS's holds its
 * count's) */
static int
set_score(struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen)
{
	char *base = (char *)cfg, *end;
	double v;

	errno = 0;
	v = strtod(value, &end);
	if (value[0] == '\0' || isspace((unsigned char)value[0]) || *end != '\0' || errno != 0 ||
	    !isfinite(v) || v > 1e6 || v < -1e6) {
		snprintf(
		    why, whylen, "bad value \"%s\": expected a score (e.g. 5, 12.5, -1)", value);
		return -1;
	}
	*(double *)(base + k->off) = v;
	*(int *)(base + k->size) = 1;
	return 0;
}

/* set_number - a K_SIZE, K_COUNT or K_TIME key, within its bounds; the
 * message names the bounds that are more than "not zero" */
static int
set_number(struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen)
{
	unsigned long long v;
	int r =
	    k->kind == K_TIME ? opt_time(value, &v, why, whylen) : opt_size(value, &v, why, whylen);

	if (r == 0 &&
	    (v < k->min || (k->max != 0 && v > k->max) ||
	        (k->kind != K_SIZE && k->kind != K_TIME && v > UINT32_MAX)))
		r = -1;
	if (r == 0) {
		*(uint64_t *)((char *)cfg + k->off) = v;
		return 0;
	}
	if (k->max != 0)
		snprintf(why, whylen, "bad value \"%s\": expected %s, from %llu to %llu", value,
		    kind_help[k->kind], (unsigned long long)k->min, (unsigned long long)k->max);
	else if (k->min > 1 && k->kind != K_TIME)
		snprintf(why, whylen, "bad value \"%s\": expected %s, at least %llu", value,
		    kind_help[k->kind], (unsigned long long)k->min);
	else
		snprintf(why, whylen, "bad value \"%s\": expected %s", value, kind_help[k->kind]);
	return -1;
}

/* set_nets - a CIDR list: the whole list, each time (the last one wins) */
static int
set_nets(struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen)
{
	struct opt_net nets[CONFIG_NETS_MAX];
	size_t n;

	if (opt_nets(value, nets, CONFIG_NETS_MAX, &n, why, whylen) != 0)
		return -1;
	memcpy((char *)cfg + k->off, nets, n * sizeof(nets[0]));
	*(size_t *)((char *)cfg + k->size) = n;
	return 0;
}

/* set_word - a K_WORD key: the index of its word, or -1 with why ("expected
 * a, b or c") */
static int
set_word(char *base, const struct key_def *k, const char *value, char *why, size_t whylen)
{
	const char *const *w = words[k->size];
	size_t n, i, used;

	for (n = 0; w[n] != NULL; n++)
		if (strcmp(value, w[n]) == 0) {
			*(int *)(base + k->off) = (int)n;
			return 0;
		}
	used = (size_t)snprintf(why, whylen, "bad value \"%s\": expected ", value);
	for (i = 0; i < n && used < whylen; i++)
		used += (size_t)snprintf(why + used, whylen - used, "%s%s",
		    i == 0           ? ""
		        : i + 1 == n ? " or "
		                     : ", ",
		    w[i]);
	return -1;
}

/* set_key - store one value: 0, -1 with why, or -2 (too many listen) */
static int
set_key(struct config *cfg, const struct key_def *k, const char *value, char *why, size_t whylen)
{
	char *base = (char *)cfg;

	switch (k->kind) {
	case K_SIZE:
	case K_COUNT:
	case K_TIME:
		return set_number(cfg, k, value, why, whylen);
	case K_WORKERS:
		if (strcmp(value, "auto") == 0) {
			*(uint64_t *)(base + k->off) = 0;
			return 0;
		}
		return set_number(cfg, k, value, why, whylen);
	case K_BOOL:
		return opt_bool(value, (int *)(base + k->off), why, whylen);
	case K_NETS:
		return set_nets(cfg, k, value, why, whylen);
	case K_SCORE:
		return set_score(cfg, k, value, why, whylen);
	default:
		break;
	}
	if (k->kind == K_WORD)
		return set_word(base, k, value, why, whylen);
	snprintf(why, whylen, "bad value \"%s\": expected %s", value, kind_help[k->kind]);
	switch (k->kind) {
	case K_ADDR:
		if (config_parse_addr(value, (struct config_addr *)(base + k->off)) != 0)
			return -1;
		*(int *)(base + k->size) = 1;
		return 0;
	case K_LISTEN:
		/* The first listen given replaces the built-in default. */
		if (cfg->listen_is_default) {
			cfg->nlisten = 0;
			cfg->listen_is_default = 0;
		}
		if (cfg->nlisten >= CONFIG_LISTEN_MAX)
			return -2;
		if (parse_listen(value, &cfg->listen[cfg->nlisten]) != 0)
			return -1;
		cfg->nlisten++;
		return 0;
	case K_STRING:
		if (strlen(value) >= k->size)
			return -1;
		strcpy(base + k->off, value);
		return 0;
	case K_ON_ERROR:
		return config_parse_on_error(value, &cfg->on_error);
	case K_DNS_SERVER: {
		/* A numeric address, with a port or without (53). */
		struct config_addr a;
		char with_port[CONFIG_HOST_MAX + 16];

		if (strlen(value) > 64) /* no numeric address is longer */
			return -1;
		unsigned char tmp[16];
		if (config_parse_addr(value, &a) != 0) {
			snprintf(with_port, sizeof(with_port), "%s:53", value);
			if (strchr(value, ':') != NULL && value[0] != '[')
				snprintf(with_port, sizeof(with_port), "[%s]:53", value);
			if (config_parse_addr(with_port, &a) != 0)
				return -1;
		}
		if (inet_pton(AF_INET, a.host, tmp) == 1)
			snprintf(cfg->dns_server, sizeof(cfg->dns_server), "%s:%s", a.host, a.port);
		else if (inet_pton(AF_INET6, a.host, tmp) == 1)
			snprintf(
			    cfg->dns_server, sizeof(cfg->dns_server), "[%s]:%s", a.host, a.port);
		else
			return -1;
		return 0;
	}
	default:
		break;
	}
	return -1;
}

/* config_set - set one top-level key */
int
config_set(
    struct config *cfg, const char *key, const char *value, int line, char *err, size_t errlen)
{
	const char *file = line > 0 ? cfg->file : NULL;
	char why[CONFIG_ERR_MAX];

	for (size_t i = 0; i < NKEYS; i++) {
		const struct key_def *k = &keys[i];
		int r;

		if (strcmp(k->name, key) != 0)
			continue;
		if (*value == '\0')
			return errf(err, errlen, file, line, "%s: empty value", key);
		r = set_key(cfg, k, value, why, sizeof(why));
		if (i < sizeof(cfg->key_line) / sizeof(cfg->key_line[0]))
			cfg->key_line[i] = line;
		if (r == -2)
			return errf(err, errlen, file, line, "%s: more than %d entries", key,
			    CONFIG_LISTEN_MAX);
		if (r == 0 && k->off == F(client_ipv6_prefix) && cfg->client_ipv6_prefix > 128)
			return errf(err, errlen, file, line,
			    "%s: bad value \"%s\": expected a prefix length from 1 to 128", key,
			    value);
		if (r != 0)
			return errf(err, errlen, file, line, "%s: %s", key, why);
		return 0;
	}
	return unknown_key(err, errlen, file, line, key);
}

/* unknown_key - "unknown key", with the known key it is likely a typo of */
static int
unknown_key(char *err, size_t errlen, const char *file, int line, const char *key)
{
	const char *names[NKEYS], *near;

	for (size_t i = 0; i < NKEYS; i++)
		names[i] = keys[i].name;
	if ((near = config_suggest(key, names, NKEYS)) != NULL)
		return errf(
		    err, errlen, file, line, "unknown key \"%s\": did you mean %s?", key, near);
	return errf(err, errlen, file, line, "unknown key \"%s\"", key);
}

/* edit_distance - Levenshtein, letter case ignored; stops counting past
 * cap (keys are short: this is for messages, not for a hot path) */
static size_t
edit_distance(const char *a, const char *b, size_t cap)
{
	size_t la = strlen(a), lb = strlen(b), row[128], diag, up;

	if (la >= sizeof(row) / sizeof(row[0]) || lb >= sizeof(row) / sizeof(row[0]))
		return cap + 1;
	if ((la > lb ? la - lb : lb - la) > cap)
		return cap + 1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			int same =
			    tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]);
			size_t best = diag + (same ? 0 : 1);

			up = row[j];
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}

/* affix - is the shorter of a and b (at least 4 characters) a prefix or a
 * suffix of the longer? ("recipients", "max_recipients_per_message") */
static int
affix(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	const char *s = la <= lb ? a : b, *l = la <= lb ? b : a;
	size_t ls = la <= lb ? la : lb, ll = la <= lb ? lb : la;

	if (ls < 4 || ls == ll)
		return 0;
	return strncasecmp(l, s, ls) == 0 || strcasecmp(l + ll - ls, s) == 0;
}

/* config_suggest - see config.h */
const char *
config_suggest(const char *word, const char *const *known, size_t n)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX;

	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(word, known[i], 2);

		if (d > 2 && !affix(word, known[i]))
			continue;
		/* an affix match ranks after every typo match, the longer
		 * shared part first ("store_purge": store_purge_interval, not
		 * store) */
		if (d > 2) {
			size_t shared =
			    strlen(word) < strlen(known[i]) ? strlen(word) : strlen(known[i]);
			d = 3 + (shared < 256 ? 256 - shared : 0);
		}
		if (d < best_d) {
			best_d = d;
			best = known[i];
		}
	}
	return best;
}

/* section_add_key - remember a key of a chain section, in order */
static int
section_add_key(struct config_section *sec, const char *key, const char *value, int line)
{
	struct config_kv *kv = calloc(1, sizeof(*kv)), **tail;

	if (kv == NULL || (kv->key = strdup(key)) == NULL || (kv->value = strdup(value)) == NULL) {
		if (kv != NULL) {
			free(kv->key);
			free(kv);
		}
		return -1;
	}
	kv->line = line;
	for (tail = &sec->keys; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = kv;
	return 0;
}

/* config_parse - parse a whole file's text */
int
config_parse(
    struct config *cfg, const char *file, const char *text, size_t len, char *err, size_t errlen)
{
	const char *p = text, *end = text + len;
	struct config_section *sec = NULL, **sec_tail = &cfg->sections;
	char seen[NKEYS] = {0};
	char buf[4096];
	int line = 0;

	free(cfg->file);
	if ((cfg->file = strdup(file)) == NULL)
		return errf(err, errlen, file, 0, "out of memory");
	while (sec_tail != NULL && *sec_tail != NULL)
		sec_tail = &(*sec_tail)->next;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char *s, *eq, *key, *value, *hash;

		line++;
		if (n >= sizeof(buf))
			return errf(err, errlen, file, line, "line too long");
		if (memchr(p, '\0', n) != NULL)
			return errf(err, errlen, file, line, "NUL character");
		memcpy(buf, p, n);
		buf[n] = '\0';
		p = nl ? nl + 1 : end;

		/* A comment starts at '#' at the start or after white space. */
		for (hash = buf; (hash = strchr(hash, '#')) != NULL; hash++) {
			if (hash == buf || hash[-1] == ' ' || hash[-1] == '\t') {
				*hash = '\0';
				break;
			}
		}
		s = trim(buf);
		if (*s == '\0')
			continue;

		if (*s == '[') {
			char *close = strchr(s, ']'), *type, *name;
			if (close == NULL || *trim(close + 1) != '\0')
				return errf(err, errlen, file, line,
				    "bad section header: expected [type name]");
			*close = '\0';
			type = trim(s + 1);
			name = type + strcspn(type, " \t");
			if (*name != '\0')
				*name++ = '\0';
			name = trim(name);
			if (*type == '\0' || *name == '\0' || strpbrk(name, " \t") != NULL)
				return errf(err, errlen, file, line,
				    "bad section header: expected [type name]");
			if ((sec = calloc(1, sizeof(*sec))) == NULL ||
			    (sec->type = strdup(type)) == NULL ||
			    (sec->name = strdup(name)) == NULL) {
				if (sec != NULL)
					free(sec->type);
				free(sec);
				return errf(err, errlen, file, line, "out of memory");
			}
			sec->line = line;
			*sec_tail = sec;
			sec_tail = &sec->next;
			continue;
		}

		if ((eq = strchr(s, '=')) == NULL)
			return errf(err, errlen, file, line, "expected key = value");
		*eq = '\0';
		key = trim(s);
		value = trim(eq + 1);
		if (*key == '\0')
			return errf(err, errlen, file, line, "missing key before '='");
		if (*value == '\0')
			return errf(err, errlen, file, line, "%s: empty value", key);

		if (sec != NULL) {
			if (section_add_key(sec, key, value, line) != 0)
				return errf(err, errlen, file, line, "out of memory");
			continue;
		}
		for (size_t i = 0; i < NKEYS; i++) {
			if (strcmp(keys[i].name, key) != 0)
				continue;
			if (seen[i] && keys[i].kind != K_LISTEN)
				return errf(err, errlen, file, line, "%s: given twice", key);
			seen[i] = 1;
			break;
		}
		if (config_set(cfg, key, value, line, err, errlen) != 0)
			return -1;
	}
	return 0;
}

/* config_load - read a file and parse it */
int
config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
	FILE *fp;
	char *text = NULL;
	size_t len = 0, cap = 0, n;
	int r;

	if ((fp = fopen(path, "r")) == NULL)
		return errf(err, errlen, path, 0, "cannot open: %s", strerror(errno));
	for (;;) {
		if (cap - len < 4096) {
			char *t;
			cap = cap ? cap * 2 : 8192;
			if (cap > 16 * 1024 * 1024 || (t = realloc(text, cap)) == NULL) {
				free(text);
				fclose(fp);
				return errf(err, errlen, path, 0, "file too large");
			}
			text = t;
		}
		n = fread(text + len, 1, cap - len, fp);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(fp)) {
		free(text);
		fclose(fp);
		return errf(err, errlen, path, 0, "read error");
	}
	fclose(fp);
	r = config_parse(cfg, path, text ? text : "", len, err, errlen);
	free(text);
	return r;
}

/* config_check - cross-key rules */
int
config_check(struct config *cfg, char *err, size_t errlen)
{
	const char *file = cfg->file ? cfg->file : "configuration";

	if (!cfg->have_backend)
		return errf(err, errlen, file, 0, "no backend = host:port given");
	if (cfg->nlisten == 0)
		return errf(err, errlen, file, 0, "no listen = host:port given");
	for (size_t i = 0; i < cfg->nlisten; i++) {
		if (cfg->listen[i].tls && cfg->tls_cert[0] == '\0')
			return errf(err, errlen, file, config_key_line(cfg, "listen"),
			    "listen %s:%s tls: no tls_cert = FILE given", cfg->listen[i].host,
			    cfg->listen[i].port);
		if (cfg->listen[i].proxy && cfg->nproxy_trusted == 0)
			return errf(err, errlen, file, config_key_line(cfg, "listen"),
			    "listen %s:%s proxy_protocol: no proxy_trusted = NETWORKS given",
			    cfg->listen[i].host, cfg->listen[i].port);
	}
	if ((cfg->tls_cert[0] != '\0') != (cfg->tls_key[0] != '\0'))
		return errf(err, errlen, file,
		    config_key_line(cfg, cfg->tls_cert[0] ? "tls_cert" : "tls_key"),
		    "tls_cert and tls_key go together");
	/* A line the buffer cannot hold would stall the session until its
	 * timeout instead of getting its "500 5.5.2". */
	if (cfg->max_client_buffer <= cfg->max_line_length + 2)
		return errf(err, errlen, file,
		    config_key_line(cfg,
		        config_key_line(cfg, "max_client_buffer") ? "max_client_buffer"
		                                                  : "max_line_length"),
		    "max_client_buffer (%llu) must be larger than max_line_length (%llu) + 2: a "
		    "command line and its CR LF must fit",
		    (unsigned long long)cfg->max_client_buffer,
		    (unsigned long long)cfg->max_line_length);
	if (cfg->max_connections_per_ip > cfg->max_connections)
		cfg->max_connections_per_ip = cfg->max_connections;
	/* Root in a jail can leave it: a chroot goes with a user to drop to.
	 * And the single process reads its configuration again at SIGHUP,
	 * which a jail would hide: only workers are jailed. */
	if (cfg->chroot[0] != '\0' && cfg->user[0] == '\0')
		return errf(err, errlen, file, config_key_line(cfg, "chroot"),
		    "chroot needs user = NAME: root can leave a chroot");
	if (cfg->chroot[0] != '\0' && cfg->chroot[0] != '/')
		return errf(err, errlen, file, config_key_line(cfg, "chroot"),
		    "chroot %s: expected an absolute path", cfg->chroot);
	if (cfg->chroot[0] != '\0' && config_workers(cfg) == 1)
		return errf(err, errlen, file, config_key_line(cfg, "chroot"),
		    "chroot needs workers (workers = auto or 2 or more): the single process "
		    "reads its files again at SIGHUP, outside any jail");
	return 0;
}

/* config_workers - see config.h */
unsigned
config_workers(const struct config *cfg)
{
	long n;

	if (cfg->workers != 0)
		return (unsigned)cfg->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	return n > CONFIG_WORKERS_MAX ? CONFIG_WORKERS_MAX : (unsigned)n;
}

/* config_free - release what config_parse allocated */
void
config_free(struct config *cfg)
{
	struct config_section *sec, *nsec;
	struct config_kv *kv, *nkv;

	for (sec = cfg->sections; sec != NULL; sec = nsec) {
		nsec = sec->next;
		for (kv = sec->keys; kv != NULL; kv = nkv) {
			nkv = kv->next;
			free(kv->key);
			free(kv->value);
			free(kv);
		}
		free(sec->type);
		free(sec->name);
		free(sec);
	}
	cfg->sections = NULL;
	free(cfg->file);
	cfg->file = NULL;
}

/* config_listen_equal - see config.h */
int
config_listen_equal(const struct config *a, const struct config *b)
{
	if (a->nlisten != b->nlisten)
		return 0;
	for (size_t i = 0; i < a->nlisten; i++) {
		const struct config_addr *x = &a->listen[i], *y = &b->listen[i];
		if (strcmp(x->host, y->host) != 0 || strcmp(x->port, y->port) != 0 ||
		    x->tls != y->tls || x->proxy != y->proxy)
			return 0;
	}
	return 1;
}

/* config_chain_equal - see config.h */
int
config_chain_equal(const struct config *a, const struct config *b)
{
	const struct config_section *x = a->sections, *y = b->sections;

	if (strcmp(a->plugin_dir, b->plugin_dir) != 0 || a->on_error != b->on_error ||
	    a->filter_timeout_ms != b->filter_timeout_ms || strcmp(a->store, b->store) != 0 ||
	    a->store_timeout_ms != b->store_timeout_ms || a->store_max_size != b->store_max_size ||
	    a->store_purge_ms != b->store_purge_ms)
		return 0;
	for (; x != NULL && y != NULL; x = x->next, y = y->next) {
		const struct config_kv *k = x->keys, *l = y->keys;

		if (strcmp(x->type, y->type) != 0 || strcmp(x->name, y->name) != 0)
			return 0;
		for (; k != NULL && l != NULL; k = k->next, l = l->next) {
			if (strcmp(k->key, l->key) != 0 || strcmp(k->value, l->value) != 0)
				return 0;
		}
		if (k != NULL || l != NULL)
			return 0;
	}
	return x == NULL && y == NULL;
}

/* dump_number - a size in G, M or k, a time in h, m, s or ms: the largest
 * unit that is exact, which the parser reads back to the same value */
static void
dump_number(uint64_t v, enum key_kind kind, char *buf, size_t len)
{
	static const struct {
		uint64_t mult;
		const char *unit;
	} sizes[] = {{1ULL << 30, "G"}, {1ULL << 20, "M"}, {1ULL << 10, "k"}},
	  times[] = {{3600 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}};
	const size_t n = kind == K_COUNT ? 0 : 3; /* a count has no unit */

	for (size_t i = 0; i < n && v != 0; i++) {
		uint64_t mult = kind == K_TIME ? times[i].mult : sizes[i].mult;

		if (v % mult == 0) {
			snprintf(buf, len, "%llu%s", (unsigned long long)(v / mult),
			    kind == K_TIME ? times[i].unit : sizes[i].unit);
			return;
		}
	}
	snprintf(buf, len, "%llu%s", (unsigned long long)v, kind == K_TIME ? "ms" : "");
}

/* dump_nets - a CIDR list, blank-separated, each network with its prefix */
static void
dump_nets(const struct opt_net *nets, size_t n, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++) {
		char addr[INET6_ADDRSTRLEN];

		if (inet_ntop(nets[i].family, nets[i].addr, addr, sizeof(addr)) == NULL)
			strcpy(addr, "?");
		used += (size_t)snprintf(
		    buf + used, len - used, "%s%s/%u", i ? " " : "", addr, nets[i].bits);
	}
}

/* dump_key - one key's lines ("key = value\n", listen once per listener,
 * "#key =\n" when it has no value) into buf */
static void
dump_key(const struct config *cfg, const struct key_def *k, char *buf, size_t len)
{
	static const char *const on_error[] = {"tempfail", "accept", "reject"};
	const char *base = (const char *)cfg;
	char v[4096];
	size_t used = 0;

	v[0] = '\0';
	switch (k->kind) {
	case K_LISTEN:
		buf[0] = '\0';
		for (size_t i = 0; i < cfg->nlisten && used < len; i++) {
			const struct config_addr *a = &cfg->listen[i];
			int v6 = strchr(a->host, ':') != NULL;

			used += (size_t)snprintf(buf + used, len - used, "listen = %s%s%s:%s%s%s\n",
			    v6 ? "[" : "", a->host, v6 ? "]" : "", a->port, a->tls ? " tls" : "",
			    a->proxy ? " proxy_protocol" : "");
		}
		if (cfg->nlisten == 0)
			snprintf(buf, len, "#listen =\n");
		return;
	case K_ADDR: {
		const struct config_addr *a = (const struct config_addr *)(base + k->off);

		if (*(const int *)(base + k->size))
			snprintf(v, sizeof(v), "%s%s%s:%s", strchr(a->host, ':') ? "[" : "",
			    a->host, strchr(a->host, ':') ? "]" : "", a->port);
		break;
	}
	case K_SIZE:
	case K_COUNT:
	case K_TIME:
		dump_number(*(const uint64_t *)(base + k->off), k->kind, v, sizeof(v));
		break;
	case K_WORKERS:
		if (*(const uint64_t *)(base + k->off) == 0)
			snprintf(v, sizeof(v), "auto");
		else
			dump_number(*(const uint64_t *)(base + k->off), K_COUNT, v, sizeof(v));
		break;
	case K_STRING:
	case K_DNS_SERVER:
		snprintf(v, sizeof(v), "%s", base + k->off);
		break;
	case K_BOOL:
		snprintf(v, sizeof(v), "%s", *(const int *)(base + k->off) ? "yes" : "no");
		break;
	case K_ON_ERROR:
		snprintf(v, sizeof(v), "%s", on_error[cfg->on_error]);
		break;
	case K_WORD:
		snprintf(v, sizeof(v), "%s", words[k->size][*(const int *)(base + k->off)]);
		break;
	case K_NETS:
		dump_nets((const struct opt_net *)(base + k->off),
		    *(const size_t *)(base + k->size), v, sizeof(v));
		break;
	case K_SCORE: {
		double d = *(const double *)(base + k->off);

		if (!*(const int *)(base + k->size))
			break;
		/* the shortest form that reads back the same number */
		snprintf(v, sizeof(v), "%.15g", d);
		if (strtod(v, NULL) != d)
			snprintf(v, sizeof(v), "%.17g", d);
		break;
	}
	}
	if (v[0] == '\0')
		snprintf(buf, len, "#%s =\n", k->name);
	else
		snprintf(buf, len, "%s = %s\n", k->name, v);
}

/* config_dump - see config.h */
void
config_dump(const struct config *cfg, int changed_only, FILE *fp)
{
	struct config def;
	char line[8192], dline[8192];

	if (changed_only)
		config_defaults(&def);
	for (size_t i = 0; i < NKEYS; i++) {
		dump_key(cfg, &keys[i], line, sizeof(line));
		if (changed_only) {
			dump_key(&def, &keys[i], dline, sizeof(dline));
			if (strcmp(line, dline) == 0)
				continue;
		}
		fputs(line, fp);
	}
	for (const struct config_section *sec = cfg->sections; sec != NULL; sec = sec->next) {
		fprintf(fp, "\n[%s %s]\n", sec->type, sec->name);
		for (const struct config_kv *kv = sec->keys; kv != NULL; kv = kv->next)
			fprintf(fp, "%s = %s\n", kv->key, kv->value);
	}
}
