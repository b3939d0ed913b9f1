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

#define IP_BUCKETS 4096

struct ip_count {
	char ip[NETKEY_MAX]; /* the netkey: an address or an IPv6 network */
	unsigned long n;
	struct ip_count *next;
};

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

/* server_ip_init - the per-client table */
int
server_ip_init(struct server *srv)
{
	srv->ip_table = calloc(IP_BUCKETS, sizeof(*srv->ip_table));
	return srv->ip_table != NULL ? 0 : -1;
}

/* ip_hash - FNV-1a over the key */
static size_t
ip_hash(const char *ip)
{
	size_t h = 2166136261u;

	for (; *ip != '\0'; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % IP_BUCKETS;
}

/*
 * server_ip_acquire - count one more connection from ip (full address) under
 * its key, which goes into key (keylen bytes) for server_ip_release; -1 over
 * the limit. The caller keeps the key rather than the address: a SIGHUP may
 * change client_ipv6_prefix before the session ends.
 */
int
server_ip_acquire(struct server *srv, const char *ip, char *key, size_t keylen)
{
	struct ip_count **head, *c;

	netkey_client(ip, (unsigned)srv->cfg->client_ipv6_prefix, key, keylen);
	head = &srv->ip_table[ip_hash(key)];
	for (c = *head; c != NULL; c = c->next)
		if (strcmp(c->ip, key) == 0)
			break;
	if (c == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return PC_ERROR;
		strncpy(c->ip, key, sizeof(c->ip) - 1);
		c->next = *head;
		*head = c;
	}
	/* The per-address limit stops one host taking every slot. */
	if (c->n >= srv->cfg->max_connections_per_ip)
		return PC_ERROR;
	c->n++;
	return PC_OK;
}

/* server_ip_release - one connection counted under key (server_ip_acquire's) ended */
void
server_ip_release(struct server *srv, const char *key)
{
	struct ip_count **pp = &srv->ip_table[ip_hash(key)], *c;

	for (; (c = *pp) != NULL; pp = &c->next) {
		if (strcmp(c->ip, key) != 0)
			continue;
		if (--c->n == 0) {
			*pp = c->next;
			free(c);
		}
		return;
	}
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
	if (srv->draining && srv->nsessions == 0 && srv->nwaiting == 0)
		event_base_loopexit(srv->base, NULL);
}

/* server_free - the configuration, the resolver and the loop */
void
server_free(struct server *srv)
{
	if (srv->ip_table != NULL) {
		for (size_t i = 0; i < IP_BUCKETS; i++) {
			struct ip_count *c, *next;
			for (c = srv->ip_table[i]; c != NULL; c = next) {
				next = c->next;
				free(c);
			}
		}
		free(srv->ip_table);
	}
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
