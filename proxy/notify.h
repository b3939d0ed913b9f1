/*
 * notify.h - telling the service manager how the daemon is (notify.c):
 * sd_notify(3) READY/RELOADING/STOPPING/STATUS, and the reload state file
 * that portcullis -R reads to learn how a SIGHUP went.
 */
#ifndef PORTCULLIS_NOTIFY_H
#define PORTCULLIS_NOTIFY_H

struct server;

/* The directory of the state file when $RUNTIME_DIRECTORY is not set:
 * systemd's RuntimeDirectory=portcullis (etc/portcullis.service). */
#define NOTIFY_RUNDIR "/run/portcullis"
/* The state file in that directory, replaced whole (rename) at each
 * change: "pid=", "reloads=", "result=" (started, ok, failed), "error=". */
#define NOTIFY_STATE_FILE "state"
/* How long portcullis -R waits for the outcome of its SIGHUP: about what
 * systemd gives ExecReload= (TimeoutStartSec=, 90s by default). */
#define NOTIFY_RELOAD_WAIT_MS 80000

/* notify_ready - listeners bound, serving: READY=1, MAINPID, STATUS;
 * the state file says "started"; STATUS= follows the session count. */
void notify_ready(struct server *srv);
/* notify_reloading - a SIGHUP is being handled: RELOADING=1. */
void notify_reloading(void);
/* notify_reloaded - the SIGHUP is handled: READY=1 whatever the outcome;
 * error NULL for a good reload, else why it failed (STATUS= and the state
 * file say so). */
void notify_reloaded(const char *error);
/* notify_stopping - SIGTERM/SIGINT: STOPPING=1. */
void notify_stopping(void);
/* notify_end - the daemon stops: the timer goes, the state file too. */
void notify_end(void);
/* notify_reload_client - portcullis -R: SIGHUP to the daemon ($MAINPID, or
 * the pid of the state file) and wait for the outcome; the exit status:
 * 0 for a good reload, 1 with the reason on stderr otherwise. */
int notify_reload_client(void);

#endif
