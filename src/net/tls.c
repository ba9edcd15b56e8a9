/* tls.c: the server's OpenSSL 3 context and what a connection learns from its handshake.
 *
 * Policy: TLS 1.2 minimum (SSL_CTX_set_min_proto_version), OpenSSL's default cipher lists
 * (forward-secret AEAD suites first), server cipher preference, no compression, no
 * renegotiation. The certificate file may hold a chain (SSL_CTX_use_certificate_chain_file);
 * the key must match it (SSL_CTX_check_private_key).
 *
 * Client certificates (mTLS): with a CA file, the server asks for a certificate and verifies it
 * against that CA only (not the system store). NET_CLIENT_VERIFY_REQUIRE fails the handshake
 * without one; OPTIONAL lets a client without a certificate in (it may use a token instead)
 * but still fails the handshake for a certificate that does not verify. The CN is exposed to
 * handlers only when the certificate verified: a handler can never see an unverified name.
 *
 * The per-connection TLS state machine (memory BIOs, handshake, reads, writes, close_notify)
 * lives with the connection in server.c.
 */
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "internal.h"

static void
ossl_reason(char *buf, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0) {
        snprintf(buf, cap, "unknown error");
    } else {
        ERR_error_string_n(e, buf, cap);
    }
    ERR_clear_error();
}

int
net__tls_ctx_new(SSL_CTX **out, const net_server_opts *o, dbao_err *err)
{
    char why[256];
    *out = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        return dbao_err_set(err, DBAO_ECRYPTO, "cannot create the TLS context");
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1) {
        ossl_reason(why, sizeof why);
        SSL_CTX_free(ctx);
        return dbao_err_set(err, DBAO_EFORMAT, "cannot load the TLS certificate '%s': %s",
                            o->tls_cert, why);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->tls_key, SSL_FILETYPE_PEM) != 1) {
        ossl_reason(why, sizeof why);
        SSL_CTX_free(ctx);
        return dbao_err_set(err, DBAO_EFORMAT, "cannot load the TLS key '%s': %s", o->tls_key, why);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return dbao_err_set(err, DBAO_EFORMAT, "the TLS key '%s' does not match the certificate",
                            o->tls_key);
    }
    if (o->tls_client_ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, o->tls_client_ca, NULL) != 1) {
            ossl_reason(why, sizeof why);
            SSL_CTX_free(ctx);
            return dbao_err_set(err, DBAO_EFORMAT, "cannot load the client CA file '%s': %s",
                                o->tls_client_ca, why);
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->tls_client_ca);
        if (names == NULL) {
            ERR_clear_error();
            SSL_CTX_free(ctx);
            return dbao_err_set(err, DBAO_EFORMAT, "no CA certificate in '%s'", o->tls_client_ca);
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        int mode = SSL_VERIFY_PEER;
        if (o->client_verify == NET_CLIENT_VERIFY_REQUIRE) {
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        }
        SSL_CTX_set_verify(ctx, mode, NULL);
        SSL_CTX_set_verify_depth(ctx, 4);
        /* Session resumption must not carry a client identity across contexts. */
        static const unsigned char sid[] = "dengbao-net";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    }
    *out = ctx;
    return 0;
}

void
net__tls_peer(SSL *ssl, net_peer *peer)
{
    peer->tls = true;
    peer->tls_version = SSL_get_version(ssl);
    peer->cert_verified = false;
    peer->cert_cn[0] = '\0';
    peer->has_cert_sha256 = false;
    memset(peer->cert_sha256, 0, sizeof peer->cert_sha256);
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK) {
        return;
    }
    /* RFC 8705 x5t#S256: SHA-256 over the certificate's DER, whatever its subject says */
    unsigned int mdlen = 0;
    if (X509_digest(cert, EVP_sha256(), peer->cert_sha256, &mdlen) == 1 &&
        mdlen == sizeof peer->cert_sha256) {
        peer->has_cert_sha256 = true;
    } else {
        memset(peer->cert_sha256, 0, sizeof peer->cert_sha256);
    }
    X509_NAME *name = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) {
        return; /* no CN, or several: no single identity */
    }
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n <= 0 || (size_t) n >= sizeof peer->cert_cn || memchr(utf8, 0, (size_t) n) != NULL) {
        OPENSSL_free(utf8);
        return;
    }
    memcpy(peer->cert_cn, utf8, (size_t) n);
    peer->cert_cn[n] = '\0';
    OPENSSL_free(utf8);
    peer->cert_verified = true;
}
