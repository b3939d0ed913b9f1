/*
 * portcullis-store.c - the store's admin tool (man 8 portcullis-store):
 * look up and delete greylisting triplets, list the auto-whitelisted
 * networks, and get, delete or list any key.
 *
 *	portcullis-store [-c FILE] [-s STORE] [-n NAME] COMMAND ...
 *
 * It reads the daemon's configuration (config.c) to find the store the
 * greylist section uses (its `store`, else the top-level one) and that
 * section's network sizes, opens the store through proxy/store.c as the
 * daemon does, and runs its own event loop for Redis. Triplet keys come
 * from plugins/greylist_key.h, the plugin's own functions, so the two
 * cannot disagree.
 *
 * Exit: 0 found or done, 1 not found, 2 a usage, configuration or store
 * error (with a message on stderr).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "store.h"

#include "../plugins/greylist_key.h"

#define EXIT_FOUND 0
#define EXIT_NOT_FOUND 1
#define EXIT_ERROR 2

/* What the greylist section (or its defaults) says. */
struct tool_greylist {
	unsigned v4bits, v6bits;
	unsigned long long awl;
	const char *store; /* the section's own, or NULL */
};

/* One request's answer, copied out of the callback. */
struct tool_answer {
	int done;
	enum pc_store_status status;
	char *value;
	size_t len;
	long long number;
	char error[512];
	long long integer; /* a command's integer reply */
};

/* A scan's keys, kept to act on after the scan (never during it). */
struct tool_keys {
	char **key;
	char **value;
	int64_t *ttl;
	size_t n, cap;
	int done;
	char error[512];
};

static struct event_base *tool_base;
static struct pc_store *tool_st;

static void usage(void) __attribute__((noreturn));
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void tool_answer_cb(void *arg, const struct pc_store_result *r);
static void tool_wait(int *done);
static int tool_get(const char *key, struct tool_answer *a);
static int tool_del(const char *key);
static int64_t tool_ttl(const char *key);
static int tool_scan_cb(
    void *arg, const char *key, size_t klen, const char *value, size_t vlen, int64_t ttl_ms);
static void tool_scan_done(void *arg, const char *error);
static void tool_scan(const char *prefix, struct tool_keys *k);
static void tool_keys_free(struct tool_keys *k);
static const char *tool_duration(int64_t ms, char *buf, size_t len);
static const char *tool_sender(const char *arg);
static void tool_triplet(
    const struct tool_greylist *g, char **argv, char *key, char *net, char *sender, char *rcpt);
static int cmd_lookup(const struct tool_greylist *g, char **argv);
static int cmd_delete(const struct tool_greylist *g, char **argv);
static int cmd_whitelist(const struct tool_greylist *g);
static int cmd_purge(const struct tool_greylist *g, const char *arg);
static int cmd_get(const char *key);
static int cmd_list(const char *prefix);
static void tool_config(const char *file, int file_given, const char *section, char *spec,
    size_t speclen, struct tool_greylist *g);
static unsigned long long tool_number(const char *key, const char *v, unsigned long long max);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: portcullis-store [-c FILE] [-s STORE] [-n NAME] COMMAND\n"
	    "commands:\n"
	    "  greylist lookup IP SENDER RCPT   a triplet's state (SENDER \"\" or \"<>\": null)\n"
	    "  greylist delete IP SENDER RCPT   forget a triplet (it is greylisted again)\n"
	    "  greylist whitelist               the networks' auto-whitelist counters\n"
	    "  greylist purge-network NET       forget a network's triplets and counter\n"
	    "  get KEY | del KEY | list PREFIX  any key of the store\n");
	exit(EXIT_ERROR);
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	fputs("portcullis-store: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	store_close_all();
	exit(EXIT_ERROR);
}

int
main(int argc, char **argv)
{
	const char *file = SYSCONFDIR "/portcullis.conf", *override = NULL, *section = NULL;
	char spec[1024] = "", err[1024];
	struct tool_greylist g = {24, 64, 5, NULL};
	int ch, file_given = 0, rc;

	while ((ch = getopt(argc, argv, "c:s:n:h")) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			file_given = 1;
			break;
		case 's':
			override = optarg;
			break;
		case 'n':
			section = optarg;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	log_init(CONFIG_LOG_STDERR, 0);
	tool_config(file, file_given || override == NULL, section, spec, sizeof(spec), &g);
	if (override != NULL)
		snprintf(spec, sizeof(spec), "%s", override);
	if ((tool_base = event_base_new()) == NULL)
		die("cannot make an event base");
	store_configure(tool_base, NULL);
	if ((tool_st = store_open(spec, err, sizeof(err))) == NULL)
		die("store %s: %s", spec, err);

	if (strcmp(argv[0], "greylist") == 0 && argc == 5 && strcmp(argv[1], "lookup") == 0)
		rc = cmd_lookup(&g, argv + 2);
	else if (strcmp(argv[0], "greylist") == 0 && argc == 5 && strcmp(argv[1], "delete") == 0)
		rc = cmd_delete(&g, argv + 2);
	else if (strcmp(argv[0], "greylist") == 0 && argc == 2 && strcmp(argv[1], "whitelist") == 0)
		rc = cmd_whitelist(&g);
	else if (strcmp(argv[0], "greylist") == 0 && argc == 3 &&
	    strcmp(argv[1], "purge-network") == 0)
		rc = cmd_purge(&g, argv[2]);
	else if (strcmp(argv[0], "get") == 0 && argc == 2)
		rc = cmd_get(argv[1]);
	else if (strcmp(argv[0], "del") == 0 && argc == 2)
		rc = tool_del(argv[1]) ? EXIT_FOUND : EXIT_NOT_FOUND;
	else if (strcmp(argv[0], "list") == 0 && argc == 2)
		rc = cmd_list(argv[1]);
	else {
		store_close_all();
		usage();
	}
	store_close_all();
	event_base_free(tool_base);
	return rc;
}

/* ---- configuration ---- */

/* tool_config - the store spec and the greylist section's keys from the
 * configuration file. Without -c and with -s, a missing default file is
 * fine (must is 0). */
static void
tool_config(const char *file, int must, const char *section, char *spec, size_t speclen,
    struct tool_greylist *g)
{
	struct config cfg;
	const struct config_section *s, *found = NULL;
	const struct config_kv *kv;
	char err[1024];

	if (!must && access(file, F_OK) != 0)
		return;
	memset(&cfg, 0, sizeof(cfg));
	config_defaults(&cfg);
	if (config_load(&cfg, file, err, sizeof(err)) != 0)
		die("%s", err);
	snprintf(spec, speclen, "%s", cfg.store);
	for (s = cfg.sections; s != NULL && found == NULL; s = s->next) {
		int greylist =
		    (strcmp(s->type, "plugin") == 0 && strcmp(s->name, "greylist") == 0) ||
		    strcmp(s->type, "greylist") == 0;
		if (section != NULL ? strcmp(s->name, section) == 0 : greylist)
			found = s;
	}
	if (section != NULL && found == NULL)
		die("%s: no section named %s", file, section);
	for (kv = found != NULL ? found->keys : NULL; kv != NULL; kv = kv->next) {
		if (strcmp(kv->key, "store") == 0)
			snprintf(spec, speclen, "%s", kv->value);
		else if (strcmp(kv->key, "ipv4_prefix") == 0)
			g->v4bits = (unsigned)tool_number(kv->key, kv->value, 32);
		else if (strcmp(kv->key, "ipv6_prefix") == 0)
			g->v6bits = (unsigned)tool_number(kv->key, kv->value, 128);
		else if (strcmp(kv->key, "auto_whitelist") == 0)
			g->awl = tool_number(kv->key, kv->value, ~0ULL);
	}
	config_free(&cfg);
}

/* tool_number - a section's number, as the plugin reads it */
static unsigned long long
tool_number(const char *key, const char *v, unsigned long long max)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || n > max)
		die("%s: bad value \"%s\"", key, v);
	return n;
}

/* ---- store requests, waited for on the tool's own loop ---- */

static void
tool_answer_cb(void *arg, const struct pc_store_result *r)
{
	struct tool_answer *a = arg;

	a->status = r->status;
	a->number = r->number;
	if (r->status == PC_STORE_OK && r->value != NULL) {
		if ((a->value = malloc(r->len + 1)) == NULL)
			die("out of memory");
		memcpy(a->value, r->value, r->len);
		a->value[r->len] = '\0';
		a->len = r->len;
	}
	if (r->reply != NULL && r->reply->type == PC_REPLY_INTEGER)
		a->integer = r->reply->integer;
	if (r->status == PC_STORE_FAILED)
		snprintf(a->error, sizeof(a->error), "%s", r->error ? r->error : "failed");
	a->done = 1;
}

/* tool_wait - run the loop until *done (memory and LMDB are done already) */
static void
tool_wait(int *done)
{
	while (!*done)
		if (event_base_loop(tool_base, EVLOOP_ONCE) != 0 && !*done)
			die("store %s: no answer", store_name(tool_st));
}

/* tool_get - key's value into a; 1 found, 0 missing; a failure is fatal */
static int
tool_get(const char *key, struct tool_answer *a)
{
	memset(a, 0, sizeof(*a));
	store_get(tool_st, key, strlen(key), tool_answer_cb, a);
	tool_wait(&a->done);
	if (a->status == PC_STORE_FAILED)
		die("store %s: %s", store_name(tool_st), a->error);
	return a->status == PC_STORE_OK;
}

/* tool_del - delete key; 1 deleted, 0 there was none */
static int
tool_del(const char *key)
{
	struct tool_answer a = {0};

	store_del(tool_st, key, strlen(key), tool_answer_cb, &a);
	tool_wait(&a.done);
	if (a.status == PC_STORE_FAILED)
		die("store %s: %s", store_name(tool_st), a.error);
	return a.status == PC_STORE_OK;
}

/* tool_ttl - key's time to live in ms (-1: none, -2: no key): PTTL on
 * Redis, else a scan of the one key */
static int64_t
tool_ttl(const char *key)
{
	struct tool_keys k = {0};
	int64_t ttl = -2;
	size_t i;

	if (strcmp(tool_st->be->scheme, "redis") == 0 || strcmp(tool_st->be->scheme, "unix") == 0) {
		const char *argv[] = {"PTTL", key};
		size_t lens[] = {4, strlen(key)};
		struct tool_answer a = {0};

		store_command(tool_st, 2, argv, lens, tool_answer_cb, &a);
		tool_wait(&a.done);
		if (a.status == PC_STORE_FAILED)
			die("store %s: %s", store_name(tool_st), a.error);
		free(a.value);
		return a.integer;
	}
	tool_scan(key, &k);
	for (i = 0; i < k.n; i++)
		if (strcmp(k.key[i], key) == 0)
			ttl = k.ttl[i];
	tool_keys_free(&k);
	return ttl;
}

static int
tool_scan_cb(
    void *arg, const char *key, size_t klen, const char *value, size_t vlen, int64_t ttl_ms)
{
	struct tool_keys *k = arg;

	if (k->n == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 64;
		if ((k->key = realloc(k->key, cap * sizeof(*k->key))) == NULL ||
		    (k->value = realloc(k->value, cap * sizeof(*k->value))) == NULL ||
		    (k->ttl = realloc(k->ttl, cap * sizeof(*k->ttl))) == NULL)
			die("out of memory");
		k->cap = cap;
	}
	if ((k->key[k->n] = strndup(key, klen)) == NULL ||
	    (k->value[k->n] = strndup(value != NULL ? value : "", vlen)) == NULL)
		die("out of memory");
	k->ttl[k->n] = ttl_ms;
	k->n++;
	return 0;
}

static void
tool_scan_done(void *arg, const char *error)
{
	struct tool_keys *k = arg;

	if (error != NULL)
		snprintf(k->error, sizeof(k->error), "%s", error);
	k->done = 1;
}

/* tool_scan - every live key starting with prefix, into k */
static void
tool_scan(const char *prefix, struct tool_keys *k)
{
	store_scan(tool_st, prefix, strlen(prefix), tool_scan_cb, tool_scan_done, k);
	tool_wait(&k->done);
	if (k->error[0] != '\0')
		die("store %s: %s", store_name(tool_st), k->error);
}

static void
tool_keys_free(struct tool_keys *k)
{
	size_t i;

	for (i = 0; i < k->n; i++) {
		free(k->key[i]);
		free(k->value[i]);
	}
	free(k->key);
	free(k->value);
	free(k->ttl);
}

/* tool_duration - "1d 2h 3m 4s" for ms; "none" for -1 */
static const char *
tool_duration(int64_t ms, char *buf, size_t len)
{
	long long s = (long long)ms / 1000;

	if (ms < 0)
		snprintf(buf, len, "none");
	else if (s >= 86400)
		snprintf(buf, len, "%lldd %lldh %lldm %llds", s / 86400, s % 86400 / 3600,
		    s % 3600 / 60, s % 60);
	else if (s >= 3600)
		snprintf(buf, len, "%lldh %lldm %llds", s / 3600, s % 3600 / 60, s % 60);
	else if (s >= 60)
		snprintf(buf, len, "%lldm %llds", s / 60, s % 60);
	else
		snprintf(buf, len, "%llds", s);
	return buf;
}

/* ---- greylist commands ---- */

/* tool_sender - "" and "<>" are the null sender; <a@b> is a@b */
static const char *
tool_sender(const char *arg)
{
	static char buf[GL_ADDR_MAX];
	size_t n = strlen(arg);

	if (n >= 2 && arg[0] == '<' && arg[n - 1] == '>' && n - 2 < sizeof(buf)) {
		memcpy(buf, arg + 1, n - 2);
		buf[n - 2] = '\0';
		return buf;
	}
	return arg;
}

/* tool_triplet - IP SENDER RCPT as the plugin keys them */
static void
tool_triplet(
    const struct tool_greylist *g, char **argv, char *key, char *net, char *sender, char *rcpt)
{
	char r[GL_ADDR_MAX];

	if (gl_network(argv[0], g->v4bits, g->v6bits, net, GL_NET_MAX) < 0)
		die("%s: not an IP address", argv[0]);
	if (gl_normalise_sender(tool_sender(argv[1]), sender, GL_ADDR_MAX) < 0)
		die("sender too long");
	snprintf(r, sizeof(r), "%s", tool_sender(argv[2]));
	if (r[0] == '\0' || gl_normalise_rcpt(r, rcpt, GL_ADDR_MAX) < 0)
		die("bad recipient \"%s\"", argv[2]);
	if (gl_triplet_key(net, sender, rcpt, key, GL_KEY_BUF) == 0)
		die("cannot make the key");
}

/* cmd_lookup - greylist lookup IP SENDER RCPT */
static int
cmd_lookup(const struct tool_greylist *g, char **argv)
{
	char key[GL_KEY_BUF], net[GL_NET_MAX], sender[GL_ADDR_MAX], rcpt[GL_ADDR_MAX];
	char awl[GL_KEY_BUF], when[64], d[64];
	struct tool_answer a, c;
	struct gl_state s;
	unsigned long long now = store_now_ms(), count = 0;
	time_t t;
	int found;

	tool_triplet(g, argv, key, net, sender, rcpt);
	printf("key: %s\ntriplet: %s <%s> <%s>\n", key, net, sender, rcpt);
	found = tool_get(key, &a);
	if (!found)
		printf("state: unknown (a first attempt would be greylisted)\n");
	else if (gl_state_parse(a.value, a.len, &s) < 0)
		printf("state: unreadable value \"%s\"\n", a.value);
	else {
		t = (time_t)(s.first_ms / 1000);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
		printf("state: %s\nfirst seen: %s (%s ago)\npasses: %llu\n",
		    s.passed ? "passed" : "greylisted (waiting for a retry)", when,
		    tool_duration(now > s.first_ms ? (int64_t)(now - s.first_ms) : 0, d, sizeof(d)),
		    s.passes);
		printf("time to live: %s\n", tool_duration(tool_ttl(key), d, sizeof(d)));
	}
	free(a.value);
	gl_awl_key(net, awl, sizeof(awl));
	if (tool_get(awl, &c) && gl_counter_parse(c.value, c.len, &count) == 0)
		printf("network %s: %llu passes%s\n", net, count,
		    g->awl > 0 && count >= g->awl ? ", auto-whitelisted" : "");
	free(c.value);
	return found ? EXIT_FOUND : EXIT_NOT_FOUND;
}

/* cmd_delete - greylist delete IP SENDER RCPT */
static int
cmd_delete(const struct tool_greylist *g, char **argv)
{
	char key[GL_KEY_BUF], net[GL_NET_MAX], sender[GL_ADDR_MAX], rcpt[GL_ADDR_MAX];

	tool_triplet(g, argv, key, net, sender, rcpt);
	if (!tool_del(key)) {
		printf("not found: %s\n", key);
		return EXIT_NOT_FOUND;
	}
	printf("deleted: %s\n", key);
	return EXIT_FOUND;
}

/* cmd_whitelist - every network's counter, and whether it is whitelisted */
static int
cmd_whitelist(const struct tool_greylist *g)
{
	struct tool_keys k = {0};
	unsigned long long count;
	char d[64];
	size_t i, listed = 0;

	tool_scan(GL_AWL_PREFIX, &k);
	for (i = 0; i < k.n; i++) {
		if (gl_counter_parse(k.value[i], strlen(k.value[i]), &count) < 0)
			continue;
		if (listed++ == 0)
			printf("%-43s %8s  %-18s %s\n", "NETWORK", "PASSES", "TTL", "STATE");
		printf("%-43s %8llu  %-18s %s\n", k.key[i] + strlen(GL_AWL_PREFIX), count,
		    tool_duration(k.ttl[i], d, sizeof(d)),
		    g->awl > 0 && count >= g->awl ? "auto-whitelisted" : "counting");
	}
	tool_keys_free(&k);
	return listed > 0 ? EXIT_FOUND : EXIT_NOT_FOUND;
}

/* cmd_purge - greylist purge-network NET: its triplets and counter */
static int
cmd_purge(const struct tool_greylist *g, const char *arg)
{
	char ip[GL_NET_MAX], net[GL_NET_MAX], prefix[GL_KEY_BUF], awl[GL_KEY_BUF];
	const char *slash = strchr(arg, '/');
	unsigned bits4 = g->v4bits, bits6 = g->v6bits;
	struct tool_keys k = {0};
	size_t i, gone = 0;

	if (strlen(arg) >= sizeof(ip))
		die("%s: not a network", arg);
	snprintf(ip, sizeof(ip), "%s", arg);
	if (slash != NULL) {
		ip[slash - arg] = '\0';
		bits4 = bits6 = (unsigned)tool_number("network", slash + 1, 128);
	}
	if (gl_network(ip, bits4, bits6, net, sizeof(net)) < 0)
		die("%s: not a network", arg);
	snprintf(prefix, sizeof(prefix), "%s%s,", GL_TRIPLET_PREFIX, net);
	tool_scan(prefix, &k);
	for (i = 0; i < k.n; i++)
		gone += (size_t)tool_del(k.key[i]);
	tool_keys_free(&k);
	gl_awl_key(net, awl, sizeof(awl));
	gone += (size_t)tool_del(awl);
	printf("%s: %zu keys deleted\n", net, gone);
	return gone > 0 ? EXIT_FOUND : EXIT_NOT_FOUND;
}

/* ---- generic commands ---- */

static int
cmd_get(const char *key)
{
	struct tool_answer a;
	char d[64];

	if (!tool_get(key, &a))
		return EXIT_NOT_FOUND;
	printf("%s\nttl: %s\n", a.value, tool_duration(tool_ttl(key), d, sizeof(d)));
	free(a.value);
	return EXIT_FOUND;
}

static int
cmd_list(const char *prefix)
{
	struct tool_keys k = {0};
	char d[64];
	size_t i, n;

	tool_scan(prefix, &k);
	for (i = 0; i < k.n; i++)
		printf("%s\t%s\t%s\n", k.key[i], k.value[i], tool_duration(k.ttl[i], d, sizeof(d)));
	n = k.n;
	tool_keys_free(&k);
	return n > 0 ? EXIT_FOUND : EXIT_NOT_FOUND;
}
