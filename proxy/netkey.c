/*
 * netkey.c - which clients share one per-IP connection count (see netkey.h).
 *
 * Exports netkey_client. An IPv4 host usually has one address, but an IPv6
 * host is routinely given a whole subnet (RFC 4291 §2.5.1: 64-bit interface
 * identifiers, so a /64 per link) and may connect from any address in it.
 * Counted per address, one host gets around max_connections_per_ip with as
 * many connections as it likes. So IPv6 clients are counted per network, as
 * Postfix 3.8's anvil limits do with smtpd_client_ipv6_prefix_length (84 by
 * default there; our client_ipv6_prefix defaults to one subnet, 64). An IPv4
 * client on a dual-stack socket arrives as ::ffff:a.b.c.d (RFC 4291
 * §2.5.5.2) and is counted as the IPv4 address it is, not as part of ::/64.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "netkey.h"

static void netkey_mask(struct in6_addr *a, unsigned prefix);

/* netkey_client - the counting key of one client address */
int
netkey_client(const char *ip, unsigned prefix6, char *out, size_t outlen)
{
	char text[INET6_ADDRSTRLEN], canon[INET6_ADDRSTRLEN];
	struct in_addr a4;
	struct in6_addr a6;
	/* A link-local address may carry its zone ("fe80::1%eth0"): it names
	 * our interface, not the client, and inet_pton refuses it. */
	size_t n = strcspn(ip, "%");

	if (outlen == 0)
		return -1;
	if (n >= sizeof(text))
		goto verbatim;
	memcpy(text, ip, n);
	text[n] = '\0';
	if (inet_pton(AF_INET, text, &a4) == 1) {
		inet_ntop(AF_INET, &a4, canon, sizeof(canon));
		snprintf(out, outlen, "%s", canon);
		return 0;
	}
	if (inet_pton(AF_INET6, text, &a6) != 1)
		goto verbatim;
	if (IN6_IS_ADDR_V4MAPPED(&a6)) {
		memcpy(&a4, &a6.s6_addr[12], sizeof(a4));
		inet_ntop(AF_INET, &a4, canon, sizeof(canon));
		snprintf(out, outlen, "%s", canon);
		return 0;
	}
	if (prefix6 > 128)
		prefix6 = 128;
	netkey_mask(&a6, prefix6);
	/* inet_ntop writes one text per address, so "2001:DB8::1" and
	 * "2001:db8:0::1" meet under one key. */
	inet_ntop(AF_INET6, &a6, canon, sizeof(canon));
	snprintf(out, outlen, "%s/%u", canon, prefix6);
	return 0;
verbatim:
	snprintf(out, outlen, "%s", ip);
	return -1;
}

/* netkey_mask - clear every bit of a after the first prefix */
static void
netkey_mask(struct in6_addr *a, unsigned prefix)
{
	for (unsigned i = 0; i < 16; i++) {
		if (prefix >= 8 * (i + 1))
			continue;
		if (prefix <= 8 * i)
			a->s6_addr[i] = 0;
		else
			a->s6_addr[i] &= (unsigned char)(0xFF << (8 - (prefix - 8 * i)));
	}
}
