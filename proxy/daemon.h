/*
 * daemon.h - the start-up steps the single process (main.c) and the
 * master and its workers (master.c) share.
 */
#ifndef PORTCULLIS_DAEMON_H
#define PORTCULLIS_DAEMON_H

#include <stddef.h>
#include <sys/socket.h>

#include <event2/util.h>

#include <openssl/ssl.h>

#include "config.h"
#include "server.h"

struct privilege;

#include "version.h"

/* config_read - the file named on the command line, then its -o
 * overrides, then the checks; NULL with the reason in err. */
struct config *config_read(char *err, size_t errlen);
/* config_file_name - that file's name, for log lines. */
const char *config_file_name(void);
/* resolve_backend - cfg's backend address; 0, or -1 with err. */
int resolve_backend(const struct config *cfg, struct sockaddr_storage *addr, socklen_t *addrlen,
    char *err, size_t errlen);
/* dns_start - the resolver plugins share (DESIGN §5): dns_server, or the
 * name servers of /etc/resolv.conf; 0, or -1 with err. */
int dns_start(struct server *srv, char *err, size_t errlen);
/* store_settings - what the stores opened from now on take (store.h). A
 * store already open keeps its own until no section uses it. */
void store_settings(struct event_base *base, const struct config *cfg);

/* What a SIGHUP builds before it swaps anything in. */
struct reload {
	struct config *cfg;
	struct sockaddr_storage addr; /* the backend's */
	socklen_t addrlen;
	SSL_CTX *tls_server, *tls_client;
};
/* reload_read - the configuration again (the file, -o, the checks), the
 * same listen as running, the backend's address, the TLS contexts (the
 * keys read now). 0, or -1 with err; r holds what was built either way. */
int reload_read(const struct config *running, struct reload *r, char *err, size_t errlen);
/* reload_failed - the reload stops at err: counted, logged, told to the
 * service manager and to portcullis -R; what r built is freed. */
void reload_failed(struct reload *r, const char *err);

/* serve_prepare - srv (cfg set) gets a random session id base, its event
 * loop, its resolver and its chain (plugins loaded and initialised; with
 * check, as portcullis -t does). 0, or -1 with err. */
int serve_prepare(struct server *srv, int check, char *err, size_t errlen);
/* serve_signals - the single process (reload set): SIGTERM and SIGINT
 * drain srv, SIGHUP reloads it. A worker: SIGTERM drains, SIGUSR2 retires,
 * SIGINT and SIGHUP are ignored (the master acts on them). */
int serve_signals(struct server *srv, int reload);
/* serve_enter - the last step before the first client byte: drop to
 * priv, then the seccomp filter unless seccomp = no (a trapped call also
 * reported on report, -1 for none). 0, or -1 with err. */
int serve_enter(
    struct server *srv, const struct privilege *priv, int report, char *err, size_t errlen);
/* serve_end - after the loop: listeners, signals, sessions, then srv. */
void serve_end(struct server *srv);
/* on_stop_signal - SIGTERM/SIGINT: stop accepting, let sessions finish
 * for up to shutdown_timeout, then 421 to the rest; a second signal
 * stops at once. */
void on_stop_signal(evutil_socket_t sig, short what, void *arg);
/* on_retire_signal - SIGUSR2 to a worker a reload replaced: stop
 * accepting, let the sessions go on as they are (the new workers take new
 * clients); once they are all gone the worker ends, and after
 * shutdown_timeout it drains as at SIGTERM. */
void on_retire_signal(evutil_socket_t sig, short what, void *arg);

/* master_run - workers > 1 (master.c): srv holds the checked
 * configuration, the backend's address, the TLS contexts, a loop and a
 * resolver; priv what the workers drop to. Returns the exit status. */
int master_run(struct server *srv, const struct privilege *priv);

#endif
