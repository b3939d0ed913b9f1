/*
 * portcullis/status.h - the return vocabulary shared by every part of portcullis.
 *
 * A function that can finish, wait or fail answers with one of these three,
 * as nginx's NGX_OK / NGX_AGAIN / NGX_ERROR: PC_OK is done (a unit - a
 * line, a reply, a message, a header - is complete), PC_AGAIN needs more
 * input or will complete later, PC_ERROR failed and the callee recorded why.
 * The SMTP reply to send, when there is one, travels separately (a
 * struct reply of replies.h, STYLE.md 4). Functions that answer a question
 * (is it valid? how many octets?) return a boolean or a count instead.
 */
#ifndef PORTCULLIS_STATUS_H
#define PORTCULLIS_STATUS_H

enum pc_status {
	PC_OK = 0, /* done: go on */
	PC_AGAIN = 1, /* needs more input, or will complete later */
	PC_ERROR = -1, /* failed; the reason was recorded by the callee */
};

#endif
