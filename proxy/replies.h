/*
 * replies.h - every fixed reply the proxy itself sends, in one place, so "what
 * the client sees" is decided here and nowhere else (STYLE.md, 4). Replies the
 * backend sends are relayed as the backend wrote them. Texts that name the
 * host take it as the one "%s".
 */
#ifndef PORTCULLIS_REPLIES_H
#define PORTCULLIS_REPLIES_H

#define R_BANNER "220 %s ESMTP"
#define R_BYE "221 2.0.0 Bye"
#define R_HELP "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY"
#define R_OKAY "250 2.0.0 Ok"
#define R_VRFY "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
#define R_DATA_GO "354 End data with <CR><LF>.<CR><LF>"
#define R_TLS_GO "220 2.0.0 Ready to start TLS"

/* 421: we close the connection after sending these (RFC 5321 §3.8). */
#define R_BACKEND_DOWN "421 4.4.1 %s Service not available, try again later"
#define R_BACKEND_LOST_CLOSE "421 4.4.2 %s Lost connection to mail server, closing"
#define R_TOO_MANY_CONN "421 4.7.0 %s Too many connections, try again later"
#define R_TOO_MANY_CONN_IP "421 4.7.0 %s Too many connections from your address, try again later"
#define R_TIMEOUT "421 4.4.2 %s Error: timeout exceeded"
#define R_TOO_MANY_ERRORS "421 4.7.0 %s Error: too many errors"
#define R_SHUTDOWN "421 4.3.2 %s Service shutting down, try again later"
#define R_BACKEND_PROTOCOL "421 4.4.2 %s Mail server protocol error, closing"
#define R_BACKEND_XCLIENT "421 4.4.1 %s Service not available (mail server refused XCLIENT)"
/* Postfix's smtpd_forbid_unauth_pipelining and smtpd_forbidden_commands:
 * the connection is closed after these too. */
#define R_PIPELINING "554 5.5.0 Error: SMTP protocol synchronization"
#define R_FORBIDDEN_CMD "221 2.7.0 Error: I can break rules, too. Goodbye."

#define R_BACKEND_LOST "451 4.4.2 Lost connection to mail server, try again later"
#define R_BACKEND_TIMEOUT "451 4.4.2 Mail server timed out, try again later"
#define R_BACKEND_ERROR "451 4.3.0 Mail server error, try again later"
#define R_LOCAL_ERROR "451 4.3.0 Local error in processing, try again later"
#define R_TOO_MANY_RCPT "452 4.5.3 Error: too many recipients"

#define R_LINE_TOO_LONG "500 5.5.2 Error: line too long"
#define R_UNKNOWN "500 5.5.2 Error: command not recognized"
#define R_BAD_SYNTAX "500 5.5.2 Error: bad syntax"
#define R_BAD_UTF8 "500 5.5.2 Error: bad UTF-8 syntax"
#define R_NEED_SMTPUTF8 "553 5.6.7 Error: a non-ASCII address needs MAIL FROM with SMTPUTF8"
#define R_AUTH_BAD_B64 "501 5.5.2 Invalid base64 data in AUTH response"
#define R_AUTH_BAD_MECH "501 5.5.4 Error: invalid AUTH mechanism name"
#define R_DUP_PARAM "501 5.5.4 Error: parameter given twice"
#define R_HELO_SYNTAX "501 5.5.4 Syntax: HELO hostname"
#define R_EHLO_SYNTAX "501 5.5.4 Syntax: EHLO hostname"
#define R_MAIL_SYNTAX "501 5.5.4 Syntax: MAIL FROM:<address>"
#define R_RCPT_SYNTAX "501 5.5.4 Syntax: RCPT TO:<address>"
#define R_VRFY_SYNTAX "501 5.5.4 Syntax: VRFY address"
#define R_BAD_SENDER "501 5.1.7 Bad sender address syntax"
#define R_BAD_RCPT "501 5.1.3 Bad recipient address syntax"
#define R_PATH_TOO_LONG "501 5.5.2 Error: address too long"
#define R_BAD_PARAM "501 5.5.4 Error: bad parameter syntax"
#define R_NO_ARGS "501 5.5.4 Syntax error: no arguments allowed"
#define R_NOT_IMPL "502 5.5.1 Error: command not implemented"
#define R_NEED_HELO "503 5.5.1 Error: send HELO/EHLO first"
#define R_NESTED_MAIL "503 5.5.1 Error: nested MAIL command"
#define R_TLS_ACTIVE "503 5.5.1 Error: TLS already active"
#define R_AUTH_NOT_ENABLED "503 5.5.1 Error: authentication not enabled"
#define R_AUTH_IN_TX "503 5.5.1 Error: MAIL transaction in progress"
#define R_AUTH_TWICE "503 5.5.1 Error: already authenticated"
#define R_AUTH_SYNTAX "501 5.5.4 Syntax: AUTH mechanism [initial-response]"
#define R_NEED_TLS "530 5.7.0 Must issue a STARTTLS command first"
#define R_NEED_MAIL "503 5.5.1 Error: need MAIL command"
#define R_NEED_RCPT "503 5.5.1 Error: need RCPT command"
#define R_REFUSED_CMD "550 5.7.0 Error: insufficient authorization"
#define R_BAD_LINE_ENDS "550 5.5.2 Error: bare <CR> or <LF> in message, use <CR><LF> line endings"
#define R_NUL_IN_MESSAGE "550 5.6.0 Error: NUL character in message"
#define R_LONG_DATA_LINE "550 5.5.2 Error: message line too long"
#define R_TOO_BIG "552 5.3.4 Error: message too big"
#define R_HEADERS_TOO_BIG "552 5.3.4 Error: message header section too big"
#define R_NO_VALID_RCPT "554 5.5.1 Error: no valid recipients"
#define R_PARAM_UNSUPPORTED "555 5.5.4 Error: unsupported parameter"

/* Filter verdicts (DESIGN.md §3): the defaults when a filter gives no text,
 * as code, enhanced code and text, and the replies a drop pretends. */
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
#define R_DROP_MAIL "250 2.1.0 Ok"
#define R_DROP_RCPT "250 2.1.5 Ok"
#define R_DROP_DATA "250 2.0.0 Ok"

/* on_error (a filter failed, answered badly or too late): generic texts,
 * the detail goes to the log. */
#define R_FILTER_ERROR_TEMPFAIL "451 4.3.0 Temporary filter failure, try again later"
#define R_FILTER_ERROR_TEMPFAIL_CONNECT "421 4.3.0 %s Temporary filter failure, try again later"
#define R_FILTER_ERROR_REJECT "550 5.3.0 Refused after a filter failure"
#define R_FILTER_ERROR_REJECT_CONNECT "554 5.3.0 Refused after a filter failure"

#endif
