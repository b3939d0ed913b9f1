/*
 * listener.h - the listening sockets (listener.c): accept, the connection
 * limits, the PROXY header; each accepted client goes to session_new.
 */
#ifndef PORTCULLIS_LISTENER_H
#define PORTCULLIS_LISTENER_H

struct server;

/* listener_start - bind every listen address of srv->cfg; PC_OK or
 * PC_ERROR (logged). */
int listener_start(struct server *srv);
/* listener_stop - close every listening socket and every client still
 * sending its PROXY header (SIGTERM). */
void listener_stop(void);

#endif
