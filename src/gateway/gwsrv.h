/* gwsrv.h: what server.c and proxy.c share (private to src/gateway).
 *
 * Generations. Each loaded configuration is a generation (gw_gen): the config, the shared
 * health state of its clusters and its metric slots, with an atomic reference count. The
 * server holds one reference to the current generation, the health thread one, and each worker
 * one per generation it still uses (gw_wgen: its pools and in-flight requests on that
 * generation). A worker notices a new generation on its next request or tick (one relaxed
 * load of srv->gen_seq), takes a reference, and retires the old gw_wgen: its pools are closed
 * (idle connections at once, busy ones when their exchange ends) and the reference is dropped
 * when the last in-flight request and pool of that generation are gone. So a reload never
 * breaks a request, and the hot path has no lock and no shared write.
 *
 * Circuit breakers (one per cluster with `breaker:`) are shared by every worker (zt_breaker is
 * thread-safe) and reference-counted (gw_breaker): a reload carries a cluster's breaker over
 * to the new generation when the cluster keeps its name and its breaker options are equal, so
 * an open breaker stays open across a reload; otherwise the new generation starts a closed
 * one. The last-good answers of `fallback: cache` routes are kept per worker (gw_cache, used
 * by its loop thread only), across generations.
 */
#ifndef DENGBAO_GATEWAY_GWSRV_H
#define DENGBAO_GATEWAY_GWSRV_H

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "dengbao/gateway.h"
#include "dengbao/zt.h"

/* fallback modes as metric indexes (gw_fallback_mode values) */
#define GW_FB_MODES 4

typedef struct gw_breaker {
    atomic_int refs;
    zt_breaker *zb;
    struct gw_server *srv;
    int slot; /* metrics cluster slot */
    gw_breaker_conf conf;
} gw_breaker;

typedef struct gw_cache gw_cache;

typedef struct gw_gen {
    atomic_int refs;
    uint64_t seq;
    gw_config *cfg;
    gw_cluster_state **cs; /* per cluster */
    size_t *ep_base;       /* per cluster: index of its first endpoint in flat arrays */
    size_t num_eps;        /* endpoints over all clusters */
    int *route_slot;       /* metrics slots */
    int *cluster_slot;
    gw_breaker **br; /* per cluster; NULL: no breaker */
} gw_gen;

typedef struct gw_wgen {
    gw_gen *gen;
    net_pool **pools;  /* per flat endpoint; created on first use */
    unsigned *active;  /* per flat endpoint: this worker's exchanges in flight */
    size_t inflight;   /* requests of this worker on this generation */
    size_t pools_open; /* pools closing (after retire) */
    bool retired;
    struct gw_worker *owner;
    struct gw_wgen *next; /* the worker's retired list */
} gw_wgen;

typedef struct gw_worker {
    gw_server *srv;
    net_worker *nw;
    uv_loop_t *loop;
    unsigned index; /* global: listener * workers + worker */
    size_t listener;
    bool tls;
    gw_wgen *cur;
    gw_wgen *retired;
    uv_timer_t tick;
    bool tick_open;
    bool stopping;
    struct gw_ctx *free_ctx;
    size_t num_free;
    size_t live;        /* contexts in use (requests not yet logged) */
    bool steps_started; /* the steps' on_worker_start ran */
    bool steps_stopped; /* the steps' on_worker_stop ran (stopping and live == 0) */
    gw_cache *cache;    /* last-good answers (fallback: cache); created on first use */
    uint64_t cache_seed;
} gw_worker;

struct gw_server {
    gw_server_opts o;
    gw_step *steps;
    size_t num_steps;
    gw_config *boot;         /* listeners, workers, admin: fixed for the server's life */
    struct gw_gen *boot_gen; /* holds boot */
    net_server **servers;
    size_t num_servers;
    net_server *admin;
    gw_worker *workers; /* num_servers * boot->workers */
    unsigned num_workers;
    gw_metrics *metrics;
    gw_accesslog *alog;
    pthread_mutex_t mu; /* gen swap, reload */
    gw_gen *gen;        /* current (a reference) */
    atomic_uint_fast64_t gen_seq;
    uint64_t next_seq;
    /* health thread */
    pthread_t hthread;
    bool hthread_ok;
    uv_loop_t hloop;
    bool hloop_ok;
    uv_async_t hasync;
    atomic_bool hstop;
};

/* server.c */
gw_gen *gw__gen_acquire(gw_server *s); /* a reference to the current generation */
void gw__gen_release(gw_gen *g);
uint64_t gw__now_ms(void); /* monotonic */

/* server.c: the steps' worker hooks (on_worker_stop once stopping and no request is live) */
void gw__worker_steps_stop(gw_worker *w);

/* metrics.c (private additions): fallback answers by route slot and mode (worker thread);
 * breaker state of a cluster slot (any thread; transition: count it) */
void gw_metrics_fallback(gw_metrics *m, unsigned worker, int route_slot, int mode);
void gw_metrics_breaker(gw_metrics *m, int cluster_slot, int state, bool transition);

/* proxy.c */
void gw__worker_cache_free(gw_worker *w);
void gw__ctx_free_list(gw_worker *w);
void gw__worker_sweep(gw_worker *w);
int gw__worker_refresh(gw_worker *w);
void gw__worker_close_pools(gw_worker *w);
void gw__worker_pool_stats(gw_worker *w);
void gw__proxy_handler(net_request *req, void *arg); /* arg: gw_server */
void gw__worker_start(net_worker *nw, void *arg);
void gw__worker_stop(net_worker *nw, void *arg);

#endif
