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
    size_t resp_len;
    bool resp_close; /* the response says "Connection: close" */
    int resp_status;

    /* Delivery: loop thread of `worker` only (except `next`, under worker->mu). */
    net__worker *worker;
    net__conn *conn; /* NULL once the connection is gone: the response is then discarded */
    net_request *next;
};

/* net__request_free frees a request and everything it owns. NULL is a no-op. */
void net__request_free(net_request *req);

/* net__response_build serialises a complete response into req->resp. `close` adds
 * "Connection: close" (else "Connection: keep-alive" for HTTP/1.0 clients only); `head_only`
 * omits the body but keeps its Content-Length (HEAD). Returns 0 or DBAO_ENOMEM. */
int net__response_build(net_request *req, int status, const char *content_type, const void *body,
                        size_t body_len, bool close, bool head_only);

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
    int error_status;         /* with failed: the status to answer */
    const char *error_reason; /* with failed: static text, for logs and tests */
} net__parser;

enum {
    NET__PARSE_MORE = 0,    /* everything consumed; more input needed */
    NET__PARSE_MESSAGE = 1, /* a message is complete: take it (input after it is not consumed) */
    NET__PARSE_ERROR = 2,   /* protocol error: answer error_status and close */
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

/* ---- TLS ---- */

/* net__tls_ctx_new builds a server SSL_CTX: TLS 1.2 minimum, cert chain and key, optional
 * client verification. Returns 0 or DBAO_EFORMAT/DBAO_ECRYPTO with err naming the file. */
int net__tls_ctx_new(SSL_CTX **out, const net_server_opts *o, dbao_err *err);

/* net__tls_peer fills peer->cert_verified, cert_cn and tls_version after a handshake. */
void net__tls_peer(SSL *ssl, net_peer *peer);

#endif /* DENGBAO_NET_INTERNAL_H */
