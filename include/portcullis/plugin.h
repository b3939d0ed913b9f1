/*
 * portcullis/plugin.h - the C plugin ABI: the only header a plugin includes.
 *
 * A plugin is a shared object (build/plugins/NAME.so) that exports one symbol,
 *
 *	const struct pc_plugin portcullis_plugin = {
 *	    PC_PLUGIN_ABI_INIT,
 *	    .name = "example",
 *	    ...
 *	};
 *
 * PC_PLUGIN_ABI_INIT fills in the ABI version and the descriptor's size (see
 * VERSIONS below). Every configuration section naming the
 * plugin makes one instance: init() is called with that section's keys and
 * returns the instance pointer that every hook then gets back.
 *
 *	[plugin NAME]        loads plugin_dir/NAME.so (or path = ...), instance NAME
 *	[TYPE NAME]          loads plugin_dir/TYPE.so, instance NAME ([lua policy])
 *
 * Keys the host keeps for itself in every section (the plugin never sees
 * them): path, observe, on_error, filter_timeout.
 *
 * IN-PROCESS. A C plugin runs inside the daemon, in its one event loop: a
 * crash in it is the daemon's crash, and a blocking call in it (a blocking
 * read, connect, sleep or DNS lookup) stops every session until it returns.
 * Use the host's event base and evdns with PC_HOOK_PENDING for anything that
 * waits. Code you do not trust, or that must block, belongs in a Lua script
 * (sandboxed, with instruction, time and memory limits: lua/README.md) or
 * in a separate process the plugin talks to asynchronously.
 *
 * PROCESSES AND PRIVILEGE (DESIGN.md §7; portcullis(8), PROCESSES). Where
 * init runs depends on the top-level workers key:
 *
 *	workers = 1    once, in the one process, with the ids it was started
 *	               with (root, if started as root), before it drops to
 *	               user/group and installs its seccomp filter; reload then
 *	               runs after the drop, as that user, under the filter.
 *	workers >= 2   in each worker, after fork, as root if the daemon was
 *	               started as root, before the worker enters chroot, drops
 *	               to user/group and installs its seccomp filter; once
 *	               more in the master with check_only set, to check the
 *	               configuration (at start and at each SIGHUP), followed
 *	               by fini. reload is not called: a SIGHUP starts new
 *	               workers, whose instances init afresh, and the old
 *	               workers' instances get fini when those workers end.
 *
 * Whatever an instance opens (sockets, files, a store, an LMDB environment
 * through store_open) belongs to the process that opened it: open it in
 * init, never share it across fork, and expect one instance per worker
 * (counters in memory are per worker; shared counts go in the store).
 * store = memory is refused with workers >= 2, since each worker would
 * keep its own. After init, the instance runs as the unprivileged user,
 * possibly in a chroot (a unix: socket path must exist inside it), and
 * under the seccomp filter unless seccomp = no: no exec, no fork, no
 * threads, no ptrace; a call outside the list kills the process with
 * SIGSYS. Open in init what needs root; connect to TCP or to sockets
 * inside the jail later.
 *
 * STAGES AND VERDICTS. For each client at connect, HELO, MAIL, RCPT and the
 * end of DATA, the host calls that stage's hook of every instance in
 * configuration order. A hook answers by filling in *v and returning
 * PC_HOOK_DONE (a zeroed *v is "continue"), or by returning PC_HOOK_PENDING
 * and answering later with host->resume(call, &v). The first verdict that is
 * not PC_CONTINUE decides the stage (DESIGN.md §3):
 *
 *	PC_CONTINUE    no opinion: ask the next instance
 *	PC_ACCEPT      ask no more instances at this stage; the backend decides
 *	PC_REJECT      5xx to the client (default "550 5.7.1 ...")
 *	PC_TEMPFAIL    4xx to the client (default "451 4.7.1 ...")
 *	PC_DROP        pretend success and deliver nothing: at connect or HELO
 *	               the whole session, at MAIL the transaction, at RCPT that
 *	               recipient, at DATA the message
 *	PC_DISCONNECT  "421 4.7.0 ..." and close
 *
 * v->reply, when not NULL, is the reply text: "[CODE] [X.Y.Z] text", e.g.
 * "554 5.7.1 Spam not welcome here", "5.7.1 Go away" or "Go away". What is
 * left out comes from the default. The host validates it (CODE of the
 * verdict's class, X of the same class, no CR or LF, at most 512 octets);
 * an invalid reply, a hook that fails (PC_FAIL) and a hook that does not
 * answer within filter_timeout all become the section's on_error action,
 * and the client sees a generic text while the detail goes to the log. The
 * host copies v->reply before the hook call (or resume) returns.
 *
 * ASYNCHRONOUS HOOKS. A hook that must wait (DNS, a network service, a
 * timer) calls host->pending(call, cancel, arg) and returns PC_HOOK_PENDING.
 * The session waits; the event loop does not. Later, from any callback, it
 * calls host->resume(call, &v) exactly once. If the host gives up first (the
 * client went away, filter_timeout), it calls cancel(arg) instead, and from
 * then on the plugin must not use call: cancel is where it frees what it
 * allocated and cancels its DNS request or timer. resume may be called from
 * inside the hook itself (an answer from a cache); that is fine.
 *
 * THREADS. There are none: every hook, every callback and every host
 * service runs on the one event loop thread. Never block it.
 *
 * LIFETIMES. Strings the host hands out stay valid until the hook returns
 * (or, for a pending hook, until resume or cancel); copy what you keep.
 * Strings the host builds for a call (an address's local part or domain,
 * say) come from a per-call arena that the host frees when the stage ends,
 * so asking again is cheap and never invalidates an earlier answer; the
 * arena is bounded (4 MB per stage): past that, such functions answer
 * NULL (or -1). Session data (host->session_data) lives until the
 * close hook, transaction data (host->tx_data) until the reset hook.
 *
 * VERSIONS. The descriptor and the host table each carry abi_major,
 * abi_minor and struct_size (the sizeof the struct had where it was
 * compiled). Rules:
 *
 *  - another major version is refused at load ("plugin X was built for ABI
 *    1, this portcullis speaks ABI 2.0"): a major bump may change anything;
 *  - a minor bump only appends: new members at the end of struct pc_plugin
 *    and struct pc_host, new values at the end of enums, never renumbered;
 *  - the host reads a descriptor only up to its struct_size, so a plugin
 *    built against an older minor (a smaller descriptor) loads, and the
 *    hooks it does not have are NULL;
 *  - abi_minor in the descriptor is the oldest minor the plugin needs. A
 *    plugin asking for a newer minor than the host speaks is refused (it
 *    would call host functions that are not there). A plugin that wants to
 *    run on older hosts too uses PC_PLUGIN_ABI_INIT_MINOR(oldest) instead
 *    of PC_PLUGIN_ABI_INIT, and tests each newer host function with
 *    PC_HOST_HAS(host, member) before calling it.
 */
#ifndef PORTCULLIS_PLUGIN_H
#define PORTCULLIS_PLUGIN_H

#include <stddef.h>
#include <sys/types.h>

/* The ABI this header describes (see VERSIONS above). */
#define PC_ABI_MAJOR 2
#define PC_ABI_MINOR 2

/* The first members of a descriptor: put it first in the initializer.
 * PC_PLUGIN_ABI_INIT_MINOR(m) is for a plugin that also runs on hosts of an
 * older minor m (it tests newer host functions with PC_HOST_HAS). */
#define PC_PLUGIN_ABI_INIT_MINOR(minor)                                                            \
	.abi_major = PC_ABI_MAJOR, .abi_minor = (minor), .struct_size = sizeof(struct pc_plugin)
#define PC_PLUGIN_ABI_INIT PC_PLUGIN_ABI_INIT_MINOR(PC_ABI_MINOR)

/* PC_HOST_HAS - does this host offer member (a function of struct pc_host
 * added in a later minor version)? For plugins that set a lower abi_minor. */
#define PC_HOST_HAS(host, member)                                                                  \
	((host)->struct_size >= offsetof(struct pc_host, member) + sizeof((host)->member) &&       \
	    (host)->member != NULL)

/* The symbol every plugin exports. */
#define PC_PLUGIN_SYMBOL "portcullis_plugin"

/* Longest reply a filter may give, without CR LF (RFC 5321 §4.5.3.1.5). */
#define PC_REPLY_MAX 512

struct event_base;
struct evdns_base;

/* What a hook decides. */
enum pc_action {
	PC_CONTINUE = 0,
	PC_ACCEPT,
	PC_REJECT,
	PC_TEMPFAIL,
	PC_DROP,
	PC_DISCONNECT,
	PC_FAIL, /* the filter could not decide: the on_error action (reply, if any, is
		  * the reason, for the log only) */
};

struct pc_verdict {
	enum pc_action action;
	const char *reply; /* NULL: the default for the action */
};

/* What a hook returns. */
#define PC_HOOK_DONE 0 /* *v holds the verdict */
#define PC_HOOK_PENDING 1 /* host->pending() was called; host->resume() follows */

enum pc_stage {
	PC_STAGE_CONNECT = 0,
	PC_STAGE_HELO,
	PC_STAGE_MAIL,
	PC_STAGE_RCPT,
	PC_STAGE_DATA,
};

/* What host->get() can tell about the session and transaction. NULL when
 * there is nothing (yet): no HELO before the HELO stage, no sender outside
 * a transaction, no TLS on a plaintext session. */
enum pc_field {
	PC_SESSION_ID = 0, /* "0A1B2C3D4E", on every log line of the session */
	PC_CLIENT_IP, /* "192.0.2.7" or "2001:db8::7" */
	PC_CLIENT_PORT, /* "51234" */
	PC_LOCAL_IP, /* the address the client connected to */
	PC_LOCAL_PORT,
	PC_HOSTNAME, /* our own name (config hostname) */
	PC_HELO, /* the client's HELO/EHLO argument; at the HELO stage, the new one */
	PC_TLS, /* the TLS protocol ("TLSv1.3") once TLS is up, else NULL */
	PC_AUTH_USER, /* the authenticated user, else NULL */
	PC_TX_ID, /* "0A1B2C3D4E.1": session id and transaction number */
	PC_SENDER, /* MAIL FROM address without <>; "" for the null sender */
	PC_RCPT, /* at the RCPT stage: the recipient being asked about */
	PC_TRAIL, /* the verdicts so far: "access:accept@mail,rbl:observe-reject@rcpt" */
	PC_STAGE_NAME, /* "connect", "helo", "mail", "rcpt" or "data" */
	PC_SENDER_PARAMS, /* MAIL's ESMTP parameters as sent: "SIZE=1234 BODY=8BITMIME" or "" */
	PC_RCPT_PARAMS, /* at the RCPT stage: that RCPT's parameters, or "" */
	/* ABI 2.0 */
	PC_CLIENT_NAME, /* the client's forward-confirmed DNS name, or NULL */
	PC_TLS_CIPHER, /* the TLS cipher ("TLS_AES_256_GCM_SHA384"), else NULL */
	PC_CLIENT_TRUSTED, /* "1" if the client is in trusted_networks, else NULL */
	PC_SENDER_LOCAL, /* the sender's local part as written; "" for <> */
	PC_SENDER_DOMAIN, /* its domain in lower case; NULL for <> (or no '@') */
	PC_RCPT_LOCAL, /* at the RCPT stage: the recipient's local part */
	PC_RCPT_DOMAIN, /* at the RCPT stage: its domain, lower case; NULL without '@' */
};

/*
 * ADDRESSES. An address splits at its last '@' outside a quoted local part:
 * "Joe.Bloggs@Example.COM" is "Joe.Bloggs" and "example.com" (the domain in
 * lower case, the local part as written, quotes and all: "\"a@b\"@x.org" is
 * "\"a@b\"" and "x.org"); the null sender "" has the local part "" and no
 * domain; an address without '@' ("postmaster") is all local part, with no
 * domain. host->split_address does this for any address, and the
 * PC_*_LOCAL / PC_*_DOMAIN fields for the sender and the RCPT stage's
 * recipient; for the n-th accepted recipient, split host->rcpt(call, n).
 *
 * SCORES. Filters may score a transaction: add_score(call, "SYMBOL",
 * points, detail) adds points under a symbol ([A-Z0-9_], 1 to 64 octets);
 * the same symbol again accumulates (its points are the sum; its first
 * detail stays). At most 256 symbols per transaction. Scores added at
 * connect or HELO (outside a transaction) belong to the session, and each
 * new transaction starts with a copy of them; scores added in a
 * transaction are gone when it ends. Every instance, C or Lua, adds to the
 * same store, and the transaction's summary log line shows it
 * ("score=3.5 symbols=RBL(3),NO_PTR(0.5)").
 *
 * MESSAGE CHANGES (milter parity). At the DATA stage only, a filter may
 * change header fields (add, change, insert, remove), the envelope (add or
 * delete a recipient, change the sender) and replace the body. Changes are
 * recorded and applied when the message goes to the backend, so every
 * filter still reads the message and envelope as received (header,
 * header_at, body_read, rcpt). Changes of one instance and the next add
 * up, in chain order; for the same field or address, the last one wins.
 * None is applied when the message is not delivered (a verdict other than
 * continue or accept at DATA).
 */

/* Log levels for host->log. */
enum pc_log_level {
	PC_LOG_DEBUG = 0,
	PC_LOG_INFO,
	PC_LOG_WARN,
	PC_LOG_ERR,
};

/* One "key = value" line of the instance's section, in file order. */
struct pc_option {
	const char *key;
	const char *value;
	int line; /* in the configuration file */
	const struct pc_option *next;
};

struct pc_call; /* one hook invocation: the session, the transaction, the stage */
struct pc_instance; /* the host's handle for one section */
struct pc_cidrs; /* a parsed CIDR list (host->opt_cidr) */
struct pc_store; /* a store the host opened (host->store_open) */
struct pc_store_req; /* a store request in flight */

typedef void (*pc_cancel_fn)(void *arg);

/*
 * THE STORE (ABI 2.1; DESIGN.md §7). State that outlives a session -
 * greylisting triplets, rate counters - lives in a store the host keeps:
 *
 *	memory              this process only; gone at exit
 *	lmdb:PATH           a directory of LMDB files: survives restarts, safe
 *	                    for several processes on one machine
 *	redis://HOST:PORT/DB, redis://:PASSWORD@HOST:PORT/DB,
 *	unix:PATH[?db=N]    a Redis server: shared by several proxies
 *
 * Keys and values are octet strings (keys 1 to PC_STORE_KEY_MAX octets,
 * values at most PC_STORE_VALUE_MAX). Every operation is asynchronous in
 * form: it takes a callback, done(arg, result), called exactly once unless
 * the request is cancelled. Memory and LMDB call it before the operation
 * returns (and return NULL); Redis calls it later, from the event loop
 * (and returns a handle for store_cancel). A request that fails at once
 * (a bad key, a store that is down) also calls done before returning.
 * So one code path serves every store: in a hook, call host->pending
 * first, start the operation, and resume from done (which may run inside
 * the hook: that is allowed). A cancel function for pending cancels the
 * request it kept, if it is not NULL.
 *
 * The result and what it points to are valid during done only. A store
 * that fails or times out (each Redis command has store_timeout) answers
 * PC_STORE_FAILED with a reason; a hook that cannot decide without it
 * answers PC_FAIL and the section's on_error decides (greylist and
 * ratelimit default to accept: an outage must not stop mail).
 *
 * Keys are shared by everyone using the same store: prefix them with
 * the plugin's name ("greylist:", "ratelimit:").
 */
#define PC_STORE_KEY_MAX 511 /* LMDB's limit */
#define PC_STORE_VALUE_MAX (1024 * 1024)

/* set: only if the key does not exist (else PC_STORE_EXISTS) */
#define PC_STORE_NX 1u

enum pc_store_status {
	PC_STORE_OK = 0, /* done; value or number holds the answer */
	PC_STORE_MISSING, /* get, del: there is no such key (or it expired) */
	PC_STORE_EXISTS, /* set with PC_STORE_NX: the key exists; nothing changed */
	PC_STORE_FAILED, /* the store failed or timed out: error says why */
};

/* A Redis reply, for store_command (Lua's redis.call). */
enum pc_store_reply_type {
	PC_REPLY_NIL = 0,
	PC_REPLY_INTEGER,
	PC_REPLY_STRING, /* a bulk string */
	PC_REPLY_STATUS, /* "+OK" */
	PC_REPLY_ERROR, /* "-ERR ..." (a command error; the store is fine) */
	PC_REPLY_ARRAY,
};

struct pc_store_reply {
	enum pc_store_reply_type type;
	long long integer;
	const char *str; /* STRING, STATUS, ERROR: NUL-terminated, len octets */
	size_t len;
	size_t elements; /* ARRAY */
	const struct pc_store_reply *const *element;
};

struct pc_store_result {
	enum pc_store_status status;
	const char *value; /* get: the value, len octets (NUL after them) */
	size_t len;
	long long number; /* incr: the new value */
	const char *error; /* PC_STORE_FAILED: why, for the log */
	const struct pc_store_reply *reply; /* store_command: the reply */
};

typedef void (*pc_store_fn)(void *arg, const struct pc_store_result *r);

/* The services the host offers. Every function is safe to call from a hook
 * or from an event callback; none blocks. */
struct pc_host {
	/* The host's ABI: PC_ABI_MAJOR, its minor, sizeof(struct pc_host). */
	unsigned abi_major, abi_minor;
	size_t struct_size;

	/* The libevent base every plugin event must use, and the daemon's
	 * asynchronous resolver (evdns). */
	struct event_base *base;
	struct evdns_base *dns;

	/* log - one line, with the session id when call is not NULL and the
	 * instance name when self or call tells it. Either may be NULL. */
	void (*log)(struct pc_instance *self, struct pc_call *call, enum pc_log_level level,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

	/* get - a field of the session or transaction (see enum pc_field). */
	const char *(*get)(struct pc_call *call, enum pc_field field);
	/* rcpt - the n-th recipient accepted so far (0-based), NULL past the
	 * end; rcpt_count - how many. */
	const char *(*rcpt)(struct pc_call *call, size_t n);
	size_t (*rcpt_count)(struct pc_call *call);
	/* stage - which hook this call is. */
	enum pc_stage (*stage)(struct pc_call *call);

	/* session_data / tx_data - one pointer per instance and session (or
	 * transaction), NULL at first, for the plugin's own state. Free it in
	 * the close (or reset) hook. */
	void **(*session_data)(struct pc_call *call);
	void **(*tx_data)(struct pc_call *call);

	/* pending / resume - see ASYNCHRONOUS HOOKS above. pending returns 0,
	 * or -1 if the call cannot wait (then answer at once). */
	int (*pending)(struct pc_call *call, pc_cancel_fn cancel, void *arg);
	void (*resume)(struct pc_call *call, const struct pc_verdict *v);

	/* The message, at the DATA stage only (elsewhere: 0, NULL, -1). */
	/* msg_size - octets of the message as RFC 1870 counts them: CR LF
	 * line ends included, the dots that stuff lines not. */
	size_t (*msg_size)(struct pc_call *call);
	/* header - the n-th (0-based) header field called name (any case),
	 * unfolded, without the name, the colon and leading blanks; NULL if
	 * there is none. */
	const char *(*header)(struct pc_call *call, const char *name, size_t n);
	/* header_at - the n-th header field of the message, in order; 0 or -1
	 * past the end. */
	int (*header_at)(struct pc_call *call, size_t n, const char **name, const char **value);
	/* body_read - the next octets of the body (after the blank line),
	 * un-dot-stuffed, CR LF line ends: a stream from the start for each
	 * call of the hook. Returns the count, 0 at the end, -1 on error. */
	ssize_t (*body_read)(struct pc_call *call, char *buf, size_t len);
	/* body_rewind - the next body_read starts from the body's start. */
	void (*body_rewind)(struct pc_call *call);
	/* add_header - prepend "name: value" when the message goes to the
	 * backend (in the order added); remove_header - leave out every
	 * incoming header field called name. 0 or -1 (bad name or value:
	 * a name with ':' or blanks; a control character other than tab; a
	 * line over 998 octets, or the field over 8192; add_header: 1000
	 * header changes of any kind already). Since ABI 2.2 a
	 * value may be folded: a line end (LF or CR LF) followed by a line
	 * that starts with a blank and has more than blanks on it; the
	 * backend gets it folded with CR LF. */
	int (*add_header)(struct pc_call *call, const char *name, const char *value);
	int (*remove_header)(struct pc_call *call, const char *name);

	/* ---- ABI 2.0 ---- */

	/* split_address - addr's local part and domain (see ADDRESSES), from
	 * the call's arena. Either pointer may be NULL. 0, or -1 (addr NULL,
	 * arena full). Any stage. */
	int (*split_address)(
	    struct pc_call *call, const char *addr, const char **local, const char **domain);

	/* add_score - points (finite; negative is fine) under symbol, with an
	 * optional detail (NULL, or at most 256 octets without control
	 * characters) for the log (see SCORES). In a stage hook, or while it
	 * is pending; not in reset or close. 0, or -1: a bad symbol, points or
	 * detail, 256 symbols already, out of memory. */
	int (*add_score)(
	    struct pc_call *call, const char *symbol, double points, const char *detail);
	/* score - the running total: the transaction's, outside one the
	 * session's. */
	double (*score)(struct pc_call *call);
	/* score_at - the n-th symbol (0-based, in the order first added) with
	 * its points and detail (NULL if none); any pointer may be NULL. The
	 * strings stay valid until the transaction ends. 0, or -1 past the
	 * end. */
	int (*score_at)(struct pc_call *call, size_t n, const char **symbol, double *points,
	    const char **detail);

	/* The changes below work at the DATA stage only (elsewhere -1); see
	 * MESSAGE CHANGES. Names and values are checked as for add_header. */
	/* change_header - the n-th (0-based, counted as header() counts:
	 * among the fields of the message as received) field called name (any
	 * case) becomes "Name: value", the name as written; value NULL
	 * deletes that one field. A change brings back a field remove_header
	 * took out. 0, or -1: no such field, a bad value, 1000 header changes
	 * already. */
	int (*change_header)(struct pc_call *call, const char *name, size_t n, const char *value);
	/* insert_header - "name: value" before the received field number
	 * index (0-based, as header_at counts): 0 puts it first of the
	 * received fields (after the add_header fields, which come before
	 * everything), an index past the last field puts it at the end of the
	 * header section. Several at one index come in the order inserted. */
	int (*insert_header)(
	    struct pc_call *call, size_t index, const char *name, const char *value);
	/* add_rcpt - one more recipient, with ESMTP parameters ("NOTIFY=NEVER",
	 * or NULL). The address has no <>, at most 256 octets, no control
	 * characters, no '<' or '>', no blank outside quotes. Recipients
	 * compare equal when their local parts are the same and their domains
	 * differ at most in case: adding one that is there is a no-op, adding
	 * one deleted undoes the deletion. 0 or -1 (a bad address or
	 * parameters, 1000 added already). */
	int (*add_rcpt)(struct pc_call *call, const char *addr, const char *params);
	/* delete_rcpt - do not deliver to addr (an accepted recipient, or one
	 * add_rcpt added). If every recipient is deleted, nothing is
	 * delivered. 0, or -1 if there is no such recipient. */
	int (*delete_rcpt)(struct pc_call *call, const char *addr);
	/* change_sender - the envelope sender becomes addr ("" for the null
	 * sender) with ESMTP parameters params ("" for none; NULL keeps the
	 * received MAIL's, such as BODY=8BITMIME and SMTPUTF8, which describe
	 * the message rather than the sender). 0 or -1. */
	int (*change_sender)(struct pc_call *call, const char *addr, const char *params);
	/* body_replace_begin / _write / _end - a new body instead of the
	 * received one, streamed (it goes to a spool: memory, then a file,
	 * never whole in memory): begin (dropping an earlier replacement, of
	 * this instance or another), write the body's octets as many times as
	 * needed, end. Write plain text, not SMTP: no dot-stuffing, no final
	 * "."; the host stuffs lines that start with '.', and turns a bare LF
	 * into CR LF; a last line without a line end gets one. A bare CR (not
	 * before LF) or a NUL makes write fail and drops the replacement: the
	 * received body is sent. A replacement that is not ended by the time
	 * the stage is decided is dropped too. The header fields stay (change
	 * Content-Type and friends to match). 0 or -1. */
	int (*body_replace_begin)(struct pc_call *call);
	int (*body_replace_write)(struct pc_call *call, const char *buf, size_t len);
	int (*body_replace_end)(struct pc_call *call);

	/* ABI 2.0 too (issue 13, DESIGN.md §5): appended after the services
	 * above before any 2.0 host was released. */

	/*
	 * OPTION PARSERS: the daemon's own, so a plugin's keys read as the
	 * top-level ones do (etc/portcullis.conf). For init above all, but
	 * safe anywhere; none but opt_file touches the system. Each returns
	 * 0, or -1 with a message in err (errlen octets; err may be NULL)
	 * that quotes the value and says what was expected; put the key in
	 * front:
	 *	bad value "10X": expected a size (e.g. 10, 64k, 50M, 1G)
	 * None keeps a pointer to what it is given.
	 *
	 * opt_size - octets: "512", "64k", "50M", "1G" (k/M/G are powers of
	 *	1024). No sign, fraction or blank; past 2^64-1 is an error.
	 * opt_time - milliseconds from "250ms", "30s", "5m", "1h", "2d"; a bare
	 *	number is seconds.
	 * opt_bool - yes/true/on/1 -> 1, no/false/off/0 -> 0 (any case).
	 * opt_list - the items of a list separated by blanks and/or commas,
	 *	without allocating: set cursor to the value, then each call that
	 *	returns 1 points *item into the value (NOT NUL-terminated) and
	 *	sets *len; 0 at the end. It cannot fail:
	 *		const char *cur = o->value, *it;
	 *		size_t n;
	 *		while (host->opt_list(&cur, &it, &n))
	 *			printf("%.*s\n", (int)n, it);
	 * opt_cidr - a list (as opt_list splits it) of IPv4 and IPv6
	 *	addresses and networks, "192.0.2.7 10.0.0.0/8, 2001:db8::/32",
	 *	into *out; at least one; "10.0.0.1/8" (bits set past the prefix)
	 *	is refused. Free it with opt_cidr_free (NULL is fine).
	 * opt_cidr_match - 1 if ip, a numeric address as host->get gives
	 *	PC_CLIENT_IP, is in the list, 0 if not, -1 if ip is no address.
	 *	::ffff:192.0.2.7 is 192.0.2.7: IPv4 networks match it.
	 * opt_file - path names something we can open for reading now (not a
	 *	directory); the message names the path and the reason.
	 */
	int (*opt_size)(const char *value, unsigned long long *out, char *err, size_t errlen);
	int (*opt_time)(const char *value, unsigned long long *ms, char *err, size_t errlen);
	int (*opt_bool)(const char *value, int *out, char *err, size_t errlen);
	int (*opt_list)(const char **cursor, const char **item, size_t *len);
	int (*opt_cidr)(const char *value, struct pc_cidrs **out, char *err, size_t errlen);
	int (*opt_cidr_match)(const struct pc_cidrs *cidrs, const char *ip);
	void (*opt_cidr_free)(struct pc_cidrs *cidrs);
	int (*opt_file)(const char *path, char *err, size_t errlen);

	/* ---- ABI 2.1: the store (see THE STORE above) ---- */

	/* store_open - the store spec names ("memory", "lmdb:/var/lib/x",
	 * "redis://127.0.0.1:6379/0"), or, for NULL, the configuration's
	 * top-level store. In init only. The same spec gives the same store
	 * to every instance (one LMDB environment, one Redis connection per
	 * process). The handle stays valid until the instance's fini; the
	 * host closes it. NULL with a message in err: a bad spec, a
	 * directory that cannot be created or opened. A Redis server that
	 * is down is not an error here: the store connects in the
	 * background and fails requests until it is up. */
	struct pc_store *(*store_open)(
	    struct pc_instance *self, const char *spec, char *err, size_t errlen);
	/* store_name - the store's spec for logs, a password left out. */
	const char *(*store_name)(const struct pc_store *st);
	/* store_get - the value of key: PC_STORE_OK or PC_STORE_MISSING. */
	struct pc_store_req *(*store_get)(
	    struct pc_store *st, const char *key, size_t klen, pc_store_fn done, void *arg);
	/* store_set - key = value, expiring after ttl_ms (0: never); flags
	 * PC_STORE_NX or 0. PC_STORE_OK or PC_STORE_EXISTS. */
	struct pc_store_req *(*store_set)(struct pc_store *st, const char *key, size_t klen,
	    const char *value, size_t vlen, unsigned long long ttl_ms, unsigned flags,
	    pc_store_fn done, void *arg);
	/* store_incr - add by (negative is fine) to the decimal integer in
	 * key, a missing key counting as 0: number is the new value. ttl_ms
	 * (0: none) is set when this call creates the key and only then, so
	 * a counter made with a ttl is gone ttl_ms after its first increment
	 * (a fixed window). A value that is not an integer fails. */
	struct pc_store_req *(*store_incr)(struct pc_store *st, const char *key, size_t klen,
	    long long by, unsigned long long ttl_ms, pc_store_fn done, void *arg);
	/* store_del - remove key: PC_STORE_OK, or PC_STORE_MISSING. */
	struct pc_store_req *(*store_del)(
	    struct pc_store *st, const char *key, size_t klen, pc_store_fn done, void *arg);
	/* store_command - a Redis command, argv[0] its name: the reply in
	 * result->reply (a Redis error reply is PC_STORE_OK with a
	 * PC_REPLY_ERROR reply). On a store that is not Redis: PC_STORE_FAILED. */
	struct pc_store_req *(*store_command)(struct pc_store *st, size_t argc,
	    const char *const *argv, const size_t *argvlen, pc_store_fn done, void *arg);
	/* store_cancel - forget a request in flight: done is not called. */
	void (*store_cancel)(struct pc_store_req *req);

	/* ABI 2.1 too: the message exactly as the client sent it, for content
	 * scanners (spamd, rspamd) that check signatures over the raw header
	 * section: header() and header_at() give fields unfolded. */
	/* message_read - the next octets of the whole message (header section,
	 * blank line, body), dots un-stuffed, CR LF line ends, as received
	 * (the changes of this stage's filters are not in it): a stream from
	 * the start for each call of the hook. The count, 0 at the end, -1
	 * outside the DATA stage or on error. */
	ssize_t (*message_read)(struct pc_call *call, char *buf, size_t len);
	/* message_rewind - the next message_read (and message_read_current)
	 * starts from the start. */
	void (*message_rewind)(struct pc_call *call);

	/* ---- ABI 2.2 (issue 16: the milter client) ---- */

	/* pending_deadline - after pending (in the hook or later, while the
	 * call waits): the host gives up on this call ms milliseconds from
	 * now instead of at the section's filter_timeout (0: filter_timeout
	 * from now). Call it again to move the deadline, for a filter that
	 * waits on a peer step by step (a milter: each command has its own
	 * timeout, and a progress reply restarts it). 0, or -1 if the call
	 * is not pending. */
	int (*pending_deadline)(struct pc_call *call, unsigned long long ms);
	/* message_read_current - like message_read, but the message as it
	 * would go to the backend now: with the changes of the filters before
	 * this one in the chain (header fields added, changed, inserted,
	 * removed; a new body) and this one's own so far, as they stand at
	 * the first read after the hook starts (or after message_rewind).
	 * For a filter that signs or hashes what the backend will get. */
	ssize_t (*message_read_current)(struct pc_call *call, char *buf, size_t len);
	/* change_header_current / insert_header_current - change_header and
	 * insert_header, but n and index count the header fields as they
	 * stand now (as message_read_current shows them): the fields other
	 * filters added, inserted or changed count, the ones they removed or
	 * deleted do not. So a filter that read the message as it stands (a
	 * milter) changes the fields it saw, the ones other filters added
	 * included. An index past the last field inserts at the end. */
	int (*change_header_current)(
	    struct pc_call *call, const char *name, size_t n, const char *value);
	int (*insert_header_current)(
	    struct pc_call *call, size_t index, const char *name, const char *value);
};

/* What init gets. */
struct pc_init {
	const struct pc_host *host;
	struct pc_instance *self; /* for host->log outside hooks */
	const char *name; /* the instance (section) name; valid until fini */
	const char *file; /* the configuration file; valid during init only */
	int line; /* the section header's line */
	const struct pc_option *options; /* the section's own keys; valid until fini */
	int check_only; /* portcullis -t: check everything, start nothing */
	/* On failure, init writes a message here (without file or line) and,
	 * if it is about one key, that key's line into err_line. */
	char *err;
	size_t errlen;
	int err_line;
};

/* A hook. */
typedef int (*pc_hook_fn)(void *instance, struct pc_call *call, struct pc_verdict *v);

/* The descriptor: export it as PC_PLUGIN_SYMBOL. Any hook may be NULL. */
struct pc_plugin {
	/* PC_PLUGIN_ABI_INIT: these three stay first in every major version. */
	unsigned abi_major; /* PC_ABI_MAJOR */
	unsigned abi_minor; /* the oldest minor of the host the plugin needs */
	size_t struct_size; /* sizeof(struct pc_plugin) as the plugin was built */
	const char *name; /* for logs: "access" */
	const char *version;
	/* keys - the section keys init accepts, NULL-terminated; the host
	 * refuses any other with "file:line: unknown key". NULL: the plugin
	 * checks keys itself. */
	const char *const *keys;

	/* init - make an instance; 0, or -1 with in->err filled in. */
	int (*init)(struct pc_init *in, void **instance);
	/* fini - the instance is no longer used (at exit). */
	void (*fini)(void *instance);

	pc_hook_fn connect, helo, mail, rcpt, data;
	/* reset - the transaction ended (delivered, refused, RSET, new HELO,
	 * disconnect): free tx_data. close - the session ended: free
	 * session_data. Neither answers. */
	void (*reset)(void *instance, struct pc_call *call);
	void (*close)(void *instance, struct pc_call *call);

	/* reload - SIGHUP: read again what the instance was built from (list
	 * files, scripts). 0, or -1 with a message in err, and then the
	 * instance must go on exactly as before. Sessions already running may
	 * finish with what they started with. NULL: nothing to reload. */
	int (*reload)(void *instance, char *err, size_t errlen);

	/* ---- ABI 2.1 ---- */
	/* on_error - what a failure of this plugin becomes in a section that
	 * does not set on_error: "tempfail", "accept" or "reject"; NULL: the
	 * top-level on_error. A plugin whose outage must not stop mail
	 * (greylist, ratelimit) says "accept". */
	const char *on_error;
};

#endif
