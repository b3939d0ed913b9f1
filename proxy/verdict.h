/*
 * verdict.h - what a filter's verdict becomes on the wire: the reply line
 * for an action, from the filter's own text or the defaults (DESIGN.md §3).
 * Pure: no I/O, so every bad reply shape has a unit test.
 */
#ifndef PORTCULLIS_VERDICT_H
#define PORTCULLIS_VERDICT_H

#include <stddef.h>

#include "portcullis/plugin.h"

/* Room for a reply line we build: the filter's 512 octets or a default. */
#define VERDICT_LINE_MAX (PC_REPLY_MAX + 1)

/*
 * verdict_reply - the reply line (without CR LF) for action at stage, from
 * given ("[CODE] [X.Y.Z] text", any part left out, or NULL for the default).
 * hostname goes into the 421 defaults. Returns 0, or -1 with *why saying
 * what is wrong with given (the caller logs it and takes on_error).
 * Actions that send no reply of their own (continue, accept, drop, fail)
 * give "" and 0.
 */
int verdict_reply(enum pc_action action, enum pc_stage stage, const char *given,
    const char *hostname, char *out, size_t outlen, const char **why);

/* verdict_action_name - "reject" etc., "invalid" for anything else. */
const char *verdict_action_name(int action);

/* verdict_stage_name - "connect" etc. */
const char *verdict_stage_name(int stage);

#endif
