/*
 * smtp_parse.h - pure SMTP parsers: command lines, paths with ESMTP parameters,
 * multi-line replies and EHLO capabilities. Nothing here touches a socket; every
 * function takes bytes and a length and may be fed untrusted input.
 */
#ifndef PORTCULLIS_SMTP_PARSE_H
#define PORTCULLIS_SMTP_PARSE_H

#include <stddef.h>

#include "portcullis/status.h"

/* RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the brackets. */
#define SMTP_PATH_MAX 256
/* More ESMTP parameters than this on one MAIL or RCPT is an attack, not mail. */
#define SMTP_PARAMS_MAX 16
/* RFC 5321 §4.5.3.1.5 allows 512 octets a reply line; backends exceed it a
 * little in the wild (long EHLO AUTH lists), so we accept up to this much. */
#define SMTP_REPLY_LINE_MAX 1000
/* Total reply text kept, all lines; a longer reply is treated as garbage. */
#define SMTP_REPLY_MAX 8192
/* Lines in one multi-line reply. */
#define SMTP_REPLY_LINES_MAX 64

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_HELP,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_BDAT,
	SMTP_VERB_XCLIENT,
	SMTP_VERB_XFORWARD,
	SMTP_VERB_ETRN,
	SMTP_VERB_COUNT
};

/* One command line, split; pointers point into the caller's line. */
struct smtp_cmd {
	enum smtp_verb verb;
	const char *verb_text; /* as the client wrote it */
	size_t verb_len;
	const char *arg; /* after the separating space(s); "" when none */
	size_t arg_len; /* trailing spaces removed */
};

/*
 * smtp_parse_command - split a command line (without its CRLF) into verb and
 * argument. The verb is matched case-insensitively (RFC 5321 §2.4). Returns
 * PC_OK, or PC_ERROR for an empty line or one holding a NUL or another control
 * character (TAB excepted).
 */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

/* The name of a verb in upper case, "UNKNOWN" for SMTP_VERB_UNKNOWN. */
const char *smtp_verb_name(enum smtp_verb verb);

struct smtp_param {
	const char *key; /* points into the parsed argument */
	size_t key_len;
	const char *value; /* NULL when the parameter has no "=value" */
	size_t value_len;
};

enum smtp_path_result {
	SMTP_PATH_OK = 0,
	SMTP_PATH_ESYNTAX, /* the keyword or the path is malformed */
	SMTP_PATH_ETOOLONG, /* longer than SMTP_PATH_MAX */
	SMTP_PATH_EPARAM, /* a malformed ESMTP parameter */
	SMTP_PATH_ETOOMANY, /* more than SMTP_PARAMS_MAX parameters */
};

struct smtp_path {
	/* The mailbox as local@domain, "" for the null path <>. A source route
	 * (<@a,@b:user@c>, RFC 5321 §4.1.2, obsolete) is removed; a quoted local
	 * part stays quoted as it was sent. */
	char addr[SMTP_PATH_MAX + 1];
	size_t addr_len;
	/* Offset of the domain in addr (after '@'); 0 with no domain (<> or
	 * <postmaster>). */
	size_t domain_off;
	struct smtp_param params[SMTP_PARAMS_MAX];
	size_t nparams;
};

/*
 * smtp_parse_path - parse the argument of MAIL or RCPT: "FROM:" or "TO:"
 * (keyword, case-insensitive), optional spaces, a path with or without angle
 * brackets, then SP-separated ESMTP parameters (RFC 5321 §4.1.2). The params
 * point into arg, which must outlive them. <postmaster> without a domain is
 * accepted when allow_postmaster is non-zero (RCPT only, §4.1.1.3); the null
 * path <> when allow_null is non-zero (MAIL only).
 */
enum smtp_path_result smtp_parse_path(const char *arg, size_t len, const char *keyword,
    int allow_null, int allow_postmaster, struct smtp_path *out);

/* Find a parameter by keyword, case-insensitively; NULL when absent. */
const struct smtp_param *smtp_path_param(const struct smtp_path *path, const char *key);

/*
 * A reply being read line by line: smtp_reply_init, then smtp_reply_feed with
 * each line (without its CRLF) until it returns PC_OK.
 */
struct smtp_reply {
	int code; /* 200..599 once the first line is read */
	size_t nlines; /* lines read so far */
	/* The text of each line (after "NNN " or "NNN-"), each ended by '\n'. */
	char text[SMTP_REPLY_MAX];
	size_t text_len;
};

void smtp_reply_init(struct smtp_reply *reply);

/*
 * smtp_reply_feed - add one reply line. Returns PC_AGAIN when a continuation
 * line ("250-...") was read and more are due, PC_OK when the last line was
 * read, PC_ERROR for garbage: no three-digit code, a code outside 200..599, a
 * code that changes between lines, a bad separator, control characters, or a
 * line or reply over the limits above.
 */
int smtp_reply_feed(struct smtp_reply *reply, const char *line, size_t len);

/* Line number n (0-based) of a complete reply, and its length; NULL past the end. */
const char *smtp_reply_line(const struct smtp_reply *reply, size_t n, size_t *len);

/* What a backend's EHLO reply offers, as far as portcullis cares. */
struct smtp_caps {
	unsigned pipelining : 1;
	unsigned size : 1;
	unsigned eightbitmime : 1;
	unsigned smtputf8 : 1;
	unsigned enhancedstatuscodes : 1;
	unsigned starttls : 1;
	unsigned auth : 1;
	unsigned xclient : 1;
	unsigned chunking : 1;
	unsigned dsn : 1;
	unsigned long long size_limit; /* SIZE's argument; 0 means "no limit" */
	char auth_mechs[256]; /* AUTH's argument, as sent */
	char xclient_attrs[256]; /* XCLIENT's argument, as sent */
};

/* Read the capabilities from a complete EHLO reply (the first line is the
 * greeting and is skipped). Keywords are case-insensitive (RFC 5321 §4.1.1.1). */
void smtp_caps_parse(const struct smtp_reply *reply, struct smtp_caps *caps);

/* The longest host name DNS can carry (RFC 1035 §2.3.4, without the root). */
#define SMTP_HOSTNAME_MAX 253

/* Is this a host name (letters, digits, '-' and '_' in labels of 1 to 63
 * octets, no label starting or ending in '-', a top label that is not all
 * digits)? A trailing dot is allowed. Used on names from DNS answers, which
 * go on into XCLIENT and logs. */
int smtp_valid_hostname(const char *name, size_t len);

/* smtp_utf8_check - 0 for ASCII, 1 for valid UTF-8 with non-ASCII characters
 * (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF),
 * -1 for anything else. */
int smtp_utf8_check(const char *s, size_t len);

/* smtp_base64_valid - is this base64 with correct padding and nothing else
 * (an AUTH answer, RFC 4954 §4)? An empty string is not. */
int smtp_base64_valid(const char *s, size_t len);

/* smtp_sasl_mech_valid - is this a SASL mechanism name (RFC 4422 §3.1)? */
int smtp_sasl_mech_valid(const char *s, size_t len);

#endif
