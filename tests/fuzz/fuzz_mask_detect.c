/* fuzz_mask_detect.c: libFuzzer target for the detectors (mask_detect, mask_validate).
 *
 * The first input byte selects the type set (byte 0: the default set; otherwise the byte's bits
 * spread over the 12 types, so CN_NAME alone, all types, and mixes are all reached); the rest
 * is the text. Invariants checked with assert():
 *   - findings are inside the text, non-empty, in increasing start order and non-overlapping;
 *   - the count returned is the same with a small cap as with a large one, and the stored
 *     prefix is identical;
 *   - every finding is of an enabled type and passes mask_validate on its own bytes;
 *   - mask_validate on the whole text runs for every type (must not crash).
 * The detectors are built once (they are immutable) with a fixed `today`, so runs reproduce.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/mask.h"

#define MAX_FIND 4096

static mask_detector *dets[256];
static mask_finding found[MAX_FIND], few[4];

static uint32_t
types_of(uint8_t sel)
{
    if (sel == 0) {
        return MASK_TYPES_DEFAULT;
    }
    if (sel == 0xFF) {
        return MASK_TYPES_ALL;
    }
    /* 8 bits over 12 types: bit k enables types k+1 and (k+9 if <= 12) */
    uint32_t s = 0;
    for (unsigned k = 0; k < 8; k++) {
        if (sel & (1u << k)) {
            s |= MASK_TYPE_BIT(k + 1);
            if (k + 9 < MASK_T_COUNT) {
                s |= MASK_TYPE_BIT(k + 9);
            }
        }
    }
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    uint8_t sel = data[0];
    if (dets[sel] == NULL) {
        mask_detect_opts o = {types_of(sel), NULL, 20240615};
        if (sel == 0x42) {
            o.mobile_prefixes = "130,140-149,199";
        }
        if (mask_detector_new(&dets[sel], &o, NULL) != 0) {
            abort();
        }
    }
    const mask_detector *d = dets[sel];
    uint32_t types = types_of(sel);
    const char *text = (const char *) data + 1;
    size_t len = size - 1;

    size_t n = mask_detect(d, text, len, found, MAX_FIND);
    size_t m = mask_detect(d, text, len, few, 4);
    assert(n == m);
    assert(memcmp(found, few, sizeof(mask_finding) * (n < 4 ? n : 4)) == 0);
    size_t stored = n < MAX_FIND ? n : MAX_FIND;
    uint32_t prev_end = 0;
    for (size_t i = 0; i < stored; i++) {
        const mask_finding *f = &found[i];
        assert(f->type > MASK_T_NONE && f->type < MASK_T_COUNT);
        assert((types & MASK_TYPE_BIT(f->type)) != 0);
        assert(f->start < f->end && f->end <= len);
        assert(f->start >= prev_end);
        prev_end = f->end;
        assert(mask_validate(d, f->type, text + f->start, f->end - f->start));
    }
    for (int t = 0; t <= MASK_T_COUNT; t++) {
        (void) mask_validate(d, (mask_type) t, text, len);
    }
    return 0;
}
