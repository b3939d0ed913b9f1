/*
 * badabi.c - a test plugin built for an ABI major the host does not speak.
 *
 * Exports portcullis_plugin with abi_major = PC_ABI_MAJOR + 1 (a plugin from
 * the future): the loader must refuse it and name both versions. Nothing
 * here is ever called.
 */
#include <portcullis/plugin.h>

static int badabi_init(struct pc_init *, void **);

const struct pc_plugin portcullis_plugin = {
    .abi_major = PC_ABI_MAJOR + 1,
    .abi_minor = 0,
    .struct_size = sizeof(struct pc_plugin),
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
