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
