/* fuzz_net_response.c: arbitrary bytes through the upstream client's strict response parser
 * (src/net/resp.h), as a connection feeds it, without sockets.
 *
 * The first input byte picks the read sizes (so that tokens split across reads get
 * exercised), HEAD mode and small limits; the rest is the byte stream from the "upstream".
 * Invariants checked with assert(): a head comes before any body byte and at most one final
 * head per response; every head is sane (status 100..599 and not 101, fields within the limit,
 * names non-empty, no CR/LF/NUL in names or values); never more body bytes than the framing
 * allows (Content-Length, or none for HEAD/1xx/204/304); every data span lies inside the bytes
 * just fed; after an error or the end nothing more is reported (an error stays an error).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "resp.h"

static void
check_head(const net_resp_head *h, size_t num_max)
{
    assert(h->status >= 100 && h->status <= 599 && h->status != 101);
    assert(h->http_minor == 0 || h->http_minor == 1);
    assert(h->num_headers <= num_max);
    assert(h->content_length >= -2);
    if (h->status < 200 || h->status == 204 || h->status == 304) {
        assert(h->content_length == 0);
    }
    if (h->content_length == -2) {
        assert(!h->keep_alive);
    }
    for (size_t i = 0; i < h->num_headers; i++) {
        assert(h->names[i][0] != '\0');
        for (const char *v = h->names[i]; *v; v++) {
            assert(*v != '\r' && *v != '\n');
        }
        for (const char *v = h->values[i]; *v; v++) {
            assert(*v != '\r' && *v != '\n');
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t ctl = data[0];
    data++;
    size--;
    size_t step = (size_t) (ctl & 15) + 1;
    bool head_only = (ctl & 16) != 0;
    size_t header_max = (ctl & 32) ? 256 : 16384;
    size_t num_max = (ctl & 64) ? 4 : 100;
    net_resp r;
    if (net__resp_init(&r, header_max, num_max) != 0) {
        return 0;
    }
    net__resp_reset(&r, head_only);
    bool final_head = false, done = false, failed = false;
    int64_t cl = 0;
    uint64_t body = 0;
    size_t off = 0;
    while (off < size && !done && !failed) {
        size_t n = size - off < step ? size - off : step;
        const uint8_t *p = data + off;
        size_t fed = 0;
        bool again = false;
        while ((fed < n || again) && !done && !failed) {
            size_t used;
            net_resp_ev ev;
            int rc = net__resp_feed(&r, p + fed, n - fed, &used, &ev);
            assert(used <= n - fed);
            if (rc < 0) {
                assert(rc == DBAO_EFORMAT);
                failed = true;
                break;
            }
            if (ev.head != NULL) {
                assert(!final_head);
                check_head(ev.head, num_max);
                if (ev.head->status >= 200) {
                    final_head = true;
                    cl = ev.head->content_length;
                    if (head_only) {
                        assert(cl == 0);
                    }
                }
            }
            again = rc == NET_RESP_DATA;
            if (rc == NET_RESP_DATA) {
                assert(final_head);
                assert(ev.len > 0);
                assert(ev.data >= p + fed && ev.data + ev.len <= p + fed + used);
                body += ev.len;
                assert(cl != 0);
                if (cl >= 0) {
                    assert(body <= (uint64_t) cl);
                }
            } else if (rc == NET_RESP_DONE) {
                assert(final_head);
                if (cl >= 0) {
                    assert(body == (uint64_t) cl);
                }
                done = true;
            } else if (rc == NET_RESP_INFO) {
                assert(!final_head);
            } else {
                assert(rc == NET_RESP_MORE);
                assert(used == n - fed);
            }
            fed += used;
        }
        off += n;
    }
    if (failed) {
        size_t used;
        net_resp_ev ev;
        assert(net__resp_feed(&r, (const uint8_t *) "x", 1, &used, &ev) == DBAO_EFORMAT);
        assert(ev.head == NULL && ev.data == NULL);
        assert(net__resp_eof(&r) == DBAO_EFORMAT);
    } else if (!done) {
        int rc = net__resp_eof(&r);
        assert(rc == NET_RESP_DONE || rc == DBAO_EIO);
        if (rc == NET_RESP_DONE) {
            assert(final_head && cl == -2);
        }
    }
    net__resp_free(&r);
    return 0;
}
