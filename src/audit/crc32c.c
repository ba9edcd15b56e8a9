/* crc32c.c: CRC32C (Castagnoli, reflected polynomial 0x82F63B78) for the audit log's frames.
 *
 * Why hand-written: no Debian library exports CRC32C (zlib has only the IEEE CRC), and the
 * frame check runs over every byte the log writes and every byte `audit verify` reads, so it
 * must run at memory speed: the SSE4.2 crc32 instruction on x86-64 and the CRC extension on
 * aarch64 (both picked at run time, with no compiler flags), slicing-by-8 tables elsewhere.
 * The tables are computed once under pthread_once. CRC32C detects accidental damage only: the
 * log's integrity against an adversary comes from the SM3 Merkle tree and SM2 checkpoints.
 *
 * Convention: audit__crc32c(0, "123456789", 9) == 0xE3069283 (the "check" value); chaining
 * audit__crc32c(audit__crc32c(0, a, n), b, m) equals the CRC of a || b.
 */
#include <pthread.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>
#if defined(__clang__)
#define CRC_ARM_TARGET __attribute__((target("crc")))
#else
#define CRC_ARM_TARGET __attribute__((target("+crc")))
#endif
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t c = crc_table[t - 1][i];
            crc_table[t][i] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
#elif defined(__aarch64__)
    crc_hw = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#endif
}

static uint32_t
crc_portable(uint32_t c, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= c;
        c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
            crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
            crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
            crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    }
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t
crc_hw_x86(uint32_t c, const uint8_t *p, size_t len)
{
    uint64_t c64 = c;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        len -= 8;
    }
    c = (uint32_t) c64;
    while (len--) {
        c = _mm_crc32_u8(c, *p++);
    }
    return c;
}
#endif

#if defined(__aarch64__)
CRC_ARM_TARGET static uint32_t
crc_hw_arm(uint32_t c, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __crc32cd(c, w);
        p += 8;
        len -= 8;
    }
    while (len--) {
        c = __crc32cb(c, *p++);
    }
    return c;
}
#endif

uint32_t
audit__crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    uint32_t c = ~crc;
    const uint8_t *p = data;
    if (crc_hw) {
#if defined(__x86_64__)
        return ~crc_hw_x86(c, p, len);
#elif defined(__aarch64__)
        return ~crc_hw_arm(c, p, len);
#endif
    }
    return ~crc_portable(c, p, len);
}
