/* internal.h: private to src/gm. Shared helpers between the gm source files. */
#ifndef DENGBAO_GM_INTERNAL_H
#define DENGBAO_GM_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "dengbao/gm.h"

static inline uint32_t
gm__load_be32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static inline void
gm__store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

static inline uint64_t
gm__load_be64(const uint8_t *p)
{
    return (uint64_t) gm__load_be32(p) << 32 | gm__load_be32(p + 4);
}

static inline void
gm__store_be64(uint8_t *p, uint64_t v)
{
    gm__store_be32(p, (uint32_t) (v >> 32));
    gm__store_be32(p + 4, (uint32_t) v);
}

/* The active implementation paths (impl.c). */
#include <stdbool.h>
bool gm__sm2_fast(void); /* false on the openssl path */
int gm__sm2_core(void);  /* the GM__SM2P_IMPL_* of the fast path */
struct gm__sm3_impl;
struct gm__sm3_mb_impl;
const struct gm__sm3_impl *gm__active_sm3(void);
const struct gm__sm3_mb_impl *gm__active_sm3_mb(void);
struct gm__sm4_impl;
const struct gm__sm4_impl *gm__active_sm4(void);
const char *gm__active_ghash(void);

/* SM3 compression of nblocks 64-byte blocks (sm3.c). */
void gm__sm3_compress(uint32_t state[8], const uint8_t *blocks, size_t nblocks);

/* SM2 ciphertext pieces (der.c). c3 and c2 point into the parsed input. */
typedef struct gm__sm2_ct_parts {
    uint8_t c1[65]; /* 04 || x1 || y1, not yet checked against the curve */
    const uint8_t *c3;
    const uint8_t *c2;
    size_t c2_len;
} gm__sm2_ct_parts;

int gm__sm2_ct_parse(gm__sm2_ct_parts *out, gm_sm2_ct_form form, const uint8_t *in, size_t in_len);
int gm__sm2_ct_encode(uint8_t **out, size_t *out_len, gm_sm2_ct_form form, const uint8_t c1[65],
                      const uint8_t c3[32], const uint8_t *c2, size_t c2_len);

#endif /* DENGBAO_GM_INTERNAL_H */
