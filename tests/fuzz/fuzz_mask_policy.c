/* fuzz_mask_policy.c: libFuzzer target for the masking policy parser (mask_policy_parse).
 *
 * Invariants: the parser never crashes or leaks on arbitrary bytes; a failure leaves *out NULL
 * and sets a message starting with the file name; a success yields a policy whose every rule
 * has a valid action index that is not clear, role actions that are valid or -1 (clear), a
 * type rule for every type, a valid derived action, and rules found again by their own
 * target (columns through mask_policy_column, fields through mask_policy_field).
 *
 * Key files named by the input are opened relative to the working folder ("fuzz.yaml" has no
 * folder): they normally do not exist, so the key section is exercised for its errors.
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_mask_policy/.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/mask.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mask_policy *p = (mask_policy *) 1;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = mask_policy_parse(&p, (const char *) data, size, "fuzz.yaml", &err);
    if (rc != 0) {
        assert(p == NULL);
        assert(strncmp(err.msg, "fuzz.yaml", 9) == 0);
        return 0;
    }
    assert(p != NULL);
    size_t na = mask_policy_num_actions(p);
    int d = mask_policy_derived_action(p);
    assert(d >= 0 && (size_t) d < na);
    for (int t = 0; t < MASK_T_COUNT; t++) {
        const mask_rule *r = mask_policy_type_rule(p, (mask_type) t);
        assert(r != NULL && r->action >= 0 && (size_t) r->action < na);
    }
    for (size_t i = 0; i < mask_policy_num_rules(p); i++) {
        const mask_rule *r = mask_policy_rule(p, i);
        assert(r != NULL && r->target != NULL);
        assert(r->action >= 0 && (size_t) r->action < na);
        assert(mask_policy_action(p, (size_t) r->action)->fn.kind != MASK_FN_CLEAR);
        for (size_t j = 0; j < r->num_roles; j++)
            assert(r->role_actions[j] >= -1 && r->role_actions[j] < (int) na);
        const mask_rule *f = mask_policy_field(p, r->target, strlen(r->target));
        assert(f == NULL || f == r || strcmp(f->target, r->target) == 0);
    }
    mask_policy_free(p);
    return 0;
}
