/*
 * tls.h - the OpenSSL contexts: one for clients (STARTTLS and implicit-TLS
 * listeners), one for the backend leg.
 */
#ifndef PORTCULLIS_TLS_H
#define PORTCULLIS_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "config.h"

/* tls_server_ctx - from tls_cert/tls_key/tls_chain; NULL without tls_cert,
 * or on error (*err set, "file:line: ..."). */
SSL_CTX *tls_server_ctx(const struct config *cfg, char *err, size_t errlen);

/* tls_client_ctx - for backend_tls; NULL when backend_tls = no or on
 * error (*err set). */
SSL_CTX *tls_client_ctx(const struct config *cfg, char *err, size_t errlen);

#endif
