/*
 * listener.h - the listening sockets (listener.c): accept, the connection
 * limits, the PROXY header; each accepted client goes to session_new.
 */
#ifndef PORTCULLIS_LISTENER_H
#define PORTCULLIS_LISTENER_H

#include <stddef.h>

struct server;
struct config;

/* listener_bind - a listening socket (non-blocking, close-on-exec) for
 * each listen address of cfg into fds (CONFIG_LISTEN_MAX of them), *nfds
 * set; PC_OK, or PC_ERROR (logged) with none left open. */
int listener_bind(const struct config *cfg, int *fds, size_t *nfds);
/* listener_start - accept on fds, listener_bind's for srv->cfg; they are
 * closed by listener_stop. PC_OK or PC_ERROR (logged). */
int listener_start(struct server *srv, const int *fds, size_t nfds);
/* listener_stop - close every listening socket and every client still
 * sending its PROXY header (SIGTERM). */
void listener_stop(void);

#endif
