/* gateway.h: dengbao's API gateway (反向代理网关): configuration, routing, balancing,
 * health, metrics, access log, and the gateway server that ties them to the net layer.
 *
 * Model. A configuration (gw_config, immutable once loaded) names listeners, upstream
 * clusters of endpoints and routes (host + path prefix -> cluster). A running gateway
 * (gw_server) holds one current configuration; SIGHUP loads a new one and swaps it in
 * atomically (requests that started keep the one they started with; a bad file is refused
 * and the old one stays). Each listener is a net_server in streaming mode; each of its workers
 * has its own upstream connection pools (net_pool) per endpoint. Health (active checks and
 * passive ejection) is shared by all workers through atomics in gw_cluster_state.
 *
 * Threading: gw_config_* and gw_route_match are pure (any thread). gw_cluster_state and
 * gw_metrics are shared by workers (atomics, per-worker shards). gw_accesslog has one buffer
 * per worker (each used by its worker thread only).
 *
 * Errors: 0 or a negative DBAO_E* code, detail in dbao_err.
 */
#ifndef DENGBAO_GATEWAY_H
#define DENGBAO_GATEWAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"
#include "dengbao/net.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- configuration ---- */

typedef struct gw_addr {
    char host[64]; /* numeric IPv4 or IPv6, no brackets */
    uint16_t port;
} gw_addr;

typedef struct gw_cidr {
    uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d (IPv4-mapped) */
    uint8_t prefix;   /* 0..128 over the mapped form (an IPv4 /24 is stored as /120) */
} gw_cidr;

typedef struct gw_listener {
    gw_addr addr;
    char *tls_cert; /* NULL: plain HTTP */
    char *tls_key;
    char *tls_client_ca; /* NULL: no client certificates */
    net_client_verify client_verify;
} gw_listener;

typedef enum gw_balance {
    GW_BALANCE_ROUND_ROBIN = 0,
    GW_BALANCE_LEAST_CONN = 1,
} gw_balance;

typedef struct gw_health_opts {
    bool enabled;                 /* active checks */
    char *path;                   /* GET path; default "/healthz" */
    uint32_t interval_ms;         /* default 2000 */
    uint32_t timeout_ms;          /* default 1000 */
    unsigned healthy_threshold;   /* consecutive passes to come back; default 2 */
    unsigned unhealthy_threshold; /* consecutive failures to go down; default 3 */
    unsigned passive_failures;    /* consecutive request failures (connect error, timeout,
                                     5xx from 502-504) that eject an endpoint; default 5; 0 off */
    uint32_t passive_eject_ms;    /* ejection time; default 10000 */
} gw_health_opts;

typedef enum gw_auth { GW_AUTH_JWT = 0, GW_AUTH_NONE = 1 } gw_auth;
typedef enum gw_device_mode {
    GW_DEVICE_NONE = 0,
    GW_DEVICE_TOKEN = 1,
    GW_DEVICE_REQUEST = 2,
    GW_DEVICE_MTLS = 3
} gw_device_mode;
typedef enum gw_audit_mode { GW_AUDIT_DURABLE = 0, GW_AUDIT_ASYNC = 1 } gw_audit_mode;
typedef enum gw_fallback_mode {
    GW_FALLBACK_FAIL = 0,
    GW_FALLBACK_STATIC = 1,
    GW_FALLBACK_UPSTREAM = 2,
    GW_FALLBACK_CACHE = 3
} gw_fallback_mode;

typedef struct gw_limit { /* a token bucket (zt_ratelimit_opts) */
    bool enabled;
    uint32_t rate, period_ms, burst;
    size_t max_keys; /* 0: 65536 */
} gw_limit;

/* A cluster's circuit breaker (zt_breaker_opts without the callback); enabled=false: none.
 * The parser fills every default: window 30 s, buckets 30, min_requests 20, error 150 permille,
 * slow 0 (off; needs slow_ms), open 30 s, probes 1, successes = probes. */
typedef struct gw_breaker_conf {
    bool enabled;
    uint32_t window_ms, buckets, min_requests, error_permille, slow_permille, slow_ms, open_ms,
        probes, successes;
} gw_breaker_conf;

/* What a route answers while its cluster's breaker is open. */
typedef struct gw_fallback {
    gw_fallback_mode mode;
    int status;         /* static; default 200 */
    char *content_type; /* static; default "text/plain" */
    char *body;         /* static: inline or loaded from body_file (parser loads it) */
    size_t body_len;
    size_t cluster;        /* upstream: index into gw_config.clusters */
    uint32_t cache_ttl_ms; /* cache; default 300000 (only GET 200 answers are cached) */
    size_t cache_max;      /* cache; default 1 MiB */
} gw_fallback;

/* A route's zero-trust settings (meaningful when gw_config.security is set). */
typedef struct gw_route_sec {
    gw_auth auth;          /* default GW_AUTH_JWT */
    gw_device_mode device; /* default GW_DEVICE_NONE; != none requires auth jwt */
    bool rbac;             /* default true for auth jwt, false for auth none */
    gw_limit limit;        /* per route */
    gw_audit_mode audit;   /* default security->audit_mode */
    bool mask;             /* response masking (needs security->mask_policy) */
    size_t mask_body_max;  /* default 1 MiB */
    bool mask_over_pass;   /* over the limit: pass unmasked (true) or block 502 (false) */
} gw_route_sec;

/* The top-level `security:` section (docs/gateway.md "Security (zero trust)"). Paths are
 * resolved against the configuration file's folder; key files are NOT read by the parser. */
typedef struct gw_security {
    unsigned algs; /* zt_alg bits (ZT_ALG_*) */
    char *hs256_secret_file, *hs256_kid;
    char *jwks_file, *jwks_url;
    uint32_t jwks_refresh_ms; /* default 300000 */
    char *sm2_alg;            /* default "SM2" */
    char *issuer;
    char **audience;
    size_t num_audience;
    uint32_t clock_skew_s; /* default 30 */
    size_t max_token;      /* default 8 KiB, max 16 KiB */
    char *device_keys_dir;
    uint32_t request_window_s;     /* default 300 */
    size_t nonce_cache, sig_cache; /* defaults 262144, 65536 */
    char *identity_header;         /* default "X-Auth-Identity" */
    char *identity_key_file;       /* required */
    char **strip_headers;
    size_t num_strip;
    char *rbac_file; /* rbac_file and etcd_* are exclusive; neither: deny by default */
    char **etcd_endpoints;
    size_t num_etcd;
    char *etcd_key;
    uint32_t etcd_timeout_ms; /* default 2000 */
    gw_limit subject_limit, ip_limit;
    char *audit_dir; /* required */
    gw_audit_mode audit_mode;
    size_t audit_queue; /* default 65536 */
    char *mask_policy;
} gw_security;

typedef struct gw_cluster {
    char *name;
    gw_addr *endpoints;
    size_t num_endpoints;
    gw_balance balance;
    unsigned keepalive;          /* idle connections per endpoint per worker; default 64 */
    unsigned max_conns;          /* per endpoint per worker; 0 unlimited */
    uint32_t connect_timeout_ms; /* default 2000 */
    uint32_t read_timeout_ms;    /* default 30000 */
    uint32_t idle_timeout_ms;    /* default 60000 */
    unsigned retries;            /* extra attempts on another endpoint; default 1 */
    gw_health_opts health;
    gw_breaker_conf breaker; /* enabled=false: no breaker */
} gw_cluster;

typedef struct gw_route {
    char *name;           /* default "route<N>" */
    char *host;           /* NULL or "*": any host; "*.example.com": a wildcard suffix;
                             else exact, ASCII case-insensitive, without port */
    char *prefix;         /* path prefix, starts with '/'; default "/" */
    size_t cluster;       /* index into gw_config.clusters */
    bool strip_prefix;    /* forward the path without the prefix (keeping a leading '/') */
    size_t body_max;      /* request body limit; default: the config's body_max */
    uint32_t timeout_ms;  /* whole-exchange deadline; 0: none beyond the cluster's */
    size_t prefix_len;    /* strlen(prefix), set by the parser (0: computed per match) */
    size_t host_len;      /* strlen(host) or 0, set by the parser (0: computed per match) */
    gw_route_sec sec;     /* zero trust (used when gw_config.security is set) */
    gw_fallback fallback; /* when the cluster's breaker is open */
} gw_route;

typedef struct gw_config {
    unsigned workers; /* default 1 */
    gw_listener *listeners;
    size_t num_listeners;
    gw_addr admin; /* /metrics and /healthz; port 0: none */
    size_t header_max, headers_num_max, body_max;
    uint32_t header_timeout_ms, body_timeout_ms, idle_timeout_ms, drain_timeout_ms;
    gw_cidr *trusted_proxies; /* hops whose X-Forwarded-For is believed */
    size_t num_trusted;
    char *access_log; /* file path, "-" for stdout, NULL: off */
    gw_cluster *clusters;
    size_t num_clusters;
    gw_route *routes; /* in match order (see gw_route_match) */
    size_t num_routes;
    gw_security *security; /* NULL when the `security:` section is absent */
} gw_config;

/* gw_config_parse reads a YAML configuration (libyaml) from memory; gw_config_load from a file.
 * Unknown keys, wrong types, duplicate keys, unknown cluster names, bad addresses, duplicate
 * names and out-of-range numbers are errors naming the line ("gateway.yaml:12: unknown key
 * 'timeuot'"). Returns 0 with *out set, DBAO_EFORMAT, DBAO_ENOMEM (or -errno reading). */
int gw_config_parse(gw_config **out, const char *yaml, size_t len, const char *name, dbao_err *err);
int gw_config_load(gw_config **out, const char *path, dbao_err *err);

/* gw_config_quick builds the configuration of the quick mode: one listener, one cluster of
 * one or more upstreams, one route "/" (tls_cert/key may be NULL). */
int gw_config_quick(gw_config **out, const char *listen, const char *const *upstreams,
                    size_t num_upstreams, unsigned workers, const char *tls_cert,
                    const char *tls_key, dbao_err *err);

void gw_config_free(gw_config *c);

/* gw_config_same_listeners tells whether two configurations have the same listeners, worker
 * count and admin address (a reload may change everything else). */
bool gw_config_same_listeners(const gw_config *a, const gw_config *b);

/* gw_parse_addr parses "host:port" or "[v6]:port". Returns 0 or DBAO_EFORMAT. */
int gw_parse_addr(const char *s, gw_addr *out);

/* ---- routing ---- */

/* gw_path_normalize makes the path used for routing and forwarding: percent-escapes of
 * unreserved characters decoded (%41 -> A), other escapes kept with upper-case hex, "//"
 * merged, "." and ".." segments resolved. Refused (DBAO_EFORMAT): no leading '/', ".." above
 * the root, an encoded '/', '\\' or NUL (%2F, %5C, %00), a literal '\\', a bad escape, control
 * bytes.
 * DBAO_ERANGE if it does not fit in out_cap bytes (with the NUL). */
int gw_path_normalize(const char *path, char *out, size_t out_cap);

/* gw_route_match returns the index of the route for (host, normalized path), or -1. Routes
 * with an exact host win over wildcard hosts, which win over any-host routes; among those,
 * the longest matching prefix wins; a prefix matches at a segment boundary ("/api" matches
 * "/api" and "/api/x", not "/apix"; a prefix ending in '/' matches what starts with it).
 * `host` may carry a port, which is ignored; NULL matches any-host routes only. */
int gw_route_match(const gw_config *c, const char *host, const char *path);

/* ---- balancing and health (shared by every worker) ---- */

typedef struct gw_endpoint_state {
    atomic_bool healthy;                 /* active-check verdict; true until proven otherwise */
    atomic_uint check_passes;            /* consecutive (active) */
    atomic_uint check_failures;          /* consecutive (active) */
    atomic_uint failures;                /* consecutive request failures (passive) */
    atomic_uint_fast64_t eject_until_ms; /* passive ejection, monotonic ms; 0 none */
    atomic_uint_fast64_t errors; /* failed requests (passive reports); the success path writes
                                    nothing shared, so workers do not contend on it */
} gw_endpoint_state;

typedef struct gw_cluster_state {
    const gw_cluster *cluster;
    gw_endpoint_state *eps; /* num_endpoints */
    atomic_uint rr;         /* round-robin cursor */
} gw_cluster_state;

int gw_cluster_state_new(gw_cluster_state **out, const gw_cluster *c);
void gw_cluster_state_free(gw_cluster_state *s);

/* gw_balance_pick chooses an endpoint among the available ones (healthy and not ejected),
 * skipping those whose bit is set in `exclude` (endpoints already tried; bit i = endpoint i,
 * endpoints beyond 64 are never excluded). `active` gives this worker's in-flight exchanges
 * per endpoint (least-connections; ties go round-robin). Returns the index or -1 if none is
 * available. */
int gw_balance_pick(gw_cluster_state *s, const unsigned *active, uint64_t exclude, uint64_t now_ms);

/* Passive health: report each request's outcome (ok: a response other than 502-504). */
void gw_health_report(gw_cluster_state *s, size_t ep, bool ok, uint64_t now_ms);
/* Active health: report one check's outcome. Returns true if the verdict changed. */
bool gw_health_check_result(gw_cluster_state *s, size_t ep, bool ok);

/* ---- request helpers ---- */

/* gw_cidr_parse parses "10.0.0.0/8", "::1/128" or a bare address. 0 or DBAO_EFORMAT. */
int gw_cidr_parse(const char *s, gw_cidr *out);
/* gw_cidr_match tells whether a numeric address is inside any of the ranges. */
bool gw_cidr_match(const gw_cidr *v, size_t n, const char *addr);

/* gw_client_addr decides the client's address: the peer's, unless the peer is a trusted
 * proxy, in which case X-Forwarded-For (xff, may be NULL; several headers joined with ", ")
 * is walked from the right past trusted hops; the first untrusted or the leftmost address
 * wins. Malformed entries stop the walk (the last good address wins). Writes the address into
 * out (64 bytes) and, into xff_out (xff_cap bytes), the X-Forwarded-For to send upstream:
 * the received list only if the peer is trusted, then the peer's address. Returns 0 or
 * DBAO_ERANGE. */
int gw_client_addr(const gw_cidr *trusted, size_t num_trusted, const char *peer, const char *xff,
                   char out[64], char *xff_out, size_t xff_cap);

/* W3C Trace Context. gw_traceparent_parse accepts version 00 (and later versions by their
 * first four fields), refuses all-zero ids and bad hex (DBAO_EFORMAT). gw_traceparent_child
 * writes the header to send upstream ("00-<trace>-<new span>-<flags>", 55 chars + NUL) keeping
 * the trace id, or a new trace (random ids, flags 01) when `in` is NULL or invalid; the
 * trace id (32 hex + NUL) goes to trace_id. */
typedef struct gw_traceparent {
    uint8_t trace_id[16];
    uint8_t parent_id[8];
    uint8_t flags;
} gw_traceparent;
int gw_traceparent_parse(const char *s, gw_traceparent *out);
void gw_traceparent_child(const char *in, char out[56], char trace_id[33]);

/* ---- metrics (Prometheus text format 0.0.4) ---- */

typedef struct gw_metrics gw_metrics;

/* Slots are stable across reloads: the same route or cluster name keeps its slot (counters
 * continue). At most GW_METRICS_SLOTS routes and clusters each. */
#define GW_METRICS_SLOTS 256
int gw_metrics_new(gw_metrics **out, unsigned workers);
void gw_metrics_free(gw_metrics *m);
/* gw_metrics_route_slot / _cluster_slot return the slot for a name (created on first use;
 * -1 when full, then the "other" slot 0 is used). Not on the hot path: call at config load. */
int gw_metrics_route_slot(gw_metrics *m, const char *name);
int gw_metrics_cluster_slot(gw_metrics *m, const char *name);

/* Hot path, by the worker's own thread (per-worker shards, no locks, no shared writes). */
void gw_metrics_request(gw_metrics *m, unsigned worker, int route_slot, int status,
                        uint64_t latency_us, uint64_t bytes_in, uint64_t bytes_out);
void gw_metrics_upstream_error(gw_metrics *m, unsigned worker, int cluster_slot,
                               int kind /* GW_UPERR_* */);
enum {
    GW_UPERR_CONNECT = 0,
    GW_UPERR_TIMEOUT = 1,
    GW_UPERR_RESET = 2,
    GW_UPERR_PROTOCOL = 3,
    GW_UPERR_KINDS = 4
};
void gw_metrics_connections(gw_metrics *m, unsigned worker, int delta);
/* pool sizes: set by each worker for each cluster slot (idle, active) */
void gw_metrics_pool(gw_metrics *m, unsigned worker, int cluster_slot, size_t idle, size_t active);

/* gw_metrics_render appends the exposition text to a malloc'd buffer (*out, *len); the
 * caller frees it. Histogram buckets for latency (seconds): .0005 .001 .0025 .005 .01 .025
 * .05 .1 .25 .5 1 2.5 5 10 +Inf. Families: dengbao_gateway_requests_total{route,code},
 * dengbao_gateway_request_duration_seconds{route}, dengbao_gateway_upstream_errors_total
 * {cluster,kind}, dengbao_gateway_pool_connections{cluster,state}, dengbao_gateway_
 * connections, dengbao_gateway_bytes_{received,sent}_total. `extra` (may be NULL) is
 * appended as is (endpoint health from the server). */
int gw_metrics_render(gw_metrics *m, const char *extra, char **out, size_t *len);

/* ---- access log (JSON lines) ---- */

typedef struct gw_accesslog gw_accesslog;

typedef struct gw_access_rec {
    uint64_t ts_us;     /* wall clock at the start of the request */
    const char *client; /* client address (gw_client_addr) */
    const char *method;
    const char *path;     /* the path only: queries can carry personal data and are not logged */
    const char *host;     /* may be NULL */
    const char *route;    /* may be NULL (no route) */
    const char *upstream; /* "host:port" or NULL */
    const char *trace_id; /* 32 hex */
    const char *error;    /* short static reason for gateway-made errors, or NULL */
    const char *identity; /* authenticated subject or mTLS CN, or NULL */
    int status;
    int upstream_status; /* 0 if none */
    uint64_t duration_us, upstream_us;
    uint64_t bytes_in, bytes_out;
    unsigned attempts;
    bool tls;
} gw_access_rec;

/* gw_accesslog_open opens `path` for appending (0640, created if absent) or stdout for "-".
 * One buffer per worker; lines are written with one write(2) per flush (O_APPEND). */
int gw_accesslog_open(gw_accesslog **out, const char *path, unsigned workers, dbao_err *err);
/* by worker `worker`'s thread only; strings JSON-escaped; flushes when the buffer passes 32 KiB */
void gw_accesslog_write(gw_accesslog *l, unsigned worker, const gw_access_rec *r);
/* by worker `worker`'s thread (timer, every second; at stop) */
void gw_accesslog_flush(gw_accesslog *l, unsigned worker);
/* gw_accesslog_reopen reopens the file (log rotation, SIGUSR1); any thread. */
int gw_accesslog_reopen(gw_accesslog *l, dbao_err *err);
/* flushes nothing: call gw_accesslog_flush for each worker first */
void gw_accesslog_close(gw_accesslog *l);
/* gw_accesslog_dropped returns how many lines were lost to failed writes so far (any thread;
 * each failure is also reported on stderr, at most once a minute). */
uint64_t gw_accesslog_dropped(const gw_accesslog *l);

/* ---- the built-in demo upstream (make run) ---- */

/* gw_demo_start serves sample JSON patient records (fictitious, generated) on host:port
 * (port 0: ephemeral) with its own net_server: GET /patients, /patients/<id>, /healthz,
 * POST /echo. *out is the server (net_server_free stops it). */
int gw_demo_start(net_server **out, const char *host, uint16_t port, dbao_err *err);

/* ---- the gateway server ----
 *
 * A gw_server runs a configuration: one net_server (streaming mode) per listener, an admin
 * net_server (/healthz, /metrics), one health-check thread, and per worker the upstream
 * pools. Each request goes through a chain of steps (as nginx phases / h2o handlers): the
 * gateway normalises the path and picks the route, then each step's on_request runs in order
 * (identity, policy, rate limits... in the next issue), then the proxy forwards to the
 * route's cluster; the upstream's response head and body pass through the steps that asked
 * for them (masking), and every step's on_log runs once the answer is complete (audit).
 * Steps run on the worker's loop thread. */

typedef struct gw_server gw_server;
typedef struct gw_ctx gw_ctx;

enum {
    GW_NEXT = 0,  /* go on with the next step */
    GW_DONE = 1,  /* the step answered (gw_ctx_respond); stop the chain */
    GW_ASYNC = 2, /* the step will call gw_ctx_resume later, on the worker's loop thread */
};

typedef struct gw_step {
    const char *name;
    /* after routing, before the upstream (may be NULL): GW_NEXT, GW_DONE or GW_ASYNC */
    int (*on_request)(gw_ctx *ctx, void *arg);
    /* the upstream's response head (status >= 200) arrived (may be NULL); the step may add
     * response headers and ask for the body with gw_ctx_filter_body */
    void (*on_response_head)(gw_ctx *ctx, int status, void *arg);
    /* the body, for steps that asked: bytes in order, then last = true once (len may be 0);
     * the step passes on what it wants sent with gw_ctx_emit (0 or a DBAO_E* code, which
     * aborts the response) */
    int (*on_response_body)(gw_ctx *ctx, const uint8_t *data, size_t len, bool last, void *arg);
    /* the exchange is over (answered, failed or aborted), once per request (may be NULL) */
    void (*on_log)(gw_ctx *ctx, void *arg);
    void *arg;
    /* run on each worker's own thread when it starts / before its loop closes (may be NULL):
     * a step creates and closes its per-worker uv handles there. `worker` is 0..N-1 as
     * gw_ctx_worker returns (N = gw_server_num_workers). on_worker_stop runs after the last
     * request of that worker has been logged. */
    void (*on_worker_start)(unsigned worker, struct uv_loop_s *loop, void *arg);
    void (*on_worker_stop)(unsigned worker, struct uv_loop_s *loop, void *arg);
} gw_step;

typedef struct gw_server_opts {
    const char *config_path; /* for gw_server_reload_file; NULL: reload needs a config */
    const gw_step *steps;    /* copied */
    size_t num_steps;
    bool log_ready; /* print "gateway: listening on http://H:P" per listener on stderr */
    /* a cluster's circuit breaker changed state (from, to: zt_circuit values); called from any
     * worker thread, without locks held (may be NULL) */
    void (*on_breaker)(void *arg, const char *cluster, int from, int to);
    void *breaker_arg;
    /* more lines for /metrics (Prometheus text, with # HELP and # TYPE), appended to `out`;
     * called on the admin thread for each scrape (may be NULL). 0 or DBAO_ENOMEM. */
    int (*metrics_extra)(void *arg, dbao_buf *out);
    void *metrics_arg;
} gw_server_opts;

/* gw_server_new takes ownership of cfg (also on failure), binds every listener and the admin
 * address (so that connections queue from here on) and loads the TLS material. Returns 0,
 * DBAO_EINVAL, DBAO_EFORMAT (TLS files), -errno (bind), DBAO_ENOMEM. */
int gw_server_new(gw_server **out, gw_config *cfg, const gw_server_opts *o, dbao_err *err);
int gw_server_start(gw_server *s, dbao_err *err);

/* gw_server_reload swaps in a new configuration (taken, also on failure): routes, clusters,
 * limits of routes, trusted proxies, the access log path. Requests already started finish
 * with the configuration they started with; idle upstream connections of the old one are
 * closed. A configuration that changes the listeners, workers or admin address is refused
 * (DBAO_EINVAL: restart for those). gw_server_reload_file loads opts.config_path first. Any
 * thread but a signal handler. */
int gw_server_reload(gw_server *s, gw_config *cfg, dbao_err *err);
int gw_server_reload_file(gw_server *s, dbao_err *err);

/* gw_server_reopen_logs reopens the access log (rotation). */
int gw_server_reopen_logs(gw_server *s, dbao_err *err);

/* gw_server_stop begins a graceful stop (async-signal-safe); gw_server_wait waits for it;
 * gw_server_free stops, waits and frees (NULL: no-op). */
void gw_server_stop(gw_server *s);
void gw_server_wait(gw_server *s);
void gw_server_free(gw_server *s);

/* the bound ports (useful with port 0) */
uint16_t gw_server_listener_port(const gw_server *s, size_t i);
uint16_t gw_server_admin_port(const gw_server *s);

/* gw_server_num_workers returns the number of workers (listeners * workers), i.e. the range
 * of gw_ctx_worker and of the on_worker_start hook's index. */
unsigned gw_server_num_workers(const gw_server *s);

/* ---- request context, for steps (worker loop thread only) ---- */

net_request *gw_ctx_request(gw_ctx *ctx);
const gw_route *gw_ctx_route(const gw_ctx *ctx);
const char *gw_ctx_path(const gw_ctx *ctx);     /* normalised path */
const char *gw_ctx_client(const gw_ctx *ctx);   /* decided client address */
const char *gw_ctx_trace_id(const gw_ctx *ctx); /* 32 hex */
unsigned gw_ctx_worker(const gw_ctx *ctx);      /* 0..listeners*workers-1 */
int gw_ctx_status(const gw_ctx *ctx);           /* the status sent (0 if none yet) */
/* the identity logged for the request (copied, at most 255 bytes) */
void gw_ctx_set_identity(gw_ctx *ctx, const char *identity);
/* a header for the upstream request (a step's verdict, e.g. X-Auth-Identity); name a token,
 * value without CR/LF/NUL; a header of that name from the client is removed. DBAO_EINVAL. */
int gw_ctx_add_upstream_header(gw_ctx *ctx, const char *name, const char *value);
/* a header for the client's response (on_request or on_response_head) */
int gw_ctx_add_response_header(gw_ctx *ctx, const char *name, const char *value);
/* answer from a step (on_request, then return GW_DONE, or after GW_ASYNC before resume) */
int gw_ctx_respond(gw_ctx *ctx, int status, const char *content_type, const void *body, size_t len);
/* after GW_ASYNC: continue the chain (GW_NEXT) or stop it (GW_DONE, after gw_ctx_respond) */
void gw_ctx_resume(gw_ctx *ctx, int result);
/* from on_response_head: a header of the upstream's response (the first of that name,
 * case-insensitive), or NULL. When a step filters the body, the upstream's ETag, Content-MD5,
 * Digest, Content-Digest, Repr-Digest and Accept-Ranges are not sent on (they describe bytes
 * the client will not get). */
const char *gw_ctx_response_header(const gw_ctx *ctx, const char *name);
/* from on_response_head: this step sees the body (the response is then sent chunked) */
void gw_ctx_filter_body(gw_ctx *ctx);
/* from on_response_body: pass bytes on to the next filter or the client */
int gw_ctx_emit(gw_ctx *ctx, const void *data, size_t len);
/* one pointer per step for the step's own state (index = the step's position) */
void gw_ctx_set_user(gw_ctx *ctx, size_t step, void *p);
void *gw_ctx_user(const gw_ctx *ctx, size_t step);

/* The authenticated principal, set by the identity step (borrowed pointer: the step keeps the
 * storage alive until on_log has run); NULL before it is set and for auth none. The last-good
 * cache keys answers by the principal's sub. */
typedef struct gw_principal {
    const char *sub;
    const char *const *roles;
    size_t num_roles;
    const char *device; /* base64url SM3 thumbprint of the device key, or NULL */
} gw_principal;
void gw_ctx_set_principal(gw_ctx *ctx, const gw_principal *p);
const gw_principal *gw_ctx_principal(const gw_ctx *ctx);

/* gw_ctx_read_body buffers the whole request body (at most the route's body_max) before the
 * upstream sees it. `done` runs once, on the loop thread, after on_request has returned: with
 * status 0 and the bytes (len 0 without a body; valid until the request ends), or with a
 * negative DBAO_E* status and no bytes (DBAO_ERANGE over body_max: the gateway answers 413;
 * -ETIMEDOUT: 408; DBAO_EIO: the client is gone; others: 400/500). After a failure the step
 * only cleans up: gw_ctx_resume and gw_ctx_respond are ignored, the gateway answers. The step
 * returns GW_ASYNC from on_request after calling this and calls gw_ctx_resume from `done` (on
 * success). The proxy then forwards exactly those bytes with Content-Length framing (retries
 * resend them). From on_request only; once per request. Returns 0, DBAO_EINVAL (wrong time,
 * twice). */
int gw_ctx_read_body(gw_ctx *ctx,
                     void (*done)(gw_ctx *ctx, int status, const uint8_t *body, size_t len,
                                  void *arg),
                     void *arg);

/* Details for on_log (audit): the gateway's own error reason (static string) or NULL; the
 * upstream status (0 none); whether the answer came from a fallback ("static", "upstream",
 * "cache", "fail") or NULL; the method; the peer (TLS facts, certificate hash). */
const char *gw_ctx_error(const gw_ctx *ctx);
int gw_ctx_upstream_status(const gw_ctx *ctx);
const char *gw_ctx_fallback(const gw_ctx *ctx);
const char *gw_ctx_method(const gw_ctx *ctx);
const net_peer *gw_ctx_peer(const gw_ctx *ctx);

/* Client headers the upstream must not see: an exact name (ASCII case-insensitive) or, with
 * prefix = true, every header whose name starts with it ("X-Auth-"). From on_request (at most
 * 256 per request). 0 or DBAO_EINVAL. */
int gw_ctx_remove_upstream_header(gw_ctx *ctx, const char *name, bool prefix);
/* The worker's libuv loop (for steps that hand completions from other threads back to the
 * loop: create one uv_async per worker in on_worker_start). */
struct uv_loop_s *gw_ctx_loop(const gw_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_GATEWAY_H */
