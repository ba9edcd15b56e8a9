/* cmd_token.c: dengbao token, bearer tokens and device signatures for operators and tests.
 *
 *   dengbao token issue --key FILE --alg HS256|ES256|SM2 [--kid K] --sub S [--roles R1,R2]
 *       [--iss I] [--aud A] [--ttl 15m] [--device-pub PUB.pem] [--device-cert CERT.pem]
 *       [--sm2-alg NAME]                                             -> the compact JWT
 *   dengbao token sign --device-key PRIV.pem --token JWT             -> X-SM2-Signature value
 *   dengbao token sign-request --device-key PRIV.pem --method M --url-path P [--query Q]
 *       [--body-file F] [--timestamp UNIX]                -> four "Name: value" header lines
 *   dengbao token identity-verify --key FILE --header VALUE [--max-age 60s]
 *                                                   -> "ok sub=... roles=..." or exit 1
 *
 * Key files are refused unless they are regular files of mode 0600 or stricter: the HS256
 * secret is raw bytes (one trailing LF dropped, 16 bytes or more), SM2 and ES256 keys are PEM
 * private keys, the identity key is raw bytes. --device-pub binds the token to a device's SM2
 * key (cnf {"sm3": thumbprint}); --device-cert binds it to a client certificate (cnf
 * {"x5t#S256": SHA-256 of the certificate's DER}, RFC 8705) for mtls routes. Exit status as
 * every dengbao command (cli.h): 0 ok, 1 verification failed, 2 usage or bad input, 3 internal.
 * Nothing secret is ever printed except the requested token or signature.
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/gateway/ztgw.h"
#include "cli.h"
#include "dengbao/zt.h"

#define TOKEN_SHORT                                                                                \
    "dengbao token issue|sign|sign-request|identity-verify ...; see dengbao token --help"

static const char token_usage[] =
    "usage: dengbao token issue --key FILE --alg HS256|ES256|SM2 [--kid K] --sub S\n"
    "           [--roles R1,R2] [--iss I] [--aud A] [--ttl 15m] [--device-pub PUB.pem]\n"
    "           [--device-cert CERT.pem] [--sm2-alg NAME]\n"
    "       dengbao token sign --device-key PRIV.pem --token JWT\n"
    "       dengbao token sign-request --device-key PRIV.pem --method M --url-path P\n"
    "           [--query Q] [--body-file F] [--timestamp UNIX]\n"
    "       dengbao token identity-verify --key FILE --header VALUE [--max-age 60s]\n";

/* parse_duration: "90", "90s", "15m", "2h", "1d" -> seconds; -1 if malformed */
static int64_t
parse_duration(const char *s)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    int64_t mul = 1;
    if (*end == 's') {
        end++;
    } else if (*end == 'm') {
        mul = 60;
        end++;
    } else if (*end == 'h') {
        mul = 3600;
        end++;
    } else if (*end == 'd') {
        mul = 86400;
        end++;
    }
    if (*end != 0 || v > 10ull * 365 * 86400) {
        return -1;
    }
    return (int64_t) v * mul;
}

typedef struct opts {
    const char *key, *alg, *kid, *sub, *roles, *iss, *aud, *ttl, *device_pub, *device_cert,
        *sm2_alg, *device_key, *token, *method, *url_path, *query, *body_file, *timestamp, *header,
        *max_age;
} opts;

static int
parse_opts(int argc, char **argv, opts *o)
{
    static const struct {
        const char *name;
        size_t off;
    } tab[] = {
#define O(n, f) {n, offsetof(opts, f)}
        O("--key", key),
        O("--alg", alg),
        O("--kid", kid),
        O("--sub", sub),
        O("--roles", roles),
        O("--iss", iss),
        O("--aud", aud),
        O("--ttl", ttl),
        O("--device-pub", device_pub),
        O("--device-cert", device_cert),
        O("--sm2-alg", sm2_alg),
        O("--device-key", device_key),
        O("--token", token),
        O("--method", method),
        O("--url-path", url_path),
        O("--query", query),
        O("--body-file", body_file),
        O("--timestamp", timestamp),
        O("--header", header),
        O("--max-age", max_age),
#undef O
    };
    memset(o, 0, sizeof *o);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(token_usage, stdout);
            return 1;
        }
        size_t k;
        for (k = 0; k < sizeof tab / sizeof tab[0]; k++) {
            if (strcmp(argv[i], tab[k].name) == 0) {
                break;
            }
        }
        if (k == sizeof tab / sizeof tab[0]) {
            return cli_usage_error(TOKEN_SHORT, "unknown option '%s'", argv[i]);
        }
        if (i + 1 >= argc) {
            return cli_usage_error(TOKEN_SHORT, "%s needs a value", argv[i]);
        }
        *(const char **) ((char *) o + tab[k].off) = argv[++i];
    }
    return 0;
}

/* load_priv_pem reads a 0600 PEM private key file (caller frees with dbao_free_secret) */
static int
load_priv_pem(uint8_t **pem, size_t *len, const char *path, const char *what)
{
    dbao_err err = {0};
    int rc = gw__zt_read_secret(pem, len, path, what, 1, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    return 0;
}

static int
load_device_priv(gm_sm2_key **key, const char *path)
{
    uint8_t *pem = NULL;
    size_t len = 0;
    int rc = load_priv_pem(&pem, &len, path, "--device-key");
    if (rc != 0) {
        return rc;
    }
    dbao_err err = {0};
    rc = gm_sm2_key_from_pem(key, (const char *) pem, len, &err);
    dbao_free_secret(pem, len);
    if (rc != 0) {
        return cli_error(DBAO_EFORMAT, "--device-key: '%s' is not an SM2 private key", path);
    }
    return 0;
}

/* cert_x5t computes SHA-256 of the DER of the PEM certificate at path */
static int
cert_x5t(uint8_t out[32], const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return cli_error(DBAO_EINVAL, "--device-cert: cannot open '%s'", path);
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL) {
        return cli_error(DBAO_EFORMAT, "--device-cert: '%s' is not a PEM certificate", path);
    }
    unsigned int n = 0;
    int ok = X509_digest(x, EVP_sha256(), out, &n);
    X509_free(x);
    if (!ok || n != 32) {
        return cli_error(DBAO_ECRYPTO, "--device-cert: cannot hash the certificate");
    }
    return 0;
}

static int
token_issue(const opts *o)
{
    if (o->key == NULL || o->alg == NULL || o->sub == NULL) {
        return cli_usage_error(TOKEN_SHORT, "issue needs --key, --alg and --sub");
    }
    zt_claims c;
    memset(&c, 0, sizeof c);
    if (strlen(o->sub) >= sizeof c.sub || (o->iss && strlen(o->iss) >= sizeof c.iss) ||
        (o->aud && strlen(o->aud) >= sizeof c.aud)) {
        return cli_usage_error(TOKEN_SHORT, "--sub, --iss and --aud take at most 255 bytes");
    }
    snprintf(c.sub, sizeof c.sub, "%s", o->sub);
    if (o->iss) {
        snprintf(c.iss, sizeof c.iss, "%s", o->iss);
    }
    if (o->aud) {
        snprintf(c.aud, sizeof c.aud, "%s", o->aud);
    }
    int64_t ttl = parse_duration(o->ttl ? o->ttl : "15m");
    if (ttl <= 0) {
        return cli_usage_error(TOKEN_SHORT, "bad --ttl '%s'", o->ttl);
    }
    int64_t now = (int64_t) time(NULL);
    c.has_iat = c.has_exp = true;
    c.iat = now;
    c.exp = now + ttl;
    if (o->roles && o->roles[0]) {
        const char *p = o->roles;
        for (;;) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t) (e - p) : strlen(p);
            if (n == 0 || n >= ZT_ROLE_MAX || c.num_roles == ZT_ROLES_MAX) {
                return cli_usage_error(TOKEN_SHORT, "bad --roles (at most %d roles of %d bytes)",
                                       ZT_ROLES_MAX, ZT_ROLE_MAX - 1);
            }
            memcpy(c.roles[c.num_roles], p, n);
            c.roles[c.num_roles][n] = 0;
            c.num_roles++;
            if (e == NULL) {
                break;
            }
            p = e + 1;
        }
    }
    dbao_err err = {0};
    int rc;
    if (o->device_pub) {
        gm_sm2_key *dk = NULL;
        rc = cli_load_key(&dk, o->device_pub, NULL, false, &err);
        if (rc != 0) {
            return cli_report(rc, &err);
        }
        zt_sm2_thumbprint(c.cnf_sm3, dk);
        c.has_cnf = true;
        gm_sm2_key_free(dk);
    }
    if (o->device_cert) {
        if ((rc = cert_x5t(c.cnf_x5t, o->device_cert)) != 0) {
            return rc;
        }
        c.has_cnf_x5t = true;
    }
    zt_jwt_signkey k = {.kid = o->kid, .sm2_alg = o->sm2_alg};
    uint8_t *secret = NULL;
    size_t secret_len = 0;
    gm_sm2_key *sm2 = NULL;
    if (strcmp(o->alg, "HS256") == 0) {
        k.alg = ZT_ALG_HS256;
        rc = gw__zt_read_secret(&secret, &secret_len, o->key, "--key", 16, &err);
        if (rc != 0) {
            return cli_report(rc, &err);
        }
        k.secret = secret;
        k.secret_len = secret_len;
    } else if (strcmp(o->alg, "ES256") == 0 || strcmp(o->alg, "SM2") == 0) {
        rc = load_priv_pem(&secret, &secret_len, o->key, "--key");
        if (rc != 0) {
            return rc;
        }
        if (o->alg[0] == 'E') {
            k.alg = ZT_ALG_ES256;
            k.pem = (const char *) secret;
            k.pem_len = secret_len;
        } else {
            k.alg = ZT_ALG_SM2;
            if (gm_sm2_key_from_pem(&sm2, (const char *) secret, secret_len, &err) != 0) {
                dbao_free_secret(secret, secret_len);
                return cli_error(DBAO_EFORMAT, "--key: '%s' is not an SM2 private key", o->key);
            }
            k.sm2 = sm2;
        }
    } else {
        return cli_usage_error(TOKEN_SHORT, "--alg must be HS256, ES256 or SM2");
    }
    char *payload = NULL, *tok = NULL;
    size_t plen = 0, tlen = 0;
    rc = zt_claims_to_json(&payload, &plen, &c, &err);
    if (rc == 0) {
        rc = zt_jwt_sign(&tok, &tlen, &k, payload, plen, &err);
    }
    dbao_free(payload);
    dbao_free_secret(secret, secret_len);
    gm_sm2_key_free(sm2);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("%s\n", tok);
    dbao_free(tok);
    return CLI_OK;
}

static int
token_sign(const opts *o)
{
    if (o->device_key == NULL || o->token == NULL) {
        return cli_usage_error(TOKEN_SHORT, "sign needs --device-key and --token");
    }
    gm_sm2_key *k = NULL;
    int rc = load_device_priv(&k, o->device_key);
    if (rc != 0) {
        return rc;
    }
    char sig[ZT_DEVSIG_B64_LEN + 1];
    rc = zt_devsig_sign_token(sig, k, o->token, strlen(o->token));
    gm_sm2_key_free(k);
    if (rc != 0) {
        return cli_error(rc, "cannot sign the token");
    }
    printf("%s\n", sig);
    return CLI_OK;
}

static int
token_sign_request(const opts *o)
{
    if (o->device_key == NULL || o->method == NULL || o->url_path == NULL) {
        return cli_usage_error(TOKEN_SHORT, "sign-request needs --device-key, --method and "
                                            "--url-path");
    }
    int64_t ts = 0;
    if (o->timestamp) {
        char *end;
        ts = (int64_t) strtoll(o->timestamp, &end, 10);
        if (*end || ts <= 0) {
            return cli_usage_error(TOKEN_SHORT, "bad --timestamp '%s'", o->timestamp);
        }
    }
    uint8_t *body = NULL;
    size_t body_len = 0;
    dbao_err err = {0};
    int rc;
    if (o->body_file) {
        rc = dbao_file_read(&body, &body_len, o->body_file, CLI_INPUT_MAX, &err);
        if (rc != 0) {
            return cli_report(rc, &err);
        }
    }
    gm_sm2_key *k = NULL;
    rc = load_device_priv(&k, o->device_key);
    if (rc != 0) {
        dbao_free(body);
        return rc;
    }
    zt_devsig_headers h;
    rc = zt_devsig_sign_request(&h, k, o->method, o->url_path, o->query ? o->query : "",
                                body ? body : (const uint8_t *) "", body_len, ts, &err);
    gm_sm2_key_free(k);
    dbao_free(body);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("X-SM2-Signature: %s\nX-SM2-Timestamp: %s\nX-SM2-Nonce: %s\nX-Content-SM3: %s\n", h.sig,
           h.timestamp, h.nonce, h.content_sm3);
    return CLI_OK;
}

static int
token_identity_verify(const opts *o)
{
    if (o->key == NULL || o->header == NULL) {
        return cli_usage_error(TOKEN_SHORT, "identity-verify needs --key and --header");
    }
    int64_t max_age = parse_duration(o->max_age ? o->max_age : "60s");
    if (max_age < 0) {
        return cli_usage_error(TOKEN_SHORT, "bad --max-age '%s'", o->max_age);
    }
    uint8_t *key = NULL;
    size_t key_len = 0;
    dbao_err err = {0};
    int rc = gw__zt_read_secret(&key, &key_len, o->key, "--key", 16, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    gw_zt_identity id;
    rc = gw__zt_identity_verify(&id, key, key_len, o->header, strlen(o->header), 0, max_age, &err);
    dbao_free_secret(key, key_len);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("ok sub=%s roles=", id.sub);
    for (size_t i = 0; i < id.num_roles; i++) {
        printf("%s%s", i ? "," : "", id.roles[i]);
    }
    printf(" device=%s iat=%lld trace=%s\n", id.device[0] ? id.device : "-", (long long) id.iat,
           id.trace);
    return CLI_OK;
}

int cmd_token(int argc, char **argv);

int
cmd_token(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc < 2) {
            return cli_usage_error(TOKEN_SHORT, "no token command given");
        }
        fputs(token_usage, stdout);
        return CLI_OK;
    }
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0) {
        return rc == 1 ? CLI_OK : rc;
    }
    if (strcmp(argv[1], "issue") == 0) {
        return token_issue(&o);
    }
    if (strcmp(argv[1], "sign") == 0) {
        return token_sign(&o);
    }
    if (strcmp(argv[1], "sign-request") == 0) {
        return token_sign_request(&o);
    }
    if (strcmp(argv[1], "identity-verify") == 0) {
        return token_identity_verify(&o);
    }
    return cli_usage_error(TOKEN_SHORT, "unknown token command '%s'", argv[1]);
}
