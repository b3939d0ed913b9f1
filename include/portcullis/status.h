/*
 * portcullis/status.h - the return vocabulary shared by every part of portcullis.
 *
 * A function that can finish, wait or fail answers with one of these. The SMTP
 * reply to send, when there is one, travels separately in a struct (STYLE.md, 4).
 */
#ifndef PORTCULLIS_STATUS_H
#define PORTCULLIS_STATUS_H

enum pc_status {
	PC_OK = 0, /* done, go on */
	PC_AGAIN = 1, /* needs more input, or will complete later */
	PC_DONE = 2, /* a unit (line, reply, message) is complete */
	PC_ERROR = -1, /* failed; the reason was recorded by the callee */
};

#endif
