/*
 * sandbox.h - a worker's seccomp filter (issue 18, item 3): once it is set
 * up (listeners inherited, plugins loaded, privileges dropped), a worker
 * may make only the system calls an SMTP proxy needs. This is our answer to
 * OpenSMTPD's pledge(2). libseccomp builds the filter.
 *
 * A call outside the list is trapped: the handler writes one line naming
 * the call to stderr (async-signal-safe), then the process dies of SIGSYS,
 * which the master logs before it starts a new worker.
 */
#ifndef PORTCULLIS_SANDBOX_H
#define PORTCULLIS_SANDBOX_H

#include <stddef.h>

/* sandbox_enter - install the filter (with no_new_privs) for this process
 * and its threads. A trapped call's line also goes to report (a worker's
 * channel to the master; -1: stderr only). 0, or -1 with the reason in err. */
int sandbox_enter(int report, char *err, size_t errlen);

#endif
