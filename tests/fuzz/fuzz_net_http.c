/* fuzz_net_http.c: arbitrary bytes through the server's request parser (src/net/parser.c),
 * exactly as a connection feeds it, without sockets.
 *
 * The first input byte picks the read sizes (so that tokens split across reads get exercised)
 * and small limits (so that the 431 and 413 paths are reachable with short inputs); the rest
 * is the byte stream from the "client". Each complete message is taken, checked and freed, and
 * parsing goes on with the bytes after it, as with pipelining.
 *
 * Every input is parsed twice: in buffered mode (whole messages) and in stream mode (the head
 * at once, then body spans, as the gateway's server runs it; every span must lie inside the
 * bytes just fed). The messages that complete in both runs must agree: same method, target
 * and decoded body (compared by length and a hash). Otherwise no output is compared: only
 * invariants (asserts) and the sanitizers.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void
check_message(const net_request *m, const net__limits *lim)
{
    size_t body_len;
    const uint8_t *body = net_request_body(m, &body_len);
    assert(body != NULL);
    assert(body_len <= lim->body_max);
    assert(body[body_len] == '\0');
    assert(net_request_num_headers(m) <= lim->headers_num_max);
    const char *target = net_request_target(m);
    const char *path = net_request_path(m);
    const char *query = net_request_query(m);
    assert(target[0] == '/' || strcmp(target, "*") == 0);
    assert(strncmp(target, path, strlen(path)) == 0);
    assert(strchr(path, '?') == NULL);
    assert(strlen(path) + (target[strlen(path)] == '?' ? 1 + strlen(query) : 0) == strlen(target));
    for (size_t i = 0; i < net_request_num_headers(m); i++) {
        const char *name, *value;
        net_request_header_at(m, i, &name, &value);
        assert(name[0] != '\0');
        for (const char *v = value; *v; v++) {
            assert((unsigned char) *v >= 0x20 || *v == '\t');
        }
    }
    assert(m->http_minor == 0 || m->http_minor == 1);
    assert(net_request_method(m) != NULL);
}

#define MAX_MSGS 16

typedef struct outcome {
    int count;
    struct {
        int method;
        size_t target_len;
        uint32_t target_hash;
        size_t body_len;
        uint32_t body_hash;
    } m[MAX_MSGS];
} outcome;

static uint32_t
hash(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

static void
record(outcome *o, const net_request *m, size_t body_len, uint32_t body_hash)
{
    if (o->count < MAX_MSGS) {
        const char *t = net_request_target(m);
        o->m[o->count].method = m->method;
        o->m[o->count].target_len = strlen(t);
        o->m[o->count].target_hash = hash(2166136261u, (const uint8_t *) t, strlen(t));
        o->m[o->count].body_len = body_len;
        o->m[o->count].body_hash = body_hash;
    }
    o->count++;
}

static void
check_error(net__parser *ps)
{
    int s = ps->error_status;
    assert(s == 400 || s == 413 || s == 417 || s == 431 || s == 500 || s == 501 || s == 505);
    assert(ps->error_reason != NULL);
    /* A failed parser stays failed. */
    size_t used;
    assert(net__parser_feed(ps, "GET / HTTP/1.1\r\n", 16, &used) == NET__PARSE_ERROR);
}

static void
run_buffered(const uint8_t *data, size_t size, size_t step, const net__limits *lim, outcome *o)
{
    net__parser ps;
    net__parser_init(&ps, lim);
    /* `pending` plays the connection's input buffer: bytes not yet consumed. */
    size_t fed = 0, off = 0;
    while (off < size) {
        if (fed < off) {
            fed = off;
        }
        size_t avail_end = fed + step < size ? fed + step : size;
        fed = avail_end;
        size_t used = 0;
        int r = net__parser_feed(&ps, (const char *) data + off, fed - off, &used);
        assert(used <= fed - off);
        off += used;
        if (r == NET__PARSE_MESSAGE) {
            net_request *m = net__parser_take(&ps);
            assert(m != NULL);
            check_message(m, lim);
            size_t bl;
            const uint8_t *b = net_request_body(m, &bl);
            record(o, m, bl, hash(2166136261u, b, bl));
            /* alternate between freeing and recycling (the connection reuses requests) */
            if (o->count & 1) {
                net__parser_recycle(&ps, m);
            } else {
                net__request_free(m);
            }
        } else if (r == NET__PARSE_ERROR) {
            check_error(&ps);
            break;
        } else {
            assert(r == NET__PARSE_MORE);
            assert(off == fed);
        }
    }
    net__parser_cleanup(&ps);
}

static void
run_stream(const uint8_t *data, size_t size, size_t step, const net__limits *lim, outcome *o)
{
    net__parser ps;
    net__parser_init(&ps, lim);
    ps.stream = true;
    net_request *cur = NULL; /* the message whose body is being streamed */
    size_t body_len = 0;
    uint32_t body_hash = 2166136261u;
    size_t fed = 0, off = 0;
    while (off < size || ps.kick) {
        if (fed < off) {
            fed = off;
        }
        if (fed == off && off < size) {
            fed = fed + step < size ? fed + step : size;
        }
        size_t used = 0;
        const char *at = (const char *) data + off;
        int r = net__parser_feed(&ps, at, fed - off, &used);
        assert(used <= fed - off);
        off += used;
        if (r == NET__PARSE_MESSAGE || r == NET__PARSE_HEAD) {
            assert(cur == NULL);
            net_request *m = net__parser_take(&ps);
            assert(m != NULL);
            check_message(m, lim);
            size_t bl;
            (void) net_request_body(m, &bl);
            assert(bl == 0);
            if (r == NET__PARSE_MESSAGE) {
                assert(net_request_content_length(m) == 0);
                record(o, m, 0, 2166136261u);
                net__parser_recycle(&ps, m);
            } else {
                assert(net_request_content_length(m) != 0);
                cur = m;
                body_len = 0;
                body_hash = 2166136261u;
            }
        } else if (r == NET__PARSE_BODY) {
            assert(cur != NULL);
            assert(ps.span_len > 0);
            assert(ps.span >= at && ps.span + ps.span_len <= at + used);
            body_len += ps.span_len;
            assert(body_len <= lim->body_max);
            if (net_request_content_length(cur) >= 0) {
                assert(body_len <= (uint64_t) net_request_content_length(cur));
            }
            body_hash = hash(body_hash, (const uint8_t *) ps.span, ps.span_len);
        } else if (r == NET__PARSE_END) {
            assert(cur != NULL);
            if (net_request_content_length(cur) >= 0) {
                assert(body_len == (uint64_t) net_request_content_length(cur));
            }
            record(o, cur, body_len, body_hash);
            net__request_free(cur);
            cur = NULL;
        } else if (r == NET__PARSE_ERROR) {
            check_error(&ps);
            break;
        } else {
            assert(r == NET__PARSE_MORE);
            assert(off == fed);
        }
    }
    net__request_free(cur);
    net__parser_cleanup(&ps);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0];
    data++;
    size--;
    net__limits lim = {.header_max = (mode & 0x80) ? 256 : 16384,
                       .headers_num_max = (mode & 0x40) ? 4 : 100,
                       .body_max = (mode & 0x20) ? 16 : (1u << 20)};
    size_t step = (mode & 0x1f) == 0 ? size : (size_t) (mode & 0x1f);
    static outcome a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    run_buffered(data, size, step, &lim, &a);
    run_stream(data, size, step, &lim, &b);
    /* Trailer fields count against different limits in the two modes (stored as headers, or
     * only counted), so one run may stop earlier; what both completed must agree. */
    int n = a.count < b.count ? a.count : b.count;
    for (int i = 0; i < n && i < MAX_MSGS; i++) {
        assert(a.m[i].method == b.m[i].method);
        assert(a.m[i].target_len == b.m[i].target_len);
        assert(a.m[i].target_hash == b.m[i].target_hash);
        assert(a.m[i].body_len == b.m[i].body_len);
        assert(a.m[i].body_hash == b.m[i].body_hash);
    }
    return 0;
}
