/*
 * options.c - a test plugin that reads its keys with the host's option
 * parsers (struct pc_host opt_*), so tests can check what a plugin gets.
 *
 * Exports portcullis_plugin. Keys: size, time, bool, list, cidr, file
 * and probe (addresses to look up in the cidr list). init logs what it
 * parsed, as "options: size=... time=... bool=... list=a|b cidr=n
 * probe=IP:1,IP:0 file=ok"; a bad value fails init with "KEY: " and the
 * host's message, at the key's line. At connect it logs "options:
 * client in cidr: 1" (or 0, or -1) for the client's address.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <portcullis/plugin.h>

struct options {
	const struct pc_host *host;
	struct pc_cidrs *cidrs;
};

static int options_init(struct pc_init *, void **);
static void options_fini(void *);
static int options_connect(void *, struct pc_call *, struct pc_verdict *);
static int options_key(
    struct options *o, struct pc_init *in, const struct pc_option *opt, char *out, size_t outlen);

static const char *const options_keys[] = {
    "size",
    "time",
    "bool",
    "list",
    "cidr",
    "probe",
    "file",
    NULL,
};

const struct pc_plugin portcullis_plugin = {
    PC_PLUGIN_ABI_INIT,
    .name = "options",
    .version = "1.0",
    .keys = options_keys,
    .init = options_init,
    .fini = options_fini,
    .connect = options_connect,
};

/* options_key - parse one key into a piece of the summary line */
static int
options_key(
    struct options *o, struct pc_init *in, const struct pc_option *opt, char *out, size_t outlen)
{
	const struct pc_host *h = o->host;
	char err[256];
	unsigned long long v;
	int b, r = 0;

	if (strcmp(opt->key, "size") == 0 &&
	    (r = h->opt_size(opt->value, &v, err, sizeof(err))) == 0)
		snprintf(out, outlen, " size=%llu", v);
	else if (strcmp(opt->key, "time") == 0 &&
	    (r = h->opt_time(opt->value, &v, err, sizeof(err))) == 0)
		snprintf(out, outlen, " time=%llu", v);
	else if (strcmp(opt->key, "bool") == 0 &&
	    (r = h->opt_bool(opt->value, &b, err, sizeof(err))) == 0)
		snprintf(out, outlen, " bool=%d", b);
	else if (strcmp(opt->key, "file") == 0 &&
	    (r = h->opt_file(opt->value, err, sizeof(err))) == 0)
		snprintf(out, outlen, " file=ok");
	else if (strcmp(opt->key, "cidr") == 0 &&
	    (r = h->opt_cidr(opt->value, &o->cidrs, err, sizeof(err))) == 0)
		snprintf(out, outlen, " cidr=ok");
	else if (strcmp(opt->key, "list") == 0 || strcmp(opt->key, "probe") == 0) {
		const char *cur = opt->value, *item;
		size_t len, used = (size_t)snprintf(out, outlen, " %s=", opt->key);
		char ip[64];

		for (int n = 0; h->opt_list(&cur, &item, &len) && used < outlen; n++) {
			if (strcmp(opt->key, "list") == 0) {
				used += (size_t)snprintf(out + used, outlen - used, "%s%.*s",
				    n ? "|" : "", (int)len, item);
				continue;
			}
			snprintf(ip, sizeof(ip), "%.*s", (int)len, item);
			used += (size_t)snprintf(out + used, outlen - used, "%s%s:%d", n ? "," : "",
			    ip, h->opt_cidr_match(o->cidrs, ip));
		}
	}
	if (r != 0) {
		snprintf(in->err, in->errlen, "%s: %s", opt->key, err);
		in->err_line = opt->line;
		return -1;
	}
	return 0;
}

/* options_init - every key through the host's parsers */
static int
options_init(struct pc_init *in, void **instance)
{
	struct options *o = calloc(1, sizeof(*o));
	const struct pc_option *opt;
	char line[2048] = "options:", piece[512];

	if (o == NULL) {
		snprintf(in->err, in->errlen, "out of memory");
		return -1;
	}
	o->host = in->host;
	for (opt = in->options; opt != NULL; opt = opt->next) {
		piece[0] = '\0';
		if (options_key(o, in, opt, piece, sizeof(piece)) != 0) {
			options_fini(o);
			return -1;
		}
		strncat(line, piece, sizeof(line) - strlen(line) - 1);
	}
	in->host->log(in->self, NULL, PC_LOG_INFO, "%s", line);
	*instance = o;
	return 0;
}

/* options_fini - the cidr list goes back to the host */
static void
options_fini(void *instance)
{
	struct options *o = instance;

	o->host->opt_cidr_free(o->cidrs);
	free(o);
}

/* options_connect - is the client in the cidr list? */
static int
options_connect(void *instance, struct pc_call *call, struct pc_verdict *v)
{
	struct options *o = instance;

	o->host->log(NULL, call, PC_LOG_INFO, "options: client in cidr: %d",
	    o->host->opt_cidr_match(o->cidrs, o->host->get(call, PC_CLIENT_IP)));
	v->action = PC_CONTINUE;
	return PC_HOOK_DONE;
}
