/*
 * server.c - what the whole daemon shares: configuration generations, the
 * per-client connection counts, session ids, and the end of the server.
 *
 * Exports generation_new, generation_release, server_ip_init,
 * server_ip_acquire, server_ip_release, server_session_id,
 * server_session_gone and server_free. A client is counted under its netkey
 * (netkey.c): its IPv4 address, or its IPv6 network of client_ipv6_prefix
 * bits.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "log.h"
#include "server.h"
#include "store.h"
#include <stdio.h>

/* generation_new - the server's reference to a configuration and its chain */
struct generation *
generation_new(struct config *cfg, struct chain *chain)
{
	struct generation *g = calloc(1, sizeof(*g));

	if (g == NULL)
		return NULL;
	g->refs = 1;
	g->cfg = cfg;
	g->chain = chain;
	chain->gens++;
	return g;
}

/* generation_release - one holder fewer; the last frees it (and the chain,
 * unless a newer generation took it over) */
void
generation_release(struct generation *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	if (--g->chain->gens == 0)
		chain_free(g->chain);
	config_free(g->cfg);
	free(g->cfg);
	free(g);
}

/* server_ip_init - the connection counts: one table for this process
 * (workers = 1), or the one the master shares with its workers (already
 * set, with srv->worker) */
int
server_ip_init(struct server *srv)
{
	size_t keys = srv->cfg->max_connections;

	if (srv->conns != NULL)
		return PC_OK;
	if (keys < SERVER_CONN_KEYS_MIN)
		keys = SERVER_CONN_KEYS_MIN;
	if ((srv->conns = shmconn_create(keys, 1)) == NULL)
		return PC_ERROR;
	srv->conns_own = 1;
	srv->worker = 0;
	return PC_OK;
}

/*
 * server_ip_acquire - count one more connection from ip (full address) under
 * its key, which goes into key (keylen bytes) for server_ip_release. The
 * caller keeps the key rather than the address: a SIGHUP may change
 * client_ipv6_prefix before the session ends. ip NULL counts a client whose
 * PROXY header is not in yet, under SERVER_KEY_WAITING, for the total only.
 */
enum shmconn_result
server_ip_acquire(struct server *srv, const char *ip, char *key, size_t keylen)
{
	const struct config *cfg = srv->cfg;

	if (ip == NULL) {
		snprintf(key, keylen, "%s", SERVER_KEY_WAITING);
		return shmconn_acquire(
		    srv->conns, srv->worker, key, cfg->max_connections, UINT64_MAX);
	}
	netkey_client(ip, (unsigned)cfg->client_ipv6_prefix, key, keylen);
	/* The per-address limit stops one host taking every slot. */
	return shmconn_acquire(
	    srv->conns, srv->worker, key, cfg->max_connections, cfg->max_connections_per_ip);
}

/* server_ip_release - one connection counted under key (server_ip_acquire's) ended */
void
server_ip_release(struct server *srv, const char *key)
{
	if (key[0] != '\0')
		shmconn_release(srv->conns, srv->worker, key);
}

/* server_session_id - ids are unique per run (sid_base is random) */
void
server_session_id(struct server *srv, char id[16])
{
	snprintf(id, 16, "%010llX", (srv->sid_base + srv->sid_next++) & 0xFFFFFFFFFFULL);
}

/* server_session_gone - a session (or a client waiting for its PROXY
 * header) is over */
void
server_session_gone(struct server *srv)
{
	if ((srv->draining || srv->retiring) && srv->nsessions == 0 && srv->nwaiting == 0)
		event_base_loopexit(srv->base, NULL);
}

/* server_free - the configuration, the resolver and the loop */
void
server_free(struct server *srv)
{
	if (srv->conns_own)
		shmconn_destroy(srv->conns);
	srv->conns = NULL;
	if (srv->gen != NULL) {
		generation_release(srv->gen);
	} else {
		chain_free(srv->chain);
		if (srv->cfg != NULL) {
			config_free(srv->cfg);
			free(srv->cfg);
		}
	}
	SSL_CTX_free(srv->tls_server);
	SSL_CTX_free(srv->tls_client);
	/* Every instance let go of its stores above; what is left (none,
	 * unless a plugin leaked one) goes before the loop it uses. */
	store_close_all();
	if (srv->dns != NULL)
		evdns_base_free(srv->dns, 0);
	if (srv->base != NULL)
		event_base_free(srv->base);
}
