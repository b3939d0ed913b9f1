/*
 * initwhere.c - a test plugin that says where its init and fini run.
 *
 * Exports portcullis_plugin. init logs "initwhere: init pid=P uid=U
 * check_only=C" and fini "initwhere: fini pid=P", so that a test can tell
 * the master's check from a worker's instance (plugin.h, PROCESSES AND
 * PRIVILEGE). It takes no keys and never decides anything.
 */
#include <unistd.h>

#include <portcullis/plugin.h>

struct initwhere {
	const struct pc_host *host;
	struct pc_instance *self;
};

static int initwhere_init(struct pc_init *, void **);
static void initwhere_fini(void *);

static const char *const initwhere_keys[] = {
    NULL,
};

static struct initwhere one;

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "initwhere",
    .version = "1.0",
    .keys = initwhere_keys,
    .init = initwhere_init,
    .fini = initwhere_fini,
};

/* initwhere_init - log the process, its user and check_only */
static int
initwhere_init(struct pc_init *in, void **instance)
{
	one.host = in->host;
	one.self = in->self;
	in->host->log(in->self, NULL, PC_LOG_INFO, "initwhere: init pid=%ld uid=%ld check_only=%d",
	    (long)getpid(), (long)getuid(), in->check_only);
	*instance = &one;
	return 0;
}

/* initwhere_fini - log the process */
static void
initwhere_fini(void *instance)
{
	struct initwhere *w = instance;

	w->host->log(w->self, NULL, PC_LOG_INFO, "initwhere: fini pid=%ld", (long)getpid());
}
