/* resp.h: the strict HTTP/1.x response parser of the upstream client (src/net/client.c), kept
 * separate from the sockets so that the unit tests and the fuzz target can drive it directly.
 *
 * It is llhttp in HTTP_RESPONSE mode with no lenient flag, plus what llhttp allows by spec but
 * a proxy must not: a head larger than header_max bytes, more than headers_num_max fields, a
 * second Content-Length (even an equal one), a second Transfer-Encoding, Content-Length with
 * Transfer-Encoding, a Transfer-Encoding whose final coding is not "chunked", and 101 (no
 * upgrades). HEAD responses (head_only), 1xx, 204 and 304 have no body whatever the headers say.
 *
 * The parser does not call back: net__resp_feed() runs llhttp until one event and returns it
 * (llhttp is paused at every body span and at every message end), so the caller may stop,
 * pause or free its own state between events without re-entrancy questions. Header names and
 * values are collected into one buffer allocated at init (header_max + 2 * headers_num_max
 * bytes: the bytes plus their NULs), never per header.
 *
 * Feeding: call net__resp_feed(r, data, len, &used, &ev) until it has consumed everything or
 * returned DONE / an error; `used` bytes were taken. After NET_RESP_DATA call it again even
 * when no byte is left (len 0): the body's last span may end the message. After NET_RESP_DONE the
 * bytes from `used` on belong to no response (an upstream that sent more than it framed). At EOF
 * call net__resp_eof(): it completes a close-delimited body (DONE) or reports that the response was
 * cut short (DBAO_EIO). net__resp_reset() readies the parser for the next response.
 */
#ifndef DENGBAO_NET_RESP_H
#define DENGBAO_NET_RESP_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/net.h"

enum {
    NET_RESP_MORE = 0, /* all bytes taken, the response is not complete yet */
    NET_RESP_DATA = 1, /* ev->data / ev->len: decoded body bytes */
    NET_RESP_DONE = 2, /* the (final) response is complete */
    NET_RESP_INFO = 3  /* a 1xx response ended (its head is in ev->head); the real one follows */
};

typedef struct net_resp_ev {
    const net_resp_head *head; /* non-NULL: a head completed in this call (deliver it first) */
    const uint8_t *data;       /* NET_RESP_DATA */
    size_t len;
} net_resp_ev;

typedef struct net_resp {
    llhttp_t p;
    llhttp_settings_t s;
    size_t header_max, headers_num_max;
    bool head_only;
    /* head collection */
    char *buf; /* names and values, NUL-terminated, back to back */
    size_t buf_len, buf_cap;
    size_t *offs;       /* 2 * headers_num_max offsets: name, value, name, value... */
    const char **ptrs;  /* 2 * headers_num_max pointers handed out in the head */
    size_t nh;          /* fields collected */
    size_t head_seen;   /* head bytes fed so far (status line and fields) */
    uint8_t fold_state; /* obs-fold scan of the head (fold.h) */
    bool name_open;     /* a field name is being collected */
    bool head_done;     /* the current message's head is complete */
    bool head_ready;    /* a head to report from this feed call */
    bool msg_done;      /* on_message_complete seen */
    bool failed;
    bool cr_pending; /* the last framing byte fed was a CR */
    int n_cl, n_te;
    const uint8_t *body_p; /* last body span */
    size_t body_n;
    bool body_ready;
    net_resp_head head;
} net_resp;

/* net__resp_init allocates the buffers. Returns 0 or DBAO_ENOMEM. */
int net__resp_init(net_resp *r, size_t header_max, size_t headers_num_max);
void net__resp_free(net_resp *r);
/* net__resp_reset readies `r` for a new response; head_only: the request was HEAD. */
void net__resp_reset(net_resp *r, bool head_only);
/* net__resp_feed: see the comment at the top. Returns NET_RESP_* or DBAO_EFORMAT; after an
 * error every further call returns DBAO_EFORMAT. */
int net__resp_feed(net_resp *r, const uint8_t *data, size_t len, size_t *used, net_resp_ev *ev);
/* net__resp_eof: NET_RESP_DONE for a close-delimited body, else DBAO_EIO (or DBAO_EFORMAT
 * after an error). */
int net__resp_eof(net_resp *r);
/* net__resp_needs_eof: the current body is delimited by the close of the connection. */
bool net__resp_needs_eof(const net_resp *r);

#endif /* DENGBAO_NET_RESP_H */
