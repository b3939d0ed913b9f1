/*
 * badabi.c - a test plugin built for an ABI the host does not speak.
 *
 * Exports portcullis_plugin with abi = PC_PLUGIN_ABI + 100: the loader must
 * refuse it and name both ABI numbers. Nothing here is ever called.
 */
#include <portcullis/plugin.h>

static int badabi_init(struct pc_init *, void **);

const struct pc_plugin portcullis_plugin = {
    .abi = PC_PLUGIN_ABI + 100,
    .name = "badabi",
    .version = "1.0",
    .keys = NULL,
    .init = badabi_init,
};

/* badabi_init - would make an instance; must never run */
static int
badabi_init(struct pc_init *in, void **instance)
{
	(void)in;
	*instance = NULL;
	return 0;
}
