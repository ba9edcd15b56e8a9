/* rbac_etcd.c: keeps an RBAC policy slot in step with one etcd key (zt.h, "Policy from etcd").
 *
 * Start: one read of the key (its header revision R), parse, install; then a thread runs
 * etcd_watch from R + 1, so that no write between the read and the watch is missed. Each PUT
 * is parsed away from the slot and installed only when it parses (a bad policy never reaches
 * readers). A DELETE changes nothing but is reported: taking the policy away must neither open
 * the gateway (no policy = allow) nor lock it (no policy = deny all) on what may be an
 * operator's mistake; removing access is done by writing a policy that says so.
 *
 * Invariants: `rev` (atomic; written by the start thread before the watcher exists, then by
 * the watcher only) is the mod revision of the policy in the slot; a PUT whose revision is not
 * above it (a resync after a compaction that read the same value) is not parsed again. The
 * stop flag is the only state the stopping thread shares with the watcher.
 */
#include "dengbao/etcd.h"
#include "dengbao/zt.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

struct zt_rbac_etcd {
    etcd *client;
    zt_rbac_slot *slot;
    char *key;
    void (*on_event)(void *arg, int kind, const char *msg);
    void *arg;
    atomic_bool stop;        /* set by zt_rbac_etcd_stop, read by the watch */
    _Atomic int64_t rev;     /* mod revision of the policy in force */
    int64_t start_rev;       /* first revision the watch reports */
    pthread_mutex_t install; /* orders the start's install before the watcher's */
    pthread_t thread;
    bool running;
};

static void report(zt_rbac_etcd *w, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
report(zt_rbac_etcd *w, int kind, const char *fmt, ...)
{
    if (w->on_event == NULL) {
        return;
    }
    char msg[DBAO_ERR_MSG_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    w->on_event(w->arg, kind, msg);
}

static int
on_watch_event(void *arg, const etcd_event *ev)
{
    zt_rbac_etcd *w = arg;
    int64_t cur = atomic_load_explicit(&w->rev, memory_order_relaxed);
    if (ev->type == ETCD_EVENT_DELETE) {
        report(w, ZT_RBAC_ETCD_DELETED,
               "rbac policy key '%s' deleted at revision %" PRId64
               "; the policy of revision %" PRId64 " stays in force",
               w->key, ev->mod_revision, cur);
        return 0;
    }
    if (ev->mod_revision <= cur) {
        return 0; /* the policy in force already */
    }
    zt_rbac *p = NULL;
    dbao_err e = {0};
    int rc = zt_rbac_parse(&p, ev->value, ev->value_len, w->key, &e);
    if (rc != 0) {
        report(w, ZT_RBAC_ETCD_REJECTED,
               "rbac policy revision %" PRId64 " rejected, revision %" PRId64 " stays in force: %s",
               ev->mod_revision, cur, e.msg);
        return 0;
    }
    size_t rules = zt_rbac_num_rules(p);
    pthread_mutex_lock(&w->install);
    zt_rbac_slot_set(w->slot, p);
    atomic_store_explicit(&w->rev, ev->mod_revision, memory_order_relaxed);
    pthread_mutex_unlock(&w->install);
    report(w, ZT_RBAC_ETCD_LOADED, "rbac policy '%s' revision %" PRId64 " loaded: %zu rules%s",
           w->key, ev->mod_revision, rules, ev->resync ? " (resync)" : "");
    return 0;
}

static void
on_watch_error(void *arg, int code, const char *msg)
{
    (void) code;
    zt_rbac_etcd *w = arg;
    report(w, ZT_RBAC_ETCD_ERROR, "rbac policy watch of '%s': %s; retrying", w->key, msg);
}

static void *
watch_main(void *arg)
{
    zt_rbac_etcd *w = arg;
    etcd_watch_opts o = {.start_revision = w->start_rev,
                         .on_event = on_watch_event,
                         .on_error = on_watch_error,
                         .arg = w,
                         .stop = &w->stop};
    dbao_err e = {0};
    int rc = etcd_watch(w->client, w->key, &o, &e);
    if (rc != 0) {
        report(w, ZT_RBAC_ETCD_ERROR, "rbac policy watch of '%s' ended: %s", w->key,
               e.msg[0] != 0 ? e.msg : dbao_strerror(rc));
    }
    return NULL;
}

static void
watcher_free(zt_rbac_etcd *w)
{
    etcd_free(w->client);
    pthread_mutex_destroy(&w->install);
    dbao_free(w->key);
    dbao_free(w);
}

int
zt_rbac_etcd_start(zt_rbac_etcd **out, zt_rbac_slot *slot, const char *const *endpoints,
                   size_t num_endpoints, const char *key, uint32_t timeout_ms,
                   void (*on_event)(void *arg, int kind, const char *msg), void *arg, dbao_err *err)
{
    *out = NULL;
    if (slot == NULL || key == NULL || *key == 0) {
        return dbao_err_set(err, DBAO_EINVAL, "rbac etcd: a slot and a key are needed");
    }
    zt_rbac_etcd *w = dbao_calloc(1, sizeof *w);
    size_t klen = strlen(key);
    if (w == NULL || (w->key = dbao_malloc(klen + 1)) == NULL) {
        dbao_free(w);
        return dbao_err_set(err, DBAO_ENOMEM, "rbac etcd: out of memory");
    }
    memcpy(w->key, key, klen + 1);
    w->slot = slot;
    w->on_event = on_event;
    w->arg = arg;
    atomic_init(&w->stop, false);
    atomic_init(&w->rev, 0);
    pthread_mutex_init(&w->install, NULL);
    int rc = etcd_new(&w->client, endpoints, num_endpoints, timeout_ms, err);
    if (rc != 0) {
        watcher_free(w);
        return rc;
    }
    etcd_kv kv;
    rc = etcd_get(w->client, &kv, key, err);
    if (rc != 0) {
        watcher_free(w);
        return rc;
    }
    if (!kv.found) {
        etcd_kv_cleanup(&kv);
        watcher_free(w);
        return dbao_err_set(err, -ENOENT, "rbac etcd: policy key '%s' does not exist", key);
    }
    zt_rbac *p = NULL;
    rc = zt_rbac_parse(&p, kv.value, kv.value_len, key, err);
    int64_t mod = kv.mod_revision;
    w->start_rev = kv.revision + 1;
    etcd_kv_cleanup(&kv);
    if (rc != 0) {
        watcher_free(w);
        return rc;
    }
    size_t rules = zt_rbac_num_rules(p);
    atomic_store_explicit(&w->rev, mod, memory_order_relaxed);
    /* Installed after the thread exists, so that a failure to start it leaves the slot as it
     * was; the lock keeps a newer revision the watcher may already have seen from being
     * overwritten by this one. */
    pthread_mutex_lock(&w->install);
    rc = pthread_create(&w->thread, NULL, watch_main, w);
    if (rc != 0) {
        pthread_mutex_unlock(&w->install);
        zt_rbac_unref(p);
        watcher_free(w);
        return dbao_err_set(err, -rc, "rbac etcd: cannot start the watcher thread");
    }
    w->running = true;
    zt_rbac_slot_set(slot, p);
    pthread_mutex_unlock(&w->install);
    report(w, ZT_RBAC_ETCD_LOADED, "rbac policy '%s' revision %" PRId64 " loaded: %zu rules", key,
           mod, rules);
    *out = w;
    return 0;
}

void
zt_rbac_etcd_stop(zt_rbac_etcd *w)
{
    if (w == NULL) {
        return;
    }
    /* Pairs with the acquire load in etcd_watch's stop check. */
    atomic_store_explicit(&w->stop, true, memory_order_release);
    if (w->running) {
        pthread_join(w->thread, NULL);
    }
    watcher_free(w);
}

int64_t
zt_rbac_etcd_revision(const zt_rbac_etcd *w)
{
    return atomic_load_explicit(&((zt_rbac_etcd *) w)->rev, memory_order_relaxed);
}
