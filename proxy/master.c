/*
 * master.c - workers = N (issue 18): a master process and the workers it
 * forks, supervises and replaces.
 *
 * Exports master_run. The master holds what a worker must not need to
 * get again: the checked configuration, the certificates and keys (read
 * as root), the listening sockets, and two shared mappings made before
 * the first fork: one metrics block per worker slot (the master's own
 * first) and the connection counts (shmconn.h). It never accepts a
 * client; it loads the plugins once, as portcullis -t does, to check a
 * configuration, and lets them go.
 *
 * A worker is forked from the master: it closes every descriptor but its
 * own (the listeners, its channel to the master, stdio), makes its own
 * loop, resolver and chain (plugin init runs here, in each worker, as
 * root), drops to user/group (and chroot), installs the seccomp filter,
 * and only then says "ready" and accepts on the shared sockets. Whichever
 * worker the kernel wakes takes the connection.
 *
 * The channel (a socketpair) carries lines: the worker's "ready", the
 * master's "sessions" and the worker's "sessions LEN" and LEN bytes of its
 * rows for /sessions, and the line the seccomp trap writes before the
 * worker dies. Signals reach the master through a signalfd, so that
 * libevent's own signal handling stays free for the workers.
 *
 * Supervision: a worker that dies unasked has its connection counts
 * forgotten and its counters folded into the master's block, and is
 * started again at once; when workers keep dying young, each restart waits
 * longer (MASTER_BACKOFF_*). A worker that cannot start at all (its chain
 * fails, or the drop) exits with WORKER_EXIT_INIT: at start that stops the
 * daemon, at a reload it fails the reload.
 *
 * SIGHUP: the new configuration is checked whole (as -t would), then a new
 * generation of workers starts; once all of them are ready, the old ones
 * are retired (SIGUSR2): they stop accepting, their sessions go on
 * untouched for up to shutdown_timeout, then they drain as at SIGTERM.
 * SIGTERM/SIGINT:
 * every worker drains; a second signal makes them stop at once; after
 * shutdown_timeout and MASTER_KILL_GRACE_MS more, what is left is killed.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "daemon.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "notify.h"
#include "privilege.h"
#include "rdns.h"
#include "server.h"
#include "shmconn.h"
#include "store.h"
#include "tls.h"

#define MASTER_SLOTS SHMCONN_WORKERS_MAX
/* A worker that dies younger than this counts toward a crash loop. */
#define MASTER_YOUNG_S 10.0
/* The wait before the second quick restart in a row, doubled for each
 * one after, up to the maximum. */
#define MASTER_BACKOFF_FIRST_MS 500
#define MASTER_BACKOFF_MAX_MS 60000
/* After shutdown_timeout, the workers get this long to end on their own. */
#define MASTER_KILL_GRACE_MS 10000
/* /sessions waits this long for the workers' answers. */
#define MASTER_SESSIONS_WAIT_MS 2000
/* A worker's channel may hold this much before the master gives up on it. */
#define MASTER_CTL_MAX (64 * 1024 * 1024)
/* The exit status of a worker that could not start. */
#define WORKER_EXIT_INIT 3

/* A configuration generation: what its workers run with. */
struct mgen {
	unsigned id;
	unsigned refs; /* its workers alive, + 1 while current or starting */
	struct config *cfg;
	SSL_CTX *tls_server, *tls_client;
	struct sockaddr_storage backend_addr;
	socklen_t backend_addrlen;
	struct privilege priv;
	unsigned want; /* workers */
	int was_ready; /* all of them were ready once */
};

struct mworker {
	pid_t pid; /* 0: the slot is free */
	struct mgen *gen;
	struct bufferevent *ctl;
	int ready;
	int retiring; /* told to go: its end is expected */
	int termed; /* sent SIGTERM */
	int asked; /* a /sessions question is out */
	double started;
	char trap[200]; /* the seccomp trap's line, if it wrote one */
};

/* A /sessions request waiting for the workers. */
struct sessions_req {
	struct evhttp_request *req; /* NULL once its connection went */
	struct evbuffer *rows;
	unsigned long count;
	uint64_t waiting; /* the worker slots whose answers are still out */
	struct event *timer;
	struct sessions_req *next;
};

static struct {
	struct server *srv; /* the loop, the resolver, the current cfg */
	struct mgen *gen; /* the current generation */
	struct mgen *next; /* a reload's, until all its workers are ready */
	unsigned gen_ids;
	struct mworker w[MASTER_SLOTS];
	int fds[CONFIG_LISTEN_MAX];
	size_t nfds;
	struct metrics_shard *shards; /* [0] the master's, [1 + slot] the workers' */
	size_t shards_size;
	struct shmconn *conns;
	int sigfd;
	struct event *sigev;
	struct event *restart_ev; /* a restart held back by the backoff */
	struct event *kill_ev; /* the end of the grace at a stop */
	unsigned quick_deaths; /* young deaths in a row */
	double backoff_until;
	int stopping;
	int exit_status;
	struct sessions_req *sreqs;
	pid_t pid; /* the master's */
} M;

static void master_fill(void);
static void master_reap(void);
static void master_reload(void);
static void master_stop(int sig);
static void on_signal(evutil_socket_t fd, short what, void *arg);
static void on_restart(evutil_socket_t fd, short what, void *arg);
static void on_kill(evutil_socket_t fd, short what, void *arg);
static void on_ctl_read(struct bufferevent *bev, void *arg);
static void on_ctl_event(struct bufferevent *bev, short what, void *arg);
static void master_sessions(struct evhttp_request *req, void *arg);
static void sessions_answer(unsigned slot, struct evbuffer *rows, unsigned long count);
static void sessions_finish(struct sessions_req *r);
static void worker_main(struct mgen *g, unsigned slot, int ctl) __attribute__((noreturn));

static double
now_s(void)
{
	return metrics_now();
}

/* ---- generations ---- */

static struct mgen *
mgen_new(struct config *cfg, SSL_CTX *tls_server, SSL_CTX *tls_client,
    const struct sockaddr_storage *addr, socklen_t addrlen, const struct privilege *priv)
{
	struct mgen *g = calloc(1, sizeof(*g));

	if (g == NULL)
		return NULL;
	g->id = ++M.gen_ids;
	g->refs = 1;
	g->cfg = cfg;
	g->tls_server = tls_server;
	g->tls_client = tls_client;
	memcpy(&g->backend_addr, addr, addrlen);
	g->backend_addrlen = addrlen;
	g->priv = *priv;
	g->want = config_workers(cfg);
	return g;
}

static void
mgen_release(struct mgen *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	if (M.srv->cfg == g->cfg)
		M.srv->cfg = NULL;
	config_free(g->cfg);
	free(g->cfg);
	SSL_CTX_free(g->tls_server);
	SSL_CTX_free(g->tls_client);
	free(g);
}

static unsigned
alive(const struct mgen *g, int ready_only)
{
	unsigned n = 0;

	for (unsigned i = 0; i < MASTER_SLOTS; i++)
		if (M.w[i].pid != 0 && M.w[i].gen == g && !M.w[i].retiring &&
		    (!ready_only || M.w[i].ready))
			n++;
	return n;
}

static unsigned
running(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < MASTER_SLOTS; i++)
		n += M.w[i].pid != 0;
	return n;
}

/* retire - tell g's workers (all: g NULL) to go: SIGUSR2 lets their
 * sessions go on (a reload replaced them), SIGTERM drains them (a stop;
 * again: a second one, which stops them at once) */
static void
retire(const struct mgen *g, int sig, int again)
{
	for (unsigned i = 0; i < MASTER_SLOTS; i++) {
		struct mworker *w = &M.w[i];
		if (w->pid == 0 || (g != NULL && w->gen != g))
			continue;
		if (sig == SIGUSR2 ? w->retiring : (w->termed && !again))
			continue;
		w->retiring = 1;
		if (sig == SIGTERM)
			w->termed = 1;
		kill(w->pid, sig);
	}
}

/* ---- starting workers ---- */

/* spawn - fork a worker of g into slot */
static int
spawn(struct mgen *g, unsigned slot)
{
	struct mworker *w = &M.w[slot];
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		log_err(NULL, "cannot start a worker: socketpair: %s", strerror(errno));
		return -1;
	}
	memset(&M.shards[1 + slot], 0, sizeof(M.shards[0]));
	fflush(NULL);
	if ((pid = fork()) < 0) {
		log_err(NULL, "cannot start a worker: fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		worker_main(g, slot, sv[1]);
	}
	close(sv[1]);
	memset(w, 0, sizeof(*w));
	w->pid = pid;
	w->gen = g;
	w->started = now_s();
	w->ctl = bufferevent_socket_new(M.srv->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	if (w->ctl != NULL) {
		bufferevent_setcb(w->ctl, on_ctl_read, NULL, on_ctl_event, w);
		bufferevent_enable(w->ctl, EV_READ);
	} else {
		close(sv[0]);
	}
	g->refs++;
	metrics_gauge_set(G_WORKERS, running());
	log_info(NULL, "worker %u (pid %ld) started, generation %u", slot, (long)pid, g->id);
	return 0;
}

/* master_fill - start what the current generation (and a reload's) lacks,
 * unless the backoff says wait */
static void
master_fill(void)
{
	struct mgen *gens[2] = {M.gen, M.next};
	double now = now_s();

	if (M.stopping)
		return;
	for (int k = 0; k < 2; k++) {
		struct mgen *g = gens[k];
		if (g == NULL)
			continue;
		for (unsigned have = alive(g, 0); have < g->want; have++) {
			unsigned slot;
			if (now < M.backoff_until) {
				double wait = M.backoff_until - now;
				struct timeval tv = {(time_t)wait,
				    (suseconds_t)((wait - (double)(time_t)wait) * 1e6)};
				evtimer_add(M.restart_ev, &tv);
				return;
			}
			for (slot = 0; slot < MASTER_SLOTS && M.w[slot].pid != 0; slot++)
				;
			if (slot == MASTER_SLOTS) {
				log_warn(NULL,
				    "no free worker slot (%d): the next starts when an old one ends",
				    MASTER_SLOTS);
				return;
			}
			if (spawn(g, slot) != 0) {
				/* fork failed: try again after a pause */
				M.backoff_until = now + MASTER_BACKOFF_FIRST_MS / 1000.0;
				struct timeval tv = {0, MASTER_BACKOFF_FIRST_MS * 1000};
				evtimer_add(M.restart_ev, &tv);
				return;
			}
		}
	}
}

static void
on_restart(evutil_socket_t fd, short what, void *arg)
{
	master_fill();
}

/* generation_ready - every worker of g said ready */
static void
generation_ready(struct mgen *g)
{
	if (M.stopping)
		return; /* ready too late: it is draining already */
	if (g == M.next) {
		struct mgen *old = M.gen;
		unsigned draining = old != NULL ? alive(old, 0) : 0;
		M.gen = g;
		M.next = NULL;
		M.srv->cfg = g->cfg;
		if (old != NULL) {
			retire(old, SIGUSR2, 0);
			mgen_release(old);
		}
		metrics_inc(M_RELOAD_OK);
		metrics_gauge_add(G_GENERATION, 1);
		log_info(NULL,
		    "SIGHUP: %u worker(s) of generation %u serving; %u of the old one finishing "
		    "their sessions",
		    g->want, g->id, draining);
		notify_reloaded(NULL);
		return;
	}
	if (g == M.gen && !g->was_ready) {
		log_info(NULL, "portcullis %s started, backend %s:%s, %u workers%s%s%s",
		    PORTCULLIS_VERSION, g->cfg->backend.host, g->cfg->backend.port, g->want,
		    g->priv.set_ids ? ", as " : "", g->priv.set_ids ? g->priv.name : "",
		    g->cfg->seccomp ? ", seccomp on" : "");
		notify_ready(M.srv);
	}
}

/* ---- the channel ---- */

static void
on_ctl_read(struct bufferevent *bev, void *arg)
{
	struct mworker *w = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
		unsigned long n, count;
		if (strcmp(line, "ready") == 0 && !w->ready) {
			w->ready = 1;
			if (alive(w->gen, 1) >= w->gen->want) {
				generation_ready(w->gen);
				w->gen->was_ready = 1;
			}
		} else if (sscanf(line, "sessions %lu %lu", &count, &n) == 2 &&
		    n < MASTER_CTL_MAX) {
			if (evbuffer_get_length(in) < n) {
				/* the rows are not all in: read the line again later */
				evbuffer_prepend(in, "\n", 1);
				evbuffer_prepend(in, line, len);
				free(line);
				return;
			}
			struct evbuffer *rows = evbuffer_new();
			if (rows != NULL)
				evbuffer_remove_buffer(in, rows, n);
			else
				evbuffer_drain(in, n);
			w->asked = 0;
			sessions_answer((unsigned)(w - M.w), rows, count);
			if (rows != NULL)
				evbuffer_free(rows);
		} else if (strncmp(line, "seccomp: ", 9) == 0) {
			snprintf(w->trap, sizeof(w->trap), "%s", line);
		} else {
			char clean[256];
			log_warn(NULL, "worker pid %ld said something unexpected: %s", (long)w->pid,
			    log_clean(clean, sizeof(clean), line));
		}
		free(line);
	}
	if (evbuffer_get_length(in) > MASTER_CTL_MAX) {
		log_err(NULL, "worker pid %ld: its channel is too long; ending it", (long)w->pid);
		kill(w->pid, SIGKILL);
		evbuffer_drain(in, evbuffer_get_length(in));
	}
}

static void
on_ctl_event(struct bufferevent *bev, short what, void *arg)
{
	struct mworker *w = arg;

	/* EOF: the worker is ending; SIGCHLD says how. Read what is left. */
	on_ctl_read(bev, w);
	bufferevent_disable(bev, EV_READ);
}

/* ---- supervision ---- */

static void
describe_status(int st, char *buf, size_t size)
{
	if (WIFEXITED(st))
		snprintf(buf, size, "exited with status %d%s", WEXITSTATUS(st),
		    WEXITSTATUS(st) == WORKER_EXIT_INIT ? " (it could not start)" : "");
	else if (WIFSIGNALED(st))
		snprintf(buf, size, "was killed by signal %d (%s)%s", WTERMSIG(st),
		    strsignal(WTERMSIG(st)), WCOREDUMP(st) ? ", core dumped" : "");
	else
		snprintf(buf, size, "ended (status 0x%x)", st);
}

/* worker_gone - slot's worker ended with st */
static void
worker_gone(unsigned slot, int st)
{
	struct mworker *w = &M.w[slot];
	struct mgen *g = w->gen;
	double age = now_s() - w->started;
	int asked = w->retiring || M.stopping;
	int init_failed = WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_INIT;
	char how[128];

	if (w->ctl != NULL) {
		on_ctl_read(w->ctl, w);
		bufferevent_free(w->ctl);
	}
	describe_status(st, how, sizeof(how));
	/* Its connections end with it; its counters stay in the totals. */
	shmconn_forget_worker(M.conns, slot);
	metrics_fold(&M.shards[0], &M.shards[1 + slot]);
	memset(&M.shards[1 + slot], 0, sizeof(M.shards[0]));
	if (w->asked)
		sessions_answer(slot, NULL, 0);
	pid_t pid = w->pid;
	w->pid = 0;
	w->ctl = NULL;
	metrics_gauge_set(G_WORKERS, running());

	if (asked && !(WIFSIGNALED(st) && WTERMSIG(st) != SIGTERM) &&
	    !(WIFEXITED(st) && WEXITSTATUS(st) != 0)) {
		log_info(NULL, "worker %u (pid %ld) %s after %.1f s, as asked", slot, (long)pid,
		    how, age);
	} else {
		if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
			log_err(NULL,
			    "worker %u (pid %ld) %s after %.1f s: it made a system call outside the "
			    "seccomp allowlist%s%s",
			    slot, (long)pid, how, age, w->trap[0] ? ": " : "", w->trap);
		else
			log_err(
			    NULL, "worker %u (pid %ld) %s after %.1f s", slot, (long)pid, how, age);
		if (!asked)
			metrics_inc(M_WORKER_DEATHS);
	}
	w->gen = NULL;

	if (init_failed && !g->was_ready && !asked) {
		if (g == M.next) {
			/* The reload's workers cannot start: the old ones go on. */
			M.next = NULL;
			retire(g, SIGTERM, 0);
			mgen_release(g);
			metrics_inc(M_RELOAD_FAILED);
			log_err(NULL,
			    "SIGHUP: a worker of the new configuration could not start (see "
			    "above); the running workers keep serving");
			notify_reloaded(
			    "a worker of the new configuration could not start; see the log");
		} else if (g == M.gen) {
			log_err(NULL, "a worker could not start (see above): stopping");
			M.exit_status = 1;
			mgen_release(g);
			master_stop(SIGTERM);
			return;
		}
		mgen_release(g);
		return;
	}
	mgen_release(g);
	if (asked)
		return;
	/* Started again: at once after a worker that lived, later and later
	 * while they keep dying young. */
	M.quick_deaths = age < MASTER_YOUNG_S ? M.quick_deaths + 1 : 1;
	if (M.quick_deaths >= 2) {
		double ms = MASTER_BACKOFF_FIRST_MS;
		for (unsigned i = 2; i < M.quick_deaths && ms < MASTER_BACKOFF_MAX_MS; i++)
			ms *= 2;
		if (ms > MASTER_BACKOFF_MAX_MS)
			ms = MASTER_BACKOFF_MAX_MS;
		M.backoff_until = now_s() + ms / 1000.0;
		log_warn(NULL, "%u workers died young in a row: the next starts in %.1f s",
		    M.quick_deaths, ms / 1000.0);
	}
}

/* master_reap - every worker that ended */
static void
master_reap(void)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (unsigned i = 0; i < MASTER_SLOTS; i++) {
			if (M.w[i].pid == pid) {
				worker_gone(i, st);
				break;
			}
		}
	}
	if (M.stopping) {
		if (running() == 0)
			event_base_loopexit(M.srv->base, NULL);
		return;
	}
	master_fill();
}

/* ---- signals ---- */

static void
on_signal(evutil_socket_t fd, short what, void *arg)
{
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			master_reap();
			break;
		case SIGHUP:
			master_reload();
			break;
		case SIGTERM:
		case SIGINT:
			master_stop((int)si.ssi_signo);
			break;
		default:
			break;
		}
	}
}

/* master_stop - SIGTERM/SIGINT: every worker drains; a second signal: stop */
static void
master_stop(int sig)
{
	uint64_t ms;

	if (M.stopping) {
		log_info(NULL, "second signal: workers stop now");
		retire(NULL, SIGTERM, 1);
		return;
	}
	M.stopping = 1;
	M.srv->draining = 1;
	log_info(NULL, "signal %d: no new connections; %u worker(s) finishing their sessions", sig,
	    running());
	notify_stopping();
	/* Closed here, the sockets close once the workers close theirs. */
	for (size_t i = 0; i < M.nfds; i++)
		close(M.fds[i]);
	M.nfds = 0;
	if (M.next != NULL) {
		retire(M.next, SIGTERM, 0);
		mgen_release(M.next);
		M.next = NULL;
	}
	retire(NULL, SIGTERM, 0);
	if (running() == 0) {
		event_base_loopexit(M.srv->base, NULL);
		return;
	}
	ms = (M.gen != NULL ? M.gen->cfg->shutdown_timeout_ms : 30000) + MASTER_KILL_GRACE_MS;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(M.kill_ev, &tv);
}

/* on_kill - the grace is over: end what is left */
static void
on_kill(evutil_socket_t fd, short what, void *arg)
{
	for (unsigned i = 0; i < MASTER_SLOTS; i++) {
		if (M.w[i].pid == 0)
			continue;
		log_err(NULL, "worker %u (pid %ld) did not stop in time: killing it", i,
		    (long)M.w[i].pid);
		kill(M.w[i].pid, SIGKILL);
	}
}

/* master_reload - SIGHUP: check the new configuration as -t would, then
 * start its workers; the old ones drain once the new ones are ready */
static void
master_reload(void)
{
	char err[CONFIG_ERR_MAX];
	struct reload r;
	struct chain *chain = NULL;
	struct privilege priv;
	struct mgen *g;

	if (M.stopping)
		return;
	notify_reloading();
	if (M.next != NULL) {
		log_warn(NULL,
		    "SIGHUP: the workers of the last reload are not all ready: they "
		    "make way for this one");
		retire(M.next, SIGTERM, 0);
		mgen_release(M.next);
		M.next = NULL;
	}
	if (reload_read(M.gen->cfg, &r, err, sizeof(err)) != 0)
		goto fail;
	if (config_workers(r.cfg) == 1) {
		snprintf(err, sizeof(err),
		    "%s: workers = 1 is a single process, without a master: that takes a restart",
		    config_file_name());
		goto fail;
	}
	if (privilege_resolve(r.cfg, &priv, err, sizeof(err)) != 0)
		goto fail;
	/* The plugins, loaded as -t loads them: the workers load them for
	 * real. */
	store_settings(M.srv->base, r.cfg);
	if (chain_load(&chain, r.cfg, M.srv->base, M.srv->dns, 1, err, sizeof(err)) != 0)
		goto fail;
	chain_free(chain);
	store_close_all();
	if (metrics_http_prepare(M.srv, r.cfg, err, sizeof(err)) != 0)
		goto fail;
	if ((g = mgen_new(r.cfg, r.tls_server, r.tls_client, &r.addr, r.addrlen, &priv)) == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	metrics_http_commit();
	log_init(r.cfg->log, r.cfg->log_debug);
	log_set_json(r.cfg->log_json);
	M.next = g;
	log_info(NULL, "SIGHUP: %s checked; starting %u worker(s) of generation %u",
	    config_file_name(), g->want, g->id);
	master_fill();
	return;

fail:
	reload_failed(&r, err);
}

/* ---- /sessions ---- */

static void
on_sessions_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct sessions_req *r = arg;

	evbuffer_add_printf(
	    r->rows, "# %d worker(s) did not answer in time\n", __builtin_popcountll(r->waiting));
	r->waiting = 0;
	sessions_finish(r);
}

static void
on_sessions_closed(struct evhttp_connection *c, void *arg)
{
	for (struct sessions_req *r = M.sreqs; r != NULL; r = r->next)
		if (r->req != NULL && evhttp_request_get_connection(r->req) == c)
			r->req = NULL;
}

/* master_sessions - /sessions: ask every ready worker, answer when all
 * have (or after MASTER_SESSIONS_WAIT_MS) */
static void
master_sessions(struct evhttp_request *req, void *arg)
{
	struct sessions_req *r = calloc(1, sizeof(*r)), **pp;

	if (r == NULL || (r->rows = evbuffer_new()) == NULL ||
	    (r->timer = evtimer_new(M.srv->base, on_sessions_timeout, r)) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		if (r != NULL && r->rows != NULL)
			evbuffer_free(r->rows);
		free(r);
		return;
	}
	r->req = req;
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_sessions_closed, NULL);
	for (pp = &M.sreqs; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = r;
	for (unsigned i = 0; i < MASTER_SLOTS; i++) {
		struct mworker *w = &M.w[i];
		if (w->pid == 0 || !w->ready || w->ctl == NULL)
			continue;
		if (!w->asked && bufferevent_write(w->ctl, "sessions\n", 9) == 0)
			w->asked = 1;
		if (w->asked)
			r->waiting |= 1ULL << i;
	}
	if (r->waiting == 0) {
		sessions_finish(r);
		return;
	}
	struct timeval tv = {
	    MASTER_SESSIONS_WAIT_MS / 1000, (MASTER_SESSIONS_WAIT_MS % 1000) * 1000};
	evtimer_add(r->timer, &tv);
}

/* sessions_answer - the worker in slot answered (rows NULL: it died
 * first): every request waiting for it takes the rows */
static void
sessions_answer(unsigned slot, struct evbuffer *rows, unsigned long count)
{
	struct sessions_req *r, *next;
	size_t len = rows != NULL ? evbuffer_get_length(rows) : 0;
	unsigned char *data = len > 0 ? evbuffer_pullup(rows, -1) : NULL;

	for (r = M.sreqs; r != NULL; r = next) {
		next = r->next;
		if (!(r->waiting & (1ULL << slot)))
			continue;
		r->waiting &= ~(1ULL << slot);
		if (data != NULL)
			evbuffer_add(r->rows, data, len);
		r->count += count;
		if (r->waiting == 0)
			sessions_finish(r);
	}
}

/* sessions_finish - the answer, with a header over every worker's rows */
static void
sessions_finish(struct sessions_req *r)
{
	struct sessions_req **pp;
	struct evbuffer *out = evbuffer_new();

	for (pp = &M.sreqs; *pp != r; pp = &(*pp)->next)
		;
	*pp = r->next;
	if (r->req != NULL) {
		if (out == NULL) {
			evhttp_send_error(r->req, HTTP_INTERNAL, "out of memory");
		} else {
			metrics_sessions_header(out, r->count);
			evbuffer_add_buffer(out, r->rows);
			metrics_http_reply(r->req, out);
		}
	}
	if (out != NULL)
		evbuffer_free(out);
	event_free(r->timer);
	evbuffer_free(r->rows);
	free(r);
}

/* ---- the worker ---- */

/* close_others - close every descriptor but stdio and keep[] (sorted) */
static void
close_others(int *keep, size_t n)
{
	unsigned lo = 3;

	for (size_t i = 0; i < n; i++) {
		for (size_t j = i + 1; j < n; j++)
			if (keep[j] < keep[i]) {
				int t = keep[i];
				keep[i] = keep[j];
				keep[j] = t;
			}
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned)keep[i] > lo)
			close_range(lo, (unsigned)keep[i] - 1, 0);
		if ((unsigned)keep[i] + 1 > lo)
			lo = (unsigned)keep[i] + 1;
	}
	close_range(lo, ~0U, 0);
}

static struct server *worker_srv;

/* on_worker_ctl - the master asks for the sessions; EOF: it is gone */
static void
on_worker_ctl(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
		if (strcmp(line, "sessions") == 0) {
			struct evbuffer *rows = evbuffer_new();
			if (rows != NULL) {
				metrics_sessions_rows(worker_srv, rows);
				bufferevent_write(bev, "sessions ", 9);
				evbuffer_add_printf(bufferevent_get_output(bev), "%lu %zu\n",
				    worker_srv->nsessions, evbuffer_get_length(rows));
				bufferevent_write_buffer(bev, rows);
				evbuffer_free(rows);
			}
		}
		free(line);
	}
	if (evbuffer_get_length(in) > 4096)
		evbuffer_drain(in, evbuffer_get_length(in));
}

static void
on_worker_ctl_event(struct bufferevent *bev, short what, void *arg)
{
	/* The master is gone: finish what is open, then end. */
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	if (!worker_srv->draining) {
		log_err(NULL, "the master is gone: draining");
		on_stop_signal(SIGTERM, 0, worker_srv);
	}
}

/* worker_main - a worker's life, in the child of fork */
static void
worker_main(struct mgen *g, unsigned slot, int ctl)
{
	static struct server srv;
	struct bufferevent *bev;
	int keep[CONFIG_LISTEN_MAX + 1];
	size_t nkeep = 0;
	char err[CONFIG_ERR_MAX];
	sigset_t none;

	/* The master's signal handling is not ours. */
	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_IGN); /* a terminal's ^C: the master decides */
	signal(SIGHUP, SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != M.pid)
		_exit(0);
	closelog();
	for (size_t i = 0; i < M.nfds; i++)
		keep[nkeep++] = M.fds[i];
	keep[nkeep++] = ctl;
	close_others(keep, nkeep);

	metrics_use(&M.shards[1 + slot]);
	metrics_set_source(NULL, 0);
	memset(&srv, 0, sizeof(srv));
	worker_srv = &srv;
	srv.cfg = g->cfg;
	TAILQ_INIT(&srv.sessions);
	srv.backend_xclient_name = 1;
	memcpy(&srv.backend_addr, &g->backend_addr, g->backend_addrlen);
	srv.backend_addrlen = g->backend_addrlen;
	srv.tls_server = g->tls_server;
	srv.tls_client = g->tls_client;
	srv.conns = M.conns;
	srv.worker = slot;
	log_init(srv.cfg->log, srv.cfg->log_debug);
	log_set_json(srv.cfg->log_json);
	rdns_configure(srv.cfg->dns_retry_ms);
	if (serve_prepare(&srv, 0, err, sizeof(err)) != 0) {
		log_err(NULL, "worker %u: %s", slot, err);
		_exit(WORKER_EXIT_INIT);
	}
	if ((srv.gen = generation_new(srv.cfg, srv.chain)) == NULL) {
		log_err(NULL, "worker %u: out of memory", slot);
		_exit(WORKER_EXIT_INIT);
	}
	bev = bufferevent_socket_new(srv.base, ctl, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL || serve_signals(&srv, 0) != 0 ||
	    listener_start(&srv, M.fds, M.nfds) != 0) {
		log_err(NULL, "worker %u: cannot set up its loop", slot);
		_exit(WORKER_EXIT_INIT);
	}
	bufferevent_setcb(bev, on_worker_ctl, NULL, on_worker_ctl_event, NULL);
	bufferevent_enable(bev, EV_READ);
	if (serve_enter(&srv, &g->priv, ctl, err, sizeof(err)) != 0) {
		log_err(NULL, "worker %u: %s", slot, err);
		_exit(WORKER_EXIT_INIT);
	}
	bufferevent_write(bev, "ready\n", 6);

	log_attach(srv.base);
	event_base_dispatch(srv.base);
	log_attach(NULL);

	bufferevent_free(bev);
	serve_end(&srv);
	/* Nothing at exit matters to a worker but a sanitizer build's leak
	 * check, which reads /proc: a jail has none, so a jailed worker skips
	 * it (the same worker outside a jail is checked). */
	if (g->priv.chroot[0] != '\0')
		_exit(0);
	exit(0);
}

/* ---- the master ---- */

int
master_run(struct server *srv, const struct privilege *priv)
{
	sigset_t set;
	size_t keys = srv->cfg->max_connections;
	char err[CONFIG_ERR_MAX];
	int status = 1;

	memset(&M, 0, sizeof(M));
	M.srv = srv;
	M.pid = getpid();
	M.sigfd = -1;
	M.shards_size = (MASTER_SLOTS + 1) * sizeof(struct metrics_shard);
	M.shards =
	    mmap(NULL, M.shards_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (keys < SERVER_CONN_KEYS_MIN)
		keys = SERVER_CONN_KEYS_MIN;
	if (M.shards == MAP_FAILED || (M.conns = shmconn_create(keys, MASTER_SLOTS)) == NULL) {
		log_err(NULL, "cannot map the memory the workers share: %s", strerror(errno));
		if (M.shards != MAP_FAILED)
			munmap(M.shards, M.shards_size);
		server_free(srv);
		return 1;
	}
	metrics_use(&M.shards[0]);
	metrics_set_source(M.shards, MASTER_SLOTS + 1);
	srv->conns = M.conns;
	if ((M.gen = mgen_new(srv->cfg, srv->tls_server, srv->tls_client, &srv->backend_addr,
	         srv->backend_addrlen, priv)) == NULL) {
		log_err(NULL, "out of memory");
		goto out;
	}
	srv->tls_server = srv->tls_client = NULL; /* the generation's now */

	/* Signals through a descriptor, blocked before any worker exists. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0 ||
	    (M.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
	    (M.sigev = event_new(srv->base, M.sigfd, EV_READ | EV_PERSIST, on_signal, NULL)) ==
	        NULL ||
	    event_add(M.sigev, NULL) != 0 ||
	    (M.restart_ev = evtimer_new(srv->base, on_restart, NULL)) == NULL ||
	    (M.kill_ev = evtimer_new(srv->base, on_kill, NULL)) == NULL) {
		log_err(NULL, "cannot set up the master's signals: %s", strerror(errno));
		goto out;
	}
	err[0] = '\0';
	if (listener_bind(srv->cfg, M.fds, &M.nfds) != 0)
		goto out;
	if (metrics_http_start(srv, err, sizeof(err)) != 0) {
		log_err(NULL, "%s", err);
		goto out;
	}
	metrics_http_sessions_hook(master_sessions, NULL);
	metrics_gauge_set(G_GENERATION, 1);
	master_fill();

	/* A fork writes what waits first (log.c), so a worker never
	 * writes the master's lines again. */
	log_attach(srv->base);
	event_base_dispatch(srv->base);
	log_attach(NULL);

	status = M.exit_status;
	log_info(NULL, "stopped");
out:
	notify_end();
	metrics_http_stop();
	for (size_t i = 0; i < M.nfds; i++)
		close(M.fds[i]);
	while (M.sreqs != NULL) {
		M.sreqs->req = NULL;
		sessions_finish(M.sreqs);
	}
	for (unsigned i = 0; i < MASTER_SLOTS; i++)
		if (M.w[i].ctl != NULL)
			bufferevent_free(M.w[i].ctl);
	if (M.sigev != NULL)
		event_free(M.sigev);
	if (M.restart_ev != NULL)
		event_free(M.restart_ev);
	if (M.kill_ev != NULL)
		event_free(M.kill_ev);
	if (M.sigfd >= 0)
		close(M.sigfd);
	if (M.next != NULL)
		mgen_release(M.next);
	if (M.gen != NULL)
		mgen_release(M.gen);
	else {
		config_free(srv->cfg);
		free(srv->cfg);
	}
	srv->cfg = NULL;
	srv->conns = NULL;
	metrics_use(NULL);
	metrics_set_source(NULL, 0);
	shmconn_destroy(M.conns);
	munmap(M.shards, M.shards_size);
	server_free(srv);
	return status;
}
