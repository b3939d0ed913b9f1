/*
 * replies.c - the table of replies.h: every fixed reply the proxy sends.
 *
 * Exports replies and reply_line.
 */
#include <stdio.h>

#include "replies.h"

const struct reply replies[REPLY_COUNT] = {
    [REPLY_BANNER] = {220, NULL, "ESMTP", 1, 0},
    [REPLY_BYE] = {221, "2.0.0", "Bye", 0, 1},
    [REPLY_HELP] = {214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY", 0,
        0},
    [REPLY_OKAY] = {250, "2.0.0", "Ok", 0, 0},
    [REPLY_VRFY] = {252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery",
        0, 0},
    [REPLY_DATA_GO] = {354, NULL, "End data with <CR><LF>.<CR><LF>", 0, 0},
    [REPLY_TLS_GO] = {220, "2.0.0", "Ready to start TLS", 0, 0},
    [REPLY_BACKEND_DOWN] = {421, "4.4.1", "Service not available, try again later", 1, 1},
    [REPLY_BACKEND_LOST_CLOSE] = {421, "4.4.2", "Lost connection to mail server, closing", 1, 1},
    [REPLY_TOO_MANY_CONN] = {421, "4.7.0", "Too many connections, try again later", 1, 1},
    [REPLY_TOO_MANY_CONN_IP] = {421, "4.7.0",
        "Too many connections from your address, try again later", 1, 1},
    [REPLY_TIMEOUT] = {421, "4.4.2", "Error: timeout exceeded", 1, 1},
    [REPLY_TOO_MANY_ERRORS] = {421, "4.7.0", "Error: too many errors", 1, 1},
    [REPLY_SHUTDOWN] = {421, "4.3.2", "Service shutting down, try again later", 1, 1},
    [REPLY_BACKEND_PROTOCOL] = {421, "4.4.2", "Mail server protocol error, closing", 1, 1},
    [REPLY_BACKEND_XCLIENT] = {421, "4.4.1", "Service not available (mail server refused XCLIENT)",
        1, 1},
    [REPLY_PIPELINING] = {554, "5.5.0", "Error: SMTP protocol synchronization", 0, 1},
    [REPLY_FORBIDDEN_CMD] = {221, "2.7.0", "Error: I can break rules, too. Goodbye.", 0, 1},
    [REPLY_BACKEND_LOST] = {451, "4.4.2", "Lost connection to mail server, try again later", 0, 0},
    [REPLY_BACKEND_TIMEOUT] = {451, "4.4.2", "Mail server timed out, try again later", 0, 0},
    [REPLY_BACKEND_ERROR] = {451, "4.3.0", "Mail server error, try again later", 0, 0},
    [REPLY_LOCAL_ERROR] = {451, "4.3.0", "Local error in processing, try again later", 0, 0},
    [REPLY_TOO_MANY_RCPT] = {452, "4.5.3", "Error: too many recipients", 0, 0},
    [REPLY_LINE_TOO_LONG] = {500, "5.5.2", "Error: line too long", 0, 0},
    [REPLY_UNKNOWN] = {500, "5.5.2", "Error: command not recognized", 0, 0},
    [REPLY_BAD_SYNTAX] = {500, "5.5.2", "Error: bad syntax", 0, 0},
    [REPLY_BAD_UTF8] = {500, "5.5.2", "Error: bad UTF-8 syntax", 0, 0},
    [REPLY_NEED_SMTPUTF8] = {553, "5.6.7",
        "Error: a non-ASCII address needs MAIL FROM with SMTPUTF8", 0, 0},
    [REPLY_AUTH_BAD_B64] = {501, "5.5.2", "Invalid base64 data in AUTH response", 0, 0},
    [REPLY_AUTH_BAD_MECH] = {501, "5.5.4", "Error: invalid AUTH mechanism name", 0, 0},
    [REPLY_DUP_PARAM] = {501, "5.5.4", "Error: parameter given twice", 0, 0},
    [REPLY_HELO_SYNTAX] = {501, "5.5.4", "Syntax: HELO hostname", 0, 0},
    [REPLY_EHLO_SYNTAX] = {501, "5.5.4", "Syntax: EHLO hostname", 0, 0},
    [REPLY_MAIL_SYNTAX] = {501, "5.5.4", "Syntax: MAIL FROM:<address>", 0, 0},
    [REPLY_RCPT_SYNTAX] = {501, "5.5.4", "Syntax: RCPT TO:<address>", 0, 0},
    [REPLY_VRFY_SYNTAX] = {501, "5.5.4", "Syntax: VRFY address", 0, 0},
    [REPLY_BAD_SENDER] = {501, "5.1.7", "Bad sender address syntax", 0, 0},
    [REPLY_BAD_RCPT] = {501, "5.1.3", "Bad recipient address syntax", 0, 0},
    [REPLY_PATH_TOO_LONG] = {501, "5.5.2", "Error: address too long", 0, 0},
    [REPLY_BAD_PARAM] = {501, "5.5.4", "Error: bad parameter syntax", 0, 0},
    [REPLY_NO_ARGS] = {501, "5.5.4", "Syntax error: no arguments allowed", 0, 0},
    [REPLY_NOT_IMPL] = {502, "5.5.1", "Error: command not implemented", 0, 0},
    [REPLY_NEED_HELO] = {503, "5.5.1", "Error: send HELO/EHLO first", 0, 0},
    [REPLY_NESTED_MAIL] = {503, "5.5.1", "Error: nested MAIL command", 0, 0},
    [REPLY_TLS_ACTIVE] = {503, "5.5.1", "Error: TLS already active", 0, 0},
    [REPLY_AUTH_NOT_ENABLED] = {503, "5.5.1", "Error: authentication not enabled", 0, 0},
    [REPLY_AUTH_IN_TX] = {503, "5.5.1", "Error: MAIL transaction in progress", 0, 0},
    [REPLY_AUTH_TWICE] = {503, "5.5.1", "Error: already authenticated", 0, 0},
    [REPLY_AUTH_SYNTAX] = {501, "5.5.4", "Syntax: AUTH mechanism [initial-response]", 0, 0},
    [REPLY_NEED_TLS] = {530, "5.7.0", "Must issue a STARTTLS command first", 0, 0},
    [REPLY_NEED_MAIL] = {503, "5.5.1", "Error: need MAIL command", 0, 0},
    [REPLY_NEED_RCPT] = {503, "5.5.1", "Error: need RCPT command", 0, 0},
    [REPLY_REFUSED_CMD] = {550, "5.7.0", "Error: insufficient authorization", 0, 0},
    [REPLY_BAD_LINE_ENDS] = {550, "5.5.2",
        "Error: bare <CR> or <LF> in message, use <CR><LF> line endings", 0, 0},
    [REPLY_NUL_IN_MESSAGE] = {550, "5.6.0", "Error: NUL character in message", 0, 0},
    [REPLY_LONG_DATA_LINE] = {550, "5.5.2", "Error: message line too long", 0, 0},
    [REPLY_TOO_BIG] = {552, "5.3.4", "Error: message too big", 0, 0},
    [REPLY_HEADERS_TOO_BIG] = {552, "5.3.4", "Error: message header section too big", 0, 0},
    [REPLY_NO_VALID_RCPT] = {554, "5.5.1", "Error: no valid recipients", 0, 0},
    [REPLY_PARAM_UNSUPPORTED] = {555, "5.5.4", "Error: unsupported parameter", 0, 0},
    [REPLY_DROP_MAIL] = {250, "2.1.0", "Ok", 0, 0},
    [REPLY_DROP_RCPT] = {250, "2.1.5", "Ok", 0, 0},
    [REPLY_DROP_DATA] = {250, "2.0.0", "Ok", 0, 0},
    [REPLY_FILTER_ERROR_TEMPFAIL] = {451, "4.3.0", "Temporary filter failure, try again later", 0,
        0},
    [REPLY_FILTER_ERROR_TEMPFAIL_CONNECT] = {421, "4.3.0",
        "Temporary filter failure, try again later", 1, 1},
    [REPLY_FILTER_ERROR_REJECT] = {550, "5.3.0", "Refused after a filter failure", 0, 0},
    [REPLY_FILTER_ERROR_REJECT_CONNECT] = {554, "5.3.0", "Refused after a filter failure", 0, 0},
};

/* reply_line - the reply as it goes on the wire, less the CR LF */
const char *
reply_line(const struct reply *r, const char *host, char *buf, size_t size)
{
	snprintf(buf, size, "%u%s%s%s%s %s", r->code, r->status != NULL ? " " : "",
	    r->status != NULL ? r->status : "", r->host ? " " : "", r->host ? host : "", r->text);
	return buf;
}
