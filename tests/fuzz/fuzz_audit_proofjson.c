/* fuzz_audit_proofjson.c: libFuzzer target for the JSON form of Merkle proofs (proofjson.c),
 * what auditd serves and `dengbao audit verify-proof` reads back from strangers.
 *
 * Invariants:
 *   - audit_proof_from_json returns 0 or DBAO_EFORMAT; on failure the proof is zeroed;
 *   - a proof that parses has a known type, at most AUDIT_PROOF_MAX hashes and numbers within
 *     2^53 - 1; it serialises (audit_proof_to_json) to one line of JSON without a NUL inside,
 *     and that text parses back to the very same proof (every field compared) and serialises
 *     again to the very same bytes: the writer's output is a fixed point of the reader.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include -I src/audit
 *        tests/fuzz/fuzz_audit_proofjson.c <library sources or an instrumented libdengbao.a>
 *        -ljansson -lcrypto
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/audit.h"

#define JSON_INT_MAX ((uint64_t) 9007199254740991) /* 2^53 - 1 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
is_zero(const void *p, size_t len)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < len; i++) {
        if (b[i] != 0) {
            return false;
        }
    }
    return true;
}

static void
assert_same(const audit_proof *a, const audit_proof *b)
{
    assert(a->type == b->type);
    assert(a->num == b->num);
    if (a->type == AUDIT_PROOF_INCLUSION) {
        assert(a->index == b->index && a->size == b->size);
        assert(a->has_leaf == b->has_leaf);
        if (a->has_leaf) {
            assert(memcmp(a->leaf_hash, b->leaf_hash, AUDIT_HASH_LEN) == 0);
        }
    } else {
        assert(a->from == b->from && a->to == b->to);
    }
    assert(memcmp(a->hashes, b->hashes, a->num * AUDIT_HASH_LEN) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    audit_proof p, q;
    char *out = NULL, *out2 = NULL;
    size_t len = 0, len2 = 0;
    int rc;

    rc = audit_proof_from_json(&p, (const char *) data, size, NULL);
    assert(rc == 0 || rc == DBAO_EFORMAT);
    if (rc != 0) {
        assert(is_zero(&p, sizeof(p)));
        return 0;
    }
    assert(p.type == AUDIT_PROOF_INCLUSION || p.type == AUDIT_PROOF_CONSISTENCY);
    assert(p.num <= AUDIT_PROOF_MAX);
    if (p.type == AUDIT_PROOF_INCLUSION) {
        assert(p.index <= JSON_INT_MAX && p.size <= JSON_INT_MAX);
        assert(p.from == 0 && p.to == 0);
    } else {
        assert(p.from <= JSON_INT_MAX && p.to <= JSON_INT_MAX);
        assert(p.index == 0 && p.size == 0 && !p.has_leaf);
    }

    rc = audit_proof_to_json(&p, &out, &len, NULL);
    assert(rc == 0);
    assert(out != NULL && strlen(out) == len);
    assert(memchr(out, '\n', len) == NULL);
    rc = audit_proof_from_json(&q, out, len, NULL);
    assert(rc == 0);
    assert_same(&p, &q);
    rc = audit_proof_to_json(&q, &out2, &len2, NULL);
    assert(rc == 0);
    assert(len2 == len && memcmp(out, out2, len) == 0);
    dbao_free(out);
    dbao_free(out2);
    return 0;
}
