/* net.h: a small, strict HTTP/1.1 server library (plain TCP or TLS) for dengbao's services.
 *
 * Libraries: libuv (event loops, sockets, timers, cross-thread wake-ups), llhttp (the HTTP/1.1
 * message parser, strict: no lenient flag is ever set) and OpenSSL 3 (TLS through memory BIOs).
 * What is written here by hand, and why: the glue between the three (a connection state
 * machine, pipelining, timeouts, back-pressure, graceful stop), the limits that llhttp leaves to
 * its user (header section bytes and count, body size, duplicate and conflicting framing
 * headers, Host, Expect), the response writer, and a thread-safe completion path so that a
 * handler may answer from any thread. No existing C library gives that set without a large
 * framework around it (h2o, nginx), and the API gateway (issue 5) needs the parts exposed.
 *
 * Model: a server has N workers (default 1). Each worker is one thread running its own
 * uv_loop with its own listening socket on the same address (SO_REUSEPORT, so the kernel
 * spreads connections). A connection lives on one worker for its whole life. When a request
 * (method, target, headers, body) has been read completely, the worker calls the handler on
 * its loop thread. The handler owns the request from then on and must answer it exactly once
 * with net_request_respond, at once or later, from any thread. While a request is
 * outstanding the connection parses nothing more (pipelined requests wait, in order).
 *
 * Lifetime and ownership: a request stays valid (its method, target, headers, body, peer) until
 * net_request_respond returns, even if the client closes the connection meanwhile; the worker
 * then discards the response. net_request_respond copies what it is given.
 *
 * Threading: net_server_new, _start, _wait and _free are called by one controlling thread.
 * net_server_stop may be called from any thread and from a signal handler. net_request_* may
 * be called from any thread by the request's owner (one thread at a time per request).
 * Handlers run on worker threads: with several workers, concurrently.
 *
 * Errors: 0 or a negative DBAO_E* code (common.h), detail in an optional dbao_err. Protocol
 * errors never reach the handler: the server answers 400, 408, 413, 417, 431, 501 or 505 with
 * "Connection: close" and closes the connection after a short lingering read.
 *
 * Process-wide effect: net_server_new sets SIGPIPE to SIG_IGN (a peer that resets a
 * connection must not kill the process).
 */
#ifndef DENGBAO_NET_H
#define DENGBAO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net_server net_server;
typedef struct net_request net_request;
typedef struct net__worker net_worker; /* one worker thread and its loop */
struct uv_loop_s;

/* A handler takes ownership of `req` and must call net_request_respond exactly once. */
typedef void (*net_handler_fn)(net_request *req, void *arg);

typedef enum net_client_verify {
    NET_CLIENT_VERIFY_NONE = 0, /* no client certificate is requested */
    NET_CLIENT_VERIFY_OPTIONAL =
        1,                         /* requested; if sent it must verify, else the handshake fails */
    NET_CLIENT_VERIFY_REQUIRE = 2, /* a client certificate that verifies is required */
} net_client_verify;

/* Server options. Zero fields take the defaults given. Strings are borrowed only during
 * net_server_new. */
typedef struct net_server_opts {
    const char *host;       /* numeric IPv4 or IPv6 address; default "127.0.0.1" */
    uint16_t port;          /* 0: an ephemeral port (see net_server_port) */
    unsigned workers;       /* worker threads, each with its own loop; default 1 */
    net_handler_fn handler; /* required */
    void *handler_arg;
    size_t header_max;          /* bytes of request line + header section; default 16 KiB */
    size_t headers_num_max;     /* header fields; default 100 */
    size_t body_max;            /* decoded body bytes; default 16 MiB */
    uint32_t header_timeout_ms; /* from a request's first byte to its last header; 10 s */
    uint32_t body_timeout_ms;   /* from the end of the headers to the end of the body; 60 s */
    uint32_t idle_timeout_ms;   /* keep-alive wait for a next request (and the TLS
                                   handshake); default 60 s */
    uint32_t drain_timeout_ms;  /* graceful stop: longest wait for in-flight responses before
                                   connections are closed anyway; default 10 s */
    uint32_t max_connections;   /* open connections per server (split over the workers);
                                   default 10000; more are accepted and closed at once */
    int backlog;                /* listen backlog; default 1024 */
    /* TLS: both or neither of cert and key (PEM files; the cert file may hold a chain). */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_client_ca;       /* PEM CA bundle for client certificates (mTLS) */
    net_client_verify client_verify; /* with tls_client_ca; default OPTIONAL when a CA is set */
    const char *const *alpn;         /* TLS ALPN protocols the server accepts, in preference
                                        order, NULL-terminated; NULL: {"http/1.1", NULL}. A
                                        client that offers ALPN but none of these gets a fatal
                                        no_application_protocol alert; a client that offers no
                                        ALPN proceeds without it */

    /* Streaming mode (the gateway). When set, the handler is called as soon as the request
     * head is complete (method, target, headers; net_request_body is then empty), and the
     * body, if any, is delivered by net_request_read_body. "Expect: 100-continue" is answered
     * with "100 Continue" only when the handler first calls net_request_read_body (as nginx
     * does), so a request refused from its head (401, 413, ...) never sends its body. The
     * response may be streamed (net_response_*). Every net_request_*, net_response_* call on
     * a streamed request must be made on the worker's loop thread. body_max still applies: a
     * Content-Length above it is answered 413 before the handler; a chunked body that passes
     * it ends with on_error(DBAO_ERANGE). */
    bool stream;

    /* Worker hooks (optional), called on the worker's own thread: worker_start before its loop
     * runs, worker_stop when a graceful stop begins (close pools, stop timers: the worker ends
     * only once its loop has no more active handles of the caller's and every hold is
     * released). */
    void (*worker_start)(net_worker *w, void *arg);
    void (*worker_stop)(net_worker *w, void *arg);
    void *worker_arg;
} net_server_opts;

/* net_server_new checks the options, loads the TLS material, creates the workers' loops and
 * binds and listens on every worker's socket, so that connections queue in the kernel from
 * the moment it returns; nothing is served until net_server_start. Returns 0 with *out set,
 * or DBAO_EINVAL (options), DBAO_EFORMAT (unreadable certificate, key or CA; mismatched key),
 * -errno from bind/listen (e.g. -EADDRINUSE), DBAO_ENOMEM; *out is then NULL. */
int net_server_new(net_server **out, const net_server_opts *opts, dbao_err *err);

/* net_server_port returns the TCP port the server listens on (useful with port 0). */
uint16_t net_server_port(const net_server *srv);

/* net_server_start starts the worker threads. Returns 0 or -errno (thread creation); on
 * failure the workers already started are stopped and joined. */
int net_server_start(net_server *srv, dbao_err *err);

/* net_server_stop asks every worker to stop gracefully: close the listeners, close idle
 * connections, let in-flight requests finish (their responses are sent with
 * "Connection: close"), and close everything after drain_timeout_ms at the latest. Returns at
 * once; net_server_wait waits for the end. Idempotent. Thread-safe and async-signal-safe. */
void net_server_stop(net_server *srv);

/* net_server_wait joins the worker threads after a stop. A worker returns only once every
 * request it handed to the handler has been responded to (even on closed connections). */
void net_server_wait(net_server *srv);

/* net_server_free stops (if needed), waits and frees the server. NULL is a no-op. */
void net_server_free(net_server *srv);

/* ---- requests ---- */

/* The identity of the peer. */
typedef struct net_peer {
    char addr[64];           /* numeric address of the client, without the port */
    uint16_t port;           /* client port */
    bool tls;                /* the connection is TLS */
    bool cert_verified;      /* a client certificate was presented and verified against the CA */
    char cert_cn[256];       /* its subject CN (UTF-8) when cert_verified, else "" */
    const char *tls_version; /* "TLSv1.3", ... (static string); NULL for plain TCP */
    bool has_cert_sha256;    /* a client certificate was presented and verified (even
                                without a single CN): cert_sha256 is set */
    uint8_t cert_sha256[32]; /* SHA-256 of the verified client certificate's DER (RFC 8705
                                x5t#S256), for certificate-bound tokens */
} net_peer;

/* net_request_method returns the method ("GET", "POST", ...). */
const char *net_request_method(const net_request *req);

/* net_request_target returns the request-target as received ("/v1/x?a=b"). */
const char *net_request_target(const net_request *req);

/* net_request_path returns the path part of the target (before any '?'), not decoded. */
const char *net_request_path(const net_request *req);

/* net_request_query returns the query part of the target (after '?'), "" if none. */
const char *net_request_query(const net_request *req);

/* net_request_header returns the value of the first header named `name` (ASCII case-
 * insensitive), without leading or trailing white space, or NULL if there is none. */
const char *net_request_header(const net_request *req, const char *name);

/* net_request_num_headers and net_request_header_at give every header in order. */
size_t net_request_num_headers(const net_request *req);
void net_request_header_at(const net_request *req, size_t i, const char **name, const char **value);

/* net_request_body returns the decoded body (chunked framing removed) and its length. The
 * pointer is never NULL; the body is followed by a NUL byte that is not counted. */
const uint8_t *net_request_body(const net_request *req, size_t *len);

/* net_request_peer returns the peer of the connection the request came on (a copy taken
 * when the request was read: valid even after the connection closed). */
const net_peer *net_request_peer(const net_request *req);

/* net_request_http_minor returns 0 for HTTP/1.0, 1 for HTTP/1.1. */
int net_request_http_minor(const net_request *req);

/* net_request_add_header adds a response header (before net_request_respond; by the
 * request's owner). Names must be tokens and values must not contain CR, LF or NUL; the
 * server sets Content-Length, Content-Type, Connection and Date itself. Returns 0,
 * DBAO_EINVAL (bad name or value, or a header the server sets), DBAO_ENOMEM. */
int net_request_add_header(net_request *req, const char *name, const char *value);

/* net_request_respond answers the request with `status` (100..599, not 1xx), `content_type`
 * (NULL: no Content-Type) and `body_len` bytes at `body` (copied; may be NULL if 0). It may
 * be called from any thread, exactly once; after it returns the request no longer belongs to
 * the caller, whatever the result. Returns 0, or DBAO_EINVAL (bad status) / DBAO_ENOMEM, in
 * which case the server answers 500 and closes the connection. */
int net_request_respond(net_request *req, int status, const char *content_type, const void *body,
                        size_t body_len);

/* ---- workers (loop thread of the worker unless noted) ---- */

/* net_request_worker returns the worker the request arrived on (any thread). */
net_worker *net_request_worker(const net_request *req);

/* net_worker_index returns the worker's number, 0..workers-1 (any thread). */
unsigned net_worker_index(const net_worker *w);

/* net_worker_loop returns the worker's libuv loop: handles the caller creates on it (upstream
 * connections, timers) run on the worker's thread. The caller closes them in worker_stop. */
struct uv_loop_s *net_worker_loop(net_worker *w);

/* net_worker_set_data / net_worker_data: one pointer of the caller's per worker. */
void net_worker_set_data(net_worker *w, void *data);
void *net_worker_data(const net_worker *w);

/* net_worker_hold / net_worker_release: while holds remain, a stopping worker does not end
 * (an upstream exchange in flight, a health check). Every hold must be released. */
void net_worker_hold(net_worker *w);
void net_worker_release(net_worker *w);

/* net_worker_stopping tells whether a graceful stop has begun on this worker. */
bool net_worker_stopping(const net_worker *w);

/* ---- streaming (servers with opts.stream; loop thread only) ---- */

/* net_request_content_length returns the declared body length: N >= 0 from Content-Length
 * (0 when the request has no body), or -1 for Transfer-Encoding: chunked. */
int64_t net_request_content_length(const net_request *req);

/* net_request_expects_continue tells whether the request carried "Expect: 100-continue". */
bool net_request_expects_continue(const net_request *req);

typedef struct net_body_cbs {
    /* decoded body bytes (chunked framing removed); `data` is valid during the call only */
    void (*on_data)(net_request *req, const uint8_t *data, size_t len, void *arg);
    /* the whole body has arrived (called at once, after read_body returns, for no body) */
    void (*on_end)(net_request *req, void *arg);
    /* the body cannot complete: the client closed the connection (DBAO_EIO), the body timed
     * out (-ETIMEDOUT), bad chunked framing or the body limit (DBAO_EFORMAT / DBAO_ERANGE).
     * No other body callback follows. The request still needs its answer (a response that
     * cannot be delivered any more is discarded); for a protocol error the server closes the
     * connection after that answer. */
    void (*on_error)(net_request *req, int err, void *arg);
} net_body_cbs;

/* net_request_read_body starts the delivery of the body through `cbs` (copied). Called at
 * most once per request, before the response ends. Callbacks are never called from inside
 * net_request_read_body itself (they run from the loop), so the caller may set up state after
 * it returns. Sends "100 Continue" first if the client asked for it. Returns 0, DBAO_EINVAL
 * (not a streamed request, or called twice). A request whose body is not read completely by
 * the time its response ends is answered with "Connection: close" (if read_body was called
 * and the body is still arriving when the response starts, the head cannot know yet: the
 * connection is then closed after the response instead). */
int net_request_read_body(net_request *req, const net_body_cbs *cbs, void *arg);

/* net_request_pause_body stops delivering body bytes (and, past a buffer of 64 KiB, stops
 * reading the socket); net_request_resume_body continues. Back-pressure from the upstream. */
void net_request_pause_body(net_request *req);
void net_request_resume_body(net_request *req);

/* net_response_start begins a streamed response: status (200..599, or 101 is refused),
 * content_type (NULL: none, or the caller puts it in a header block), content_length: N >= 0,
 * or NET_LEN_CHUNKED (Transfer-Encoding: chunked to HTTP/1.1 clients; to HTTP/1.0 clients the
 * body is delimited by closing the connection). For HEAD requests and 204/304 responses no
 * body is sent, but a given Content-Length is written as given (a proxied HEAD keeps the
 * upstream's length). Headers added before (net_request_add_header, net_response_add_header_
 * block) are sent with it. Returns 0, DBAO_EINVAL (bad status, already started),
 * DBAO_ENOMEM. */
#define NET_LEN_CHUNKED (-1)
int net_response_start(net_request *req, int status, const char *content_type,
                       int64_t content_length);

/* net_response_add_header_block adds response header lines at once: `block` is zero or more
 * "Name: value\r\n" lines. Checked once (token names, no CR/LF/NUL in values, none of
 * Content-Length, Transfer-Encoding, Connection, Date, which the server writes) and copied.
 * Content-Type is allowed here. Returns 0, DBAO_EINVAL, DBAO_ENOMEM. */
int net_response_add_header_block(net_request *req, const char *block, size_t len);

/* net_response_write queues body bytes (copied). With a Content-Length, writing more than
 * declared is DBAO_EINVAL. Returns 0, DBAO_EINVAL, DBAO_ENOMEM, DBAO_EIO (the client is gone:
 * the bytes are dropped; the caller should stop producing and end or abort). */
int net_response_write(net_request *req, const void *data, size_t len);

/* net_response_queued returns the bytes written but not yet taken by the kernel. */
size_t net_response_queued(const net_request *req);

/* net_response_on_drain calls fn once, from the loop, when the queued bytes fall to
 * `low_watermark` or below (at once, from the loop, if they already are). One callback at a
 * time: a new call replaces the previous one. fn is not called after end or abort. */
typedef void (*net_drain_fn)(net_request *req, void *arg);
void net_response_on_drain(net_request *req, size_t low_watermark, net_drain_fn fn, void *arg);

/* net_response_end finishes the response (the last chunk for chunked). The request then
 * belongs to the server: the caller must not touch it again. With a Content-Length that was
 * not reached, the connection is closed instead (the client sees a short body, never a wrong
 * one). Returns 0 or DBAO_EIO (the client was gone). */
int net_response_end(net_request *req);

/* net_response_abort ends a started or not started response by closing the connection
 * (mid-body upstream failure: the client must not take a truncated body as complete). The
 * request then belongs to the server. */
void net_response_abort(net_request *req);

/* net_request_respond stays the one-shot form on streamed servers too (start, write, end),
 * but only on the loop thread. */

/* ---- upstream client: keep-alive connection pools (one loop; not thread-safe) ----
 *
 * A pool holds connections to one endpoint (host:port, plain TCP or TLS) on one loop. An
 * exchange sends one request (a head the caller serialised, then a body) and parses the
 * response strictly: llhttp in response mode, no lenient flag, limits on the head bytes and
 * header count, conflicting or duplicate Content-Length / Transfer-Encoding, NUL and bare CR
 * refused (a hostile upstream cannot split responses). Connections are reused when both sides
 * keep them alive and the response was read completely. */

typedef struct net_pool net_pool;
typedef struct net_exchange net_exchange;

typedef struct net_pool_opts {
    const char *host;               /* numeric IPv4 or IPv6 address (copied) */
    uint16_t port;                  /* required */
    unsigned max_idle;              /* idle connections kept; default 64 */
    unsigned max_conns;             /* 0: unlimited; beyond it, exchanges wait in FIFO order */
    uint32_t max_requests_per_conn; /* 0: unlimited */
    uint32_t connect_timeout_ms;    /* default 5000 */
    uint32_t read_timeout_ms;       /* longest silence while a response is due; default 60000 */
    uint32_t write_timeout_ms;      /* longest stall writing the request; default 60000 */
    uint32_t idle_timeout_ms;       /* idle connections are closed after; default 60000 */
    size_t header_max;              /* response head bytes; default 16 KiB */
    size_t headers_num_max;         /* response header fields; default 100 */
    void *tls_ctx;                  /* SSL_CTX * for TLS to the upstream, or NULL (borrowed;
                                       must outlive the pool) */
    const char *tls_sni;            /* server name for SNI and verification (copied) */
} net_pool_opts;

/* net_pool_new creates a pool on `loop`. Returns 0, DBAO_EINVAL, DBAO_ENOMEM. */
int net_pool_new(net_pool **out, struct uv_loop_s *loop, const net_pool_opts *o, dbao_err *err);

/* net_pool_close closes the idle connections and fails queued exchanges (on_error with
 * -ECANCELED); exchanges in flight finish. The pool frees itself when the last one ends
 * and its handles are closed, then calls done(arg) if given. The pool is not usable after. */
void net_pool_close(net_pool *p, void (*done)(void *arg), void *arg);

typedef struct net_pool_stats {
    size_t idle, active, queued;
    uint64_t connects, reuses, connect_errors;
} net_pool_stats;
void net_pool_get_stats(const net_pool *p, net_pool_stats *st);

typedef struct net_resp_head {
    int status;             /* 100..599; 1xx heads are delivered too (status < 200) */
    int http_minor;         /* 0 or 1 */
    int64_t content_length; /* >= 0; -1 chunked; -2 delimited by close; 0 for HEAD/204/304 */
    bool keep_alive;        /* the upstream keeps the connection */
    size_t num_headers;
    const char *const *names; /* valid during on_head only; NUL-terminated, as received */
    const char *const *values;
} net_resp_head;

/* on_error flags */
enum {
    NET_X_REUSED = 1,     /* the exchange ran on a reused (kept-alive) connection */
    NET_X_NOT_SENT = 2,   /* no byte of the request reached the upstream (connect failed,
                             or queued and cancelled) */
    NET_X_NO_RESPONSE = 4 /* no byte of a response arrived */
};

typedef struct net_exchange_cbs {
    void (*on_head)(net_exchange *x, const net_resp_head *h, void *arg);
    void (*on_data)(net_exchange *x, const uint8_t *data, size_t len, void *arg); /* decoded */
    /* the response is complete; the connection is already back in the pool (or closed) and
     * the exchange is freed after this call */
    void (*on_end)(net_exchange *x, void *arg);
    /* failure: -ETIMEDOUT, DBAO_EIO (connect refused, reset, closed early), DBAO_EFORMAT
     * (bad response), -ECANCELED; the exchange is freed after this call. A retry is safe
     * when (flags & NET_X_NOT_SENT), or for an idempotent request when (flags & NET_X_REUSED)
     * and (flags & NET_X_NO_RESPONSE). */
    void (*on_error)(net_exchange *x, int err, unsigned flags, void *arg);
    /* optional: the request's queued bytes fell under 64 KiB (resume the body source) */
    void (*on_drain)(net_exchange *x, void *arg);
} net_exchange_cbs;

/* net_exchange_start sends a request: `head` is the complete request head ("GET / HTTP/1.1
 * \r\n...\r\n\r\n", copied) with its framing header already in it (Content-Length: N or
 * Transfer-Encoding: chunked, matching body_len: N >= 0, or -1 chunked, in which case the
 * pool adds the chunk framing to net_exchange_write's data and the last chunk at
 * net_exchange_end). head_only: the request is HEAD (the response has no body). Callbacks
 * come from the loop, never from inside net_exchange_start. Returns 0 with *out set, or
 * DBAO_EINVAL / DBAO_ENOMEM. */
int net_exchange_start(net_exchange **out, net_pool *p, const char *head, size_t head_len,
                       int64_t body_len, bool head_only, const net_exchange_cbs *cbs, void *arg);

/* net_exchange_write queues request body bytes (copied); net_exchange_end marks the end of
 * the body (required, also for body_len 0). Return 0, DBAO_EINVAL (more than body_len, after
 * end), DBAO_ENOMEM. net_exchange_queued gives the bytes not yet taken by the kernel. */
int net_exchange_write(net_exchange *x, const void *data, size_t len);
int net_exchange_end(net_exchange *x);
size_t net_exchange_queued(const net_exchange *x);

/* net_exchange_pause / _resume: stop and restart reading the response (back-pressure). */
void net_exchange_pause(net_exchange *x);
void net_exchange_resume(net_exchange *x);

/* net_exchange_abort stops an exchange at once: its connection is closed, never reused, and
 * no callback is called any more (the exchange is freed). */
void net_exchange_abort(net_exchange *x);

/* ---- helpers ---- */

/* net_query_get finds the first parameter `key` in a query string ("a=1&b=x%20y") and
 * percent-decodes its value (and '+' as space) into `out` (room for out_cap bytes including
 * the NUL). Returns 0, DBAO_EINVAL if absent, DBAO_EFORMAT for a bad escape or a
 * decoded NUL, DBAO_ERANGE if the value does not fit. */
int net_query_get(const char *query, const char *key, char *out, size_t out_cap);

/* net_status_reason returns the reason phrase for a status code ("Not Found"), or "Unknown". */
const char *net_status_reason(int status);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_NET_H */
