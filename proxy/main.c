/*
 * main.c - portcullis: command line, start-up, signals.
 *
 * portcullis [-c FILE] [-t | -T [-n] | -s] [-o key=value]... [-V]
 * portcullis -R
 * -T prints the effective configuration (config_dump) and exits; -n with it
 * only what differs from the defaults. -s asks the running daemon (at its
 * metrics_listen) for its open sessions. Runs in the foreground. SIGTERM and SIGINT stop accepting, let each session
 * finish its transaction for up to shutdown_timeout, then send 421 to the rest.
 * SIGHUP reads the configuration again and swaps it in, for new sessions,
 * only if all of it is good (on_reload_signal). -R sends SIGHUP to the
 * running daemon and waits for the outcome (notify.c: systemd's ExecReload=).
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "daemon.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "notify.h"
#include "privilege.h"
#include "rdns.h"
#include "sandbox.h"
#include "session.h"
#include "spool.h"
#include "store.h"
#include "tls.h"

#define DEFAULT_CONFIG SYSCONFDIR "/portcullis.conf"
#define OVERRIDES_MAX 64

/* What the command line said, for reading the file again at SIGHUP. */
static const char *config_file = DEFAULT_CONFIG;
static const char *override_key[OVERRIDES_MAX], *override_value[OVERRIDES_MAX];
static int noverrides;

static void usage(void);
static void dns_apply(struct server *srv, const struct config *old, const struct config *cfg);
static void on_drain_timeout(evutil_socket_t fd, short what, void *arg);
static void on_retire_timeout(evutil_socket_t fd, short what, void *arg);
static void on_reload_signal(evutil_socket_t sig, short what, void *arg);
static int single_run(struct server *srv, const struct privilege *priv);
static void descriptor_limit(const struct config *cfg);

/* Descriptors a process needs besides its sessions': listeners, the log,
 * the resolver, stores, plugins, spool files, the master's channel. */
#define DESCRIPTOR_RESERVE 64

static void
usage(void)
{
	fprintf(stderr,
	    "usage: portcullis [-c file] [-t | -T [-n] | -s] [-o key=value]... [-V]\n"
	    "       portcullis -R\n"
	    "  -c file         configuration (default " DEFAULT_CONFIG ")\n"
	    "  -t              check the configuration and exit\n"
	    "  -T              print the effective configuration (defaults, file, -o) and exit\n"
	    "  -n              with -T: only the keys that differ from the defaults\n"
	    "  -s              list the running daemon's sessions (needs metrics_listen)\n"
	    "  -o key=value    override a top-level key\n"
	    "  -V              print the version and the paths built in, and exit\n"
	    "  -R              reload the running daemon (SIGHUP) and wait for the outcome\n");
}

/* config_file_name - see daemon.h */
const char *
config_file_name(void)
{
	return config_file;
}

/* resolve_backend - see daemon.h */
int
resolve_backend(const struct config *cfg, struct sockaddr_storage *addr, socklen_t *addrlen,
    char *err, size_t errlen)
{
	struct addrinfo hints = {0}, *res;
	int r;

	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	r = getaddrinfo(cfg->backend.host, cfg->backend.port, &hints, &res);
	if (r != 0) {
		snprintf(err, errlen, "%.200s: backend %.200s: %.80s",
		    cfg->file ? cfg->file : "config", cfg->backend.host, gai_strerror(r));
		return -1;
	}
	memcpy(addr, res->ai_addr, res->ai_addrlen);
	*addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* config_read - see daemon.h */
struct config *
config_read(char *err, size_t errlen)
{
	struct config *cfg = calloc(1, sizeof(*cfg));

	if (cfg == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	config_defaults(cfg);
	if (config_load(cfg, config_file, err, errlen) != 0)
		goto fail;
	for (int i = 0; i < noverrides; i++) {
		if (config_set(cfg, override_key[i], override_value[i], 0, err, errlen) != 0)
			goto fail;
	}
	if (config_check(cfg, err, errlen) != 0)
		goto fail;
	return cfg;
fail:
	config_free(cfg);
	free(cfg);
	return NULL;
}

/* dns_start - see daemon.h */
int
dns_start(struct server *srv, char *err, size_t errlen)
{
	struct config *cfg = srv->cfg;
	char secs[32];

	if (cfg->dns_server[0] == '\0') {
		srv->dns = evdns_base_new(srv->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
		if (srv->dns == NULL) /* no usable resolv.conf: no DNS, say so */
			log_warn(NULL, "no name server in /etc/resolv.conf: DNS lookups will fail");
	}
	if (srv->dns == NULL)
		srv->dns = evdns_base_new(srv->base, 0);
	if (srv->dns == NULL) {
		snprintf(err, errlen, "cannot create the DNS resolver");
		return -1;
	}
	if (cfg->dns_server[0] != '\0' &&
	    evdns_base_nameserver_ip_add(srv->dns, cfg->dns_server) != 0) {
		snprintf(
		    err, errlen, "%s: dns_server %s: cannot use it", cfg->file, cfg->dns_server);
		return -1;
	}
	snprintf(secs, sizeof(secs), "%.3f", (double)cfg->dns_timeout_ms / 1000.0);
	evdns_base_set_option(srv->dns, "timeout:", secs);
	evdns_base_set_option(srv->dns, "attempts:", "2");
	/* Answers must match the question's case exactly (0x20 hardening) is
	 * off: blocklists answer in the case they like. */
	evdns_base_set_option(srv->dns, "randomize-case:", "0");
	return 0;
}

/*
 * on_reload_signal - SIGHUP: read the configuration again (DESIGN §4). The
 * new one is checked whole, its certificates and (if the sections changed)
 * its chain built, before anything is swapped; if any of it fails, the log
 * says why and the running configuration keeps serving. Sessions in flight
 * finish on the configuration they started with. With the sections as they
 * were, the running chain stays and each instance re-reads its own files
 * and scripts; one that fails keeps what it had.
 */
static void
on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	char err[CONFIG_ERR_MAX];
	struct reload r;
	struct config *cfg;
	struct chain *chain = NULL;
	struct generation *g = NULL, *old;
	size_t ok = 0, failed = 0;
	int same_chain;
	char first[CONFIG_ERR_MAX + 64] = ""; /* the first filter that failed, for -R */

	notify_reloading();
	if (reload_read(srv->cfg, &r, err, sizeof(err)) != 0)
		goto fail;
	cfg = r.cfg;
	/* This process dropped its privileges and entered its filter once,
	 * for good: what it runs as is fixed until a restart. */
	if (config_workers(cfg) != 1 || strcmp(cfg->user, srv->cfg->user) != 0 ||
	    strcmp(cfg->group, srv->cfg->group) != 0 || cfg->seccomp != srv->cfg->seccomp) {
		snprintf(err, sizeof(err),
		    "%s: workers, user, group or seccomp changed: that takes a restart",
		    config_file);
		goto fail;
	}
	if (metrics_http_prepare(srv, cfg, err, sizeof(err)) != 0)
		goto fail;
	same_chain = config_chain_equal(srv->cfg, cfg);
	if (same_chain)
		chain = srv->chain;
	else if (store_settings(srv->base, cfg),
	    chain_load(&chain, cfg, srv->base, srv->dns, 0, err, sizeof(err)) != 0)
		goto fail;
	if ((g = generation_new(cfg, chain)) == NULL) {
		if (!same_chain)
			chain_free(chain);
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}

	/* Everything is built: swap. */
	metrics_http_commit();
	metrics_gauge_add(G_GENERATION, 1);
	dns_apply(srv, srv->cfg, cfg);
	log_init(cfg->log, cfg->log_debug);
	log_set_json(cfg->log_json);
	rdns_configure(cfg->dns_retry_ms);
	SSL_CTX_free(srv->tls_server); /* sessions using it hold their own reference */
	srv->tls_server = r.tls_server;
	SSL_CTX_free(srv->tls_client);
	srv->tls_client = r.tls_client;
	memcpy(&srv->backend_addr, &r.addr, r.addrlen);
	srv->backend_addrlen = r.addrlen;
	old = srv->gen;
	srv->gen = g;
	srv->cfg = cfg;
	srv->chain = chain;
	srv->backend_xclient_name = 1; /* the backend may have changed too */
	generation_release(old);
	if (!same_chain) {
		log_info(NULL,
		    "SIGHUP: %zu filter(s) loaded anew (the sections changed); %s read again",
		    chain->n, config_file);
		metrics_inc(M_RELOAD_OK);
		notify_reloaded(NULL);
		return;
	}
	for (size_t i = 0; i < chain->n; i++) {
		struct pc_instance *f = &chain->f[i];
		if (f->pl->reload == NULL)
			continue;
		err[0] = '\0';
		if (f->pl->reload(f->inst, err, sizeof(err)) != 0) {
			log_err(NULL, "reload of [%s %s] failed, keeping the old one: %s", f->type,
			    f->name, err[0] ? err : "no reason given");
			if (failed++ == 0)
				snprintf(first, sizeof(first), "[%s %s]: %s", f->type, f->name,
				    err[0] ? err : "no reason given");
		} else {
			ok++;
		}
	}
	log_info(NULL, "SIGHUP: %zu filter(s) reloaded, %zu failed; %s read again", ok, failed,
	    config_file);
	/* A filter that kept its old files fails the reload, for -R and
	 * the metrics alike, though the rest of it took effect. */
	metrics_inc(failed ? M_RELOAD_FAILED : M_RELOAD_OK);
	notify_reloaded(failed ? first : NULL);
	return;

fail:
	reload_failed(&r, err);
}

/* reload_read - see daemon.h */
int
reload_read(const struct config *running, struct reload *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	err[0] = '\0';
	if ((r->cfg = config_read(err, errlen)) == NULL)
		return -1;
	if (!config_listen_equal(running, r->cfg)) {
		snprintf(err, errlen, "%s: listen changed: that takes a restart", config_file);
		return -1;
	}
	if (resolve_backend(r->cfg, &r->addr, &r->addrlen, err, errlen) != 0)
		return -1;
	r->tls_server = tls_server_ctx(r->cfg, err, errlen);
	if (r->tls_server == NULL && err[0] != '\0')
		return -1;
	r->tls_client = tls_client_ctx(r->cfg, err, errlen);
	if (r->tls_client == NULL && err[0] != '\0')
		return -1;
	return 0;
}

/* reload_failed - see daemon.h */
void
reload_failed(struct reload *r, const char *err)
{
	metrics_http_abort();
	metrics_inc(M_RELOAD_FAILED);
	log_err(NULL, "SIGHUP: %s; keeping the running configuration", err);
	notify_reloaded(err);
	SSL_CTX_free(r->tls_server);
	SSL_CTX_free(r->tls_client);
	if (r->cfg != NULL) {
		config_free(r->cfg);
		free(r->cfg);
	}
	memset(r, 0, sizeof(*r));
}

/* dns_apply - a SIGHUP changed the resolver's settings: the same resolver
 * (plugins hold it) takes them */
static void
dns_apply(struct server *srv, const struct config *old, const struct config *cfg)
{
	char secs[32];

	if (cfg->dns_timeout_ms != old->dns_timeout_ms) {
		snprintf(secs, sizeof(secs), "%.3f", (double)cfg->dns_timeout_ms / 1000.0);
		evdns_base_set_option(srv->dns, "timeout:", secs);
	}
	if (strcmp(cfg->dns_server, old->dns_server) == 0)
		return;
	rdns_resolver_changed();
	evdns_base_clear_nameservers_and_suspend(srv->dns);
	if (cfg->dns_server[0] != '\0' ? evdns_base_nameserver_ip_add(srv->dns, cfg->dns_server)
	                               : evdns_base_resolv_conf_parse(
	                                     srv->dns, DNS_OPTION_NAMESERVERS, "/etc/resolv.conf"))
		log_warn(NULL,
		    "SIGHUP: the name servers of %s could not be set: DNS lookups will fail",
		    cfg->dns_server[0] ? cfg->dns_server : "/etc/resolv.conf");
	evdns_base_resume(srv->dns);
}

/* on_stop_signal - see daemon.h */
void
on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	uint64_t ms = srv->cfg->shutdown_timeout_ms;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

	if (srv->draining) {
		log_info(NULL, "second signal: stopping now");
		session_shutdown_all(srv);
		event_base_loopexit(srv->base, NULL);
		return;
	}
	log_info(NULL, "signal %d: no new connections; %lu session(s) finishing", (int)sig,
	    srv->nsessions);
	srv->draining = 1;
	notify_stopping();
	listener_stop();
	session_drain_all(srv);
	if (srv->nsessions == 0) {
		event_base_loopexit(srv->base, NULL);
		return;
	}
	srv->drain_timer = evtimer_new(srv->base, on_drain_timeout, srv);
	evtimer_add(srv->drain_timer, &tv);
}

/* on_retire_signal - see daemon.h */
void
on_retire_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	uint64_t ms = srv->cfg->shutdown_timeout_ms;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

	if (srv->draining || srv->retiring)
		return;
	srv->retiring = 1;
	log_info(NULL,
	    "replaced by a reload: no new connections; %lu session(s) go on, for up to "
	    "shutdown_timeout",
	    srv->nsessions);
	listener_stop();
	if (srv->nsessions == 0 && srv->nwaiting == 0) {
		event_base_loopexit(srv->base, NULL);
		return;
	}
	srv->retire_timer = evtimer_new(srv->base, on_retire_timeout, srv);
	if (srv->retire_timer != NULL)
		evtimer_add(srv->retire_timer, &tv);
}

/* on_retire_timeout - the sessions of a replaced worker had their time:
 * from here on as at SIGTERM */
static void
on_retire_timeout(evutil_socket_t fd, short what, void *arg)
{
	on_stop_signal(SIGTERM, 0, arg);
}

/* on_drain_timeout - grace is over: 421 to the rest, then stop */
static void
on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	struct timeval tv = {2, 0};

	session_shutdown_all(srv);
	/* Their last replies get a moment to leave, no more. */
	event_base_loopexit(srv->base, &tv);
}

int
main(int argc, char **argv)
{
	char err[CONFIG_ERR_MAX];
	int check = 0, dump = 0, changed_only = 0, live = 0, reload_client = 0, ch;
	struct config *cfg;
	struct server srv;
	struct privilege priv;

	while ((ch = getopt(argc, argv, "c:to:VhTnsR")) != -1) {
		switch (ch) {
		case 'c':
			config_file = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'T':
			dump = 1;
			break;
		case 'n':
			changed_only = 1;
			break;
		case 's':
			live = 1;
			break;
		case 'R':
			reload_client = 1;
			break;
		case 'o': {
			char *eq = strchr(optarg, '=');
			if (eq == NULL) {
				fprintf(stderr, "-o %s: expected key=value\n", optarg);
				return 1;
			}
			if (noverrides >= OVERRIDES_MAX) {
				fprintf(stderr, "portcullis: too many -o options\n");
				return 2;
			}
			*eq = '\0';
			override_key[noverrides] = optarg;
			override_value[noverrides++] = eq + 1;
			break;
		}
		case 'V':
			/* The paths built in (make PREFIX=, SYSCONFDIR=...), which
			 * the unit and the pages must name too. */
			printf(
			    "portcullis %s\nconfig %s\nplugin_dir %s\nstore_dir %s\nrun_dir %s\n",
			    PORTCULLIS_VERSION, DEFAULT_CONFIG, PLUGINDIR, STOREDIR, NOTIFY_RUNDIR);
			return 0;
		default:
			usage();
			return 2;
		}
	}
	if (optind != argc || (changed_only && !dump) || (dump + check + live > 1) ||
	    (reload_client && argc != 2)) {
		usage();
		return 2;
	}
	if (reload_client)
		return notify_reload_client();

	if ((cfg = config_read(err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* -T: what the keys say, as read; neither the backend's name nor the
	 * certificates nor the plugins are looked at (-t does that). */
	if (dump) {
		config_dump(cfg, changed_only, stdout);
		config_free(cfg);
		free(cfg);
		return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
	}
	/* -s: the live view, from the daemon this configuration describes. */
	if (live) {
		int rc = 1;
		if (!cfg->have_metrics_listen)
			fprintf(stderr,
			    "%s: no metrics_listen = host:port: the live view is served there\n",
			    config_file);
		else if (metrics_http_fetch(
		             &cfg->metrics_listen, "/sessions", stdout, err, sizeof(err)) != 0)
			fprintf(stderr, "portcullis: %s\n", err);
		else
			rc = 0;
		config_free(cfg);
		free(cfg);
		return rc;
	}
	memset(&srv, 0, sizeof(srv));
	srv.cfg = cfg;
	TAILQ_INIT(&srv.sessions);
	srv.backend_xclient_name = 1; /* until its first EHLO says */
	if (resolve_backend(cfg, &srv.backend_addr, &srv.backend_addrlen, err, sizeof(err)) != 0)
		goto bad_config;
	/* The names, under -t too: a user that does not exist is found now. */
	if (privilege_resolve(cfg, &priv, err, sizeof(err)) != 0)
		goto bad_config;

	/* -t logs what plugins say to stderr, whatever log says. */
	log_init(check ? CONFIG_LOG_STDERR : cfg->log, cfg->log_debug);
	log_set_json(cfg->log_json);
	rdns_configure(cfg->dns_retry_ms);
	/* libevent's own lines (evdns: "Nameserver ... has failed") go to our
	 * log, in its format, not raw to stderr. The resolver's too: evdns
	 * hands them to this callback, with their severity, as long as no
	 * evdns_set_log_fn is set. That one is left unset on purpose: it would
	 * get evdns's debug lines as well, told apart from the rest only by
	 * "warning or not". */
	event_set_log_callback(log_libevent);
	signal(SIGPIPE, SIG_IGN);
	srv.tls_server = tls_server_ctx(cfg, err, sizeof(err));
	if (srv.tls_server == NULL && err[0] != '\0')
		goto bad_config;
	srv.tls_client = tls_client_ctx(cfg, err, sizeof(err));
	if (srv.tls_client == NULL && err[0] != '\0')
		goto bad_config;
	/* Every plugin is loaded and initialised, under -t too: a broken
	 * section is found before the daemon starts, not by the first client.
	 * With workers, the master does that as a check (master.c), and each
	 * worker does it for real once forked. */
	if (serve_prepare(&srv, check || config_workers(cfg) > 1, err, sizeof(err)) != 0)
		goto bad_config;
	if (check) {
		printf("%s: configuration OK\n", config_file);
		server_free(&srv);
		return 0;
	}
	if (geteuid() == 0 && !priv.set_ids)
		log_warn(NULL,
		    "running as root: set user = NAME (and group) so that no client byte "
		    "is handled as root");
	descriptor_limit(cfg);
	if (config_workers(cfg) > 1) {
		/* The master's own chain was the check: the workers load theirs. */
		chain_free(srv.chain);
		srv.chain = NULL;
		store_close_all();
		return master_run(&srv, &priv);
	}
	return single_run(&srv, &priv);

bad_config:
	fprintf(stderr, "%s\n", err);
	server_free(&srv);
	return 1;
}

/*
 * descriptor_limit - a session holds two descriptors (the client's and its
 * backend leg's), and any one process may hold every session: the soft limit
 * goes up to the hard one (as Postfix's master does; a shell's 1024 would
 * stop a proxy at some 480 sessions), and a max_connections that cannot fit
 * under it is said at start, not found by the client that gets a 421.
 */
static void
descriptor_limit(const struct config *cfg)
{
	unsigned long long need = 2 * (unsigned long long)cfg->max_connections + DESCRIPTOR_RESERVE;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = was;
	}
	if (rl.rlim_cur != RLIM_INFINITY && need > (unsigned long long)rl.rlim_cur)
		log_warn(NULL,
		    "max_connections = %llu needs some %llu descriptors in one process (two a "
		    "session: the client and the backend), over its limit of %llu: past some %llu "
		    "sessions in a process, new clients wait or get 421 (raise LimitNOFILE, or "
		    "spread them over workers: each worker has the limit)",
		    (unsigned long long)cfg->max_connections, need, (unsigned long long)rl.rlim_cur,
		    rl.rlim_cur > DESCRIPTOR_RESERVE
		        ? (unsigned long long)(rl.rlim_cur - DESCRIPTOR_RESERVE) / 2
		        : 0ULL);
}

/* serve_prepare - see daemon.h */
int
serve_prepare(struct server *srv, int check, char *err, size_t errlen)
{
	struct event_config *ecfg = event_config_new();

	if (getrandom(&srv->sid_base, sizeof(srv->sid_base), GRND_NONBLOCK) !=
	    sizeof(srv->sid_base))
		srv->sid_base =
		    (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 20);
	/* The changelist folds the add/remove of write interest that every
	 * reply causes into the next epoll_wait: a third of our syscalls. */
	if (ecfg != NULL)
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	srv->base = ecfg != NULL ? event_base_new_with_config(ecfg) : event_base_new();
	if (ecfg != NULL)
		event_config_free(ecfg);
	if (srv->base == NULL) {
		snprintf(err, errlen, "cannot create the event loop");
		return -1;
	}
	if (dns_start(srv, err, errlen) != 0)
		return -1;
	store_settings(srv->base, srv->cfg);
	return chain_load(&srv->chain, srv->cfg, srv->base, srv->dns, check, err, errlen);
}

/* serve_signals - see daemon.h */
int
serve_signals(struct server *srv, int reload)
{
	/* A worker: SIGTERM drains, SIGUSR2 retires (a reload replaced it);
	 * ^C and SIGHUP are the master's to act on. */
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR2};

	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		event_callback_fn fn = on_stop_signal;
		if (reload && sigs[i] == SIGUSR2)
			continue;
		if (!reload && (sigs[i] == SIGINT || sigs[i] == SIGHUP)) {
			signal(sigs[i], SIG_IGN);
			continue;
		}
		if (sigs[i] == SIGHUP)
			fn = on_reload_signal;
		else if (sigs[i] == SIGUSR2)
			fn = on_retire_signal;
		srv->sig[srv->nsig] = evsignal_new(srv->base, sigs[i], fn, srv);
		if (srv->sig[srv->nsig] == NULL || evsignal_add(srv->sig[srv->nsig], NULL) != 0)
			return -1;
		srv->nsig++;
	}
	return 0;
}

/* serve_enter - see daemon.h */
int
serve_enter(struct server *srv, const struct privilege *priv, int report, char *err, size_t errlen)
{
	/* The spool directory is reached through a descriptor from inside a
	 * jail, where its path means something else. */
	if (priv->chroot[0] != '\0' && spool_pin(srv->cfg->spool_dir) != 0) {
		snprintf(err, errlen, "spool_dir %s: %s", srv->cfg->spool_dir, strerror(errno));
		return -1;
	}
	if (privilege_drop(priv, err, errlen) != 0)
		return -1;
	if (srv->cfg->seccomp && sandbox_enter(report, err, errlen) != 0)
		return -1;
	return 0;
}

/* serve_end - see daemon.h */
void
serve_end(struct server *srv)
{
	listener_stop();
	for (size_t i = 0; i < srv->nsig; i++)
		event_free(srv->sig[i]);
	srv->nsig = 0;
	if (srv->drain_timer != NULL)
		event_free(srv->drain_timer);
	srv->drain_timer = NULL;
	if (srv->retire_timer != NULL)
		event_free(srv->retire_timer);
	srv->retire_timer = NULL;
	while (!TAILQ_EMPTY(&srv->sessions)) {
		struct session *s = TAILQ_FIRST(&srv->sessions);
		session_destroy(s);
	}
	rdns_shutdown();
	/* Cancelled DNS queries call back once more, from the loop. */
	event_base_loop(srv->base, EVLOOP_NONBLOCK);
	server_free(srv);
}

/*
 * single_run - workers = 1: this process accepts and serves. Handlers
 * first, then the sockets: whoever sees the port open may signal us at
 * once, and SIGHUP's default action would end the daemon. Then the
 * privileges go and the filter comes, before the first client byte.
 */
static int
single_run(struct server *srv, const struct privilege *priv)
{
	char err[CONFIG_ERR_MAX];
	int fds[CONFIG_LISTEN_MAX];
	size_t nfds;

	if ((srv->gen = generation_new(srv->cfg, srv->chain)) == NULL) {
		fprintf(stderr, "out of memory\n");
		server_free(srv);
		return 1;
	}
	metrics_gauge_set(G_GENERATION, 1);
	err[0] = '\0';
	if (serve_signals(srv, 1) != 0 || listener_bind(srv->cfg, fds, &nfds) != 0 ||
	    listener_start(srv, fds, nfds) != 0 || metrics_http_start(srv, err, sizeof(err)) != 0 ||
	    serve_enter(srv, priv, -1, err, sizeof(err)) != 0) {
		if (err[0] != '\0')
			log_err(NULL, "%s", err);
		metrics_http_stop();
		serve_end(srv);
		return 1;
	}
	log_info(NULL, "portcullis %s started, backend %s:%s, %zu filter(s)%s%s%s",
	    PORTCULLIS_VERSION, srv->cfg->backend.host, srv->cfg->backend.port, srv->chain->n,
	    priv->set_ids ? ", as " : "", priv->set_ids ? priv->name : "",
	    srv->cfg->seccomp ? ", seccomp on" : "");
	notify_ready(srv);

	/* The lines of a loop pass go out together (log.h). */
	log_attach(srv->base);
	event_base_dispatch(srv->base);
	log_attach(NULL);

	log_info(NULL, "stopped");
	notify_end();
	metrics_http_stop();
	serve_end(srv);
	return 0;
}

/* store_settings - see daemon.h */
void
store_settings(struct event_base *base, const struct config *cfg)
{
	struct store_settings set = {
	    .timeout_ms = cfg->store_timeout_ms,
	    .max_size = cfg->store_max_size,
	    .purge_ms = cfg->store_purge_ms,
	    .workers = config_workers(cfg),
	};

	store_configure(base, &set);
}
