/* proxy.c: the gateway's request path: route, steps, upstream exchange, streamed answer.
 *
 * One request is one gw_ctx, taken from the worker's free list (contexts and their buffers
 * are reused, so a kept-alive request allocates nothing once the buffers have grown). All of
 * it runs on the worker's loop thread: the net layer calls gw__proxy_handler when the request
 * head is complete (streaming mode), and everything after is driven by callbacks of the net
 * server (request body, client drain) and of the upstream pool (response head, body, end).
 *
 * The request path:
 *   1. the path is normalised (gw_path_normalize: dot segments, escapes) -> 400 if refused;
 *   2. the route is chosen by Host and path -> 404; a declared body over the route's limit
 *      -> 413 (the body is never read: with "Expect: 100-continue" the client never sends it);
 *   3. the steps' on_request run in order (each may answer, or go asynchronous);
 *   4. an endpoint is picked (balancing, health) -> 503 if none; the upstream head is built
 *      (hop-by-hop headers removed, X-Forwarded-For / X-Real-IP from trusted hops only,
 *      X-Forwarded-Proto, traceparent kept or created, the steps' headers, the framing);
 *   5. the exchange starts; the body, if any, is streamed to it with back-pressure both ways
 *      (client reads pause when the upstream write queue passes 256 KiB, upstream reads pause
 *      when the client write queue does);
 *   6. the response head is filtered (hop-by-hop, Date, Server) and the response streamed.
 *
 * Failures. Before any response byte: a connect failure, or a reused connection closed before
 * any response byte for an idempotent request, is retried on another endpoint (up to the
 * cluster's retries) when no request body byte has been forwarded yet; otherwise 502 (bad
 * upstream, refused), 504 (upstream timeout). After the response started: the client
 * connection is aborted (closed without a final chunk, or short of its Content-Length), so a
 * truncated body can never look complete. Every outcome is a status in the access log and the
 * metrics; nothing fails silently.
 *
 * Written by hand: this is the proxy itself; libuv, llhttp and OpenSSL do the I/O, parsing and
 * TLS underneath (through the net layer).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gwsrv.h"

#define GW_BUF_HIGH      (256u * 1024) /* pause the source past this many queued bytes */
#define GW_BUF_LOW       (64u * 1024)  /* resume below */
#define GW_FREE_CTX      256           /* contexts kept per worker */
#define GW_RB_KEEP       (64u * 1024)  /* a buffered-body buffer up to this size is kept */
#define GW_CACHE_ENTRIES 1024          /* last-good cache, per worker */
#define GW_CACHE_BYTES   (64u * 1024 * 1024)
#define GW_CACHE_BUCKETS 2048

struct gw_ctx {
    gw_worker *w;
    gw_wgen *wg;
    net_request *req;
    const gw_route *route;
    int route_idx;
    net_exchange *x;
    size_t ep;    /* flat endpoint index of the current attempt */
    size_t cl_ep; /* endpoint index inside the cluster */
    uint64_t tried;
    unsigned attempts;
    uint64_t t0_ns, tup_ns, ts_wall_us;
    uint64_t up_ns;
    int status, up_status;
    uint64_t bytes_in, bytes_out;
    int64_t req_cl; /* declared request body: N, -1 chunked */
    size_t body_max;
    bool has_body, body_started, body_done, body_failed, body_paused;
    uint64_t body_fwd; /* request body bytes handed to an exchange */
    bool resp_started, finished, head_method, idempotent, up_paused;
    size_t step_pos;
    size_t filter_pos; /* while emitting: the filter that emits */
    uint64_t filter_mask;
    const net_resp_head *up_head; /* during on_response_head only */
    const char *error;
    char client[64];
    char trace_id[33];
    char traceparent[56];
    char identity[256];
    char *path; /* normalised path */
    size_t path_cap;
    char *uh; /* step-added upstream header lines */
    size_t uh_len, uh_cap;
    char *rh; /* response header block */
    size_t rh_len, rh_cap;
    char *head; /* the upstream request head */
    size_t head_len, head_cap;
    char *rm; /* client headers removed: entries "<P|E><name>\0" (prefix / exact) */
    size_t rm_len, rm_cap;
    unsigned rm_num;
    const gw_principal *principal;
    const char *fallback; /* "fail", "static", "upstream", "cache" or NULL */
    size_t ci;            /* the cluster: the route's, or its fallback's */
    /* circuit breaker: at most one admitted call per request (retries are the same call) */
    gw_breaker *br;
    zt_breaker_token br_tok;
    bool br_checked, br_live, fb_used;
    uint64_t br_t0, br_dur; /* admission; time to the response head (ns) */
    /* gw_ctx_read_body */
    bool rb_on, rb_complete, rb_pending, rb_failed, in_request;
    int rb_status;
    void (*rb_cb)(gw_ctx *ctx, int status, const uint8_t *body, size_t len, void *arg);
    void *rb_arg;
    char *rb; /* bytes (char for buf_reserve) */
    size_t rb_len, rb_cap;
    /* the last-good cache: the answer as sent, while it may be cached */
    bool cap_on;
    char *cap;
    size_t cap_len, cap_cap;
    void *user[8];
    struct gw_ctx *next_free;
};

/* ---- small buffers ---- */

static int
buf_reserve(char **b, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return 0;
    }
    size_t n = *cap ? *cap : 512;
    while (n < need) {
        n *= 2;
    }
    char *p = dbao_realloc(*b, n);
    if (p == NULL) {
        return DBAO_ENOMEM;
    }
    *b = p;
    *cap = n;
    return 0;
}

static inline int
buf_put(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n > *cap && buf_reserve(b, cap, *len + n) != 0) {
        return DBAO_ENOMEM;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    return 0;
}

static char *
put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        *p++ = tmp[--n];
    }
    return p;
}

static uint64_t
mono_ns(void)
{
    return uv_hrtime();
}

static uint64_t
wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* ---- header names ---- */

static bool
tok_eq(const char *a, size_t alen, const char *lit, size_t litlen)
{
    return alen == litlen && strncasecmp(a, lit, alen) == 0;
}

/* hop-by-hop and gateway-owned request headers (never forwarded as received) */
static bool
req_hdr_dropped(const char *n, size_t len)
{
    switch (len) {
    case 2:
        return tok_eq(n, len, "te", 2);
    case 6:
        return tok_eq(n, len, "expect", 6);
    case 7:
        return tok_eq(n, len, "trailer", 7) || tok_eq(n, len, "upgrade", 7);
    case 9:
        return tok_eq(n, len, "x-real-ip", 9);
    case 10:
        return tok_eq(n, len, "connection", 10) || tok_eq(n, len, "keep-alive", 10);
    case 11:
        return tok_eq(n, len, "traceparent", 11);
    case 14:
        return tok_eq(n, len, "content-length", 14);
    case 15:
        return tok_eq(n, len, "x-forwarded-for", 15);
    case 16:
        return tok_eq(n, len, "proxy-connection", 16);
    case 17:
        return tok_eq(n, len, "transfer-encoding", 17) || tok_eq(n, len, "x-forwarded-proto", 17);
    default:
        return false;
    }
}

static bool
resp_hdr_dropped(const char *n, size_t len)
{
    switch (len) {
    case 2:
        return tok_eq(n, len, "te", 2);
    case 4:
        return tok_eq(n, len, "date", 4);
    case 6:
        return tok_eq(n, len, "server", 6);
    case 7:
        return tok_eq(n, len, "trailer", 7) || tok_eq(n, len, "upgrade", 7);
    case 10:
        return tok_eq(n, len, "connection", 10) || tok_eq(n, len, "keep-alive", 10);
    case 14:
        return tok_eq(n, len, "content-length", 14);
    case 16:
        return tok_eq(n, len, "proxy-connection", 16);
    case 17:
        return tok_eq(n, len, "transfer-encoding", 17);
    default:
        return false;
    }
}

/* listed_in: is `name` one of the comma-separated tokens of a Connection header value? */
static bool
listed_in(const char *conn, const char *name, size_t nlen)
{
    if (conn == NULL) {
        return false;
    }
    const char *p = conn;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }
        if ((size_t) (p - s) == nlen && strncasecmp(s, name, nlen) == 0) {
            return true;
        }
    }
    return false;
}

static bool
is_token(const char *s)
{
    static const char *tchar = "!#$%&'*+-.^_`|~";
    if (*s == 0) {
        return false;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c && strchr(tchar, c)))) {
            return false;
        }
    }
    return true;
}

static bool
is_value(const char *s)
{
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') {
            return false;
        }
    }
    return true;
}

/* ---- context lifetime ---- */

static gw_ctx *
ctx_get(gw_worker *w)
{
    gw_ctx *c = w->free_ctx;
    if (c) {
        w->free_ctx = c->next_free;
        w->num_free--;
    } else {
        c = dbao_calloc(1, sizeof *c);
        if (c == NULL) {
            return NULL;
        }
    }
    /* keep the buffers, reset the rest */
    char *path = c->path, *uh = c->uh, *rh = c->rh, *head = c->head, *rm = c->rm;
    size_t path_cap = c->path_cap, uh_cap = c->uh_cap, rh_cap = c->rh_cap, head_cap = c->head_cap;
    size_t rm_cap = c->rm_cap, rb_cap = c->rb_cap;
    char *rb = c->rb;
    memset(c, 0, sizeof *c);
    c->rm = rm;
    c->rm_cap = rm_cap;
    c->rb = rb;
    c->rb_cap = rb_cap;
    c->path = path;
    c->path_cap = path_cap;
    c->uh = uh;
    c->uh_cap = uh_cap;
    c->rh = rh;
    c->rh_cap = rh_cap;
    c->head = head;
    c->head_cap = head_cap;
    c->w = w;
    c->route_idx = -1;
    return c;
}

static void
ctx_put(gw_ctx *c)
{
    gw_worker *w = c->w;
    dbao_free(c->cap);
    c->cap = NULL;
    c->cap_cap = 0;
    if (c->rb_cap > GW_RB_KEEP) {
        dbao_free(c->rb); /* a large buffered body: not kept for the next request */
        c->rb = NULL;
        c->rb_cap = 0;
    }
    if (w->num_free >= GW_FREE_CTX || w->stopping) {
        dbao_free(c->rb);
        dbao_free(c->path);
        dbao_free(c->uh);
        dbao_free(c->rh);
        dbao_free(c->head);
        dbao_free(c->rm);
        dbao_free(c);
        return;
    }
    c->next_free = w->free_ctx;
    w->free_ctx = c;
    w->num_free++;
}

void
gw__ctx_free_list(gw_worker *w)
{
    while (w->free_ctx) {
        gw_ctx *c = w->free_ctx;
        w->free_ctx = c->next_free;
        dbao_free(c->path);
        dbao_free(c->uh);
        dbao_free(c->rh);
        dbao_free(c->head);
        dbao_free(c->rm);
        dbao_free(c->rb);
        dbao_free(c);
    }
    w->num_free = 0;
}

/* ---- generations on the worker ---- */

static void wgen_maybe_free(gw_worker *w, gw_wgen *wg);

static gw_wgen *
wgen_new(gw_gen *g)
{
    gw_wgen *wg = dbao_calloc(1, sizeof *wg);
    if (wg == NULL) {
        return NULL;
    }
    wg->gen = g;
    size_t n = g->num_eps ? g->num_eps : 1;
    wg->pools = dbao_calloc(n, sizeof *wg->pools);
    wg->active = dbao_calloc(n, sizeof *wg->active);
    if (wg->pools == NULL || wg->active == NULL) {
        dbao_free(wg->pools);
        dbao_free(wg->active);
        dbao_free(wg);
        return NULL;
    }
    return wg;
}

static void
on_pool_closed(void *arg)
{
    gw_wgen *wg = arg;
    wg->pools_open--;
    wgen_maybe_free(wg->owner, wg);
}

/* Retire: close the pools; the wgen is freed once nothing uses it. The retired list is
 * scanned on each tick (it is short: one entry per reload still draining). */
static void
wgen_retire(gw_worker *w, gw_wgen *wg)
{
    wg->retired = true;
    wg->owner = w;
    wg->next = NULL;
    gw_wgen **pp = &w->retired;
    while (*pp) {
        pp = &(*pp)->next;
    }
    *pp = wg;
    wg->pools_open++; /* held while closing, in case a pool closes at once */
    for (size_t i = 0; i < wg->gen->num_eps; i++) {
        if (wg->pools[i]) {
            wg->pools_open++;
            net_pool *p = wg->pools[i];
            wg->pools[i] = NULL;
            net_pool_close(p, on_pool_closed, wg);
        }
    }
    wg->pools_open--;
    wgen_maybe_free(w, wg);
}

static void
wgen_maybe_free(gw_worker *w, gw_wgen *wg)
{
    if (!wg->retired || wg->inflight) {
        return;
    }
    /* A request already running on the generation when it was retired (parked by a step,
     * GW_ASYNC, and resumed later) may have opened a pool since (pool_for): close those too,
     * or their idle connections keep the worker's loop, and so the stop, alive until the
     * pool's idle timeout. */
    for (size_t i = 0; i < wg->gen->num_eps; i++) {
        if (wg->pools[i]) {
            net_pool *p = wg->pools[i];
            wg->pools[i] = NULL;
            wg->pools_open++;
            net_pool_close(p, on_pool_closed, wg);
        }
    }
    if (wg->pools_open) {
        return;
    }
    for (gw_wgen **pp = &w->retired; *pp; pp = &(*pp)->next) {
        if (*pp == wg) {
            *pp = wg->next;
            break;
        }
    }
    gw__gen_release(wg->gen);
    dbao_free(wg->pools);
    dbao_free(wg->active);
    dbao_free(wg);
}

/* gw__worker_sweep frees retired generations that drained (tick, stop). */
void
gw__worker_sweep(gw_worker *w)
{
    gw_wgen *wg = w->retired;
    while (wg) {
        gw_wgen *next = wg->next;
        wgen_maybe_free(w, wg);
        wg = next;
    }
}

/* gw__worker_refresh switches the worker to the current generation if it changed. */
int
gw__worker_refresh(gw_worker *w)
{
    uint64_t seq = atomic_load_explicit(&w->srv->gen_seq, memory_order_acquire);
    if (w->cur && w->cur->gen->seq == seq) {
        return 0;
    }
    gw_gen *g = gw__gen_acquire(w->srv);
    gw_wgen *wg = wgen_new(g);
    if (wg == NULL) {
        gw__gen_release(g);
        return DBAO_ENOMEM;
    }
    if (w->cur) {
        wgen_retire(w, w->cur);
    }
    w->cur = wg;
    return 0;
}

/* gw__worker_close_pools closes every pool (stop): the current generation is retired too. */
void
gw__worker_close_pools(gw_worker *w)
{
    if (w->cur) {
        gw_wgen *wg = w->cur;
        w->cur = NULL;
        wgen_retire(w, wg);
    }
    gw__worker_sweep(w);
}

void
gw__worker_pool_stats(gw_worker *w)
{
    gw_wgen *wg = w->cur;
    if (wg == NULL) {
        return;
    }
    gw_gen *g = wg->gen;
    for (size_t c = 0; c < g->cfg->num_clusters; c++) {
        size_t idle = 0, active = 0;
        for (size_t e = 0; e < g->cfg->clusters[c].num_endpoints; e++) {
            net_pool *p = wg->pools[g->ep_base[c] + e];
            if (p) {
                net_pool_stats st;
                net_pool_get_stats(p, &st);
                idle += st.idle;
                active += st.active;
            }
        }
        gw_metrics_pool(w->srv->metrics, w->index, g->cluster_slot[c], idle, active);
    }
}

static net_pool *
pool_for(gw_ctx *c, size_t cluster, size_t ep)
{
    gw_wgen *wg = c->wg;
    size_t i = wg->gen->ep_base[cluster] + ep;
    if (wg->pools[i]) {
        return wg->pools[i];
    }
    const gw_cluster *cl = &wg->gen->cfg->clusters[cluster];
    net_pool_opts o = {
        .host = cl->endpoints[ep].host,
        .port = cl->endpoints[ep].port,
        .max_idle = cl->keepalive,
        .max_conns = cl->max_conns,
        .connect_timeout_ms = cl->connect_timeout_ms,
        .read_timeout_ms = cl->read_timeout_ms,
        .write_timeout_ms = cl->read_timeout_ms,
        .idle_timeout_ms = cl->idle_timeout_ms,
        .header_max = wg->gen->cfg->header_max,
        .headers_num_max = wg->gen->cfg->headers_num_max,
    };
    net_pool *p;
    if (net_pool_new(&p, c->w->loop, &o, NULL) != 0) {
        return NULL;
    }
    wg->pools[i] = p;
    return p;
}

/* ---- finishing ---- */

static void
ctx_log(gw_ctx *c)
{
    gw_server *s = c->w->srv;
    uint64_t dur_us = (mono_ns() - c->t0_ns) / 1000u;
    const gw_config *cfg = c->wg ? c->wg->gen->cfg : NULL;
    int slot = c->route_idx >= 0 && c->wg ? c->wg->gen->route_slot[c->route_idx] : 0;
    gw_metrics_request(s->metrics, c->w->index, slot, c->status, dur_us, c->bytes_in, c->bytes_out);
    for (size_t i = 0; i < s->num_steps && !c->w->steps_stopped; i++) {
        if (s->steps[i].on_log) {
            s->steps[i].on_log(c, s->steps[i].arg);
        }
    }
    if (s->alog) {
        char up[80] = "";
        if (c->attempts && cfg) {
            const gw_cluster *cl = &cfg->clusters[c->ci];
            const gw_addr *a = &cl->endpoints[c->cl_ep];
            char *p = up;
            size_t hl = strlen(a->host);
            if (strchr(a->host, ':')) {
                *p++ = '[';
                memcpy(p, a->host, hl);
                p += hl;
                *p++ = ']';
            } else {
                memcpy(p, a->host, hl);
                p += hl;
            }
            *p++ = ':';
            p = put_u64(p, a->port);
            *p = 0;
        }
        const net_peer *peer = net_request_peer(c->req);
        gw_access_rec r = {
            .ts_us = c->ts_wall_us,
            .client = c->client[0] ? c->client : peer->addr,
            .method = net_request_method(c->req),
            .path = c->path && c->path[0] ? c->path : net_request_path(c->req),
            .host = net_request_header(c->req, "host"),
            .route = c->route ? c->route->name : NULL,
            .upstream = c->attempts ? up : NULL,
            .trace_id = c->trace_id[0] ? c->trace_id : NULL,
            .error = c->error,
            .identity = c->identity[0] ? c->identity : (peer->cert_verified ? peer->cert_cn : NULL),
            .status = c->status,
            .upstream_status = c->up_status,
            .duration_us = dur_us,
            .upstream_us = c->up_ns / 1000u,
            .bytes_in = c->bytes_in,
            .bytes_out = c->bytes_out,
            .attempts = c->attempts,
            .tls = peer->tls,
        };
        gw_accesslog_write(s->alog, c->w->index, &r);
    }
}

/* ctx_finish: the answer is complete (ended or aborted): log, release, recycle. The request
 * itself was handed back to the net layer by the caller. */
static void
ctx_release(gw_ctx *c)
{
    gw_wgen *wg = c->wg;
    gw_worker *w = c->w;
    if (wg) {
        wg->inflight--;
        wgen_maybe_free(w, wg);
    }
    w->live--;
    ctx_put(c);
    if (w->stopping && w->live == 0) {
        gw__worker_steps_stop(w);
    }
    net_worker_release(w->nw);
}

/* br_record reports the outcome of the call the breaker admitted, once per request */
static void
br_record(gw_ctx *c, zt_outcome o)
{
    if (!c->br_live) {
        return;
    }
    c->br_live = false;
    uint64_t now = mono_ns();
    uint64_t dur = c->br_dur ? c->br_dur : now - c->br_t0;
    zt_breaker_record(c->br->zb, c->br_tok, o, dur, now);
}

static void cache_store(gw_ctx *c);

static void
ctx_end(gw_ctx *c, bool abort)
{
    if (c->finished) {
        return;
    }
    c->finished = true;
    br_record(c, ZT_OUTCOME_CANCELLED); /* no outcome was recorded: the client went away, ... */
    if (c->x) {
        net_exchange_abort(c->x);
        c->wg->active[c->ep]--;
        c->x = NULL;
    }
    ctx_log(c);
    if (abort) {
        net_response_abort(c->req);
    } else {
        net_response_end(c->req);
    }
    c->req = NULL;
    ctx_release(c);
}

/* gateway-made answers (before any response byte) */
static void
ctx_fail(gw_ctx *c, int status, const char *why)
{
    if (c->finished) {
        return;
    }
    if (c->resp_started) {
        c->error = why;
        ctx_end(c, true);
        return;
    }
    c->error = why;
    c->status = status;
    char body[160];
    size_t n = 0;
    const char *reason = net_status_reason(status);
    n = (size_t) snprintf(body, sizeof body, "{\"status\":%d,\"error\":\"%s\"}\n", status,
                          why ? why : reason);
    net_request_add_header(c->req, "Cache-Control", "no-store");
    if (c->trace_id[0]) {
        net_request_add_header(c->req, "X-Trace-Id", c->trace_id);
    }
    c->resp_started = true;
    if (net_response_start(c->req, status, "application/json", (int64_t) n) == 0 &&
        net_response_write(c->req, body, n) == 0) {
        c->bytes_out += n;
    }
    ctx_end(c, false);
}

/* ---- the request body, client -> upstream ---- */

static void rb_finish(gw_ctx *c, int status);

static void
body_on_data(net_request *req, const uint8_t *data, size_t len, void *arg)
{
    (void) req;
    gw_ctx *c = arg;
    if (c->finished) {
        return;
    }
    c->bytes_in += len;
    if (c->body_max && c->bytes_in > c->body_max) {
        c->body_failed = true;
        if (c->rb_on && !c->rb_complete) {
            rb_finish(c, DBAO_ERANGE); /* the step learns it; then 413 */
            return;
        }
        ctx_fail(c, 413, "request body over the route's limit");
        return;
    }
    if (c->rb_on) {
        if (!c->rb_complete && (c->rb_len + len > c->rb_cap) &&
            buf_reserve(&c->rb, &c->rb_cap, c->rb_len + len) != 0) {
            c->body_failed = true;
            rb_finish(c, DBAO_ENOMEM);
            return;
        }
        if (!c->rb_complete) {
            memcpy(c->rb + c->rb_len, data, len);
            c->rb_len += len;
        }
        return;
    }
    if (c->x == NULL) {
        return;
    }
    c->body_fwd += len;
    if (net_exchange_write(c->x, data, len) != 0) {
        ctx_fail(c, 502, "upstream write failed");
        return;
    }
    if (!c->body_paused && net_exchange_queued(c->x) > GW_BUF_HIGH) {
        c->body_paused = true;
        net_request_pause_body(c->req);
    }
}

static void
body_on_end(net_request *req, void *arg)
{
    (void) req;
    gw_ctx *c = arg;
    c->body_done = true;
    if (c->finished) {
        return;
    }
    if (c->rb_on) {
        if (!c->rb_complete) {
            rb_finish(c, 0);
        }
        return;
    }
    if (c->x) {
        net_exchange_end(c->x);
    }
}

/* body_fail answers a request whose body could not be read */
static void
body_fail(gw_ctx *c, int err)
{
    if (c->finished) {
        return;
    }
    if (err == DBAO_ERANGE) {
        ctx_fail(c, 413, "request body too large");
    } else if (err == -ETIMEDOUT) {
        ctx_fail(c, 408, "request body timed out");
    } else if (err == DBAO_EIO) {
        /* nobody to answer: log it as nginx does (499) and close */
        c->error = "client closed the connection";
        if (!c->resp_started) {
            c->status = 499;
        }
        ctx_end(c, true);
    } else if (err == DBAO_ENOMEM) {
        ctx_fail(c, 500, "out of memory");
    } else {
        ctx_fail(c, 400, "bad request body");
    }
}

static void
body_on_error(net_request *req, int err, void *arg)
{
    (void) req;
    gw_ctx *c = arg;
    c->body_failed = true;
    if (c->finished) {
        return;
    }
    if (c->rb_on && !c->rb_complete) {
        rb_finish(c, err);
        return;
    }
    body_fail(c, err);
}

static const net_body_cbs body_cbs = {body_on_data, body_on_end, body_on_error};

/* ---- gw_ctx_read_body: the whole body before the upstream ---- */

static void run_steps(gw_ctx *c);

/* rb_deliver hands the buffered body (or the failure) to the step. On success the step
 * resumes the chain (the context may be gone when `done` returns); on failure the step only
 * cleans up (gw_ctx_resume and gw_ctx_respond are refused) and the gateway answers. */
static void
rb_deliver(gw_ctx *c)
{
    c->rb_pending = false;
    int st = c->rb_status;
    if (st != 0) {
        c->rb_failed = true;
        c->rb_cb(c, st, NULL, 0, c->rb_arg);
        body_fail(c, st);
        return;
    }
    static const uint8_t empty[1];
    c->rb_cb(c, 0, c->rb_len ? (const uint8_t *) c->rb : empty, c->rb_len, c->rb_arg);
}

static void
rb_finish(gw_ctx *c, int status)
{
    c->rb_complete = true;
    c->rb_status = status;
    if (c->in_request) {
        c->rb_pending = true; /* delivered once the step's on_request has returned */
        return;
    }
    rb_deliver(c);
}

/* ---- the response, upstream -> client ---- */

static int send_to_client(gw_ctx *c, const uint8_t *data, size_t len);

static void
client_drained(net_request *req, void *arg)
{
    (void) req;
    gw_ctx *c = arg;
    if (c->up_paused && c->x) {
        c->up_paused = false;
        net_exchange_resume(c->x);
    }
}

static int
send_to_client(gw_ctx *c, const uint8_t *data, size_t len)
{
    if (len == 0) {
        return 0;
    }
    int rc = net_response_write(c->req, data, len);
    if (rc != 0) {
        return rc;
    }
    c->bytes_out += len;
    if (c->cap_on) {
        /* the last-good cache keeps the answer as sent (after the body filters: masking) */
        if (c->cap_len + len > c->route->fallback.cache_max ||
            buf_reserve(&c->cap, &c->cap_cap, c->cap_len + len) != 0) {
            c->cap_on = false;
            dbao_free(c->cap);
            c->cap = NULL;
            c->cap_len = c->cap_cap = 0;
        } else {
            memcpy(c->cap + c->cap_len, data, len);
            c->cap_len += len;
        }
    }
    if (!c->up_paused && c->x && net_response_queued(c->req) > GW_BUF_HIGH) {
        c->up_paused = true;
        net_exchange_pause(c->x);
        net_response_on_drain(c->req, GW_BUF_LOW, client_drained, c);
    }
    return 0;
}

/* run the body filters from position `from` */
static int
filter_from(gw_ctx *c, size_t from, const uint8_t *data, size_t len, bool last)
{
    gw_server *s = c->w->srv;
    for (size_t i = from; i < s->num_steps && i < 64; i++) {
        if ((c->filter_mask >> i) & 1u) {
            size_t saved = c->filter_pos;
            c->filter_pos = i;
            int rc = s->steps[i].on_response_body(c, data, len, last, s->steps[i].arg);
            c->filter_pos = saved;
            return rc;
        }
    }
    return send_to_client(c, data, len);
}

int
gw_ctx_emit(gw_ctx *c, const void *data, size_t len)
{
    if (c->finished) {
        return DBAO_EIO;
    }
    return filter_from(c, c->filter_pos + 1, data, len, false);
}

static void
x_on_head(net_exchange *x, const net_resp_head *h, void *arg)
{
    (void) x;
    gw_ctx *c = arg;
    if (h->status < 200) {
        return; /* 100 Continue was answered by the gateway itself; other 1xx are dropped */
    }
    c->up_status = h->status;
    if (c->br_live) {
        c->br_dur = mono_ns() - c->br_t0; /* slow calls: the time to the response head */
    }
    gw_server *s = c->w->srv;
    const char *conn = NULL;
    const char *raw_cl = NULL;
    /* the last-good cache: a 200 to a GET on a `fallback: cache` route, without cookies and
     * not marked private or no-store */
    bool cacheable = h->status == 200 && c->route->fallback.mode == GW_FALLBACK_CACHE &&
                     strcmp(net_request_method(c->req), "GET") == 0 && !c->fb_used;
    for (size_t i = 0; i < h->num_headers; i++) {
        size_t nl = strlen(h->names[i]);
        if (tok_eq(h->names[i], nl, "connection", 10)) {
            conn = h->values[i];
        } else if (tok_eq(h->names[i], nl, "content-length", 14)) {
            raw_cl = h->values[i];
        } else if (tok_eq(h->names[i], nl, "set-cookie", 10)) {
            cacheable = false;
        } else if (tok_eq(h->names[i], nl, "cache-control", 13) &&
                   (strcasestr(h->values[i], "no-store") || strcasestr(h->values[i], "private"))) {
            cacheable = false;
        }
    }
    if (cacheable) {
        c->cap_on = true;
        c->cap_len = 0;
    }
    for (size_t i = 0; i < s->num_steps; i++) {
        if (s->steps[i].on_response_head) {
            c->step_pos = i;
            c->up_head = h;
            s->steps[i].on_response_head(c, h->status, s->steps[i].arg);
            c->up_head = NULL;
            if (c->finished) {
                return;
            }
        }
    }
    for (size_t i = 0; i < h->num_headers; i++) {
        const char *n = h->names[i];
        size_t nl = strlen(n);
        if (resp_hdr_dropped(n, nl) || listed_in(conn, n, nl)) {
            continue;
        }
        /* a step rewrites the body: validators and digests of the upstream's bytes no longer
         * describe it (a cache or client would pair the masked body with the clear one's
         * ETag, or reject it on a digest mismatch) */
        if (c->filter_mask &&
            (tok_eq(n, nl, "etag", 4) || tok_eq(n, nl, "content-md5", 11) ||
             tok_eq(n, nl, "digest", 6) || tok_eq(n, nl, "content-digest", 14) ||
             tok_eq(n, nl, "repr-digest", 11) || tok_eq(n, nl, "accept-ranges", 13))) {
            continue;
        }
        size_t vl = strlen(h->values[i]);
        if (buf_put(&c->rh, &c->rh_len, &c->rh_cap, n, nl) ||
            buf_put(&c->rh, &c->rh_len, &c->rh_cap, ": ", 2) ||
            buf_put(&c->rh, &c->rh_len, &c->rh_cap, h->values[i], vl) ||
            buf_put(&c->rh, &c->rh_len, &c->rh_cap, "\r\n", 2)) {
            ctx_fail(c, 502, "out of memory");
            return;
        }
    }
    int64_t len = h->content_length;
    bool nobody = c->head_method || h->status == 204 || h->status == 304;
    if (nobody) {
        len = NET_LEN_CHUNKED;
        if (raw_cl && h->status != 204) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(raw_cl, &end, 10);
            if (errno == 0 && end != raw_cl && *end == 0) {
                len = (int64_t) v;
            }
        }
    } else if (len < 0 || c->filter_mask) {
        len = NET_LEN_CHUNKED;
    }
    if (c->rh_len && net_response_add_header_block(c->req, c->rh, c->rh_len) != 0) {
        ctx_fail(c, 502, "bad upstream response header");
        return;
    }
    c->resp_started = true;
    c->status = h->status;
    if (net_response_start(c->req, h->status, NULL, len) != 0) {
        ctx_end(c, true);
    }
}

static void
x_on_data(net_exchange *x, const uint8_t *data, size_t len, void *arg)
{
    (void) x;
    gw_ctx *c = arg;
    if (c->finished || !c->resp_started) {
        return;
    }
    int rc = c->filter_mask ? filter_from(c, 0, data, len, false) : send_to_client(c, data, len);
    if (rc != 0) {
        c->error = rc == DBAO_EIO ? "client closed the connection" : "response filter failed";
        ctx_end(c, true);
    }
}

static void
x_on_end(net_exchange *x, void *arg)
{
    (void) x;
    gw_ctx *c = arg;
    c->x = NULL;
    c->wg->active[c->ep]--;
    if (c->tup_ns) {
        c->up_ns = mono_ns() - c->tup_ns;
    }
    gw_health_report(c->wg->gen->cs[c->ci], c->cl_ep, !(c->up_status >= 502 && c->up_status <= 504),
                     uv_now(c->w->loop));
    if (c->finished) {
        return;
    }
    if (!c->resp_started) {
        br_record(c, ZT_OUTCOME_CONNECT);
        ctx_fail(c, 502, "upstream sent no final response");
        return;
    }
    br_record(c, c->up_status >= 500 ? ZT_OUTCOME_ERROR : ZT_OUTCOME_OK);
    if (c->filter_mask && filter_from(c, 0, NULL, 0, true) != 0) {
        ctx_end(c, true);
        return;
    }
    if (c->cap_on && !c->finished) {
        cache_store(c);
    }
    ctx_end(c, false);
}

static void try_upstream(gw_ctx *c);

static bool
w_stopping(const gw_ctx *c)
{
    return c->w->stopping;
}

static void
x_on_error(net_exchange *x, int err, unsigned flags, void *arg)
{
    (void) x;
    gw_ctx *c = arg;
    c->x = NULL;
    c->wg->active[c->ep]--;
    gw_server *s = c->w->srv;
    gw_gen *g = c->wg->gen;
    size_t ci = c->ci;
    int kind = err == -ETIMEDOUT          ? GW_UPERR_TIMEOUT
               : err == DBAO_EFORMAT      ? GW_UPERR_PROTOCOL
               : (flags & NET_X_NOT_SENT) ? GW_UPERR_CONNECT
                                          : GW_UPERR_RESET;
    if (err != -ECANCELED) {
        gw_metrics_upstream_error(s->metrics, c->w->index, g->cluster_slot[ci], kind);
        gw_health_report(g->cs[ci], c->cl_ep, false, uv_now(c->w->loop));
    }
    if (c->finished) {
        return;
    }
    if (c->resp_started) {
        c->error = "upstream failed mid-response";
        br_record(c, err == -ECANCELED     ? ZT_OUTCOME_CANCELLED
                     : c->up_status >= 500 ? ZT_OUTCOME_ERROR
                     : err == -ETIMEDOUT   ? ZT_OUTCOME_TIMEOUT
                                           : ZT_OUTCOME_CONNECT);
        ctx_end(c, true);
        return;
    }
    /* Retry only what the upstream cannot have acted on: nothing was sent (connect failed or
     * timed out), or an idempotent request on a kept-alive connection that the upstream had
     * closed (EOF or reset before any response byte: the keep-alive race). A read timeout is
     * never retried: the request was sent and may be running. */
    bool retry_safe =
        (flags & NET_X_NOT_SENT) || (c->idempotent && err != -ETIMEDOUT && (flags & NET_X_REUSED) &&
                                     (flags & NET_X_NO_RESPONSE));
    bool reused_race = retry_safe && !(flags & NET_X_NOT_SENT);
    const gw_cluster *cl = &g->cfg->clusters[ci];
    if (retry_safe && c->body_fwd == 0 && !c->body_failed && !w_stopping(c) &&
        (c->attempts <= cl->retries || (reused_race && c->attempts <= cl->retries + 1))) {
        try_upstream(c);
        return;
    }
    br_record(c, err == -ECANCELED   ? ZT_OUTCOME_CANCELLED
                 : err == -ETIMEDOUT ? ZT_OUTCOME_TIMEOUT
                                     : ZT_OUTCOME_CONNECT);
    if (err == -ETIMEDOUT) {
        ctx_fail(c, 504, "upstream timed out");
    } else if (err == DBAO_EFORMAT) {
        ctx_fail(c, 502, "bad upstream response");
    } else if (flags & NET_X_NOT_SENT) {
        ctx_fail(c, 502, "upstream connect failed");
    } else {
        ctx_fail(c, 502, "upstream closed the connection");
    }
}

static void
x_on_drain(net_exchange *x, void *arg)
{
    (void) x;
    gw_ctx *c = arg;
    if (c->body_paused && !c->finished) {
        c->body_paused = false;
        net_request_resume_body(c->req);
    }
}

static const net_exchange_cbs x_cbs = {x_on_head, x_on_data, x_on_end, x_on_error, x_on_drain};

/* ---- building the upstream request ---- */

/* removed: did a step ask (gw_ctx_remove_upstream_header) that this client header go? */
static bool
removed(const gw_ctx *c, const char *name, size_t nl)
{
    if (c->rm_len == 0) {
        return false;
    }
    const char *p = c->rm, *e = c->rm + c->rm_len;
    while (p < e) {
        bool prefix = *p == 'P';
        p++;
        size_t el = strlen(p);
        if (prefix ? (nl >= el && strncasecmp(name, p, el) == 0)
                   : (nl == el && strncasecmp(name, p, el) == 0)) {
            return true;
        }
        p += el + 1;
    }
    return false;
}

static int
build_head(gw_ctx *c)
{
    net_request *req = c->req;
    const gw_config *cfg = c->wg->gen->cfg;
    const char *method = net_request_method(req);
    const char *query = net_request_query(req);
    const char *path = c->path;
    if (c->route->strip_prefix) {
        size_t pl = strlen(c->route->prefix);
        if (pl > 1 && c->route->prefix[pl - 1] == '/') {
            pl--;
        }
        if (pl > 1) {
            path += pl;
            if (*path != '/') {
                path = "/";
            }
        }
    }
    c->head_len = 0;
    char **b = &c->head;
    size_t *l = &c->head_len, *cap = &c->head_cap;
#define PUT(s, n)                                                                                  \
    do {                                                                                           \
        if (buf_put(b, l, cap, (s), (n)) != 0)                                                     \
            return DBAO_ENOMEM;                                                                    \
    } while (0)
#define PUTS(s) PUT((s), strlen(s))
    PUTS(method);
    PUT(" ", 1);
    PUTS(path);
    if (*query) {
        PUT("?", 1);
        PUTS(query);
    }
    PUT(" HTTP/1.1\r\n", 11);
    const char *conn = net_request_header(req, "connection");
    const char *xff_in = NULL;
    bool have_host = false;
    size_t n = net_request_num_headers(req);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        net_request_header_at(req, i, &name, &value);
        size_t nl = strlen(name);
        if (tok_eq(name, nl, "x-forwarded-for", 15)) {
            xff_in = value; /* only the first: several are joined below if trusted */
            continue;
        }
        if (req_hdr_dropped(name, nl) || listed_in(conn, name, nl) || removed(c, name, nl)) {
            continue;
        }
        if (c->uh_len) {
            /* a header the steps set replaces the client's of the same name */
            bool replaced = false;
            const char *p = c->uh, *e = c->uh + c->uh_len;
            while (p < e) {
                const char *colon = memchr(p, ':', (size_t) (e - p));
                const char *eol = memchr(p, '\n', (size_t) (e - p));
                if (colon && (size_t) (colon - p) == nl && strncasecmp(p, name, nl) == 0) {
                    replaced = true;
                    break;
                }
                p = eol ? eol + 1 : e;
            }
            if (replaced) {
                continue;
            }
        }
        if (nl == 4 && strncasecmp(name, "host", 4) == 0) {
            have_host = true;
        }
        PUT(name, nl);
        PUT(": ", 2);
        PUTS(value);
        PUT("\r\n", 2);
    }
    const net_peer *peer = net_request_peer(req);
    if (!have_host) {
        const gw_addr *a = &cfg->clusters[c->ci].endpoints[c->cl_ep];
        PUT("Host: ", 6);
        PUTS(a->host);
        PUT("\r\n", 2);
    }
    /* several X-Forwarded-For headers: join them (only matters for trusted peers) */
    char joined[2048];
    if (xff_in) {
        size_t jl = 0, k = 0;
        for (size_t i = 0; i < n; i++) {
            const char *name, *value;
            net_request_header_at(req, i, &name, &value);
            if (strcasecmp(name, "x-forwarded-for") != 0) {
                continue;
            }
            size_t vl = strlen(value);
            if (jl + vl + 3 > sizeof joined) {
                break;
            }
            if (k++) {
                memcpy(joined + jl, ", ", 2);
                jl += 2;
            }
            memcpy(joined + jl, value, vl);
            jl += vl;
        }
        joined[jl] = 0;
        xff_in = joined;
    }
    char xff_out[2200];
    if (gw_client_addr(cfg->trusted_proxies, cfg->num_trusted, peer->addr, xff_in, c->client,
                       xff_out, sizeof xff_out) != 0) {
        /* too long a chain: keep only the peer */
        snprintf(c->client, sizeof c->client, "%s", peer->addr);
        snprintf(xff_out, sizeof xff_out, "%s", peer->addr);
    }
    PUT("X-Forwarded-For: ", 17);
    PUTS(xff_out);
    PUT("\r\nX-Real-IP: ", 13);
    PUTS(c->client);
    PUT(peer->tls ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n",
        peer->tls ? 28 : 27);
    PUT("traceparent: ", 13);
    PUT(c->traceparent, 55);
    PUT("\r\n", 2);
    if (c->uh_len) {
        PUT(c->uh, c->uh_len);
    }
    if (c->rb_on) {
        /* the body was buffered (gw_ctx_read_body): exactly those bytes, Content-Length */
        if (c->has_body) {
            char tmp[48] = "Content-Length: ";
            char *p = put_u64(tmp + 16, (uint64_t) c->rb_len);
            memcpy(p, "\r\n", 2);
            PUT(tmp, (size_t) (p + 2 - tmp));
        }
    } else if (c->req_cl < 0) {
        PUT("Transfer-Encoding: chunked\r\n", 28);
    } else if (c->req_cl > 0 || c->has_body) {
        char tmp[48] = "Content-Length: ";
        char *p = put_u64(tmp + 16, (uint64_t) c->req_cl);
        memcpy(p, "\r\n", 2);
        PUT(tmp, (size_t) (p + 2 - tmp));
    }
    PUT("\r\n", 2);
#undef PUT
#undef PUTS
    return 0;
}

static void fallback(gw_ctx *c, uint32_t retry_after_ms);

static void
try_upstream(gw_ctx *c)
{
    gw_gen *g = c->wg->gen;
    if (!c->br_checked) {
        /* the circuit breaker admits the call once; retries are part of it */
        c->br_checked = true;
        gw_breaker *b = g->br ? g->br[c->ci] : NULL;
        if (b) {
            uint32_t ra = 0;
            uint64_t now = mono_ns();
            if (!zt_breaker_allow(b->zb, now, &c->br_tok, &ra)) {
                fallback(c, ra);
                return;
            }
            c->br = b;
            c->br_live = true;
            c->br_t0 = now;
        }
        if (c->fb_used) {
            gw_metrics_fallback(c->w->srv->metrics, c->w->index, g->route_slot[c->route_idx],
                                GW_FALLBACK_UPSTREAM);
        }
    }
    size_t ci = c->ci;
    int ep =
        gw_balance_pick(g->cs[ci], c->wg->active + g->ep_base[ci], c->tried, uv_now(c->w->loop));
    if (ep < 0 && c->tried) {
        /* every available endpoint was tried: allow a second try on one of them */
        ep = gw_balance_pick(g->cs[ci], c->wg->active + g->ep_base[ci], 0, uv_now(c->w->loop));
    }
    if (ep < 0) {
        br_record(c, ZT_OUTCOME_CONNECT);
        ctx_fail(c, 503, "no healthy upstream");
        return;
    }
    c->cl_ep = (size_t) ep;
    c->ep = g->ep_base[ci] + (size_t) ep;
    if (ep < 64) {
        c->tried |= (uint64_t) 1 << ep;
    }
    net_pool *p = pool_for(c, ci, (size_t) ep);
    if (p == NULL) {
        ctx_fail(c, 500, "out of memory");
        return;
    }
    if (c->attempts == 0 || c->head_len == 0) {
        if (build_head(c) != 0) {
            ctx_fail(c, 500, "out of memory");
            return;
        }
    }
    c->attempts++;
    if (c->w->srv->alog) {
        c->tup_ns = mono_ns();
    }
    int64_t blen = c->req_cl < 0 ? -1 : c->req_cl;
    if (c->rb_on) {
        blen = c->has_body ? (int64_t) c->rb_len : 0;
    }
    if (net_exchange_start(&c->x, p, c->head, c->head_len, blen, c->head_method, &x_cbs, c) != 0) {
        c->x = NULL;
        ctx_fail(c, 500, "out of memory");
        return;
    }
    c->wg->active[c->ep]++;
    if (c->rb_on) {
        /* the buffered body, again on a retry (the upstream saw none of it then) */
        if (blen > 0 && net_exchange_write(c->x, c->rb, c->rb_len) != 0) {
            ctx_fail(c, 500, "out of memory");
            return;
        }
        net_exchange_end(c->x);
    } else if (c->body_done || !c->has_body) {
        net_exchange_end(c->x);
    } else if (!c->body_started) {
        c->body_started = true;
        if (net_request_read_body(c->req, &body_cbs, c) != 0) {
            ctx_fail(c, 500, "cannot read the request body");
        }
    }
}

/* ---- circuit open: fallbacks and the last-good cache ----
 *
 * The cache is per worker (its loop thread only): a hash table over an LRU list, at most
 * GW_CACHE_ENTRIES entries and GW_CACHE_BYTES bytes. The key is the route name, the
 * normalised path, the query and the principal's sub (when a principal is set), NUL-separated
 * (none of them can hold a NUL but the last), so one subject never gets another's answer. An
 * entry keeps the response header block as received (hop-by-hop and framing headers already
 * removed, Age dropped) and the body as sent to the client (after the body filters). */

typedef struct cache_ent {
    struct cache_ent *hnext;       /* bucket chain */
    struct cache_ent *prev, *next; /* LRU list, most recent first */
    uint64_t hash;
    uint64_t stored_ms;
    size_t key_len, hdr_len, body_len;
    char *key, *hdr;
    uint8_t *body;
} cache_ent;

struct gw_cache {
    cache_ent *bucket[GW_CACHE_BUCKETS];
    cache_ent *head, *tail;
    size_t n, bytes;
};

static uint64_t
cache_hash(const gw_worker *w, const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ w->cache_seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t) k[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static size_t
ent_size(const cache_ent *e)
{
    return sizeof *e + e->key_len + e->hdr_len + e->body_len;
}

static void
cache_unlink(gw_cache *ca, cache_ent *e)
{
    cache_ent **pp = &ca->bucket[e->hash % GW_CACHE_BUCKETS];
    while (*pp && *pp != e) {
        pp = &(*pp)->hnext;
    }
    if (*pp) {
        *pp = e->hnext;
    }
    if (e->prev) {
        e->prev->next = e->next;
    } else {
        ca->head = e->next;
    }
    if (e->next) {
        e->next->prev = e->prev;
    } else {
        ca->tail = e->prev;
    }
    ca->n--;
    ca->bytes -= ent_size(e);
    dbao_free(e);
}

void
gw__worker_cache_free(gw_worker *w)
{
    gw_cache *ca = w->cache;
    if (ca == NULL) {
        return;
    }
    while (ca->head) {
        cache_unlink(ca, ca->head);
    }
    dbao_free(ca);
    w->cache = NULL;
}

/* cache_key writes the key into a malloc'd buffer */
static char *
cache_key(const gw_ctx *c, size_t *len)
{
    const char *route = c->route->name ? c->route->name : "";
    const char *query = net_request_query(c->req);
    const char *sub = c->principal && c->principal->sub ? c->principal->sub : NULL;
    size_t rl = strlen(route), pl = strlen(c->path), ql = strlen(query), sl = sub ? strlen(sub) : 0;
    size_t n = rl + 1 + pl + 1 + ql + 1 + 1 + sl;
    char *k = dbao_malloc(n);
    if (k == NULL) {
        return NULL;
    }
    char *p = k;
    memcpy(p, route, rl + 1);
    p += rl + 1;
    memcpy(p, c->path, pl + 1);
    p += pl + 1;
    memcpy(p, query, ql + 1);
    p += ql + 1;
    *p++ = sub ? 'S' : '-'; /* a principal, or none (auth none) */
    if (sl) {
        memcpy(p, sub, sl);
    }
    *len = n;
    return k;
}

static cache_ent *
cache_find(gw_worker *w, const char *k, size_t kl, uint64_t h)
{
    if (w->cache == NULL) {
        return NULL;
    }
    for (cache_ent *e = w->cache->bucket[h % GW_CACHE_BUCKETS]; e; e = e->hnext) {
        if (e->hash == h && e->key_len == kl && memcmp(e->key, k, kl) == 0) {
            return e;
        }
    }
    return NULL;
}

static void
cache_store(gw_ctx *c)
{
    gw_worker *w = c->w;
    c->cap_on = false;
    if (w->stopping) {
        return;
    }
    if (w->cache == NULL) {
        w->cache = dbao_calloc(1, sizeof *w->cache);
        if (w->cache == NULL) {
            return;
        }
        w->cache_seed = uv_hrtime() ^ ((uint64_t) (uintptr_t) w << 17);
    }
    gw_cache *ca = w->cache;
    size_t kl;
    char *k = cache_key(c, &kl);
    if (k == NULL) {
        return;
    }
    /* the header block without Age (set when served) */
    size_t hl = 0;
    const char *p = c->rh, *end = c->rh ? c->rh + c->rh_len : NULL;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t) (end - p));
        const char *next = eol ? eol + 1 : end;
        if (!((size_t) (next - p) > 4 && strncasecmp(p, "age:", 4) == 0)) {
            hl += (size_t) (next - p);
        }
        p = next;
    }
    size_t total = sizeof(cache_ent) + kl + hl + c->cap_len;
    if (total > GW_CACHE_BYTES) {
        dbao_free(k);
        return;
    }
    uint64_t h = cache_hash(w, k, kl);
    cache_ent *old = cache_find(w, k, kl, h);
    if (old) {
        cache_unlink(ca, old);
    }
    while (ca->tail && (ca->n >= GW_CACHE_ENTRIES || ca->bytes + total > GW_CACHE_BYTES)) {
        cache_unlink(ca, ca->tail);
    }
    cache_ent *e = dbao_malloc(total);
    if (e == NULL) {
        dbao_free(k);
        return;
    }
    memset(e, 0, sizeof *e);
    e->key = (char *) (e + 1);
    e->hdr = e->key + kl;
    e->body = (uint8_t *) (e->hdr + hl);
    memcpy(e->key, k, kl);
    dbao_free(k);
    e->key_len = kl;
    char *q = e->hdr;
    for (p = c->rh; p < end;) {
        const char *eol = memchr(p, '\n', (size_t) (end - p));
        const char *next = eol ? eol + 1 : end;
        if (!((size_t) (next - p) > 4 && strncasecmp(p, "age:", 4) == 0)) {
            memcpy(q, p, (size_t) (next - p));
            q += next - p;
        }
        p = next;
    }
    e->hdr_len = hl;
    if (c->cap_len) {
        memcpy(e->body, c->cap, c->cap_len);
    }
    e->body_len = c->cap_len;
    e->hash = h;
    e->stored_ms = uv_now(w->loop);
    e->hnext = ca->bucket[h % GW_CACHE_BUCKETS];
    ca->bucket[h % GW_CACHE_BUCKETS] = e;
    e->next = ca->head;
    if (ca->head) {
        ca->head->prev = e;
    } else {
        ca->tail = e;
    }
    ca->head = e;
    ca->n++;
    ca->bytes += total;
}

static void
fb_count(gw_ctx *c, int mode)
{
    gw_metrics_fallback(c->w->srv->metrics, c->w->index, c->wg->gen->route_slot[c->route_idx],
                        mode);
}

static void
fb_fail(gw_ctx *c, uint32_t retry_after_ms)
{
    c->fallback = "fail";
    fb_count(c, GW_FALLBACK_FAIL);
    char ra[16];
    uint32_t secs = (retry_after_ms + 999) / 1000;
    snprintf(ra, sizeof ra, "%u", secs ? secs : 1);
    net_request_add_header(c->req, "Retry-After", ra);
    net_request_add_header(c->req, "X-Dengbao-Fallback", "fail");
    ctx_fail(c, 503, "circuit breaker open");
}

/* cache_serve answers from the last-good cache; false if there is no fresh entry */
static bool
cache_serve(gw_ctx *c)
{
    gw_worker *w = c->w;
    if (w->cache == NULL || strcmp(net_request_method(c->req), "GET") != 0) {
        return false;
    }
    size_t kl;
    char *k = cache_key(c, &kl);
    if (k == NULL) {
        return false;
    }
    cache_ent *e = cache_find(w, k, kl, cache_hash(w, k, kl));
    dbao_free(k);
    uint64_t now = uv_now(w->loop);
    if (e == NULL || now - e->stored_ms >= c->route->fallback.cache_ttl_ms) {
        return false;
    }
    /* most recently used first */
    gw_cache *ca = w->cache;
    if (ca->head != e) {
        e->prev->next = e->next;
        if (e->next) {
            e->next->prev = e->prev;
        } else {
            ca->tail = e->prev;
        }
        e->prev = NULL;
        e->next = ca->head;
        ca->head->prev = e;
        ca->head = e;
    }
    char age[24];
    snprintf(age, sizeof age, "%llu", (unsigned long long) ((now - e->stored_ms) / 1000u));
    c->fallback = "cache";
    fb_count(c, GW_FALLBACK_CACHE);
    if ((e->hdr_len && net_response_add_header_block(c->req, e->hdr, e->hdr_len) != 0) ||
        net_request_add_header(c->req, "Age", age) != 0 ||
        net_request_add_header(c->req, "X-Dengbao-Fallback", "cache") != 0) {
        ctx_fail(c, 500, "out of memory");
        return true;
    }
    c->status = 200;
    c->resp_started = true;
    int rc = net_response_start(c->req, 200, NULL, (int64_t) e->body_len);
    if (rc == 0 && e->body_len && !c->head_method) {
        rc = net_response_write(c->req, e->body, e->body_len);
        if (rc == 0) {
            c->bytes_out += e->body_len;
        }
    }
    ctx_end(c, rc != 0);
    return true;
}

/* fallback: the cluster's breaker refused the call; the route's fallback answers */
static void
fallback(gw_ctx *c, uint32_t retry_after_ms)
{
    const gw_fallback *fb = &c->route->fallback;
    c->error = "circuit breaker open";
    if (c->fb_used) {
        fb_fail(c, retry_after_ms); /* the fallback cluster's breaker is open too */
        return;
    }
    switch (fb->mode) {
    case GW_FALLBACK_UPSTREAM:
        if (fb->cluster >= c->wg->gen->cfg->num_clusters || fb->cluster == c->ci) {
            break;
        }
        c->fb_used = true;
        c->fallback = "upstream";
        c->ci = fb->cluster;
        c->br_checked = false; /* the fallback cluster's own breaker */
        c->tried = 0;
        c->head_len = 0;
        net_request_add_header(c->req, "X-Dengbao-Fallback", "upstream");
        try_upstream(c);
        return;
    case GW_FALLBACK_STATIC: {
        c->fallback = "static";
        fb_count(c, GW_FALLBACK_STATIC);
        char ra[16];
        uint32_t secs = (retry_after_ms + 999) / 1000;
        snprintf(ra, sizeof ra, "%u", secs ? secs : 1);
        net_request_add_header(c->req, "Retry-After", ra);
        net_request_add_header(c->req, "Cache-Control", "no-store");
        net_request_add_header(c->req, "X-Dengbao-Fallback", "static");
        int status = fb->status ? fb->status : 200;
        c->status = status;
        c->resp_started = true;
        int rc =
            net_response_start(c->req, status, fb->content_type ? fb->content_type : "text/plain",
                               (int64_t) fb->body_len);
        if (rc == 0 && fb->body_len && !c->head_method) {
            rc = net_response_write(c->req, fb->body, fb->body_len);
            if (rc == 0) {
                c->bytes_out += fb->body_len;
            }
        }
        ctx_end(c, rc != 0);
        return;
    }
    case GW_FALLBACK_CACHE:
        if (cache_serve(c)) {
            return;
        }
        break;
    default:
        break;
    }
    fb_fail(c, retry_after_ms);
}

/* ---- the chain ---- */

void
gw_ctx_resume(gw_ctx *c, int result)
{
    if (c->finished || c->rb_failed) {
        return;
    }
    if (result == GW_DONE) {
        if (!c->resp_started) {
            ctx_fail(c, 500, "a step stopped without answering");
        }
        return;
    }
    c->step_pos++;
    run_steps(c);
}

static void
run_steps(gw_ctx *c)
{
    gw_server *s = c->w->srv;
    while (c->step_pos < s->num_steps) {
        const gw_step *st = &s->steps[c->step_pos];
        if (st->on_request) {
            c->in_request = true;
            int r = st->on_request(c, st->arg);
            c->in_request = false;
            if (r == GW_ASYNC) {
                if (c->rb_pending) {
                    rb_deliver(c); /* the body was complete at once (no body) */
                }
                return;
            }
            if (c->rb_on && (!c->rb_complete || c->rb_pending) && !c->finished) {
                ctx_fail(c, 500, "a step read the body without waiting for it");
                return;
            }
            if (r != GW_NEXT) {
                if (!c->finished && !c->resp_started) {
                    ctx_fail(c, 500, "a step stopped without answering");
                }
                return;
            }
            if (c->finished) {
                return;
            }
        }
        c->step_pos++;
    }
    try_upstream(c);
}

static bool
method_idempotent(const char *m)
{
    switch (m[0]) {
    case 'G':
        return strcmp(m, "GET") == 0;
    case 'H':
        return strcmp(m, "HEAD") == 0;
    case 'O':
        return strcmp(m, "OPTIONS") == 0;
    case 'P':
        return strcmp(m, "PUT") == 0;
    case 'D':
        return strcmp(m, "DELETE") == 0;
    case 'T':
        return strcmp(m, "TRACE") == 0;
    default:
        return false;
    }
}

void
gw__proxy_handler(net_request *req, void *arg)
{
    (void) arg;
    gw_worker *w = net_worker_data(net_request_worker(req));
    gw_ctx *c = w ? ctx_get(w) : NULL;
    if (c == NULL) {
        net_request_respond(req, 503, "text/plain", "overloaded\n", 11);
        return;
    }
    net_worker_hold(w->nw);
    w->live++;
    c->req = req;
    c->t0_ns = mono_ns();
    if (w->srv->alog) {
        c->ts_wall_us = wall_us();
    }
    if (gw__worker_refresh(w) != 0 || w->cur == NULL) {
        c->wg = NULL;
        ctx_fail(c, 503, "out of memory");
        return;
    }
    c->wg = w->cur;
    c->wg->inflight++;
    if (w->steps_stopped) {
        ctx_fail(c, 503, "shutting down");
        return;
    }
    const gw_config *cfg = c->wg->gen->cfg;
    const char *method = net_request_method(req);
    c->head_method = method[0] == 'H' && strcmp(method, "HEAD") == 0;
    c->idempotent = method_idempotent(method);
    gw_traceparent_child(net_request_header(req, "traceparent"), c->traceparent, c->trace_id);

    const char *raw = net_request_path(req);
    size_t need = strlen(raw) + 1;
    if (need > c->path_cap && buf_reserve(&c->path, &c->path_cap, need) != 0) {
        ctx_fail(c, 500, "out of memory");
        return;
    }
    if (gw_path_normalize(raw, c->path, c->path_cap) != 0) {
        c->path[0] = 0;
        ctx_fail(c, 400, "bad path");
        return;
    }
    int ri = gw_route_match(cfg, net_request_header(req, "host"), c->path);
    if (ri < 0) {
        ctx_fail(c, 404, "no route");
        return;
    }
    c->route_idx = ri;
    c->route = &cfg->routes[ri];
    c->ci = c->route->cluster;
    c->body_max = c->route->body_max ? c->route->body_max : cfg->body_max;
    c->req_cl = net_request_content_length(req);
    c->has_body = c->req_cl != 0;
    if (c->req_cl == 0 && net_request_header(req, "content-length")) {
        c->has_body = false;
    }
    if (c->req_cl > 0 && (uint64_t) c->req_cl > c->body_max) {
        ctx_fail(c, 413, "request body over the route's limit");
        return;
    }
    run_steps(c);
}

/* ---- the context API for steps ---- */

net_request *
gw_ctx_request(gw_ctx *c)
{
    return c->req;
}

const gw_route *
gw_ctx_route(const gw_ctx *c)
{
    return c->route;
}

const char *
gw_ctx_path(const gw_ctx *c)
{
    return c->path;
}

const char *
gw_ctx_client(const gw_ctx *c)
{
    if (c->client[0] == 0 && c->req) {
        /* decided when the upstream head is built; steps run before: decide now */
        const gw_config *cfg = c->wg->gen->cfg;
        char tmp[2200];
        gw_client_addr(cfg->trusted_proxies, cfg->num_trusted, net_request_peer(c->req)->addr,
                       net_request_header(c->req, "x-forwarded-for"), ((gw_ctx *) c)->client, tmp,
                       sizeof tmp);
    }
    return c->client;
}

const char *
gw_ctx_trace_id(const gw_ctx *c)
{
    return c->trace_id;
}

unsigned
gw_ctx_worker(const gw_ctx *c)
{
    return c->w->index;
}

int
gw_ctx_status(const gw_ctx *c)
{
    return c->status;
}

void
gw_ctx_set_identity(gw_ctx *c, const char *id)
{
    snprintf(c->identity, sizeof c->identity, "%s", id ? id : "");
}

int
gw_ctx_add_upstream_header(gw_ctx *c, const char *name, const char *value)
{
    if (!is_token(name) || !is_value(value) || req_hdr_dropped(name, strlen(name))) {
        return DBAO_EINVAL;
    }
    if (buf_put(&c->uh, &c->uh_len, &c->uh_cap, name, strlen(name)) ||
        buf_put(&c->uh, &c->uh_len, &c->uh_cap, ": ", 2) ||
        buf_put(&c->uh, &c->uh_len, &c->uh_cap, value, strlen(value)) ||
        buf_put(&c->uh, &c->uh_len, &c->uh_cap, "\r\n", 2)) {
        return DBAO_ENOMEM;
    }
    return 0;
}

int
gw_ctx_add_response_header(gw_ctx *c, const char *name, const char *value)
{
    if (c->resp_started) {
        return DBAO_EINVAL;
    }
    return net_request_add_header(c->req, name, value);
}

int
gw_ctx_respond(gw_ctx *c, int status, const char *content_type, const void *body, size_t len)
{
    if (c->finished || c->resp_started || c->rb_failed) {
        return DBAO_EINVAL;
    }
    c->status = status;
    c->resp_started = true;
    int rc = net_response_start(c->req, status, content_type, (int64_t) len);
    if (rc == 0 && len) {
        rc = net_response_write(c->req, body, len);
        if (rc == 0) {
            c->bytes_out += len;
        }
    }
    ctx_end(c, rc != 0);
    return rc;
}

const char *
gw_ctx_response_header(const gw_ctx *c, const char *name)
{
    const net_resp_head *h = c->up_head;
    if (h == NULL || name == NULL) {
        return NULL;
    }
    size_t len = strlen(name);
    for (size_t i = 0; i < h->num_headers; i++) {
        if (tok_eq(h->names[i], strlen(h->names[i]), name, len)) {
            return h->values[i];
        }
    }
    return NULL;
}

void
gw_ctx_filter_body(gw_ctx *c)
{
    if (c->step_pos < 64) {
        c->filter_mask |= (uint64_t) 1 << c->step_pos;
    }
}

void
gw_ctx_set_user(gw_ctx *c, size_t step, void *p)
{
    if (step < 8) {
        c->user[step] = p;
    }
}

void *
gw_ctx_user(const gw_ctx *c, size_t step)
{
    return step < 8 ? c->user[step] : NULL;
}

void
gw_ctx_set_principal(gw_ctx *c, const gw_principal *p)
{
    c->principal = p;
}

const gw_principal *
gw_ctx_principal(const gw_ctx *c)
{
    return c->principal;
}

const char *
gw_ctx_error(const gw_ctx *c)
{
    return c->error;
}

int
gw_ctx_upstream_status(const gw_ctx *c)
{
    return c->up_status;
}

const char *
gw_ctx_fallback(const gw_ctx *c)
{
    return c->fallback;
}

const char *
gw_ctx_method(const gw_ctx *c)
{
    return c->req ? net_request_method(c->req) : "";
}

const net_peer *
gw_ctx_peer(const gw_ctx *c)
{
    return c->req ? net_request_peer(c->req) : NULL;
}

struct uv_loop_s *
gw_ctx_loop(const gw_ctx *c)
{
    return c->w->loop;
}

int
gw_ctx_remove_upstream_header(gw_ctx *c, const char *name, bool prefix)
{
    if (name == NULL || !is_token(name) || c->rm_num >= 256 || c->finished || c->attempts) {
        return DBAO_EINVAL;
    }
    size_t nl = strlen(name);
    if (buf_put(&c->rm, &c->rm_len, &c->rm_cap, prefix ? "P" : "E", 1) ||
        buf_put(&c->rm, &c->rm_len, &c->rm_cap, name, nl + 1)) {
        return DBAO_ENOMEM;
    }
    c->rm_num++;
    return 0;
}

int
gw_ctx_read_body(gw_ctx *c,
                 void (*done)(gw_ctx *ctx, int status, const uint8_t *body, size_t len, void *arg),
                 void *arg)
{
    if (done == NULL || !c->in_request || c->rb_on || c->body_started || c->attempts ||
        c->finished || c->resp_started) {
        return DBAO_EINVAL;
    }
    c->rb_on = true;
    c->rb_cb = done;
    c->rb_arg = arg;
    c->rb_len = 0;
    if (!c->has_body) {
        rb_finish(c, 0); /* delivered when on_request returns GW_ASYNC */
        return 0;
    }
    c->body_started = true;
    int rc = net_request_read_body(c->req, &body_cbs, c);
    if (rc != 0) {
        c->rb_on = false;
        c->body_started = false;
        return rc;
    }
    return 0;
}
