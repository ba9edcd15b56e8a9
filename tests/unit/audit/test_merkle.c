/* test_merkle.c: the RFC 9162 Merkle tree over SM3 (audit.h), against known answers and against
 * a naive recursive reference written here from the RFC's definitions.
 *
 * Known answers: the eight RFC 6962 test leaves (the inputs of the CT and transparency-dev test
 * suites), with SM3 in place of SHA-256, computed by an independent Python implementation of
 * RFC 9162 2.1 over hashlib's SM3 (OpenSSL). Properties, for every tree size 1..300:
 *   - audit_merkle_root, the incremental frontier and the naive MTH agree;
 *   - every inclusion proof (index, size) and every consistency proof (m, n) verifies;
 *   - a flipped bit in any proof hash, a truncated or extended proof, a wrong index, a wrong
 *     size (with that size's true root), a wrong root or a wrong leaf fails;
 *   - a source that keeps only leaves (the library descends on DBAO_ENOTSUP) and a source that
 *     keeps every perfect subtree (tiles) give identical proofs.
 * Also: 64-bit arithmetic near 2^62 with a synthetic source, error propagation from sources,
 * range errors, the nodes the frontier reports as complete, and frontier_load.
 *
 * Build: cc -std=gnu11 -Wall -Wextra -Werror -I include -I src/audit -I tests/unit
 *        test_merkle.c src/audit/{record,merkle,checkpoint}.c build/libdengbao.a
 *        -ljansson -lcrypto -lcmocka -lpthread
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dengbao/audit.h"
#include "testutil.h"

#define HL    AUDIT_HASH_LEN
#define N_MAX 300

/* ---- fixtures ---------------------------------------------------------------------------- */

static uint8_t leaves[N_MAX][HL];
/* tiles[l][i]: every perfect subtree of the first N_MAX leaves (level l, index i). */
static uint8_t tiles[10][N_MAX][HL];
static uint8_t roots[N_MAX + 1][HL];

static uint64_t
k_of(uint64_t n)
{
    uint64_t k = 1;

    while (k * 2 < n) {
        k *= 2;
    }
    return k;
}

/* ref_mth: RFC 9162 2.1.1 literally, over leaves[a .. a+n). */
static void
ref_mth(uint8_t out[HL], uint64_t a, uint64_t n)
{
    uint8_t l[HL], r[HL];
    uint64_t k;

    if (n == 0) {
        audit_empty_root(out);
        return;
    }
    if (n == 1) {
        memcpy(out, leaves[a], HL);
        return;
    }
    k = k_of(n);
    ref_mth(l, a, k);
    ref_mth(r, a + k, n - k);
    audit_node_hash(out, l, r);
}

static int
tiles_source(void *arg, uint8_t out[HL], unsigned level, uint64_t index)
{
    (void) arg;
    if (level >= 10 || ((index + 1) << level) > N_MAX) {
        return DBAO_EINVAL;
    }
    memcpy(out, tiles[level][index], HL);
    return 0;
}

/* tiles_upper_source keeps only levels >= 2 and leaves; levels 1 make the library descend. */
static int
tiles_sparse_source(void *arg, uint8_t out[HL], unsigned level, uint64_t index)
{
    if (level == 1 || level == 3) {
        return DBAO_ENOTSUP;
    }
    return tiles_source(arg, out, level, index);
}

static int
setup(void **state)
{
    tu_rng rng = {42};

    (void) state;
    for (int i = 0; i < N_MAX; i++) {
        uint8_t data[300];
        size_t len = (size_t) (tu_rng_next(&rng) % sizeof(data));

        tu_fill(&rng, data, len);
        audit_leaf_hash(leaves[i], data, len);
        memcpy(tiles[0][i], leaves[i], HL);
    }
    for (int l = 1; l < 10; l++) {
        for (int i = 0; ((i + 1) << l) <= N_MAX; i++) {
            audit_node_hash(tiles[l][i], tiles[l - 1][2 * i], tiles[l - 1][2 * i + 1]);
        }
    }
    for (int n = 0; n <= N_MAX; n++) {
        ref_mth(roots[n], 0, (uint64_t) n);
    }
    return 0;
}

/* ---- known answers ------------------------------------------------------------------------- */

static const char *const KAT_ROOTS[] = {
    "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b",
    "2daef60e7a0b8f5e024c81cd2ab3109f2b4f155cf83adeb2ae5532f74a157fdf",
    "0b990fe0c7ad70f1bf1a1262f2c7908ea48146b14253a6db99f2917ab1f5cc4d",
    "209ec96a210d662a964772680e8544d18cab7b88ffec3e00962220349b56ea56",
    "28e4e307ef6d2d0c62d84b11ef96e835efe490f35b93c8f024ecfe38c8dd4377",
    "bb10c996aeebbcdc69be3715fc847344de77442d37a5ab8213da9f41785b103b",
    "8723c1ab1f82ddfba4a3733ac0c80d936d9f4c208c7dbc8cc81ca9fff8584f66",
    "bd36c22a1ac6ff4308e0c3cc1a85bf0ffa30538ec60a55c70413ab15d45db4d2",
    "bc48ba7a709184b5f2a631e1adeb8dc2a0d4c018c1d6cc89b5664fe154c93b38",
};

typedef struct kat_proof {
    uint64_t a, n; /* inclusion: index a of n; consistency: from a to n */
    size_t num;
    const char *hex;
} kat_proof;

static const kat_proof KAT_INCL[] = {
    {0, 8, 3,
     "af83a966222057ac761246a7543c580d9111014f4e5e3cb1281db33151160335"
     "2489bde054a243baddcdf4fca1bae37cc910a6d9d85fdb9e1a826d7fc114f9a8"
     "2064aa35c6f2961ab1667c4418188b13a7b2510104f71febbb67f19419cf8168"},
    {5, 8, 3,
     "a798bfdb4164a6c7b41a6faecc5c3155cf04d38929dcbd4fe21dea29071aac64"
     "155f6ed4ccfa83510c9416c99b48f41aa5b12e443546bee1b501a7b281e5132a"
     "28e4e307ef6d2d0c62d84b11ef96e835efe490f35b93c8f024ecfe38c8dd4377"},
    {2, 3, 1, "0b990fe0c7ad70f1bf1a1262f2c7908ea48146b14253a6db99f2917ab1f5cc4d"},
};

static const kat_proof KAT_CONS[] = {
    {1, 8, 3,
     "af83a966222057ac761246a7543c580d9111014f4e5e3cb1281db33151160335"
     "2489bde054a243baddcdf4fca1bae37cc910a6d9d85fdb9e1a826d7fc114f9a8"
     "2064aa35c6f2961ab1667c4418188b13a7b2510104f71febbb67f19419cf8168"},
    {4, 8, 1, "2064aa35c6f2961ab1667c4418188b13a7b2510104f71febbb67f19419cf8168"},
    {6, 8, 3,
     "6f5566cd4dfab1605e73be3ce132f38de996be0094142731e1eb2ab2e001daca"
     "155f6ed4ccfa83510c9416c99b48f41aa5b12e443546bee1b501a7b281e5132a"
     "28e4e307ef6d2d0c62d84b11ef96e835efe490f35b93c8f024ecfe38c8dd4377"},
    {3, 7, 4,
     "c93540f0356ca5170858329e6d483f335894dac0de71c64ff8b51cba68cce396"
     "796e7bd749551d8e3dbd787d5fdbc62771c9a04db51a53bdbc004211f606ee6a"
     "0b990fe0c7ad70f1bf1a1262f2c7908ea48146b14253a6db99f2917ab1f5cc4d"
     "6f59d73facf2001681a4932aa0ec3c8006b2911c498c6dda229de1b618670d4e"},
};

static void
kat_leaves(uint8_t out[8][HL])
{
    static const char *const data[8] = {"",
                                        "00",
                                        "10",
                                        "2021",
                                        "3031",
                                        "40414243",
                                        "5051525354555657",
                                        "606162636465666768696a6b6c6d6e6f"};

    for (int i = 0; i < 8; i++) {
        size_t len;
        uint8_t *d = tu_hex(data[i], &len);

        audit_leaf_hash(out[i], d, len);
        free(d);
    }
}

static void
test_known_answers(void **state)
{
    uint8_t kl[8][HL], root[HL], proof[AUDIT_PROOF_MAX * HL];
    audit_leaves src = {&kl[0][0], 8};
    audit_frontier f;
    size_t num;

    (void) state;
    kat_leaves(kl);
    audit_frontier_init(&f);
    for (uint64_t n = 0; n <= 8; n++) {
        assert_int_equal(audit_merkle_root(root, n, audit_leaves_source, &src), 0);
        assert_true(tu_eq_hex(root, HL, KAT_ROOTS[n]));
        audit_frontier_root(&f, root);
        assert_true(tu_eq_hex(root, HL, KAT_ROOTS[n]));
        if (n < 8) {
            assert_int_equal(audit_frontier_append(&f, kl[n], NULL, NULL), 0);
        }
    }
    for (size_t i = 0; i < sizeof(KAT_INCL) / sizeof(KAT_INCL[0]); i++) {
        const kat_proof *k = &KAT_INCL[i];
        uint8_t r[HL];

        assert_int_equal(
            audit_merkle_inclusion_proof(proof, &num, k->a, k->n, audit_leaves_source, &src), 0);
        assert_int_equal(num, k->num);
        assert_true(tu_eq_hex(proof, num * HL, k->hex));
        tu_hex_fixed(r, HL, KAT_ROOTS[k->n]);
        assert_int_equal(audit_merkle_verify_inclusion(kl[k->a], k->a, k->n, proof, num, r, NULL),
                         0);
    }
    for (size_t i = 0; i < sizeof(KAT_CONS) / sizeof(KAT_CONS[0]); i++) {
        const kat_proof *k = &KAT_CONS[i];
        uint8_t r1[HL], r2[HL];

        assert_int_equal(
            audit_merkle_consistency_proof(proof, &num, k->a, k->n, audit_leaves_source, &src), 0);
        assert_int_equal(num, k->num);
        assert_true(tu_eq_hex(proof, num * HL, k->hex));
        tu_hex_fixed(r1, HL, KAT_ROOTS[k->a]);
        tu_hex_fixed(r2, HL, KAT_ROOTS[k->n]);
        assert_int_equal(audit_merkle_verify_consistency(k->a, k->n, r1, r2, proof, num, NULL), 0);
    }
}

static void
test_hash_prefixes(void **state)
{
    uint8_t a[HL], b[HL], buf[1 + 2 * HL];

    (void) state;
    /* leaf = SM3(0x00 || data): "abc" with the prefix, through plain gm_sm3. */
    buf[0] = 0x00;
    memcpy(buf + 1, "abc", 3);
    gm_sm3(a, buf, 4);
    audit_leaf_hash(b, (const uint8_t *) "abc", 3);
    assert_memory_equal(a, b, HL);
    /* node = SM3(0x01 || l || r), and out may alias an input. */
    buf[0] = 0x01;
    memcpy(buf + 1, leaves[0], HL);
    memcpy(buf + 1 + HL, leaves[1], HL);
    gm_sm3(a, buf, sizeof(buf));
    memcpy(b, leaves[1], HL);
    audit_node_hash(b, leaves[0], b);
    assert_memory_equal(a, b, HL);
    /* The empty root is SM3(""). */
    audit_empty_root(a);
    assert_true(
        tu_eq_hex(a, HL, "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"));
}

/* ---- roots and the frontier ------------------------------------------------------------------ */

typedef struct emitted {
    unsigned count;
    bool bad;
} emitted;

static int
check_emit(void *arg, unsigned level, uint64_t index, const uint8_t hash[HL])
{
    emitted *e = arg;

    e->count++;
    if (level >= 10 || ((index + 1) << level) > N_MAX ||
        memcmp(hash, tiles[level][index], HL) != 0) {
        e->bad = true;
    }
    return 0;
}

static void
test_roots_and_frontier(void **state)
{
    audit_frontier f, g;
    audit_leaves src = {&leaves[0][0], N_MAX};
    uint8_t root[HL];
    emitted e = {0, false};

    (void) state;
    audit_frontier_init(&f);
    for (uint64_t n = 0; n <= N_MAX; n++) {
        assert_int_equal(audit_frontier_size(&f), n);
        audit_frontier_root(&f, root);
        assert_memory_equal(root, roots[n], HL);
        assert_int_equal(audit_merkle_root(root, n, tiles_source, NULL), 0);
        assert_memory_equal(root, roots[n], HL);
        assert_int_equal(audit_merkle_root(root, n, audit_leaves_source, &src), 0);
        assert_memory_equal(root, roots[n], HL);
        assert_int_equal(audit_frontier_load(&g, n, tiles_sparse_source, NULL), 0);
        assert_int_equal(audit_frontier_size(&g), n);
        audit_frontier_root(&g, root);
        assert_memory_equal(root, roots[n], HL);
        if (n < N_MAX) {
            assert_int_equal(audit_frontier_append(&f, leaves[n], check_emit, &e), 0);
        }
    }
    /* Every perfect subtree of 300 leaves was reported exactly once: 2n - popcount(n). */
    assert_false(e.bad);
    assert_int_equal(e.count, 2 * N_MAX - __builtin_popcount(N_MAX));
}

static int
failing_emit(void *arg, unsigned level, uint64_t index, const uint8_t hash[HL])
{
    (void) index;
    (void) hash;
    return level == *(unsigned *) arg ? DBAO_EIO : 0;
}

static void
test_frontier_errors(void **state)
{
    audit_frontier f, before;
    unsigned fail_level = 2;
    uint8_t root[HL];

    (void) state;
    audit_frontier_init(&f);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(audit_frontier_append(&f, leaves[i], NULL, NULL), 0);
    }
    /* Appending leaf 3 closes levels 1 and 2; a failure at level 2 leaves f unchanged. */
    before = f;
    assert_int_equal(audit_frontier_append(&f, leaves[3], failing_emit, &fail_level), DBAO_EIO);
    assert_memory_equal(&f, &before, sizeof(f));
    assert_int_equal(audit_frontier_append(&f, leaves[3], NULL, NULL), 0);
    audit_frontier_root(&f, root);
    assert_memory_equal(root, roots[4], HL);
    /* A full tree refuses more leaves. */
    f.size = AUDIT_TREE_SIZE_MAX;
    assert_int_equal(audit_frontier_append(&f, leaves[0], NULL, NULL), DBAO_ERANGE);
    assert_int_equal(audit_frontier_load(&f, AUDIT_TREE_SIZE_MAX + 1, tiles_source, NULL),
                     DBAO_ERANGE);
    assert_int_equal(audit_frontier_size(&f), 0);
}

/* ---- inclusion
 * ----------------------------------------------------------------------------------- */

static void
check_inclusion_fails(const uint8_t *leaf, uint64_t i, uint64_t n, const uint8_t *proof, size_t num,
                      const uint8_t *root)
{
    dbao_err err;

    assert_int_equal(audit_merkle_verify_inclusion(leaf, i, n, proof, num, root, &err),
                     DBAO_EVERIFY);
    assert_int_equal(err.code, DBAO_EVERIFY);
}

static void
test_inclusion_all(void **state)
{
    uint8_t proof[(AUDIT_PROOF_MAX + 1) * HL], proof2[AUDIT_PROOF_MAX * HL];
    audit_leaves src = {&leaves[0][0], N_MAX};
    size_t num, num2;
    unsigned long checked = 0;

    (void) state;
    for (uint64_t n = 1; n <= N_MAX; n++) {
        for (uint64_t i = 0; i < n; i++) {
            assert_int_equal(audit_merkle_inclusion_proof(proof, &num, i, n, tiles_source, NULL),
                             0);
            assert_true(num <= 9);
            assert_int_equal(
                audit_merkle_verify_inclusion(leaves[i], i, n, proof, num, roots[n], NULL), 0);
            if (n <= 64 || i % 17 == 0) {
                assert_int_equal(
                    audit_merkle_inclusion_proof(proof2, &num2, i, n, audit_leaves_source, &src),
                    0);
                assert_int_equal(num, num2);
                assert_memory_equal(proof, proof2, num * HL);
                assert_int_equal(
                    audit_merkle_inclusion_proof(proof2, &num2, i, n, tiles_sparse_source, NULL),
                    0);
                assert_memory_equal(proof, proof2, num * HL);
            }
            /* Any flipped bit in any hash. */
            for (size_t j = 0; j < num; j++) {
                size_t byte = j * HL + (size_t) ((i + j) % HL);

                proof[byte] ^= (uint8_t) (1u << (j % 8));
                check_inclusion_fails(leaves[i], i, n, proof, num, roots[n]);
                proof[byte] ^= (uint8_t) (1u << (j % 8));
            }
            /* Truncated and extended proofs. */
            if (num > 0) {
                check_inclusion_fails(leaves[i], i, n, proof, num - 1, roots[n]);
            }
            memcpy(proof + num * HL, leaves[0], HL);
            check_inclusion_fails(leaves[i], i, n, proof, num + 1, roots[n]);
            /* Wrong index, wrong size (with that size's own root), wrong root, wrong leaf. */
            if (n > 1) {
                check_inclusion_fails(leaves[i], (i + 1) % n, n, proof, num, roots[n]);
            }
            check_inclusion_fails(leaves[i], n, n, proof, num, roots[n]);
            if (n < N_MAX) {
                check_inclusion_fails(leaves[i], i, n + 1, proof, num, roots[n + 1]);
            }
            if (i < n - 1) {
                check_inclusion_fails(leaves[i], i, n - 1, proof, num, roots[n - 1]);
            }
            check_inclusion_fails(leaves[i], i, n, proof, num, roots[n - 1]);
            check_inclusion_fails(leaves[(i + 1) % N_MAX], i, n, proof, num, roots[n]);
            checked++;
        }
    }
    assert_int_equal(checked, N_MAX * (N_MAX + 1) / 2);
}

/* ---- consistency -------------------------------------------------------------------------------
 */

static void
check_consistency_fails(uint64_t m, uint64_t n, const uint8_t *r1, const uint8_t *r2,
                        const uint8_t *proof, size_t num)
{
    dbao_err err;

    assert_int_equal(audit_merkle_verify_consistency(m, n, r1, r2, proof, num, &err), DBAO_EVERIFY);
    assert_int_equal(err.code, DBAO_EVERIFY);
}

static void
test_consistency_all(void **state)
{
    uint8_t proof[(AUDIT_PROOF_MAX + 1) * HL], proof2[AUDIT_PROOF_MAX * HL];
    audit_leaves src = {&leaves[0][0], N_MAX};
    size_t num, num2;

    (void) state;
    for (uint64_t n = 1; n <= N_MAX; n++) {
        /* m == 0 and m == n: empty proofs. */
        assert_int_equal(audit_merkle_consistency_proof(proof, &num, 0, n, tiles_source, NULL), 0);
        assert_int_equal(num, 0);
        assert_int_equal(audit_merkle_verify_consistency(0, n, roots[0], roots[n], proof, 0, NULL),
                         0);
        assert_int_equal(audit_merkle_consistency_proof(proof, &num, n, n, tiles_source, NULL), 0);
        assert_int_equal(num, 0);
        assert_int_equal(audit_merkle_verify_consistency(n, n, roots[n], roots[n], proof, 0, NULL),
                         0);
        check_consistency_fails(n, n, roots[n], roots[n - 1], proof, 0);
        check_consistency_fails(n, n, roots[n], roots[n], leaves[0], 1);
        check_consistency_fails(0, n, roots[0], roots[n], leaves[0], 1);
        check_consistency_fails(n, n - 1, roots[n], roots[n - 1], proof, 0);

        for (uint64_t m = 1; m < n; m++) {
            bool full = n <= 150 || (m + n) % 7 == 0;

            assert_int_equal(audit_merkle_consistency_proof(proof, &num, m, n, tiles_source, NULL),
                             0);
            assert_true(num >= 1 && num <= 10);
            assert_int_equal(
                audit_merkle_verify_consistency(m, n, roots[m], roots[n], proof, num, NULL), 0);
            if (n <= 64 || (m + n) % 13 == 0) {
                assert_int_equal(
                    audit_merkle_consistency_proof(proof2, &num2, m, n, audit_leaves_source, &src),
                    0);
                assert_int_equal(num, num2);
                assert_memory_equal(proof, proof2, num * HL);
            }
            if (!full) {
                continue;
            }
            for (size_t j = 0; j < num; j++) {
                size_t byte = j * HL + (size_t) ((m + j) % HL);

                proof[byte] ^= 0x80;
                check_consistency_fails(m, n, roots[m], roots[n], proof, num);
                proof[byte] ^= 0x80;
            }
            check_consistency_fails(m, n, roots[m], roots[n], proof, num - 1);
            memcpy(proof + num * HL, leaves[0], HL);
            check_consistency_fails(m, n, roots[m], roots[n], proof, num + 1);
            check_consistency_fails(m + 1, n, roots[m + 1], roots[n], proof, num);
            check_consistency_fails(m - 1, n, roots[m - 1], roots[n], proof, num);
            if (n < N_MAX) {
                check_consistency_fails(m, n + 1, roots[m], roots[n + 1], proof, num);
            }
            if (m < n - 1) {
                check_consistency_fails(m, n - 1, roots[m], roots[n - 1], proof, num);
            }
            check_consistency_fails(m, n, roots[n], roots[m], proof, num);
            check_consistency_fails(m, n, roots[m], roots[n - 1], proof, num);
            check_consistency_fails(m, n, roots[m - 1], roots[n], proof, num);
            check_consistency_fails(n, m, roots[n], roots[m], proof, num);
        }
    }
}

/* ---- large trees, sources and ranges -----------------------------------------------------------
 */

/* synthetic_source: a made-up but fixed hash for every node of an enormous tree. */
static int
synthetic_source(void *arg, uint8_t out[HL], unsigned level, uint64_t index)
{
    uint8_t buf[16];

    (void) arg;
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t) (index >> (56 - 8 * i));
    }
    memset(buf + 8, (int) level, 8);
    if (level < 40) { /* pretend the store keeps only high levels and leaves */
        if (level != 0) {
            return DBAO_ENOTSUP;
        }
    }
    gm_sm3(out, buf, sizeof(buf));
    return 0;
}

/* synthetic leaf lookup for verification: the leaf hash the source serves at level 0. */
static void
synthetic_leaf(uint8_t out[HL], uint64_t index)
{
    assert_int_equal(synthetic_source(NULL, out, 0, index), 0);
}

static void
test_large_trees(void **state)
{
    static const uint64_t sizes[] = {
        ((uint64_t) 1 << 62) + 5,
        ((uint64_t) 1 << 62) + ((uint64_t) 1 << 41) + 3,
        AUDIT_TREE_SIZE_MAX,
    };
    uint8_t proof[AUDIT_PROOF_MAX * HL], root[HL], root1[HL], leaf[HL];
    size_t num;

    (void) state;
    /* Trees this large are only feasible where every node above level 40 is a lookup and the
     * indices asked for sit where low levels are small: near the right edge. */
    for (size_t s = 0; s < 2; s++) {
        uint64_t n = sizes[s], i = n - 1, m = n - 2;

        assert_int_equal(audit_merkle_root(root, n, synthetic_source, NULL), 0);
        assert_int_equal(audit_merkle_inclusion_proof(proof, &num, i, n, synthetic_source, NULL),
                         0);
        assert_true(num <= AUDIT_PROOF_MAX);
        synthetic_leaf(leaf, i);
        assert_int_equal(audit_merkle_verify_inclusion(leaf, i, n, proof, num, root, NULL), 0);
        check_inclusion_fails(leaf, i - 1, n, proof, num, root);

        assert_int_equal(audit_merkle_root(root1, m, synthetic_source, NULL), 0);
        assert_int_equal(audit_merkle_consistency_proof(proof, &num, m, n, synthetic_source, NULL),
                         0);
        assert_int_equal(audit_merkle_verify_consistency(m, n, root1, root, proof, num, NULL), 0);
        check_consistency_fails(m, n, root, root1, proof, num);
    }
    assert_int_equal(audit_merkle_root(root, sizes[2] + 1, synthetic_source, NULL), DBAO_ERANGE);
}

static int
broken_source(void *arg, uint8_t out[HL], unsigned level, uint64_t index)
{
    if (arg != NULL && level == 0) {
        /* A source that has leaves, but fails on leaf 5 with an I/O error. */
        memset(out, (int) index, HL);
        return index == 5 ? DBAO_EIO : 0;
    }
    return DBAO_ENOTSUP; /* with arg NULL also at level 0: a source without leaves */
}

static void
test_source_errors_and_ranges(void **state)
{
    uint8_t proof[AUDIT_PROOF_MAX * HL], root[HL];
    int flag = 1;
    size_t num = 99;

    (void) state;
    assert_int_equal(audit_merkle_root(root, 8, broken_source, NULL), DBAO_EINVAL);
    assert_int_equal(audit_merkle_root(root, 8, broken_source, &flag), DBAO_EIO);
    assert_int_equal(audit_merkle_inclusion_proof(proof, &num, 0, 8, broken_source, &flag),
                     DBAO_EIO);
    assert_int_equal(num, 0);
    num = 99;
    assert_int_equal(audit_merkle_consistency_proof(proof, &num, 3, 8, broken_source, &flag),
                     DBAO_EIO);
    assert_int_equal(num, 0);

    assert_int_equal(audit_merkle_inclusion_proof(proof, &num, 8, 8, tiles_source, NULL),
                     DBAO_ERANGE);
    assert_int_equal(audit_merkle_inclusion_proof(proof, &num, 0, 0, tiles_source, NULL),
                     DBAO_ERANGE);
    assert_int_equal(
        audit_merkle_inclusion_proof(proof, &num, 0, AUDIT_TREE_SIZE_MAX + 1, tiles_source, NULL),
        DBAO_ERANGE);
    assert_int_equal(audit_merkle_consistency_proof(proof, &num, 9, 8, tiles_source, NULL),
                     DBAO_ERANGE);
    assert_int_equal(audit_merkle_root(root, 0, tiles_source, NULL), 0);
    assert_memory_equal(root, roots[0], HL);

    /* Verification of absurd inputs fails cleanly. */
    check_inclusion_fails(leaves[0], 0, 0, NULL, 0, roots[0]);
    check_inclusion_fails(leaves[0], UINT64_MAX, UINT64_MAX, proof, AUDIT_PROOF_MAX + 1, root);
    check_consistency_fails(1, UINT64_MAX, roots[1], roots[2], proof, AUDIT_PROOF_MAX + 1);
    check_consistency_fails(5, 8, roots[5], roots[8], NULL, 0);
    assert_int_equal(audit_merkle_verify_inclusion(leaves[0], 0, 1, NULL, 0, roots[1], NULL), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),      cmocka_unit_test(test_hash_prefixes),
        cmocka_unit_test(test_roots_and_frontier), cmocka_unit_test(test_frontier_errors),
        cmocka_unit_test(test_inclusion_all),      cmocka_unit_test(test_consistency_all),
        cmocka_unit_test(test_large_trees),        cmocka_unit_test(test_source_errors_and_ranges),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
