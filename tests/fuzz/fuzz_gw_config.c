/* fuzz_gw_config.c: libFuzzer target for the gateway configuration parser (gw_config_parse).
 *
 * Invariants: the parser never crashes or leaks on arbitrary bytes; a failure sets an error
 * message starting with the file name; a success yields at least one listener, at least one
 * cluster, each with at least one endpoint, and routes whose cluster index is valid and whose
 * prefix is a normalized path starting with '/'; gw_config_same_listeners(c, c) holds.
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_gw_config/.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/gateway.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_config *c = NULL;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = gw_config_parse(&c, (const char *) data, size, "fuzz.yaml", &err);
    if (rc != 0) {
        assert(c == NULL);
        assert(strncmp(err.msg, "fuzz.yaml", 9) == 0);
        return 0;
    }
    assert(c != NULL);
    assert(c->num_listeners >= 1 && c->num_listeners <= 64);
    assert(c->num_clusters >= 1);
    assert(c->num_routes >= 1 && c->num_routes <= 1024);
    assert(c->workers >= 1);
    for (size_t i = 0; i < c->num_clusters; i++) {
        assert(c->clusters[i].name != NULL);
        assert(c->clusters[i].num_endpoints >= 1);
        assert(c->clusters[i].health.path != NULL);
    }
    for (size_t i = 0; i < c->num_routes; i++) {
        const gw_route *r = &c->routes[i];
        char norm[8192];
        assert(r->cluster < c->num_clusters);
        assert(r->name != NULL && r->prefix != NULL && r->prefix[0] == '/');
        assert(r->prefix_len == strlen(r->prefix));
        if (r->prefix_len < sizeof(norm)) {
            assert(gw_path_normalize(r->prefix, norm, sizeof(norm)) == 0);
            assert(strcmp(norm, r->prefix) == 0);
        }
        (void) gw_route_match(c, r->host, r->prefix);
    }
    for (size_t i = 0; i < c->num_listeners; i++)
        assert((c->listeners[i].tls_cert == NULL) == (c->listeners[i].tls_key == NULL));
    assert(gw_config_same_listeners(c, c));
    gw_config_free(c);
    return 0;
}
