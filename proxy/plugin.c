/*
 * plugin.c - the loader: configuration sections into a chain of plugin
 * instances (see chain.h).
 *
 * Exports chain_load and chain_free. A section is "[plugin NAME]" (the
 * shared object NAME.so) or "[TYPE NAME]" (TYPE.so, instance NAME); "path ="
 * names the file instead. The host keeps path, observe, on_error and
 * filter_timeout for itself; the plugin gets the other keys, and an unknown
 * one is refused here when the plugin lists its keys (with the known key it
 * is likely a typo of). Anything wrong (no
 * file, no descriptor, another ABI major or a newer minor, a failing init)
 * refuses to start, with the section in the message. A descriptor is copied
 * into the instance, only as far as the plugin's struct_size says it goes.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "store.h"

/* The keys a section's message names: the host's four and the plugin's. */
#define PLUGIN_KEYS_MAX 64

static int load_error(char *err, size_t errlen, const struct config *cfg,
    const struct config_section *sec, int line, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int section_keys(struct pc_instance *f, const struct config *cfg,
    const struct config_section *sec, char *err, size_t errlen);
static int descriptor_copy(
    struct pc_plugin *out, const struct pc_plugin *d, const char *path, char *msg, size_t size);
static int instance_open(struct pc_instance *f, const struct config *cfg,
    const struct config_section *sec, char *err, size_t errlen);
static int unknown_key(const struct pc_instance *f, const struct config *cfg,
    const struct config_section *sec, const struct pc_option *o, char *err, size_t errlen);

/* load_error - "file:line: [type name]: message" */
static int
load_error(char *err, size_t errlen, const struct config *cfg, const struct config_section *sec,
    int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(err, errlen, "%s:%d: [%s %s]: ", cfg->file ? cfg->file : "config",
	    line ? line : sec->line, sec->type, sec->name);
	if (n < 0 || (size_t)n >= errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* section_keys - the host's keys, and the plugin's in order */
static int
section_keys(struct pc_instance *f, const struct config *cfg, const struct config_section *sec,
    char *err, size_t errlen)
{
	struct pc_option **tail = &f->options;

	f->on_error = cfg->on_error;
	f->timeout_ms = cfg->filter_timeout_ms;
	for (const struct config_kv *kv = sec->keys; kv != NULL; kv = kv->next) {
		struct pc_option *o;

		if (strcmp(kv->key, "path") == 0) {
			free(f->path);
			if ((f->path = strdup(kv->value)) == NULL)
				return load_error(err, errlen, cfg, sec, kv->line, "out of memory");
			continue;
		}
		if (strcmp(kv->key, "observe") == 0) {
			if (config_parse_bool(kv->value, &f->observe) != 0)
				return load_error(err, errlen, cfg, sec, kv->line,
				    "observe: bad value \"%s\": expected yes or no", kv->value);
			continue;
		}
		if (strcmp(kv->key, "on_error") == 0) {
			if (config_parse_on_error(kv->value, &f->on_error) != 0)
				return load_error(err, errlen, cfg, sec, kv->line,
				    "on_error: bad value \"%s\": expected tempfail, accept or reject",
				    kv->value);
			f->on_error_set = 1;
			continue;
		}
		if (strcmp(kv->key, "filter_timeout") == 0) {
			if (config_parse_time(kv->value, &f->timeout_ms) != 0 || f->timeout_ms == 0)
				return load_error(err, errlen, cfg, sec, kv->line,
				    "filter_timeout: bad value \"%s\": expected a time (e.g. "
				    "500ms, 30s)",
				    kv->value);
			continue;
		}
		/* A copy, in one block: instances keep their options, and the
		 * chain may outlive this configuration (a SIGHUP that leaves
		 * the sections as they were keeps the running chain). */
		size_t klen = strlen(kv->key) + 1, vlen = strlen(kv->value) + 1;
		if ((o = calloc(1, sizeof(*o) + klen + vlen)) == NULL)
			return load_error(err, errlen, cfg, sec, kv->line, "out of memory");
		o->key = memcpy((char *)(o + 1), kv->key, klen);
		o->value = memcpy((char *)(o + 1) + klen, kv->value, vlen);
		o->line = kv->line;
		*tail = o;
		tail = (struct pc_option **)&o->next;
	}
	return 0;
}

/*
 * descriptor_copy - check the plugin's ABI version (plugin.h, VERSIONS) and
 * copy its descriptor into *out, a zeroed one of this host's size: only the
 * struct_size octets the plugin has, so members a plugin built for an older
 * minor does not have read as NULL, and nothing past its object is read.
 * The version members are at the same place in every major version (ABI 1
 * had one unsigned "abi" first), so they are read before anything else.
 */
static int
descriptor_copy(
    struct pc_plugin *out, const struct pc_plugin *d, const char *path, char *msg, size_t size)
{
	size_t min = offsetof(struct pc_plugin, init) + sizeof(d->init);
	size_t n;

	memset(out, 0, sizeof(*out));
	if (d->abi_major != PC_ABI_MAJOR) {
		/* ABI 1 had no minor: what follows the major is not one. */
		if (d->abi_major < 2)
			snprintf(msg, size,
			    "plugin %s was built for ABI %u, this portcullis speaks ABI %u.%u: "
			    "rebuild it against this portcullis/plugin.h",
			    path, d->abi_major, PC_ABI_MAJOR, PC_ABI_MINOR);
		else
			snprintf(msg, size,
			    "plugin %s was built for ABI %u.%u, this portcullis speaks ABI %u.%u: "
			    "rebuild it against this portcullis/plugin.h",
			    path, d->abi_major, d->abi_minor, PC_ABI_MAJOR, PC_ABI_MINOR);
		return -1;
	}
	if (d->abi_minor > PC_ABI_MINOR) {
		snprintf(msg, size,
		    "plugin %s needs ABI %u.%u, this portcullis speaks ABI %u.%u: upgrade "
		    "portcullis (or build the plugin for an older minor)",
		    path, d->abi_major, d->abi_minor, PC_ABI_MAJOR, PC_ABI_MINOR);
		return -1;
	}
	if (d->struct_size < min) {
		snprintf(msg, size,
		    "plugin %s: the descriptor's struct_size (%zu) is too small (at least %zu: "
		    "use PC_PLUGIN_ABI_INIT)",
		    path, d->struct_size, min);
		return -1;
	}
	n = d->struct_size < sizeof(*out) ? d->struct_size : sizeof(*out);
	memcpy(out, d, n);
	return 0;
}

/* instance_open - dlopen the shared object and check its descriptor */
static int
instance_open(struct pc_instance *f, const struct config *cfg, const struct config_section *sec,
    char *err, size_t errlen)
{
	const char *so = strcmp(sec->type, "plugin") == 0 ? sec->name : sec->type;
	const struct pc_plugin *d;
	char buf[1200], msg[1400];

	if (f->path == NULL) {
		if (strchr(so, '/') != NULL || strcmp(so, "..") == 0)
			return load_error(err, errlen, cfg, sec, 0, "bad plugin name \"%s\"", so);
		snprintf(buf, sizeof(buf), "%s/%s.so", cfg->plugin_dir, so);
		if ((f->path = strdup(buf)) == NULL)
			return load_error(err, errlen, cfg, sec, 0, "out of memory");
	}
	/* RTLD_NOW: a missing symbol is found now, not mid-session. */
	if ((f->dl = dlopen(f->path, RTLD_NOW | RTLD_LOCAL)) == NULL)
		return load_error(
		    err, errlen, cfg, sec, 0, "cannot load %s: %s", f->path, dlerror());
	if ((d = dlsym(f->dl, PC_PLUGIN_SYMBOL)) == NULL)
		return load_error(err, errlen, cfg, sec, 0,
		    "%s is not a portcullis plugin: it has no %s descriptor", f->path,
		    PC_PLUGIN_SYMBOL);
	if (descriptor_copy(&f->desc, d, f->path, msg, sizeof(msg)) != 0)
		return load_error(err, errlen, cfg, sec, 0, "%s", msg);
	f->pl = &f->desc;
	if (f->pl->name == NULL || f->pl->init == NULL)
		return load_error(
		    err, errlen, cfg, sec, 0, "%s: the descriptor has no name or no init", f->path);
	/* ABI 2.1: the plugin's own default for on_error. */
	if (!f->on_error_set && f->pl->on_error != NULL &&
	    config_parse_on_error(f->pl->on_error, &f->on_error) != 0)
		return load_error(err, errlen, cfg, sec, 0,
		    "%s: the descriptor's on_error \"%s\" is not tempfail, accept or reject",
		    f->path, f->pl->on_error);
	if (f->pl->keys == NULL)
		return 0;
	for (const struct pc_option *o = f->options; o != NULL; o = o->next) {
		size_t i;
		for (i = 0; f->pl->keys[i] != NULL; i++) {
			if (strcmp(f->pl->keys[i], o->key) == 0)
				break;
		}
		if (f->pl->keys[i] == NULL)
			return unknown_key(f, cfg, sec, o, err, errlen);
	}
	return 0;
}

/* unknown_key - a key the plugin does not list: say which it takes, and
 * the one the key is likely a typo of */
static int
unknown_key(const struct pc_instance *f, const struct config *cfg, const struct config_section *sec,
    const struct pc_option *o, char *err, size_t errlen)
{
	static const char *const common[] = {"path", "observe", "on_error", "filter_timeout"};
	const char *names[PLUGIN_KEYS_MAX], *near;
	char known[600] = "", hint[200] = "";
	size_t n = 0;

	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
		names[n++] = common[i];
	for (size_t i = 0; f->pl->keys[i] != NULL && n < PLUGIN_KEYS_MAX; i++)
		names[n++] = f->pl->keys[i];
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(known);
		snprintf(known + len, sizeof(known) - len, "%s%s", i ? ", " : "", names[i]);
	}
	if ((near = config_suggest(o->key, names, n)) != NULL)
		snprintf(hint, sizeof(hint), ": did you mean %s?", near);
	return load_error(err, errlen, cfg, sec, o->line,
	    "unknown key \"%s\"%s (plugin %s takes: %s)", o->key, hint, f->pl->name, known);
}

/* chain_load - build the chain */
int
chain_load(struct chain **out, struct config *cfg, struct event_base *base, struct evdns_base *dns,
    int check_only, char *err, size_t errlen)
{
	struct chain *c = calloc(1, sizeof(*c));
	const struct config_section *sec;
	char msg0[600] = "";
	size_t n = 0;

	*out = NULL;
	if (c == NULL)
		return snprintf(err, errlen, "out of memory"), -1;
	chain_host_init(&c->host, base, dns);
	if (store_check_spec(cfg->store, msg0, sizeof(msg0)) != 0 ||
	    (c->store_default = strdup(cfg->store)) == NULL) {
		int line = config_key_line(cfg, "store");

		if (line > 0)
			snprintf(err, errlen, "%s:%d: store: %s", cfg->file ? cfg->file : "config",
			    line, msg0[0] != '\0' ? msg0 : "out of memory");
		else
			snprintf(err, errlen, "%s: store: %s", cfg->file ? cfg->file : "config",
			    msg0[0] != '\0' ? msg0 : "out of memory");
		free(c);
		return -1;
	}
	for (sec = cfg->sections; sec != NULL; sec = sec->next)
		n++;
	if (n > 0 && (c->f = calloc(n, sizeof(*c->f))) == NULL) {
		free(c->store_default);
		free(c);
		return snprintf(err, errlen, "out of memory"), -1;
	}
	for (sec = cfg->sections; sec != NULL; sec = sec->next) {
		struct pc_instance *f = &c->f[c->n];
		struct pc_init in = {0};
		char msg[CONFIG_ERR_MAX];

		for (size_t i = 0; i < c->n; i++) {
			if (strcmp(c->f[i].name, sec->name) == 0) {
				load_error(err, errlen, cfg, sec, 0,
				    "a section named \"%s\" already exists (line %d)", sec->name,
				    c->f[i].line);
				goto fail;
			}
		}
		c->n++;
		f->index = c->n - 1;
		f->chain = c;
		f->line = sec->line;
		if ((f->name = strdup(sec->name)) == NULL ||
		    (f->type = strdup(sec->type)) == NULL) {
			load_error(err, errlen, cfg, sec, 0, "out of memory");
			goto fail;
		}
		if (section_keys(f, cfg, sec, err, errlen) != 0 ||
		    instance_open(f, cfg, sec, err, errlen) != 0)
			goto fail;
		msg[0] = '\0';
		in.host = &c->host;
		in.self = f;
		in.name = f->name;
		in.file = cfg->file;
		in.line = sec->line;
		in.options = f->options;
		in.check_only = check_only;
		in.err = msg;
		in.errlen = sizeof(msg);
		if (f->pl->init(&in, &f->inst) != 0) {
			load_error(err, errlen, cfg, sec, in.err_line, "%s",
			    msg[0] ? msg : "the plugin's init failed");
			goto fail;
		}
		f->inited = 1;
		if (f->pl->connect)
			c->stages |= 1u << PC_STAGE_CONNECT;
		if (f->pl->helo)
			c->stages |= 1u << PC_STAGE_HELO;
		if (f->pl->mail)
			c->stages |= 1u << PC_STAGE_MAIL;
		if (f->pl->rcpt)
			c->stages |= 1u << PC_STAGE_RCPT;
		if (f->pl->data)
			c->stages |= 1u << PC_STAGE_DATA;
	}
	*out = c;
	return 0;
fail:
	chain_free(c);
	return -1;
}

/* chain_free - fini every instance. The shared objects stay mapped until
 * exit: a plugin may have handed libevent or libc pointers into itself. */
void
chain_free(struct chain *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++) {
		struct pc_instance *f = &c->f[i];
		struct pc_option *o, *next;

		if (f->inited && f->pl->fini != NULL)
			f->pl->fini(f->inst);
		chain_store_release(f);
		for (o = f->options; o != NULL; o = next) {
			next = (struct pc_option *)o->next;
			free(o);
		}
		free(f->name);
		free(f->type);
		free(f->path);
	}
	free(c->f);
	free(c->store_default);
	free(c);
}
