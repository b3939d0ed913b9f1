/*
 * newminor.c - a test plugin that needs a newer minor ABI than the host's.
 *
 * Exports portcullis_plugin with abi_minor = PC_ABI_MINOR + 1: it may call
 * host functions this host does not have, so the loader must refuse it and
 * name both versions. Nothing here is ever called.
 */
#include <portcullis/plugin.h>

static int newminor_init(struct pc_init *, void **);

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT_MINOR(PC_ABI_MINOR + 1),
    .name = "newminor",
    .version = "1.0",
    .init = newminor_init,
};

/* newminor_init - would make an instance; must never run */
static int
newminor_init(struct pc_init *in, void **instance)
{
	(void)in;
	*instance = NULL;
	return 0;
}
