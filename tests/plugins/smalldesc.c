/*
 * smalldesc.c - a test plugin with a smaller descriptor, as a plugin built
 * for an older minor ABI has.
 *
 * Exports portcullis_plugin: a descriptor whose struct_size ends after the
 * data hook, so reset, close and reload are not in it. Right behind it, in
 * the same object, sit reset and close functions that log "smalldesc: TRAP":
 * a host that read past struct_size would call them. The hooks it does have
 * log "smalldesc: hook NAME" and, at RCPT, reject a recipient whose address
 * contains "reject", so a test sees them run.
 */
#include <stddef.h>
#include <string.h>

#include <portcullis/plugin.h>

/* The descriptor up to the data hook, laid out as struct pc_plugin is. */
struct smalldesc_head {
	unsigned abi_major, abi_minor;
	size_t struct_size;
	const char *name;
	const char *version;
	const char *const *keys;
	int (*init)(struct pc_init *in, void **instance);
	void (*fini)(void *instance);
	pc_hook_fn connect, helo, mail, rcpt, data;
};

/* What is exported: the head, and traps where reset and close would be. */
struct smalldesc_object {
	struct smalldesc_head head;
	void (*reset)(void *instance, struct pc_call *call);
	void (*close)(void *instance, struct pc_call *call);
};

_Static_assert(offsetof(struct smalldesc_head, data) == offsetof(struct pc_plugin, data),
    "the head is laid out as struct pc_plugin");
_Static_assert(offsetof(struct smalldesc_object, reset) == offsetof(struct pc_plugin, reset),
    "the traps sit where reset and close are");
_Static_assert(sizeof(struct smalldesc_head) < sizeof(struct pc_plugin), "a smaller descriptor");

static int smalldesc_init(struct pc_init *, void **);
static int smalldesc_mail(void *, struct pc_call *, struct pc_verdict *);
static int smalldesc_rcpt(void *, struct pc_call *, struct pc_verdict *);
static void smalldesc_trap(void *, struct pc_call *);

static const struct pc_host *smalldesc_host;

const struct smalldesc_object portcullis_plugin = {
    .head =
        {
            .abi_major = PC_ABI_MAJOR,
            .abi_minor = 0,
            .struct_size = sizeof(struct smalldesc_head),
            .name = "smalldesc",
            .version = "1.0",
            .init = smalldesc_init,
            .mail = smalldesc_mail,
            .rcpt = smalldesc_rcpt,
        },
    .reset = smalldesc_trap,
    .close = smalldesc_trap,
};

/* smalldesc_init - no state: the host table is all it keeps */
static int
smalldesc_init(struct pc_init *in, void **instance)
{
	smalldesc_host = in->host;
	*instance = NULL;
	return 0;
}

/* smalldesc_mail - log that it ran */
static int
smalldesc_mail(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	smalldesc_host->log(NULL, call, PC_LOG_INFO, "smalldesc: hook mail");
	return PC_HOOK_DONE;
}

/* smalldesc_rcpt - log, and reject "reject" recipients */
static int
smalldesc_rcpt(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	const char *rcpt = smalldesc_host->get(call, PC_RCPT);

	smalldesc_host->log(NULL, call, PC_LOG_INFO, "smalldesc: hook rcpt");
	if (rcpt != NULL && strstr(rcpt, "reject") != NULL) {
		v->action = PC_REJECT;
		v->reply = "550 5.1.1 smalldesc says no";
	}
	return PC_HOOK_DONE;
}

/* smalldesc_trap - must never run: it is past the descriptor's struct_size */
static void
smalldesc_trap(void *instance, struct pc_call *call)
{
	smalldesc_host->log(NULL, call, PC_LOG_ERR, "smalldesc: TRAP: a hook past struct_size ran");
}
