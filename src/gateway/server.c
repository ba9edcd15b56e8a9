/* server.c: the gateway server's life: listeners, workers, generations (reload), the admin
 * endpoint, the health-check thread.
 *
 * Threads: the controlling thread (gw_server_new/start/wait/free, reload), the net layer's
 * worker threads (one loop each, per listener; proxy.c runs there), the admin server's one
 * worker, and one health thread with its own loop that runs the active checks of the current
 * generation through its own small pools (one connection per endpoint).
 *
 * Reload: a new generation is built completely (config, cluster health state carried over by
 * cluster name and endpoint address, metric slots) before it is published with one atomic
 * store of a sequence number under srv->mu; workers switch at their next request or tick (see
 * gwsrv.h). Listeners, workers and the admin address are fixed for the server's life: a
 * configuration that changes them is refused, and the running one stays.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gwsrv.h"

uint64_t
gw__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

/* ---- circuit breakers ---- */

/* on_breaker_change runs on whichever worker thread caused the change (no lock held) */
static void
on_breaker_change(void *arg, const char *name, const zt_breaker_event *ev)
{
    gw_breaker *b = arg;
    gw_metrics_breaker(b->srv->metrics, b->slot, (int) ev->to, true);
    if (b->srv->o.on_breaker) {
        b->srv->o.on_breaker(b->srv->o.breaker_arg, name, (int) ev->from, (int) ev->to);
    }
}

static void
breaker_release(gw_breaker *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        zt_breaker_free(b->zb);
        dbao_free(b);
    }
}

static int
breaker_new(gw_breaker **out, gw_server *s, const gw_cluster *cl, int slot, dbao_err *err)
{
    gw_breaker *b = dbao_calloc(1, sizeof *b);
    if (b == NULL) {
        return DBAO_ENOMEM;
    }
    atomic_init(&b->refs, 1);
    b->srv = s;
    b->slot = slot;
    b->conf = cl->breaker;
    zt_breaker_opts o = {
        .window_ms = cl->breaker.window_ms,
        .buckets = cl->breaker.buckets,
        .min_requests = cl->breaker.min_requests,
        .error_permille = cl->breaker.error_permille,
        .slow_permille = cl->breaker.slow_permille,
        .slow_ms = cl->breaker.slow_ms,
        .open_ms = cl->breaker.open_ms,
        .probes = cl->breaker.probes,
        .successes = cl->breaker.successes,
        .on_change = on_breaker_change,
        .cb_arg = b,
    };
    dbao_err e2 = {0};
    int rc = zt_breaker_new(&b->zb, cl->name, &o, &e2);
    if (rc != 0) {
        dbao_err_set(err, rc, "cluster '%s': breaker: %s", cl->name, e2.msg);
        dbao_free(b);
        return rc;
    }
    gw_metrics_breaker(s->metrics, slot, ZT_CIRCUIT_CLOSED, false);
    *out = b;
    return 0;
}

static bool
breaker_conf_equal(const gw_breaker_conf *a, const gw_breaker_conf *b)
{
    return a->enabled == b->enabled && a->window_ms == b->window_ms && a->buckets == b->buckets &&
           a->min_requests == b->min_requests && a->error_permille == b->error_permille &&
           a->slow_permille == b->slow_permille && a->slow_ms == b->slow_ms &&
           a->open_ms == b->open_ms && a->probes == b->probes && a->successes == b->successes;
}

/* ---- generations ---- */

static void
gen_free(gw_gen *g)
{
    if (g == NULL) {
        return;
    }
    if (g->cs) {
        for (size_t i = 0; i < g->cfg->num_clusters; i++) {
            gw_cluster_state_free(g->cs[i]);
        }
    }
    if (g->br) {
        for (size_t i = 0; i < g->cfg->num_clusters; i++) {
            breaker_release(g->br[i]);
        }
    }
    dbao_free(g->br);
    dbao_free(g->cs);
    dbao_free(g->ep_base);
    dbao_free(g->route_slot);
    dbao_free(g->cluster_slot);
    gw_config_free(g->cfg);
    dbao_free(g);
}

static int
gen_new(gw_gen **out, gw_server *s, gw_config *cfg, const gw_gen *prev, dbao_err *err)
{
    gw_gen *g = dbao_calloc(1, sizeof *g);
    if (g == NULL) {
        gw_config_free(cfg);
        return DBAO_ENOMEM;
    }
    g->cfg = cfg;
    atomic_init(&g->refs, 1);
    size_t nc = cfg->num_clusters, nr = cfg->num_routes;
    g->cs = dbao_calloc(nc ? nc : 1, sizeof *g->cs);
    g->ep_base = dbao_calloc(nc ? nc : 1, sizeof *g->ep_base);
    g->cluster_slot = dbao_calloc(nc ? nc : 1, sizeof *g->cluster_slot);
    g->route_slot = dbao_calloc(nr ? nr : 1, sizeof *g->route_slot);
    g->br = dbao_calloc(nc ? nc : 1, sizeof *g->br);
    if (!g->cs || !g->ep_base || !g->cluster_slot || !g->route_slot || !g->br) {
        gen_free(g);
        return DBAO_ENOMEM;
    }
    for (size_t i = 0; i < nc; i++) {
        int rc = gw_cluster_state_new(&g->cs[i], &cfg->clusters[i]);
        if (rc != 0) {
            dbao_err_set(err, rc, "cannot create the state of cluster '%s'", cfg->clusters[i].name);
            gen_free(g);
            return rc;
        }
        g->ep_base[i] = g->num_eps;
        g->num_eps += cfg->clusters[i].num_endpoints;
        int slot = gw_metrics_cluster_slot(s->metrics, cfg->clusters[i].name);
        g->cluster_slot[i] = slot < 0 ? 0 : slot;
        if (cfg->clusters[i].breaker.enabled) {
            /* carry the breaker over when the cluster keeps its name and breaker options */
            for (size_t j = 0; prev && j < prev->cfg->num_clusters; j++) {
                gw_breaker *pb = prev->br ? prev->br[j] : NULL;
                if (pb && strcmp(prev->cfg->clusters[j].name, cfg->clusters[i].name) == 0 &&
                    breaker_conf_equal(&pb->conf, &cfg->clusters[i].breaker)) {
                    atomic_fetch_add_explicit(&pb->refs, 1, memory_order_relaxed);
                    g->br[i] = pb;
                    break;
                }
            }
            if (g->br[i] == NULL) {
                rc = breaker_new(&g->br[i], s, &cfg->clusters[i], g->cluster_slot[i], err);
                if (rc != 0) {
                    gen_free(g);
                    return rc;
                }
            }
        }
        /* carry the health verdicts over from the previous generation */
        if (prev) {
            for (size_t j = 0; j < prev->cfg->num_clusters; j++) {
                const gw_cluster *pc = &prev->cfg->clusters[j];
                if (strcmp(pc->name, cfg->clusters[i].name) != 0) {
                    continue;
                }
                for (size_t e = 0; e < cfg->clusters[i].num_endpoints; e++) {
                    const gw_addr *a = &cfg->clusters[i].endpoints[e];
                    for (size_t f = 0; f < pc->num_endpoints; f++) {
                        if (pc->endpoints[f].port == a->port &&
                            strcmp(pc->endpoints[f].host, a->host) == 0) {
                            gw_endpoint_state *d = &g->cs[i]->eps[e];
                            gw_endpoint_state *o = &prev->cs[j]->eps[f];
                            atomic_store(&d->healthy, atomic_load(&o->healthy));
                            atomic_store(&d->eject_until_ms, atomic_load(&o->eject_until_ms));
                        }
                    }
                }
            }
        }
    }
    for (size_t i = 0; i < nr; i++) {
        int slot = gw_metrics_route_slot(s->metrics, cfg->routes[i].name);
        g->route_slot[i] = slot < 0 ? 0 : slot;
    }
    *out = g;
    return 0;
}

gw_gen *
gw__gen_acquire(gw_server *s)
{
    pthread_mutex_lock(&s->mu);
    gw_gen *g = s->gen;
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    return g;
}

void
gw__gen_release(gw_gen *g)
{
    if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
        gen_free(g);
    }
}

/* ---- workers ---- */

static void
on_tick(uv_timer_t *t)
{
    gw_worker *w = t->data;
    if (!w->stopping) {
        gw__worker_refresh(w);
    }
    gw__worker_sweep(w);
    gw__worker_pool_stats(w);
    if (w->srv->alog) {
        gw_accesslog_flush(w->srv->alog, w->index);
    }
}

/* The steps' own per-worker handles: created before the first request, closed once the
 * worker is stopping and its last request was logged (a step may still need its handles to
 * finish a request that is draining). */
static void
worker_steps_start(gw_worker *w)
{
    gw_server *s = w->srv;
    for (size_t i = 0; i < s->num_steps; i++) {
        if (s->steps[i].on_worker_start) {
            s->steps[i].on_worker_start(w->index, w->loop, s->steps[i].arg);
        }
    }
    w->steps_started = true;
}

void
gw__worker_steps_stop(gw_worker *w)
{
    if (!w->steps_started || w->steps_stopped) {
        return;
    }
    w->steps_stopped = true;
    gw_server *s = w->srv;
    for (size_t i = 0; i < s->num_steps; i++) {
        if (s->steps[i].on_worker_stop) {
            s->steps[i].on_worker_stop(w->index, w->loop, s->steps[i].arg);
        }
    }
}

void
gw__worker_start(net_worker *nw, void *arg)
{
    gw_worker *base = arg;
    gw_worker *w = &base[net_worker_index(nw)];
    w->nw = nw;
    w->loop = net_worker_loop(nw);
    net_worker_set_data(nw, w);
    gw__worker_refresh(w);
    worker_steps_start(w);
    if (uv_timer_init(w->loop, &w->tick) == 0) {
        w->tick.data = w;
        w->tick_open = true;
        uv_timer_start(&w->tick, on_tick, 1000, 1000);
    }
}

void
gw__worker_stop(net_worker *nw, void *arg)
{
    (void) arg;
    gw_worker *w = net_worker_data(nw);
    if (w == NULL || w->stopping) {
        return;
    }
    w->stopping = true;
    if (w->tick_open) {
        uv_timer_stop(&w->tick);
        uv_close((uv_handle_t *) &w->tick, NULL);
        w->tick_open = false;
    }
    gw__worker_close_pools(w);
    if (w->live == 0) {
        gw__worker_steps_stop(w);
    }
    if (w->srv->alog) {
        gw_accesslog_flush(w->srv->alog, w->index);
    }
}

/* ---- admin ---- */

static void
health_lines(gw_server *s, char **out)
{
    gw_gen *g = gw__gen_acquire(s);
    size_t cap = 256 + g->num_eps * 160, len = 0;
    char *b = dbao_malloc(cap);
    if (b == NULL) {
        gw__gen_release(g);
        *out = NULL;
        return;
    }
    len += (size_t) snprintf(b + len, cap - len,
                             "# HELP dengbao_gateway_upstream_healthy 1 if the endpoint takes "
                             "requests (active checks and passive ejection)\n"
                             "# TYPE dengbao_gateway_upstream_healthy gauge\n");
    uint64_t now = gw__now_ms();
    for (size_t c = 0; c < g->cfg->num_clusters; c++) {
        const gw_cluster *cl = &g->cfg->clusters[c];
        for (size_t e = 0; e < cl->num_endpoints && len < cap; e++) {
            gw_endpoint_state *st = &g->cs[c]->eps[e];
            bool up = atomic_load(&st->healthy) && atomic_load(&st->eject_until_ms) <= now;
            len += (size_t) snprintf(b + len, cap - len,
                                     "dengbao_gateway_upstream_healthy{cluster=\"%s\","
                                     "endpoint=\"%s:%u\"} %d\n",
                                     cl->name, cl->endpoints[e].host, cl->endpoints[e].port,
                                     up ? 1 : 0);
        }
    }
    if (len >= cap) {
        len = cap - 1;
    }
    b[len] = 0;
    gw__gen_release(g);
    *out = b;
}

static void
admin_handler(net_request *req, void *arg)
{
    gw_server *s = arg;
    const char *path = net_request_path(req);
    const char *m = net_request_method(req);
    if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
        net_request_respond(req, 405, "text/plain", "method not allowed\n", 19);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        net_request_respond(req, 200, "text/plain", "ok\n", 3);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        char *extra = NULL, *text = NULL;
        size_t len = 0;
        health_lines(s, &extra);
        if (s->o.metrics_extra != NULL) {
            dbao_buf more;
            dbao_buf_init(&more);
            if ((extra != NULL && dbao_buf_put(&more, extra, strlen(extra)) != 0) ||
                s->o.metrics_extra(s->o.metrics_arg, &more) != 0 ||
                dbao_buf_putc(&more, '\0') != 0) {
                dbao_buf_free(&more);
                dbao_free(extra);
                net_request_respond(req, 500, "text/plain", "out of memory\n", 14);
                return;
            }
            dbao_free(extra);
            extra = dbao_buf_take(&more, NULL);
        }
        if (gw_metrics_render(s->metrics, extra, &text, &len) != 0) {
            dbao_free(extra);
            net_request_respond(req, 500, "text/plain", "out of memory\n", 14);
            return;
        }
        dbao_free(extra);
        net_request_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        dbao_free(text);
        return;
    }
    net_request_respond(req, 404, "text/plain", "not found\n", 10);
}

/* ---- active health checks (own thread, own loop) ---- */

typedef struct hc_ep hc_ep;
typedef struct hc_state {
    gw_server *s;
    gw_gen *gen;
    net_pool **pools; /* per flat endpoint */
    hc_ep *eps;
    uv_timer_t timer;
    uint64_t seq;
} hc_state;

struct hc_ep {
    hc_state *h;
    size_t cluster, ep;
    net_exchange *x;
    bool busy;    /* an exchange is running (x) */
    bool verdict; /* its verdict was given (from the head) */
    uint64_t next_ms;
    char head[512];
    size_t head_len;
    gw_gen *gen; /* the generation the check belongs to */
};

static void
hc_on_head(net_exchange *x, const net_resp_head *hd, void *arg)
{
    (void) x;
    hc_ep *e = arg;
    if (hd->status >= 200) {
        bool ok = hd->status < 400;
        if (gw_health_check_result(e->gen->cs[e->cluster], e->ep, ok)) {
            const gw_cluster *cl = &e->gen->cfg->clusters[e->cluster];
            fprintf(stderr, "gateway: upstream %s:%u of cluster '%s' is %s (health check: %d)\n",
                    cl->endpoints[e->ep].host, cl->endpoints[e->ep].port, cl->name,
                    ok ? "healthy" : "unhealthy", hd->status);
        }
        e->verdict = true; /* the body is drained, then on_end */
    }
}

static void
hc_on_data(net_exchange *x, const uint8_t *d, size_t n, void *arg)
{
    (void) x;
    (void) d;
    (void) n;
    (void) arg;
}

static void
hc_on_end(net_exchange *x, void *arg)
{
    (void) x;
    hc_ep *e = arg;
    e->busy = false;
    e->x = NULL;
}

static void
hc_on_error(net_exchange *x, int err, unsigned flags, void *arg)
{
    (void) x;
    (void) flags;
    hc_ep *e = arg;
    e->busy = false;
    e->x = NULL;
    if (err == -ECANCELED || e->verdict) {
        return;
    }
    if (gw_health_check_result(e->gen->cs[e->cluster], e->ep, false)) {
        const gw_cluster *cl = &e->gen->cfg->clusters[e->cluster];
        fprintf(stderr, "gateway: upstream %s:%u of cluster '%s' is unhealthy (health check: %s)\n",
                cl->endpoints[e->ep].host, cl->endpoints[e->ep].port, cl->name, dbao_strerror(err));
    }
}

static const net_exchange_cbs hc_cbs = {hc_on_head, hc_on_data, hc_on_end, hc_on_error, NULL};

static void
hc_drop(hc_state *h)
{
    if (h->gen == NULL) {
        return;
    }
    for (size_t i = 0; i < h->gen->num_eps; i++) {
        if (h->eps[i].busy && h->eps[i].x) {
            net_exchange_abort(h->eps[i].x); /* no callback after this */
            h->eps[i].busy = false;
        }
        if (h->pools[i]) {
            net_pool_close(h->pools[i], NULL, NULL);
        }
    }
    dbao_free(h->pools);
    dbao_free(h->eps);
    h->pools = NULL;
    h->eps = NULL;
}

static int
hc_load(hc_state *h)
{
    gw_gen *g = gw__gen_acquire(h->s);
    h->seq = g->seq;
    h->pools = dbao_calloc(g->num_eps ? g->num_eps : 1, sizeof *h->pools);
    h->eps = dbao_calloc(g->num_eps ? g->num_eps : 1, sizeof *h->eps);
    if (!h->pools || !h->eps) {
        dbao_free(h->pools);
        dbao_free(h->eps);
        h->pools = NULL;
        h->eps = NULL;
        gw__gen_release(g);
        return DBAO_ENOMEM;
    }
    h->gen = g;
    for (size_t c = 0; c < g->cfg->num_clusters; c++) {
        const gw_cluster *cl = &g->cfg->clusters[c];
        for (size_t e = 0; e < cl->num_endpoints; e++) {
            hc_ep *x = &h->eps[g->ep_base[c] + e];
            x->h = h;
            x->cluster = c;
            x->ep = e;
            x->gen = g;
            x->next_ms = 0;
        }
    }
    return 0;
}

static void
hc_tick(uv_timer_t *t)
{
    hc_state *h = t->data;
    gw_server *s = h->s;
    if (atomic_load(&s->hstop)) {
        return;
    }
    uint64_t seq = atomic_load(&s->gen_seq);
    if (h->gen == NULL || h->gen->seq != seq) {
        /* a new generation: wait until no check of the old one is running */
        bool busy = false;
        if (h->gen) {
            for (size_t i = 0; i < h->gen->num_eps; i++) {
                busy |= h->eps[i].busy;
            }
        }
        if (busy) {
            return;
        }
        if (h->gen) {
            gw_gen *old = h->gen;
            hc_drop(h);
            h->gen = NULL;
            gw__gen_release(old);
        }
        if (hc_load(h) != 0) {
            return;
        }
    }
    gw_gen *g = h->gen;
    uint64_t now = gw__now_ms();
    for (size_t c = 0; c < g->cfg->num_clusters; c++) {
        const gw_cluster *cl = &g->cfg->clusters[c];
        if (!cl->health.enabled) {
            continue;
        }
        for (size_t e = 0; e < cl->num_endpoints; e++) {
            size_t i = g->ep_base[c] + e;
            hc_ep *x = &h->eps[i];
            if (x->busy || now < x->next_ms) {
                continue;
            }
            x->next_ms = now + cl->health.interval_ms;
            if (h->pools[i] == NULL) {
                net_pool_opts o = {
                    .host = cl->endpoints[e].host,
                    .port = cl->endpoints[e].port,
                    .max_idle = 1,
                    .connect_timeout_ms = cl->health.timeout_ms,
                    .read_timeout_ms = cl->health.timeout_ms,
                    .write_timeout_ms = cl->health.timeout_ms,
                    .idle_timeout_ms = cl->health.interval_ms * 3,
                };
                if (net_pool_new(&h->pools[i], &h->s->hloop, &o, NULL) != 0) {
                    h->pools[i] = NULL;
                    continue;
                }
            }
            const char *host = cl->endpoints[e].host;
            int n = snprintf(x->head, sizeof x->head,
                             "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dengbao-gateway-health"
                             "\r\n\r\n",
                             cl->health.path ? cl->health.path : "/healthz", host);
            if (n <= 0 || (size_t) n >= sizeof x->head) {
                continue;
            }
            x->verdict = false;
            if (net_exchange_start(&x->x, h->pools[i], x->head, (size_t) n, 0, false, &hc_cbs, x) ==
                0) {
                x->busy = true;
                net_exchange_end(x->x);
            } else {
                x->x = NULL;
            }
        }
    }
}

static void
hc_on_async(uv_async_t *a)
{
    hc_state *h = a->data;
    if (atomic_load(&h->s->hstop)) {
        uv_timer_stop(&h->timer);
        uv_close((uv_handle_t *) &h->timer, NULL);
        uv_close((uv_handle_t *) a, NULL);
        if (h->gen) {
            gw_gen *old = h->gen;
            hc_drop(h);
            h->gen = NULL;
            gw__gen_release(old);
        }
    }
}

static void *
hc_main(void *arg)
{
    gw_server *s = arg;
    hc_state h = {.s = s};
    uv_timer_init(&s->hloop, &h.timer);
    h.timer.data = &h;
    s->hasync.data = &h;
    uv_timer_start(&h.timer, hc_tick, 0, 100);
    uv_run(&s->hloop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- the server ---- */

static void
print_ready(gw_server *s)
{
    for (size_t i = 0; i < s->num_servers; i++) {
        const gw_listener *l = &s->boot->listeners[i];
        bool v6 = strchr(l->addr.host, ':') != NULL;
        fprintf(stderr, "gateway: listening on %s://%s%s%s:%u\n", l->tls_cert ? "https" : "http",
                v6 ? "[" : "", l->addr.host, v6 ? "]" : "", net_server_port(s->servers[i]));
    }
    if (s->admin) {
        fprintf(stderr, "gateway: admin (/healthz, /metrics) on http://%s:%u\n",
                s->boot->admin.host, net_server_port(s->admin));
    }
    fflush(stderr);
}

int
gw_server_new(gw_server **out, gw_config *cfg, const gw_server_opts *o, dbao_err *err)
{
    *out = NULL;
    if (cfg == NULL || cfg->num_listeners == 0) {
        gw_config_free(cfg);
        dbao_err_set(err, DBAO_EINVAL, "the configuration has no listener");
        return DBAO_EINVAL;
    }
    gw_server *s = dbao_calloc(1, sizeof *s);
    if (s == NULL) {
        gw_config_free(cfg);
        return DBAO_ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    if (o) {
        s->o = *o;
    }
    int rc = DBAO_ENOMEM;
    if (o && o->num_steps) {
        s->steps = dbao_calloc(o->num_steps, sizeof *s->steps);
        if (s->steps == NULL) {
            gw_config_free(cfg);
            goto fail;
        }
        memcpy(s->steps, o->steps, o->num_steps * sizeof *s->steps);
        s->num_steps = o->num_steps;
    }
    unsigned workers = cfg->workers ? cfg->workers : 1;
    s->num_workers = (unsigned) cfg->num_listeners * workers;
    rc = gw_metrics_new(&s->metrics, s->num_workers);
    if (rc != 0) {
        gw_config_free(cfg);
        goto fail;
    }
    if (cfg->access_log) {
        rc = gw_accesslog_open(&s->alog, cfg->access_log, s->num_workers, err);
        if (rc != 0) {
            gw_config_free(cfg);
            goto fail;
        }
    }
    gw_gen *g;
    rc = gen_new(&g, s, cfg, NULL, err);
    if (rc != 0) {
        goto fail;
    }
    g->seq = ++s->next_seq;
    s->gen = g;
    s->boot = cfg;
    atomic_fetch_add(&g->refs, 1); /* s->boot points into it: kept for the server's life */
    s->boot_gen = g;
    atomic_store(&s->gen_seq, g->seq);

    s->workers = dbao_calloc(s->num_workers, sizeof *s->workers);
    s->servers = dbao_calloc(cfg->num_listeners, sizeof *s->servers);
    if (!s->workers || !s->servers) {
        rc = DBAO_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < s->num_workers; i++) {
        s->workers[i].srv = s;
        s->workers[i].index = i;
        s->workers[i].listener = i / workers;
    }
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const gw_listener *l = &cfg->listeners[i];
        net_server_opts no = {
            .host = l->addr.host,
            .port = l->addr.port,
            .workers = workers,
            .handler = gw__proxy_handler,
            .handler_arg = s,
            .header_max = cfg->header_max,
            .headers_num_max = cfg->headers_num_max,
            .body_max = cfg->body_max,
            .header_timeout_ms = cfg->header_timeout_ms,
            .body_timeout_ms = cfg->body_timeout_ms,
            .idle_timeout_ms = cfg->idle_timeout_ms,
            .drain_timeout_ms = cfg->drain_timeout_ms,
            .tls_cert = l->tls_cert,
            .tls_key = l->tls_key,
            .tls_client_ca = l->tls_client_ca,
            .client_verify = l->client_verify,
            .stream = true,
            .worker_start = gw__worker_start,
            .worker_stop = gw__worker_stop,
            .worker_arg = &s->workers[i * workers],
        };
        for (unsigned k = 0; k < workers; k++) {
            s->workers[i * workers + k].tls = l->tls_cert != NULL;
        }
        rc = net_server_new(&s->servers[i], &no, err);
        if (rc != 0) {
            goto fail;
        }
        s->num_servers++;
    }
    if (cfg->admin.port) {
        net_server_opts ao = {
            .host = cfg->admin.host,
            .port = cfg->admin.port,
            .workers = 1,
            .handler = admin_handler,
            .handler_arg = s,
        };
        rc = net_server_new(&s->admin, &ao, err);
        if (rc != 0) {
            goto fail;
        }
    }
    if (uv_loop_init(&s->hloop) != 0) {
        rc = DBAO_ENOMEM;
        goto fail;
    }
    s->hloop_ok = true;
    if (uv_async_init(&s->hloop, &s->hasync, hc_on_async) != 0) {
        rc = DBAO_ENOMEM;
        goto fail;
    }
    *out = s;
    return 0;
fail:
    gw_server_free(s);
    return rc;
}

int
gw_server_start(gw_server *s, dbao_err *err)
{
    int rc = pthread_create(&s->hthread, NULL, hc_main, s);
    if (rc != 0) {
        dbao_err_set(err, -rc, "cannot start the health thread");
        return -rc;
    }
    s->hthread_ok = true;
    for (size_t i = 0; i < s->num_servers; i++) {
        rc = net_server_start(s->servers[i], err);
        if (rc != 0) {
            return rc;
        }
    }
    if (s->admin && (rc = net_server_start(s->admin, err)) != 0) {
        return rc;
    }
    if (s->o.log_ready) {
        print_ready(s);
    }
    return 0;
}

int
gw_server_reload(gw_server *s, gw_config *cfg, dbao_err *err)
{
    if (cfg == NULL) {
        return DBAO_EINVAL;
    }
    if (!gw_config_same_listeners(s->boot, cfg)) {
        gw_config_free(cfg);
        dbao_err_set(err, DBAO_EINVAL,
                     "the new configuration changes listeners, workers or the admin address: "
                     "those need a restart; the running configuration stays");
        return DBAO_EINVAL;
    }
    pthread_mutex_lock(&s->mu);
    gw_gen *g;
    int rc = gen_new(&g, s, cfg, s->gen, err);
    if (rc != 0) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    g->seq = ++s->next_seq;
    gw_gen *old = s->gen;
    s->gen = g;
    atomic_store_explicit(&s->gen_seq, g->seq, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    gw__gen_release(old);
    return 0;
}

int
gw_server_reload_file(gw_server *s, dbao_err *err)
{
    if (s->o.config_path == NULL) {
        dbao_err_set(err, DBAO_EINVAL, "no configuration file to reload (quick mode)");
        return DBAO_EINVAL;
    }
    gw_config *cfg;
    int rc = gw_config_load(&cfg, s->o.config_path, err);
    if (rc != 0) {
        return rc;
    }
    return gw_server_reload(s, cfg, err);
}

int
gw_server_reopen_logs(gw_server *s, dbao_err *err)
{
    return s->alog ? gw_accesslog_reopen(s->alog, err) : 0;
}

void
gw_server_stop(gw_server *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->num_servers; i++) {
        net_server_stop(s->servers[i]);
    }
    if (s->admin) {
        net_server_stop(s->admin);
    }
}

void
gw_server_wait(gw_server *s)
{
    for (size_t i = 0; i < s->num_servers; i++) {
        net_server_wait(s->servers[i]);
    }
    if (s->admin) {
        net_server_wait(s->admin);
    }
    if (s->hthread_ok) {
        atomic_store(&s->hstop, true);
        uv_async_send(&s->hasync);
        pthread_join(s->hthread, NULL);
        s->hthread_ok = false;
    }
}

void
gw_server_free(gw_server *s)
{
    if (s == NULL) {
        return;
    }
    gw_server_stop(s);
    gw_server_wait(s);
    for (size_t i = 0; i < s->num_servers; i++) {
        net_server_free(s->servers[i]);
    }
    net_server_free(s->admin);
    if (s->hloop_ok) {
        if (!uv_is_closing((uv_handle_t *) &s->hasync) && s->hasync.loop) {
            uv_close((uv_handle_t *) &s->hasync, NULL);
        }
        uv_run(&s->hloop, UV_RUN_DEFAULT);
        uv_loop_close(&s->hloop);
    }
    for (unsigned i = 0; i < s->num_workers && s->workers; i++) {
        gw__ctx_free_list(&s->workers[i]);
        gw__worker_cache_free(&s->workers[i]);
    }
    if (s->alog) {
        for (unsigned i = 0; i < s->num_workers; i++) {
            gw_accesslog_flush(s->alog, i);
        }
        gw_accesslog_close(s->alog);
    }
    /* the current generation, and the boot one if it is another */
    gw__gen_release(s->gen);
    gw__gen_release(s->boot_gen);
    gw_metrics_free(s->metrics);
    dbao_free(s->workers);
    dbao_free(s->servers);
    dbao_free(s->steps);
    pthread_mutex_destroy(&s->mu);
    dbao_free(s);
}

uint16_t
gw_server_listener_port(const gw_server *s, size_t i)
{
    return i < s->num_servers ? net_server_port(s->servers[i]) : 0;
}

uint16_t
gw_server_admin_port(const gw_server *s)
{
    return s->admin ? net_server_port(s->admin) : 0;
}

unsigned
gw_server_num_workers(const gw_server *s)
{
    return s->num_workers;
}
