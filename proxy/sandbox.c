/*
 * sandbox.c - the worker's seccomp allowlist (sandbox.h).
 *
 * The list is what a worker's loop, its peers and its plugins use: the
 * event loop (epoll), sockets (clients, the backend, DNS over UDP and TCP,
 * milters and scanners over TCP or unix sockets, syslog), the spool (files
 * in spool_dir, unlinked), LMDB (mmap, pread/pwrite, fcntl locks, msync),
 * memory (brk, mmap), time, randomness, signals, and futex for the shared
 * counts' lock. Not in it: execve and the other ways to run a program,
 * ptrace, mount, module loading, kexec, bpf, keyctl, personality... A
 * plugin that needs more says so in its documentation; seccomp = no turns
 * the filter off to find out.
 *
 * The single process (workers = 1) runs under the same filter, so the
 * whole integration suite runs with it on; it reads its configuration,
 * certificates, scripts and plugins again at SIGHUP, which the list allows
 * (openat, mmap, rename of the reload state file, mkdir of a new store).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <seccomp.h>

#include "log.h"
#include "sandbox.h"

static const char *const allowed[] = {
    /* the loop, signals, time, the process */
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "eventfd2",
    "pipe2",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "restart_syscall",
    "clock_gettime",
    "clock_nanosleep",
    "gettimeofday",
    "nanosleep",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "exit",
    "exit_group",
    "sched_yield",
    "futex",
    "set_robust_list",
    "get_robust_list",
    "getrandom",
    "uname",
    "prlimit64",
    "getrlimit",
    "tgkill",
    "rseq",
    /* memory */
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "msync",
    /* descriptors, files (spool, LMDB, lists a plugin reloads) */
    "read",
    "readv",
    "write",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "sendfile", /* a spilled spool file to a plain backend (conn.c) */
    "close",
    "openat",
    "newfstatat",
    "fstat",
    "statx",
    "lseek",
    "fcntl",
    "ioctl",
    "dup",
    "dup3",
    "ftruncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "unlink",
    "unlinkat",
    "flock",
    "getdents64",
    "readlink",
    "readlinkat",
    "access",
    "faccessat",
    "faccessat2",
    "umask",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "fchmod",
    "fstatfs",
    "statfs",
    "getcwd",
    "sysinfo",
    "sched_getaffinity",
    /* sockets */
    "socket",
    "connect",
    "accept4",
    "accept",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "socketpair",
};

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer checks at exit by stopping the world: a tracer thread
 * (clone) attaches to every thread (ptrace) and waits for it, and reads
 * /proc with the old open and getdents. Only the
 * sanitizer build allows those, so that make test can run under the
 * filter; the daemon a site runs never does. */
static const char *const allowed_sanitizer[] = {
    "clone",
    "clone3",
    "ptrace",
    "wait4",
    "waitid",
    "prctl",
    "kill",
    "tkill",
    "process_vm_readv",
    "open",
    "getdents",
};
#endif

/* Where the trap handler also writes its line (sandbox_enter's report_fd). */
static int report_fd = -1;

/* The names of the system calls, resolved before the filter is loaded:
 * the handler may not allocate. */
#define SANDBOX_NAMES 512
static char *names[SANDBOX_NAMES];

/* on_sigsys - a call outside the list: say which, then die of SIGSYS */
static void
on_sigsys(int sig, siginfo_t *si, void *ctx)
{
	char line[160], num[16];
	int n = si->si_syscall, k = 0;
	size_t len = 0;
	sigset_t set;

	(void)ctx;
	const char *name = n >= 0 && n < SANDBOX_NAMES ? names[n] : NULL;
	if (n < 0)
		n = -n;
	do
		num[k++] = (char)('0' + n % 10);
	while ((n /= 10) > 0 && k < (int)sizeof(num));
	memcpy(line, "seccomp: system call ", 21);
	len = 21;
	if (name != NULL) {
		size_t l = strnlen(name, 40);
		memcpy(line + len, name, l);
		len += l;
		line[len++] = ' ';
	}
	line[len++] = '(';
	while (k > 0)
		line[len++] = num[--k];
	static const char tail[] = ") is not allowed (seccomp = no lifts the filter)\n";
	memcpy(line + len, tail, sizeof(tail) - 1);
	len += sizeof(tail) - 1;
	/* The lines of this loop pass first, in their order. */
	log_flush_signal();
	if (write(STDERR_FILENO, line, len) < 0) {
		/* nothing more to do */
	}
	if (report_fd >= 0 && write(report_fd, line, len) < 0) {
		/* the master sees the signal anyway */
	}
	/* Die of the signal itself, so the master can tell. */
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	_exit(128 + sig);
}

/* allow - add the calls of list (those this architecture has) to ctx */
static int
allow(scmp_filter_ctx ctx, const char *const *list, size_t n, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		int nr = seccomp_syscall_resolve_name(list[i]), rc;
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this architecture (e.g. an old name) */
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) != 0) {
			snprintf(err, errlen, "seccomp: allowing %s: %s", list[i], strerror(-rc));
			return -1;
		}
	}
	return 0;
}

int
sandbox_enter(int report, char *err, size_t errlen)
{
	struct sigaction sa;
	scmp_filter_ctx ctx;
	int rc;

	for (int i = 0; i < SANDBOX_NAMES; i++)
		if (names[i] == NULL)
			names[i] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, i);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) != 0) {
		snprintf(err, errlen, "seccomp: sigaction: %s", strerror(errno));
		return -1;
	}
	if ((ctx = seccomp_init(SCMP_ACT_TRAP)) == NULL) {
		snprintf(err, errlen, "seccomp: cannot create a filter");
		return -1;
	}
	/* A binary tree of the calls rather than a list: every system call
	 * the proxy makes passes the filter, so its length is paid each time.
	 * An older libseccomp without the attribute keeps the list. */
	(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (allow(ctx, allowed, sizeof(allowed) / sizeof(allowed[0]), err, errlen) != 0
#if defined(__SANITIZE_ADDRESS__)
	    || allow(ctx, allowed_sanitizer,
	           sizeof(allowed_sanitizer) / sizeof(allowed_sanitizer[0]), err, errlen) != 0
#endif
	) {
		seccomp_release(ctx);
		return -1;
	}
	/* no_new_privs comes with seccomp_load (SCMP_FLTATR_CTL_NNP, on by
	 * default): set-uid programs could not be gained anyway. */
	if ((rc = seccomp_load(ctx)) != 0) {
		snprintf(err, errlen, "seccomp: loading the filter: %s", strerror(-rc));
		seccomp_release(ctx);
		return -1;
	}
	seccomp_release(ctx);
	report_fd = report;
	return 0;
}
