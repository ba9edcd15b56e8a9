/* caller.c: the coordinator's participant calls, libcurl multi on the engine thread.
 *
 * Why libcurl multi with curl_multi_poll on one dedicated thread (and not libuv + the curl
 * socket API, nor net.h's upstream pools): the engine thread already owns the store (a
 * saga_store belongs to one thread) and must interleave group commits with calls; a plain
 * loop "drain requests -> advance sagas -> commit -> start calls -> poll" is simplest to reason
 * about for the ordering rule "state stored before the call, result stored before the next
 * call". curl_multi_poll waits on every transfer's socket at once and curl_multi_wakeup lets
 * other threads (HTTP API) wake it. libcurl gives http and https, DNS, keep-alive connection
 * reuse (one connection cache in the multi handle, so any easy handle reuses any connection),
 * per-transfer timeouts, and strict response parsing.
 *
 * Hand-written: a free list of easy handles (reused: their buffers and settings stay), the
 * small response capture (first bytes of the body only, for "compensation refused" reasons),
 * and the mapping of a finished transfer to (status, curl code, detail).
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "coord.h"

typedef struct call {
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;
    saga_call_done_fn done;
    void *arg;
    char resp[200];
    size_t resp_len;
    char errbuf[CURL_ERROR_SIZE];
    struct call *next_free;
    struct call *next_all; /* every call object, for saga_caller_free */
    bool active;
} call;

struct saga_caller {
    CURLM *multi;
    call *free_list;
    call *all;
    size_t inflight;
};

static size_t
on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    call *c = ud;
    size_t n = size * nmemb;
    size_t room = sizeof c->resp - c->resp_len;
    size_t take = n < room ? n : room;
    memcpy(c->resp + c->resp_len, ptr, take);
    c->resp_len += take;
    return n; /* the rest is read and dropped */
}

int
saga_caller_new(saga_caller **out, unsigned max_host_conns, dbao_err *err)
{
    static int inited;
    if (!inited) { /* first call happens before any engine thread starts (saga_coord_new) */
        if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
            return dbao_err_set(err, DBAO_EIO, "curl: global init failed");
        inited = 1;
    }
    saga_caller *c = calloc(1, sizeof *c);
    if (c == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "caller: out of memory");
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        free(c);
        return dbao_err_set(err, DBAO_ENOMEM, "caller: curl_multi_init failed");
    }
    /* Calls beyond the per-host cap queue inside curl: with 64 connections, 256 transactions
     * in flight against one participant made every call wait for a free connection
     * (measured: about twice the sagas/s with 512 on bench/saga, in-memory participants). */
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long) (max_host_conns ? max_host_conns : 512));
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 4096L);
    *out = c;
    return 0;
}

static void
call_release(saga_caller *c, call *x)
{
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    free(x->body);
    x->body = NULL;
    x->active = false;
    x->next_free = c->free_list;
    c->free_list = x;
}

void
saga_caller_free(saga_caller *c)
{
    if (c == NULL)
        return;
    /* abandon what is still in flight (the engine drained before, within its bound) */
    call *x = c->all;
    while (x != NULL) {
        call *nx = x->next_all;
        if (x->active) {
            curl_multi_remove_handle(c->multi, x->easy);
            curl_slist_free_all(x->hdrs);
            free(x->body);
        }
        curl_easy_cleanup(x->easy);
        free(x);
        x = nx;
    }
    curl_multi_cleanup(c->multi);
    free(c);
}

int
saga_caller_start(saga_caller *c, const char *url, const char *const *headers, size_t num_headers,
                  const char *body, size_t body_len, uint32_t timeout_ms, saga_call_done_fn done,
                  void *arg)
{
    call *x = c->free_list;
    if (x != NULL) {
        c->free_list = x->next_free;
    } else {
        x = calloc(1, sizeof *x);
        if (x == NULL)
            return DBAO_ENOMEM;
        x->easy = curl_easy_init();
        if (x->easy == NULL) {
            free(x);
            return DBAO_ENOMEM;
        }
        x->next_all = c->all;
        c->all = x;
        curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
        curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
        curl_easy_setopt(x->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(x->easy, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(x->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    }
    x->body = malloc(body_len + 1);
    if (x->body == NULL) {
        call_release(c, x);
        return DBAO_ENOMEM;
    }
    memcpy(x->body, body, body_len);
    x->body[body_len] = 0;
    struct curl_slist *h = NULL;
    for (size_t i = 0; i < num_headers; i++) {
        struct curl_slist *nh = curl_slist_append(h, headers[i]);
        if (nh == NULL) {
            curl_slist_free_all(h);
            call_release(c, x);
            return DBAO_ENOMEM;
        }
        h = nh;
    }
    struct curl_slist *nh = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    if (nh == NULL) {
        curl_slist_free_all(h);
        call_release(c, x);
        return DBAO_ENOMEM;
    }
    x->hdrs = nh;
    x->done = done;
    x->arg = arg;
    x->resp_len = 0;
    x->errbuf[0] = 0;
    curl_easy_setopt(x->easy, CURLOPT_URL, url);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long) (timeout_ms ? timeout_ms : 3000));
    if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) {
        call_release(c, x);
        return DBAO_EIO;
    }
    x->active = true;
    c->inflight++;
    return 0;
}

int
saga_caller_poll(saga_caller *c, int timeout_ms)
{
    int running = 0;
    curl_multi_perform(c->multi, &running);
    CURLMsg *m;
    int left;
    bool any = false;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        any = true;
        CURL *e = m->easy_handle;
        CURLcode code = m->data.result;
        call *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **) &x);
        curl_multi_remove_handle(c->multi, e);
        c->inflight--;

        saga_call_result r;
        memset(&r, 0, sizeof r);
        r.curl_code = (int) code;
        curl_off_t took = 0; /* queueing in curl + connect + request + answer */
        if (curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &took) == CURLE_OK && took > 0)
            r.elapsed_us = (int64_t) took;
        if (code == CURLE_OK) {
            long st = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
            r.status = (int) st;
            size_t j = 0;
            for (size_t i = 0; i < x->resp_len && j < sizeof r.detail - 1; i++) {
                unsigned char ch = (unsigned char) x->resp[i];
                r.detail[j++] = (ch >= 0x20 && ch < 0x7f) ? (char) ch : '.';
            }
            r.detail[j] = 0;
        } else {
            snprintf(r.detail, sizeof r.detail, "%.200s",
                     x->errbuf[0] ? x->errbuf : curl_easy_strerror(code));
        }
        saga_call_done_fn done = x->done;
        void *arg = x->arg;
        call_release(c, x);
        done(arg, &r);
    }
    if (any)
        timeout_ms = 0; /* let the engine act on the results at once */
    if (timeout_ms > 0)
        curl_multi_poll(c->multi, NULL, 0, timeout_ms, NULL);
    return (int) c->inflight;
}

void
saga_caller_wakeup(saga_caller *c)
{
    curl_multi_wakeup(c->multi);
}

size_t
saga_caller_inflight(const saga_caller *c)
{
    return c->inflight;
}
