/*
 * privilege.c - looking up user and group, and dropping to them
 * (privilege.h).
 *
 * The order is the usual one: chroot while still root (chdir first, so no
 * directory outside stays open as the working one), then the supplementary
 * groups and the group, and the user last, since after setuid nothing else
 * may be changed. Then a check that the drop holds: the ids read back as
 * asked, and setuid(0) fails.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "privilege.h"

int
privilege_resolve(const struct config *cfg, struct privilege *p, char *err, size_t errlen)
{
	const char *file = cfg->file ? cfg->file : "configuration";

	memset(p, 0, sizeof(*p));
	p->uid = geteuid();
	p->gid = getegid();
	snprintf(p->chroot, sizeof(p->chroot), "%s", cfg->chroot);
	if (cfg->user[0] == '\0' && cfg->group[0] == '\0')
		return 0;
	p->set_ids = 1;
	if (cfg->user[0] != '\0') {
		struct passwd *pw;
		int n = PRIVILEGE_GROUPS_MAX;

		errno = 0;
		if ((pw = getpwnam(cfg->user)) == NULL) {
			snprintf(err, errlen, "%s: user %s: %s", file, cfg->user,
			    errno ? strerror(errno) : "no such user");
			return -1;
		}
		p->uid = pw->pw_uid;
		p->gid = pw->pw_gid;
		if (getgrouplist(cfg->user, pw->pw_gid, p->groups, &n) < 0) {
			snprintf(err, errlen, "%s: user %s is in more than %d groups", file,
			    cfg->user, PRIVILEGE_GROUPS_MAX);
			return -1;
		}
		p->ngroups = n;
	}
	if (cfg->group[0] != '\0') {
		struct group *gr;

		errno = 0;
		if ((gr = getgrnam(cfg->group)) == NULL) {
			snprintf(err, errlen, "%s: group %s: %s", file, cfg->group,
			    errno ? strerror(errno) : "no such group");
			return -1;
		}
		p->gid = gr->gr_gid;
		/* The group named replaces the user's own ones. */
		p->groups[0] = gr->gr_gid;
		p->ngroups = 1;
	}
	if (p->ngroups == 0) {
		p->groups[0] = p->gid;
		p->ngroups = 1;
	}
	if (cfg->user[0] != '\0' && cfg->group[0] != '\0')
		snprintf(p->name, sizeof(p->name), "%.30s:%.30s", cfg->user, cfg->group);
	else if (cfg->user[0] != '\0')
		snprintf(p->name, sizeof(p->name), "%.60s", cfg->user);
	else
		snprintf(p->name, sizeof(p->name), "group %.50s", cfg->group);
	/* Started as that very user (systemd's User=, DynamicUser=): nothing
	 * to change. Otherwise only root can. */
	if (geteuid() != 0 && (geteuid() != p->uid || getegid() != p->gid)) {
		snprintf(err, errlen,
		    "%s: user/group %s: started as uid %ld, which cannot change to uid %ld gid %ld "
		    "(start as root, or leave user and group unset)",
		    file, p->name, (long)geteuid(), (long)p->uid, (long)p->gid);
		return -1;
	}
	return 0;
}

int
privilege_drop(const struct privilege *p, char *err, size_t errlen)
{
	if (p->chroot[0] != '\0') {
		if (chdir(p->chroot) != 0 || chroot(".") != 0 || chdir("/") != 0) {
			snprintf(err, errlen, "chroot %s: %s", p->chroot, strerror(errno));
			return -1;
		}
	}
	if (!p->set_ids || (geteuid() == p->uid && getegid() == p->gid && geteuid() != 0))
		return 0;
	if (setgroups((size_t)p->ngroups, p->groups) != 0 || setgid(p->gid) != 0 ||
	    setuid(p->uid) != 0) {
		snprintf(err, errlen, "dropping to %s (uid %ld gid %ld): %s", p->name, (long)p->uid,
		    (long)p->gid, strerror(errno));
		return -1;
	}
	if (getuid() != p->uid || geteuid() != p->uid || getgid() != p->gid ||
	    getegid() != p->gid || (p->uid != 0 && setuid(0) == 0)) {
		snprintf(err, errlen, "dropping to %s: the ids did not change as asked", p->name);
		return -1;
	}
	return 0;
}
