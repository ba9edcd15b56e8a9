/* fuzz_mask_jsonstream.c: libFuzzer target for the streaming JSON masking
 * (mask_json_stream_*), differential against the tree-based mask_apply_json.
 *
 * Input: the first byte picks the roles (bits 0-1: none, "doctor", "support", both) and the
 * piece size the document is fed in (bits 2-7: 0 = whole, else that many bytes); the rest is
 * the document. Invariants: nothing crashes or leaks; the stream fails exactly when the tree
 * fails (both refuse what is not JSON, both accept the same documents), except for the stream's
 * documented limits (an object key, field path or number token too long, which the generated
 * inputs cannot reach within libFuzzer's default -max_len); when both succeed, on a document
 * without duplicate keys, the output and the statistics are byte-for-byte the same. The
 * tree's ENOMEM on an empty masked value (apply.c) and jansson's acceptance of a raw NUL
 * after a number or literal are not compared. Then, for a valid document,
 * releasing the stream in the middle and appending the raw rest gives valid JSON.
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_mask_jsonstream/.
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "dengbao/mask.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char POLICY[] = "detect:\n"
                             "  types: [CN_RID18, CN_MOBILE, EMAIL, BANK_CARD, IPV4]\n"
                             "types:\n"
                             "  CN_RID18: {roles: {doctor: clear}}\n"
                             "  CN_MOBILE: {mask: \"keep(3,0)\", roles: {support: default}}\n"
                             "fields:\n"
                             "  patient.name: {type: CN_NAME, roles: {doctor: clear}}\n"
                             "  patient.id_no: {type: CN_RID18}\n"
                             "  a: {mask: \"round(10)\"}\n"
                             "  b: {mask: \"replace('<q>')\"}\n"
                             "  c: {}\n"
                             "  d: {roles: {doctor: clear}}\n"
                             "  e.f: {mask: year}\n";

static mask_policy *pol;
static mask_json_stream *js;

static bool
has_duplicates(const uint8_t *in, size_t len)
{
    json_t *j = json_loadb((const char *) in, len,
                           JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, NULL);
    if (j != NULL) {
        json_decref(j);
        return false;
    }
    return true; /* a duplicate, or not JSON: the caller only asks about valid documents */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (pol == NULL) {
        dbao_err err;
        if (mask_policy_parse(&pol, POLICY, strlen(POLICY), "fuzz.yaml", &err) != 0 ||
            mask_json_stream_new(&js, pol, NULL, 0, &err) != 0)
            __builtin_trap();
    }
    if (size < 1)
        return 0;
    static const char *const R[] = {"support", "doctor"};
    static const char *const D[] = {"doctor"};
    static const char *const S[] = {"support"};
    const char *const *roles = NULL;
    size_t nr = 0;
    switch (data[0] & 3) {
    case 1:
        roles = D;
        nr = 1;
        break;
    case 2:
        roles = S;
        nr = 1;
        break;
    case 3:
        roles = R;
        nr = 2;
        break;
    default:
        break;
    }
    size_t piece = data[0] >> 2;
    const uint8_t *in = data + 1;
    size_t len = size - 1;

    dbao_buf want = {0}, got = {0};
    mask_stats wst = {0}, gst = {0};
    int wrc = mask_apply_json(pol, roles, nr, (const char *) in, len, &want, &wst, NULL);

    mask_json_stream_reset(js, roles, nr);
    int grc = 0;
    size_t step = piece ? piece : (len ? len : 1);
    for (size_t pos = 0; grc == 0 && pos < len; pos += step)
        grc = mask_json_stream_feed(js, in + pos, len - pos < step ? len - pos : step, &got, NULL);
    if (grc == 0)
        grc = mask_json_stream_finish(js, &got, NULL);
    mask_json_stream_stats(js, &gst);

    /* jansson 2.14 swallows a raw NUL byte right after a number or a literal ("3\0",
     * "[1\0]" load fine): the stream refuses it, as JSON does; not compared */
    bool nul_quirk = wrc == 0 && memchr(in, 0, len) != NULL;
    if (wrc != DBAO_ENOMEM && !nul_quirk) {
        assert((wrc == 0) == (grc == 0));
        if (wrc == 0 && !has_duplicates(in, len)) {
            assert(got.len == want.len && memcmp(got.data, want.data, want.len) == 0);
            assert(gst.fields == wst.fields && gst.findings == wst.findings &&
                   gst.types == wst.types);
        }
    }
    if (wrc == 0 && grc == 0) {
        /* release in the middle: the held bytes plus the raw rest are JSON again */
        size_t cut = len / 2;
        dbao_buf r = {0};
        mask_json_stream_reset(js, roles, nr);
        if (mask_json_stream_feed(js, in, cut, &r, NULL) == 0) {
            assert(mask_json_stream_release(js, &r) == 0);
            dbao_buf_put(&r, in + cut, len - cut);
            json_t *j = json_loadb(r.data, r.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            assert(j != NULL);
            json_decref(j);
        }
        dbao_buf_free(&r);
    }
    dbao_buf_free(&want);
    dbao_buf_free(&got);
    return 0;
}
