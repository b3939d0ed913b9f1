/*
 * netkey.h - the key a client address is counted under by the per-client
 * connection limit (max_connections_per_ip): an IPv4 address itself, an IPv6
 * address's network of client_ipv6_prefix bits.
 *
 * Pure: text in, text out, no sockets. Exports netkey_client and NETKEY_MAX.
 */
#ifndef PORTCULLIS_NETKEY_H
#define PORTCULLIS_NETKEY_H

#include <stddef.h>

/* Enough for any key: an IPv6 address (INET6_ADDRSTRLEN) and "/128". */
#define NETKEY_MAX 64

/*
 * netkey_client - the key for the numeric address ip (as getnameinfo
 * NI_NUMERICHOST writes it) into out (outlen bytes, NUL-terminated, cut if
 * short): "192.0.2.1" for IPv4 and for IPv4-mapped IPv6 (::ffff:192.0.2.1),
 * "2001:db8::/64" for an IPv6 address with prefix6 = 64. Returns 0, or -1 if
 * ip is not an address (out then holds ip itself, so it is still counted) or
 * outlen is 0.
 */
int netkey_client(const char *ip, unsigned prefix6, char *out, size_t outlen);

#endif
