/*
 * privilege.h - what a worker drops to (issue 18): user =, group = and
 * chroot =. The names are looked up once, by the process that starts
 * (a jail has no /etc/passwd, and a worker's seccomp filter does not let
 * it read one anyway); the drop happens in each worker after it has loaded
 * its plugins and before it reads a client byte.
 */
#ifndef PORTCULLIS_PRIVILEGE_H
#define PORTCULLIS_PRIVILEGE_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

#define PRIVILEGE_GROUPS_MAX 64

struct privilege {
	int set_ids; /* user or group given: change ids */
	uid_t uid; /* user's, or the current one */
	gid_t gid; /* group's, or user's primary group */
	gid_t groups[PRIVILEGE_GROUPS_MAX]; /* user's supplementary groups */
	int ngroups;
	char name[64]; /* "user:group", for the log */
	char chroot[1024]; /* "" : none */
};

/* privilege_resolve - look up cfg's user and group into p; 0, or -1 with
 * the reason in err (an unknown name; a user set but not started as root
 * or as that user). */
int privilege_resolve(const struct config *cfg, struct privilege *p, char *err, size_t errlen);

/* privilege_drop - enter the jail, then set the groups, the group and the
 * user, and check that root cannot be taken back. 0, or -1 with err. */
int privilege_drop(const struct privilege *p, char *err, size_t errlen);

#endif
