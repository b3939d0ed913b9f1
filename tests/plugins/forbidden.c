/*
 * forbidden.c - a test plugin that does what a worker must not, on request.
 *
 * Exports portcullis_plugin. For the workers' tests (issue 18). Keys:
 *
 *	execve_helo = NAME     at a HELO/EHLO of exactly NAME, execve a program
 *	                       that does not exist: under the seccomp filter the
 *	                       process dies of SIGSYS; without it execve fails
 *	                       with ENOENT, which is logged, and the session
 *	                       goes on
 *	fail_in_worker = yes   init fails unless it is a check (portcullis -t,
 *	                       and the master's check before it forks): a
 *	                       worker that cannot start
 *	udp_port = PORT        init (not a check) opens a UDP socket connected
 *	                       to 127.0.0.1:PORT; every HELO sends "PID NAME"
 *	                       on it, so a test sees that a socket made in init
 *	                       works in the process that serves
 *
 * Every HELO is logged with the pid that saw it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <portcullis/plugin.h>

struct fb {
	const struct pc_host *host;
	struct pc_instance *self;
	char *execve_helo;
	int udp; /* -1: none */
};

static int fb_init(struct pc_init *, void **);
static void fb_fini(void *);
static int fb_helo(void *, struct pc_call *, struct pc_verdict *);

static const char *const fb_keys[] = {
    "execve_helo",
    "fail_in_worker",
    "udp_port",
    NULL,
};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "forbidden",
    .version = "1.0",
    .keys = fb_keys,
    .init = fb_init,
    .fini = fb_fini,
    .helo = fb_helo,
};

/* fb_udp - a UDP socket connected to 127.0.0.1:port, or -1 */
static int
fb_udp(long port, char *err, size_t errlen)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* fb_init - read the keys; fail in a worker if asked */
static int
fb_init(struct pc_init *in, void **instance)
{
	const struct pc_option *o;
	struct fb *fb;
	long port = 0;
	int fail = 0;

	*instance = NULL;
	if ((fb = calloc(1, sizeof(*fb))) == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	fb->host = in->host;
	fb->self = in->self;
	fb->udp = -1;
	for (o = in->options; o != NULL; o = o->next) {
		if (strcmp(o->key, "execve_helo") == 0) {
			free(fb->execve_helo);
			fb->execve_helo = strdup(o->value);
		} else if (strcmp(o->key, "fail_in_worker") == 0) {
			fail = strcmp(o->value, "yes") == 0;
		} else if (strcmp(o->key, "udp_port") == 0) {
			port = strtol(o->value, NULL, 10);
			if (port <= 0 || port > 65535) {
				snprintf(in->err, in->errlen, "udp_port: bad value");
				in->err_line = o->line;
				fb_fini(fb);
				return -1;
			}
		}
	}
	if (fail && !in->check_only) {
		snprintf(in->err, in->errlen, "this plugin refuses to start outside a check");
		fb_fini(fb);
		return -1;
	}
	if (port != 0 && !in->check_only && (fb->udp = fb_udp(port, in->err, in->errlen)) < 0) {
		fb_fini(fb);
		return -1;
	}
	*instance = fb;
	return 0;
}

static void
fb_fini(void *instance)
{
	struct fb *fb = instance;

	if (fb == NULL)
		return;
	if (fb->udp >= 0)
		close(fb->udp);
	free(fb->execve_helo);
	free(fb);
}

/* fb_helo - log, send, and execve when asked */
static int
fb_helo(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct fb *fb = instance;
	const char *helo = fb->host->get(call, PC_HELO);
	char line[512];

	if (helo == NULL)
		helo = "";
	fb->host->log(
	    fb->self, call, PC_LOG_INFO, "forbidden: helo %s in pid %ld", helo, (long)getpid());
	if (fb->udp >= 0) {
		int n = snprintf(line, sizeof(line), "%ld %s", (long)getpid(), helo);
		if (send(fb->udp, line, (size_t)n, 0) < 0)
			fb->host->log(
			    fb->self, call, PC_LOG_WARN, "forbidden: send: %s", strerror(errno));
	}
	if (fb->execve_helo != NULL && strcmp(helo, fb->execve_helo) == 0) {
		char *argv[] = {"portcullis-forbidden", NULL};
		char *envp[] = {NULL};
		execve("/nonexistent/portcullis-forbidden", argv, envp);
		fb->host->log(
		    fb->self, call, PC_LOG_INFO, "forbidden: execve failed: %s", strerror(errno));
	}
	v->action = PC_CONTINUE;
	return PC_HOOK_DONE;
}
