/* ztgw.h: the zero-trust steps of the gateway (private to the gateway and its command line).
 *
 * A gw_zt is the runtime built from a configuration's `security:` section (gateway.h,
 * gw_security): the token key set (HS256 secret file, JWKS file, JWKS URL), the enrolled device
 * keys, the verified-signature and nonce caches, the HMAC-SM3 key of X-Auth-Identity, the RBAC
 * policy slot (file or etcd), the rate-limit tables and the audit log (borrowed). It gives the
 * gateway one step (gw_zt_step) that does, per request and in this order: strip the client's
 * identity headers, the client-IP rate limit, the bearer token, the device binding, the signed
 * X-Auth-Identity header, RBAC, the subject and route rate limits, and the gateway.access
 * audit record (durable routes wait for it; a record that cannot be written refuses the request
 * with 503). The operator's guide is docs/gateway-zt.md.
 *
 * Threading: gw_zt_new / gw_zt_free / gw_zt_reload from the main thread (reload may run while
 * workers serve: it swaps policies and key sets atomically). The step runs on the workers' loop
 * threads; gw_zt_on_breaker from any thread. One background thread refreshes the JWKS URL and
 * watches the JWKS file's mtime (when either is configured).
 */
#ifndef DENGBAO_GATEWAY_ZTGW_H
#define DENGBAO_GATEWAY_ZTGW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/audit.h"
#include "dengbao/common.h"
#include "dengbao/gateway.h"
#include "dengbao/zt.h"

typedef struct gw_zt gw_zt;

/* The response-masking facts of one request, for the gateway.mask record (H4's step fills
 * them through the getter passed in gw_zt_opts; NULL getter: no gateway.mask records). */
typedef struct gw_zt_mask_facts {
    bool masked;       /* the response went through the masking step */
    uint64_t fields;   /* fields masked by path */
    uint64_t findings; /* detector findings masked */
    uint32_t types;    /* MASK_TYPE_BIT set of the types masked (mask.h) */
    bool over_limit;   /* the body was over the route's mask.body_max */
    const char *error; /* why the masker stopped the response (static), or NULL */
} gw_zt_mask_facts;

typedef struct gw_zt_opts {
    audit_log *log;       /* required (borrowed; must outlive the gw_zt) */
    unsigned num_workers; /* 0: cfg->num_listeners * cfg->workers */
    bool no_threads;      /* tests: no background refresher thread */
    /* optional: the masking facts of a request (called from on_log, loop thread) */
    bool (*mask_facts)(gw_ctx *ctx, gw_zt_mask_facts *out, void *arg);
    void *mask_arg;
} gw_zt_opts;

/* gw_zt_new builds the runtime from cfg->security (which must not be NULL) and the routes of
 * cfg (borrowed during the call only; the step reads each request's route from its context).
 * Every key file must be a regular file of mode 0600 or stricter (else DBAO_EINVAL naming the
 * field); secrets are wiped after use. Returns 0, DBAO_EINVAL, DBAO_EFORMAT (a JWKS, device key
 * or policy that does not parse), DBAO_EKEY, -errno reading a file, DBAO_ENOMEM. */
int gw_zt_new(gw_zt **out, const gw_config *cfg, const gw_zt_opts *opts, dbao_err *err);

/* gw_zt_free stops the refresher thread and frees everything (NULL is a no-op). The gateway
 * server using its step must have been freed first. */
void gw_zt_free(gw_zt *z);

/* gw_zt_step fills *out with the zero-trust step for chain position `index` (its per-request
 * slot, gw_ctx_set_user; index < 8). */
void gw_zt_step(gw_zt *z, gw_step *out, size_t index);

/* gw_zt_reload re-reads the RBAC file, the JWKS file and the device keys (SIGHUP). Each part
 * that fails keeps what was running and is reported in err (and on stderr, and as a
 * gateway.policy audit record for the RBAC policy); returns the first failure or 0. */
int gw_zt_reload(gw_zt *z, dbao_err *err);

/* gw_zt_on_breaker is a gw_server_opts.on_breaker callback (arg: the gw_zt): it writes a
 * gateway.breaker audit record (asynchronous) for each breaker state change. */
void gw_zt_on_breaker(void *arg, const char *cluster, int from, int to);

/* gw_zt_check validates the security files of a configuration for `dengbao gateway --check`:
 * the key files readable and 0600, the JWKS file and device keys parse, the RBAC file parses,
 * the identity key long enough. 0 or the first error. */
int gw_zt_check(const gw_config *cfg, dbao_err *err);

/* Counters (any thread). */
typedef struct gw_zt_stats {
    uint64_t allowed, denied_401, denied_403, denied_429, refused_503;
    uint64_t audit_records, audit_failures, audit_queue_full;
    uint64_t jwks_fetches, jwks_fetch_failures, reloads_failed;
} gw_zt_stats;
void gw_zt_get_stats(const gw_zt *z, gw_zt_stats *out);
/* gw_zt_metrics appends the counters as Prometheus text (gw_server_opts.metrics_extra; arg is
 * the gw_zt): dengbao_gateway_zt_decisions_total{result}, ..._audit_records_total,
 * ..._audit_failures_total, ..._audit_queue_full_total, ..._jwks_fetches_total,
 * ..._jwks_fetch_failures_total, ..._reload_failures_total. */
int gw_zt_metrics(void *arg, dbao_buf *out);

/* ---- X-Auth-Identity ----
 *
 *   v1;sub=<pct>;roles=<pct>,<pct>;device=<b64url or ->;iat=<unix s>;trace=<32 hex>;sig=<b64url>
 *
 * Values are percent-encoded (every byte outside A-Z a-z 0-9 - . _ ~ as %XX, upper-case hex);
 * roles are separated by ',' (an empty list is "roles=" with nothing after it). sig is the
 * unpadded base64url of HMAC-SM3(key, every byte before ";sig="). */

#define GW_ZT_IDENTITY_MAX 8192

/* gw__zt_identity_make writes the header value into *out (reset first). */
int gw__zt_identity_make(dbao_buf *out, const gm_hmac_sm3_ctx *keyed, const char *sub,
                         const char *const *roles, size_t num_roles, const char *device,
                         int64_t iat, const char *trace);

/* What gw__zt_identity_verify found (decoded values, NUL-terminated). */
typedef struct gw_zt_identity {
    char sub[ZT_CLAIM_STR_MAX];
    size_t num_roles;
    char roles[ZT_ROLES_MAX][ZT_ROLE_MAX];
    char device[64];
    int64_t iat;
    char trace[33];
} gw_zt_identity;

/* gw__zt_identity_verify checks a header value with the key: the syntax, the MAC (constant
 * time), and iat within [now - max_age, now + 5] when max_age > 0. 0, DBAO_EFORMAT or
 * DBAO_EVERIFY (bad MAC, too old, from the future). out may be NULL. */
int gw__zt_identity_verify(gw_zt_identity *out, const uint8_t *key, size_t key_len,
                           const char *value, size_t len, int64_t now, int64_t max_age,
                           dbao_err *err);

/* gw__zt_read_secret reads a secret file (raw bytes, one trailing LF dropped): a regular file
 * of mode 0600 or stricter, at least min_len bytes. `what` names the configuration field in
 * messages. *out is freed with dbao_free_secret(*out, *len). */
int gw__zt_read_secret(uint8_t **out, size_t *len, const char *path, const char *what,
                       size_t min_len, dbao_err *err);

#endif
