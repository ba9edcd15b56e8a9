/* etcd.h: a small etcd v3 client over libcurl and etcd's JSON gateway (src/common/etcd.c).
 *
 * It speaks the gateway that etcd 3.4 serves on its client port (POST /v3/kv/range, put,
 * deleterange, watch): keys and values travel as standard base64 with padding and every int64
 * as a JSON string; a watch is one long POST whose answer is a chunked stream of JSON messages,
 * each wrapped in {"result":...} (../shared/SERVICES.md). Only what dengbao needs is here: get,
 * put and delete of one key, and a watch of one key that survives restarts and failover.
 *
 * Endpoints are "http://host:port" (a bare "host:port" means http). A call tries the endpoint
 * that last answered first and moves on to the next one on a transport error or an HTTP 5xx
 * answer, all within the handle's timeout. Errors name the endpoint and the cause:
 * "etcd: 127.0.0.1:23791: connection refused". Values are never put into messages.
 *
 * Threading: a handle is immutable after etcd_new apart from an atomic "preferred endpoint"
 * index, and every call uses its own curl handle, so any number of threads may call any
 * function on one handle at once (etcd_free excepted). libcurl's global initialisation is done
 * once, on the first etcd_new.
 */
#ifndef DENGBAO_ETCD_H
#define DENGBAO_ETCD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct etcd etcd;

#define ETCD_MAX_ENDPOINTS 16
#define ETCD_MAX_VALUE     (8u << 20) /* values above this are refused (decoded bytes) */

/* etcd_new makes a handle for `num_endpoints` (1..ETCD_MAX_ENDPOINTS) endpoints; each
 * blocking call (get, put, delete) finishes within `timeout_ms` (0: 2000). Nothing is
 * contacted yet. Returns 0, DBAO_EINVAL (no endpoint, a bad URL: the message names it) or
 * DBAO_ENOMEM. Release with etcd_free (NULL is a no-op). */
int etcd_new(etcd **out, const char *const *endpoints, size_t num_endpoints, uint32_t timeout_ms,
             dbao_err *err);
void etcd_free(etcd *h);

/* One key's value as etcd_get returns it. found=false: the key does not exist (value NULL,
 * the revisions of the key 0); `revision` is always the store's revision at the read (the
 * revision to watch from is revision + 1). `value` is NUL-terminated (the NUL not counted in
 * value_len); free it with etcd_kv_cleanup. */
typedef struct etcd_kv {
    bool found;
    char *value;
    size_t value_len;
    int64_t mod_revision;
    int64_t create_revision;
    int64_t version;
    int64_t revision; /* header revision */
} etcd_kv;

void etcd_kv_cleanup(etcd_kv *kv); /* frees value and zeroes *kv; the zero state is safe */

/* etcd_get reads `key` into *out (zeroed first). Returns 0 (also for an absent key:
 * out->found false), -ETIMEDOUT, DBAO_EIO (every endpoint failed; the message names the last
 * one and why), DBAO_EFORMAT (an answer that is not what etcd sends), DBAO_ERANGE (value over
 * ETCD_MAX_VALUE) or DBAO_ENOMEM. */
int etcd_get(etcd *h, etcd_kv *out, const char *key, dbao_err *err);

/* etcd_put stores `value` (`len` bytes) under `key`; *out_revision (may be NULL) receives the
 * revision of the write. Returns 0 or a code as etcd_get. A put that timed out may still have
 * been applied. */
int etcd_put(etcd *h, int64_t *out_revision, const char *key, const void *value, size_t len,
             dbao_err *err);

/* etcd_delete deletes `key`; *out_deleted (may be NULL) receives how many keys went (0 or 1),
 * *out_revision (may be NULL) the revision after the delete. Returns 0 or a code as etcd_get. */
int etcd_delete(etcd *h, int64_t *out_deleted, int64_t *out_revision, const char *key,
                dbao_err *err);

/* ---- watch --------------------------------------------------------------------------------- */

typedef enum etcd_event_type {
    ETCD_EVENT_PUT = 0,
    ETCD_EVENT_DELETE = 1,
} etcd_event_type;

/* One change of the watched key. `value` (PUT only; NUL-terminated, not counted) and `key` are
 * valid during the callback only. resync=true: the event was not streamed but made up from a
 * fresh read after etcd compacted the revision the watch had to resume from (changes in
 * between are lost; the event carries the key's current state: PUT with its value, or DELETE
 * when it no longer exists, with mod_revision then the store's revision). */
typedef struct etcd_event {
    etcd_event_type type;
    const char *key;
    const char *value;
    size_t value_len;
    int64_t mod_revision;
    bool resync;
} etcd_event;

typedef struct etcd_watch_opts {
    /* First revision to report (0: changes after the watch starts; normally the revision of
     * an etcd_get + 1, so that nothing between the read and the watch is missed). */
    int64_t start_revision;
    /* Called on the calling thread for each change, in revision order; a non-zero return
     * ends the watch and etcd_watch returns that value. */
    int (*on_event)(void *arg, const etcd_event *ev);
    /* Optional: called on the calling thread when the stream failed or could not be opened,
     * before the reconnection back-off (`msg` as an error message; `code` a negative code). */
    void (*on_error)(void *arg, int code, const char *msg);
    void *arg;
    /* Required: the watch ends (etcd_watch returns 0) within about 50 ms once *stop is true. */
    const atomic_bool *stop;
    uint32_t backoff_min_ms; /* 0: 100; doubled on each failure in a row */
    uint32_t backoff_max_ms; /* 0: 2000 */
} etcd_watch_opts;

/* etcd_watch watches `key` and blocks until *opts->stop becomes true or on_event returns
 * non-zero. A broken stream (etcd restarted, endpoint down, leader change) is reopened with
 * back-off, on the next endpoint, from the revision after the last one reported, so no change
 * is lost or reported twice; a compacted start revision is answered by a fresh read (a resync
 * event) and the watch goes on from there. Returns 0 (stopped), on_event's non-zero value,
 * DBAO_EINVAL (no stop flag or callback) or DBAO_ENOMEM. Connection failures are never fatal:
 * they go to on_error and the watch retries. */
int etcd_watch(etcd *h, const char *key, const etcd_watch_opts *opts, dbao_err *err);

/* etcd__watch_feed (for the fuzz target): runs the watch stream parser over `len` bytes cut
 * into two deliveries at `cut`, as curl would hand them over, reporting events to `opts`
 * (on_event only). Returns the number of events delivered, or a negative code when the
 * stream was refused (malformed message, over the size limit). */
int etcd__watch_feed(const uint8_t *data, size_t len, size_t cut, const etcd_watch_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_ETCD_H */
