/* fuzz_audit_proof.c: libFuzzer target for Merkle proof verification (audit.h).
 *
 * Part 1, raw: the input's first 32 bytes are two 64-bit numbers and a mode byte, the rest are
 * hashes; both verifiers run on them with arbitrary sizes and indices and must only return 0 or
 * DBAO_EVERIFY (never crash, never read past the proof).
 * Part 2, differential: a real tree of 1..257 leaves is built from the input's first bytes; a
 * real proof is generated and then overwritten by the input bytes at an input-chosen offset.
 * The mutated proof may verify only if it is identical to the real one (another accepted proof
 * would be an SM3 collision or a verifier bug), and the real one must always verify.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include -I src/audit
 *        tests/fuzz/fuzz_audit_proof.c <library sources or an instrumented libdengbao.a>
 *        -ljansson -lcrypto
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/audit.h"

#define HL AUDIT_HASH_LEN

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t
get64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t leaves[257 * HL];
    uint8_t proof[AUDIT_PROOF_MAX * HL], mut[AUDIT_PROOF_MAX * HL], r1[HL], r2[HL];
    audit_leaves src = {leaves, 0};
    uint64_t a, b, n, m, i;
    size_t num, hashes, off;
    const uint8_t *rest;
    int rc;

    if (size < 32) {
        return 0;
    }
    a = get64(data);
    b = get64(data + 8);
    rest = data + 32;
    hashes = (size - 32) / HL;
    if (data[16] & 1) {
        /* Small values reach deeper into the algorithms than uniformly random 64-bit ones. */
        a %= 1024;
        b %= 1024;
    }

    /* Part 1. */
    rc = audit_merkle_verify_inclusion(data, a, b, rest, hashes, data + size - HL, NULL);
    assert(rc == 0 || rc == DBAO_EVERIFY);
    rc = audit_merkle_verify_consistency(a, b, data, data + size - HL, rest, hashes, NULL);
    assert(rc == 0 || rc == DBAO_EVERIFY);

    /* Part 2. */
    n = 1 + data[17] % 257;
    for (uint64_t k = 0; k < n; k++) {
        uint8_t d[2] = {(uint8_t) k, (uint8_t) (k >> 8)};

        audit_leaf_hash(leaves + k * HL, d, sizeof(d));
    }
    src.num = n;
    assert(audit_merkle_root(r2, n, audit_leaves_source, &src) == 0);
    off = size > 40 ? data[18] % (AUDIT_PROOF_MAX * HL) : 0;

    i = a % n;
    assert(audit_merkle_inclusion_proof(proof, &num, i, n, audit_leaves_source, &src) == 0);
    assert(audit_merkle_verify_inclusion(leaves + i * HL, i, n, proof, num, r2, NULL) == 0);
    memcpy(mut, proof, sizeof(mut));
    memcpy(mut + off, rest, size - 32 < sizeof(mut) - off ? size - 32 : sizeof(mut) - off);
    if (audit_merkle_verify_inclusion(leaves + i * HL, i, n, mut, num, r2, NULL) == 0) {
        assert(memcmp(mut, proof, num * HL) == 0);
    }

    m = b % (n + 1);
    assert(audit_merkle_root(r1, m, audit_leaves_source, &src) == 0);
    assert(audit_merkle_consistency_proof(proof, &num, m, n, audit_leaves_source, &src) == 0);
    assert(audit_merkle_verify_consistency(m, n, r1, r2, proof, num, NULL) == 0);
    memcpy(mut, proof, sizeof(mut));
    memcpy(mut + off, rest, size - 32 < sizeof(mut) - off ? size - 32 : sizeof(mut) - off);
    if (audit_merkle_verify_consistency(m, n, r1, r2, mut, num, NULL) == 0) {
        assert(memcmp(mut, proof, num * HL) == 0);
    }
    return 0;
}
