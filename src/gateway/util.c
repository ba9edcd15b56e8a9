/* util.c: the gateway's request helpers: numeric addresses ("host:port", "[v6]:port"), CIDR
 * ranges, the client address behind trusted proxies (X-Forwarded-For) and W3C Trace Context
 * (traceparent).
 *
 * Everything here runs per request (except the CIDR parser), so it is written by hand over
 * fixed buffers: no allocation, no locale-dependent library calls. Addresses are compared in
 * their 16-byte IPv4-mapped form (inet_pton does the parsing), so "10.0.0.0/8" is stored as
 * ::ffff:10.0.0.0/104 and matches both "10.1.2.3" and "::ffff:10.1.2.3".
 *
 * X-Forwarded-For is walked from the right: each entry is trimmed of spaces and tabs, may carry
 * a port ("1.2.3.4:5678", "[::1]:80") or brackets, and empty elements (", ,") are skipped.
 * Anything else that does not parse as a numeric address ("unknown", an obfuscated identifier
 * of RFC 7239, garbage) stops the walk: the last good address wins. The walk also stops at the
 * first address that is not a trusted proxy: that is the client.
 *
 * Random ids. New trace ids come from OpenSSL's RAND_bytes, drawn 4 KiB at a time per thread
 * (they must be unpredictable enough not to collide across gateways). Span (parent) ids only need
 * to be unique within a trace and are made per request, so they come from a per-thread xorshift64*
 * generator seeded once from RAND_bytes: cheap and lock-free; it is not meant to be unpredictable.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "dengbao/gateway.h"
#include "internal.h"

int
gw_parse_ip(const char *s, size_t len, uint8_t out[16])
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return DBAO_EFORMAT;
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct in_addr a4;
    if (memchr(buf, ':', len) == NULL) {
        if (inet_pton(AF_INET, buf, &a4) != 1)
            return DBAO_EFORMAT;
        memset(out, 0, 10);
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        return 0;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, buf, &a6) != 1)
        return DBAO_EFORMAT;
    memcpy(out, &a6, 16);
    return 0;
}

static int
parse_port(const char *s, uint16_t *out)
{
    unsigned v = 0;
    if (*s == '\0')
        return DBAO_EFORMAT;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return DBAO_EFORMAT;
        v = v * 10 + (unsigned) (*s - '0');
        if (v > 65535)
            return DBAO_EFORMAT;
    }
    *out = (uint16_t) v;
    return 0;
}

int
gw_parse_addr(const char *s, gw_addr *out)
{
    uint8_t ip[16];
    const char *host, *colon;
    size_t hlen;
    if (s == NULL || out == NULL)
        return DBAO_EFORMAT;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return DBAO_EFORMAT;
        host = s + 1;
        hlen = (size_t) (close - host);
        colon = close + 1;
        if (memchr(host, ':', hlen) == NULL)
            return DBAO_EFORMAT; /* brackets are for IPv6 only */
    } else {
        colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return DBAO_EFORMAT; /* bare IPv6 needs brackets */
        host = s;
        hlen = (size_t) (colon - s);
    }
    if (gw_parse_ip(host, hlen, ip) != 0)
        return DBAO_EFORMAT;
    uint16_t port;
    if (parse_port(colon + 1, &port) != 0)
        return DBAO_EFORMAT;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->port = port;
    return 0;
}

int
gw_cidr_parse(const char *s, gw_cidr *out)
{
    if (s == NULL || out == NULL)
        return DBAO_EFORMAT;
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t) (slash - s) : strlen(s);
    uint8_t ip[16];
    if (gw_parse_ip(s, alen, ip) != 0)
        return DBAO_EFORMAT;
    bool v4 = memchr(s, ':', alen) == NULL;
    unsigned max = v4 ? 32 : 128, prefix = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3)
            return DBAO_EFORMAT;
        prefix = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return DBAO_EFORMAT;
            prefix = prefix * 10 + (unsigned) (*p - '0');
        }
        if (prefix > max)
            return DBAO_EFORMAT;
    }
    if (v4)
        prefix += 96;
    /* clear the host bits so that matching is a plain masked compare */
    for (unsigned i = 0; i < 16; i++) {
        unsigned bits = prefix > i * 8 ? prefix - i * 8 : 0;
        if (bits < 8)
            ip[i] &= (uint8_t) (0xff00u >> bits);
    }
    memcpy(out->addr, ip, 16);
    out->prefix = (uint8_t) prefix;
    return 0;
}

static bool
cidr_match_ip(const gw_cidr *v, size_t n, const uint8_t ip[16])
{
    for (size_t k = 0; k < n; k++) {
        unsigned prefix = v[k].prefix, i = 0;
        for (; prefix >= 8; prefix -= 8, i++)
            if (ip[i] != v[k].addr[i])
                break;
        if (prefix >= 8)
            continue;
        if (prefix == 0 || ((ip[i] ^ v[k].addr[i]) & (uint8_t) (0xff00u >> prefix)) == 0)
            return true;
    }
    return false;
}

bool
gw_cidr_match(const gw_cidr *v, size_t n, const char *addr)
{
    uint8_t ip[16];
    if (v == NULL || n == 0 || addr == NULL || gw_parse_ip(addr, strlen(addr), ip) != 0)
        return false;
    return cidr_match_ip(v, n, ip);
}

/* xff_entry extracts the address of one X-Forwarded-For element [s, e) into out (numeric,
 * without brackets or port). Returns 1 for an address, 0 for an empty element, -1 otherwise. */
static int
xff_entry(const char *s, const char *e, char out[64], uint8_t ip[16])
{
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (s == e)
        return 0;
    const char *hs = s, *he = e;
    if (*s == '[') {
        const char *close = memchr(s, ']', (size_t) (e - s));
        if (close == NULL)
            return -1;
        hs = s + 1;
        he = close;
        if (close + 1 != e) {
            if (close[1] != ':' || close + 2 == e)
                return -1;
            for (const char *p = close + 2; p < e; p++)
                if (*p < '0' || *p > '9')
                    return -1;
        }
    } else {
        const char *c1 = memchr(s, ':', (size_t) (e - s));
        if (c1 != NULL && memchr(c1 + 1, ':', (size_t) (e - c1 - 1)) == NULL) {
            he = c1; /* IPv4 with a port */
            if (c1 + 1 == e)
                return -1;
            for (const char *p = c1 + 1; p < e; p++)
                if (*p < '0' || *p > '9')
                    return -1;
        }
    }
    size_t len = (size_t) (he - hs);
    if (gw_parse_ip(hs, len, ip) != 0)
        return -1;
    memcpy(out, hs, len);
    out[len] = '\0';
    return 1;
}

int
gw_client_addr(const gw_cidr *trusted, size_t num_trusted, const char *peer, const char *xff,
               char out[64], char *xff_out, size_t xff_cap)
{
    size_t plen = peer ? strlen(peer) : 0;
    if (plen >= 64)
        return DBAO_ERANGE;
    memcpy(out, peer ? peer : "", plen + 1);
    uint8_t ip[16];
    bool trusted_peer =
        peer != NULL && gw_parse_ip(peer, plen, ip) == 0 && cidr_match_ip(trusted, num_trusted, ip);
    size_t xlen = (trusted_peer && xff != NULL) ? strlen(xff) : 0;

    if (trusted_peer && xlen > 0) {
        const char *end = xff + xlen;
        char cand[64];
        while (end > xff) {
            const char *start = end;
            while (start > xff && start[-1] != ',')
                start--;
            int r = xff_entry(start, end, cand, ip);
            if (r < 0)
                break;
            if (r > 0) {
                memcpy(out, cand, strlen(cand) + 1);
                if (!cidr_match_ip(trusted, num_trusted, ip))
                    break;
            }
            end = start > xff ? start - 1 : xff;
        }
    }
    if (xff_out != NULL) {
        size_t need = (xlen > 0 ? xlen + 2 : 0) + plen + 1;
        if (need > xff_cap)
            return DBAO_ERANGE;
        char *p = xff_out;
        if (xlen > 0) {
            memcpy(p, xff, xlen);
            p += xlen;
            *p++ = ',';
            *p++ = ' ';
        }
        memcpy(p, peer ? peer : "", plen + 1);
    }
    return 0;
}

/* ---- traceparent ---- */

static int
hexval_lower(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int
hex_lower_decode(const char *s, uint8_t *out, size_t n)
{
    uint8_t any = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval_lower(s[2 * i]), lo = hexval_lower(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return DBAO_EFORMAT;
        out[i] = (uint8_t) (hi << 4 | lo);
        any |= out[i];
    }
    return any ? 0 : DBAO_EFORMAT; /* all-zero ids are invalid */
}

int
gw_traceparent_parse(const char *s, gw_traceparent *out)
{
    uint8_t ver;
    if (s == NULL || out == NULL)
        return DBAO_EFORMAT;
    size_t len = strnlen(s, 56);
    if (len < 55)
        return DBAO_EFORMAT;
    int hi = hexval_lower(s[0]), lo = hexval_lower(s[1]);
    if (hi < 0 || lo < 0)
        return DBAO_EFORMAT;
    ver = (uint8_t) (hi << 4 | lo);
    if (ver == 0xff)
        return DBAO_EFORMAT;
    if (ver == 0 && len != 55)
        return DBAO_EFORMAT;
    if (len > 55 && s[55] != '-')
        return DBAO_EFORMAT; /* a later version may append fields after a dash */
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return DBAO_EFORMAT;
    gw_traceparent t;
    if (hex_lower_decode(s + 3, t.trace_id, 16) != 0 ||
        hex_lower_decode(s + 36, t.parent_id, 8) != 0)
        return DBAO_EFORMAT;
    hi = hexval_lower(s[53]);
    lo = hexval_lower(s[54]);
    if (hi < 0 || lo < 0)
        return DBAO_EFORMAT;
    t.flags = (uint8_t) (hi << 4 | lo);
    *out = t;
    return 0;
}

static _Thread_local uint64_t span_state;
/* trace ids: RAND_bytes output taken 4 KiB at a time per thread (one DRBG call per 256 new
 * traces instead of one per request: RAND_bytes costs ~0.5 us, ~4% of a proxied request) */
static _Thread_local uint8_t trace_pool[4096];
static _Thread_local size_t trace_pool_off = sizeof trace_pool;

static uint64_t
span_next(void)
{
    if (span_state == 0) {
        uint64_t seed = 0;
        if (RAND_bytes((unsigned char *) &seed, sizeof(seed)) != 1 || seed == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = ((uint64_t) ts.tv_sec * 1000000007u) ^ (uint64_t) ts.tv_nsec ^
                   (uint64_t) (uintptr_t) &span_state;
        }
        span_state = seed ? seed : 0x9e3779b97f4a7c15u;
    }
    uint64_t x = span_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    span_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

void
gw_traceparent_child(const char *in, char out[56], char trace_id[33])
{
    gw_traceparent t;
    if (in == NULL || gw_traceparent_parse(in, &t) != 0) {
        uint64_t any = 0;
        if (trace_pool_off + 16 > sizeof trace_pool) {
            if (RAND_bytes(trace_pool, sizeof trace_pool) == 1) {
                trace_pool_off = 0;
            }
        }
        if (trace_pool_off + 16 <= sizeof trace_pool) {
            memcpy(t.trace_id, trace_pool + trace_pool_off, 16);
            trace_pool_off += 16;
        } else {
            uint64_t a = span_next(), b = span_next();
            memcpy(t.trace_id, &a, 8);
            memcpy(t.trace_id + 8, &b, 8);
        }
        for (size_t i = 0; i < 16; i++)
            any |= t.trace_id[i];
        if (any == 0)
            t.trace_id[15] = 1;
        t.flags = 0x01;
    }
    uint64_t span;
    do {
        span = span_next();
    } while (span == 0);
    memcpy(t.parent_id, &span, 8);
    memcpy(out, "00-", 3);
    /* dbao_hex_encode ends each run with a NUL: the separators overwrite them, and the
     * flags' NUL ends the header */
    dbao_hex_encode(out + 3, t.trace_id, 16);
    out[35] = '-';
    dbao_hex_encode(out + 36, t.parent_id, 8);
    out[52] = '-';
    dbao_hex_encode(out + 53, &t.flags, 1);
    memcpy(trace_id, out + 3, 32);
    trace_id[32] = '\0';
}
