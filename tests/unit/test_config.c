/*
 * test_config.c - unit tests for proxy/config.c: defaults, every key of a full
 * file, comments and white space, filter sections, every error path with its
 * "file:line: " prefix, -o (config_set), config_check and the value parsers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define KB 1024ULL
#define MB (1024ULL * 1024)
#define GB (1024ULL * 1024 * 1024)

/* ------------------------------------------------------------------ */
/* helpers */

static int
parse(struct config *cfg, const char *text, char *err)
{
	config_defaults(cfg);
	err[0] = '\0';
	return config_parse(cfg, "t.conf", text, strlen(text), err, CONFIG_ERR_MAX);
}

/* text must be refused at line; the message must read "t.conf:LINE: ...". */
static void
check_err(const char *text, int line)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX], prefix[64];
	int rc;

	rc = parse(&cfg, text, err);
	if (rc != -1)
		fail_msg("accepted (rc %d): \"%s\"", rc, text);
	snprintf(prefix, sizeof(prefix), "t.conf:%d: ", line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("error \"%s\" does not begin with \"%s\" for \"%s\"", err, prefix, text);
	if (strlen(err) <= strlen(prefix))
		fail_msg("error \"%s\" has no message for \"%s\"", err, text);
	config_free(&cfg);
}

/* A one-line "key = value" file must be refused at line 1. */
static void
check_bad_value(const char *key, const char *value)
{
	char text[512];

	snprintf(text, sizeof(text), "%s = %s\n", key, value);
	check_err(text, 1);
}

static void
check_addr(const struct config_addr *a, const char *host, const char *port)
{
	assert_string_equal(a->host, host);
	assert_string_equal(a->port, port);
}

static void
check_kv(const struct config_kv *kv, const char *key, const char *value, int line)
{
	assert_non_null(kv);
	assert_string_equal(kv->key, key);
	assert_string_equal(kv->value, value);
	assert_int_equal(kv->line, line);
}

/* ------------------------------------------------------------------ */
/* defaults */

static void
test_defaults(void **state)
{
	struct config cfg;

	(void)state;
	memset(&cfg, 0x5a, sizeof(cfg));
	config_defaults(&cfg);
	/* as etc/portcullis.conf documents them */
	assert_int_equal(cfg.nlisten, 1);
	assert_int_equal(cfg.listen_is_default, 1);
	check_addr(&cfg.listen[0], "0.0.0.0", "25");
	assert_int_equal(cfg.have_backend, 0);
	assert_true(cfg.max_message_size == 50 * MB);
	assert_true(cfg.max_recipients == 1000);
	assert_true(cfg.max_connections == 1000);
	assert_true(cfg.max_connections_per_ip == 50);
	assert_true(cfg.max_line_length == 2048);
	assert_true(cfg.max_data_line_length == 65536);
	assert_true(cfg.max_errors == 20);
	assert_true(cfg.max_header_size == 256 * KB);
	assert_true(cfg.client_ipv6_prefix == 64);
	assert_true(cfg.max_client_buffer == 256 * KB);
	assert_int_equal(cfg.ntrusted_networks, 0); /* nobody is trusted */
	assert_true(cfg.timeout_ms == 300000);
	assert_true(cfg.data_timeout_ms == 600000);
	assert_true(cfg.backend_connect_timeout_ms == 30000);
	assert_true(cfg.backend_timeout_ms == 120000);
	assert_true(cfg.backend_data_timeout_ms == 600000);
	assert_true(cfg.shutdown_timeout_ms == 30000);
	assert_int_equal(cfg.bare_lf, CONFIG_BARE_LF_REJECT);
	assert_true(cfg.spool_memory == 1 * MB);
	assert_string_equal(cfg.spool_dir, "/tmp");
	assert_int_equal(cfg.log, CONFIG_LOG_STDERR);
	assert_int_equal(cfg.log_debug, 0);
	assert_null(cfg.sections);
	/* whatever the default host name is, it is a name */
	assert_true(strlen(cfg.hostname) > 0);
	assert_true(strlen(cfg.hostname) < CONFIG_HOST_MAX);
	config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* a full file */

static const char full_conf[] = "# portcullis test configuration\n" /* 1 */
                                "listen = 127.0.0.1:2525\n" /* 2 */
                                "listen = [::1]:2526\n" /* 3 */
                                "backend = 192.0.2.10:10025\n" /* 4 */
                                "hostname = mx.example.org\n" /* 5 */
                                "max_message_size = 20M\n" /* 6 */
                                "max_recipients = 123\n" /* 7 */
                                "max_connections = 456\n" /* 8 */
                                "max_connections_per_ip = 7\n" /* 9 */
                                "max_line_length = 4k\n" /* 10 */
                                "max_data_line_length = 998\n" /* 11 */
                                "max_errors = 9\n" /* 12 */
                                "timeout = 45s\n" /* 13 */
                                "data_timeout = 5m\n" /* 14 */
                                "backend_connect_timeout = 1500ms\n" /* 15 */
                                "backend_timeout = 2m\n" /* 16 */
                                "backend_data_timeout = 1h\n" /* 17 */
                                "shutdown_timeout = 12\n" /* 18 */
                                "bare_lf = normalize\n" /* 19 */
                                "spool_memory = 256k\n" /* 20 */
                                "spool_dir = /var/spool/portcullis\n" /* 21 */
                                "log = syslog\n" /* 22 */
                                "log_level = debug\n"; /* 23 */

static void
test_full(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&cfg, full_conf, err), 0);
	assert_non_null(cfg.file);
	assert_string_equal(cfg.file, "t.conf");
	/* the first listen replaces the default */
	assert_int_equal(cfg.nlisten, 2);
	assert_int_equal(cfg.listen_is_default, 0);
	check_addr(&cfg.listen[0], "127.0.0.1", "2525");
	check_addr(&cfg.listen[1], "::1", "2526");
	assert_int_equal(cfg.have_backend, 1);
	check_addr(&cfg.backend, "192.0.2.10", "10025");
	assert_string_equal(cfg.hostname, "mx.example.org");
	assert_true(cfg.max_message_size == 20 * MB);
	assert_true(cfg.max_recipients == 123);
	assert_true(cfg.max_connections == 456);
	assert_true(cfg.max_connections_per_ip == 7);
	assert_true(cfg.max_line_length == 4 * KB);
	assert_true(cfg.max_data_line_length == 998);
	assert_true(cfg.max_errors == 9);
	assert_true(cfg.timeout_ms == 45000);
	assert_true(cfg.data_timeout_ms == 300000);
	assert_true(cfg.backend_connect_timeout_ms == 1500);
	assert_true(cfg.backend_timeout_ms == 120000);
	assert_true(cfg.backend_data_timeout_ms == 3600000);
	assert_true(cfg.shutdown_timeout_ms == 12000);
	assert_int_equal(cfg.bare_lf, CONFIG_BARE_LF_NORMALIZE);
	assert_true(cfg.spool_memory == 256 * KB);
	assert_string_equal(cfg.spool_dir, "/var/spool/portcullis");
	assert_int_equal(cfg.log, CONFIG_LOG_SYSLOG);
	assert_int_equal(cfg.log_debug, 1);
	assert_null(cfg.sections);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), 0);
	config_free(&cfg);
}

/* The other value of each enum, and the values equal to the defaults. */
static void
test_enums(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&cfg, "bare_lf = reject\nlog = stderr\nlog_level = info\n", err), 0);
	assert_int_equal(cfg.bare_lf, CONFIG_BARE_LF_REJECT);
	assert_int_equal(cfg.log, CONFIG_LOG_STDERR);
	assert_int_equal(cfg.log_debug, 0);
	config_free(&cfg);
	/* and back: a later -o wins over the file */
	assert_int_equal(parse(&cfg, "log_level = debug\nbare_lf = normalize\n", err), 0);
	assert_int_equal(cfg.log_debug, 1);
	assert_int_equal(config_set(&cfg, "log_level", "info", 0, err, sizeof(err)), 0);
	assert_int_equal(cfg.log_debug, 0);
	assert_int_equal(config_set(&cfg, "bare_lf", "reject", 0, err, sizeof(err)), 0);
	assert_int_equal(cfg.bare_lf, CONFIG_BARE_LF_REJECT);
	config_free(&cfg);
}

/* The annotated sample parses, passes the check and documents the defaults. */
static void
test_sample_file(void **state)
{
	struct config cfg, def;
	char err[CONFIG_ERR_MAX];

	(void)state;
	if (access("etc/portcullis.conf", R_OK) != 0)
		fail_msg("run from the top of the tree: etc/portcullis.conf not found");
	config_defaults(&cfg);
	if (config_load(&cfg, "etc/portcullis.conf", err, sizeof(err)) != 0)
		fail_msg("etc/portcullis.conf: %s", err);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), 0);
	config_defaults(&def);
	assert_true(cfg.max_message_size == def.max_message_size);
	assert_true(cfg.max_recipients == def.max_recipients);
	assert_true(cfg.max_connections == def.max_connections);
	assert_true(cfg.max_connections_per_ip == def.max_connections_per_ip);
	assert_true(cfg.max_line_length == def.max_line_length);
	assert_true(cfg.max_data_line_length == def.max_data_line_length);
	assert_true(cfg.max_errors == def.max_errors);
	assert_true(cfg.max_client_buffer == def.max_client_buffer);
	assert_int_equal(cfg.ntrusted_networks, def.ntrusted_networks);
	assert_true(cfg.timeout_ms == def.timeout_ms);
	assert_true(cfg.data_timeout_ms == def.data_timeout_ms);
	assert_true(cfg.backend_connect_timeout_ms == def.backend_connect_timeout_ms);
	assert_true(cfg.backend_timeout_ms == def.backend_timeout_ms);
	assert_true(cfg.backend_data_timeout_ms == def.backend_data_timeout_ms);
	assert_true(cfg.shutdown_timeout_ms == def.shutdown_timeout_ms);
	assert_int_equal(cfg.bare_lf, def.bare_lf);
	assert_true(cfg.spool_memory == def.spool_memory);
	assert_string_equal(cfg.spool_dir, def.spool_dir);
	assert_int_equal(cfg.log, def.log);
	assert_int_equal(cfg.log_debug, def.log_debug);
	assert_int_equal(cfg.nlisten, 1);
	check_addr(&cfg.listen[0], "0.0.0.0", "25");
	config_free(&cfg);
	config_free(&def);
}

static void
test_load(void **state)
{
	char path[] = "/tmp/test_config_XXXXXX";
	struct config cfg;
	char err[CONFIG_ERR_MAX];
	int fd;
	FILE *f;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs("backend = 127.0.0.1:25\n\nmax_recipients = 42\nbogus = 1\n", f);
	fclose(f);
	config_defaults(&cfg);
	assert_int_equal(config_load(&cfg, path, err, sizeof(err)), -1);
	/* errors name the file as given */
	{
		char prefix[128];
		snprintf(prefix, sizeof(prefix), "%s:4: ", path);
		if (strncmp(err, prefix, strlen(prefix)) != 0)
			fail_msg("error \"%s\" does not begin with \"%s\"", err, prefix);
	}
	config_free(&cfg);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("backend = 127.0.0.1:25\n\nmax_recipients = 42\n", f);
	fclose(f);
	config_defaults(&cfg);
	assert_int_equal(config_load(&cfg, path, err, sizeof(err)), 0);
	assert_true(cfg.max_recipients == 42);
	assert_int_equal(cfg.have_backend, 1);
	assert_string_equal(cfg.file, path);
	config_free(&cfg);
	unlink(path);

	/* a missing file is an error with a message, not a crash */
	config_defaults(&cfg);
	err[0] = '\0';
	assert_int_equal(config_load(&cfg, path, err, sizeof(err)), -1);
	assert_true(strlen(err) > 0);
	config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* syntax: comments, blank lines, white space */

static void
test_syntax(void **state)
{
	static const char text[] = "# a full-line comment\n"
	                           "\n"
	                           "   # an indented comment\n"
	                           " \t \n"
	                           "hostname=a.example\n"
	                           "max_recipients   =   7   \n"
	                           "max_errors\t=\t3\t# a trailing comment\n"
	                           "max_connections = 11 # another\n"
	                           "spool_dir = /var/tmp/x#y\n"
	                           "backend =    127.0.0.1:25    \n"
	                           "#max_connections_per_ip = 1\n"
	                           "max_line_length = 1000";
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	if (parse(&cfg, text, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(cfg.hostname, "a.example");
	assert_true(cfg.max_recipients == 7);
	assert_true(cfg.max_errors == 3);
	assert_true(cfg.max_connections == 11);
	/* '#' not after white space is part of the value */
	assert_string_equal(cfg.spool_dir, "/var/tmp/x#y");
	check_addr(&cfg.backend, "127.0.0.1", "25");
	/* commented out: still the default */
	assert_true(cfg.max_connections_per_ip == 50);
	/* the last line needs no newline */
	assert_true(cfg.max_line_length == 1000);
	config_free(&cfg);
}

static void
test_indented_keys(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	if (parse(&cfg, "  max_recipients = 8\n\tmax_errors = 4\n", err) != 0)
		fail_msg("%s", err);
	assert_true(cfg.max_recipients == 8);
	assert_true(cfg.max_errors == 4);
	config_free(&cfg);
}

/* Only len bytes are parsed: the text need not end in a NUL. */
static void
test_len(void **state)
{
	static const char text[] = "max_recipients = 5\nbogus = 1\n";
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	config_defaults(&cfg);
	assert_int_equal(config_parse(&cfg, "t.conf", text, 19, err, sizeof(err)), 0);
	assert_true(cfg.max_recipients == 5);
	config_free(&cfg);
	/* cut in the middle of the value */
	config_defaults(&cfg);
	assert_int_equal(
	    config_parse(&cfg, "t.conf", "max_recipients = 567", 18, err, sizeof(err)), 0);
	assert_true(cfg.max_recipients == 5);
	config_free(&cfg);
	/* an empty file is fine and changes nothing */
	config_defaults(&cfg);
	assert_int_equal(config_parse(&cfg, "t.conf", "", 0, err, sizeof(err)), 0);
	assert_true(cfg.max_recipients == 1000);
	config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* sections */

static void
test_sections(void **state)
{
	static const char text[] = "hostname = mx.example.org\n" /* 1 */
	                           "\n" /* 2 */
	                           "[plugin greylist]\n" /* 3 */
	                           "delay = 300s\n" /* 4 */
	                           "whitelist = /etc/portcullis/wl   # comment\n" /* 5 */
	                           "max_recipients = 5\n" /* 6 */
	                           "# a comment inside\n" /* 7 */
	                           "[lua policy]\n" /* 8 */
	                           "script = lua/examples/policy.lua\n" /* 9 */
	                           "\n" /* 10 */
	                           "[plugin dnsbl]\n"; /* 11 */
	struct config cfg;
	char err[CONFIG_ERR_MAX];
	const struct config_section *s;
	const struct config_kv *kv;

	(void)state;
	if (parse(&cfg, text, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(cfg.hostname, "mx.example.org");
	/* a key after a section header belongs to the section */
	assert_true(cfg.max_recipients == 1000);

	s = cfg.sections;
	assert_non_null(s);
	assert_string_equal(s->type, "plugin");
	assert_string_equal(s->name, "greylist");
	assert_int_equal(s->line, 3);
	kv = s->keys;
	check_kv(kv, "delay", "300s", 4);
	kv = kv->next;
	check_kv(kv, "whitelist", "/etc/portcullis/wl", 5);
	kv = kv->next;
	check_kv(kv, "max_recipients", "5", 6);
	assert_null(kv->next);

	s = s->next;
	assert_non_null(s);
	assert_string_equal(s->type, "lua");
	assert_string_equal(s->name, "policy");
	assert_int_equal(s->line, 8);
	check_kv(s->keys, "script", "lua/examples/policy.lua", 9);
	assert_null(s->keys->next);

	s = s->next;
	assert_non_null(s);
	assert_string_equal(s->type, "plugin");
	assert_string_equal(s->name, "dnsbl");
	assert_int_equal(s->line, 11);
	assert_null(s->keys);
	assert_null(s->next);
	config_free(&cfg);
}

/* A section may repeat a key and use keys the top level does not know. */
static void
test_section_keys_free(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];
	const struct config_kv *kv;

	(void)state;
	if (parse(&cfg,
	        "[plugin x]\nzone = a.example\nzone = b.example\nanything = 1 2 3\n"
	        "url = redis://h/?a=b\n",
	        err) != 0)
		fail_msg("%s", err);
	assert_non_null(cfg.sections);
	kv = cfg.sections->keys;
	check_kv(kv, "zone", "a.example", 2);
	check_kv(kv->next, "zone", "b.example", 3);
	check_kv(kv->next->next, "anything", "1 2 3", 4);
	check_kv(kv->next->next->next, "url", "redis://h/?a=b", 5);
	assert_null(kv->next->next->next->next);
	config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* errors */

static void
test_err_syntax(void **state)
{
	(void)state;
	/* unknown key */
	check_err("bogus = 1\n", 1);
	check_err("hostname = a\nbogus = 1\n", 2);
	check_err("# comment\n\n   \nbogus = 1\n", 4);
	check_err("on_errorx = tempfail\n", 1);
	/* missing '=' */
	check_err("hostname mx.example.org\n", 1);
	check_err("max_recipients = 5\nhostname\n", 2);
	/* empty key */
	check_err("= value\n", 1);
	/* empty value */
	check_err("hostname =\n", 1);
	check_err("hostname =   \n", 1);
	check_err("max_errors = 3\nhostname = # only a comment\n", 2);
	check_err("max_errors = 3\n\nbackend =", 3);
	/* line numbers keep counting inside sections */
	check_err("hostname = a\n[plugin x]\nk = v\nnoequals\n", 4);
	check_err("[plugin x]\n= v\n", 2);
}

static void
test_err_size(void **state)
{
	static const char *const bad[] = {
	    "10X",
	    "-1",
	    "99999999999999999999G",
	    "99999999999999999999",
	    "18446744073709551616",
	    "20000000000G",
	    "17179869184G",
	    "1.5M",
	    "M",
	    "k",
	    "10kk",
	    "10 M",
	    "0x10",
	    "10MB",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("size \"%s\"\n", bad[i]);
		check_bad_value("max_message_size", bad[i]);
		check_bad_value("spool_memory", bad[i]);
	}
	check_bad_value("max_recipients", "many");
	check_bad_value("max_connections", "-3");
	check_bad_value("max_connections_per_ip", "1e3");
	check_bad_value("max_line_length", "99999999999999999999");
	check_bad_value("max_data_line_length", "x");
	check_bad_value("max_errors", "2x");
}

static void
test_err_time(void **state)
{
	static const char *const bad[] = {
	    "10x",
	    "-5s",
	    "s",
	    "ms",
	    "10 s",
	    "5mss",
	    "1.5s",
	    "99999999999999999999h",
	    "99999999999999999999",
	    "5000000000000000h",
	    "10y",
	    "h1",
	};
	static const char *const keys[] = {
	    "timeout",
	    "data_timeout",
	    "backend_connect_timeout",
	    "backend_timeout",
	    "backend_data_timeout",
	    "shutdown_timeout",
	};
	size_t i, k;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			print_message("%s \"%s\"\n", keys[k], bad[i]);
			check_bad_value(keys[k], bad[i]);
		}
}

static void
test_err_addr(void **state)
{
	static const char *const bad[] = {
	    "nohostport",
	    "1.2.3.4:",
	    ":25",
	    "1.2.3.4:99999",
	    "1.2.3.4:65536",
	    "1.2.3.4:abc",
	    "1.2.3.4:25x",
	    "1.2.3.4:-1",
	    "[::1",
	    "[::1]25",
	    "[::1]:",
	    "[]:25",
	    ":",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("address \"%s\"\n", bad[i]);
		check_bad_value("backend", bad[i]);
		check_bad_value("listen", bad[i]);
	}
}

static void
test_err_enum(void **state)
{
	(void)state;
	check_bad_value("bare_lf", "maybe");
	check_bad_value("bare_lf", "rejectx");
	check_bad_value("bare_lf", "normalise please");
	check_bad_value("log", "file");
	check_bad_value("log", "stderr2");
	check_bad_value("log_level", "trace");
	check_bad_value("log_level", "1");
}

static void
test_err_duplicate(void **state)
{
	(void)state;
	check_err("backend = 1.2.3.4:25\nbackend = 1.2.3.4:26\n", 2);
	check_err("hostname = a\n# x\nhostname = b\n", 3);
	check_err("max_recipients = 1\nmax_recipients = 1\n", 2);
	check_err("timeout = 1s\nmax_errors = 2\ntimeout = 2s\n", 3);
	check_err("bare_lf = reject\nbare_lf = normalize\n", 2);
	check_err("spool_dir = /a\nspool_dir = /b\n", 2);
	check_err("log = stderr\nlog = syslog\n", 2);
}

static void
test_err_section(void **state)
{
	(void)state;
	check_err("[plugin x\n", 1);
	check_err("hostname = a\n[plugin x\nk = v\n", 2);
	check_err("[plugin]\n", 1);
	check_err("[plugin ]\n", 1);
	check_err("[]\n", 1);
	check_err("[\n", 1);
	check_err("hostname = a\n\n[lua]\n", 3);
	check_err("[plugin x y]\n", 1);
	check_err("[plugin x]junk\n", 1);
	check_err("plugin x]\n", 1);
}

static void
test_err_too_many_listen(void **state)
{
	char text[2048];
	size_t n = 0;
	int i;
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	for (i = 0; i < CONFIG_LISTEN_MAX; i++)
		n += (size_t)snprintf(
		    text + n, sizeof(text) - n, "listen = 127.0.0.1:%d\n", 2500 + i);
	/* exactly the maximum is fine */
	if (parse(&cfg, text, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.nlisten, CONFIG_LISTEN_MAX);
	check_addr(&cfg.listen[CONFIG_LISTEN_MAX - 1], "127.0.0.1", "2515");
	config_free(&cfg);
	/* one more is refused at its line */
	snprintf(text + n, sizeof(text) - n, "listen = 127.0.0.1:3000\n");
	check_err(text, CONFIG_LISTEN_MAX + 1);
}

/* Values too long for their field are refused, never silently cut. */
static void
test_err_too_long(void **state)
{
	char text[2200], v[1500];

	(void)state;
	memset(v, 'a', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	v[CONFIG_HOST_MAX + 10] = '\0';
	snprintf(text, sizeof(text), "hostname = %s\n", v);
	check_err(text, 1);
	snprintf(text, sizeof(text), "backend = %s:25\n", v);
	check_err(text, 1);
	v[CONFIG_HOST_MAX + 10] = 'a';
	v[0] = '/';
	snprintf(text, sizeof(text), "spool_dir = %s\n", v);
	check_err(text, 1);
}

/* Values that make no sense are refused: zero counts, lines below RFC 5321's sizes. */
static void
test_err_minimums(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	check_bad_value("max_recipients", "0");
	check_bad_value("max_connections", "0");
	check_bad_value("max_connections_per_ip", "0");
	check_bad_value("max_errors", "0");
	check_bad_value("timeout", "0");
	check_bad_value("data_timeout", "0s");
	check_bad_value("backend_timeout", "0ms");
	/* RFC 5321 §4.5.3.1.4: 512 octets with CRLF; §4.5.3.1.6: 1000 */
	check_bad_value("max_line_length", "509");
	check_bad_value("max_data_line_length", "997");
	assert_int_equal(
	    parse(&cfg, "max_line_length = 510\nmax_data_line_length = 998\n", err), 0);
	assert_true(cfg.max_line_length == 510);
	assert_true(cfg.max_data_line_length == 998);
	config_free(&cfg);
	/* zero grace at shutdown is a choice, not an error */
	assert_int_equal(parse(&cfg, "shutdown_timeout = 0\nspool_memory = 0\n", err), 0);
	assert_true(cfg.shutdown_timeout_ms == 0);
	assert_true(cfg.spool_memory == 0);
	config_free(&cfg);
}

/* A NUL in the file, or a line longer than any sane one, is refused at its line. */
static void
test_err_line(void **state)
{
	static const char text[] = "hostname = a\nmax_errors = 1\0\n";
	struct config cfg;
	char err[CONFIG_ERR_MAX], *big;
	size_t n = 100000;

	(void)state;
	config_defaults(&cfg);
	assert_int_equal(
	    config_parse(&cfg, "t.conf", text, sizeof(text) - 1, err, sizeof(err)), -1);
	assert_memory_equal(err, "t.conf:2: ", 10);
	config_free(&cfg);

	big = malloc(n + 64);
	assert_non_null(big);
	strcpy(big, "max_errors = 2\n# ");
	memset(big + 17, 'x', n);
	strcpy(big + 17 + n, "\n");
	check_err(big, 2);
	strcpy(big, "max_errors = 2\nspool_dir = /");
	memset(big + 28, 'x', n);
	strcpy(big + 28 + n, "\n");
	check_err(big, 2);
	free(big);
}

/* A file saved with CR LF line ends reads the same. */
static void
test_crlf_file(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	if (parse(&cfg,
	        "backend = 127.0.0.1:25\r\nhostname = h.example\r\n# c\r\n\r\n[plugin x]\r\nk = v\r\n",
	        err) != 0)
		fail_msg("%s", err);
	check_addr(&cfg.backend, "127.0.0.1", "25");
	assert_string_equal(cfg.hostname, "h.example");
	assert_non_null(cfg.sections);
	assert_string_equal(cfg.sections->name, "x");
	check_kv(cfg.sections->keys, "k", "v", 6);
	config_free(&cfg);
}

/* A short error buffer is filled, terminated and never overrun. */
static void
test_err_short_buffer(void **state)
{
	struct config cfg;
	char err[16];
	static const char text[] = "hostname = a\nbogus_key_with_a_long_name = 1\n";

	(void)state;
	memset(err, 'Z', sizeof(err));
	config_defaults(&cfg);
	assert_int_equal(config_parse(&cfg, "t.conf", text, strlen(text), err, 10), -1);
	assert_true(memchr(err, '\0', 10) != NULL);
	assert_int_equal(err[10], 'Z');
	assert_memory_equal(err, "t.conf:2:", strlen(err) < 9 ? strlen(err) : 9);
	config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* -o and config_check */

static void
test_config_set(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	config_defaults(&cfg);
	assert_int_equal(config_set(&cfg, "max_recipients", "5", 0, err, sizeof(err)), 0);
	assert_true(cfg.max_recipients == 5);
	assert_int_equal(config_set(&cfg, "max_message_size", "2M", 0, err, sizeof(err)), 0);
	assert_true(cfg.max_message_size == 2 * MB);
	assert_int_equal(config_set(&cfg, "timeout", "250ms", 0, err, sizeof(err)), 0);
	assert_true(cfg.timeout_ms == 250);
	assert_int_equal(config_set(&cfg, "backend", "[2001:db8::1]:25", 0, err, sizeof(err)), 0);
	assert_int_equal(cfg.have_backend, 1);
	check_addr(&cfg.backend, "2001:db8::1", "25");
	assert_int_equal(config_set(&cfg, "bare_lf", "normalize", 0, err, sizeof(err)), 0);
	assert_int_equal(cfg.bare_lf, CONFIG_BARE_LF_NORMALIZE);
	assert_int_equal(config_set(&cfg, "hostname", "relay.example", 0, err, sizeof(err)), 0);
	assert_string_equal(cfg.hostname, "relay.example");

	/* bad key, bad values: refused with a message, the value unchanged */
	err[0] = '\0';
	assert_int_equal(config_set(&cfg, "nosuchkey", "1", 0, err, sizeof(err)), -1);
	assert_true(strlen(err) > 0);
	err[0] = '\0';
	assert_int_equal(config_set(&cfg, "max_recipients", "lots", 0, err, sizeof(err)), -1);
	assert_true(strlen(err) > 0);
	assert_true(cfg.max_recipients == 5);
	assert_int_equal(config_set(&cfg, "timeout", "soon", 0, err, sizeof(err)), -1);
	assert_true(cfg.timeout_ms == 250);
	assert_int_equal(config_set(&cfg, "backend", "nohostport", 0, err, sizeof(err)), -1);
	check_addr(&cfg.backend, "2001:db8::1", "25");
	assert_int_equal(config_set(&cfg, "bare_lf", "sometimes", 0, err, sizeof(err)), -1);
	assert_int_equal(cfg.bare_lf, CONFIG_BARE_LF_NORMALIZE);
	assert_int_equal(config_set(&cfg, "hostname", "", 0, err, sizeof(err)), -1);
	assert_string_equal(cfg.hostname, "relay.example");
	config_free(&cfg);
}

/* DESIGN.md §4: "-o key=value overrides a top-level key" of the file. */
static void
test_config_set_overrides_file(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&cfg, "backend = 127.0.0.1:25\nmax_recipients = 10\n", err), 0);
	if (config_set(&cfg, "backend", "127.0.0.1:2526", 0, err, sizeof(err)) != 0)
		fail_msg("-o backend after the file: %s", err);
	check_addr(&cfg.backend, "127.0.0.1", "2526");
	if (config_set(&cfg, "max_recipients", "20", 0, err, sizeof(err)) != 0)
		fail_msg("-o max_recipients after the file: %s", err);
	assert_true(cfg.max_recipients == 20);
	config_free(&cfg);
}

static void
test_config_check(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	/* no backend: an error */
	config_defaults(&cfg);
	err[0] = '\0';
	assert_int_equal(config_check(&cfg, err, sizeof(err)), -1);
	assert_true(strlen(err) > 0);
	config_free(&cfg);
	assert_int_equal(parse(&cfg, "hostname = a.example\nmax_recipients = 3\n", err), 0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), -1);
	config_free(&cfg);
	/* with one: fine */
	assert_int_equal(parse(&cfg, "backend = 127.0.0.1:10025\n", err), 0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), 0);
	config_free(&cfg);
	config_defaults(&cfg);
	assert_int_equal(config_set(&cfg, "backend", "localhost:10025", 0, err, sizeof(err)), 0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), 0);
	config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* value parsers */

static void
check_size(const char *s, uint64_t want)
{
	uint64_t v = 12345;

	if (config_parse_size(s, &v) != 0)
		fail_msg("size \"%s\" refused", s);
	if (v != want)
		fail_msg("size \"%s\" = %llu, want %llu", s, (unsigned long long)v,
		    (unsigned long long)want);
}

static void
test_parse_size(void **state)
{
	static const char *const bad[] = {
	    "",
	    "k",
	    "10X",
	    "-1",
	    "1.5M",
	    "10 M",
	    "10kk",
	    "10MB",
	    "0x10",
	    "99999999999999999999",
	    "18446744073709551616",
	    "17179869184G",
	    "18014398509481984k",
	};
	size_t i;
	uint64_t v;

	(void)state;
	check_size("0", 0);
	check_size("1", 1);
	check_size("10", 10);
	check_size("10k", 10 * KB);
	check_size("10K", 10 * KB);
	check_size("10m", 10 * MB);
	check_size("10M", 10 * MB);
	check_size("10g", 10 * GB);
	check_size("10G", 10 * GB);
	check_size("0k", 0);
	check_size("18446744073709551615", UINT64_MAX);
	check_size("17179869183G", 17179869183ULL * GB);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (config_parse_size(bad[i], &v) != -1)
			fail_msg("size \"%s\" accepted", bad[i]);
}

static void
check_time(const char *s, uint64_t want)
{
	uint64_t v = 12345;

	if (config_parse_time(s, &v) != 0)
		fail_msg("time \"%s\" refused", s);
	if (v != want)
		fail_msg("time \"%s\" = %llu ms, want %llu", s, (unsigned long long)v,
		    (unsigned long long)want);
}

static void
test_parse_time(void **state)
{
	static const char *const bad[] = {
	    "",
	    "s",
	    "ms",
	    "5x",
	    "-1s",
	    "-1",
	    "1.5s",
	    "5 s",
	    "5mss",
	    "5sm",
	    "10y",
	    "99999999999999999999",
	    "99999999999999999999ms",
	    "5124095576030432h",
	};
	size_t i;
	uint64_t v;

	(void)state;
	check_time("250ms", 250);
	check_time("30s", 30000);
	check_time("5m", 300000);
	check_time("1h", 3600000);
	check_time("30", 30000);
	check_time("0", 0);
	check_time("0s", 0);
	check_time("1ms", 1);
	check_time("90m", 5400000);
	check_time("48h", 172800000);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (config_parse_time(bad[i], &v) != -1)
			fail_msg("time \"%s\" accepted", bad[i]);
}

static void
test_parse_bool(void **state)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	static const char *const bad[] = {"", "maybe", "2", "yess", "of", "y e s", "10"};
	size_t i;
	int v;

	(void)state;
	for (i = 0; i < 4; i++) {
		v = 7;
		assert_int_equal(config_parse_bool(yes[i], &v), 0);
		assert_int_equal(v, 1);
		v = 7;
		assert_int_equal(config_parse_bool(no[i], &v), 0);
		assert_int_equal(v, 0);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (config_parse_bool(bad[i], &v) != -1)
			fail_msg("bool \"%s\" accepted", bad[i]);
}

static void
test_parse_addr(void **state)
{
	struct config_addr a;

	(void)state;
	assert_int_equal(config_parse_addr("127.0.0.1:25", &a), 0);
	check_addr(&a, "127.0.0.1", "25");
	assert_int_equal(config_parse_addr("[::1]:25", &a), 0);
	check_addr(&a, "::1", "25");
	assert_int_equal(config_parse_addr("[::]:2525", &a), 0);
	check_addr(&a, "::", "2525");
	assert_int_equal(config_parse_addr("mail.example.org:10025", &a), 0);
	check_addr(&a, "mail.example.org", "10025");
	assert_int_equal(config_parse_addr("0.0.0.0:65535", &a), 0);
	check_addr(&a, "0.0.0.0", "65535");
	assert_int_equal(config_parse_addr("localhost:1", &a), 0);
	check_addr(&a, "localhost", "1");
	assert_int_equal(config_parse_addr("nohostport", &a), -1);
	assert_int_equal(config_parse_addr("1.2.3.4:", &a), -1);
	assert_int_equal(config_parse_addr(":25", &a), -1);
	assert_int_equal(config_parse_addr("1.2.3.4:99999", &a), -1);
	assert_int_equal(config_parse_addr("1.2.3.4:65536", &a), -1);
	assert_int_equal(config_parse_addr("1.2.3.4:x", &a), -1);
	assert_int_equal(config_parse_addr("[::1", &a), -1);
	assert_int_equal(config_parse_addr("[::1]", &a), -1);
	assert_int_equal(config_parse_addr("[::1]:", &a), -1);
	assert_int_equal(config_parse_addr("", &a), -1);
}

/* The chain's top-level keys: plugin_dir, on_error, filter_timeout. */
static void
test_chain_keys(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];
	enum config_on_error oe;

	config_defaults(&cfg);
	assert_int_equal(cfg.on_error, CONFIG_ON_ERROR_TEMPFAIL);
	assert_int_equal(cfg.filter_timeout_ms, 30000);
	assert_string_equal(cfg.plugin_dir, PLUGINDIR);
	assert_int_equal(parse(&cfg,
	                     "plugin_dir = /opt/pc\non_error = reject\nfilter_timeout = 250ms\n"
	                     "[plugin access]\nobserve = yes\n",
	                     err),
	    0);
	assert_string_equal(cfg.plugin_dir, "/opt/pc");
	assert_int_equal(cfg.on_error, CONFIG_ON_ERROR_REJECT);
	assert_int_equal(cfg.filter_timeout_ms, 250);
	config_free(&cfg);
	assert_int_equal(config_parse_on_error("accept", &oe), 0);
	assert_int_equal(oe, CONFIG_ON_ERROR_ACCEPT);
	assert_int_equal(config_parse_on_error("tempfail", &oe), 0);
	assert_int_equal(oe, CONFIG_ON_ERROR_TEMPFAIL);
	assert_int_equal(config_parse_on_error("Accept", &oe), -1);
	assert_int_equal(config_parse_on_error("drop", &oe), -1);
	check_bad_value("on_error", "continue");
	check_bad_value("filter_timeout", "0");
	check_bad_value("filter_timeout", "soon");
	/* Keys of a section stay the plugin's: "observe" in a section is not a
	 * top-level key, and a top-level key inside a section is the
	 * section's. */
	check_err("observe = yes\n", 1);
}

/* ---- what a SIGHUP compares ---- */

/* 1 if a and b compare equal with f */
static int
compare(const char *a, const char *b, int (*f)(const struct config *, const struct config *))
{
	struct config x, y;
	char err[CONFIG_ERR_MAX];
	int r;

	assert_int_equal(parse(&x, a, err), 0);
	assert_int_equal(parse(&y, b, err), 0);
	r = f(&x, &y);
	assert_int_equal(f(&y, &x), r); /* both ways */
	config_free(&x);
	config_free(&y);
	return r;
}

#define CHAIN "[access a]\nclient = c.txt\nsender = s.txt\n[lua b]\nscript = b.lua\n"

static void
test_chain_equal(void **state)
{
	(void)state;
	assert_true(compare(CHAIN, CHAIN, config_chain_equal));
	assert_true(compare("", "", config_chain_equal));
	/* top-level keys that instances do not take, and comments, do not count */
	assert_true(compare(
	    "max_recipients = 5\n" CHAIN, "# x\nmax_recipients = 9\n\n" CHAIN, config_chain_equal));
	assert_false(compare(CHAIN, "", config_chain_equal));
	assert_false(
	    compare(CHAIN, "[access a]\nclient = c.txt\nsender = s.txt\n", config_chain_equal));
	assert_false(
	    compare(CHAIN, "[lua b]\nscript = b.lua\n[access a]\nclient = c.txt\nsender = s.txt\n",
	        config_chain_equal)); /* order is the chain's order */
	assert_false(
	    compare(CHAIN, "[access z]\nclient = c.txt\nsender = s.txt\n[lua b]\nscript = b.lua\n",
	        config_chain_equal)); /* a name */
	assert_false(
	    compare(CHAIN, "[headers a]\nclient = c.txt\nsender = s.txt\n[lua b]\nscript = b.lua\n",
	        config_chain_equal)); /* a type */
	assert_false(
	    compare(CHAIN, "[access a]\nclient = c.txt\nsender = t.txt\n[lua b]\nscript = b.lua\n",
	        config_chain_equal)); /* a value */
	assert_false(compare(CHAIN, "[access a]\nclient = c.txt\n[lua b]\nscript = b.lua\n",
	    config_chain_equal)); /* a key less */
	assert_false(
	    compare(CHAIN, "[access a]\nsender = s.txt\nclient = c.txt\n[lua b]\nscript = b.lua\n",
	        config_chain_equal)); /* keys reordered: a plugin may care */
	assert_false(compare(CHAIN, "on_error = accept\n" CHAIN, config_chain_equal));
	assert_false(compare(CHAIN, "filter_timeout = 3s\n" CHAIN, config_chain_equal));
	assert_false(compare(CHAIN, "plugin_dir = /elsewhere\n" CHAIN, config_chain_equal));
}

static void
test_listen_equal(void **state)
{
	(void)state;
	assert_true(compare("listen = 127.0.0.1:25\n", "listen = 127.0.0.1:25\nhostname = x.test\n",
	    config_listen_equal));
	assert_true(compare("", "", config_listen_equal)); /* the default */
	assert_false(compare("listen = 127.0.0.1:25\n", "", config_listen_equal));
	assert_false(
	    compare("listen = 127.0.0.1:25\n", "listen = 127.0.0.1:26\n", config_listen_equal));
	assert_false(
	    compare("listen = 127.0.0.1:25\n", "listen = 127.0.0.2:25\n", config_listen_equal));
	assert_false(
	    compare("listen = 127.0.0.1:25\n", "listen = 127.0.0.1:25 tls\n", config_listen_equal));
	assert_false(compare("listen = 127.0.0.1:25\n", "listen = 127.0.0.1:25 proxy_protocol\n",
	    config_listen_equal));
	assert_false(compare("listen = 127.0.0.1:25\n",
	    "listen = 127.0.0.1:25\nlisten = 127.0.0.1:465 tls\n", config_listen_equal));
}

/* the keys issue 12 added: their ranges */
static void
test_hardening_keys(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	check_bad_value("client_ipv6_prefix", "129");
	check_bad_value("client_ipv6_prefix", "0");
	check_bad_value("client_ipv6_prefix", "-1");
	check_bad_value("max_header_size", "1000"); /* under 1k */
	check_bad_value("max_header_size", "lots");
	assert_int_equal(parse(&cfg,
	                     "backend = 127.0.0.1:10025\nclient_ipv6_prefix = 128\n"
	                     "max_header_size = 1M\n",
	                     err),
	    0);
	assert_true(cfg.client_ipv6_prefix == 128);
	assert_true(cfg.max_header_size == MB);
	config_free(&cfg);
}

/* max_client_buffer: a size from 16k to 16M, and it must hold a command
 * line (config_check), or a long line would stall until the timeout. */
static void
test_max_client_buffer(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&cfg, "max_client_buffer = 1M\n", err), 0);
	assert_true(cfg.max_client_buffer == MB);
	config_free(&cfg);
	assert_int_equal(
	    parse(&cfg, "max_client_buffer = 16k\nmax_client_buffer = 16M\n", err), -1);
	config_free(&cfg);
	check_bad_value("max_client_buffer", "16383");
	check_bad_value("max_client_buffer", "16777217");
	check_bad_value("max_client_buffer", "1G");
	check_bad_value("max_client_buffer", "99999999999999G");
	check_bad_value("max_client_buffer", "lots");
	check_bad_value("max_client_buffer", "0");
	assert_int_equal(parse(&cfg, "max_client_buffer = 16M0\n", err), -1);
	assert_string_equal(err,
	    "t.conf:1: max_client_buffer: bad value \"16M0\": expected a size "
	    "(e.g. 10, 64k, 50M, 1G), from 16384 to 16777216");
	config_free(&cfg);

	/* The edges are in. */
	config_defaults(&cfg);
	assert_int_equal(config_set(&cfg, "max_client_buffer", "16k", 0, err, sizeof(err)), 0);
	assert_true(cfg.max_client_buffer == 16 * KB);
	assert_int_equal(config_set(&cfg, "max_client_buffer", "16M", 0, err, sizeof(err)), 0);
	assert_true(cfg.max_client_buffer == 16 * MB);
	config_free(&cfg);

	/* A command line and its CR LF must fit, whichever key moved. */
	assert_int_equal(parse(&cfg,
	                     "backend = 127.0.0.1:25\nmax_line_length = 16382\n"
	                     "max_client_buffer = 16k\n",
	                     err),
	    0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), -1);
	assert_string_equal(err,
	    "t.conf:3: max_client_buffer (16384) must be larger than "
	    "max_line_length (16382) + 2: a command line and its CR LF must "
	    "fit");
	config_free(&cfg);
	assert_int_equal(parse(&cfg, "backend = 127.0.0.1:25\nmax_line_length = 1M\n", err), 0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "t.conf:2: max_client_buffer (262144) must be larger"));
	config_free(&cfg);
	assert_int_equal(parse(&cfg,
	                     "backend = 127.0.0.1:25\nmax_line_length = 16381\n"
	                     "max_client_buffer = 16k\n",
	                     err),
	    0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), 0);
	config_free(&cfg);
}

/* trusted_networks: a CIDR list (options.c's), the last one given wins;
 * config_trusted says who is in it. */
static void
test_trusted_networks(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	/* Nobody by default: not even localhost. */
	config_defaults(&cfg);
	assert_int_equal(config_trusted(&cfg, "127.0.0.1"), 0);
	assert_int_equal(config_trusted(&cfg, "::1"), 0);
	config_free(&cfg);

	assert_int_equal(
	    parse(&cfg, "trusted_networks = 127.0.0.0/8, ::1 192.0.2.0/24\t2001:db8::/32\n", err),
	    0);
	assert_int_equal(cfg.ntrusted_networks, 4);
	assert_int_equal(cfg.nproxy_trusted, 0); /* a key of its own */
	assert_int_equal(config_trusted(&cfg, "127.0.0.1"), 1);
	assert_int_equal(config_trusted(&cfg, "127.255.0.9"), 1);
	assert_int_equal(config_trusted(&cfg, "192.0.2.200"), 1);
	assert_int_equal(config_trusted(&cfg, "192.0.3.1"), 0);
	assert_int_equal(config_trusted(&cfg, "10.0.0.1"), 0);
	assert_int_equal(config_trusted(&cfg, "::1"), 1);
	assert_int_equal(config_trusted(&cfg, "::2"), 0);
	assert_int_equal(config_trusted(&cfg, "2001:db8:1::25"), 1);
	assert_int_equal(config_trusted(&cfg, "2001:db9::25"), 0);
	/* An IPv4 client on a dual-stack socket is that IPv4 client. */
	assert_int_equal(config_trusted(&cfg, "::ffff:192.0.2.7"), 1);
	assert_int_equal(config_trusted(&cfg, "::ffff:127.0.0.1"), 1);
	assert_int_equal(config_trusted(&cfg, "::ffff:10.0.0.1"), 0);
	/* What is no address is not trusted. */
	assert_int_equal(config_trusted(&cfg, ""), 0);
	assert_int_equal(config_trusted(&cfg, "unknown"), 0);
	assert_int_equal(config_trusted(&cfg, "192.0.2.0/24"), 0);
	/* -o replaces the list. */
	assert_int_equal(
	    config_set(&cfg, "trusted_networks", "10.0.0.0/8", 0, err, sizeof(err)), 0);
	assert_int_equal(cfg.ntrusted_networks, 1);
	assert_int_equal(config_trusted(&cfg, "10.0.0.1"), 1);
	assert_int_equal(config_trusted(&cfg, "127.0.0.1"), 0);
	/* A bad list leaves the old one. */
	assert_int_equal(
	    config_set(&cfg, "trusted_networks", "10.0.0.1/8", 0, err, sizeof(err)), -1);
	assert_string_equal(err,
	    "command line: trusted_networks: bad value \"10.0.0.1/8\": "
	    "10.0.0.1/8 has bits set past its /8 prefix (the network is "
	    "10.0.0.0/8)");
	assert_int_equal(cfg.ntrusted_networks, 1);
	assert_int_equal(config_trusted(&cfg, "10.0.0.1"), 1);
	config_free(&cfg);
	/* Everyone, if you mean it. */
	assert_int_equal(parse(&cfg, "trusted_networks = 0.0.0.0/0 ::/0\n", err), 0);
	assert_int_equal(config_trusted(&cfg, "203.0.113.1"), 1);
	assert_int_equal(config_trusted(&cfg, "2001:db8::1"), 1);
	config_free(&cfg);

	check_bad_value("trusted_networks", "10.0.0.0/33");
	check_bad_value("trusted_networks", "::/129");
	check_bad_value("trusted_networks", "10.0.0.0/8 x");
	check_bad_value("trusted_networks", ",");
	check_bad_value("trusted_networks", "mynetworks");
	assert_int_equal(parse(&cfg, "trusted_networks = 10.0.0.0/33\n", err), -1);
	assert_string_equal(err,
	    "t.conf:1: trusted_networks: bad value \"10.0.0.0/33\": expected "
	    "addresses or networks (e.g. 127.0.0.1/32 ::1 10.0.0.0/8), at most "
	    "64");
	config_free(&cfg);
}

/* CONFIG_NETS_MAX networks, not one more, for either list. */
static void
test_nets_max(void **state)
{
	static const char *const keys_[] = {"trusted_networks", "proxy_trusted"};
	char value[2048];
	size_t used = 0;
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	for (int i = 0; i < CONFIG_NETS_MAX; i++)
		used += (size_t)snprintf(value + used, sizeof(value) - used, "10.0.%d.0/24 ", i);
	for (size_t k = 0; k < 2; k++) {
		config_defaults(&cfg);
		assert_int_equal(config_set(&cfg, keys_[k], value, 0, err, sizeof(err)), 0);
		assert_int_equal(config_trusted(&cfg, "10.0.63.1"), k == 0);
		config_free(&cfg);
	}
	snprintf(value + used, sizeof(value) - used, "10.1.0.0/16");
	for (size_t k = 0; k < 2; k++) {
		config_defaults(&cfg);
		assert_int_equal(config_set(&cfg, keys_[k], value, 0, err, sizeof(err)), -1);
		assert_non_null(strstr(err,
		    "...\": expected addresses or networks (e.g. "
		    "127.0.0.1/32 ::1 10.0.0.0/8), at most 64"));
		config_free(&cfg);
	}
}

/* config_suggest: typos within 2 edits, case ignored; an affix of at
 * least 4 characters; the nearest, the first on a tie; nothing far */
static void
test_suggest(void **state)
{
	static const char *const known[] = {"timeout", "data_timeout", "max_recipients",
	    "max_errors", "store", "store_purge_interval", "log", "log_level"};
	const size_t n = sizeof(known) / sizeof(known[0]);

	(void)state;
	assert_string_equal(config_suggest("timout", known, n), "timeout");
	assert_string_equal(config_suggest("TIMEOUT", known, n), "timeout");
	assert_string_equal(config_suggest("data_timeuot", known, n), "data_timeout");
	assert_string_equal(config_suggest("max_recipient", known, n), "max_recipients");
	assert_string_equal(config_suggest("recipients", known, n), "max_recipients");
	assert_string_equal(config_suggest("max_recipients_per_msg", known, n), "max_recipients");
	assert_string_equal(config_suggest("store_purge", known, n), "store_purge_interval");
	assert_string_equal(config_suggest("lg", known, n), "log");
	assert_string_equal(config_suggest("log_levels", known, n), "log_level");
	assert_null(config_suggest("colour", known, n));
	assert_null(config_suggest("", known, n));
	assert_null(config_suggest("max", known, n)); /* too short an affix */
	assert_null(config_suggest("timeout", known, 0));
}

/* workers = auto | 1..32, and the rules of chroot (issue 18). */
static void
test_workers_and_privilege_keys(void **state)
{
	struct config cfg;
	char err[CONFIG_ERR_MAX];

	(void)state;
	assert_int_equal(parse(&cfg, "workers = auto\nseccomp = no\n", err), 0);
	assert_int_equal(cfg.workers, 0);
	assert_true(config_workers(&cfg) >= 1 && config_workers(&cfg) <= CONFIG_WORKERS_MAX);
	assert_int_equal(cfg.seccomp, 0);
	config_free(&cfg);
	assert_int_equal(parse(&cfg, "workers = 32\n", err), 0);
	assert_int_equal(config_workers(&cfg), 32);
	config_free(&cfg);
	assert_int_equal(parse(&cfg, "\n", err), 0);
	assert_int_equal(config_workers(&cfg), 1); /* the default: one process */
	assert_int_equal(cfg.seccomp, 1);
	config_free(&cfg);
	check_bad_value("workers", "0");
	check_bad_value("workers", "33");
	check_bad_value("workers", "many");
	/* chroot: with a user, absolute, and only with workers */
	assert_int_equal(parse(&cfg, "backend = 127.0.0.1:25\nchroot = /var/empty\n", err), 0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "chroot needs user"));
	config_free(&cfg);
	assert_int_equal(
	    parse(&cfg, "backend = 127.0.0.1:25\nchroot = /var/empty\nuser = nobody\n", err), 0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "chroot needs workers"));
	config_free(&cfg);
	assert_int_equal(parse(&cfg,
	                     "backend = 127.0.0.1:25\nchroot = var/empty\nuser = nobody\n"
	                     "workers = 2\n",
	                     err),
	    0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "absolute"));
	config_free(&cfg);
	assert_int_equal(parse(&cfg,
	                     "backend = 127.0.0.1:25\nchroot = /var/empty\nuser = nobody\n"
	                     "workers = 2\n",
	                     err),
	    0);
	assert_int_equal(config_check(&cfg, err, sizeof(err)), 0);
	config_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hardening_keys),
	    cmocka_unit_test(test_workers_and_privilege_keys),
	    cmocka_unit_test(test_max_client_buffer),
	    cmocka_unit_test(test_trusted_networks),
	    cmocka_unit_test(test_nets_max),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_chain_keys),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_enums),
	    cmocka_unit_test(test_sample_file),
	    cmocka_unit_test(test_load),
	    cmocka_unit_test(test_syntax),
	    cmocka_unit_test(test_indented_keys),
	    cmocka_unit_test(test_len),
	    cmocka_unit_test(test_sections),
	    cmocka_unit_test(test_section_keys_free),
	    cmocka_unit_test(test_err_syntax),
	    cmocka_unit_test(test_err_size),
	    cmocka_unit_test(test_err_time),
	    cmocka_unit_test(test_err_addr),
	    cmocka_unit_test(test_err_enum),
	    cmocka_unit_test(test_err_duplicate),
	    cmocka_unit_test(test_err_section),
	    cmocka_unit_test(test_err_too_many_listen),
	    cmocka_unit_test(test_err_too_long),
	    cmocka_unit_test(test_err_minimums),
	    cmocka_unit_test(test_err_line),
	    cmocka_unit_test(test_crlf_file),
	    cmocka_unit_test(test_err_short_buffer),
	    cmocka_unit_test(test_config_set),
	    cmocka_unit_test(test_config_set_overrides_file),
	    cmocka_unit_test(test_config_check),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_parse_time),
	    cmocka_unit_test(test_parse_bool),
	    cmocka_unit_test(test_parse_addr),
	    cmocka_unit_test(test_chain_equal),
	    cmocka_unit_test(test_listen_equal),
	    cmocka_unit_test(test_suggest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
