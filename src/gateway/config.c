/* config.c: the gateway's YAML configuration (libyaml document API) mapped onto gw_config.
 *
 * The file is loaded as one libyaml document and walked by hand against a fixed schema
 * (docs/gateway.md, "Configuration reference"). Checking is strict, because a typo in a
 * gateway configuration silently routes traffic somewhere else: unknown keys, duplicate keys,
 * wrong node kinds, quoted numbers, negative or suffixed numbers ("10x"), out-of-range values,
 * missing required values, unknown clusters referenced by routes, duplicate names, bad
 * addresses, empty endpoint lists, half TLS pairs, more than 64 listeners or 1024 routes, YAML
 * aliases (each node must be visited once: this also defeats "billion laughs") and more than
 * one document. Every error names the file and line: "gateway.yaml:12: unknown key 'timeuot'
 * in cluster 'api'".
 *
 * Scalars: integers are plain (unquoted) decimal digits; booleans are plain true/false;
 * durations are integers (milliseconds) or a number with a unit ms, s, m, h ("500ms", "2s");
 * sizes are integers (bytes) or a number with k, m, g (KiB, MiB, GiB multiples; "16k").
 * Strings may be plain or quoted, but a plain null (~, null, empty) is not a string.
 *
 * Zero trust (docs/gateway.md, "Security (zero trust)"): the optional `security:` section, the
 * routes' auth/device/rbac/rate_limit/audit/mask keys (refused without that section), a
 * cluster's `breaker:` and a route's `fallback:`. Only shapes and ranges are checked here, plus
 * the cross-references (a key source for jwt routes, a mask policy for masked routes, a
 * fallback cluster that exists and differs); key files, JWKS, device keys and policies are read
 * and checked (mode 0600) by the runtime, never by the parser. The one file read here is a
 * static fallback's body_file (a regular file, at most 1 MiB). Ratios ("15%", "0.15") become
 * permille 1..1000.
 *
 * Relative file paths (TLS certificate, key, client CA, access_log) are resolved against the
 * directory of the configuration file (the `name` given to gw_config_parse is treated as its
 * path). Ownership: a gw_config owns every string and array it points to; gw_config_free frees
 * it all, and also frees a partly built one (arrays are zeroed and their counts set as soon
 * as they are allocated).
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <yaml.h>

#include "dengbao/gateway.h"
#include "dengbao/yamlcfg.h"
#include "dengbao/zt.h"
#include "internal.h"

#define MAX_LISTENERS 64
#define MAX_ROUTES    1024
#define MAX_CLUSTERS  1024
#define MAX_ENDPOINTS 1024
#define MAX_TRUSTED   1024
#define MAX_STR       4096
#define MAX_FILE      (4u << 20)

/* ---- units ---- */

int
gw_parse_duration_ms(const char *s, uint64_t *out)
{
    return dbao_parse_duration_ms(s, out);
}

int
gw_parse_size(const char *s, uint64_t *out)
{
    return dbao_parse_size(s, out);
}

/* ---- parser state and error reporting (the strict reader is common: yamlcfg.h) ---- */

typedef struct P {
    dbao_yaml y; /* the document, the file name (y.name), its folder (y.base), errors (y.err) */
} P;

#define fail(p, ...) dbao_yaml_fail(&(p)->y, __VA_ARGS__)
#define is_null(n)   dbao_yaml_is_null(n)

static int
oom(P *p)
{
    return dbao_err_set(p->y.err, DBAO_ENOMEM, "%s: out of memory", p->y.name);
}

static int
node(P *p, int id, const yaml_node_t *parent, yaml_node_t **out)
{
    return dbao_yaml_node(&p->y, id, parent, out);
}

static const char *
sval(const yaml_node_t *n)
{
    return dbao_yaml_scalar(n);
}

static bool
plain(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int
want_scalar(P *p, const yaml_node_t *n, const char *key, const char *what)
{
    return dbao_yaml_want_scalar(&p->y, n, key, what);
}

static int
get_str(P *p, const yaml_node_t *n, const char *key, char **out)
{
    return dbao_yaml_str(&p->y, n, key, out);
}

static int
get_uint(P *p, const yaml_node_t *n, const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
    return dbao_yaml_uint(&p->y, n, key, min, max, out);
}

static int
get_unsigned(P *p, const yaml_node_t *n, const char *key, unsigned min, unsigned max, unsigned *out)
{
    uint64_t v;
    int rc = get_uint(p, n, key, min, max, &v);
    if (rc == 0)
        *out = (unsigned) v;
    return rc;
}

static int
get_bool(P *p, const yaml_node_t *n, const char *key, bool *out)
{
    return dbao_yaml_bool(&p->y, n, key, out);
}

static int
get_duration(P *p, const yaml_node_t *n, const char *key, uint32_t min, uint32_t *out)
{
    uint64_t v;
    int rc = dbao_yaml_duration_ms(&p->y, n, key, min, UINT32_MAX, &v);
    if (rc == 0)
        *out = (uint32_t) v;
    return rc;
}

static int
get_size(P *p, const yaml_node_t *n, const char *key, size_t *out)
{
    uint64_t v, max = (uint64_t) SIZE_MAX / 2 < (1ull << 40) ? (uint64_t) SIZE_MAX / 2 : 1ull << 40;
    int rc = dbao_yaml_size(&p->y, n, key, 1, max, &v);
    if (rc == 0)
        *out = (size_t) v;
    return rc;
}

static int
get_addr(P *p, const yaml_node_t *n, const char *key, bool port_required, gw_addr *out)
{
    int rc = want_scalar(p, n, key, "an address");
    if (rc != 0)
        return rc;
    if (gw_parse_addr(sval(n), out) != 0)
        return fail(p, DBAO_EFORMAT, n,
                    "'%s': bad address '%s' (want numeric \"host:port\" or \"[v6]:port\")", key,
                    sval(n));
    if (port_required && out->port == 0)
        return fail(p, DBAO_EFORMAT, n, "'%s': port 0 in '%s'", key, sval(n));
    return 0;
}

static int
get_path(P *p, const yaml_node_t *n, const char *key, char **out)
{
    return dbao_yaml_path(&p->y, n, key, out);
}

/* fields matches a mapping's keys against `keys`, storing the value nodes in vals (NULL for
 * absent keys); `what` names the mapping, unknown and duplicate keys are errors naming `ctx`. */
static int
fields(P *p, const yaml_node_t *m, const char *what, const char *ctx, const char *const *keys,
       size_t nk, yaml_node_t **vals)
{
    if (m->type != YAML_MAPPING_NODE) {
        for (size_t k = 0; k < nk; k++)
            vals[k] = NULL;
        return fail(p, DBAO_EFORMAT, m, "%s must be a mapping%s%s", what, ctx[0] ? " in " : "",
                    ctx);
    }
    return dbao_yaml_fields(&p->y, m, ctx, keys, nk, vals);
}

/* peek_name reads a mapping's "name" scalar without visiting it (for error contexts) */
static const char *
peek_name(P *p, const yaml_node_t *m)
{
    if (m->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(&p->y.doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(&p->y.doc, pr->value);
        if (k && v && k->type == YAML_SCALAR_NODE && strcmp(sval(k), "name") == 0 &&
            v->type == YAML_SCALAR_NODE)
            return sval(v);
    }
    return NULL;
}

static int
sequence(P *p, const yaml_node_t *n, const char *key, size_t min, size_t max, size_t *count)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(p, DBAO_EFORMAT, n, "'%s' must be a list", key);
    size_t c = (size_t) (n->data.sequence.items.top - n->data.sequence.items.start);
    if (c < min)
        return fail(p, DBAO_EFORMAT, n, "'%s' must not be empty", key);
    if (c > max)
        return fail(p, DBAO_EFORMAT, n, "'%s': more than %zu entries", key, max);
    *count = c;
    return 0;
}

/* ---- defaults ---- */

static void
config_defaults(gw_config *c)
{
    c->workers = 1;
    c->header_max = 16 * 1024;
    c->headers_num_max = 100;
    c->body_max = 16 * 1024 * 1024;
    c->header_timeout_ms = 10000;
    c->body_timeout_ms = 60000;
    c->idle_timeout_ms = 60000;
    c->drain_timeout_ms = 10000;
}

static int
cluster_defaults(gw_cluster *k)
{
    k->balance = GW_BALANCE_ROUND_ROBIN;
    k->keepalive = 64;
    k->max_conns = 0;
    k->connect_timeout_ms = 2000;
    k->read_timeout_ms = 30000;
    k->idle_timeout_ms = 60000;
    k->retries = 1;
    k->health.enabled = false;
    k->health.path = strdup("/healthz");
    k->health.interval_ms = 2000;
    k->health.timeout_ms = 1000;
    k->health.healthy_threshold = 2;
    k->health.unhealthy_threshold = 3;
    k->health.passive_failures = 5;
    k->health.passive_eject_ms = 10000;
    return k->health.path ? 0 : DBAO_ENOMEM;
}

/* ---- zero trust (the `security:` section, route security keys, breakers, fallbacks) ---- */

#define MAX_LIST      256
#define MAX_BODY_FILE (1u << 20)

/* get_ratio reads "15%" (one decimal at most: "12.5%") or a fraction "0.15" (three decimals at
 * most) into permille, 1..1000: 0% and more than 100% are refused. */
static int
get_ratio(P *p, const yaml_node_t *n, const char *key, uint32_t *out)
{
    int rc = want_scalar(p, n, key, "a ratio (\"15%\" or \"0.15\")");
    if (rc != 0)
        return rc;
    const char *s = sval(n);
    size_t len = strlen(s);
    bool pct = len > 0 && s[len - 1] == '%';
    size_t end = pct ? len - 1 : len, i = 0;
    uint64_t ip = 0, frac = 0;
    unsigned fd = 0, maxfd = pct ? 1 : 3;
    while (i < end && s[i] >= '0' && s[i] <= '9' && ip <= 100000)
        ip = ip * 10 + (uint64_t) (s[i++] - '0');
    bool ok = i > 0;
    if (ok && i < end && s[i] == '.') {
        i++;
        while (i < end && s[i] >= '0' && s[i] <= '9' && fd < maxfd) {
            frac = frac * 10 + (uint64_t) (s[i++] - '0');
            fd++;
        }
        ok = fd > 0;
    }
    ok = ok && i == end;
    while (fd < maxfd) {
        frac *= 10;
        fd++;
    }
    uint64_t pm = pct ? ip * 10 + frac : ip * 1000 + frac;
    if (!ok || pm == 0 || pm > 1000)
        return fail(p, DBAO_EFORMAT, n,
                    "'%s' must be a ratio above 0%% and at most 100%% (\"15%%\" "
                    "or \"0.15\")",
                    key);
    *out = (uint32_t) pm;
    return 0;
}

/* a header name: an RFC 9110 token */
static bool
header_name_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char) *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch)))
            return false;
    }
    return true;
}

/* get_str_list reads a list of strings (min..MAX_LIST entries); *arr is set as soon as it is
 * allocated (the caller frees it even on failure). */
static int
get_str_list(P *p, const yaml_node_t *n, const char *key, size_t min, char ***arr, size_t *count)
{
    size_t cnt = 0;
    int rc = sequence(p, n, key, min, MAX_LIST, &cnt);
    if (rc != 0 || cnt == 0)
        return rc;
    if ((*arr = calloc(cnt, sizeof(**arr))) == NULL)
        return oom(p);
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *e;
        if ((rc = node(p, n->data.sequence.items.start[i], n, &e)) != 0 ||
            (rc = get_str(p, e, key, &(*arr)[i])) != 0)
            return rc;
        *count = i + 1;
        if ((*arr)[i][0] == '\0')
            return fail(p, DBAO_EFORMAT, e, "'%s': empty entry", key);
        for (size_t j = 0; j < i; j++)
            if (strcmp((*arr)[j], (*arr)[i]) == 0)
                return fail(p, DBAO_EFORMAT, e, "'%s': duplicate entry '%.64s'", key, (*arr)[i]);
    }
    return 0;
}

static void
free_list(char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

static bool
http_url(const char *s, bool https_ok)
{
    if (strncmp(s, "http://", 7) == 0)
        return s[7] != '\0' && s[7] != '/';
    if (https_ok && strncmp(s, "https://", 8) == 0)
        return s[8] != '\0' && s[8] != '/';
    return false;
}

/* get_limit reads {rate, period, burst[, max_keys]} */
static int
get_limit(P *p, const yaml_node_t *n, const char *key, bool with_keys, gw_limit *l)
{
    static const char *const keys[] = {"rate", "period", "burst", "max_keys"};
    yaml_node_t *v[4] = {NULL, NULL, NULL, NULL};
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "'%s'", key);
    int rc = fields(p, n, ctx, "", keys, with_keys ? 4 : 3, v);
    if (rc != 0)
        return rc;
    if (!v[0])
        return fail(p, DBAO_EFORMAT, n, "missing 'rate' in '%s'", key);
    unsigned rate = 0, burst = 0;
    if ((rc = get_unsigned(p, v[0], "rate", 1, 1000000000u, &rate)) != 0)
        return rc;
    l->rate = rate;
    l->period_ms = 1000;
    l->burst = rate;
    if (v[1]) {
        uint64_t ms;
        if ((rc = dbao_yaml_duration_ms(&p->y, v[1], "period", 1, 86400000, &ms)) != 0)
            return rc;
        l->period_ms = (uint32_t) ms;
    }
    if (v[2]) {
        if ((rc = get_unsigned(p, v[2], "burst", 1, 1000000000u, &burst)) != 0)
            return rc;
        l->burst = burst;
    }
    /* the bucket's emission interval times its size must fit (zt_ratelimit_new) */
    uint64_t t = ((uint64_t) l->period_ms * 1000000u + l->rate - 1) / l->rate;
    if (t > (UINT64_C(1) << 62) / l->burst)
        return fail(p, DBAO_EFORMAT, v[2] ? v[2] : n,
                    "'burst' too large for 'rate' and 'period' in '%s'", key);
    if (with_keys && v[3]) {
        uint64_t mk;
        if ((rc = get_uint(p, v[3], "max_keys", 1, 1u << 24, &mk)) != 0)
            return rc;
        l->max_keys = (size_t) mk;
    }
    l->enabled = true;
    return 0;
}

static int
get_secs(P *p, const yaml_node_t *n, const char *key, uint64_t min_ms, uint64_t max_ms,
         uint32_t *out)
{
    uint64_t v;
    int rc = dbao_yaml_duration_ms(&p->y, n, key, min_ms, max_ms, &v);
    if (rc != 0)
        return rc;
    if (v % 1000 != 0)
        return fail(p, DBAO_EFORMAT, n, "'%s' must be whole seconds", key);
    *out = (uint32_t) (v / 1000);
    return 0;
}

static int
get_size_range(P *p, const yaml_node_t *n, const char *key, uint64_t min, uint64_t max, size_t *out)
{
    uint64_t v;
    int rc = dbao_yaml_size(&p->y, n, key, min, max, &v);
    if (rc == 0)
        *out = (size_t) v;
    return rc;
}

static int
get_count(P *p, const yaml_node_t *n, const char *key, uint64_t min, uint64_t max, size_t *out)
{
    uint64_t v;
    int rc = get_uint(p, n, key, min, max, &v);
    if (rc == 0)
        *out = (size_t) v;
    return rc;
}

static int
parse_jwt(P *p, const yaml_node_t *n, gw_security *s)
{
    static const char *const keys[] = {"algorithms", "hs256_secret_file", "hs256_kid", "jwks_file",
                                       "jwks_url",   "jwks_refresh",      "sm2_alg",   "issuer",
                                       "audience",   "clock_skew",        "max_token"};
    static const char *const algs[] = {"HS256", "ES256", "RS256", "SM2"};
    yaml_node_t *v[11];
    int rc = fields(p, n, "'jwt'", "'security.identity'", keys, 11, v);
    if (rc != 0)
        return rc;
    if (v[0]) {
        size_t cnt = 0;
        if ((rc = sequence(p, v[0], "algorithms", 1, 4, &cnt)) != 0)
            return rc;
        s->algs = 0;
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_t *e;
            int idx;
            if ((rc = node(p, v[0]->data.sequence.items.start[i], v[0], &e)) != 0 ||
                (rc = dbao_yaml_enum(&p->y, e, "algorithms", algs, 4, &idx)) != 0)
                return rc;
            if (s->algs & (1u << idx))
                return fail(p, DBAO_EFORMAT, e, "'algorithms': duplicate entry '%s'", algs[idx]);
            s->algs |= 1u << idx;
        }
    }
    if ((v[1] && (rc = get_path(p, v[1], "hs256_secret_file", &s->hs256_secret_file)) != 0) ||
        (v[2] && (rc = get_str(p, v[2], "hs256_kid", &s->hs256_kid)) != 0) ||
        (v[3] && (rc = get_path(p, v[3], "jwks_file", &s->jwks_file)) != 0) ||
        (v[4] && (rc = get_str(p, v[4], "jwks_url", &s->jwks_url)) != 0))
        return rc;
    if (v[2] && !v[1])
        return fail(p, DBAO_EFORMAT, v[2], "'hs256_kid' needs 'hs256_secret_file'");
    if (v[4] && !http_url(s->jwks_url, true))
        return fail(p, DBAO_EFORMAT, v[4], "'jwks_url' must start with http:// or https://");
    if (v[5]) {
        if ((rc = get_duration(p, v[5], "jwks_refresh", 1000, &s->jwks_refresh_ms)) != 0)
            return rc;
        if (!v[3] && !v[4])
            return fail(p, DBAO_EFORMAT, v[5], "'jwks_refresh' needs 'jwks_file' or 'jwks_url'");
    }
    if (v[6]) {
        free(s->sm2_alg);
        s->sm2_alg = NULL;
        if ((rc = get_str(p, v[6], "sm2_alg", &s->sm2_alg)) != 0)
            return rc;
        if (s->sm2_alg[0] == '\0' || strlen(s->sm2_alg) > 32 || !header_name_ok(s->sm2_alg))
            return fail(p, DBAO_EFORMAT, v[6], "'sm2_alg' must be a short JWS alg name");
    }
    if (v[7]) {
        if ((rc = get_str(p, v[7], "issuer", &s->issuer)) != 0)
            return rc;
        if (s->issuer[0] == '\0')
            return fail(p, DBAO_EFORMAT, v[7], "'issuer' must not be empty");
    }
    if (v[8] && (rc = get_str_list(p, v[8], "audience", 0, &s->audience, &s->num_audience)) != 0)
        return rc;
    if (v[9] && (rc = get_secs(p, v[9], "clock_skew", 0, 3600000, &s->clock_skew_s)) != 0)
        return rc;
    if (v[10] && (rc = get_size_range(p, v[10], "max_token", 256, 16384, &s->max_token)) != 0)
        return rc;
    return 0;
}

static int
parse_devices(P *p, const yaml_node_t *n, gw_security *s)
{
    static const char *const keys[] = {"keys_dir", "request_window", "nonce_cache", "sig_cache"};
    yaml_node_t *v[4];
    int rc = fields(p, n, "'devices'", "'security.identity'", keys, 4, v);
    if (rc != 0)
        return rc;
    if ((v[0] && (rc = get_path(p, v[0], "keys_dir", &s->device_keys_dir)) != 0) ||
        (v[1] &&
         (rc = get_secs(p, v[1], "request_window", 1000, 86400000, &s->request_window_s)) != 0) ||
        (v[2] && (rc = get_count(p, v[2], "nonce_cache", 1024, 1u << 24, &s->nonce_cache)) != 0) ||
        (v[3] && (rc = get_count(p, v[3], "sig_cache", 0, 1u << 24, &s->sig_cache)) != 0))
        return rc;
    return 0;
}

static int
parse_security(P *p, const yaml_node_t *n, gw_config *c)
{
    static const char *const keys[] = {"identity",    "identity_header", "strip_headers", "rbac",
                                       "rate_limits", "audit",           "masking"};
    yaml_node_t *v[7];
    gw_security *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return oom(p);
    c->security = s;
    s->algs = ZT_ALG_ALL;
    s->jwks_refresh_ms = 300000;
    s->clock_skew_s = 30;
    s->max_token = 8192;
    s->request_window_s = 300;
    s->nonce_cache = 262144;
    s->sig_cache = 65536;
    s->etcd_timeout_ms = 2000;
    s->audit_mode = GW_AUDIT_DURABLE;
    s->audit_queue = 65536;
    if ((s->sm2_alg = strdup("SM2")) == NULL)
        return oom(p);
    int rc = fields(p, n, "'security'", "", keys, 7, v);
    if (rc != 0)
        return rc;
    if (v[0]) {
        static const char *const ik[] = {"jwt", "devices"};
        yaml_node_t *iv[2];
        if ((rc = fields(p, v[0], "'identity'", "'security'", ik, 2, iv)) != 0 ||
            (iv[0] && (rc = parse_jwt(p, iv[0], s)) != 0) ||
            (iv[1] && (rc = parse_devices(p, iv[1], s)) != 0))
            return rc;
    }
    if (!v[1])
        return fail(p, DBAO_EFORMAT, n, "missing 'identity_header' (its 'key_file') in 'security'");
    {
        static const char *const hk[] = {"name", "key_file"};
        yaml_node_t *hv[2];
        if ((rc = fields(p, v[1], "'identity_header'", "'security'", hk, 2, hv)) != 0)
            return rc;
        if (hv[0]) {
            if ((rc = get_str(p, hv[0], "name", &s->identity_header)) != 0)
                return rc;
            if (!header_name_ok(s->identity_header))
                return fail(p, DBAO_EFORMAT, hv[0],
                            "'name' must be a header name in "
                            "'identity_header'");
        } else if ((s->identity_header = strdup("X-Auth-Identity")) == NULL) {
            return oom(p);
        }
        if (!hv[1])
            return fail(p, DBAO_EFORMAT, v[1], "missing 'key_file' in 'identity_header'");
        if ((rc = get_path(p, hv[1], "key_file", &s->identity_key_file)) != 0)
            return rc;
    }
    if (v[2]) {
        if ((rc = get_str_list(p, v[2], "strip_headers", 0, &s->strip_headers, &s->num_strip)) != 0)
            return rc;
        for (size_t i = 0; i < s->num_strip; i++)
            if (!header_name_ok(s->strip_headers[i]))
                return fail(p, DBAO_EFORMAT, v[2], "'strip_headers': '%.64s' is not a header name",
                            s->strip_headers[i]);
    }
    if (v[3]) {
        static const char *const rk[] = {"file", "etcd"};
        yaml_node_t *rv[2];
        if ((rc = fields(p, v[3], "'rbac'", "'security'", rk, 2, rv)) != 0)
            return rc;
        if (rv[0] && rv[1])
            return fail(p, DBAO_EFORMAT, rv[1], "'rbac': 'file' and 'etcd' are exclusive");
        if (rv[0] && (rc = get_path(p, rv[0], "file", &s->rbac_file)) != 0)
            return rc;
        if (rv[1]) {
            static const char *const ek[] = {"endpoints", "key", "timeout"};
            yaml_node_t *ev[3];
            if ((rc = fields(p, rv[1], "'etcd'", "'security.rbac'", ek, 3, ev)) != 0)
                return rc;
            if (!ev[0])
                return fail(p, DBAO_EFORMAT, rv[1], "missing 'endpoints' in 'etcd'");
            if ((rc = get_str_list(p, ev[0], "endpoints", 1, &s->etcd_endpoints, &s->num_etcd)) !=
                0)
                return rc;
            for (size_t i = 0; i < s->num_etcd; i++)
                if (!http_url(s->etcd_endpoints[i], false))
                    return fail(p, DBAO_EFORMAT, ev[0],
                                "'endpoints': '%.64s' is not an http:// URL in 'etcd'",
                                s->etcd_endpoints[i]);
            if (!ev[1])
                return fail(p, DBAO_EFORMAT, rv[1], "missing 'key' in 'etcd'");
            if ((rc = get_str(p, ev[1], "key", &s->etcd_key)) != 0)
                return rc;
            if (s->etcd_key[0] != '/')
                return fail(p, DBAO_EFORMAT, ev[1], "'key' must start with '/' in 'etcd'");
            if (ev[2] && (rc = get_duration(p, ev[2], "timeout", 1, &s->etcd_timeout_ms)) != 0)
                return rc;
        }
    }
    if (v[4]) {
        static const char *const lk[] = {"subject", "client_ip"};
        yaml_node_t *lv[2];
        if ((rc = fields(p, v[4], "'rate_limits'", "'security'", lk, 2, lv)) != 0 ||
            (lv[0] && (rc = get_limit(p, lv[0], "subject", true, &s->subject_limit)) != 0) ||
            (lv[1] && (rc = get_limit(p, lv[1], "client_ip", true, &s->ip_limit)) != 0))
            return rc;
    }
    if (!v[5])
        return fail(p, DBAO_EFORMAT, n, "missing 'audit' (its 'dir') in 'security'");
    {
        static const char *const ak[] = {"dir", "mode", "queue"};
        static const char *const modes[] = {"durable", "async"};
        yaml_node_t *av[3];
        int m;
        if ((rc = fields(p, v[5], "'audit'", "'security'", ak, 3, av)) != 0)
            return rc;
        if (!av[0])
            return fail(p, DBAO_EFORMAT, v[5], "missing 'dir' in 'audit'");
        if ((rc = get_path(p, av[0], "dir", &s->audit_dir)) != 0)
            return rc;
        if (av[1]) {
            if ((rc = dbao_yaml_enum(&p->y, av[1], "mode", modes, 2, &m)) != 0)
                return rc;
            s->audit_mode = m == 1 ? GW_AUDIT_ASYNC : GW_AUDIT_DURABLE;
        }
        if (av[2] && (rc = get_count(p, av[2], "queue", 16, 1u << 24, &s->audit_queue)) != 0)
            return rc;
    }
    if (v[6]) {
        static const char *const mk[] = {"policy"};
        yaml_node_t *mv[1];
        if ((rc = fields(p, v[6], "'masking'", "'security'", mk, 1, mv)) != 0 ||
            (mv[0] && (rc = get_path(p, mv[0], "policy", &s->mask_policy)) != 0))
            return rc;
    }
    return 0;
}

static int
parse_breaker(P *p, const yaml_node_t *n, gw_breaker_conf *b, const char *ctx)
{
    static const char *const keys[] = {"window",      "buckets",    "min_requests",
                                       "error_ratio", "slow_ratio", "slow_call",
                                       "open",        "probes",     "successes"};
    yaml_node_t *v[9];
    unsigned u;
    int rc = fields(p, n, "'breaker'", ctx, keys, 9, v);
    if (rc != 0)
        return rc;
    *b = (gw_breaker_conf){.enabled = true,
                           .window_ms = 30000,
                           .buckets = 30,
                           .min_requests = 20,
                           .error_permille = 150,
                           .open_ms = 30000,
                           .probes = 1};
    if ((v[0] && (rc = get_duration(p, v[0], "window", 1, &b->window_ms)) != 0) ||
        (v[1] && (rc = get_unsigned(p, v[1], "buckets", 1, 600, &u)) != 0))
        return rc;
    if (v[1])
        b->buckets = u;
    if (b->window_ms % b->buckets != 0)
        return fail(p, DBAO_EFORMAT, v[0] ? v[0] : v[1],
                    "'window' (%" PRIu32 " ms) must be a multiple of 'buckets' (%" PRIu32 ") in %s",
                    b->window_ms, b->buckets, ctx);
    if (v[2]) {
        if ((rc = get_unsigned(p, v[2], "min_requests", 1, 1000000, &u)) != 0)
            return rc;
        b->min_requests = u;
    }
    if ((v[3] && (rc = get_ratio(p, v[3], "error_ratio", &b->error_permille)) != 0) ||
        (v[4] && (rc = get_ratio(p, v[4], "slow_ratio", &b->slow_permille)) != 0) ||
        (v[5] && (rc = get_duration(p, v[5], "slow_call", 1, &b->slow_ms)) != 0) ||
        (v[6] && (rc = get_duration(p, v[6], "open", 1, &b->open_ms)) != 0))
        return rc;
    if (v[4] && !v[5])
        return fail(p, DBAO_EFORMAT, v[4], "'slow_ratio' needs 'slow_call' in %s", ctx);
    if (v[5] && !v[4])
        return fail(p, DBAO_EFORMAT, v[5], "'slow_call' needs 'slow_ratio' in %s", ctx);
    if (v[7]) {
        if ((rc = get_unsigned(p, v[7], "probes", 1, 1000, &u)) != 0)
            return rc;
        b->probes = u;
    }
    b->successes = b->probes;
    if (v[8]) {
        if ((rc = get_unsigned(p, v[8], "successes", 1, 1000000, &u)) != 0)
            return rc;
        b->successes = u;
    }
    return 0;
}

static bool
ctype_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char) *s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static int
parse_fallback(P *p, const yaml_node_t *n, gw_config *c, gw_route *r, const char *ctx)
{
    static const char *const keys[] = {"mode",      "status",  "content_type", "body",
                                       "body_file", "cluster", "cache_ttl",    "cache_max"};
    static const char *const modes[] = {"fail", "static", "upstream", "cache"};
    /* which keys each mode accepts (bit i: keys[i]) */
    static const unsigned allowed[] = {0x01, 0x1f, 0x21, 0xc1};
    yaml_node_t *v[8];
    gw_fallback *f = &r->fallback;
    int m = 0, rc = fields(p, n, "'fallback'", ctx, keys, 8, v);
    if (rc != 0)
        return rc;
    if (v[0] && (rc = dbao_yaml_enum(&p->y, v[0], "mode", modes, 4, &m)) != 0)
        return rc;
    f->mode = (gw_fallback_mode) m;
    for (size_t i = 1; i < 8; i++)
        if (v[i] && !(allowed[m] & (1u << i)))
            return fail(p, DBAO_EFORMAT, v[i], "'%s' does not go with fallback mode %s in %s",
                        keys[i], modes[m], ctx);
    if (f->mode == GW_FALLBACK_STATIC) {
        unsigned st = 200;
        if (v[1] && (rc = get_unsigned(p, v[1], "status", 200, 599, &st)) != 0)
            return rc;
        f->status = (int) st;
        if (v[2]) {
            if ((rc = get_str(p, v[2], "content_type", &f->content_type)) != 0)
                return rc;
            if (!ctype_ok(f->content_type))
                return fail(p, DBAO_EFORMAT, v[2], "bad 'content_type' in %s", ctx);
        } else if ((f->content_type = strdup("text/plain")) == NULL) {
            return oom(p);
        }
        if ((v[3] != NULL) == (v[4] != NULL))
            return fail(p, DBAO_EFORMAT, n,
                        "fallback mode static needs exactly one of 'body' "
                        "and 'body_file' in %s",
                        ctx);
        if (v[3]) {
            if ((rc = get_str(p, v[3], "body", &f->body)) != 0)
                return rc;
            f->body_len = strlen(f->body);
        } else {
            char *path = NULL;
            uint8_t *data = NULL;
            size_t len = 0;
            dbao_err ferr;
            dbao_err_clear(&ferr);
            if ((rc = get_path(p, v[4], "body_file", &path)) != 0)
                return rc;
            struct stat sb;
            if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
                free(path);
                return fail(p, DBAO_EFORMAT, v[4], "'body_file' is not a regular file in %s", ctx);
            }
            rc = dbao_file_read(&data, &len, path, MAX_BODY_FILE, &ferr);
            free(path);
            if (rc == DBAO_ERANGE)
                return fail(p, DBAO_EFORMAT, v[4], "'body_file' is larger than 1 MiB in %s", ctx);
            if (rc != 0)
                return fail(p, rc == DBAO_ENOMEM ? rc : DBAO_EFORMAT, v[4],
                            "cannot read 'body_file' in %s: %s", ctx, ferr.msg);
            f->body = malloc(len + 1);
            if (f->body == NULL) {
                free(data);
                return oom(p);
            }
            if (len > 0)
                memcpy(f->body, data, len);
            f->body[len] = '\0';
            f->body_len = len;
            free(data);
        }
    } else if (f->mode == GW_FALLBACK_UPSTREAM) {
        if (!v[5])
            return fail(p, DBAO_EFORMAT, n, "fallback mode upstream needs 'cluster' in %s", ctx);
        if ((rc = want_scalar(p, v[5], "cluster", "a cluster name")) != 0)
            return rc;
        size_t k = 0;
        while (k < c->num_clusters && strcmp(c->clusters[k].name, sval(v[5])) != 0)
            k++;
        if (k == c->num_clusters)
            return fail(p, DBAO_EFORMAT, v[5], "unknown fallback cluster '%.64s' in %s", sval(v[5]),
                        ctx);
        if (k == r->cluster)
            return fail(p, DBAO_EFORMAT, v[5],
                        "fallback cluster '%.64s' must differ from the route's cluster in %s",
                        sval(v[5]), ctx);
        f->cluster = k;
    } else if (f->mode == GW_FALLBACK_CACHE) {
        f->cache_ttl_ms = 300000;
        f->cache_max = 1u << 20;
        if ((v[6] && (rc = get_duration(p, v[6], "cache_ttl", 1, &f->cache_ttl_ms)) != 0) ||
            (v[7] && (rc = get_size_range(p, v[7], "cache_max", 1, 64u << 20, &f->cache_max)) != 0))
            return rc;
    }
    return 0;
}

/* route_sec reads a route's zero-trust keys: v = auth, rbac, device, rate_limit, audit, mask. */
static int
route_sec(P *p, gw_config *c, gw_route *r, yaml_node_t *const *v, const char *ctx)
{
    static const char *const names[] = {"auth", "rbac", "device", "rate_limit", "audit", "mask"};
    static const char *const auths[] = {"jwt", "none"};
    static const char *const devs[] = {"none", "token", "request", "mtls"};
    static const char *const audits[] = {"durable", "async"};
    gw_security *s = c->security;
    gw_route_sec *rs = &r->sec;
    int rc, e;
    if (s == NULL) {
        for (size_t i = 0; i < 6; i++)
            if (v[i])
                return fail(p, DBAO_EFORMAT, v[i], "%s: '%s' needs a 'security' section", ctx,
                            names[i]);
        rs->auth = GW_AUTH_NONE;
        return 0;
    }
    rs->auth = GW_AUTH_JWT;
    rs->audit = s->audit_mode;
    rs->mask_body_max = 1u << 20;
    if (v[0]) {
        if ((rc = dbao_yaml_enum(&p->y, v[0], "auth", auths, 2, &e)) != 0)
            return rc;
        rs->auth = (gw_auth) e;
    }
    rs->rbac = rs->auth == GW_AUTH_JWT;
    if (v[1]) {
        if ((rc = get_bool(p, v[1], "rbac", &rs->rbac)) != 0)
            return rc;
        if (rs->rbac && rs->auth != GW_AUTH_JWT)
            return fail(p, DBAO_EFORMAT, v[1], "%s: 'rbac: true' needs 'auth: jwt'", ctx);
    }
    if (v[2]) {
        if ((rc = dbao_yaml_enum(&p->y, v[2], "device", devs, 4, &e)) != 0)
            return rc;
        rs->device = (gw_device_mode) e;
        if (rs->device != GW_DEVICE_NONE && rs->auth != GW_AUTH_JWT)
            return fail(p, DBAO_EFORMAT, v[2], "%s: 'device: %s' needs 'auth: jwt'", ctx, devs[e]);
    }
    if (v[3] && (rc = get_limit(p, v[3], "rate_limit", false, &rs->limit)) != 0)
        return rc;
    if (v[4]) {
        if ((rc = dbao_yaml_enum(&p->y, v[4], "audit", audits, 2, &e)) != 0)
            return rc;
        rs->audit = e == 1 ? GW_AUDIT_ASYNC : GW_AUDIT_DURABLE;
    }
    if (v[5]) {
        static const char *const mk[] = {"enabled", "body_max", "over_limit"};
        static const char *const over[] = {"block", "pass"};
        yaml_node_t *mv[3];
        if ((rc = fields(p, v[5], "'mask'", ctx, mk, 3, mv)) != 0)
            return rc;
        rs->mask = true;
        if ((mv[0] && (rc = get_bool(p, mv[0], "enabled", &rs->mask)) != 0) ||
            (mv[1] &&
             (rc = get_size_range(p, mv[1], "body_max", 1, 1ull << 30, &rs->mask_body_max)) != 0))
            return rc;
        if (mv[2]) {
            if ((rc = dbao_yaml_enum(&p->y, mv[2], "over_limit", over, 2, &e)) != 0)
                return rc;
            rs->mask_over_pass = e == 1;
        }
        if (rs->mask && s->mask_policy == NULL)
            return fail(p, DBAO_EFORMAT, v[5], "%s: 'mask' needs 'security.masking.policy'", ctx);
    }
    return 0;
}

/* ---- sections ---- */

static int
parse_tls(P *p, const yaml_node_t *n, gw_listener *l, const char *ctx)
{
    static const char *const keys[] = {"cert", "key", "client_ca", "client_verify"};
    yaml_node_t *v[4];
    int rc = fields(p, n, "'tls'", ctx, keys, 4, v);
    if (rc == 0 && v[0])
        rc = get_path(p, v[0], "cert", &l->tls_cert);
    if (rc == 0 && v[1])
        rc = get_path(p, v[1], "key", &l->tls_key);
    if (rc == 0 && v[2])
        rc = get_path(p, v[2], "client_ca", &l->tls_client_ca);
    if (rc != 0)
        return rc;
    if (!l->tls_cert || !l->tls_key)
        return fail(p, DBAO_EFORMAT, n, "'tls' needs both 'cert' and 'key' in %s", ctx);
    if (l->tls_client_ca)
        l->client_verify = NET_CLIENT_VERIFY_OPTIONAL;
    if (v[3]) {
        if (v[3]->type != YAML_SCALAR_NODE ||
            (strcmp(sval(v[3]), "optional") != 0 && strcmp(sval(v[3]), "require") != 0))
            return fail(p, DBAO_EFORMAT, v[3], "'client_verify' must be optional or require");
        if (!l->tls_client_ca)
            return fail(p, DBAO_EFORMAT, v[3], "'client_verify' needs 'client_ca' in %s", ctx);
        l->client_verify = strcmp(sval(v[3]), "require") == 0 ? NET_CLIENT_VERIFY_REQUIRE
                                                              : NET_CLIENT_VERIFY_OPTIONAL;
    }
    return 0;
}

static int
parse_listeners(P *p, const yaml_node_t *n, gw_config *c)
{
    size_t cnt = 0;
    int rc = sequence(p, n, "listeners", 1, MAX_LISTENERS, &cnt);
    if (rc != 0)
        return rc;
    c->listeners = calloc(cnt, sizeof(*c->listeners));
    if (c->listeners == NULL)
        return oom(p);
    c->num_listeners = cnt;
    for (size_t i = 0; i < cnt; i++) {
        static const char *const keys[] = {"listen", "tls"};
        yaml_node_t *item, *v[2];
        char ctx[48];
        snprintf(ctx, sizeof(ctx), "listener %zu", i + 1);
        gw_listener *l = &c->listeners[i];
        if ((rc = node(p, n->data.sequence.items.start[i], n, &item)) != 0 ||
            (rc = fields(p, item, "a listener", ctx, keys, 2, v)) != 0)
            return rc;
        if (!v[0])
            return fail(p, DBAO_EFORMAT, item, "missing 'listen' in %s", ctx);
        if ((rc = get_addr(p, v[0], "listen", false, &l->addr)) != 0)
            return rc;
        if (v[1] && (rc = parse_tls(p, v[1], l, ctx)) != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (c->listeners[j].addr.port == l->addr.port && l->addr.port != 0 &&
                strcmp(c->listeners[j].addr.host, l->addr.host) == 0)
                return fail(p, DBAO_EFORMAT, v[0], "duplicate listener address");
    }
    return 0;
}

static int
parse_health(P *p, const yaml_node_t *n, gw_health_opts *h, const char *ctx)
{
    static const char *const keys[] = {"enabled", "path",      "interval",         "timeout",
                                       "healthy", "unhealthy", "passive_failures", "passive_eject"};
    yaml_node_t *v[8];
    int rc = fields(p, n, "'health'", ctx, keys, 8, v);
    if (rc != 0)
        return rc;
    h->enabled = v[1] != NULL || v[2] != NULL;
    if (v[0] && (rc = get_bool(p, v[0], "enabled", &h->enabled)) != 0)
        return rc;
    if (v[1]) {
        if ((rc = get_str(p, v[1], "path", &h->path)) != 0)
            return rc;
        if (h->path[0] != '/')
            return fail(p, DBAO_EFORMAT, v[1], "'path' must start with '/' in %s", ctx);
    }
    if ((v[2] && (rc = get_duration(p, v[2], "interval", 1, &h->interval_ms)) != 0) ||
        (v[3] && (rc = get_duration(p, v[3], "timeout", 1, &h->timeout_ms)) != 0) ||
        (v[4] && (rc = get_unsigned(p, v[4], "healthy", 1, 1000, &h->healthy_threshold)) != 0) ||
        (v[5] &&
         (rc = get_unsigned(p, v[5], "unhealthy", 1, 1000, &h->unhealthy_threshold)) != 0) ||
        (v[6] &&
         (rc = get_unsigned(p, v[6], "passive_failures", 0, 100000, &h->passive_failures)) != 0) ||
        (v[7] && (rc = get_duration(p, v[7], "passive_eject", 1, &h->passive_eject_ms)) != 0))
        return rc;
    return 0;
}

static int
parse_cluster(P *p, const yaml_node_t *item, gw_cluster *k, size_t idx)
{
    static const char *const keys[] = {"name",     "endpoints", "balance", "keepalive", "max_conns",
                                       "timeouts", "retries",   "health",  "breaker"};
    yaml_node_t *v[9];
    char ctx[96];
    const char *nm = peek_name(p, item);
    if (nm)
        snprintf(ctx, sizeof(ctx), "cluster '%.64s'", nm);
    else
        snprintf(ctx, sizeof(ctx), "cluster %zu", idx + 1);
    int rc = cluster_defaults(k);
    if (rc != 0)
        return oom(p);
    if ((rc = fields(p, item, "a cluster", ctx, keys, 9, v)) != 0)
        return rc;
    if (!v[0])
        return fail(p, DBAO_EFORMAT, item, "missing 'name' in %s", ctx);
    if ((rc = get_str(p, v[0], "name", &k->name)) != 0)
        return rc;
    if (!v[1])
        return fail(p, DBAO_EFORMAT, item, "missing 'endpoints' in %s", ctx);
    size_t ne = 0;
    if ((rc = sequence(p, v[1], "endpoints", 1, MAX_ENDPOINTS, &ne)) != 0)
        return rc;
    k->endpoints = calloc(ne, sizeof(*k->endpoints));
    if (k->endpoints == NULL)
        return oom(p);
    k->num_endpoints = ne;
    for (size_t i = 0; i < ne; i++) {
        yaml_node_t *e;
        if ((rc = node(p, v[1]->data.sequence.items.start[i], v[1], &e)) != 0 ||
            (rc = get_addr(p, e, "endpoints", true, &k->endpoints[i])) != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (k->endpoints[j].port == k->endpoints[i].port &&
                strcmp(k->endpoints[j].host, k->endpoints[i].host) == 0)
                return fail(p, DBAO_EFORMAT, e, "duplicate endpoint '%s' in %s", sval(e), ctx);
    }
    if (v[2]) {
        if (v[2]->type == YAML_SCALAR_NODE && strcmp(sval(v[2]), "round_robin") == 0)
            k->balance = GW_BALANCE_ROUND_ROBIN;
        else if (v[2]->type == YAML_SCALAR_NODE && strcmp(sval(v[2]), "least_conn") == 0)
            k->balance = GW_BALANCE_LEAST_CONN;
        else
            return fail(p, DBAO_EFORMAT, v[2], "'balance' must be round_robin or least_conn");
    }
    if ((v[3] && (rc = get_unsigned(p, v[3], "keepalive", 0, 100000, &k->keepalive)) != 0) ||
        (v[4] && (rc = get_unsigned(p, v[4], "max_conns", 0, 1000000, &k->max_conns)) != 0) ||
        (v[6] && (rc = get_unsigned(p, v[6], "retries", 0, 10, &k->retries)) != 0))
        return rc;
    if (v[5]) {
        static const char *const tk[] = {"connect", "read", "idle"};
        yaml_node_t *t[3];
        if ((rc = fields(p, v[5], "'timeouts'", ctx, tk, 3, t)) != 0 ||
            (t[0] && (rc = get_duration(p, t[0], "connect", 1, &k->connect_timeout_ms)) != 0) ||
            (t[1] && (rc = get_duration(p, t[1], "read", 1, &k->read_timeout_ms)) != 0) ||
            (t[2] && (rc = get_duration(p, t[2], "idle", 1, &k->idle_timeout_ms)) != 0))
            return rc;
    }
    if (v[7] && (rc = parse_health(p, v[7], &k->health, ctx)) != 0)
        return rc;
    if (v[8] && (rc = parse_breaker(p, v[8], &k->breaker, ctx)) != 0)
        return rc;
    return 0;
}

static int
parse_clusters(P *p, const yaml_node_t *n, gw_config *c)
{
    size_t cnt = 0;
    int rc = sequence(p, n, "clusters", 1, MAX_CLUSTERS, &cnt);
    if (rc != 0)
        return rc;
    c->clusters = calloc(cnt, sizeof(*c->clusters));
    if (c->clusters == NULL)
        return oom(p);
    c->num_clusters = cnt;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item;
        if ((rc = node(p, n->data.sequence.items.start[i], n, &item)) != 0 ||
            (rc = parse_cluster(p, item, &c->clusters[i], i)) != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->clusters[j].name, c->clusters[i].name) == 0)
                return fail(p, DBAO_EFORMAT, item, "duplicate cluster name '%.64s'",
                            c->clusters[i].name);
    }
    return 0;
}

static int
parse_host(P *p, const yaml_node_t *n, gw_route *r)
{
    int rc = get_str(p, n, "host", &r->host);
    if (rc != 0)
        return rc;
    if (strcmp(r->host, "*") == 0) {
        free(r->host);
        r->host = NULL;
        return 0;
    }
    char *h = r->host;
    size_t i = (h[0] == '*' && h[1] == '.') ? 2 : 0;
    if (h[i] == '\0')
        return fail(p, DBAO_EFORMAT, n, "bad host '%.64s'", h);
    for (; h[i]; i++) {
        char ch = h[i];
        if (ch >= 'A' && ch <= 'Z')
            h[i] = (char) (ch + 32);
        else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
                   ch == '_'))
            return fail(p, DBAO_EFORMAT, n, "bad host '%.64s' (a name without port, or *.name)", h);
    }
    r->host_len = strlen(h);
    return 0;
}

static int
parse_routes(P *p, const yaml_node_t *n, gw_config *c)
{
    size_t cnt = 0;
    int rc = sequence(p, n, "routes", 1, MAX_ROUTES, &cnt);
    if (rc != 0)
        return rc;
    c->routes = calloc(cnt, sizeof(*c->routes));
    if (c->routes == NULL)
        return oom(p);
    c->num_routes = cnt;
    for (size_t i = 0; i < cnt; i++) {
        static const char *const keys[] = {
            "name", "host", "prefix", "cluster",    "strip_prefix", "body_max", "timeout",
            "auth", "rbac", "device", "rate_limit", "audit",        "mask",     "fallback"};
        yaml_node_t *item, *v[14];
        gw_route *r = &c->routes[i];
        char ctx[96];
        const char *nm;
        if ((rc = node(p, n->data.sequence.items.start[i], n, &item)) != 0)
            return rc;
        nm = peek_name(p, item);
        if (nm)
            snprintf(ctx, sizeof(ctx), "route '%.64s'", nm);
        else
            snprintf(ctx, sizeof(ctx), "route %zu", i + 1);
        if ((rc = fields(p, item, "a route", ctx, keys, 14, v)) != 0)
            return rc;
        if (v[0]) {
            if ((rc = get_str(p, v[0], "name", &r->name)) != 0)
                return rc;
        } else {
            char def[32];
            snprintf(def, sizeof(def), "route%zu", i + 1);
            if ((r->name = strdup(def)) == NULL)
                return oom(p);
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->routes[j].name, r->name) == 0)
                return fail(p, DBAO_EFORMAT, v[0] ? v[0] : item, "duplicate route name '%.64s'",
                            r->name);
        if (v[1] && (rc = parse_host(p, v[1], r)) != 0)
            return rc;
        if (v[2]) {
            char *raw = NULL;
            if ((rc = get_str(p, v[2], "prefix", &raw)) != 0)
                return rc;
            size_t cap = strlen(raw) + 1;
            r->prefix = malloc(cap);
            if (r->prefix == NULL) {
                free(raw);
                return oom(p);
            }
            rc = gw_path_normalize(raw, r->prefix, cap);
            if (rc != 0) {
                rc = fail(p, DBAO_EFORMAT, v[2], "bad prefix '%.64s' in %s", raw, ctx);
                free(raw);
                return rc;
            }
            free(raw);
        } else if ((r->prefix = strdup("/")) == NULL) {
            return oom(p);
        }
        r->prefix_len = strlen(r->prefix);
        if (!v[3])
            return fail(p, DBAO_EFORMAT, item, "missing 'cluster' in %s", ctx);
        if ((rc = want_scalar(p, v[3], "cluster", "a cluster name")) != 0)
            return rc;
        size_t k = 0;
        while (k < c->num_clusters && strcmp(c->clusters[k].name, sval(v[3])) != 0)
            k++;
        if (k == c->num_clusters)
            return fail(p, DBAO_EFORMAT, v[3], "unknown cluster '%.64s' in %s", sval(v[3]), ctx);
        r->cluster = k;
        r->body_max = c->body_max;
        if ((v[4] && (rc = get_bool(p, v[4], "strip_prefix", &r->strip_prefix)) != 0) ||
            (v[5] && (rc = get_size(p, v[5], "body_max", &r->body_max)) != 0) ||
            (v[6] && (rc = get_duration(p, v[6], "timeout", 0, &r->timeout_ms)) != 0))
            return rc;
        if ((rc = route_sec(p, c, r, &v[7], ctx)) != 0 ||
            (v[13] && (rc = parse_fallback(p, v[13], c, r, ctx)) != 0))
            return rc;
        if (c->security && r->sec.auth == GW_AUTH_JWT && c->security->hs256_secret_file == NULL &&
            c->security->jwks_file == NULL && c->security->jwks_url == NULL)
            return fail(p, DBAO_EFORMAT, v[7] ? v[7] : item,
                        "%s uses auth jwt but 'security.identity.jwt' has no key source "
                        "(hs256_secret_file, jwks_file or jwks_url)",
                        ctx);
    }
    return 0;
}

static int
parse_top(P *p, const yaml_node_t *root, gw_config *c)
{
    static const char *const keys[] = {"workers",  "listeners",       "admin",      "limits",
                                       "timeouts", "trusted_proxies", "access_log", "clusters",
                                       "routes",   "security"};
    yaml_node_t *v[10];
    int rc = fields(p, root, "the configuration", "", keys, 10, v);
    if (rc != 0)
        return rc;
    if (v[0] && (rc = get_unsigned(p, v[0], "workers", 1, 256, &c->workers)) != 0)
        return rc;
    if (!v[1])
        return fail(p, DBAO_EFORMAT, root, "missing 'listeners'");
    if ((rc = parse_listeners(p, v[1], c)) != 0)
        return rc;
    if (v[2] && (rc = get_addr(p, v[2], "admin", false, &c->admin)) != 0)
        return rc;
    if (v[3]) {
        static const char *const lk[] = {"header_max", "headers_num_max", "body_max"};
        yaml_node_t *l[3];
        if ((rc = fields(p, v[3], "'limits'", "", lk, 3, l)) != 0 ||
            (l[0] && (rc = get_size(p, l[0], "header_max", &c->header_max)) != 0) ||
            (l[2] && (rc = get_size(p, l[2], "body_max", &c->body_max)) != 0))
            return rc;
        if (l[1]) {
            uint64_t x;
            if ((rc = get_uint(p, l[1], "headers_num_max", 1, 10000, &x)) != 0)
                return rc;
            c->headers_num_max = (size_t) x;
        }
    }
    if (v[4]) {
        static const char *const tk[] = {"header", "body", "idle", "drain"};
        yaml_node_t *t[4];
        if ((rc = fields(p, v[4], "'timeouts'", "", tk, 4, t)) != 0 ||
            (t[0] && (rc = get_duration(p, t[0], "header", 1, &c->header_timeout_ms)) != 0) ||
            (t[1] && (rc = get_duration(p, t[1], "body", 1, &c->body_timeout_ms)) != 0) ||
            (t[2] && (rc = get_duration(p, t[2], "idle", 1, &c->idle_timeout_ms)) != 0) ||
            (t[3] && (rc = get_duration(p, t[3], "drain", 1, &c->drain_timeout_ms)) != 0))
            return rc;
    }
    if (v[5]) {
        size_t cnt = 0;
        if ((rc = sequence(p, v[5], "trusted_proxies", 0, MAX_TRUSTED, &cnt)) != 0)
            return rc;
        if (cnt > 0) {
            c->trusted_proxies = calloc(cnt, sizeof(*c->trusted_proxies));
            if (c->trusted_proxies == NULL)
                return oom(p);
        }
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_t *e;
            if ((rc = node(p, v[5]->data.sequence.items.start[i], v[5], &e)) != 0 ||
                (rc = want_scalar(p, e, "trusted_proxies", "an address or range")) != 0)
                return rc;
            if (gw_cidr_parse(sval(e), &c->trusted_proxies[i]) != 0)
                return fail(p, DBAO_EFORMAT, e, "'trusted_proxies': bad address or range '%.64s'",
                            sval(e));
            c->num_trusted = i + 1;
        }
    }
    if (v[6]) {
        const yaml_node_t *a = v[6];
        if (a->type == YAML_SCALAR_NODE && plain(a) &&
            (strcmp(sval(a), "false") == 0 || strcmp(sval(a), "off") == 0)) {
            c->access_log = NULL;
        } else if (a->type == YAML_SCALAR_NODE && plain(a) && strcmp(sval(a), "true") == 0) {
            return fail(p, DBAO_EFORMAT, a, "'access_log' must be a file, \"-\" or off");
        } else if ((rc = get_path(p, a, "access_log", &c->access_log)) != 0) {
            return rc;
        }
    }
    if (!v[7])
        return fail(p, DBAO_EFORMAT, root, "missing 'clusters'");
    if ((rc = parse_clusters(p, v[7], c)) != 0)
        return rc;
    if (v[9] && (rc = parse_security(p, v[9], c)) != 0)
        return rc;
    if (!v[8])
        return fail(p, DBAO_EFORMAT, root, "missing 'routes'");
    return parse_routes(p, v[8], c);
}

static int
parse_doc(P *p, const char *yaml, size_t len, const char *name, dbao_err *err, gw_config **out)
{
    int rc = dbao_yaml_load(&p->y, yaml, len, name, err);
    if (rc == 0 && p->y.root == NULL)
        rc = dbao_err_set(err, DBAO_EFORMAT, "%s:1: empty configuration", name);
    gw_config *c = NULL;
    if (rc == 0) {
        c = calloc(1, sizeof(*c));
        if (c == NULL)
            rc = oom(p);
    }
    if (rc == 0) {
        config_defaults(c);
        rc = parse_top(p, p->y.root, c);
    }
    dbao_yaml_free(&p->y);
    if (rc != 0) {
        gw_config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static int
parse_named(gw_config **out, const char *yaml, size_t len, const char *name, dbao_err *err)
{
    if (out == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "gw_config_parse: out is NULL");
    *out = NULL;
    if (yaml == NULL && len > 0)
        return dbao_err_set(err, DBAO_EINVAL, "gw_config_parse: yaml is NULL");
    P p = {0};
    name = name ? name : "config";
    if (len > MAX_FILE)
        return dbao_err_set(err, DBAO_ERANGE, "%s: configuration larger than %u bytes", name,
                            MAX_FILE);
    return parse_doc(&p, yaml ? yaml : "", len, name, err, out);
}

int
gw_config_parse(gw_config **out, const char *yaml, size_t len, const char *name, dbao_err *err)
{
    return parse_named(out, yaml, len, name, err);
}

int
gw_config_load(gw_config **out, const char *path, dbao_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (out == NULL || path == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "gw_config_load: NULL argument");
    *out = NULL;
    int rc = dbao_file_read(&data, &len, path, MAX_FILE, err);
    if (rc != 0)
        return rc;
    rc = parse_named(out, (const char *) data, len, path, err);
    free(data);
    return rc;
}

int
gw_config_quick(gw_config **out, const char *listen, const char *const *upstreams,
                size_t num_upstreams, unsigned workers, const char *tls_cert, const char *tls_key,
                dbao_err *err)
{
    if (out == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "gw_config_quick: out is NULL");
    *out = NULL;
    if (listen == NULL || upstreams == NULL || num_upstreams == 0)
        return dbao_err_set(err, DBAO_EINVAL, "quick mode needs a listen address and upstreams");
    if (num_upstreams > MAX_ENDPOINTS)
        return dbao_err_set(err, DBAO_ERANGE, "more than %d upstreams", MAX_ENDPOINTS);
    if ((tls_cert == NULL) != (tls_key == NULL))
        return dbao_err_set(err, DBAO_EINVAL, "tls needs both a certificate and a key");
    if (workers > 256)
        return dbao_err_set(err, DBAO_ERANGE, "workers must be between 1 and 256");
    gw_config *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    config_defaults(c);
    c->workers = workers ? workers : 1;
    int rc = DBAO_ENOMEM;
    c->listeners = calloc(1, sizeof(*c->listeners));
    c->clusters = calloc(1, sizeof(*c->clusters));
    c->routes = calloc(1, sizeof(*c->routes));
    if (!c->listeners || !c->clusters || !c->routes)
        goto fail;
    c->num_listeners = c->num_clusters = c->num_routes = 1;
    if (gw_parse_addr(listen, &c->listeners[0].addr) != 0) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "bad listen address '%s'", listen);
        goto fail_set;
    }
    if (tls_cert) {
        c->listeners[0].tls_cert = strdup(tls_cert);
        c->listeners[0].tls_key = strdup(tls_key);
        if (!c->listeners[0].tls_cert || !c->listeners[0].tls_key)
            goto fail;
    }
    gw_cluster *k = &c->clusters[0];
    if (cluster_defaults(k) != 0 || (k->name = strdup("upstream")) == NULL ||
        (k->endpoints = calloc(num_upstreams, sizeof(*k->endpoints))) == NULL)
        goto fail;
    k->num_endpoints = num_upstreams;
    for (size_t i = 0; i < num_upstreams; i++)
        if (upstreams[i] == NULL || gw_parse_addr(upstreams[i], &k->endpoints[i]) != 0 ||
            k->endpoints[i].port == 0) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "bad upstream address '%s'",
                              upstreams[i] ? upstreams[i] : "(null)");
            goto fail_set;
        }
    gw_route *r = &c->routes[0];
    if ((r->name = strdup("default")) == NULL || (r->prefix = strdup("/")) == NULL)
        goto fail;
    r->prefix_len = 1;
    r->cluster = 0;
    r->sec.auth = GW_AUTH_NONE; /* no security section in the quick mode */
    r->body_max = c->body_max;
    *out = c;
    return 0;
fail:
    rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
fail_set:
    gw_config_free(c);
    return rc;
}

void
gw_config_free(gw_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->num_listeners; i++) {
        free(c->listeners[i].tls_cert);
        free(c->listeners[i].tls_key);
        free(c->listeners[i].tls_client_ca);
    }
    free(c->listeners);
    free(c->trusted_proxies);
    free(c->access_log);
    for (size_t i = 0; i < c->num_clusters; i++) {
        free(c->clusters[i].name);
        free(c->clusters[i].endpoints);
        free(c->clusters[i].health.path);
    }
    gw_security *s = c->security;
    if (s != NULL) {
        free(s->hs256_secret_file);
        free(s->hs256_kid);
        free(s->jwks_file);
        free(s->jwks_url);
        free(s->sm2_alg);
        free(s->issuer);
        free_list(s->audience, s->num_audience);
        free(s->device_keys_dir);
        free(s->identity_header);
        free(s->identity_key_file);
        free_list(s->strip_headers, s->num_strip);
        free(s->rbac_file);
        free_list(s->etcd_endpoints, s->num_etcd);
        free(s->etcd_key);
        free(s->audit_dir);
        free(s->mask_policy);
        free(s);
    }
    free(c->clusters);
    for (size_t i = 0; i < c->num_routes; i++) {
        free(c->routes[i].name);
        free(c->routes[i].host);
        free(c->routes[i].prefix);
        free(c->routes[i].fallback.content_type);
        free(c->routes[i].fallback.body);
    }
    free(c->routes);
    free(c);
}

static bool
str_eq(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

bool
gw_config_same_listeners(const gw_config *a, const gw_config *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->workers != b->workers || a->num_listeners != b->num_listeners ||
        a->admin.port != b->admin.port || strcmp(a->admin.host, b->admin.host) != 0)
        return false;
    for (size_t i = 0; i < a->num_listeners; i++) {
        const gw_listener *x = &a->listeners[i], *y = &b->listeners[i];
        if (x->addr.port != y->addr.port || strcmp(x->addr.host, y->addr.host) != 0 ||
            !str_eq(x->tls_cert, y->tls_cert) || !str_eq(x->tls_key, y->tls_key) ||
            !str_eq(x->tls_client_ca, y->tls_client_ca) || x->client_verify != y->client_verify)
            return false;
    }
    return true;
}
