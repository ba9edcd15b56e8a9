/* ztgw.c: the zero-trust step of the gateway (issue 6): identity, device binding, the signed
 * X-Auth-Identity header, RBAC, rate limits and one audit record per decision.
 *
 * One gw_step does the whole request side, in this order (the first refusal wins):
 *
 *   1. strip    every route: the client's copies of the identity header, of
 *               security.strip_headers and of every "X-Auth-*" header are removed;
 *   2. ip limit the client-IP bucket (before the token, so floods of bad tokens are limited);
 *   3. token    auth jwt: exactly one "Authorization: Bearer <jwt>" -> zt_jwt_verify; a missing
 *               or bad token -> 401 with WWW-Authenticate;
 *   4. device   token: X-SM2-Signature over the token (verified once per token and cached);
 *               request: the request-mode signature over method, path, query, timestamp, nonce
 *               and SM3 of the body (the body is buffered first: gw_ctx_read_body), nonces
 *               remembered for the window; mtls: the verified client certificate's SHA-256 must
 *               equal the token's cnf "x5t#S256". Failure -> 403 and a gateway.alert record;
 *   5. identity X-Auth-Identity (ztgw.h has the format), HMAC-SM3 with the identity key;
 *   6. rbac     zt_rbac_check on the roles, method, normalised path and route -> 403;
 *   7. limits   the subject bucket and the route bucket -> 429 with Retry-After;
 *   8. audit    the gateway.access record of the decision (allow or deny). Durable routes wait
 *               for it to be on disk (GW_ASYNC; the audit writer thread hands the completion
 *               back to the worker's loop through the worker's uv_async) and refuse with 503 if
 *               the log cannot take it; async routes queue it (bounded: a full queue refuses
 *               with 503 and is counted, never dropped silently).
 *
 * Per-request state (zreq) comes from a per-worker free list and is tied to the request
 * through gw_ctx_set_user. Lifetime rule: the gateway calls on_log exactly once when the
 * request ends; if a durable record is still outstanding then, on_log only marks the zreq
 * orphaned (ctx = NULL) and the record's completion recycles it. The body callback of
 * gw_ctx_read_body never runs after the request has ended (gateway.h), so it needs no such
 * care. Nothing touches a
 * gw_ctx after gw_ctx_respond (which ends the request and runs on_log).
 *
 * Key material is swapped, not mutated. The token keys and the device registry form one
 * snapshot (zsnap, reference-counted); the current one sits behind z->snap_mu with a
 * generation counter. A worker keeps its own reference with the generation it saw and only
 * takes the mutex when the generation moved (one acquire load per request on the fast path),
 * as zt_rbac_slot does for policies. Reloads (SIGHUP, the JWKS file's mtime, the JWKS URL
 * refresh) build a whole new snapshot and publish it; a snapshot that fails to build is
 * reported and the old one stays.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "dengbao/mask.h"
#include "ztgw.h"

#define ZT_ROUTE_LIMITS  256
#define ZT_FREE_REQS     128
#define ZT_KID_KICK_MS   10000
#define ZT_JWKS_MAX      (1u << 20)
#define ZT_DEVKEY_MAX    65536
#define ZT_REASON_MAX    320
#define ZT_PATH_IN_AUDIT 900

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* utf8_len returns the length of the well-formed UTF-8 sequence at s (1..4) or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
        return 0;
    }
    /* bidirectional overrides and isolates are refused by the audit record format */
    if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
        cp == 0x200f || cp == 0x61c) {
        return 0;
    }
    return len;
}

/* safe_copy copies src into dst (cap bytes with the NUL) as UTF-8 an audit record accepts:
 * control characters and malformed bytes become '?', the cut falls on a character boundary. */
static void
safe_copy(char *dst, size_t cap, const char *src)
{
    size_t o = 0, n = src ? strlen(src) : 0;
    const unsigned char *s = (const unsigned char *) src;
    for (size_t i = 0; i < n && o + 1 < cap;) {
        size_t l = utf8_len(s + i, n - i);
        if (l == 0 || (l == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
            dst[o++] = '?';
            i++;
            continue;
        }
        if (o + l >= cap) {
            break;
        }
        memcpy(dst + o, s + i, l);
        o += l;
        i += l;
    }
    if (cap) {
        dst[o] = 0;
    }
}

/* json_str appends ,"key":"value" (the first key without the comma) to b, value sanitised. */
static int
json_str(dbao_buf *b, const char *key, const char *value)
{
    char tmp[1024];
    safe_copy(tmp, sizeof tmp, value ? value : "");
    int rc = dbao_buf_printf(b, "%s\"%s\":\"", b->len > 1 ? "," : "", key);
    for (const char *p = tmp; rc == 0 && *p; p++) {
        if (*p == '"' || *p == '\\') {
            rc = dbao_buf_putc(b, '\\');
        }
        if (rc == 0) {
            rc = dbao_buf_putc(b, *p);
        }
    }
    return rc ? rc : dbao_buf_putc(b, '"');
}

static int
json_int(dbao_buf *b, const char *key, long long v)
{
    return dbao_buf_printf(b, "%s\"%s\":%lld", b->len > 1 ? "," : "", key, v);
}

static const char *
auth_name(gw_auth a)
{
    return a == GW_AUTH_NONE ? "none" : "jwt";
}

static const char *
device_name(gw_device_mode d)
{
    switch (d) {
    case GW_DEVICE_TOKEN:
        return "token";
    case GW_DEVICE_REQUEST:
        return "request";
    case GW_DEVICE_MTLS:
        return "mtls";
    default:
        return "none";
    }
}

/* ---- secret files ------------------------------------------------------------------------ */

int
gw__zt_read_secret(uint8_t **out, size_t *len, const char *path, const char *what, size_t min_len,
                   dbao_err *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        return dbao_err_set(err, -e, "%s: cannot open '%s': %s", what, path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dbao_err_set(err, DBAO_EINVAL, "%s: '%s' is not a regular file", what, path);
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return dbao_err_set(err, DBAO_EINVAL,
                            "%s: '%s' is readable by others (mode %03o): make it 0600", what, path,
                            (unsigned) (st.st_mode & 0777));
    }
    if (st.st_size > 65536) {
        close(fd);
        return dbao_err_set(err, DBAO_ERANGE, "%s: '%s' is too large", what, path);
    }
    size_t cap = (size_t) st.st_size + 1;
    uint8_t *buf = dbao_malloc(cap);
    if (buf == NULL) {
        close(fd);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    size_t n = 0;
    while (n < cap) {
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            break;
        }
        n += (size_t) k;
    }
    close(fd);
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
    }
    if (n < min_len) {
        dbao_free_secret(buf, cap);
        return dbao_err_set(err, DBAO_EKEY, "%s: '%s' holds %zu bytes, at least %zu are needed",
                            what, path, n, min_len);
    }
    /* re-home into an exact-size buffer so that the caller frees (out, len) */
    uint8_t *exact = dbao_malloc(n ? n : 1);
    if (exact == NULL) {
        dbao_free_secret(buf, cap);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    memcpy(exact, buf, n);
    dbao_free_secret(buf, cap);
    *out = exact;
    *len = n;
    return 0;
}

/* ---- X-Auth-Identity --------------------------------------------------------------------- */

static bool
unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int
pct_put(dbao_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        int rc;
        if (unreserved(*p)) {
            rc = dbao_buf_putc(b, (char) *p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = dbao_buf_put(b, e, 3);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int
gw__zt_identity_make(dbao_buf *out, const gm_hmac_sm3_ctx *keyed, const char *sub,
                     const char *const *roles, size_t num_roles, const char *device, int64_t iat,
                     const char *trace)
{
    dbao_buf_reset(out);
    int rc = dbao_buf_put(out, "v1;sub=", 7);
    if (rc == 0) {
        rc = pct_put(out, sub ? sub : "");
    }
    if (rc == 0) {
        rc = dbao_buf_put(out, ";roles=", 7);
    }
    for (size_t i = 0; rc == 0 && i < num_roles; i++) {
        if (i > 0) {
            rc = dbao_buf_putc(out, ',');
        }
        if (rc == 0) {
            rc = pct_put(out, roles[i]);
        }
    }
    if (rc == 0) {
        rc = dbao_buf_put(out, ";device=", 8);
    }
    if (rc == 0) {
        rc = device && device[0] ? pct_put(out, device) : dbao_buf_putc(out, '-');
    }
    if (rc == 0) {
        rc = dbao_buf_printf(out, ";iat=%lld;trace=", (long long) iat);
    }
    if (rc == 0) {
        rc = pct_put(out, trace ? trace : "");
    }
    if (rc != 0) {
        return rc;
    }
    gm_hmac_sm3_ctx h = *keyed;
    uint8_t mac[GM_SM3_DIGEST_LEN];
    char b64[ZT_SM3_B64_LEN + 1];
    gm_hmac_sm3_update(&h, out->data, out->len);
    gm_hmac_sm3_final(&h, mac); /* wipes h */
    zt_b64url_encode(b64, mac, sizeof mac);
    rc = dbao_buf_put(out, ";sig=", 5);
    if (rc == 0) {
        rc = dbao_buf_put(out, b64, ZT_SM3_B64_LEN);
    }
    return rc;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1; /* the maker writes upper-case hex only */
}

/* pct_get decodes [s, e) into out (cap bytes with the NUL); DBAO_EFORMAT if malformed. */
static int
pct_get(char *out, size_t cap, const char *s, const char *e)
{
    size_t o = 0;
    while (s < e) {
        unsigned char c = (unsigned char) *s;
        if (c == '%') {
            if (e - s < 3 || hexval(s[1]) < 0 || hexval(s[2]) < 0) {
                return DBAO_EFORMAT;
            }
            c = (unsigned char) (hexval(s[1]) << 4 | hexval(s[2]));
            if (c == 0 || unreserved(c)) {
                return DBAO_EFORMAT; /* one spelling per value */
            }
            s += 3;
        } else if (unreserved(c)) {
            s++;
        } else {
            return DBAO_EFORMAT;
        }
        if (o + 1 >= cap) {
            return DBAO_EFORMAT;
        }
        out[o++] = (char) c;
    }
    out[o] = 0;
    return 0;
}

/* field expects "name=" at *p and returns the value's end (before the next ';' or e). */
static const char *
field(const char **p, const char *e, const char *name)
{
    size_t n = strlen(name);
    if ((size_t) (e - *p) < n || memcmp(*p, name, n) != 0) {
        return NULL;
    }
    *p += n;
    const char *v = memchr(*p, ';', (size_t) (e - *p));
    return v ? v : e;
}

int
gw__zt_identity_verify(gw_zt_identity *out, const uint8_t *key, size_t key_len, const char *value,
                       size_t len, int64_t now, int64_t max_age, dbao_err *err)
{
    gw_zt_identity tmp;
    gw_zt_identity *id = out ? out : &tmp;
    memset(id, 0, sizeof *id);
    if (len > GW_ZT_IDENTITY_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header too long");
    }
    const char *e = value + len;
    const char *sig = NULL;
    for (const char *p = value; p + 5 <= e; p++) {
        if (memcmp(p, ";sig=", 5) == 0) {
            sig = p;
        }
    }
    if (sig == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header without sig");
    }
    uint8_t mac[GM_SM3_DIGEST_LEN], got[GM_SM3_DIGEST_LEN];
    size_t glen = 0;
    if (zt_b64url_decode(got, sizeof got, &glen, sig + 5, (size_t) (e - sig - 5)) != 0 ||
        glen != sizeof got) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header sig is not base64url of 32 bytes");
    }
    gm_hmac_sm3(mac, key, key_len, value, (size_t) (sig - value));
    if (!dbao_ct_memeq(mac, got, sizeof mac)) {
        return dbao_err_set(err, DBAO_EVERIFY, "identity header signature does not verify");
    }
    /* authentic: now the syntax (the gateway wrote it, so any deviation is a bug or a key leak) */
    const char *p = value, *v;
    if (sig - p < 3 || memcmp(p, "v1;", 3) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header: unknown version");
    }
    p += 3;
    if ((v = field(&p, sig, "sub=")) == NULL || pct_get(id->sub, sizeof id->sub, p, v) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad sub");
    }
    p = v + 1;
    if (v == sig || (v = field(&p, sig, "roles=")) == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad roles");
    }
    while (p < v) {
        const char *c = memchr(p, ',', (size_t) (v - p));
        const char *re = c ? c : v;
        if (id->num_roles == ZT_ROLES_MAX ||
            pct_get(id->roles[id->num_roles], ZT_ROLE_MAX, p, re) != 0 || re == p) {
            return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad roles");
        }
        id->num_roles++;
        p = c ? c + 1 : v;
        if (c && p == v) {
            return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad roles");
        }
    }
    p = v + 1;
    if (v == sig || (v = field(&p, sig, "device=")) == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad device");
    }
    if (v - p == 1 && *p == '-') {
        id->device[0] = 0;
    } else if (pct_get(id->device, sizeof id->device, p, v) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad device");
    }
    p = v + 1;
    /* at most 18 digits: the value cannot overflow int64 */
    if (v == sig || (v = field(&p, sig, "iat=")) == NULL || v == p || v - p > 18) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad iat");
    }
    int64_t iat = 0;
    for (const char *q = p; q < v; q++) {
        if (*q < '0' || *q > '9') {
            return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad iat");
        }
        iat = iat * 10 + (*q - '0');
    }
    id->iat = iat;
    p = v + 1;
    if (v == sig || (v = field(&p, sig, "trace=")) == NULL || v != sig ||
        pct_get(id->trace, sizeof id->trace, p, v) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "identity header: bad trace");
    }
    if (max_age > 0) {
        if (now == 0) {
            now = (int64_t) time(NULL);
        }
        if (iat + max_age < now) {
            return dbao_err_set(err, DBAO_EVERIFY, "identity header too old");
        }
        if (iat > now + 5) {
            return dbao_err_set(err, DBAO_EVERIFY, "identity header from the future");
        }
    }
    return 0;
}

/* ---- key snapshots ----------------------------------------------------------------------- */

typedef struct zsnap {
    atomic_int refs;
    zt_keyset *ks;
    zt_devkeys *dk; /* NULL: no registry (device keys come from the token's cnf.jwk) */
} zsnap;

static void
snap_unref(zsnap *s)
{
    /* acq_rel pairs with the other holders' decrements: the last one sees every use */
    if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        zt_keyset_unref(s->ks);
        zt_devkeys_free(s->dk);
        free(s);
    }
}

/* The parts of gw_security the runtime keeps (copied: the configuration may be reloaded). */
typedef struct zsec {
    unsigned algs;
    char *hs256_secret_file, *hs256_kid, *jwks_file, *jwks_url, *sm2_alg, *issuer;
    char **audience;
    size_t num_audience;
    uint32_t jwks_refresh_ms, clock_skew_s, request_window_s;
    size_t max_token;
    char *device_keys_dir;
    char *identity_header;
    char **strip;
    size_t num_strip;
    char *rbac_file;
} zsec;

static void
zsec_free(zsec *s)
{
    free(s->hs256_secret_file);
    free(s->hs256_kid);
    free(s->jwks_file);
    free(s->jwks_url);
    free(s->sm2_alg);
    free(s->issuer);
    for (size_t i = 0; i < s->num_audience; i++) {
        free(s->audience[i]);
    }
    free(s->audience);
    free(s->device_keys_dir);
    free(s->identity_header);
    for (size_t i = 0; i < s->num_strip; i++) {
        free(s->strip[i]);
    }
    free(s->strip);
    free(s->rbac_file);
    memset(s, 0, sizeof *s);
}

static int
dup_list(char ***out, size_t *num, char *const *in, size_t n)
{
    *out = NULL;
    *num = 0;
    if (n == 0) {
        return 0;
    }
    *out = calloc(n, sizeof **out);
    if (*out == NULL) {
        return DBAO_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        (*out)[i] = strdup(in[i]);
        if ((*out)[i] == NULL) {
            return DBAO_ENOMEM;
        }
        (*num)++;
    }
    return 0;
}

static int
zsec_init(zsec *s, const gw_security *g)
{
    memset(s, 0, sizeof *s);
    s->algs = g->algs ? g->algs : ZT_ALG_ALL;
    s->jwks_refresh_ms = g->jwks_refresh_ms ? g->jwks_refresh_ms : 300000;
    s->clock_skew_s = g->clock_skew_s;
    s->request_window_s = g->request_window_s ? g->request_window_s : 300;
    s->max_token = g->max_token;
    s->hs256_secret_file = dup_or_null(g->hs256_secret_file);
    s->hs256_kid = dup_or_null(g->hs256_kid);
    s->jwks_file = dup_or_null(g->jwks_file);
    s->jwks_url = dup_or_null(g->jwks_url);
    s->sm2_alg = dup_or_null(g->sm2_alg);
    s->issuer = dup_or_null(g->issuer);
    s->device_keys_dir = dup_or_null(g->device_keys_dir);
    s->identity_header = strdup(g->identity_header ? g->identity_header : "X-Auth-Identity");
    s->rbac_file = dup_or_null(g->rbac_file);
    if ((g->hs256_secret_file && !s->hs256_secret_file) || (g->hs256_kid && !s->hs256_kid) ||
        (g->jwks_file && !s->jwks_file) || (g->jwks_url && !s->jwks_url) ||
        (g->sm2_alg && !s->sm2_alg) || (g->issuer && !s->issuer) ||
        (g->device_keys_dir && !s->device_keys_dir) || !s->identity_header ||
        (g->rbac_file && !s->rbac_file) ||
        dup_list(&s->audience, &s->num_audience, g->audience, g->num_audience) != 0 ||
        dup_list(&s->strip, &s->num_strip, g->strip_headers, g->num_strip) != 0) {
        return DBAO_ENOMEM;
    }
    return 0;
}

static int
load_devkeys(zt_devkeys **out, const char *dir, dbao_err *err)
{
    *out = NULL;
    if (dir == NULL) {
        return 0;
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        int e = errno;
        return dbao_err_set(err, -e, "devices.keys_dir: cannot open '%s': %s", dir, strerror(e));
    }
    zt_devkeys *dk = NULL;
    int rc = zt_devkeys_new(&dk, err);
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.' || n < 5 || strcmp(de->d_name + n - 4, ".pem") != 0) {
            continue;
        }
        char path[4096];
        if ((size_t) snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= sizeof path) {
            rc = dbao_err_set(err, DBAO_ERANGE, "devices.keys_dir: path too long");
            break;
        }
        uint8_t *pem = NULL;
        size_t pem_len = 0;
        rc = dbao_file_read(&pem, &pem_len, path, ZT_DEVKEY_MAX, err);
        if (rc == 0) {
            rc = zt_devkeys_add_pem(dk, (const char *) pem, pem_len, err);
            if (rc != 0) {
                dbao_err_set(err, rc, "devices.keys_dir: '%s' is not an SM2 public key",
                             de->d_name);
            }
        } else {
            dbao_err_set(err, rc, "devices.keys_dir: cannot read '%s'", de->d_name);
        }
        dbao_free(pem);
    }
    closedir(d);
    if (rc != 0) {
        zt_devkeys_free(dk);
        return rc;
    }
    *out = dk;
    return 0;
}

/* build_snap makes a new snapshot from the files and the last JWKS URL document (may be
 * NULL). */
static int
build_snap(zsnap **out, const zsec *s, const char *url_doc, size_t url_len, dbao_err *err)
{
    *out = NULL;
    zsnap *sn = calloc(1, sizeof *sn);
    if (sn == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    atomic_init(&sn->refs, 1);
    int rc = zt_keyset_new(&sn->ks, s->sm2_alg, err);
    if (rc == 0 && s->hs256_secret_file) {
        uint8_t *sec = NULL;
        size_t sec_len = 0;
        rc = gw__zt_read_secret(&sec, &sec_len, s->hs256_secret_file, "jwt.hs256_secret_file", 16,
                                err);
        if (rc == 0) {
            rc = zt_keyset_add_hmac(sn->ks, s->hs256_kid, sec, sec_len, err);
            dbao_free_secret(sec, sec_len);
        }
    }
    if (rc == 0 && s->jwks_file) {
        rc = zt_keyset_load_jwks_file(sn->ks, s->jwks_file, err);
        if (rc != 0) {
            dbao_err_set(err, rc, "jwt.jwks_file '%s': %s", s->jwks_file,
                         err && err->msg[0] ? err->msg : dbao_strerror(rc));
        }
    }
    if (rc == 0 && url_doc) {
        dbao_err e2 = {0};
        rc = zt_keyset_add_jwks(sn->ks, url_doc, url_len, &e2);
        if (rc != 0) {
            dbao_err_set(err, rc, "jwt.jwks_url document: %s", e2.msg);
        }
    }
    if (rc == 0) {
        rc = load_devkeys(&sn->dk, s->device_keys_dir, err);
    }
    if (rc != 0) {
        snap_unref(sn);
        return rc;
    }
    *out = sn;
    return 0;
}

/* ---- the runtime ------------------------------------------------------------------------- */

typedef struct zreq zreq;

typedef struct zworker {
    gw_zt *z;
    pthread_mutex_t mu; /* done, dead */
    zreq *done;         /* completed durable records, for this loop */
    bool dead;          /* the loop has ended: completions free their zreq themselves */
    /* loop thread only: */
    bool async_open;
    uv_async_t async;
    zreq *free;
    size_t num_free;
    zt_rbac_local rbac;
    zsnap *snap;
    uint64_t snap_gen;
    dbao_buf scratch;
} zworker;

typedef struct zroute_limit {
    char name[128];
    gw_limit lim;
    zt_ratelimit *t;
} zroute_limit;

struct gw_zt {
    gw_zt_opts o;
    zsec sec;
    size_t index; /* the step's slot (gw_ctx_user) */
    unsigned num_workers;
    zworker *workers;
    zt_jwt_opts jopts;
    const char **aud;
    uint8_t *id_key;
    size_t id_key_len;
    gm_hmac_sm3_ctx id_keyed; /* HMAC state after the key: copied per request */
    zt_sigcache *sigcache;
    zt_noncecache *nonces;
    zt_rbac_slot *rbac;
    zt_rbac_etcd *etcd; /* the watcher, when the policy comes from etcd */
    zt_ratelimit *ip_limit, *subject_limit;
    gw_audit_mode default_audit;
    size_t audit_queue;
    atomic_size_t async_inflight;
    /* route limit tables: append-only; readers load num_rl (acquire, pairs with the release
     * store after an entry is filled) and scan without a lock */
    zroute_limit rl[ZT_ROUTE_LIMITS];
    atomic_size_t num_rl;
    pthread_mutex_t rl_mu;
    /* the key snapshot */
    pthread_mutex_t snap_mu; /* snap, url_doc */
    zsnap *snap;
    atomic_uint_fast64_t snap_gen;
    char *url_doc;
    size_t url_len;
    time_t jwks_mtime;
    pthread_mutex_t build_mu; /* one rebuild at a time (SIGHUP vs. refresher) */
    /* refresher thread */
    pthread_t th;
    bool th_ok;
    pthread_mutex_t th_mu;
    pthread_cond_t th_cond;
    bool th_stop, th_kick;
    atomic_uint_fast64_t last_kick_ms;
    atomic_uint_fast64_t last_queue_alarm_ms;
    /* counters (relaxed: statistics only) */
    atomic_uint_fast64_t st_allowed, st_401, st_403, st_429, st_503, st_audit, st_audit_fail,
        st_queue_full, st_fetch, st_fetch_fail, st_reload_fail;
};

struct zreq {
    zreq *next;
    gw_zt *z;
    zworker *w;
    gw_ctx *ctx;  /* NULL once the request has ended (on_log ran) */
    bool waiting; /* a durable record is outstanding (its completion recycles the zreq) */
    bool authed;
    bool alert;
    bool token_seen;
    int decided; /* 0 allow, else the refusal status */
    int audit_status;
    uint32_t retry_after_s;
    const char *body_json; /* static refusal body */
    const char *token;
    size_t token_len;
    char reason[ZT_REASON_MAX];
    char rule[96];
    char device[ZT_SM3_B64_LEN + 1];
    char roles_joined[AUDIT_SUBJECT_ROLE_MAX + 1];
    const char *roles[ZT_ROLES_MAX];
    gw_principal principal;
    zt_claims claims;
    audit_log_req req;
    uint32_t lens[2];
    dbao_buf rec;
};

/* ---- snapshot publication ---- */

static void
snap_publish(gw_zt *z, zsnap *sn)
{
    pthread_mutex_lock(&z->snap_mu);
    zsnap *old = z->snap;
    z->snap = sn;
    /* release pairs with the acquire load in worker_snap: a worker that sees the new
     * generation takes the mutex and finds the new pointer */
    atomic_fetch_add_explicit(&z->snap_gen, 1, memory_order_release);
    pthread_mutex_unlock(&z->snap_mu);
    snap_unref(old);
}

static zsnap *
worker_snap(gw_zt *z, zworker *w)
{
    uint64_t g = atomic_load_explicit(&z->snap_gen, memory_order_acquire);
    if (w->snap == NULL || g != w->snap_gen) {
        pthread_mutex_lock(&z->snap_mu);
        zsnap *sn = z->snap;
        atomic_fetch_add_explicit(&sn->refs, 1, memory_order_relaxed);
        g = atomic_load_explicit(&z->snap_gen, memory_order_relaxed);
        pthread_mutex_unlock(&z->snap_mu);
        snap_unref(w->snap);
        w->snap = sn;
        w->snap_gen = g;
    }
    return w->snap;
}

static int
rebuild(gw_zt *z, dbao_err *err)
{
    pthread_mutex_lock(&z->build_mu);
    pthread_mutex_lock(&z->snap_mu);
    char *doc = NULL;
    size_t doc_len = z->url_len;
    if (z->url_doc) {
        doc = malloc(doc_len + 1);
        if (doc) {
            memcpy(doc, z->url_doc, doc_len + 1);
        }
    }
    pthread_mutex_unlock(&z->snap_mu);
    zsnap *sn = NULL;
    int rc = (z->url_doc && doc == NULL) ? dbao_err_set(err, DBAO_ENOMEM, "out of memory")
                                         : build_snap(&sn, &z->sec, doc, doc_len, err);
    free(doc);
    if (rc == 0) {
        snap_publish(z, sn);
    }
    pthread_mutex_unlock(&z->build_mu);
    return rc;
}

/* ---- JWKS URL ---- */

typedef struct fetchbuf {
    char *data;
    size_t len;
    bool over;
} fetchbuf;

static size_t
on_curl_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    fetchbuf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > ZT_JWKS_MAX) {
        b->over = true;
        return 0;
    }
    char *p = realloc(b->data, b->len + n + 1);
    if (p == NULL) {
        return 0;
    }
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    p[b->len] = 0;
    return n;
}

/* fetch_jwks gets the JWKS URL; on success the document replaces z->url_doc. 1 when the
 * document changed, 0 when the same, negative on failure (reported on stderr). */
static int
fetch_jwks(gw_zt *z)
{
    fetchbuf b = {0};
    CURL *c = curl_easy_init();
    if (c == NULL) {
        return DBAO_ENOMEM;
    }
    curl_easy_setopt(c, CURLOPT_URL, z->sec.jwks_url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_curl_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    atomic_fetch_add_explicit(&z->st_fetch, 1, memory_order_relaxed);
    if (cc != CURLE_OK || code != 200 || b.data == NULL) {
        atomic_fetch_add_explicit(&z->st_fetch_fail, 1, memory_order_relaxed);
        fprintf(stderr, "gateway: jwt.jwks_url: fetch failed (%s, HTTP %ld)%s; the keys stay\n",
                cc != CURLE_OK ? curl_easy_strerror(cc) : "ok", code,
                b.over ? ", document over 1 MiB" : "");
        free(b.data);
        return DBAO_EIO;
    }
    /* check it parses before it replaces the last good document */
    zt_keyset *probe = NULL;
    dbao_err e = {0};
    int rc = zt_keyset_new(&probe, z->sec.sm2_alg, &e);
    if (rc == 0) {
        rc = zt_keyset_add_jwks(probe, b.data, b.len, &e);
    }
    zt_keyset_unref(probe);
    if (rc != 0) {
        atomic_fetch_add_explicit(&z->st_fetch_fail, 1, memory_order_relaxed);
        fprintf(stderr, "gateway: jwt.jwks_url: the document is refused (%s); the keys stay\n",
                e.msg);
        free(b.data);
        return rc;
    }
    pthread_mutex_lock(&z->snap_mu);
    bool same = z->url_doc && z->url_len == b.len && memcmp(z->url_doc, b.data, b.len) == 0;
    if (!same) {
        free(z->url_doc);
        z->url_doc = b.data;
        z->url_len = b.len;
        b.data = NULL;
    }
    pthread_mutex_unlock(&z->snap_mu);
    free(b.data);
    return same ? 0 : 1;
}

static time_t
file_mtime(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 ? st.st_mtime : 0;
}

static void *
refresher(void *arg)
{
    gw_zt *z = arg;
    pthread_mutex_lock(&z->th_mu);
    while (!z->th_stop) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += z->sec.jwks_refresh_ms / 1000;
        dl.tv_nsec += (long) (z->sec.jwks_refresh_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        while (!z->th_stop && !z->th_kick) {
            if (pthread_cond_timedwait(&z->th_cond, &z->th_mu, &dl) == ETIMEDOUT) {
                break;
            }
        }
        if (z->th_stop) {
            break;
        }
        z->th_kick = false;
        pthread_mutex_unlock(&z->th_mu);
        bool changed = false;
        if (z->sec.jwks_url && fetch_jwks(z) == 1) {
            changed = true;
        }
        time_t mt = file_mtime(z->sec.jwks_file);
        if (z->sec.jwks_file && mt != z->jwks_mtime) {
            z->jwks_mtime = mt;
            changed = true;
        }
        if (changed) {
            dbao_err e = {0};
            if (rebuild(z, &e) != 0) {
                atomic_fetch_add_explicit(&z->st_reload_fail, 1, memory_order_relaxed);
                fprintf(stderr, "gateway: token keys not reloaded, the old ones stay: %s\n", e.msg);
            }
        }
        pthread_mutex_lock(&z->th_mu);
    }
    pthread_mutex_unlock(&z->th_mu);
    return NULL;
}

/* kick_refresh asks the refresher for a JWKS fetch now (an unknown kid), at most once per
 * 10 s; any thread. */
static void
kick_refresh(gw_zt *z)
{
    if (!z->th_ok || z->sec.jwks_url == NULL) {
        return;
    }
    uint64_t now = mono_ns() / 1000000u;
    uint64_t last = atomic_load_explicit(&z->last_kick_ms, memory_order_relaxed);
    if (last != 0 && now - last < ZT_KID_KICK_MS) {
        return;
    }
    if (!atomic_compare_exchange_strong_explicit(&z->last_kick_ms, &last, now, memory_order_relaxed,
                                                 memory_order_relaxed)) {
        return; /* another worker kicked */
    }
    pthread_mutex_lock(&z->th_mu);
    z->th_kick = true;
    pthread_cond_signal(&z->th_cond);
    pthread_mutex_unlock(&z->th_mu);
}

/* ---- route limits ---- */

static bool
same_limit(const gw_limit *a, const gw_limit *b)
{
    return a->rate == b->rate && a->period_ms == b->period_ms && a->burst == b->burst &&
           a->max_keys == b->max_keys;
}

static zt_ratelimit *
limit_new(const gw_limit *l)
{
    zt_ratelimit *t = NULL;
    zt_ratelimit_opts o = {.rate = l->rate,
                           .period_ms = l->period_ms,
                           .burst = l->burst,
                           .max_keys = 16}; /* one key: the whole route */
    return zt_ratelimit_new(&t, &o, NULL) == 0 ? t : NULL;
}

static zt_ratelimit *
route_limit(gw_zt *z, const gw_route *rt)
{
    const char *name = rt->name ? rt->name : "";
    size_t n = atomic_load_explicit(&z->num_rl, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(z->rl[i].name, name) == 0 && same_limit(&z->rl[i].lim, &rt->sec.limit)) {
            return z->rl[i].t;
        }
    }
    zt_ratelimit *t = NULL;
    pthread_mutex_lock(&z->rl_mu);
    n = atomic_load_explicit(&z->num_rl, memory_order_relaxed);
    for (size_t i = 0; i < n && t == NULL; i++) {
        if (strcmp(z->rl[i].name, name) == 0 && same_limit(&z->rl[i].lim, &rt->sec.limit)) {
            t = z->rl[i].t;
        }
    }
    if (t == NULL && n < ZT_ROUTE_LIMITS && (t = limit_new(&rt->sec.limit)) != NULL) {
        zroute_limit *e = &z->rl[n];
        snprintf(e->name, sizeof e->name, "%s", name);
        e->lim = rt->sec.limit;
        e->t = t;
        /* release pairs with the acquire load above: readers see the filled entry */
        atomic_store_explicit(&z->num_rl, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&z->rl_mu);
    return t;
}

/* ---- audit records ---- */

typedef struct zrec {
    const char *type, *action;
    audit_result result;
    int code;
    const char *sub, *roles, *ip, *device, *object;
    const dbao_buf *details;
} zrec;

/* rec_append encodes one record at the end of out and its length into *len. */
static int
rec_append(dbao_buf *out, uint32_t *len, const zrec *z, dbao_err *err)
{
    audit_record r;
    audit_record_init(&r);
    r.time_ns = audit_now_ns();
    int rc = audit_uuid7_generate(r.event_id, r.time_ns);
    safe_copy(r.subject.id, sizeof r.subject.id, z->sub && z->sub[0] ? z->sub : "-");
    safe_copy(r.subject.role, sizeof r.subject.role, z->roles);
    safe_copy(r.subject.device, sizeof r.subject.device, z->device);
    if (z->ip && z->ip[0]) {
        (void) audit_record_set_ip(&r, z->ip, NULL);
    }
    snprintf(r.event_type, sizeof r.event_type, "%s", z->type);
    snprintf(r.action, sizeof r.action, "%s", z->action);
    safe_copy(r.object, sizeof r.object, z->object);
    r.result = z->result;
    r.code = z->code;
    snprintf(r.source, sizeof r.source, "gateway");
    if (rc == 0 && z->details) {
        rc = audit_record_set_details(&r, z->details->data, z->details->len, err);
    }
    if (rc == 0) {
        rc = dbao_buf_reserve(out, AUDIT_RECORD_MAX);
    }
    size_t n = 0;
    if (rc == 0) {
        rc = audit_record_encode(&r, (uint8_t *) out->data + out->len, &n, AUDIT_RECORD_MAX, err);
    }
    if (rc == 0) {
        out->len += n;
        out->data[out->len] = 0;
        *len = (uint32_t) n;
    }
    audit_record_cleanup(&r);
    return rc;
}

typedef struct zasync {
    audit_log_req req;
    gw_zt *z;
    bool counted; /* holds a slot of the bounded queue */
    uint32_t lens[2];
    uint8_t data[];
} zasync;

static void
on_async_record_done(audit_log_req *req)
{
    zasync *a = req->arg;
    gw_zt *z = a->z;
    if (req->status == 0) {
        atomic_fetch_add_explicit(&z->st_audit, req->num, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&z->st_audit_fail, req->num, memory_order_relaxed);
    }
    if (a->counted) {
        atomic_fetch_sub_explicit(&z->async_inflight, 1, memory_order_relaxed);
    }
    free(a);
}

static void
queue_alarm(gw_zt *z, const char *what)
{
    uint64_t now = mono_ns() / 1000000u;
    uint64_t last = atomic_load_explicit(&z->last_queue_alarm_ms, memory_order_relaxed);
    if ((last == 0 || now - last >= 10000) &&
        atomic_compare_exchange_strong_explicit(&z->last_queue_alarm_ms, &last, now,
                                                memory_order_relaxed, memory_order_relaxed)) {
        fprintf(stderr, "gateway: audit: %s; requests are refused with 503 while it lasts\n", what);
    }
}

/* submit_async queues records (copied) without waiting. bounded: counts against
 * security.audit.queue. 0 or a negative code (nothing queued). */
static int
submit_async(gw_zt *z, const uint8_t *data, const uint32_t *lens, size_t num, bool bounded)
{
    if (bounded) {
        size_t q = atomic_fetch_add_explicit(&z->async_inflight, 1, memory_order_relaxed);
        if (q >= z->audit_queue) {
            atomic_fetch_sub_explicit(&z->async_inflight, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&z->st_queue_full, 1, memory_order_relaxed);
            queue_alarm(z, "the asynchronous record queue is full");
            return DBAO_ERANGE;
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < num; i++) {
        total += lens[i];
    }
    zasync *a = malloc(sizeof *a + total);
    if (a == NULL) {
        if (bounded) {
            atomic_fetch_sub_explicit(&z->async_inflight, 1, memory_order_relaxed);
        }
        return DBAO_ENOMEM;
    }
    memset(a, 0, sizeof *a);
    memcpy(a->data, data, total);
    memcpy(a->lens, lens, num * sizeof *lens);
    a->z = z;
    a->counted = bounded;
    a->req.data = a->data;
    a->req.lens = a->lens;
    a->req.num = num;
    a->req.done = on_async_record_done;
    a->req.arg = a;
    int rc = audit_log_submit(z->o.log, &a->req);
    if (rc != 0) {
        atomic_fetch_add_explicit(&z->st_audit_fail, num, memory_order_relaxed);
        if (bounded) {
            atomic_fetch_sub_explicit(&z->async_inflight, 1, memory_order_relaxed);
        }
        free(a);
        queue_alarm(z, "the audit log refuses records");
    }
    return rc;
}

/* a record outside any request (breaker, policy reload): async, reported if lost */
static void
side_record(gw_zt *z, const zrec *r)
{
    dbao_buf b = {0};
    uint32_t len = 0;
    dbao_err e = {0};
    int rc = rec_append(&b, &len, r, &e);
    if (rc == 0) {
        rc = submit_async(z, (const uint8_t *) b.data, &len, 1, false);
    }
    if (rc != 0) {
        fprintf(stderr, "gateway: audit: a %s record could not be written: %s\n", r->type,
                e.msg[0] ? e.msg : dbao_strerror(rc));
    }
    dbao_buf_free(&b);
}

/* ---- per-request state ---- */

static zreq *
zreq_get(zworker *w)
{
    zreq *r = w->free;
    if (r != NULL) {
        w->free = r->next;
        w->num_free--;
    } else {
        r = calloc(1, sizeof *r);
        if (r == NULL) {
            return NULL;
        }
    }
    dbao_buf rec = r->rec;
    memset(r, 0, offsetof(zreq, claims));
    memset(&r->req, 0, sizeof r->req);
    r->claims.sub[0] = 0;
    r->claims.num_roles = 0;
    r->claims.has_cnf = r->claims.has_cnf_pub = r->claims.has_cnf_x5t = false;
    r->rec = rec;
    dbao_buf_reset(&r->rec);
    r->w = w;
    r->z = w->z;
    return r;
}

static void
zreq_destroy(zreq *r)
{
    dbao_buf_free(&r->rec);
    free(r);
}

static void
zreq_put(zworker *w, zreq *r)
{
    if (w->dead || w->num_free >= ZT_FREE_REQS) {
        zreq_destroy(r);
        return;
    }
    r->next = w->free;
    w->free = r;
    w->num_free++;
}

/* ---- decisions ---- */

static void
set_reason(zreq *r, const char *what, const dbao_err *e)
{
    if (e && e->msg[0]) {
        snprintf(r->reason, sizeof r->reason, "%.60s: %.250s", what, e->msg);
    } else {
        snprintf(r->reason, sizeof r->reason, "%s", what);
    }
}

static void
join_roles(zreq *r)
{
    size_t o = 0;
    r->roles_joined[0] = 0;
    for (size_t i = 0; i < r->claims.num_roles; i++) {
        size_t n = strlen(r->roles[i]);
        if (o + n + (i ? 1 : 0) >= sizeof r->roles_joined) {
            break; /* whole roles only */
        }
        if (i) {
            r->roles_joined[o++] = ',';
        }
        memcpy(r->roles_joined + o, r->roles[i], n);
        o += n;
        r->roles_joined[o] = 0;
    }
}

/* build_records writes the gateway.access record (and the gateway.alert record for device
 * failures) into r->rec. */
static int
build_records(zreq *r, dbao_err *err)
{
    gw_ctx *ctx = r->ctx;
    const gw_route *rt = gw_ctx_route(ctx);
    zworker *w = r->w;
    dbao_buf *d = &w->scratch;
    char object[ZT_PATH_IN_AUDIT + 32];
    const char *method = net_request_method(gw_ctx_request(ctx));
    const char *path = gw_ctx_path(ctx);
    snprintf(object, sizeof object, "%s %.*s", method, ZT_PATH_IN_AUDIT, path ? path : "");
    dbao_buf_reset(d);
    /* Keys in canonical (sorted) order with canonical strings and integers: the audit
     * library then takes the details as they are, without re-parsing (jcscheck.c). */
    int rc = dbao_buf_putc(d, '{');
    if (rc == 0) {
        rc = json_str(d, "auth", rt ? auth_name(rt->sec.auth) : "none");
    }
    if (rc == 0 && r->device[0]) {
        rc = json_str(d, "device", r->device);
    }
    if (rc == 0) {
        rc = json_str(d, "device_mode", rt ? device_name(rt->sec.device) : "none");
    }
    if (rc == 0 && r->reason[0]) {
        rc = json_str(d, "reason", r->reason);
    }
    if (rc == 0 && r->retry_after_s) {
        rc = json_int(d, "retry_after", r->retry_after_s);
    }
    if (rc == 0) {
        rc = json_str(d, "route", rt && rt->name ? rt->name : "");
    }
    if (rc == 0 && r->rule[0]) {
        rc = json_str(d, "rule", r->rule);
    }
    if (rc == 0) {
        rc = json_str(d, "trace_id", gw_ctx_trace_id(ctx));
    }
    if (rc == 0) {
        rc = dbao_buf_putc(d, '}');
    }
    if (rc != 0) {
        return dbao_err_set(err, rc, "out of memory");
    }
    zrec a = {.type = "gateway.access",
              .action = r->decided ? "deny" : "allow",
              .result = r->decided ? AUDIT_RESULT_FAILURE : AUDIT_RESULT_SUCCESS,
              .code = r->decided,
              .sub = r->authed ? r->claims.sub : "-",
              .roles = r->authed ? r->roles_joined : "",
              .ip = gw_ctx_client(ctx),
              .device = r->device,
              .object = object,
              .details = d};
    dbao_buf_reset(&r->rec);
    rc = rec_append(&r->rec, &r->lens[0], &a, err);
    r->req.num = 1;
    if (rc == 0 && r->alert) {
        a.type = "gateway.alert";
        a.action = "device-signature";
        rc = rec_append(&r->rec, &r->lens[1], &a, err);
        r->req.num = 2;
    }
    return rc;
}

static void on_durable_done(audit_log_req *req);

/* respond_refusal answers the decided refusal; the request ends (on_log runs) inside. */
static void
respond_refusal(zreq *r)
{
    gw_ctx *ctx = r->ctx;
    gw_zt *z = r->z;
    int status = r->decided;
    const char *body = r->body_json;
    char ra[16];
    switch (status) {
    case 401:
        atomic_fetch_add_explicit(&z->st_401, 1, memory_order_relaxed);
        gw_ctx_add_response_header(ctx, "WWW-Authenticate",
                                   r->token_seen
                                       ? "Bearer realm=\"dengbao\", error=\"invalid_token\""
                                       : "Bearer realm=\"dengbao\"");
        break;
    case 403:
        atomic_fetch_add_explicit(&z->st_403, 1, memory_order_relaxed);
        break;
    case 429:
        atomic_fetch_add_explicit(&z->st_429, 1, memory_order_relaxed);
        snprintf(ra, sizeof ra, "%u", r->retry_after_s ? r->retry_after_s : 1);
        gw_ctx_add_response_header(ctx, "Retry-After", ra);
        break;
    default:
        atomic_fetch_add_explicit(&z->st_503, 1, memory_order_relaxed);
        gw_ctx_add_response_header(ctx, "Retry-After", "1");
        break;
    }
    gw_ctx_add_response_header(ctx, "Cache-Control", "no-store");
    gw_ctx_add_response_header(ctx, "X-Trace-Id", gw_ctx_trace_id(ctx));
    if (body == NULL) {
        body = "{\"error\":\"unavailable\"}\n";
    }
    gw_ctx_respond(ctx, status, "application/json", body, strlen(body));
}

static void
fail_closed(zreq *r, const char *why)
{
    r->decided = 503;
    r->body_json = "{\"error\":\"audit_unavailable\"}\n";
    snprintf(r->reason, sizeof r->reason, "%s", why);
    respond_refusal(r);
}

/* decide writes the record of r's decision and then continues (allow: GW_NEXT) or answers
 * (GW_DONE); durable routes return GW_ASYNC and finish in on_worker_async. */
static int
decide(zreq *r)
{
    gw_zt *z = r->z;
    const gw_route *rt = gw_ctx_route(r->ctx);
    dbao_err e = {0};
    if (build_records(r, &e) != 0) {
        atomic_fetch_add_explicit(&z->st_audit_fail, 1, memory_order_relaxed);
        fail_closed(r, "audit: cannot build the record");
        return GW_DONE;
    }
    bool durable = (rt ? rt->sec.audit : z->default_audit) == GW_AUDIT_DURABLE;
    if (durable) {
        r->req.data = (const uint8_t *) r->rec.data;
        r->req.lens = r->lens;
        r->req.done = on_durable_done;
        r->req.arg = r;
        r->waiting = true;
        if (audit_log_submit(z->o.log, &r->req) != 0) {
            r->waiting = false;
            atomic_fetch_add_explicit(&z->st_audit_fail, 1, memory_order_relaxed);
            queue_alarm(z, "the audit log refuses records");
            fail_closed(r, "audit: the log refuses records");
            return GW_DONE;
        }
        return GW_ASYNC;
    }
    if (submit_async(z, (const uint8_t *) r->rec.data, r->lens, r->req.num, true) != 0) {
        fail_closed(r, "audit: queue full or log failed");
        return GW_DONE;
    }
    if (r->decided) {
        respond_refusal(r);
        return GW_DONE;
    }
    atomic_fetch_add_explicit(&z->st_allowed, 1, memory_order_relaxed);
    return GW_NEXT;
}

static int
refuse(zreq *r, int status, const char *body, const char *what, const dbao_err *e)
{
    r->decided = status;
    r->body_json = body;
    set_reason(r, what, e);
    return decide(r);
}

static void
on_durable_done(audit_log_req *req)
{
    zreq *r = req->arg;
    zworker *w = r->w;
    gw_zt *z = r->z;
    r->audit_status = req->status;
    if (req->status == 0) {
        atomic_fetch_add_explicit(&z->st_audit, req->num, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&z->st_audit_fail, req->num, memory_order_relaxed);
    }
    pthread_mutex_lock(&w->mu);
    if (w->dead || !w->async_open) {
        pthread_mutex_unlock(&w->mu);
        zreq_destroy(r); /* the loop is gone and so is the request */
        return;
    }
    r->next = w->done;
    w->done = r;
    uv_async_send(&w->async);
    pthread_mutex_unlock(&w->mu);
}

static void
on_worker_async(uv_async_t *h)
{
    zworker *w = h->data;
    pthread_mutex_lock(&w->mu);
    zreq *list = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->mu);
    zreq *fifo = NULL; /* completion order */
    while (list) {
        zreq *n = list->next;
        list->next = fifo;
        fifo = list;
        list = n;
    }
    while (fifo) {
        zreq *r = fifo;
        fifo = r->next;
        r->waiting = false;
        if (r->ctx == NULL) {
            zreq_put(w, r); /* the request ended meanwhile */
            continue;
        }
        if (r->audit_status != 0) {
            queue_alarm(r->z, "the audit log failed");
            fail_closed(r, "audit: the record was not written");
        } else if (r->decided) {
            respond_refusal(r);
        } else {
            atomic_fetch_add_explicit(&r->z->st_allowed, 1, memory_order_relaxed);
            gw_ctx_resume(r->ctx, GW_NEXT);
        }
    }
}

static int
worker_async_open(zworker *w, uv_loop_t *loop)
{
    if (w->async_open) {
        return 0;
    }
    if (uv_async_init(loop, &w->async, on_worker_async) != 0) {
        return DBAO_ENOMEM;
    }
    w->async.data = w;
    pthread_mutex_lock(&w->mu);
    w->async_open = true;
    w->dead = false;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void
on_worker_start(unsigned worker, struct uv_loop_s *loop, void *arg)
{
    gw_zt *z = arg;
    if (worker < z->num_workers) {
        (void) worker_async_open(&z->workers[worker], loop);
    }
}

static void
on_worker_stop(unsigned worker, struct uv_loop_s *loop, void *arg)
{
    (void) loop;
    gw_zt *z = arg;
    if (worker >= z->num_workers) {
        return;
    }
    zworker *w = &z->workers[worker];
    pthread_mutex_lock(&w->mu);
    w->dead = true;
    zreq *list = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->mu);
    while (list) {
        zreq *n = list->next;
        zreq_destroy(list);
        list = n;
    }
    while (w->free) {
        zreq *n = w->free->next;
        zreq_destroy(w->free);
        w->free = n;
    }
    w->num_free = 0;
    if (w->async_open) {
        uv_close((uv_handle_t *) &w->async, NULL);
    }
    zt_rbac_local_cleanup(&w->rbac);
    snap_unref(w->snap);
    w->snap = NULL;
    dbao_buf_free(&w->scratch);
}

/* ---- the steps of the request ---- */

static bool
take(zt_ratelimit *t, const void *key, size_t len, uint32_t *retry_s)
{
    uint32_t ms = 0;
    if (zt_ratelimit_take(t, key, len, mono_ns(), &ms)) {
        return true;
    }
    *retry_s = (ms + 999) / 1000;
    if (*retry_s == 0) {
        *retry_s = 1;
    }
    return false;
}

/* find_bearer: 0 and the token; 1 no Authorization header; DBAO_EFORMAT otherwise. */
static int
find_bearer(gw_ctx *ctx, const char **tok, size_t *len, const char **why)
{
    net_request *req = gw_ctx_request(ctx);
    const char *val = NULL;
    size_t n = net_request_num_headers(req), count = 0;
    for (size_t i = 0; i < n; i++) {
        const char *hn, *hv;
        net_request_header_at(req, i, &hn, &hv);
        if (strcasecmp(hn, "authorization") == 0) {
            val = hv;
            count++;
        }
    }
    if (count == 0) {
        return 1;
    }
    if (count > 1) {
        *why = "several Authorization headers";
        return DBAO_EFORMAT;
    }
    while (*val == ' ' || *val == '\t') {
        val++;
    }
    if (strncasecmp(val, "Bearer", 6) != 0 || (val[6] != ' ' && val[6] != '\t')) {
        *why = "not a Bearer credential";
        return DBAO_EFORMAT;
    }
    val += 6;
    while (*val == ' ' || *val == '\t') {
        val++;
    }
    size_t l = strlen(val);
    while (l > 0 && (val[l - 1] == ' ' || val[l - 1] == '\t')) {
        l--;
    }
    if (l == 0) {
        *why = "empty Bearer credential";
        return DBAO_EFORMAT;
    }
    *tok = val;
    *len = l;
    return 0;
}

static int after_device(zreq *r);

static const char body_401[] = "{\"error\":\"unauthorized\"}\n";
static const char body_401_bad[] = "{\"error\":\"invalid_token\"}\n";
static const char body_403_dev[] = "{\"error\":\"forbidden\",\"reason\":\"device binding\"}\n";
static const char body_403[] = "{\"error\":\"forbidden\"}\n";
static const char body_429[] = "{\"error\":\"rate_limited\"}\n";

static int
device_refuse(zreq *r, const char *what, const dbao_err *e)
{
    r->alert = true;
    return refuse(r, 403, body_403_dev, what, e);
}

static const gm_sm2_key *
device_key(zreq *r)
{
    zsnap *sn = worker_snap(r->z, r->w);
    return sn->dk ? zt_devkeys_find(sn->dk, r->claims.cnf_sm3) : NULL;
}

static int
request_mode_check(zreq *r, const uint8_t *body, size_t body_len)
{
    gw_ctx *ctx = r->ctx;
    net_request *req = gw_ctx_request(ctx);
    uint8_t bh[GM_SM3_DIGEST_LEN];
    gm_sm3(bh, body, body_len);
    zt_devsig_request q = {0};
    q.method = net_request_method(req);
    q.method_len = strlen(q.method);
    q.path = net_request_path(req);
    q.path_len = strlen(q.path);
    q.query = net_request_query(req);
    q.query_len = strlen(q.query);
#define HDR(field, name)                                                                           \
    q.field = net_request_header(req, name);                                                       \
    q.field##_len = q.field ? strlen(q.field) : 0;
    HDR(sig, "x-sm2-signature");
    HDR(timestamp, "x-sm2-timestamp");
    HDR(nonce, "x-sm2-nonce");
    HDR(content_sm3, "x-content-sm3");
#undef HDR
    q.body_sm3 = bh;
    dbao_err e = {0};
    int rc = zt_devsig_verify_request(&r->claims, device_key(r), &q, r->z->nonces, 0,
                                      r->z->sec.request_window_s, &e);
    if (rc == DBAO_ERANGE) {
        r->decided = 503;
        r->body_json = "{\"error\":\"busy\"}\n";
        set_reason(r, "device signature", &e);
        return decide(r);
    }
    if (rc != 0) {
        return device_refuse(r, q.sig ? "device signature" : "device signature missing", &e);
    }
    return after_device(r);
}

static void
on_body(gw_ctx *ctx, int status, const uint8_t *body, size_t len, void *arg)
{
    zreq *r = arg;
    (void) ctx;
    if (status != 0) {
        /* client gone or body timeout: the gateway answers or drops the connection itself and
         * on_log recycles r (gateway.h: done never runs after the request has ended) */
        return;
    }
    if (request_mode_check(r, body, len) == GW_NEXT) {
        gw_ctx_resume(r->ctx, GW_NEXT);
    }
    /* GW_DONE: answered (the request has ended); GW_ASYNC: the record completes it */
}

static int
device_step(zreq *r)
{
    gw_ctx *ctx = r->ctx;
    const gw_route *rt = gw_ctx_route(ctx);
    net_request *req = gw_ctx_request(ctx);
    dbao_err e = {0};
    switch (rt->sec.device) {
    case GW_DEVICE_TOKEN: {
        const char *sig = net_request_header(req, "x-sm2-signature");
        if (sig == NULL) {
            return device_refuse(r, "device signature missing", NULL);
        }
        if (zt_devsig_verify_token(&r->claims, device_key(r), r->token, r->token_len, sig,
                                   strlen(sig), r->z->sigcache, 0, &e) != 0) {
            return device_refuse(r, "device signature", &e);
        }
        return after_device(r);
    }
    case GW_DEVICE_REQUEST: {
        if (net_request_content_length(req) != 0) {
            if (gw_ctx_read_body(ctx, on_body, r) != 0) {
                return refuse(r, 503, "{\"error\":\"unavailable\"}\n", "cannot read the body",
                              NULL);
            }
            return GW_ASYNC;
        }
        return request_mode_check(r, (const uint8_t *) "", 0);
    }
    case GW_DEVICE_MTLS: {
        const net_peer *p = gw_ctx_peer(ctx);
        if (p == NULL || !p->cert_verified || !p->has_cert_sha256) {
            return device_refuse(r, "client certificate missing", NULL);
        }
        if (!r->claims.has_cnf_x5t) {
            return device_refuse(r, "token without cnf x5t#S256", NULL);
        }
        if (!dbao_ct_memeq(p->cert_sha256, r->claims.cnf_x5t, 32)) {
            return device_refuse(r, "client certificate is not the token's", NULL);
        }
        return after_device(r);
    }
    default:
        return after_device(r);
    }
}

static int
after_device(zreq *r)
{
    gw_zt *z = r->z;
    gw_ctx *ctx = r->ctx;
    const gw_route *rt = gw_ctx_route(ctx);
    zworker *w = r->w;
    if (r->authed) {
        /* the signed identity for the upstream */
        dbao_buf *b = &w->scratch;
        if (gw__zt_identity_make(b, &z->id_keyed, r->claims.sub, r->roles, r->claims.num_roles,
                                 r->device, (int64_t) time(NULL), gw_ctx_trace_id(ctx)) != 0 ||
            gw_ctx_add_upstream_header(ctx, z->sec.identity_header, b->data) != 0) {
            r->decided = 503;
            return refuse(r, 503, "{\"error\":\"unavailable\"}\n", "identity header", NULL);
        }
    }
    if (rt->sec.rbac) {
        const zt_rbac *p = zt_rbac_slot_get(z->rbac, &w->rbac);
        const char *rule = NULL;
        zt_rbac_decision d = zt_rbac_check(
            p, r->authed ? r->roles : NULL, r->authed ? r->claims.num_roles : 0,
            net_request_method(gw_ctx_request(ctx)), gw_ctx_path(ctx), rt->name, &rule);
        snprintf(r->rule, sizeof r->rule, "%s", rule ? rule : (p ? "" : "no-policy"));
        if (d != ZT_RBAC_ALLOW) {
            char why[128];
            snprintf(why, sizeof why, "rbac: %s", r->rule[0] ? r->rule : ZT_RBAC_RULE_DEFAULT);
            return refuse(r, 403, body_403, why, NULL);
        }
    }
    if (r->authed && z->subject_limit &&
        !take(z->subject_limit, r->claims.sub, strlen(r->claims.sub), &r->retry_after_s)) {
        return refuse(r, 429, body_429, "rate limit: subject", NULL);
    }
    if (rt->sec.limit.enabled) {
        zt_ratelimit *t = route_limit(z, rt);
        if (t == NULL) {
            return refuse(r, 503, "{\"error\":\"unavailable\"}\n", "rate limit: no table", NULL);
        }
        if (!take(t, "", 0, &r->retry_after_s)) {
            return refuse(r, 429, body_429, "rate limit: route", NULL);
        }
    }
    return decide(r);
}

static int
on_request(gw_ctx *ctx, void *arg)
{
    gw_zt *z = arg;
    unsigned wi = gw_ctx_worker(ctx);
    if (wi >= z->num_workers) {
        gw_ctx_respond(ctx, 503, "application/json", "{\"error\":\"unavailable\"}\n", 24);
        return GW_DONE;
    }
    zworker *w = &z->workers[wi];
    if (!w->async_open && worker_async_open(w, gw_ctx_loop(ctx)) != 0) {
        gw_ctx_respond(ctx, 503, "application/json", "{\"error\":\"unavailable\"}\n", 24);
        return GW_DONE;
    }
    zreq *r = zreq_get(w);
    if (r == NULL) {
        gw_ctx_respond(ctx, 503, "application/json", "{\"error\":\"unavailable\"}\n", 24);
        return GW_DONE;
    }
    r->ctx = ctx;
    gw_ctx_set_user(ctx, z->index, r);
    const gw_route *rt = gw_ctx_route(ctx);

    /* 1. strip: the client never speaks for the gateway */
    gw_ctx_remove_upstream_header(ctx, z->sec.identity_header, false);
    gw_ctx_remove_upstream_header(ctx, "X-Auth-", true);
    for (size_t i = 0; i < z->sec.num_strip; i++) {
        gw_ctx_remove_upstream_header(ctx, z->sec.strip[i], false);
    }

    /* 2. the client-IP bucket */
    if (z->ip_limit) {
        const char *ip = gw_ctx_client(ctx);
        if (!take(z->ip_limit, ip, strlen(ip), &r->retry_after_s)) {
            return refuse(r, 429, body_429, "rate limit: client ip", NULL);
        }
    }
    if (rt->sec.auth == GW_AUTH_NONE) {
        return after_device(r);
    }

    /* 3. the token */
    const char *why = NULL;
    int rc = find_bearer(ctx, &r->token, &r->token_len, &why);
    if (rc == 1) {
        return refuse(r, 401, body_401, "token missing", NULL);
    }
    r->token_seen = true;
    if (rc != 0) {
        return refuse(r, 401, body_401_bad, why, NULL);
    }
    zt_jwt_opts o = z->jopts;
    o.require_cnf = rt->sec.device == GW_DEVICE_TOKEN || rt->sec.device == GW_DEVICE_REQUEST;
    dbao_err e = {0};
    zsnap *sn = worker_snap(z, w);
    rc = zt_jwt_verify(sn->ks, &o, r->token, r->token_len, &r->claims, &e);
    if (rc != 0) {
        if (rc == DBAO_EKEY) {
            kick_refresh(z);
        }
        return refuse(r, 401, body_401_bad, "bad token", &e);
    }
    r->authed = true;
    for (size_t i = 0; i < r->claims.num_roles; i++) {
        r->roles[i] = r->claims.roles[i];
    }
    join_roles(r);
    if (r->claims.has_cnf) {
        zt_b64url_encode(r->device, r->claims.cnf_sm3, sizeof r->claims.cnf_sm3);
    } else if (rt->sec.device == GW_DEVICE_MTLS && r->claims.has_cnf_x5t) {
        zt_b64url_encode(r->device, r->claims.cnf_x5t, sizeof r->claims.cnf_x5t);
    }
    r->principal.sub = r->claims.sub;
    r->principal.roles = r->roles;
    r->principal.num_roles = r->claims.num_roles;
    r->principal.device = r->device[0] ? r->device : NULL;
    gw_ctx_set_principal(ctx, &r->principal);
    gw_ctx_set_identity(ctx, r->claims.sub);

    /* 4.-8. */
    return device_step(r);
}

/* early_refusal_record: the gateway refused the request before this step ran (a path it
 * will not normalise: 400; no route: 404; a declared body over the limit: 413; overload). The
 * answer is gone already, so the record is queued (asynchronous, counted in the bounded
 * queue, reported if it cannot be kept). */
static void
early_refusal_record(gw_zt *z, gw_ctx *ctx)
{
    net_request *req = gw_ctx_request(ctx);
    const gw_route *rt = gw_ctx_route(ctx);
    const char *path = gw_ctx_path(ctx);
    if (path == NULL || path[0] == 0) {
        path = net_request_path(req); /* as sent (sanitised below); never the query */
    }
    char object[ZT_PATH_IN_AUDIT + 32];
    snprintf(object, sizeof object, "%s %.*s", net_request_method(req), ZT_PATH_IN_AUDIT, path);
    const char *why = gw_ctx_error(ctx);
    dbao_buf d = {0};
    int rc = dbao_buf_putc(&d, '{');
    rc = rc ? rc : json_str(&d, "reason", why ? why : "refused by the gateway");
    rc = rc ? rc : json_str(&d, "route", rt && rt->name ? rt->name : "");
    rc = rc ? rc : json_str(&d, "trace_id", gw_ctx_trace_id(ctx));
    rc = rc ? rc : dbao_buf_putc(&d, '}');
    zrec x = {
        .type = "gateway.access",
        .action = "deny",
        .result = AUDIT_RESULT_FAILURE,
        .code = gw_ctx_status(ctx),
        .sub = "-",
        /* before routing (503 on a failed configuration refresh) the client address
         * cannot be decided yet: the peer's then */
        .ip = rt ? gw_ctx_client(ctx)
                 : (gw_ctx_status(ctx) == 503 ? net_request_peer(req)->addr : gw_ctx_client(ctx)),
        .object = object,
        .details = &d};
    dbao_buf b = {0};
    uint32_t len = 0;
    dbao_err e = {0};
    if (rc == 0) {
        rc = rec_append(&b, &len, &x, &e);
    }
    if (rc == 0) {
        rc = submit_async(z, (const uint8_t *) b.data, &len, 1, true);
    }
    if (rc != 0) {
        atomic_fetch_add_explicit(&z->st_audit_fail, 1, memory_order_relaxed);
        queue_alarm(z, "a refusal record could not be kept");
    }
    dbao_buf_free(&b);
    dbao_buf_free(&d);
}

static void
on_log(gw_ctx *ctx, void *arg)
{
    gw_zt *z = arg;
    zreq *r = gw_ctx_user(ctx, z->index);
    const gw_route *rt = gw_ctx_route(ctx);
    const char *fb = gw_ctx_fallback(ctx);
    gw_zt_mask_facts mf = {0};
    bool masked = z->o.mask_facts && z->o.mask_facts(ctx, &mf, z->o.mask_arg) && mf.masked;
    if ((fb || masked) && gw_ctx_request(ctx)) {
        dbao_buf d = {0};
        char object[ZT_PATH_IN_AUDIT + 32];
        const char *path = gw_ctx_path(ctx);
        snprintf(object, sizeof object, "%s %.*s", net_request_method(gw_ctx_request(ctx)),
                 ZT_PATH_IN_AUDIT, path ? path : "");
        zrec x = {.result = AUDIT_RESULT_SUCCESS,
                  .sub = r && r->authed ? r->claims.sub : "-",
                  .roles = r && r->authed ? r->roles_joined : "",
                  .ip = gw_ctx_client(ctx),
                  .device = r ? r->device : "",
                  .object = object,
                  .details = &d};
        if (fb) {
            int rc = dbao_buf_putc(&d, '{');
            rc = rc ? rc : json_str(&d, "mode", fb);
            rc = rc ? rc : json_str(&d, "route", rt && rt->name ? rt->name : "");
            rc = rc ? rc : json_str(&d, "trace_id", gw_ctx_trace_id(ctx));
            rc = rc ? rc : json_int(&d, "upstream_status", gw_ctx_upstream_status(ctx));
            rc = rc ? rc : dbao_buf_putc(&d, '}');
            x.type = "gateway.fallback";
            x.action = fb;
            x.code = gw_ctx_status(ctx);
            if (rc == 0) {
                side_record(z, &x);
            }
        }
        if (masked) {
            dbao_buf_reset(&d);
            char types[512] = "";
            size_t tl = 0;
            for (int t = 1; t < MASK_T_COUNT; t++) {
                const char *nm =
                    (mf.types & MASK_TYPE_BIT(t)) ? mask_type_name((mask_type) t) : NULL;
                if (nm && tl + strlen(nm) + 2 < sizeof types) {
                    tl +=
                        (size_t) snprintf(types + tl, sizeof types - tl, "%s%s", tl ? "," : "", nm);
                }
            }
            /* keys in canonical order (see build_records) */
            int rc = dbao_buf_putc(&d, '{');
            if (mf.error) {
                rc = rc ? rc : json_str(&d, "error", mf.error);
            }
            rc = rc ? rc : json_int(&d, "fields", (long long) mf.fields);
            rc = rc ? rc : json_int(&d, "findings", (long long) mf.findings);
            rc = rc ? rc
                    : dbao_buf_printf(&d, "%s\"over_limit\":%s", d.len > 1 ? "," : "",
                                      mf.over_limit ? "true" : "false");
            rc = rc ? rc : json_str(&d, "route", rt && rt->name ? rt->name : "");
            rc = rc ? rc : json_str(&d, "trace_id", gw_ctx_trace_id(ctx));
            rc = rc ? rc : json_str(&d, "types", types);
            rc = rc ? rc : dbao_buf_putc(&d, '}');
            x.type = "gateway.mask";
            x.action = mf.error ? "mask-abort" : mf.over_limit ? "over-limit" : "mask";
            x.result = mf.error ? AUDIT_RESULT_FAILURE : AUDIT_RESULT_SUCCESS;
            x.code = gw_ctx_status(ctx);
            if (rc == 0) {
                side_record(z, &x);
            }
        }
        dbao_buf_free(&d);
    }
    if (r == NULL) {
        if (gw_ctx_request(ctx) && gw_ctx_status(ctx) >= 400) {
            early_refusal_record(z, ctx);
        }
        return;
    }
    gw_ctx_set_user(ctx, z->index, NULL);
    r->ctx = NULL;
    if (!r->waiting) {
        zreq_put(r->w, r);
    }
    /* else the durable record's completion recycles it */
}

void
gw_zt_step(gw_zt *z, gw_step *out, size_t index)
{
    memset(out, 0, sizeof *out);
    z->index = index;
    out->name = "zero-trust";
    out->on_request = on_request;
    out->on_log = on_log;
    out->on_worker_start = on_worker_start;
    out->on_worker_stop = on_worker_stop;
    out->arg = z;
}

/* ---- breaker and policy records ---- */

void
gw_zt_on_breaker(void *arg, const char *cluster, int from, int to)
{
    gw_zt *z = arg;
    dbao_buf d = {0};
    int rc = dbao_buf_putc(&d, '{');
    rc = rc ? rc : json_str(&d, "cluster", cluster);
    rc = rc ? rc : json_str(&d, "from", zt_circuit_name((zt_circuit) from));
    rc = rc ? rc : json_str(&d, "to", zt_circuit_name((zt_circuit) to));
    rc = rc ? rc : dbao_buf_putc(&d, '}');
    char obj[160];
    snprintf(obj, sizeof obj, "cluster %s", cluster ? cluster : "");
    zrec x = {.type = "gateway.breaker",
              .action = zt_circuit_name((zt_circuit) to),
              .result = to == ZT_CIRCUIT_OPEN ? AUDIT_RESULT_FAILURE : AUDIT_RESULT_SUCCESS,
              .sub = "gateway",
              .object = obj,
              .details = &d};
    if (rc == 0) {
        side_record(z, &x);
    }
    dbao_buf_free(&d);
}

static void
policy_record(gw_zt *z, const char *source, bool ok, size_t rules, const char *msg)
{
    dbao_buf d = {0};
    int rc = dbao_buf_putc(&d, '{');
    rc = rc ? rc : json_str(&d, "source", source);
    rc = rc ? rc : json_int(&d, "rules", (long long) rules);
    if (msg) {
        rc = rc ? rc : json_str(&d, ok ? "detail" : "error", msg);
    }
    rc = rc ? rc : dbao_buf_putc(&d, '}');
    zrec x = {.type = "gateway.policy",
              .action = "reload",
              .result = ok ? AUDIT_RESULT_SUCCESS : AUDIT_RESULT_FAILURE,
              .sub = "gateway",
              .object = "rbac",
              .details = &d};
    if (rc == 0) {
        side_record(z, &x);
    }
    dbao_buf_free(&d);
}

/* on_etcd_event: the etcd watcher's news (its thread; the first load on gw_zt_new's) */
static void
on_etcd_event(void *arg, int kind, const char *msg)
{
    gw_zt *z = arg;
    switch (kind) {
    case ZT_RBAC_ETCD_LOADED:
        fprintf(stderr, "gateway: rbac policy from etcd: %s\n", msg ? msg : "loaded");
        policy_record(z, "etcd", true, 0, msg);
        break;
    case ZT_RBAC_ETCD_REJECTED:
        atomic_fetch_add_explicit(&z->st_reload_fail, 1, memory_order_relaxed);
        fprintf(stderr, "gateway: rbac policy from etcd refused, the running one stays: %s\n",
                msg ? msg : "");
        policy_record(z, "etcd", false, 0, msg ? msg : "refused");
        break;
    case ZT_RBAC_ETCD_DELETED:
        fprintf(stderr, "gateway: the rbac policy key was deleted in etcd; the running policy "
                        "stays\n");
        policy_record(z, "etcd", false, 0, "key deleted; the running policy stays");
        break;
    default: /* unreachable etcd: the watcher retries; stderr only (no record flood) */
        fprintf(stderr, "gateway: rbac etcd watcher: %s\n", msg ? msg : "error");
        break;
    }
}

/* ---- life cycle ---- */

static zt_ratelimit *
limit_from(const gw_limit *l, int *rc)
{
    if (!l->enabled) {
        return NULL;
    }
    zt_ratelimit *t = NULL;
    zt_ratelimit_opts o = {
        .rate = l->rate, .period_ms = l->period_ms, .burst = l->burst, .max_keys = l->max_keys};
    *rc = zt_ratelimit_new(&t, &o, NULL);
    return t;
}

int
gw_zt_new(gw_zt **out, const gw_config *cfg, const gw_zt_opts *opts, dbao_err *err)
{
    *out = NULL;
    if (cfg == NULL || cfg->security == NULL || opts == NULL || opts->log == NULL) {
        return dbao_err_set(err, DBAO_EINVAL,
                            "security: a security section and an audit log "
                            "are required");
    }
    const gw_security *sec = cfg->security;
    gw_zt *z = calloc(1, sizeof *z);
    if (z == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    z->o = *opts;
    pthread_mutex_init(&z->rl_mu, NULL);
    pthread_mutex_init(&z->snap_mu, NULL);
    pthread_mutex_init(&z->build_mu, NULL);
    pthread_mutex_init(&z->th_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&z->th_cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = zsec_init(&z->sec, sec);
    if (rc != 0) {
        dbao_err_set(err, rc, "out of memory");
        goto fail;
    }
    z->num_workers =
        opts->num_workers ? opts->num_workers : (unsigned) (cfg->num_listeners * cfg->workers);
    if (z->num_workers == 0) {
        z->num_workers = 1;
    }
    z->workers = calloc(z->num_workers, sizeof *z->workers);
    if (z->workers == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        goto fail;
    }
    for (unsigned i = 0; i < z->num_workers; i++) {
        z->workers[i].z = z;
        pthread_mutex_init(&z->workers[i].mu, NULL);
    }
    z->default_audit = sec->audit_mode;
    z->audit_queue = sec->audit_queue ? sec->audit_queue : 65536;

    /* token options */
    if (z->sec.num_audience) {
        z->aud = calloc(z->sec.num_audience, sizeof *z->aud);
        if (z->aud == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < z->sec.num_audience; i++) {
            z->aud[i] = z->sec.audience[i];
        }
    }
    z->jopts.algs = z->sec.algs;
    z->jopts.max_len = z->sec.max_token;
    z->jopts.skew = z->sec.clock_skew_s;
    z->jopts.iss = z->sec.issuer;
    z->jopts.aud = z->aud;
    z->jopts.num_aud = z->sec.num_audience;

    /* the identity key */
    if (sec->identity_key_file == NULL) {
        rc = dbao_err_set(err, DBAO_EINVAL, "security.identity_header.key_file is required");
        goto fail;
    }
    rc = gw__zt_read_secret(&z->id_key, &z->id_key_len, sec->identity_key_file,
                            "identity_header.key_file", 16, err);
    if (rc != 0) {
        goto fail;
    }
    gm_hmac_sm3_init(&z->id_keyed, z->id_key, z->id_key_len);

    /* keys, devices, caches */
    if (z->sec.jwks_url && !opts->no_threads) {
        (void) fetch_jwks(z); /* a failure is reported; the refresher retries */
    }
    zsnap *sn = NULL;
    rc = build_snap(&sn, &z->sec, z->url_doc, z->url_len, err);
    if (rc != 0) {
        goto fail;
    }
    z->snap = sn;
    z->jwks_mtime = file_mtime(z->sec.jwks_file);
    if ((rc = zt_sigcache_new(&z->sigcache, sec->sig_cache, err)) != 0 ||
        (rc = zt_noncecache_new(&z->nonces, sec->nonce_cache, err)) != 0) {
        goto fail;
    }

    /* the policy */
    zt_rbac *pol = NULL;
    if (z->sec.rbac_file) {
        rc = zt_rbac_load(&pol, z->sec.rbac_file, err);
        if (rc != 0) {
            goto fail;
        }
    }
    rc = zt_rbac_slot_new(&z->rbac, pol);
    if (rc != 0) {
        zt_rbac_unref(pol);
        dbao_err_set(err, rc, "out of memory");
        goto fail;
    }
    if (sec->num_etcd > 0) {
        /* the first policy is read now (no policy, no start); then a watcher thread swaps each
         * good new value into the slot */
        rc = zt_rbac_etcd_start(&z->etcd, z->rbac, (const char *const *) sec->etcd_endpoints,
                                sec->num_etcd, sec->etcd_key, sec->etcd_timeout_ms, on_etcd_event,
                                z, err);
        if (rc != 0) {
            goto fail;
        }
    }

    /* limits */
    rc = 0;
    z->ip_limit = limit_from(&sec->ip_limit, &rc);
    if (rc == 0) {
        z->subject_limit = limit_from(&sec->subject_limit, &rc);
    }
    if (rc != 0) {
        dbao_err_set(err, rc, "security.rate_limits: bad limit");
        goto fail;
    }
    for (size_t i = 0; i < cfg->num_routes; i++) {
        if (cfg->routes[i].sec.limit.enabled && route_limit(z, &cfg->routes[i]) == NULL) {
            rc = dbao_err_set(err, DBAO_EINVAL, "route '%s': bad rate_limit",
                              cfg->routes[i].name ? cfg->routes[i].name : "");
            goto fail;
        }
    }

    /* the refresher */
    if (!opts->no_threads && (z->sec.jwks_url || z->sec.jwks_file)) {
        if (pthread_create(&z->th, NULL, refresher, z) != 0) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "cannot start the key refresher thread");
            goto fail;
        }
        z->th_ok = true;
    }
    *out = z;
    return 0;
fail:
    gw_zt_free(z);
    return rc;
}

void
gw_zt_free(gw_zt *z)
{
    if (z == NULL) {
        return;
    }
    if (z->th_ok) {
        pthread_mutex_lock(&z->th_mu);
        z->th_stop = true;
        pthread_cond_signal(&z->th_cond);
        pthread_mutex_unlock(&z->th_mu);
        pthread_join(z->th, NULL);
    }
    for (unsigned i = 0; z->workers && i < z->num_workers; i++) {
        zworker *w = &z->workers[i];
        /* workers that never started (or whose stop hook did not run) */
        while (w->free) {
            zreq *n = w->free->next;
            zreq_destroy(w->free);
            w->free = n;
        }
        zt_rbac_local_cleanup(&w->rbac);
        snap_unref(w->snap);
        dbao_buf_free(&w->scratch);
        pthread_mutex_destroy(&w->mu);
    }
    zt_rbac_etcd_stop(z->etcd);
    free(z->workers);
    zt_rbac_slot_free(z->rbac);
    snap_unref(z->snap);
    free(z->url_doc);
    zt_sigcache_free(z->sigcache);
    zt_noncecache_free(z->nonces);
    zt_ratelimit_free(z->ip_limit);
    zt_ratelimit_free(z->subject_limit);
    size_t n = atomic_load_explicit(&z->num_rl, memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        zt_ratelimit_free(z->rl[i].t);
    }
    if (z->id_key) {
        dbao_free_secret(z->id_key, z->id_key_len);
    }
    dbao_cleanse(&z->id_keyed, sizeof z->id_keyed);
    free(z->aud);
    zsec_free(&z->sec);
    pthread_mutex_destroy(&z->rl_mu);
    pthread_mutex_destroy(&z->snap_mu);
    pthread_mutex_destroy(&z->build_mu);
    pthread_mutex_destroy(&z->th_mu);
    pthread_cond_destroy(&z->th_cond);
    free(z);
}

int
gw_zt_reload(gw_zt *z, dbao_err *err)
{
    int first = 0;
    if (z->sec.rbac_file) {
        zt_rbac *p = NULL;
        dbao_err e = {0};
        int rc = zt_rbac_load(&p, z->sec.rbac_file, &e);
        if (rc == 0) {
            size_t n = zt_rbac_num_rules(p);
            zt_rbac_slot_set(z->rbac, p);
            policy_record(z, z->sec.rbac_file, true, n, NULL);
        } else {
            atomic_fetch_add_explicit(&z->st_reload_fail, 1, memory_order_relaxed);
            fprintf(stderr, "gateway: rbac policy refused, the running one stays: %s\n", e.msg);
            policy_record(z, z->sec.rbac_file, false, 0, e.msg);
            first = dbao_err_set(err, rc, "%s", e.msg);
        }
    }
    dbao_err e = {0};
    int rc = rebuild(z, &e);
    if (rc != 0) {
        atomic_fetch_add_explicit(&z->st_reload_fail, 1, memory_order_relaxed);
        fprintf(stderr, "gateway: token or device keys refused, the running ones stay: %s\n",
                e.msg);
        if (first == 0) {
            first = dbao_err_set(err, rc, "%s", e.msg);
        }
    } else {
        z->jwks_mtime = file_mtime(z->sec.jwks_file);
    }
    return first;
}

int
gw_zt_check(const gw_config *cfg, dbao_err *err)
{
    if (cfg->security == NULL) {
        return 0;
    }
    const gw_security *sec = cfg->security;
    zsec s;
    int rc = zsec_init(&s, sec);
    if (rc != 0) {
        zsec_free(&s);
        return dbao_err_set(err, rc, "out of memory");
    }
    uint8_t *k = NULL;
    size_t kl = 0;
    if (sec->identity_key_file == NULL) {
        rc = dbao_err_set(err, DBAO_EINVAL, "security.identity_header.key_file is required");
    } else {
        rc = gw__zt_read_secret(&k, &kl, sec->identity_key_file, "identity_header.key_file", 16,
                                err);
        if (rc == 0) {
            dbao_free_secret(k, kl);
        }
    }
    zsnap *sn = NULL;
    if (rc == 0) {
        rc = build_snap(&sn, &s, NULL, 0, err);
        snap_unref(sn);
    }
    if (rc == 0 && s.rbac_file) {
        zt_rbac *p = NULL;
        rc = zt_rbac_load(&p, s.rbac_file, err);
        zt_rbac_unref(p);
    }
    if (rc == 0 && sec->mask_policy) {
        mask_policy *mp = NULL;
        rc = mask_policy_load(&mp, sec->mask_policy, err);
        mask_policy_free(mp);
    }
    if (rc == 0 && sec->audit_dir) {
        struct stat st;
        if (stat(sec->audit_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            rc = dbao_err_set(err, DBAO_EINVAL,
                              "security.audit.dir '%s' is not a directory (create it with "
                              "'dengbao audit init')",
                              sec->audit_dir);
        }
    }
    zsec_free(&s);
    return rc;
}

void
gw_zt_get_stats(const gw_zt *z, gw_zt_stats *o)
{
    gw_zt *m = (gw_zt *) z;
    o->allowed = atomic_load_explicit(&m->st_allowed, memory_order_relaxed);
    o->denied_401 = atomic_load_explicit(&m->st_401, memory_order_relaxed);
    o->denied_403 = atomic_load_explicit(&m->st_403, memory_order_relaxed);
    o->denied_429 = atomic_load_explicit(&m->st_429, memory_order_relaxed);
    o->refused_503 = atomic_load_explicit(&m->st_503, memory_order_relaxed);
    o->audit_records = atomic_load_explicit(&m->st_audit, memory_order_relaxed);
    o->audit_failures = atomic_load_explicit(&m->st_audit_fail, memory_order_relaxed);
    o->audit_queue_full = atomic_load_explicit(&m->st_queue_full, memory_order_relaxed);
    o->jwks_fetches = atomic_load_explicit(&m->st_fetch, memory_order_relaxed);
    o->jwks_fetch_failures = atomic_load_explicit(&m->st_fetch_fail, memory_order_relaxed);
    o->reloads_failed = atomic_load_explicit(&m->st_reload_fail, memory_order_relaxed);
}

int
gw_zt_metrics(void *arg, dbao_buf *out)
{
    gw_zt_stats st;
    gw_zt_get_stats(arg, &st);
    const struct {
        const char *label;
        uint64_t v;
    } dec[] = {{"allow", st.allowed},
               {"deny_401", st.denied_401},
               {"deny_403", st.denied_403},
               {"deny_429", st.denied_429},
               {"refuse_503", st.refused_503}};
    int rc = dbao_buf_printf(out, "# HELP dengbao_gateway_zt_decisions_total Zero-trust decisions "
                                  "by outcome.\n# TYPE dengbao_gateway_zt_decisions_total "
                                  "counter\n");
    for (size_t i = 0; rc == 0 && i < sizeof dec / sizeof dec[0]; i++) {
        rc = dbao_buf_printf(out, "dengbao_gateway_zt_decisions_total{result=\"%s\"} %" PRIu64 "\n",
                             dec[i].label, dec[i].v);
    }
    const struct {
        const char *name, *help;
        uint64_t v;
    } c[] = {
        {"dengbao_gateway_zt_audit_records_total", "Audit records written.", st.audit_records},
        {"dengbao_gateway_zt_audit_failures_total", "Audit records the log could not take.",
         st.audit_failures},
        {"dengbao_gateway_zt_audit_queue_full_total", "Requests refused: async audit queue full.",
         st.audit_queue_full},
        {"dengbao_gateway_zt_jwks_fetches_total", "JWKS URL fetches.", st.jwks_fetches},
        {"dengbao_gateway_zt_jwks_fetch_failures_total", "JWKS URL fetches that failed.",
         st.jwks_fetch_failures},
        {"dengbao_gateway_zt_reload_failures_total", "Reloads of keys or policy refused.",
         st.reloads_failed},
    };
    for (size_t i = 0; rc == 0 && i < sizeof c / sizeof c[0]; i++) {
        rc = dbao_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", c[i].name,
                             c[i].help, c[i].name, c[i].name, c[i].v);
    }
    return rc == 0 ? 0 : DBAO_ENOMEM;
}
