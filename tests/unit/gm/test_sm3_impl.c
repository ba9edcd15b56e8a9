/* test_sm3_impl.c: known-answer and differential tests of every SM3 compression path and every
 * multi-buffer path (src/gm/sm3_impl.h).
 *
 * Every path this build has and this CPU runs is tested: single stream "portable" and
 * "x86-avx-bmi2", multi-buffer "portable", "avx2x8" and "avx512x16" (a path the CPU lacks is
 * reported and skipped). Single-stream paths are driven through their compress() with padding
 * done here; nothing of the library's streaming layer is used.
 *
 *  - GB/T 32905-2016 Appendix A: "abc" and "abcd" x 16, through every single-stream path and in
 *    every lane of every multi-buffer path (batches where the vector sits in each position).
 *  - Differential against OpenSSL 3 EVP_sm3: random lengths 0..4 KiB plus some up to 64 KiB, at
 *    random (mostly unaligned) addresses, with compress() fed in random splits.
 *  - Multi-buffer batches of every size 0..40 with random mixed lengths, without a prefix and
 *    with prefixes of 1, 64 and random 0..64 bytes, compared with OpenSSL on prefix || msg.
 *  - Path tables: names, NULL for unknown names, best paths present and consistent.
 *
 * DBAO_DIFF_ITERS sets the number of random single-stream cases (default 20,000; the
 * multi-buffer batches scale with it, one batch per 50 cases). Random data is deterministic
 * (splitmix64, fixed seeds), so failures reproduce.
 *
 * Build: cc -std=gnu11 -Wall -Wextra -Werror -I src/gm -I tests/unit
 *        tests/unit/gm/test_sm3_impl.c src/gm/sm3_impl.c src/gm/sm3_x86.c -lcrypto -lcmocka
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "sm3_impl.h"
#include "testutil.h"

static const char *const ss_names[] = {"portable", "x86-avx-bmi2"};
static const char *const mb_names[] = {"portable", "avx2x8", "avx512x16"};
#define NUM_SS (sizeof(ss_names) / sizeof(ss_names[0]))
#define NUM_MB (sizeof(mb_names) / sizeof(mb_names[0]))

static const char abc_hex[] = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0";
static const char abcd16_hex[] = "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732";

static size_t
diff_iters(void)
{
    const char *env = getenv("DBAO_DIFF_ITERS");
    char *end;
    unsigned long long v;

    if (env == NULL || *env == '\0') {
        return 20000;
    }
    v = strtoull(env, &end, 10);
    return (*end == '\0' && v > 0) ? (size_t) v : 20000;
}

static void
ref_sm3(uint8_t out[32], const uint8_t *prefix, size_t prefix_len, const uint8_t *msg, size_t len)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;

    assert_non_null(c);
    assert_int_equal(EVP_DigestInit_ex(c, EVP_sm3(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(c, prefix, prefix_len), 1);
    assert_int_equal(EVP_DigestUpdate(c, msg, len), 1);
    assert_int_equal(EVP_DigestFinal_ex(c, out, &n), 1);
    assert_int_equal(n, 32);
    EVP_MD_CTX_free(c);
}

/* Whole-message SM3 through one compress() function. The full blocks are compressed in place
 * (unaligned when msg is), in pieces of random sizes when rng is not NULL. */
static void
sm3_via(uint8_t out[32], const gm__sm3_impl *im, const uint8_t *msg, size_t len, tu_rng *rng)
{
    uint32_t st[8];
    uint8_t tail[128];
    size_t full = len / 64, done = 0, rest = len % 64, tail_len, i;
    uint64_t bits = (uint64_t) len * 8;

    memcpy(st, gm__sm3_iv, sizeof(st));
    while (done < full) {
        size_t n = full - done;

        if (rng != NULL) {
            n = 1 + (size_t) (tu_rng_next(rng) % n);
        }
        im->compress(st, msg + 64 * done, n);
        done += n;
    }
    im->compress(st, msg, 0); /* nblocks 0 must be a no-op */
    memset(tail, 0, sizeof(tail));
    if (rest > 0) {
        memcpy(tail, msg + 64 * full, rest);
    }
    tail[rest] = 0x80;
    tail_len = rest + 9 <= 64 ? 64 : 128;
    for (i = 0; i < 8; i++) {
        tail[tail_len - 1 - i] = (uint8_t) (bits >> (8 * i));
    }
    im->compress(st, tail, tail_len / 64);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t) (st[i] >> 24);
        out[4 * i + 1] = (uint8_t) (st[i] >> 16);
        out[4 * i + 2] = (uint8_t) (st[i] >> 8);
        out[4 * i + 3] = (uint8_t) st[i];
    }
}

/* ---- Path tables ------------------------------------------------------------------------- */

static void
test_tables(void **state)
{
    size_t i;

    (void) state;
    assert_non_null(gm__sm3_impl_best());
    assert_non_null(gm__sm3_mb_impl_best());
    assert_non_null(gm__sm3_impl_get("portable"));
    assert_non_null(gm__sm3_mb_impl_get("portable"));
    assert_int_equal(gm__sm3_mb_impl_get("portable")->lanes, 1);
    assert_null(gm__sm3_impl_get("no-such-path"));
    assert_null(gm__sm3_impl_get(NULL));
    assert_null(gm__sm3_mb_impl_get("avx2x8x"));
    assert_null(gm__sm3_mb_impl_get(NULL));
    assert_false(gm__sm3_impl_available("no-such-path"));
    assert_true(gm__sm3_impl_available(gm__sm3_impl_best()->name));
    assert_true(gm__sm3_mb_impl_available(gm__sm3_mb_impl_best()->name));
    for (i = 0; i < NUM_SS; i++) {
        const gm__sm3_impl *im = gm__sm3_impl_get(ss_names[i]);

        assert_true(gm__sm3_impl_available(ss_names[i]) == (im != NULL));
        if (im != NULL) {
            assert_string_equal(im->name, ss_names[i]);
        } else {
            print_message("sm3 path %s: not supported here, skipped\n", ss_names[i]);
        }
    }
    for (i = 0; i < NUM_MB; i++) {
        const gm__sm3_mb_impl *mb = gm__sm3_mb_impl_get(mb_names[i]);

        assert_true(gm__sm3_mb_impl_available(mb_names[i]) == (mb != NULL));
        if (mb != NULL) {
            assert_string_equal(mb->name, mb_names[i]);
            assert_true(mb->lanes >= 1 && mb->lanes <= GM__SM3_MB_LANES_MAX);
        } else {
            print_message("sm3-mb path %s: not supported here, skipped\n", mb_names[i]);
        }
    }
}

/* ---- Known answers ----------------------------------------------------------------------- */

static void
test_kat_single(void **state)
{
    uint8_t abcd16[64], out[32];
    size_t i;

    (void) state;
    for (i = 0; i < 64; i++) {
        abcd16[i] = (uint8_t) ("abcd"[i % 4]);
    }
    for (i = 0; i < NUM_SS; i++) {
        const gm__sm3_impl *im = gm__sm3_impl_get(ss_names[i]);

        if (im == NULL) {
            continue;
        }
        sm3_via(out, im, (const uint8_t *) "abc", 3, NULL);
        assert_true(tu_eq_hex(out, 32, abc_hex));
        sm3_via(out, im, abcd16, 64, NULL);
        assert_true(tu_eq_hex(out, 32, abcd16_hex));
    }
}

/* Both vectors in every lane: batches of 2 * lanes + 3 messages where vector v sits at
 * position pos and the others are filler of assorted lengths, and a batch of vectors only. */
static void
test_kat_mb(void **state)
{
    uint8_t abcd16[64], filler[300], *out;
    const uint8_t *msgs[40];
    size_t lens[40], i, m, pos, v, num;
    uint8_t ref[32];

    (void) state;
    for (i = 0; i < 64; i++) {
        abcd16[i] = (uint8_t) ("abcd"[i % 4]);
    }
    for (i = 0; i < sizeof(filler); i++) {
        filler[i] = (uint8_t) (i * 7 + 1);
    }
    out = tu_xmalloc(32 * 40);
    for (m = 0; m < NUM_MB; m++) {
        const gm__sm3_mb_impl *mb = gm__sm3_mb_impl_get(mb_names[m]);

        if (mb == NULL) {
            continue;
        }
        num = 2 * mb->lanes + 3;
        for (v = 0; v < 2; v++) {
            for (pos = 0; pos < num; pos++) {
                for (i = 0; i < num; i++) {
                    msgs[i] = filler + i;
                    lens[i] = (i * 37) % 200;
                }
                msgs[pos] = v == 0 ? (const uint8_t *) "abc" : abcd16;
                lens[pos] = v == 0 ? 3 : 64;
                mb->hash_many(out, msgs, lens, num, NULL, 0);
                assert_true(tu_eq_hex(out + 32 * pos, 32, v == 0 ? abc_hex : abcd16_hex));
                for (i = 0; i < num; i++) {
                    ref_sm3(ref, NULL, 0, msgs[i], lens[i]);
                    assert_true(tu_mem_eq(out + 32 * i, 32, ref, 32));
                }
            }
        }
        for (i = 0; i < num; i++) {
            msgs[i] = i % 2 ? abcd16 : (const uint8_t *) "abc";
            lens[i] = i % 2 ? 64 : 3;
        }
        mb->hash_many(out, msgs, lens, num, NULL, 0);
        for (i = 0; i < num; i++) {
            assert_true(tu_eq_hex(out + 32 * i, 32, i % 2 ? abcd16_hex : abc_hex));
        }
        /* "abc" as prefix and empty messages (NULL pointers): SM3("abc") in every lane. */
        for (i = 0; i < num; i++) {
            msgs[i] = NULL;
            lens[i] = 0;
        }
        mb->hash_many(out, msgs, lens, num, (const uint8_t *) "abc", 3);
        for (i = 0; i < num; i++) {
            assert_true(tu_eq_hex(out + 32 * i, 32, abc_hex));
        }
        /* A 64-byte prefix and nothing else: SM3("abcd" x 16). */
        mb->hash_many(out, msgs, lens, num, abcd16, 64);
        for (i = 0; i < num; i++) {
            assert_true(tu_eq_hex(out + 32 * i, 32, abcd16_hex));
        }
    }
    free(out);
}

/* ---- Differential: single stream --------------------------------------------------------- */

static void
test_diff_single(void **state)
{
    const size_t max_len = 65536 + 64;
    size_t iters = diff_iters(), it, i, len, off;
    uint8_t *buf = tu_xmalloc(max_len + 64), ref[32], out[32];
    tu_rng rng = {0x5343a1b2c3d4e5f6ull}, split = {42};

    (void) state;
    for (it = 0; it < iters; it++) {
        uint64_t r = tu_rng_next(&rng);

        if (it < 300) {
            len = it; /* every length around the padding boundaries */
        } else if (r % 100 == 0) {
            len = (size_t) (tu_rng_next(&rng) % 65537);
        } else {
            len = (size_t) (tu_rng_next(&rng) % 4097);
        }
        off = (size_t) ((r >> 32) % 64);
        tu_fill(&rng, buf + off, len);
        ref_sm3(ref, NULL, 0, buf + off, len);
        for (i = 0; i < NUM_SS; i++) {
            const gm__sm3_impl *im = gm__sm3_impl_get(ss_names[i]);

            if (im == NULL) {
                continue;
            }
            sm3_via(out, im, buf + off, len, (r & 1) ? &split : NULL);
            if (!tu_mem_eq(out, 32, ref, 32)) {
                fail_msg("path %s, case %zu, len %zu, offset %zu", im->name, it, len, off);
            }
        }
    }
    free(buf);
}

/* ---- Differential: multi-buffer ---------------------------------------------------------- */

/* One batch of num messages with random lengths (0..max_len, a few longer) at random offsets
 * in pool, hashed by every multi-buffer path with the given prefix, against OpenSSL. */
static void
check_batch(tu_rng *rng, uint8_t *pool, size_t pool_len, size_t num, size_t max_len,
            const uint8_t *prefix, size_t prefix_len)
{
    const uint8_t *msgs[64];
    size_t lens[64], i, m;
    uint8_t ref[64 * 32], out[64 * 32 + 32];

    assert_true(num <= 64);
    for (i = 0; i < num; i++) {
        uint64_t r = tu_rng_next(rng);

        lens[i] = (size_t) (r % (max_len + 1));
        if (r % 97 == 0) {
            lens[i] = (size_t) ((r >> 16) % (pool_len / 2));
        }
        msgs[i] = pool + (size_t) ((r >> 40) % (pool_len - lens[i] + 1));
        if (lens[i] == 0 && (r & 2)) {
            msgs[i] = NULL;
        }
        ref_sm3(ref + 32 * i, prefix, prefix_len, msgs[i], lens[i]);
    }
    for (m = 0; m < NUM_MB; m++) {
        const gm__sm3_mb_impl *mb = gm__sm3_mb_impl_get(mb_names[m]);

        if (mb == NULL) {
            continue;
        }
        memset(out, 0xee, sizeof(out));
        mb->hash_many(out, msgs, lens, num, prefix, prefix_len);
        for (i = 0; i < num; i++) {
            if (!tu_mem_eq(out + 32 * i, 32, ref + 32 * i, 32)) {
                fail_msg("path %s, batch of %zu, message %zu (len %zu), prefix_len %zu", mb->name,
                         num, i, lens[i], prefix_len);
            }
        }
        for (i = 32 * num; i < sizeof(out); i++) {
            assert_int_equal(out[i], 0xee); /* nothing written past num digests */
        }
    }
}

static void
test_diff_mb(void **state)
{
    const size_t pool_len = 1 << 16;
    uint8_t *pool = tu_xmalloc(pool_len), prefix[64];
    tu_rng rng = {0x4d42u};
    size_t rounds = diff_iters() / 50, r, num, p;

    (void) state;
    tu_fill(&rng, pool, pool_len);
    tu_fill(&rng, prefix, sizeof(prefix));
    if (rounds == 0) {
        rounds = 1;
    }
    /* Every batch size 0..40 with each prefix kind, short and long messages. */
    for (num = 0; num <= 40; num++) {
        static const size_t plens[] = {0, 1, 63, 64};

        for (p = 0; p < sizeof(plens) / sizeof(plens[0]); p++) {
            check_batch(&rng, pool, pool_len, num, 200, plens[p] ? prefix : NULL, plens[p]);
            check_batch(&rng, pool, pool_len, num, 1100, plens[p] ? prefix : NULL, plens[p]);
        }
    }
    /* Random batches: size 0..64, lengths up to 4 KiB, random prefix length 0..64. */
    for (r = 0; r < rounds; r++) {
        uint64_t x = tu_rng_next(&rng);
        size_t plen = (size_t) ((x >> 8) % 65);

        check_batch(&rng, pool, pool_len, (size_t) (x % 65), (x >> 20) & 1 ? 4096 : 300,
                    plen ? prefix : NULL, plen);
    }
    free(pool);
}

/* Equal lengths that end together and one long straggler: exercises the refill of lanes, the
 * single-stream finish of stragglers and padding that spills into a second block. */
static void
test_mb_shapes(void **state)
{
    const size_t pool_len = 40000;
    uint8_t *pool = tu_xmalloc(pool_len), prefix[64];
    const uint8_t *msgs[40];
    size_t lens[40], i, m, shape;
    uint8_t out[40 * 32], ref[32];
    tu_rng rng = {7};

    (void) state;
    tu_fill(&rng, pool, pool_len);
    tu_fill(&rng, prefix, sizeof(prefix));
    for (shape = 0; shape < 6; shape++) {
        for (i = 0; i < 40; i++) {
            msgs[i] = pool + 3 * i + 1;
            switch (shape) {
            case 0:
                lens[i] = 55; /* padding fits exactly */
                break;
            case 1:
                lens[i] = 56; /* padding spills into a second block */
                break;
            case 2:
                lens[i] = i == 17 ? 30000 : 100; /* one straggler */
                break;
            case 3:
                lens[i] = 64 * (40 - i); /* decreasing: lanes free up one by one */
                break;
            case 4:
                lens[i] = 1000 - (i % 3); /* Merkle-leaf-like */
                break;
            default:
                lens[i] = 0;
                break;
            }
        }
        for (m = 0; m < NUM_MB; m++) {
            const gm__sm3_mb_impl *mb = gm__sm3_mb_impl_get(mb_names[m]);
            size_t pl;

            if (mb == NULL) {
                continue;
            }
            for (pl = 0; pl <= 64; pl += 8) {
                mb->hash_many(out, msgs, lens, 40, pl ? prefix : NULL, pl);
                for (i = 0; i < 40; i++) {
                    ref_sm3(ref, prefix, pl, msgs[i], lens[i]);
                    if (!tu_mem_eq(out + 32 * i, 32, ref, 32)) {
                        fail_msg("path %s, shape %zu, message %zu, prefix_len %zu", mb->name, shape,
                                 i, pl);
                    }
                }
            }
        }
    }
    free(pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),  cmocka_unit_test(test_kat_single),
        cmocka_unit_test(test_kat_mb),  cmocka_unit_test(test_diff_single),
        cmocka_unit_test(test_diff_mb), cmocka_unit_test(test_mb_shapes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
