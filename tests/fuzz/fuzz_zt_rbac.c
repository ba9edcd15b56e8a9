/* fuzz_zt_rbac.c: libFuzzer target for the RBAC policy parser and matcher (src/zt/rbac.c).
 *
 * Input: policy YAML, then optionally a NUL byte and request lines "roles|method|path|route"
 * (roles comma-separated; route empty for none). Without requests a fixed set of probe
 * requests is checked. Invariants, besides the sanitizers: a refused policy leaves *out NULL
 * and an error "name:line: ..."; every decision names a rule; an allow is never the default
 * or bad-path rule; a path that is not in normalised form is always denied as bad-path; the
 * normalised-form predicate agrees with gw_path_normalize (fixpoint); decisions are
 * deterministic; deny beats allow, so an explicit deny for some roles stays a deny when more
 * roles are added.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gateway.h"
#include "dengbao/zt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_one(const zt_rbac *p, const char *const *roles, size_t nr, const char *method,
          const char *path, const char *route)
{
    const char *rule = NULL, *rule2 = NULL;
    zt_rbac_decision d = zt_rbac_check(p, roles, nr, method, path, route, &rule);
    assert(rule != NULL);
    assert(zt_rbac_check(p, roles, nr, method, path, route, &rule2) == d);
    assert(rule2 == rule);
    bool norm = zt_rbac_path_is_normalized(path);
    char out[1024];
    if (strlen(path) < sizeof(out)) {
        bool fix = gw_path_normalize(path, out, sizeof(out)) == 0 && strcmp(out, path) == 0;
        assert(fix == norm);
    }
    if (!norm) {
        assert(d == ZT_RBAC_DENY && strcmp(rule, ZT_RBAC_RULE_BAD_PATH) == 0);
        return;
    }
    if (d == ZT_RBAC_ALLOW) {
        assert(strcmp(rule, ZT_RBAC_RULE_DEFAULT) != 0 && strcmp(rule, ZT_RBAC_RULE_BAD_PATH) != 0);
    }
    /* deny beats allow: an explicit deny for the first role survives adding the others */
    if (nr > 1) {
        const char *r1 = NULL;
        zt_rbac_decision d1 = zt_rbac_check(p, roles, 1, method, path, route, &r1);
        if (d1 == ZT_RBAC_DENY && strcmp(r1, ZT_RBAC_RULE_DEFAULT) != 0) {
            assert(d == ZT_RBAC_DENY);
        }
    }
}

static const char *const PROBES[] = {"/",        "/a",          "/a/",     "/a/b",    "/admin",
                                     "/admin/x", "/admin/../x", "//admin", "/x/y/z",  "/%3A",
                                     "/p/1",     "/p/1/notes",  "/Admin",  "/a/b/c/", "/healthz"};
static const char *const METHODS[] = {"GET", "POST", "DELETE", "FOO"};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) {
        return 0;
    }
    const uint8_t *sep = memchr(data, 0, size);
    size_t plen = sep ? (size_t) (sep - data) : size;
    zt_rbac *p = (zt_rbac *) 1;
    dbao_err err = {0};
    int rc = zt_rbac_parse(&p, (const char *) data, plen, "f.yaml", &err);
    if (rc != 0) {
        assert(p == NULL);
        assert(rc == DBAO_EFORMAT || rc == DBAO_ERANGE || rc == DBAO_ENOMEM);
        assert(strncmp(err.msg, "f.yaml:", 7) == 0);
        return 0;
    }
    assert(p != NULL);
    zt_rbac_unref(zt_rbac_ref(p));
    if (sep == NULL) {
        static const char *const R[] = {"a", "admin", "user", "doctor", "*"};
        for (size_t i = 0; i < sizeof(PROBES) / sizeof(PROBES[0]); i++) {
            for (size_t m = 0; m < 4; m++) {
                check_one(p, R, 5, METHODS[m], PROBES[i], NULL);
                check_one(p, R + 1, 2, METHODS[m], PROBES[i], "emr");
            }
        }
    } else {
        /* request lines */
        size_t rest = size - plen - 1;
        char *req = malloc(rest + 1);
        assert(req != NULL);
        memcpy(req, sep + 1, rest);
        req[rest] = '\0';
        char *save = NULL;
        for (char *line = strtok_r(req, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            char *f[4] = {line, NULL, NULL, NULL};
            for (int k = 1; k < 4; k++) {
                char *bar = f[k - 1] ? strchr(f[k - 1], '|') : NULL;
                if (bar != NULL) {
                    *bar = '\0';
                    f[k] = bar + 1;
                }
            }
            if (f[2] == NULL) {
                continue;
            }
            const char *roles[16];
            size_t nr = 0;
            char *rs = NULL;
            for (char *r = strtok_r(f[0], ",", &rs); r != NULL && nr < 16;
                 r = strtok_r(NULL, ",", &rs)) {
                roles[nr++] = r;
            }
            check_one(p, roles, nr, f[1], f[2], f[3] && f[3][0] ? f[3] : NULL);
        }
        free(req);
    }
    zt_rbac_unref(p);
    return 0;
}
