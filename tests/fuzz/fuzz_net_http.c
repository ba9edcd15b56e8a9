/* fuzz_net_http.c: arbitrary bytes through the server's request parser (src/net/parser.c),
 * exactly as a connection feeds it, without sockets.
 *
 * The first input byte picks the read sizes (so that tokens split across reads get exercised)
 * and small limits (so that the 431 and 413 paths are reachable with short inputs); the rest
 * is the byte stream from the "client". Each complete message is taken, checked and freed, and
 * parsing goes on with the bytes after it, as with pipelining. No output is compared: only
 * invariants (asserts) and the sanitizers.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
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
    net__parser ps;
    net__parser_init(&ps, &lim);
    /* `pending` plays the connection's input buffer: bytes not yet consumed. */
    size_t fed = 0, off = 0;
    int messages = 0;
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
            check_message(m, &lim);
            net__request_free(m);
            messages++;
        } else if (r == NET__PARSE_ERROR) {
            int s = ps.error_status;
            assert(s == 400 || s == 413 || s == 417 || s == 431 || s == 500 || s == 501 ||
                   s == 505);
            assert(ps.error_reason != NULL);
            /* A failed parser stays failed. */
            assert(net__parser_feed(&ps, "GET / HTTP/1.1\r\n", 16, &used) == NET__PARSE_ERROR);
            break;
        } else {
            assert(off == fed);
        }
    }
    (void) messages;
    net__parser_cleanup(&ps);
    return 0;
}
