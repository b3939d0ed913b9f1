/*
 * failinit.c - a test plugin whose init always fails.
 *
 * Exports portcullis_plugin. init refuses with "cannot open the frobnicator"
 * and blames the line of the key frob (the section header when there is
 * none), so tests can check that the host reports file:line: [plugin NAME].
 */
#include <stdio.h>
#include <string.h>

#include <portcullis/plugin.h>

static int failinit_init(struct pc_init *, void **);

static const char *const failinit_keys[] = {
    "frob",
    NULL,
};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "failinit",
    .version = "1.0",
    .keys = failinit_keys,
    .init = failinit_init,
};

/* failinit_init - fail, pointing at the frob key */
static int
failinit_init(struct pc_init *in, void **instance)
{
	const struct pc_option *o;

	*instance = NULL;
	in->err_line = 0;
	for (o = in->options; o != NULL; o = o->next)
		if (strcmp(o->key, "frob") == 0)
			in->err_line = o->line;
	snprintf(in->err, in->errlen, "cannot open the frobnicator");
	return -1;
}
