/*
 * config.h - the configuration file, parsed into struct config.
 *
 * INI-like (DESIGN.md §4): '#' comments, "key = value", top-level keys first,
 * then "[type name]" sections in chain order whose keys belong to the filter.
 * Sizes take k/M/G, times take ms/s/m/h. Errors read "file:line: message".
 */
#ifndef PORTCULLIS_CONFIG_H
#define PORTCULLIS_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "options.h"

#define CONFIG_LISTEN_MAX 16
#define CONFIG_ERR_MAX 512
#define CONFIG_HOST_MAX 256

/* tls_ciphers by default: Mozilla's "intermediate" TLS 1.2 suites, forward
 * secret and AEAD only (tls.c). */
#define CONFIG_TLS_CIPHERS                                                                         \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

enum config_bare_lf {
	CONFIG_BARE_LF_REJECT = 0,
	CONFIG_BARE_LF_NORMALIZE,
};

/* What a filter failure (error, bad verdict, timeout) becomes. */
enum config_on_error {
	CONFIG_ON_ERROR_TEMPFAIL = 0,
	CONFIG_ON_ERROR_ACCEPT, /* fail open: the failing filter is skipped */
	CONFIG_ON_ERROR_REJECT,
};

enum config_log {
	CONFIG_LOG_STDERR = 0,
	CONFIG_LOG_SYSLOG,
};

struct config_addr {
	char host[CONFIG_HOST_MAX]; /* numeric address or name; "" never */
	char port[16];
	int tls; /* listen option "tls": implicit TLS */
	int proxy; /* listen option "proxy_protocol" */
};

/* Networks a CIDR-list key (proxy_trusted, trusted_networks) holds. */
#define CONFIG_NETS_MAX 64

enum config_backend_tls {
	CONFIG_BACKEND_TLS_NO = 0,
	CONFIG_BACKEND_TLS_OPPORTUNISTIC,
	CONFIG_BACKEND_TLS_REQUIRED,
};

struct config_kv {
	char *key;
	char *value;
	int line;
	struct config_kv *next;
};

/* One "[type name]" section: a chain element with its own keys, in order. */
struct config_section {
	char *type;
	char *name;
	int line;
	struct config_kv *keys;
	struct config_section *next;
};

struct config {
	char *file; /* the file it was read from, for messages */

	struct config_addr listen[CONFIG_LISTEN_MAX];
	size_t nlisten;
	int listen_is_default; /* listen[0] is the default 0.0.0.0:25 */
	struct config_addr backend;
	int have_backend;
	/* The HTTP endpoint of /metrics, /healthz and /sessions (metrics_http.c). */
	struct config_addr metrics_listen;
	int have_metrics_listen;
	char hostname[CONFIG_HOST_MAX];

	uint64_t max_message_size;
	uint64_t max_recipients;
	uint64_t max_connections;
	uint64_t max_connections_per_ip;
	uint64_t max_line_length; /* command lines, without CRLF */
	uint64_t max_data_line_length; /* lines of mail, without CRLF */
	uint64_t max_errors;
	uint64_t max_header_size; /* a message's header section; over it 552 */
	uint64_t client_ipv6_prefix; /* per-IP limit counts IPv6 clients per prefix */
	/* Unprocessed client input held (pipelined commands) before we stop
	 * reading: a client that sends faster than we answer cannot make us
	 * buffer without bound. Holds a whole command line (and an AUTH line). */
	uint64_t max_client_buffer;

	uint64_t timeout_ms; /* client: one command */
	uint64_t data_timeout_ms; /* client: the whole DATA phase */
	uint64_t backend_connect_timeout_ms; /* connect + banner */
	uint64_t backend_timeout_ms; /* one command */
	uint64_t backend_data_timeout_ms; /* message sent -> final reply */
	uint64_t shutdown_timeout_ms; /* SIGTERM grace */

	enum config_bare_lf bare_lf;
	uint64_t spool_memory;
	char spool_dir[1024];

	enum config_log log;
	int log_debug;
	int log_json; /* log_format = json: one JSON object a line */

	char plugin_dir[1024];
	char dns_server[CONFIG_HOST_MAX + 32]; /* "ip:port"; "" = /etc/resolv.conf */
	uint64_t dns_timeout_ms;
	/* After the resolver failed a client-name lookup, skip those lookups
	 * this long (rdns.c); 0: never skip. */
	uint64_t dns_retry_ms;
	enum config_on_error on_error;
	uint64_t filter_timeout_ms; /* one hook call, pending included */

	/* The store (store.h): the spec plugins get by default, and what
	 * every store opened takes. */
	char store[1024];
	uint64_t store_timeout_ms; /* one Redis command */
	uint64_t store_max_size; /* an LMDB map; a memory store */
	uint64_t store_purge_ms; /* expired entries swept this often */

	/* Score thresholds, applied at the end of DATA after the filters
	 * (data.c): each is used only when set. */
	double reject_score, tempfail_score, header_score;
	int have_reject_score, have_tempfail_score, have_header_score;

	char tls_cert[1024]; /* "" : no TLS for clients */
	char tls_key[1024];
	char tls_chain[1024];
	char tls_ciphers[1024]; /* TLS 1.2 suites; CONFIG_TLS_CIPHERS by default */
	int tls_min_v13; /* tls_min_protocol = TLSv1.3 */
	int tls_required;
	int tls_session_cache; /* resumption: session cache and tickets (tls.c) */
	uint64_t tls_session_timeout_ms; /* how long a session may be resumed */
	int auth_plaintext;
	struct opt_net proxy_trusted[CONFIG_NETS_MAX];
	size_t nproxy_trusted;
	/* Clients we trust, like Postfix's mynetworks (config_trusted); none
	 * by default. */
	struct opt_net trusted_networks[CONFIG_NETS_MAX];
	size_t ntrusted_networks;
	enum config_backend_tls backend_tls;
	char backend_tls_ca[1024];
	int backend_tls_verify;
	char backend_tls_name[CONFIG_HOST_MAX];
	int backend_xclient;
	int backend_chunking; /* BDAT to a backend that offers CHUNKING */
	int client_rdns; /* look up the client's name for XCLIENT NAME */

	/* Processes and privileges (issue 18): workers 0 is auto; the names
	 * are looked up at start (privilege.c). */
	uint64_t workers;
	char user[64];
	char group[64];
	char chroot[1024];
	int seccomp;

	int key_line[64]; /* where each key of the table was set (0: not in the file) */

	struct config_section *sections;
};

/* At most this many workers; a reload starts as many again while the old
 * ones drain, within shmconn's SHMCONN_WORKERS_MAX. */
#define CONFIG_WORKERS_MAX 32

/* config_workers - how many workers cfg asks for (auto: the cores online,
 * at most CONFIG_WORKERS_MAX); 1 is the single process. */
unsigned config_workers(const struct config *cfg);

/* Defaults, as documented in etc/portcullis.conf. */
void config_defaults(struct config *cfg);

/*
 * config_parse - parse text (len bytes) named file into cfg, which must hold
 * defaults. Returns 0, or -1 with "file:line: message" in err.
 */
int config_parse(
    struct config *cfg, const char *file, const char *text, size_t len, char *err, size_t errlen);

/* config_load - read path and config_parse it. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/*
 * config_set - set one top-level key (as "-o key=value" does). line is used
 * in messages; 0 means "command line". Returns 0 or -1 with err.
 */
int config_set(
    struct config *cfg, const char *key, const char *value, int line, char *err, size_t errlen);

/* config_check - what no single key can tell (backend given, listen set...). */
int config_check(struct config *cfg, char *err, size_t errlen);

void config_free(struct config *cfg);

/* For SIGHUP: do two configurations listen on the same sockets with the same
 * options? A reload cannot rebind, so a change needs a restart. */
int config_listen_equal(const struct config *a, const struct config *b);

/* For SIGHUP: would both build the same chain (sections, their keys in
 * order, and the global keys instances take: plugin_dir, on_error,
 * filter_timeout)? Then the running chain is kept and its instances reload
 * their own files; otherwise a new chain is built. */
int config_chain_equal(const struct config *a, const struct config *b);

/* Value parsers, exported for reuse and tests. Return 0 or -1. Sizes,
 * times and booleans are options.c's (opt_size, opt_time, opt_bool). */
int config_parse_size(const char *s, uint64_t *out); /* 10, 10k, 10M, 10G */
int config_parse_time(const char *s, uint64_t *ms); /* 250ms, 30s, 5m, 1h; bare = s */
int config_parse_addr(const char *s, struct config_addr *out); /* host:port, [v6]:port */
int config_parse_bool(const char *s, int *out); /* yes/no/true/false/on/off/1/0 */
int config_parse_on_error(const char *s, enum config_on_error *out); /* tempfail/accept/reject */
/* config_net_match - is sa in one of the n networks (opt_nets_match)? */
int config_net_match(const struct opt_net *nets, size_t n, const struct sockaddr *sa);
/* config_trusted - is the client at ip (numeric text, as the session keeps
 * it: "192.0.2.7", "2001:db8::7", "::ffff:192.0.2.7") in trusted_networks?
 * 1 or 0; text that is no address is not trusted. Pure. */
int config_trusted(const struct config *cfg, const char *ip);
/* config_key_line - the line a key was set on, 0 if it was not in the file */
int config_key_line(const struct config *cfg, const char *key);

/*
 * config_dump - the configuration as a file that reads back the same
 * (portcullis -T): every top-level key in the table's order, one
 * "key = value" line each (listen once per listener), values as the parser
 * stores them (sizes and times in the largest unit that is exact), then
 * the sections as written. A key with no value (tls_cert unset) is written
 * "#key =": a comment, since an empty value is an error. changed_only
 * leaves out the keys whose value is the default's (portcullis -T -n).
 */
void config_dump(const struct config *cfg, int changed_only, FILE *fp);

/*
 * config_suggest - the name in known[0..n-1] that word is most likely a
 * typo of: within edit distance 2 (letter case ignored), or one a prefix
 * or suffix of the other (the shorter at least 4 characters). The closest
 * wins, the first on a tie; NULL when none is close.
 */
const char *config_suggest(const char *word, const char *const *known, size_t n);

#endif
