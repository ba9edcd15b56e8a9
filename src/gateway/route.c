/* route.c: path normalization and route matching.
 *
 * gw_path_normalize is a single left-to-right pass written by hand (it runs per request and
 * decides what the upstream sees): it decodes percent-escapes of unreserved characters
 * (ALPHA DIGIT - . _ ~), keeps every other escape with upper-case hex, merges "//", resolves
 * "." and ".." segments (after decoding, so "%2e%2e" is ".."), and refuses what could make the
 * gateway and an upstream disagree about the path: ".." above the root, encoded '/', '\' or
 * NUL, a literal '\' (some servers treat it as '/'), bad escapes and control bytes.
 * The output is a fixpoint: normalizing it again gives it back unchanged. A trailing '/' is
 * kept ("/a/" and "/a/." give "/a/").
 *
 * Segments are written straight into `out`; ".." backs up to the previous '/', so no stack is
 * needed. Invariant of the loop: out[0..o) is a normalized path ending in '/'.
 *
 * gw_route_match is a linear scan (a configuration holds at most 1024 routes) ranking each
 * matching route by (host class, prefix length); the first of equal rank wins. It uses the
 * lengths stored by the configuration parser (gw_route.prefix_len, host_len) and falls back to
 * strlen for hand-made configurations where they are 0.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/gateway.h"

static int
hexv(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool
unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int
gw_path_normalize(const char *path, char *out, size_t out_cap)
{
    static const char HEX[] = "0123456789ABCDEF";
    if (path == NULL || out == NULL || path[0] != '/')
        return DBAO_EFORMAT;
    if (out_cap < 2)
        return DBAO_ERANGE;
    size_t o = 1, seg = 1;
    out[0] = '/';
    const unsigned char *p = (const unsigned char *) path + 1;
    for (;;) {
        unsigned char c = *p;
        if (c == '/' || c == '\0') {
            size_t n = o - seg;
            if (n == 1 && out[seg] == '.') {
                o = seg;
            } else if (n == 2 && out[seg] == '.' && out[seg + 1] == '.') {
                if (seg == 1)
                    return DBAO_EFORMAT; /* above the root */
                o = seg - 1;
                while (out[o - 1] != '/')
                    o--;
            } else if (n > 0 && c == '/') {
                if (o + 1 >= out_cap)
                    return DBAO_ERANGE;
                out[o++] = '/';
            }
            seg = o;
            if (c == '\0')
                break;
            p++;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c == '\\')
            return DBAO_EFORMAT;
        if (c == '%') {
            int hi = hexv(p[1]), lo = hi >= 0 ? hexv(p[2]) : -1;
            if (hi < 0 || lo < 0)
                return DBAO_EFORMAT;
            unsigned char d = (unsigned char) (hi << 4 | lo);
            if (d == '/' || d == '\\' || d == 0)
                return DBAO_EFORMAT;
            p += 3;
            if (unreserved(d)) {
                if (o + 1 >= out_cap)
                    return DBAO_ERANGE;
                out[o++] = (char) d;
            } else {
                if (o + 3 >= out_cap)
                    return DBAO_ERANGE;
                out[o++] = '%';
                out[o++] = HEX[d >> 4];
                out[o++] = HEX[d & 15];
            }
            continue;
        }
        if (o + 1 >= out_cap)
            return DBAO_ERANGE;
        out[o++] = (char) c;
        p++;
    }
    out[o] = '\0';
    return 0;
}

static inline unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char) (c + 32) : c;
}

static bool
ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char) a[i]) != lower((unsigned char) b[i]))
            return false;
    return true;
}

int
gw_route_match(const gw_config *c, const char *host, const char *path)
{
    if (c == NULL || path == NULL)
        return -1;
    /* the host without port (and without the brackets of an IPv6 literal) */
    const char *h = host;
    size_t hlen = 0;
    if (host != NULL) {
        hlen = strlen(host);
        if (hlen > 0 && host[0] == '[') {
            const char *close = memchr(host, ']', hlen);
            h = host + 1;
            hlen = close ? (size_t) (close - h) : hlen - 1;
        } else {
            const char *colon = memchr(host, ':', hlen);
            if (colon != NULL)
                hlen = (size_t) (colon - host);
        }
        if (hlen > 0 && h[hlen - 1] == '.')
            hlen--; /* "example.com." is "example.com" */
    }
    size_t plen = strlen(path);
    int best = -1;
    unsigned best_class = 0;
    size_t best_len = 0;
    for (size_t i = 0; i < c->num_routes; i++) {
        const gw_route *r = &c->routes[i];
        unsigned cls;
        if (r->host == NULL) {
            cls = 1;
        } else {
            if (host == NULL)
                continue;
            size_t rl = r->host_len ? r->host_len : strlen(r->host);
            if (rl == 1 && r->host[0] == '*') {
                cls = 1;
            } else if (rl >= 2 && r->host[0] == '*' && r->host[1] == '.') {
                /* "*.example.com" matches "a.example.com", not "example.com" */
                if (hlen <= rl - 1 || !ieq(h + hlen - (rl - 1), r->host + 1, rl - 1))
                    continue;
                cls = 2;
            } else {
                if (hlen != rl || !ieq(h, r->host, rl))
                    continue;
                cls = 3;
            }
        }
        if (cls < best_class)
            continue;
        const char *pre = r->prefix ? r->prefix : "/";
        size_t pl = r->prefix_len ? r->prefix_len : strlen(pre);
        if (pl > plen || memcmp(path, pre, pl) != 0)
            continue;
        if (pre[pl - 1] != '/' && path[pl] != '\0' && path[pl] != '/')
            continue; /* not at a segment boundary */
        if (cls > best_class || pl > best_len) {
            best = (int) i;
            best_class = cls;
            best_len = pl;
        }
    }
    return best;
}
