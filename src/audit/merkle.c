/* merkle.c: the RFC 9162 section 2.1 Merkle tree over SM3.
 *
 * Definitions (RFC 9162 2.1.1, with SM3 for SHA-256):
 *   MTH({})        = SM3()
 *   MTH({d0})      = SM3(0x00 || d0)                                   leaf hash
 *   MTH(D[n])      = SM3(0x01 || MTH(D[0:k]) || MTH(D[k:n]))           node hash
 *                    where k is the largest power of two smaller than n
 *
 * Every subtree the recursion visits starts at a multiple of its left part's size, so each
 * left part D[a:a+k] is a *perfect* subtree: the node (level log2 k, index a / k). Only the
 * right edge of a tree is not perfect, and it decomposes into at most 64 perfect subtrees.
 * That is why the hash source (audit_hash_fn) is asked for perfect subtrees only: they never
 * change once complete, so a storage layer can keep them in tiles, and a source that keeps only
 * leaves still works because the library descends to the children when told DBAO_ENOTSUP.
 *
 * Proof generation follows RFC 9162 2.1.3.1 (PATH) and 2.1.4.1 (PROOF / SUBPROOF) literally,
 * with the ranges carried as (offset, size). Verification follows 2.1.3.2 and 2.1.4.2 step by
 * step, on 64-bit sizes; both reject proofs that are too short or too long because the loop
 * fails when sn reaches 0 early and the final check requires sn == 0.
 *
 * The frontier (compact range) keeps nodes[l] = root of the perfect subtree of 2^l leaves for
 * each set bit l of size; appending a leaf is binary addition with carries (node hashes).
 *
 * Written by hand: no Debian library implements RFC 9162 trees (and none over SM3); the SM3
 * itself is gm's.
 */
#include <string.h>

#include "dengbao/audit.h"
#include "internal.h"

#define HL AUDIT_HASH_LEN

void
audit_leaf_hash(uint8_t out[HL], const uint8_t *record, size_t record_len)
{
    static const uint8_t prefix = 0x00;
    gm_sm3_ctx c;

    gm_sm3_init(&c);
    gm_sm3_update(&c, &prefix, 1);
    gm_sm3_update(&c, record, record_len);
    gm_sm3_final(&c, out);
}

void
audit_node_hash(uint8_t out[HL], const uint8_t left[HL], const uint8_t right[HL])
{
    uint8_t buf[1 + 2 * HL];

    buf[0] = 0x01;
    memcpy(buf + 1, left, HL);
    memcpy(buf + 1 + HL, right, HL);
    gm_sm3(out, buf, sizeof(buf));
}

void
audit_empty_root(uint8_t out[HL])
{
    gm_sm3(out, "", 0);
}

/* largest_pow2_below returns the largest power of two strictly smaller than n (n >= 2). */
static uint64_t
largest_pow2_below(uint64_t n)
{
    return (uint64_t) 1 << (63 - __builtin_clzll(n - 1));
}

/* ---- hash sources --------------------------------------------------------------------------- */

int
audit_leaves_source(void *arg, uint8_t out[HL], unsigned level, uint64_t index)
{
    const audit_leaves *lv = arg;

    if (level != 0) {
        return DBAO_ENOTSUP;
    }
    if (index >= lv->num) {
        return DBAO_EINVAL;
    }
    memcpy(out, lv->hashes + index * HL, HL);
    return 0;
}

typedef struct src {
    audit_hash_fn fn;
    void *arg;
} src;

/* perfect returns the node (level, index), descending to the children while the source says
 * DBAO_ENOTSUP. The recursion is at most `level` deep (<= 63). */
static int
perfect(const src *s, uint8_t out[HL], unsigned level, uint64_t index)
{
    uint8_t l[HL], r[HL];
    int rc = s->fn(s->arg, out, level, index);

    if (rc != DBAO_ENOTSUP) {
        return rc;
    }
    if (level == 0) {
        return DBAO_EINVAL;
    }
    if ((rc = perfect(s, l, level - 1, 2 * index)) != 0 ||
        (rc = perfect(s, r, level - 1, 2 * index + 1)) != 0) {
        return rc;
    }
    audit_node_hash(out, l, r);
    return 0;
}

/* mth returns MTH(D[a:a+n]) for n >= 1, where the range is one the RFC recursion visits (a is
 * a multiple of the largest power of two <= n, so the left parts are perfect). */
static int
mth(const src *s, uint8_t out[HL], uint64_t a, uint64_t n)
{
    uint8_t l[HL], r[HL];
    uint64_t k;
    int rc;

    if ((n & (n - 1)) == 0) {
        unsigned level = (unsigned) __builtin_ctzll(n);

        return perfect(s, out, level, a >> level);
    }
    k = largest_pow2_below(n);
    if ((rc = perfect(s, l, (unsigned) __builtin_ctzll(k), a / k)) != 0 ||
        (rc = mth(s, r, a + k, n - k)) != 0) {
        return rc;
    }
    audit_node_hash(out, l, r);
    return 0;
}

int
audit_merkle_root(uint8_t out[HL], uint64_t size, audit_hash_fn fn, void *arg)
{
    src s = {fn, arg};

    if (size > AUDIT_TREE_SIZE_MAX) {
        return DBAO_ERANGE;
    }
    if (size == 0) {
        audit_empty_root(out);
        return 0;
    }
    return mth(&s, out, 0, size);
}

/* path: RFC 9162 2.1.3.1, PATH(m, D[a:a+n]), appending leaf-side first. */
static int
path(const src *s, uint8_t *out, size_t *num, uint64_t m, uint64_t a, uint64_t n)
{
    uint64_t k;
    int rc;

    if (n <= 1) {
        return 0;
    }
    k = largest_pow2_below(n);
    if (m < k) {
        if ((rc = path(s, out, num, m, a, k)) != 0) {
            return rc;
        }
        rc = mth(s, out + *num * HL, a + k, n - k);
    } else {
        if ((rc = path(s, out, num, m - k, a + k, n - k)) != 0) {
            return rc;
        }
        rc = mth(s, out + *num * HL, a, k);
    }
    if (rc == 0) {
        (*num)++;
    }
    return rc;
}

int
audit_merkle_inclusion_proof(uint8_t *out, size_t *out_num, uint64_t index, uint64_t size,
                             audit_hash_fn fn, void *arg)
{
    src s = {fn, arg};
    int rc;

    *out_num = 0;
    if (size > AUDIT_TREE_SIZE_MAX || index >= size) {
        return DBAO_ERANGE;
    }
    rc = path(&s, out, out_num, index, 0, size);
    if (rc != 0) {
        *out_num = 0;
    }
    return rc;
}

/* subproof: RFC 9162 2.1.4.1, SUBPROOF(m, D[a:a+n], b). */
static int
subproof(const src *s, uint8_t *out, size_t *num, uint64_t m, uint64_t a, uint64_t n, bool b)
{
    uint64_t k;
    int rc;

    if (m == n) {
        if (b) {
            return 0;
        }
        rc = mth(s, out + *num * HL, a, n);
    } else {
        k = largest_pow2_below(n);
        if (m <= k) {
            if ((rc = subproof(s, out, num, m, a, k, b)) != 0) {
                return rc;
            }
            rc = mth(s, out + *num * HL, a + k, n - k);
        } else {
            if ((rc = subproof(s, out, num, m - k, a + k, n - k, false)) != 0) {
                return rc;
            }
            rc = mth(s, out + *num * HL, a, k);
        }
    }
    if (rc == 0) {
        (*num)++;
    }
    return rc;
}

int
audit_merkle_consistency_proof(uint8_t *out, size_t *out_num, uint64_t size1, uint64_t size2,
                               audit_hash_fn fn, void *arg)
{
    src s = {fn, arg};
    int rc;

    *out_num = 0;
    if (size2 > AUDIT_TREE_SIZE_MAX || size1 > size2) {
        return DBAO_ERANGE;
    }
    if (size1 == 0 || size1 == size2) {
        return 0;
    }
    rc = subproof(&s, out, out_num, size1, 0, size2, true);
    if (rc != 0) {
        *out_num = 0;
    }
    return rc;
}

/* ---- verification ---------------------------------------------------------------------------- */

int
audit_merkle_verify_inclusion(const uint8_t leaf[HL], uint64_t index, uint64_t size,
                              const uint8_t *proof, size_t num_hashes, const uint8_t root[HL],
                              dbao_err *err)
{
    uint8_t r[HL];
    uint64_t fn, sn;

    /* 1. */
    if (index >= size) {
        return dbao_err_set(err, DBAO_EVERIFY, "inclusion proof: index %llu not below size %llu",
                            (unsigned long long) index, (unsigned long long) size);
    }
    if (num_hashes > AUDIT_PROOF_MAX) {
        return dbao_err_set(err, DBAO_EVERIFY, "inclusion proof: %zu hashes is too many",
                            num_hashes);
    }
    /* 2., 3. */
    fn = index;
    sn = size - 1;
    memcpy(r, leaf, HL);
    /* 4. */
    for (size_t i = 0; i < num_hashes; i++) {
        const uint8_t *p = proof + i * HL;

        if (sn == 0) {
            return dbao_err_set(err, DBAO_EVERIFY, "inclusion proof: too long for the tree size");
        }
        if ((fn & 1) != 0 || fn == sn) {
            audit_node_hash(r, p, r);
            if ((fn & 1) == 0) {
                while ((fn & 1) == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            audit_node_hash(r, r, p);
        }
        fn >>= 1;
        sn >>= 1;
    }
    /* 5. */
    if (sn != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "inclusion proof: too short for the tree size");
    }
    if (memcmp(r, root, HL) != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "inclusion proof: root mismatch");
    }
    return 0;
}

int
audit_merkle_verify_consistency(uint64_t size1, uint64_t size2, const uint8_t root1[HL],
                                const uint8_t root2[HL], const uint8_t *proof, size_t num_hashes,
                                dbao_err *err)
{
    uint8_t fr[HL], sr[HL];
    uint64_t fn, sn;
    size_t i = 0;

    if (size1 > size2) {
        return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: size %llu shrinks to %llu",
                            (unsigned long long) size1, (unsigned long long) size2);
    }
    if (size1 == size2) {
        if (num_hashes != 0) {
            return dbao_err_set(err, DBAO_EVERIFY,
                                "consistency proof: must be empty for equal "
                                "sizes");
        }
        if (memcmp(root1, root2, HL) != 0) {
            return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: root mismatch");
        }
        return 0;
    }
    if (size1 == 0) {
        if (num_hashes != 0) {
            return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: must be empty from size 0");
        }
        return 0;
    }
    /* 1. */
    if (num_hashes == 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: empty");
    }
    if (num_hashes > AUDIT_PROOF_MAX) {
        return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: %zu hashes is too many",
                            num_hashes);
    }
    /* 2., 5.: when size1 is a power of two, first_hash is the implicit first element. */
    if ((size1 & (size1 - 1)) == 0) {
        memcpy(fr, root1, HL);
    } else {
        memcpy(fr, proof, HL);
        i = 1;
    }
    memcpy(sr, fr, HL);
    /* 3. */
    fn = size1 - 1;
    sn = size2 - 1;
    /* 4. */
    while ((fn & 1) != 0) {
        fn >>= 1;
        sn >>= 1;
    }
    /* 6. */
    for (; i < num_hashes; i++) {
        const uint8_t *c = proof + i * HL;

        if (sn == 0) {
            return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: too long for the sizes");
        }
        if ((fn & 1) != 0 || fn == sn) {
            audit_node_hash(fr, c, fr);
            audit_node_hash(sr, c, sr);
            if ((fn & 1) == 0) {
                while ((fn & 1) == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            audit_node_hash(sr, sr, c);
        }
        fn >>= 1;
        sn >>= 1;
    }
    /* 7. */
    if (sn != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: too short for the sizes");
    }
    if (memcmp(fr, root1, HL) != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: first root mismatch");
    }
    if (memcmp(sr, root2, HL) != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "consistency proof: second root mismatch");
    }
    return 0;
}

/* ---- frontier ------------------------------------------------------------------------------ */

void
audit_frontier_init(audit_frontier *f)
{
    memset(f, 0, sizeof(*f));
}

uint64_t
audit_frontier_size(const audit_frontier *f)
{
    return f->size;
}

int
audit_frontier_append(audit_frontier *f, const uint8_t leaf[HL], audit_node_fn emit, void *arg)
{
    uint8_t carry[HL];
    uint64_t size = f->size;
    unsigned level = 0;
    int rc;

    if (size >= AUDIT_TREE_SIZE_MAX) {
        return DBAO_ERANGE;
    }
    memcpy(carry, leaf, HL);
    if (emit != NULL && (rc = emit(arg, 0, size, carry)) != 0) {
        return rc;
    }
    /* Binary addition: each set low bit of size is a left sibling that the carry closes. */
    while ((size >> level) & 1) {
        audit_node_hash(carry, f->nodes[level], carry);
        level++;
        if (emit != NULL && (rc = emit(arg, level, size >> level, carry)) != 0) {
            return rc;
        }
    }
    memcpy(f->nodes[level], carry, HL);
    f->size = size + 1;
    return 0;
}

void
audit_frontier_root(const audit_frontier *f, uint8_t out[HL])
{
    uint8_t acc[HL];
    uint64_t size = f->size;
    unsigned level;

    if (size == 0) {
        audit_empty_root(out);
        return;
    }
    level = (unsigned) __builtin_ctzll(size);
    memcpy(acc, f->nodes[level], HL);
    for (level++; level < 64; level++) {
        if ((size >> level) & 1) {
            audit_node_hash(acc, f->nodes[level], acc);
        }
    }
    memcpy(out, acc, HL);
}

int
audit_frontier_load(audit_frontier *f, uint64_t size, audit_hash_fn fn, void *arg)
{
    src s = {fn, arg};
    uint64_t start = 0;
    int rc;

    audit_frontier_init(f);
    if (size > AUDIT_TREE_SIZE_MAX) {
        return DBAO_ERANGE;
    }
    for (int level = 63; level >= 0; level--) {
        if ((size >> level) & 1) {
            rc = perfect(&s, f->nodes[level], (unsigned) level, start >> level);
            if (rc != 0) {
                audit_frontier_init(f);
                return rc;
            }
            start += (uint64_t) 1 << level;
        }
    }
    f->size = size;
    return 0;
}
