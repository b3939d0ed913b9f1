/*
 * replies.h - every fixed reply the proxy itself sends, in one typed table
 * (replies.c), so "what the client sees" is decided here and nowhere else
 * (STYLE.md, 4): its code, enhanced status code, text, whether our host
 * name goes before the text, and whether the connection closes after it.
 * Replies the backend sends are relayed as the backend wrote them.
 */
#ifndef PORTCULLIS_REPLIES_H
#define PORTCULLIS_REPLIES_H

#include <stddef.h>

struct reply {
	unsigned short code;
	const char *status; /* the enhanced status code (RFC 3463), or NULL */
	const char *text;
	unsigned char host; /* our host name goes before the text */
	unsigned char closes; /* the connection closes after it (RFC 5321 §3.8) */
};

enum reply_id {
	REPLY_BANNER,
	REPLY_BYE,
	REPLY_HELP,
	REPLY_OKAY,
	REPLY_VRFY,
	REPLY_DATA_GO,
	REPLY_TLS_GO,
	REPLY_BACKEND_DOWN,
	REPLY_BACKEND_LOST_CLOSE,
	REPLY_TOO_MANY_CONN,
	REPLY_TOO_MANY_CONN_IP,
	REPLY_TIMEOUT,
	REPLY_TOO_MANY_ERRORS,
	REPLY_SHUTDOWN,
	REPLY_BACKEND_PROTOCOL,
	REPLY_BACKEND_XCLIENT,
	REPLY_PIPELINING,
	REPLY_FORBIDDEN_CMD,
	REPLY_BACKEND_LOST,
	REPLY_BACKEND_TIMEOUT,
	REPLY_BACKEND_ERROR,
	REPLY_LOCAL_ERROR,
	REPLY_TOO_MANY_RCPT,
	REPLY_LINE_TOO_LONG,
	REPLY_UNKNOWN,
	REPLY_BAD_SYNTAX,
	REPLY_BAD_UTF8,
	REPLY_NEED_SMTPUTF8,
	REPLY_AUTH_BAD_B64,
	REPLY_AUTH_BAD_MECH,
	REPLY_DUP_PARAM,
	REPLY_HELO_SYNTAX,
	REPLY_EHLO_SYNTAX,
	REPLY_MAIL_SYNTAX,
	REPLY_RCPT_SYNTAX,
	REPLY_VRFY_SYNTAX,
	REPLY_BAD_SENDER,
	REPLY_BAD_RCPT,
	REPLY_PATH_TOO_LONG,
	REPLY_BAD_PARAM,
	REPLY_NO_ARGS,
	REPLY_NOT_IMPL,
	REPLY_NEED_HELO,
	REPLY_NESTED_MAIL,
	REPLY_TLS_ACTIVE,
	REPLY_AUTH_NOT_ENABLED,
	REPLY_AUTH_IN_TX,
	REPLY_AUTH_TWICE,
	REPLY_AUTH_SYNTAX,
	REPLY_NEED_TLS,
	REPLY_NEED_MAIL,
	REPLY_NEED_RCPT,
	REPLY_REFUSED_CMD,
	REPLY_BAD_LINE_ENDS,
	REPLY_NUL_IN_MESSAGE,
	REPLY_LONG_DATA_LINE,
	REPLY_TOO_BIG,
	REPLY_HEADERS_TOO_BIG,
	REPLY_NO_VALID_RCPT,
	REPLY_PARAM_UNSUPPORTED,
	REPLY_DROP_MAIL,
	REPLY_DROP_RCPT,
	REPLY_DROP_DATA,
	REPLY_FILTER_ERROR_TEMPFAIL,
	REPLY_FILTER_ERROR_TEMPFAIL_CONNECT,
	REPLY_FILTER_ERROR_REJECT,
	REPLY_FILTER_ERROR_REJECT_CONNECT,
	REPLY_COUNT,
};

extern const struct reply replies[REPLY_COUNT];

/* reply_line - "CODE STATUS [host ]text" (no CR LF) into buf; returns buf. */
const char *reply_line(const struct reply *r, const char *host, char *buf, size_t size);

/* R_NAME: the table's entry, typed. */
#define R_BANNER (&replies[REPLY_BANNER])
#define R_BYE (&replies[REPLY_BYE])
#define R_HELP (&replies[REPLY_HELP])
#define R_OKAY (&replies[REPLY_OKAY])
#define R_VRFY (&replies[REPLY_VRFY])
#define R_DATA_GO (&replies[REPLY_DATA_GO])
#define R_TLS_GO (&replies[REPLY_TLS_GO])
#define R_BACKEND_DOWN (&replies[REPLY_BACKEND_DOWN])
#define R_BACKEND_LOST_CLOSE (&replies[REPLY_BACKEND_LOST_CLOSE])
#define R_TOO_MANY_CONN (&replies[REPLY_TOO_MANY_CONN])
#define R_TOO_MANY_CONN_IP (&replies[REPLY_TOO_MANY_CONN_IP])
#define R_TIMEOUT (&replies[REPLY_TIMEOUT])
#define R_TOO_MANY_ERRORS (&replies[REPLY_TOO_MANY_ERRORS])
#define R_SHUTDOWN (&replies[REPLY_SHUTDOWN])
#define R_BACKEND_PROTOCOL (&replies[REPLY_BACKEND_PROTOCOL])
#define R_BACKEND_XCLIENT (&replies[REPLY_BACKEND_XCLIENT])
#define R_PIPELINING (&replies[REPLY_PIPELINING])
#define R_FORBIDDEN_CMD (&replies[REPLY_FORBIDDEN_CMD])
#define R_BACKEND_LOST (&replies[REPLY_BACKEND_LOST])
#define R_BACKEND_TIMEOUT (&replies[REPLY_BACKEND_TIMEOUT])
#define R_BACKEND_ERROR (&replies[REPLY_BACKEND_ERROR])
#define R_LOCAL_ERROR (&replies[REPLY_LOCAL_ERROR])
#define R_TOO_MANY_RCPT (&replies[REPLY_TOO_MANY_RCPT])
#define R_LINE_TOO_LONG (&replies[REPLY_LINE_TOO_LONG])
#define R_UNKNOWN (&replies[REPLY_UNKNOWN])
#define R_BAD_SYNTAX (&replies[REPLY_BAD_SYNTAX])
#define R_BAD_UTF8 (&replies[REPLY_BAD_UTF8])
#define R_NEED_SMTPUTF8 (&replies[REPLY_NEED_SMTPUTF8])
#define R_AUTH_BAD_B64 (&replies[REPLY_AUTH_BAD_B64])
#define R_AUTH_BAD_MECH (&replies[REPLY_AUTH_BAD_MECH])
#define R_DUP_PARAM (&replies[REPLY_DUP_PARAM])
#define R_HELO_SYNTAX (&replies[REPLY_HELO_SYNTAX])
#define R_EHLO_SYNTAX (&replies[REPLY_EHLO_SYNTAX])
#define R_MAIL_SYNTAX (&replies[REPLY_MAIL_SYNTAX])
#define R_RCPT_SYNTAX (&replies[REPLY_RCPT_SYNTAX])
#define R_VRFY_SYNTAX (&replies[REPLY_VRFY_SYNTAX])
#define R_BAD_SENDER (&replies[REPLY_BAD_SENDER])
#define R_BAD_RCPT (&replies[REPLY_BAD_RCPT])
#define R_PATH_TOO_LONG (&replies[REPLY_PATH_TOO_LONG])
#define R_BAD_PARAM (&replies[REPLY_BAD_PARAM])
#define R_NO_ARGS (&replies[REPLY_NO_ARGS])
#define R_NOT_IMPL (&replies[REPLY_NOT_IMPL])
#define R_NEED_HELO (&replies[REPLY_NEED_HELO])
#define R_NESTED_MAIL (&replies[REPLY_NESTED_MAIL])
#define R_TLS_ACTIVE (&replies[REPLY_TLS_ACTIVE])
#define R_AUTH_NOT_ENABLED (&replies[REPLY_AUTH_NOT_ENABLED])
#define R_AUTH_IN_TX (&replies[REPLY_AUTH_IN_TX])
#define R_AUTH_TWICE (&replies[REPLY_AUTH_TWICE])
#define R_AUTH_SYNTAX (&replies[REPLY_AUTH_SYNTAX])
#define R_NEED_TLS (&replies[REPLY_NEED_TLS])
#define R_NEED_MAIL (&replies[REPLY_NEED_MAIL])
#define R_NEED_RCPT (&replies[REPLY_NEED_RCPT])
#define R_REFUSED_CMD (&replies[REPLY_REFUSED_CMD])
#define R_BAD_LINE_ENDS (&replies[REPLY_BAD_LINE_ENDS])
#define R_NUL_IN_MESSAGE (&replies[REPLY_NUL_IN_MESSAGE])
#define R_LONG_DATA_LINE (&replies[REPLY_LONG_DATA_LINE])
#define R_TOO_BIG (&replies[REPLY_TOO_BIG])
#define R_HEADERS_TOO_BIG (&replies[REPLY_HEADERS_TOO_BIG])
#define R_NO_VALID_RCPT (&replies[REPLY_NO_VALID_RCPT])
#define R_PARAM_UNSUPPORTED (&replies[REPLY_PARAM_UNSUPPORTED])
#define R_DROP_MAIL (&replies[REPLY_DROP_MAIL])
#define R_DROP_RCPT (&replies[REPLY_DROP_RCPT])
#define R_DROP_DATA (&replies[REPLY_DROP_DATA])
#define R_FILTER_ERROR_TEMPFAIL (&replies[REPLY_FILTER_ERROR_TEMPFAIL])
#define R_FILTER_ERROR_TEMPFAIL_CONNECT (&replies[REPLY_FILTER_ERROR_TEMPFAIL_CONNECT])
#define R_FILTER_ERROR_REJECT (&replies[REPLY_FILTER_ERROR_REJECT])
#define R_FILTER_ERROR_REJECT_CONNECT (&replies[REPLY_FILTER_ERROR_REJECT_CONNECT])

/* Filter verdicts (DESIGN.md §3): the defaults when a filter gives no text,
 * as code, enhanced code and text (verdict.c puts them together). */
#define R_FILTER_REJECT_CODE 550
#define R_FILTER_REJECT_CONNECT_CODE 554
#define R_FILTER_REJECT_ENH "5.7.1"
#define R_FILTER_REJECT_TEXT "Rejected by policy"
#define R_FILTER_TEMPFAIL_CODE 451
#define R_FILTER_TEMPFAIL_CONNECT_CODE 421
#define R_FILTER_TEMPFAIL_ENH "4.7.1"
#define R_FILTER_TEMPFAIL_TEXT "Try again later"
#define R_FILTER_DISCONNECT_CODE 421
#define R_FILTER_DISCONNECT_ENH "4.7.0"
#define R_FILTER_DISCONNECT_TEXT "Closing connection"

#endif
