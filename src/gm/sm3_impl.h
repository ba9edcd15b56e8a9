/* sm3_impl.h: private interface of the SM3 (GB/T 32905-2016) compression paths.
 *
 * Two kinds of path live behind this header:
 *
 *  - Single stream (gm__sm3_impl): compress n 64-byte blocks into one chaining state. The
 *    streaming API (sm3.c: init/update/final and HMAC-SM3) sits on top of it. Paths:
 *    "portable" (plain C, any CPU, any byte order) and, on x86-64, "x86-avx-bmi2" (AVX
 *    message expansion, BMI2 rorx rotates).
 *  - Multi-buffer (gm__sm3_mb_impl): hash many independent messages completely (padding
 *    included) with one message per SIMD lane. Paths: "portable" (one message after
 *    another through the portable compress), "avx2x8" (8 lanes of AVX2) and "avx512x16"
 *    (16 lanes of AVX-512F/BW/VL).
 *
 * Every path gives bit-identical results; which one runs is decided by the dispatcher (impl.c)
 * through gm__sm3_impl_get / gm__sm3_mb_impl_get, which return NULL for a path this build or
 * this CPU cannot run. The structures returned are static and read-only; all functions are
 * thread-safe (they keep no state between calls). SM3 is used here on public data, except in
 * HMAC where the key only enters through the message: the code has no table look-ups or
 * branches indexed by data, only by lengths.
 */
#ifndef DENGBAO_GM_SM3_IMPL_H
#define DENGBAO_GM_SM3_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A single-stream path. compress() processes nblocks 64-byte blocks (any alignment) into
 * state, eight words in host order (state[0] is A). nblocks may be 0. */
typedef struct gm__sm3_impl {
    const char *name; /* "portable", "x86-avx-bmi2" */
    void (*compress)(uint32_t state[8], const uint8_t *blocks, size_t nblocks);
} gm__sm3_impl;

/* gm__sm3_impl_get returns the path called `name`, or NULL if it is unknown, not built, or not
 * supported by this CPU. gm__sm3_impl_best returns the fastest supported path (never NULL). */
const gm__sm3_impl *gm__sm3_impl_get(const char *name);
const gm__sm3_impl *gm__sm3_impl_best(void);

/* A multi-buffer path. hash_many() writes SM3(prefix || msgs[i]) to out + 32 * i for each i
 * below num. Messages may have any lengths (lens[i], 0 allowed; msgs[i] may be NULL when
 * lens[i] is 0) and any alignment; prefix may be NULL when prefix_len is 0, and prefix_len is at
 * most 64 (GM__SM3_MB_PREFIX_MAX). The implementation groups messages into lanes, pads each
 * lane itself and finishes stragglers with the single-stream path. out must not overlap the
 * inputs. num may be 0. */
#define GM__SM3_MB_PREFIX_MAX 64

typedef struct gm__sm3_mb_impl {
    const char *name; /* "portable", "avx2x8", "avx512x16" */
    size_t lanes;     /* messages hashed at once (1 for portable) */
    void (*hash_many)(uint8_t *out, const uint8_t *const *msgs, const size_t *lens, size_t num,
                      const uint8_t *prefix, size_t prefix_len);
} gm__sm3_mb_impl;

/* gm__sm3_mb_impl_get returns the multi-buffer path called `name` or NULL (unknown, not built,
 * or not supported by this CPU). gm__sm3_mb_impl_best returns the fastest supported one. */
const gm__sm3_mb_impl *gm__sm3_mb_impl_get(const char *name);
const gm__sm3_mb_impl *gm__sm3_mb_impl_best(void);

/* gm__sm3_impl_available and gm__sm3_mb_impl_available say whether a path of that name is
 * built and can run on this CPU (the house `_impl_available` predicate; the same test as the
 * getters returning non-NULL). */
bool gm__sm3_impl_available(const char *name);
bool gm__sm3_mb_impl_available(const char *name);

/* ---- Shared between sm3_impl.c and sm3_x86.c only ---------------------------------------- */

/* The SM3 initial value. */
extern const uint32_t gm__sm3_iv[8];

/* The portable compression function (always built). */
void gm__sm3_compress_portable(uint32_t state[8], const uint8_t *blocks, size_t nblocks);

/* One SIMD step of a multi-buffer path: compress one 64-byte block per lane, blocks[i] for
 * lane i, into the transposed state st[word * lanes + lane] (host order). */
typedef void (*gm__sm3_mb_step_fn)(uint32_t *st, const uint8_t *const *blocks);

/* gm__sm3_mb_run is the lane scheduler of the multi-buffer paths (sm3_impl.c): it implements
 * hash_many for `lanes` lanes (at most GM__SM3_MB_LANES_MAX) with `step`, and finishes the
 * messages still open once fewer than `min_active` lanes are busy with `compress`, one message
 * at a time (a lane whose message is done takes the next waiting message, so the count of busy
 * lanes only falls once no message waits). */
#define GM__SM3_MB_LANES_MAX 16

void gm__sm3_mb_run(uint8_t *out, const uint8_t *const *msgs, const size_t *lens, size_t num,
                    const uint8_t *prefix, size_t prefix_len, size_t lanes, gm__sm3_mb_step_fn step,
                    size_t min_active, void (*compress)(uint32_t *, const uint8_t *, size_t));

#if defined(__x86_64__)
/* sm3_x86.c. The functions are built with target attributes; call them only when
 * gm__sm3_x86_has(...) says the CPU supports them. */
void gm__sm3_compress_avx_bmi2(uint32_t state[8], const uint8_t *blocks, size_t nblocks);
void gm__sm3_hash_many_avx2x8(uint8_t *out, const uint8_t *const *msgs, const size_t *lens,
                              size_t num, const uint8_t *prefix, size_t prefix_len);
void gm__sm3_hash_many_avx512x16(uint8_t *out, const uint8_t *const *msgs, const size_t *lens,
                                 size_t num, const uint8_t *prefix, size_t prefix_len);
bool gm__sm3_x86_has_avx_bmi2(void);
bool gm__sm3_x86_has_avx2(void);
bool gm__sm3_x86_has_avx512(void);
#endif

#endif /* DENGBAO_GM_SM3_IMPL_H */
