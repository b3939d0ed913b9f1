/*
 * test_sandbox.c - unit tests for proxy/sandbox.c, the worker's seccomp
 * filter. Each case runs in a child process (a filter cannot be taken
 * back): what a worker does still works under it (a socket pair, a file
 * written, read and unlinked, memory, time, randomness, a pipe); a call
 * outside the list (execve, mount) kills the child with SIGSYS, after one
 * line on stderr naming the call.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox.h"

/* in_child - run fn in a child under the filter; its wait status. The
 * child's stderr goes to errfile. */
static int
in_child(int (*fn)(void), const char *errfile)
{
	pid_t pid = fork();
	int st = 0;

	assert_true(pid >= 0);
	if (pid == 0) {
		char err[256];
		int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		if (sandbox_enter(-1, err, sizeof(err)) != 0) {
			fprintf(stderr, "%s\n", err);
			_exit(99);
		}
		_exit(fn());
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static int
worker_things(void)
{
	int sv[2];
	char buf[64], path[] = "/tmp/test_sandbox.XXXXXX";
	struct timespec ts;
	void *p;
	int fd;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || write(sv[0], "hi", 2) != 2 ||
	    read(sv[1], buf, 2) != 2)
		return 1;
	if ((fd = mkstemp(path)) < 0 || write(fd, "spool", 5) != 5 || lseek(fd, 0, SEEK_SET) != 0 ||
	    read(fd, buf, 5) != 5 || unlink(path) != 0 || close(fd) != 0)
		return 2;
	if ((p = malloc(1 << 20)) == NULL)
		return 3;
	memset(p, 1, 1 << 20);
	free(p);
	p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || munmap(p, 1 << 16) != 0)
		return 4;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0 || getrandom(buf, 16, 0) != 16)
		return 5;
	int inet = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (inet < 0 || close(inet) != 0)
		return 6;
	return 0;
}

static void
test_allowed(void **state)
{
	int st = in_child(worker_things, "/tmp/test_sandbox.err");

	(void)state;
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	unlink("/tmp/test_sandbox.err");
}

static int
run_a_program(void)
{
	char *argv[] = {"/bin/true", NULL}, *envp[] = {NULL};
	execve("/bin/true", argv, envp);
	return 42; /* not reached: the filter kills first */
}

static int
mount_something(void)
{
	/* Not even a valid mount: the filter decides before the kernel looks. */
	syscall(SYS_mount, "none", "/nonexistent", "tmpfs", 0UL, NULL);
	return 42;
}

static void
check_killed(int (*fn)(void), const char *name)
{
	const char *errfile = "/tmp/test_sandbox.err";
	int st = in_child(fn, errfile);
	char text[512] = "", want[64];
	FILE *f = fopen(errfile, "r");

	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
	assert_non_null(f);
	text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
	fclose(f);
	unlink(errfile);
	snprintf(want, sizeof(want), "seccomp: system call %s (", name);
	assert_non_null(strstr(text, want));
	assert_non_null(strstr(text, ") is not allowed (seccomp = no lifts the filter)\n"));
}

static void
test_execve_killed(void **state)
{
	(void)state;
	check_killed(run_a_program, "execve");
}

static void
test_mount_killed(void **state)
{
	(void)state;
	check_killed(mount_something, "mount");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_allowed),
	    cmocka_unit_test(test_execve_killed),
	    cmocka_unit_test(test_mount_killed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
