/*
 * tls.c - OpenSSL contexts from the configuration (see tls.h).
 *
 * Exports tls_server_ctx and tls_client_ctx. Both refuse anything below
 * TLS 1.2 (tls_min_protocol may raise it to 1.3), compression and
 * renegotiation. A certificate or key that does not load, or a key that
 * does not match the certificate, is a start-up error naming the key's line.
 *
 * Suites: towards clients, Mozilla's "intermediate" profile by default
 * (tls_ciphers, CONFIG_TLS_CIPHERS): TLS 1.2 with ECDHE or DHE and an AEAD
 * only, no CBC (LUCKY13) and no static RSA (no forward secrecy); TLS 1.3
 * with OpenSSL's suites, which are all AEAD. The client's order decides,
 * as the profile says: every suite offered is strong, and a client knows
 * whether it has AES in hardware. tls_ciphers replaces the TLS 1.2 list.
 * The backend leg keeps OpenSSL's defaults (TLS 1.2 and up still): the
 * backend is often an older internal MTA we must reach, and the suite
 * there is the backend's choice among what we offer.
 *
 * Certificates: tls_cert, tls_key (and tls_chain, when given) each name one
 * file or two, paired in order: one RSA and one ECDSA certificate, served
 * at once. OpenSSL keeps one per key type and picks what the client can
 * verify (its signature algorithms; in TLS 1.2 its suite too). Two of one
 * type, or a key of the other type than its certificate, are refused.
 *
 * Resumption (tls_session_cache, on by default): TLS 1.3 PSK tickets, TLS
 * 1.2 tickets (RFC 5077) and the TLS 1.2 session-ID cache, for
 * tls_session_timeout. The ticket keys are made here with the context, so
 * they live as long as it does: a start or a reload makes new ones. With
 * workers the master makes the context before it forks, so every worker
 * of a generation takes every worker's tickets; the session-ID cache is
 * each process's own.
 *
 * A file key (tls_cert, tls_key, tls_chain, backend_tls_ca) may start with
 * ${CREDENTIALS_DIRECTORY}: the directory where systemd's LoadCredential=
 * puts the files it copies for the service, so that a key only root may
 * read (Let's Encrypt's) reaches a daemon run as DynamicUser.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "tls.h"

#define TLS_CREDENTIALS "${CREDENTIALS_DIRECTORY}"
/* A file key's value once ${CREDENTIALS_DIRECTORY} is replaced. */
#define TLS_PATH_MAX 4352
/* tls_cert: one certificate per key type, RSA and ECDSA; OpenSSL picks the
 * one the client can verify (its signature algorithms, its TLS 1.2 suite). */
#define TLS_CERTS_MAX 2
/* TLS 1.2 sessions kept for resumption by ID, per process: OpenSSL's (and
 * nginx's) default. A client making full handshakes to fill it pushes the
 * oldest out, so memory stays bounded: measured, 5000 sessions took 2.6 MB
 * of RSS (about 0.5 kB each, no client certificates), so some 11 MB full. */
#define TLS_SESSION_CACHE_SIZE 20480
/* SSL_CTX_set_tlsext_ticket_keys: a 16-byte name, a 32-byte HMAC key and a
 * 32-byte AES key. */
#define TLS_TICKET_KEYS 80

/* The files of one key, in the order given. */
struct tls_files {
	size_t n;
	char path[TLS_CERTS_MAX][TLS_PATH_MAX];
};

static const char *tls_path(const char *value, char *buf, size_t size);
static int tls_files(
    const char *key, const char *value, struct tls_files *out, char *what, size_t whatlen);
static const char *tls_use_pair(SSL_CTX *ctx, const struct tls_files *cert,
    const struct tls_files *key, const struct tls_files *chain, size_t i, int *types, char *what,
    size_t whatlen);
static int tls_sessions(SSL_CTX *ctx, const struct config *cfg);

/* tls_path - value with a leading ${CREDENTIALS_DIRECTORY} replaced by
 * $CREDENTIALS_DIRECTORY; NULL if that is not set (or too long) */
static const char *
tls_path(const char *value, char *buf, size_t size)
{
	size_t n = strlen(TLS_CREDENTIALS);
	const char *dir;

	if (strncmp(value, TLS_CREDENTIALS, n) != 0)
		return value;
	dir = getenv("CREDENTIALS_DIRECTORY");
	if (dir == NULL || dir[0] == '\0')
		return NULL;
	if ((size_t)snprintf(buf, size, "%s%s", dir, value + n) >= size)
		return NULL;
	return buf;
}

/* tls_fail - "file:line: what: OpenSSL's reason" */
static SSL_CTX *
tls_fail(SSL_CTX *ctx, const struct config *cfg, const char *key, const char *what, char *err,
    size_t errlen)
{
	unsigned long e = ERR_get_error();
	char why[160] = "";

	if (e != 0)
		ERR_error_string_n(e, why, sizeof(why));
	snprintf(err, errlen, "%s:%d: %s%s%s", cfg->file ? cfg->file : "config",
	    config_key_line(cfg, key), what, why[0] ? ": " : "", why);
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* add_chain - every certificate of a PEM file as extra chain */
static int
add_chain(SSL_CTX *ctx, const char *path)
{
	FILE *fp = fopen(path, "r");
	X509 *x;
	int n = 0;

	if (fp == NULL)
		return -1;
	while ((x = PEM_read_X509(fp, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add1_chain_cert(ctx, x) != 1) {
			X509_free(x);
			fclose(fp);
			return -1;
		}
		X509_free(x);
		n++;
	}
	ERR_clear_error(); /* the end of the file reads as an error */
	fclose(fp);
	return n > 0 ? 0 : -1;
}

/* common - what both sides share */
static void
common(SSL_CTX *ctx, const struct config *cfg)
{
	SSL_CTX_set_min_proto_version(ctx, cfg->tls_min_v13 ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

/* tls_files - the files of a key (tls_cert, tls_key, tls_chain), split at
 * blanks, each with ${CREDENTIALS_DIRECTORY} replaced; their count, or -1
 * with what (too many, or the variable not set) */
static int
tls_files(const char *key, const char *value, struct tls_files *out, char *what, size_t whatlen)
{
	char word[TLS_PATH_MAX];
	const char *p = value, *path;
	size_t len;

	out->n = 0;
	while (*(p += strspn(p, " \t")) != '\0') {
		len = strcspn(p, " \t");
		if (out->n == TLS_CERTS_MAX) {
			snprintf(what, whatlen,
			    "%s: at most %d files (one certificate of each key type, RSA and ECDSA)",
			    key, TLS_CERTS_MAX);
			return -1;
		}
		snprintf(word, sizeof(word), "%.*s", (int)len, p);
		path = tls_path(word, out->path[out->n], sizeof(out->path[out->n]));
		if (path == NULL) {
			snprintf(what, whatlen,
			    "%s %s: $CREDENTIALS_DIRECTORY is not set (systemd sets it for "
			    "LoadCredential=)",
			    key, word);
			return -1;
		}
		if (path != out->path[out->n])
			snprintf(out->path[out->n], sizeof(out->path[out->n]), "%s", path);
		out->n++;
		p += len;
	}
	return (int)out->n;
}

/* tls_use_pair - the i-th certificate (with the i-th chain file) and key;
 * NULL when they load and match, else the key to blame with what */
static const char *
tls_use_pair(SSL_CTX *ctx, const struct tls_files *cert, const struct tls_files *key,
    const struct tls_files *chain, size_t i, int *types, char *what, size_t whatlen)
{
	X509 *x;
	EVP_PKEY *pub;

	snprintf(what, whatlen, "tls_cert %s", cert->path[i]);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert->path[i]) != 1)
		return "tls_cert";
	/* OpenSSL keeps one certificate per key type: a second of the same
	 * type would replace the first without a word. */
	x = SSL_CTX_get0_certificate(ctx);
	pub = x != NULL ? X509_get0_pubkey(x) : NULL;
	types[i] = pub != NULL ? EVP_PKEY_get_base_id(pub) : EVP_PKEY_NONE;
	if (i > 0 && types[i] == types[0]) {
		snprintf(what, whatlen,
		    "tls_cert %s and %s: two %s certificates; give one of each key type (RSA and "
		    "ECDSA)",
		    cert->path[0], cert->path[i], pub ? EVP_PKEY_get0_type_name(pub) : "unknown");
		return "tls_cert";
	}
	if (chain->n > 0 && add_chain(ctx, chain->path[i]) != 0) {
		snprintf(
		    what, whatlen, "tls_chain %s: no certificate could be read", chain->path[i]);
		return "tls_chain";
	}
	snprintf(what, whatlen, "tls_key %s", key->path[i]);
	if (SSL_CTX_use_PrivateKey_file(ctx, key->path[i], SSL_FILETYPE_PEM) != 1)
		return "tls_key";
	/* The key lands in the slot of its own type: the current certificate
	 * is this pair's only if the types agree. */
	if (SSL_CTX_get0_certificate(ctx) != x || SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(what, whatlen, "tls_key %s does not match tls_cert %s", key->path[i],
		    cert->path[i]);
		return "tls_key";
	}
	return NULL;
}

/* tls_sessions - resumption (RFC 5077 tickets, TLS 1.3 PSK tickets, and the
 * TLS 1.2 session-ID cache), or none of it; -1 if no ticket key was made */
static int
tls_sessions(SSL_CTX *ctx, const struct config *cfg)
{
	unsigned char keys[TLS_TICKET_KEYS];
	int r;

	if (!cfg->tls_session_cache) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0); /* else TLS 1.3 issues stateful ones */
		return 0;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, TLS_SESSION_CACHE_SIZE);
	SSL_CTX_set_timeout(ctx, (long)(cfg->tls_session_timeout_ms / 1000));
	/* Our own ticket keys, rather than trusting that OpenSSL makes them in
	 * SSL_CTX_new: the master makes this context before it forks, so every
	 * worker of a generation takes the tickets any of them issued. */
	if (RAND_priv_bytes(keys, sizeof(keys)) != 1)
		return -1;
	r = (int)SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof(keys));
	OPENSSL_cleanse(keys, sizeof(keys));
	return r == 1 ? 0 : -1;
}

SSL_CTX *
tls_server_ctx(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char what[2200 + 2 * TLS_PATH_MAX];
	struct tls_files cert, key, chain;
	int types[TLS_CERTS_MAX];
	const char *blame;

	err[0] = '\0';
	if (cfg->tls_cert[0] == '\0')
		return NULL;
	if (tls_files("tls_cert", cfg->tls_cert, &cert, what, sizeof(what)) < 0)
		return tls_fail(NULL, cfg, "tls_cert", what, err, errlen);
	if (tls_files("tls_key", cfg->tls_key, &key, what, sizeof(what)) < 0)
		return tls_fail(NULL, cfg, "tls_key", what, err, errlen);
	if (tls_files("tls_chain", cfg->tls_chain, &chain, what, sizeof(what)) < 0)
		return tls_fail(NULL, cfg, "tls_chain", what, err, errlen);
	if (key.n != cert.n || (chain.n != 0 && chain.n != cert.n)) {
		snprintf(what, sizeof(what),
		    "%s names %zu file(s) and tls_cert %zu: they pair in order, one for each "
		    "certificate",
		    key.n != cert.n ? "tls_key" : "tls_chain", key.n != cert.n ? key.n : chain.n,
		    cert.n);
		return tls_fail(
		    NULL, cfg, key.n != cert.n ? "tls_key" : "tls_chain", what, err, errlen);
	}
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		return tls_fail(NULL, cfg, "tls_cert", "cannot create a TLS context", err, errlen);
	common(ctx, cfg);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"portcullis", 10);
	for (size_t i = 0; i < cert.n; i++)
		if ((blame = tls_use_pair(
		         ctx, &cert, &key, &chain, i, types, what, sizeof(what))) != NULL)
			return tls_fail(ctx, cfg, blame, what, err, errlen);
	if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1)
		return tls_fail(
		    ctx, cfg, "tls_ciphers", "tls_ciphers: no usable cipher", err, errlen);
	/* DHE suites need groups: RFC 7919's, sized to the certificate's key. */
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (tls_sessions(ctx, cfg) != 0)
		return tls_fail(ctx, cfg, "tls_session_cache",
		    "tls_session_cache: cannot make the session ticket keys", err, errlen);
	return ctx;
}

SSL_CTX *
tls_client_ctx(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char what[2200 + TLS_PATH_MAX], ca_buf[TLS_PATH_MAX];
	const char *ca;

	err[0] = '\0';
	if (cfg->backend_tls == CONFIG_BACKEND_TLS_NO)
		return NULL;
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return tls_fail(
		    NULL, cfg, "backend_tls", "cannot create a TLS context", err, errlen);
	common(ctx, cfg);
	if (cfg->backend_tls_verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (cfg->backend_tls_ca[0] != '\0') {
			ca = tls_path(cfg->backend_tls_ca, ca_buf, sizeof(ca_buf));
			snprintf(what, sizeof(what), "backend_tls_ca %s%s",
			    ca ? ca : cfg->backend_tls_ca,
			    ca ? "" : ": $CREDENTIALS_DIRECTORY is not set");
			if (ca == NULL || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
				return tls_fail(ctx, cfg, "backend_tls_ca", what, err, errlen);
		} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			return tls_fail(
			    ctx, cfg, "backend_tls", "the system's CA store", err, errlen);
		}
	}
	return ctx;
}
