/*
 * oldabi.c - a test plugin as ABI 1 laid its descriptor out.
 *
 * Exports portcullis_plugin in the ABI 1 layout (one unsigned "abi" = 1
 * first, then the name), written out here because plugin.h no longer
 * describes it: the loader must refuse it, saying it was built for ABI 1
 * and which ABI this portcullis speaks. Nothing here is ever called.
 */
#include <stddef.h>

#include <portcullis/plugin.h>

/* The head of the ABI 1 descriptor. */
struct oldabi_plugin {
	unsigned abi;
	const char *name;
	const char *version;
	const char *const *keys;
	int (*init)(struct pc_init *in, void **instance);
	void (*fini)(void *instance);
};

static int oldabi_init(struct pc_init *, void **);

const struct oldabi_plugin portcullis_plugin = {
    .abi = 1,
    .name = "oldabi",
    .version = "0.9",
    .init = oldabi_init,
};

/* oldabi_init - would make an instance; must never run */
static int
oldabi_init(struct pc_init *in, void **instance)
{
	(void)in;
	*instance = NULL;
	return 0;
}
