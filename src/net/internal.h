/* internal.h: what the files of src/net share (private; no other component includes it).
 * The unit tests and the fuzz target include it (-I src/net) to drive the parser directly.
 *
 *   net__parser    the request parsing state machine: llhttp (strict) plus dengbao's limits
 *                  and framing rules, with no socket and no loop, so that a fuzzer can feed it
 *                  arbitrary bytes (parser.c).
 *   net_request    the request object the handler receives; built by the parser, answered by
 *                  net_request_respond (request.c), delivered by a worker (server.c).
 *   net__tls_*     OpenSSL glue: the server context and per-connection helpers (tls.c).
 */
#ifndef DENGBAO_NET_INTERNAL_H
#define DENGBAO_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <openssl/ssl.h>

#include "dengbao/net.h"

/* ---- request ---- */

typedef struct net__worker net__worker;
typedef struct net__conn net__conn;

/* net__pend: an entry of a worker's queue of deferred work (run from a uv_idle callback on the
 * loop: body callbacks, drain callbacks, corked output, parsing the next request). Embedded in
 * the connection and the request, so queueing never allocates. */
typedef struct net__pend {
    struct net__pend *next;
    bool queued;
    bool is_conn; /* the entry is a net__conn's (else a net_request's) */
} net__pend;

/* streamed request body state */
enum { NET__B_NONE = 0, NET__B_READING = 1 };
/* streamed response state */
enum { NET__R_NONE = 0, NET__R_STARTED = 1, NET__R_ENDED = 2 };

typedef struct net__hdr {
    uint32_t name_off;  /* offset of the NUL-terminated, lowercased-on-compare name in head */
    uint32_t value_off; /* offset of the NUL-terminated value in head */
} net__hdr;

struct net_request {
    /* Filled by the parser; read-only once the request is handed to the handler. */
    char *head;      /* owned: target, then "name\0value\0" pairs, then path and query */
    size_t head_len; /* bytes used */
    size_t head_cap;
    size_t target_off, path_off, query_off;
    net__hdr *hdrs; /* owned */
    size_t num_hdrs, hdrs_cap;
    uint8_t *body; /* owned; body_len bytes and a NUL (body_cap >= body_len + 1) */
    size_t body_len, body_cap;
    const char *method_name; /* static */
    int method;              /* llhttp_method_t */
    int http_minor;
    bool keep_alive; /* the client allows the connection to stay open */
    net_peer peer;   /* copied from the connection at dispatch */

    /* Response: owned by whoever owns the request (the handler until it responds). */
    char *xhdr; /* owned: extra header lines "Name: value\r\n" */
    size_t xhdr_len, xhdr_cap;
    char *resp; /* owned: the whole response (head and body) */
    size_t resp_len, resp_cap;
    bool resp_close; /* the response says "Connection: close" */
    int resp_status;

    /* Delivery: loop thread of `worker` only (except `next`, under worker->mu). */
    net__worker *worker;
    net__conn *conn; /* NULL once the connection is gone: the response is then discarded */
    net_request *next;

    /* Streaming (opts.stream; loop thread only). */
    bool stream;
    bool body_complete; /* the parser has seen the end of the body (or there is none) */
    bool expect_continue;
    bool body_done_cb; /* on_end or on_error was called */
    bool paused;
    bool released; /* the handler has ended, aborted or responded: the server owns it */
    bool finished; /* taken off its connection */
    bool r_chunked, r_nobody, r_close;
    uint8_t bstate, rstate;
    int body_err; /* pending body error (DBAO_EIO, -ETIMEDOUT, DBAO_ERANGE, DBAO_EFORMAT) */
    int cb_depth; /* callbacks of this request on the stack */
    int64_t content_length;
    int64_t r_len; /* declared response length, or NET_LEN_CHUNKED */
    uint64_t r_sent;
    net_body_cbs bcbs;
    void *barg;
    net_drain_fn drain_fn;
    void *drain_arg;
    size_t drain_low;
    net__pend pend;
};

/* net__request_free frees a request and everything it owns. NULL is a no-op. */
void net__request_free(net_request *req);

/* net__request_reset clears a request for reuse by the next message on the same connection,
 * keeping its buffers (large body and response buffers are freed instead). */
void net__request_reset(net_request *req);

/* net__response_build serialises a complete response into req->resp. `close` adds
 * "Connection: close" (else "Connection: keep-alive" for HTTP/1.0 clients only); `head_only`
 * omits the body but keeps its Content-Length (HEAD). Returns 0 or DBAO_ENOMEM. */
int net__response_build(net_request *req, int status, const char *content_type, const void *body,
                        size_t body_len, bool close, bool head_only);

/* net__xhdr_append appends checked header lines to req->xhdr. Returns 0 or DBAO_ENOMEM. */
int net__xhdr_append(net_request *req, const char *data, size_t len);

/* net__content_type_ok checks a Content-Type value (no control characters, <= 256 bytes). */
bool net__content_type_ok(const char *ct, size_t *out_len);

/* net__head_max bounds the bytes net__head_write writes; net__head_write writes a response
 * head by hand: status line, Date, Content-Type (if ct), Content-Length (if >= 0),
 * Transfer-Encoding: chunked (if chunked), the `conn` line(s), req->xhdr and the empty line.
 * Returns the end of what it wrote. */
size_t net__head_max(size_t ct_len, const net_request *req);
char *net__head_write(char *p, const net_request *req, int status, const char *ct, size_t ct_len,
                      int64_t content_length, bool chunked, const char *conn, size_t conn_len);

/* net__response_canned returns a static response for a protocol error (400, 408, ...),
 * always with "Connection: close", and its length. */
const char *net__response_canned(int status, size_t *len);

/* ---- parser ---- */

typedef struct net__limits {
    size_t header_max;
    size_t headers_num_max;
    size_t body_max;
} net__limits;

typedef enum net__phase {
    NET__PHASE_IDLE = 0, /* between messages */
    NET__PHASE_HEAD = 1, /* request line and header section */
    NET__PHASE_BODY = 2, /* body */
} net__phase;

typedef struct net__parser {
    llhttp_t http;
    net__limits lim;
    net_request *msg;  /* owned: the message being read */
    net_request *done; /* owned: a complete message not yet taken */
    net__phase phase;
    size_t head_raw; /* raw bytes of the current message's head fed so far */
    int cl_count, te_count, host_count, expect_count;
    bool te_chunked_only; /* every Transfer-Encoding value was exactly "chunked" */
    bool expect_continue; /* Expect: 100-continue */
    bool expect_other;    /* an expectation other than 100-continue */
    bool want_continue;   /* the connection should send "100 Continue" now (cleared by it) */
    bool field_open;      /* a header name is being read */
    bool value_open;      /* a header value is being read */
    bool failed;
    uint8_t fold_state;       /* obs-fold scan of the head (parser.c fold_scan) */
    int error_status;         /* with failed: the status to answer */
    const char *error_reason; /* with failed: static text, for logs and tests */
    /* Stream mode (set `stream` after init): the handler gets the head at once and the body
     * comes as spans of the fed bytes, one NET__PARSE_BODY per llhttp on_body. */
    bool stream;
    bool kick;        /* a feed of zero bytes may make progress (after BODY) */
    bool head_taken;  /* the current message's head was handed out (its body follows) */
    int ev;           /* the event that paused llhttp */
    const char *span; /* NET__PARSE_BODY: the body bytes */
    size_t span_len;
    uint64_t body_seen; /* decoded body bytes of the current message */
    size_t trailer_raw; /* trailer bytes of a streamed message (not stored) */
    net_request *spare; /* owned: a finished request kept for reuse */
} net__parser;

enum {
    NET__PARSE_MORE = 0,    /* everything consumed; more input needed */
    NET__PARSE_MESSAGE = 1, /* a message is complete: take it (input after it is not consumed) */
    NET__PARSE_ERROR = 2,   /* protocol error: answer error_status and close */
    /* stream mode only: */
    NET__PARSE_HEAD = 3, /* a head with a body is complete: take it; the body follows */
    NET__PARSE_BODY = 4, /* body bytes: span, span_len (inside the fed data) */
    NET__PARSE_END = 5,  /* the streamed body is complete */
};

/* net__parser_init prepares `ps` (caller storage) with the given limits. Cannot fail. */
void net__parser_init(net__parser *ps, const net__limits *lim);

/* net__parser_cleanup frees any message held. */
void net__parser_cleanup(net__parser *ps);

/* net__parser_feed parses `len` bytes and stores in *consumed how many it used. Returns one of
 * NET__PARSE_*. After NET__PARSE_MESSAGE, call net__parser_take before feeding again. After
 * NET__PARSE_ERROR the parser stays failed. */
int net__parser_feed(net__parser *ps, const char *data, size_t len, size_t *consumed);

/* net__parser_take hands over the complete message (the caller owns it) and lets parsing
 * continue with the next one. */
net_request *net__parser_take(net__parser *ps);

/* net__parser_recycle takes back a finished request for reuse (or frees it). */
void net__parser_recycle(net__parser *ps, net_request *req);

/* ---- TLS ---- */

/* net__tls_ctx_new builds a server SSL_CTX: TLS 1.2 minimum, cert chain and key, optional
 * client verification. Returns 0 or DBAO_EFORMAT/DBAO_ECRYPTO with err naming the file. */
int net__tls_ctx_new(SSL_CTX **out, const net_server_opts *o, dbao_err *err);

/* net__tls_peer fills peer->cert_verified, cert_cn and tls_version after a handshake. */
void net__tls_peer(SSL *ssl, net_peer *peer);

#endif /* DENGBAO_NET_INTERNAL_H */
