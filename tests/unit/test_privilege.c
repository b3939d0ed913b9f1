/*
 * test_privilege.c - unit tests for proxy/privilege.c: looking up user and
 * group, and the drop itself (in children, since it cannot be undone).
 *
 * The names: a known user with its primary group, a group that replaces
 * it, an unknown user or group refused with the name in the message, no
 * names meaning no change. The drop, when run as root: the four ids read
 * back as asked and root cannot be taken back; a chroot leaves the child
 * in the jail's root.
 */
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "privilege.h"

static void
cfg_with(struct config *cfg, const char *user, const char *group, const char *jail)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->user, sizeof(cfg->user), "%s", user);
	snprintf(cfg->group, sizeof(cfg->group), "%s", group);
	snprintf(cfg->chroot, sizeof(cfg->chroot), "%s", jail);
}

static void
test_no_names(void **state)
{
	struct config cfg;
	struct privilege p;
	char err[256] = "";

	(void)state;
	cfg_with(&cfg, "", "", "");
	assert_int_equal(privilege_resolve(&cfg, &p, err, sizeof(err)), 0);
	assert_int_equal(p.set_ids, 0);
	assert_int_equal(p.uid, geteuid());
	/* nothing to drop: a no-op that succeeds */
	assert_int_equal(privilege_drop(&p, err, sizeof(err)), 0);
}

static void
test_known_user(void **state)
{
	struct config cfg;
	struct privilege p;
	struct passwd *pw = getpwnam("nobody");
	char err[256] = "";

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_non_null(pw);
	cfg_with(&cfg, "nobody", "", "");
	assert_int_equal(privilege_resolve(&cfg, &p, err, sizeof(err)), 0);
	assert_int_equal(p.set_ids, 1);
	assert_int_equal(p.uid, pw->pw_uid);
	assert_int_equal(p.gid, pw->pw_gid);
	assert_true(p.ngroups >= 1);
	assert_string_equal(p.name, "nobody");
}

static void
test_group_replaces(void **state)
{
	struct config cfg;
	struct privilege p;
	struct group *gr = getgrnam("daemon");
	char err[256] = "";

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_non_null(gr);
	cfg_with(&cfg, "nobody", "daemon", "");
	assert_int_equal(privilege_resolve(&cfg, &p, err, sizeof(err)), 0);
	assert_int_equal(p.gid, gr->gr_gid);
	assert_int_equal(p.ngroups, 1);
	assert_int_equal(p.groups[0], gr->gr_gid);
}

static void
test_unknown_names(void **state)
{
	struct config cfg;
	struct privilege p;
	char err[256] = "";

	(void)state;
	cfg_with(&cfg, "no-such-user-pc18", "", "");
	assert_int_equal(privilege_resolve(&cfg, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "user no-such-user-pc18"));
	cfg_with(&cfg, "", "no-such-group-pc18", "");
	err[0] = '\0';
	assert_int_equal(privilege_resolve(&cfg, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "group no-such-group-pc18"));
}

/* drop_in_child - drop in a child and report through its exit status:
 * 0 when every check in it held */
static int
drop_in_child(const struct privilege *p, const char *jail)
{
	pid_t pid = fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0) {
		char err[256], cwd[64];
		if (privilege_drop(p, err, sizeof(err)) != 0)
			_exit(10);
		if (getuid() != p->uid || geteuid() != p->uid || getgid() != p->gid ||
		    getegid() != p->gid)
			_exit(11);
		if (setuid(0) == 0)
			_exit(12); /* root came back */
		if (jail != NULL) {
			struct stat sb;
			if (getcwd(cwd, sizeof(cwd)) == NULL || strcmp(cwd, "/") != 0)
				_exit(13);
			/* the marker made inside the jail is at its root now */
			if (stat("/marker", &sb) != 0)
				_exit(14);
		}
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void
test_drop(void **state)
{
	struct config cfg;
	struct privilege p;
	char err[256] = "";

	(void)state;
	if (geteuid() != 0)
		skip();
	cfg_with(&cfg, "nobody", "", "");
	assert_int_equal(privilege_resolve(&cfg, &p, err, sizeof(err)), 0);
	assert_int_equal(drop_in_child(&p, NULL), 0);
}

static void
test_drop_chroot(void **state)
{
	struct config cfg;
	struct privilege p;
	char jail[] = "/tmp/test_privilege.XXXXXX", marker[64];
	char err[256] = "";
	FILE *f;

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_non_null(mkdtemp(jail));
	chmod(jail, 0755); /* the user must be able to look inside */
	snprintf(marker, sizeof(marker), "%s/marker", jail);
	assert_non_null(f = fopen(marker, "w"));
	fclose(f);
	cfg_with(&cfg, "nobody", "", jail);
	assert_int_equal(privilege_resolve(&cfg, &p, err, sizeof(err)), 0);
	assert_int_equal(drop_in_child(&p, jail), 0);
	unlink(marker);
	rmdir(jail);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_names),
	    cmocka_unit_test(test_known_user),
	    cmocka_unit_test(test_group_replaces),
	    cmocka_unit_test(test_unknown_names),
	    cmocka_unit_test(test_drop),
	    cmocka_unit_test(test_drop_chroot),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
