/* fuzz_diff_sm3.c: differential libFuzzer target, dengbao SM3 paths against OpenSSL 3 EVP_sm3.
 *
 * Input: [prefix len % 65][message count % 41][chunk size] prefix(len) [one length byte per
 *        message] then the messages back to back (missing bytes read as zero or truncate the
 *        last messages, so every length is an input)
 *
 * Invariants (abort() on any violation):
 *   - on every supported "sm3" path, gm_sm3 of the whole input, and streaming init/update/final
 *     in chunks of the chosen size, equal EVP SM3;
 *   - on the "sm3-mb" path chosen by the last byte (each supported one), gm_sm3_hash_many(prefix, msgs) gives
 *     EVP SM3(prefix || msg_i) for each message (0 to 40 messages of 0 to ~4.7 KB, so lanes
 *     of different lengths and more messages than lanes), and refuses a prefix over 64 bytes.
 *
 * Build: see cmake/fuzz.cmake (clang -fsanitize=fuzzer,address,undefined ... -lcrypto).
 */
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gm.h"

#define MAX_PATH 8
#define MAX_MSGS 40

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *sm3_paths[MAX_PATH], *mb_paths[MAX_PATH];
static size_t n_sm3, n_mb;
static EVP_MD *evp_sm3;
static EVP_MD_CTX *evp_ctx;

static void
setup(void)
{
    gm_impl_info info[64];
    size_t n = gm_impl_list(info, 64);

    if (n > 64) {
        n = 64;
    }
    for (size_t i = 0; i < n; i++) {
        if (!info[i].supported) {
            continue;
        }
        if (strcmp(info[i].alg, "sm3") == 0 && n_sm3 < MAX_PATH) {
            sm3_paths[n_sm3++] = info[i].path;
        } else if (strcmp(info[i].alg, "sm3-mb") == 0 && n_mb < MAX_PATH) {
            mb_paths[n_mb++] = info[i].path;
        }
    }
    CHECK(n_sm3 > 0 && n_mb > 0);
    evp_sm3 = EVP_MD_fetch(NULL, "SM3", NULL);
    evp_ctx = EVP_MD_CTX_new();
    CHECK(evp_sm3 != NULL && evp_ctx != NULL);
}

static void
evp_hash(uint8_t out[32], const uint8_t *prefix, size_t prefix_len, const uint8_t *msg,
         size_t len)
{
    unsigned int outl = 0;

    CHECK(EVP_DigestInit_ex(evp_ctx, evp_sm3, NULL) == 1);
    CHECK(EVP_DigestUpdate(evp_ctx, prefix, prefix_len) == 1);
    CHECK(EVP_DigestUpdate(evp_ctx, msg, len) == 1);
    CHECK(EVP_DigestFinal_ex(evp_ctx, out, &outl) == 1);
    CHECK(outl == 32);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    static const uint8_t none[1];
    uint8_t prefix[64 + 1], want[32], got[32];
    uint8_t out[32 * (MAX_MSGS + 1)], wants[32 * (MAX_MSGS + 1)];
    const uint8_t *msgs[MAX_MSGS + 1];
    size_t lens[MAX_MSGS + 1];
    size_t pos = 0, prefix_len = 0, num = 0, chunk = 1;
    gm_sm3_ctx c;

    if (!ready) {
        setup();
        ready = true;
    }

    /* The whole input, one shot and streamed, on every sm3 path. */
    evp_hash(want, NULL, 0, data, size);
    if (size > 0) {
        chunk = 1 + (size_t) data[size - 1] % 97;
    }
    for (size_t p = 0; p < n_sm3; p++) {
        CHECK(gm_impl_use("sm3", sm3_paths[p]) == 0);
        gm_sm3(got, size > 0 ? data : none, size);
        CHECK(memcmp(got, want, 32) == 0);
        gm_sm3_init(&c);
        for (size_t off = 0; off < size; off += chunk) {
            gm_sm3_update(&c, data + off, size - off < chunk ? size - off : chunk);
        }
        gm_sm3_final(&c, got);
        CHECK(memcmp(got, want, 32) == 0);
    }

    /* Parse: prefix length, message count, prefix, length bytes, messages. */
    if (pos < size) {
        prefix_len = data[pos++] % 65;
    }
    if (pos < size) {
        num = data[pos++] % (MAX_MSGS + 1);
    }
    for (size_t i = 0; i < prefix_len; i++) {
        prefix[i] = pos < size ? data[pos++] : 0;
    }
    for (size_t i = 0; i < num; i++) {
        uint8_t b = pos < size ? data[pos++] : 0;

        lens[i] = (b & 0x80) ? (size_t) (b & 0x7f) * 37 + (b & 3) : b;
    }
    for (size_t i = 0; i < num; i++) {
        size_t avail = size - pos;

        if (lens[i] > avail) {
            lens[i] = avail;
        }
        msgs[i] = lens[i] > 0 ? data + pos : none;
        pos += lens[i];
    }

    /* One sm3-mb path per input, chosen by the last byte (the whole-input pass above already
     * covers every sm3 path); the expected digests come from EVP. */
    {
        const char *path = mb_paths[(size > 0 ? data[size - 1] / 97 : 0) % n_mb];

        for (size_t i = 0; i < num; i++) {
            evp_hash(wants + 32 * i, prefix, prefix_len, msgs[i], lens[i]);
        }
        CHECK(gm_impl_use("sm3-mb", path) == 0);
        memset(out, 0xa5, sizeof(out));
        CHECK(gm_sm3_hash_many(out, msgs, lens, num, prefix_len > 0 ? prefix : NULL,
                               prefix_len) == 0);
        CHECK(memcmp(out, wants, 32 * num) == 0);
        /* Nothing written past the last digest. */
        for (size_t i = 32 * num; i < sizeof(out); i++) {
            CHECK(out[i] == 0xa5);
        }
        CHECK(gm_sm3_hash_many(out, msgs, lens, num, prefix, 65) == DBAO_ERANGE);
    }
    return 0;
}
