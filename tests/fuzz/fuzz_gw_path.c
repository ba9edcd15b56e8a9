/* fuzz_gw_path.c: libFuzzer target for gw_path_normalize and gw_route_match.
 *
 * Invariants on every accepted path: the output starts with '/', contains no "//", no "/./"
 * or "/../" segment (nor ends in "/." or "/.."), no control byte or '\', only upper-case hex in
 * escapes, no escape of an unreserved character, and is a fixpoint: normalizing it again
 * gives it back. An output is never longer than the input. A small fixed route table is then
 * matched against the result (it must not crash; "/" always matches).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gateway.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int
hexv(unsigned char c)
{
    return (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char in[4097], out[4097], again[4097];
    memcpy(in, data, size);
    in[size] = '\0';
    int rc = gw_path_normalize(in, out, sizeof(out));
    if (rc != 0) {
        assert(rc == DBAO_EFORMAT || rc == DBAO_ERANGE);
        return 0;
    }
    size_t n = strlen(out);
    assert(n >= 1 && out[0] == '/');
    assert(n <= strlen(in));
    assert(strstr(out, "//") == NULL);
    assert(strstr(out, "/./") == NULL);
    assert(strstr(out, "/../") == NULL);
    assert(!(n >= 2 && strcmp(out + n - 2, "/.") == 0));
    assert(!(n >= 3 && strcmp(out + n - 3, "/..") == 0));
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) out[i];
        assert(c >= 0x20 && c != 0x7f && c != '\\');
        if (c == '%') {
            int hi = hexv((unsigned char) out[i + 1]);
            int lo = hi >= 0 ? hexv((unsigned char) out[i + 2]) : -1;
            assert(hi >= 0 && lo >= 0);
            unsigned char d = (unsigned char) (hi << 4 | lo);
            assert(!unreserved(d) && d != '/' && d != '\\' && d != 0);
            i += 2;
        }
    }
    assert(gw_path_normalize(out, again, sizeof(again)) == 0);
    assert(strcmp(out, again) == 0);

    gw_route routes[3];
    memset(routes, 0, sizeof(routes));
    routes[0].prefix = (char *) "/";
    routes[1].prefix = (char *) "/api";
    routes[2].prefix = (char *) "/api/v1/";
    routes[2].host = (char *) "*.example.com";
    gw_config c;
    memset(&c, 0, sizeof(c));
    c.routes = routes;
    c.num_routes = 3;
    int r = gw_route_match(&c, "a.example.com:80", out);
    assert(r >= 0);
    if (strncmp(out, "/api/v1/", 8) == 0)
        assert(r == 2);
    assert(gw_route_match(&c, NULL, out) >= 0);
    return 0;
}
