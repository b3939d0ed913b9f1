/*
 * proxyproto.h - the PROXY protocol header (HAProxy proxy-protocol.txt, v1 and
 * v2) that a load balancer sends before the SMTP stream to tell us who the
 * real client is.
 *
 * Pure: proxyproto_parse looks at the bytes received so far and never touches
 * a socket. It keeps no state between calls; the caller keeps the bytes and
 * calls again with all of them once more have arrived, so any split of the
 * input gives the same answer. The header is small (PROXYPROTO_V1_MAX,
 * PROXYPROTO_V2_MAX), so parsing it again from the start costs nothing.
 *
 * Exports struct proxyproto, proxyproto_parse and the limits below.
 */
#ifndef PORTCULLIS_PROXYPROTO_H
#define PORTCULLIS_PROXYPROTO_H

#include <stddef.h>
#include <sys/socket.h>

#include "portcullis/status.h"

/* proxy-protocol.txt §2.1: the longest v1 line, CR LF included. */
#define PROXYPROTO_V1_MAX 107

/* The fixed part of a v2 header: signature, ver/cmd, family, length (§2.2). */
#define PROXYPROTO_V2_HDR 16

/*
 * The v2 length field allows 65535 bytes of addresses and TLVs. We need 36
 * at most and a few TLVs; refusing more stops a peer from making us buffer
 * 64 KiB before the first SMTP byte.
 */
#define PROXYPROTO_V2_MAX_BODY 2048
#define PROXYPROTO_V2_MAX (PROXYPROTO_V2_HDR + PROXYPROTO_V2_MAX_BODY)

struct proxyproto {
	int version; /* 1 or 2 */
	int local; /* v2 LOCAL command or v1 "UNKNOWN": no addresses, use the socket's */
	struct sockaddr_storage src; /* the real client (family AF_INET or AF_INET6) */
	struct sockaddr_storage dst; /* the address it connected to */
	socklen_t src_len, dst_len;
};

/*
 * proxyproto_parse - look at the first len bytes the peer sent.
 *
 * PC_AGAIN: the bytes so far are a valid beginning of a v1 or v2 header, but
 * not all of it; call again with more.
 * PC_OK: buf starts with a complete valid header of *consumed bytes, and
 * *out describes it (src and dst are zero when out->local is set). The bytes
 * after it are the SMTP stream and must be kept.
 * PC_ERROR: not a PROXY header, or a malformed one; *why is a short static
 * reason for the log.
 *
 * *out and *consumed are written only on PC_OK, *why only on PC_ERROR.
 */
int proxyproto_parse(const unsigned char *buf, size_t len, struct proxyproto *out, size_t *consumed,
    const char **why);

#endif
