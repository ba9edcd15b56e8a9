/* coord.h: the saga coordinator's private interfaces (src/saga only): the parsed transaction
 * spec (spec.c), the participant caller (caller.c), the coordinator object (coord.c), its
 * HTTP API (api.c) and its configuration (config.c). The public store interface is
 * include/dengbao/saga.h; see docs/saga.md for the model and the HTTP contract.
 *
 * Threading: a saga_coord runs one engine thread that owns the store, the curl multi handle
 * and every in-memory transaction. Every other thread (HTTP workers, tests) talks to it only
 * through saga_coord_request, which queues the request and wakes the engine; the answer comes
 * back through the request's callback on the engine thread (or the audit writer thread).
 */
#ifndef DENGBAO_SAGA_COORD_H
#define DENGBAO_SAGA_COORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/audit.h"
#include "dengbao/common.h"
#include "dengbao/saga.h"

/* ---- spec (spec.c) ------------------------------------------------------------------------ */

#define SAGA_URL_MAX   2048
#define SAGA_NAME_MAX  64
#define SAGA_TRACE_MAX 32 /* 32 lowercase hex digits (W3C trace-id) */
#define SAGA_ALLOW_MAX 64

typedef enum saga_recovery { SAGA_BACKWARD = 0, SAGA_FORWARD = 1 } saga_recovery;

typedef struct saga_spec_step {
    char name[SAGA_NAME_MAX + 1];
    uint32_t group;
    uint8_t recovery; /* saga_recovery */
    char *action;     /* URL */
    char *compensate; /* URL */
    char *payload;    /* compact JSON text of the payload (default "{}") */
    uint32_t timeout_ms;
} saga_spec_step;

typedef struct saga_spec {
    char gid[SAGA_GID_MAX + 1];
    char trace_id[SAGA_TRACE_MAX + 1]; /* "" if none */
    uint32_t timeout_ms;
    uint32_t retry_initial_ms, retry_max_ms, max_attempts;
    saga_spec_step *steps;
    size_t num_steps;
    char *canonical; /* canonical JSON (sorted keys, compact, defaults filled, no gid) */
    size_t canonical_len;
} saga_spec;

typedef struct saga_spec_defaults {
    uint32_t timeout_ms;                                   /* whole transaction; default 30 s */
    uint32_t call_timeout_ms;                              /* per call; default 3 s */
    uint32_t retry_initial_ms, retry_max_ms, max_attempts; /* 100 ms, 5 s, 6 */
    const char *const *allow; /* host:port patterns ("127.0.0.1:*", "*.bank:8080", "*");
                                 NULL/0: every host refused */
    size_t num_allow;
} saga_spec_defaults;

/* saga_spec_parse parses a submitted transaction (JSON, at most SAGA_SPEC_MAX bytes), checks
 * it completely (unknown keys, types, lengths, URLs against the allow-list, groups, no
 * fractional numbers in payloads) and fills *out (saga_spec_free). A missing gid is left
 * empty (the caller generates one). DBAO_EFORMAT with a message naming the field, DBAO_ERANGE
 * (too big), DBAO_ENOMEM. */
int saga_spec_parse(saga_spec *out, const char *json, size_t len, const saga_spec_defaults *d,
                    dbao_err *err);
/* saga_spec_from_canonical: the stored canonical text back (no allow-list check: it passed at
 * submission; the configuration may have changed since, the transaction must still finish). */
int saga_spec_from_canonical(saga_spec *out, const char *gid, const char *json, size_t len,
                             dbao_err *err);
void saga_spec_free(saga_spec *s);
/* saga_gid_valid: [A-Za-z0-9._:-]{1,128} */
bool saga_gid_valid(const char *gid);
/* saga_gid_generate: a new UUIDv7 text (36 bytes + NUL). */
void saga_gid_generate(char out[SAGA_GID_MAX + 1]);
/* saga_allow_match: host:port against one pattern. */
bool saga_allow_match(const char *pattern, const char *hostport);
/* saga_duration_parse: "250ms", "3s", "1m", "2h" -> ms (> 0, <= 30 days). */
int saga_duration_parse(const char *s, uint64_t *ms);

/* ---- caller (caller.c): libcurl multi on the engine thread --------------------------------- */

typedef struct saga_caller saga_caller;
typedef struct saga_call_result {
    int status;         /* HTTP status, or 0 when no answer (timeout, connection) */
    int curl_code;      /* CURLcode */
    char detail[224];   /* first bytes of the answer body or the curl error */
    int64_t elapsed_us; /* from saga_caller_start to the end of the transfer (0: unknown) */
} saga_call_result;
typedef void (*saga_call_done_fn)(void *arg, const saga_call_result *r);

int saga_caller_new(saga_caller **out, unsigned max_host_conns, dbao_err *err);
void saga_caller_free(saga_caller *c);
/* saga_caller_start queues a POST of body (copied) with the given header lines (copied). */
int saga_caller_start(saga_caller *c, const char *url, const char *const *headers,
                      size_t num_headers, const char *body, size_t body_len, uint32_t timeout_ms,
                      saga_call_done_fn done, void *arg);
/* saga_caller_poll runs transfers, waits at most timeout_ms for activity or a wakeup, and
 * calls `done` for every finished call. Returns the number of calls still in flight. */
int saga_caller_poll(saga_caller *c, int timeout_ms);
void saga_caller_wakeup(saga_caller *c); /* any thread */
size_t saga_caller_inflight(const saga_caller *c);

/* ---- coordinator (coord.c) ---------------------------------------------------------------- */

typedef struct saga_coord saga_coord;

typedef struct saga_coord_opts {
    const char *store_url;      /* required: "sqlite:PATH" or a PostgreSQL connection string */
    const char *owner;          /* lease holder id; default hostname:pid */
    uint32_t lease_ms;          /* default 10000 */
    uint32_t claim_interval_ms; /* default 2000 */
    uint64_t purge_after_ms;    /* final transactions kept this long; 0: 7 days */
    unsigned max_inflight;      /* participant calls at once; default 1024 */
    unsigned max_host_conns;    /* keep-alive connections per participant host; default 512 */
    saga_spec_defaults defaults;
    audit_log *log;           /* NULL: no audit trail (tests only) */
    const char *audit_source; /* default "saga" */
} saga_coord_opts;

int saga_coord_new(saga_coord **out, const saga_coord_opts *o, dbao_err *err);
/* saga_coord_start opens the store, claims the unfinished transactions and starts the engine
 * thread. */
int saga_coord_start(saga_coord *c, dbao_err *err);
/* saga_coord_stop: stop accepting, let in-flight calls finish (at most drain_ms), store,
 * release leases, join. Idempotent. */
void saga_coord_stop(saga_coord *c, uint32_t drain_ms);
void saga_coord_free(saga_coord *c);
/* healthy: engine running, store writable, audit trail not failed. */
bool saga_coord_healthy(const saga_coord *c);
const saga_spec_defaults *saga_coord_defaults(const saga_coord *c);
/* saga_coord_metrics appends Prometheus text. Any thread. */
int saga_coord_metrics(saga_coord *c, dbao_buf *out);

typedef enum saga_req_kind {
    SAGA_REQ_SUBMIT = 0, /* spec */
    SAGA_REQ_GET = 1,    /* gid */
    SAGA_REQ_LIST = 2,   /* list_state (-1 all, -2 stuck), older_than_ms, limit */
    SAGA_REQ_RETRY = 3,  /* gid, reason */
    SAGA_REQ_RESOLVE = 4 /* gid, resolve_to, reason */
} saga_req_kind;

typedef struct saga_req saga_req;
/* Called exactly once with an HTTP status and a JSON body (valid during the call). The
 * callback frees the request with saga_req_free (or keeps it). */
typedef void (*saga_reply_fn)(saga_req *r, int status, const char *body, size_t len);
struct saga_req {
    saga_req_kind kind;
    saga_spec spec; /* SUBMIT (owned) */
    char gid[SAGA_GID_MAX + 1];
    int64_t wait_ms; /* SUBMIT/GET: answer when final or parked or after wait_ms */
    int list_state;
    int64_t older_than_ms;
    uint32_t limit;
    saga_state resolve_to;
    char reason[256];
    saga_reply_fn reply;
    void *arg;
    /* private (coord.c) */
    int64_t wait_until_ms_;
    int status_;
    saga_req *next_;
};
saga_req *saga_req_new(saga_req_kind kind);
void saga_req_free(saga_req *r);
/* saga_coord_request queues r (ownership passes; its reply will be called). */
void saga_coord_request(saga_coord *c, saga_req *r);

/* ---- HTTP API (api.c) ---------------------------------------------------------------------- */

typedef struct saga_api saga_api;
typedef struct saga_api_opts {
    const char *host;
    uint16_t port; /* public API */
    const char *admin_host;
    uint16_t admin_port;     /* admin API (default 127.0.0.1) */
    const char *admin_token; /* bearer token, or NULL (not copied) */
    unsigned workers;
} saga_api_opts;
int saga_api_start(saga_api **out, saga_coord *c, const saga_api_opts *o, dbao_err *err);
uint16_t saga_api_port(const saga_api *a);
uint16_t saga_api_admin_port(const saga_api *a);
/* saga_api_stop_accepting: close the listeners (answers in progress still go out); then stop
 * the coordinator (which answers every waiting request), then saga_api_free. */
void saga_api_stop_accepting(saga_api *a);
void saga_api_free(saga_api *a);

/* ---- configuration (config.c) ------------------------------------------------------------- */

typedef struct saga_config {
    char *store_url;
    char *listen_host;
    uint16_t listen_port;
    char *admin_host;
    uint16_t admin_port;
    char *admin_token_file;
    char *allow[SAGA_ALLOW_MAX];
    size_t num_allow;
    uint32_t timeout_ms, call_timeout_ms, retry_initial_ms, retry_max_ms, max_attempts;
    unsigned workers, max_inflight;
    char *audit_dir;
    char *owner;
    uint32_t claim_interval_ms, lease_ms;
    uint64_t purge_after_ms;
    uint32_t drain_ms;
} saga_config;
int saga_config_load(saga_config *cfg, const char *path, dbao_err *err);
void saga_config_free(saga_config *cfg);

#endif
