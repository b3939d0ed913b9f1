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

#include "tls.h"

#define TLS_CREDENTIALS "${CREDENTIALS_DIRECTORY}"
/* A file key's value once ${CREDENTIALS_DIRECTORY} is replaced. */
#define TLS_PATH_MAX 4352

static const char *tls_path(const char *value, char *buf, size_t size);

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

SSL_CTX *
tls_server_ctx(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char what[2200 + 2 * TLS_PATH_MAX];
	char cert_buf[TLS_PATH_MAX], key_buf[TLS_PATH_MAX], chain_buf[TLS_PATH_MAX];
	const char *cert, *key, *chain;

	err[0] = '\0';
	if (cfg->tls_cert[0] == '\0')
		return NULL;
	cert = tls_path(cfg->tls_cert, cert_buf, sizeof(cert_buf));
	key = tls_path(cfg->tls_key, key_buf, sizeof(key_buf));
	chain = tls_path(cfg->tls_chain, chain_buf, sizeof(chain_buf));
	if (cert == NULL || key == NULL || chain == NULL) {
		snprintf(what, sizeof(what),
		    "%s %s: $CREDENTIALS_DIRECTORY is not set (systemd sets it for "
		    "LoadCredential=)",
		    cert == NULL      ? "tls_cert"
		        : key == NULL ? "tls_key"
		                      : "tls_chain",
		    cert == NULL      ? cfg->tls_cert
		        : key == NULL ? cfg->tls_key
		                      : cfg->tls_chain);
		return tls_fail(NULL, cfg,
		    cert == NULL      ? "tls_cert"
		        : key == NULL ? "tls_key"
		                      : "tls_chain",
		    what, err, errlen);
	}
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		return tls_fail(NULL, cfg, "tls_cert", "cannot create a TLS context", err, errlen);
	common(ctx, cfg);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"portcullis", 10);
	snprintf(what, sizeof(what), "tls_cert %s", cert);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return tls_fail(ctx, cfg, "tls_cert", what, err, errlen);
	if (chain[0] != '\0' && add_chain(ctx, chain) != 0) {
		snprintf(what, sizeof(what), "tls_chain %s: no certificate could be read", chain);
		return tls_fail(ctx, cfg, "tls_chain", what, err, errlen);
	}
	snprintf(what, sizeof(what), "tls_key %s", key);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return tls_fail(ctx, cfg, "tls_key", what, err, errlen);
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(what, sizeof(what), "tls_key %s does not match tls_cert %s", key, cert);
		return tls_fail(ctx, cfg, "tls_key", what, err, errlen);
	}
	if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1)
		return tls_fail(
		    ctx, cfg, "tls_ciphers", "tls_ciphers: no usable cipher", err, errlen);
	/* DHE suites need groups: RFC 7919's, sized to the certificate's key. */
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
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
