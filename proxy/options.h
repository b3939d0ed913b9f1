/*
 * options.h - the value parsers of every configuration key: the daemon's
 * top-level keys (config.c) and, through struct pc_host, the keys of C
 * plugins and of the Lua host. One implementation, so "10M", "30s", "yes"
 * and "10.0.0.0/8" mean the same thing, with the same messages, wherever
 * they are written.
 *
 * Pure: text in, values out; opt_file alone looks at the file system.
 * Each parser returns 0, or -1 with a message in err (errlen octets; err
 * may be NULL) that quotes the value and says what was expected:
 *
 *	bad value "10X": expected a size (e.g. 10, 64k, 50M, 1G)
 *
 * The caller puts the key (and file:line) in front. Exports opt_size,
 * opt_time, opt_bool, opt_list, opt_nets, opt_nets_match, opt_nets_match_ip,
 * opt_cidr, opt_cidr_match, opt_cidr_free, opt_file and the OPT_HELP_*
 * texts.
 */
#ifndef PORTCULLIS_OPTIONS_H
#define PORTCULLIS_OPTIONS_H

#include <stddef.h>
#include <sys/socket.h>

#include <portcullis/plugin.h>

/* What each kind of value looks like, for messages. */
#define OPT_HELP_SIZE "a size (e.g. 10, 64k, 50M, 1G)"
#define OPT_HELP_TIME "a time (e.g. 500ms, 30s, 5m, 1h, 2d)"
#define OPT_HELP_BOOL "yes or no"
#define OPT_HELP_NETS "addresses or networks (e.g. 127.0.0.1/32 ::1 10.0.0.0/8)"

/* The blanks and commas that separate the items of a list. */
#define OPT_LIST_SEPARATORS " \t,"

/* One network of a CIDR list. */
struct opt_net {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16]; /* network order; no bits set past bits */
	unsigned bits; /* 0-32 or 0-128 */
};

/*
 * opt_size - a decimal number of octets, with an optional k, M or G
 * (powers of 1024, any case): "0", "512", "64k", "50M", "1G". No sign, no
 * fraction, no blanks, nothing after the unit; a value past 2^64-1 is
 * refused, never wrapped.
 */
int opt_size(const char *value, unsigned long long *out, char *err, size_t errlen);

/*
 * opt_time - a duration into milliseconds: a decimal number and ms, s, m
 * or h; a bare number is seconds ("250ms", "30s", "30", "5m", "1h").
 */
int opt_time(const char *value, unsigned long long *ms, char *err, size_t errlen);

/* opt_bool - yes/true/on/1 (1) or no/false/off/0 (0); words in any case. */
int opt_bool(const char *value, int *out, char *err, size_t errlen);

/*
 * opt_list - the next item of a list whose items are separated by blanks
 * and/or commas ("a, b c,,d" is a, b, c, d). *cursor starts at the value
 * and is advanced; *item points into the value (not NUL-terminated) and
 * *len is its length. Returns 1 for an item, 0 at the end. Cannot fail.
 */
int opt_list(const char **cursor, const char **item, size_t *len);

/*
 * opt_nets - a CIDR list into nets (room for max): IPv4 and IPv6
 * addresses (a /32 or /128) and networks ("10.0.0.0/8", "2001:db8::/32",
 * "0.0.0.0/0"). A network with bits set past its prefix ("10.0.0.1/8") is
 * refused: it is a typo for either the host or the network, and guessing
 * in a trust list is how one trusts the world. At least one item; *n is
 * how many. A message says "at most max" when max bounds the list.
 */
int opt_nets(
    const char *value, struct opt_net *nets, size_t max, size_t *n, char *err, size_t errlen);

/*
 * opt_nets_match - is the address in one of the n networks? An IPv4
 * address, and an IPv4-mapped IPv6 one (::ffff:192.0.2.1, RFC 4291
 * §2.5.5.2: how a dual-stack socket shows an IPv4 client) alike, match the
 * IPv4 networks and the IPv6 networks that hold ::ffff:a.b.c.d. 1 or 0.
 */
int opt_nets_match(const struct opt_net *nets, size_t n, const struct sockaddr *sa);

/* opt_nets_match_ip - the same for a numeric address as text (a zone,
 * "fe80::1%eth0", is ignored): 1, 0, or -1 if ip is no address. */
int opt_nets_match_ip(const struct opt_net *nets, size_t n, const char *ip);

/* opt_cidr, opt_cidr_match, opt_cidr_free - a CIDR list of any length,
 * allocated, for plugins (see struct pc_host in plugin.h). */
int opt_cidr(const char *value, struct pc_cidrs **out, char *err, size_t errlen);
int opt_cidr_match(const struct pc_cidrs *cidrs, const char *ip);
void opt_cidr_free(struct pc_cidrs *cidrs);

/*
 * opt_file - path names a file we can read now: it opens (then closes) it.
 * A directory is refused. The message names the path and the reason:
 * cannot read "/etc/x": No such file or directory.
 */
int opt_file(const char *path, char *err, size_t errlen);

#endif
