/* fuzz_clearing_json.c: libFuzzer target for the clearing JSON intake and the money text
 * codec (jsonin.c).
 *
 * Input: the first byte picks the mode (even: a JSON request, odd: a money string), the rest
 * is the text. Invariants: nothing crashes or leaks; an accepted request is an event that
 * passes the intake rules and survives the binary protocol unchanged (encode, decode, encode:
 * the same bytes), and its JSON answer object parses; an accepted money string is within
 * CLR_AMOUNT_MAX, formats back to text that parses to the same value, and the formatted text
 * is canonical (formatting it again gives the same text).
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_clearing_json/.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "dengbao/clearing.h"
#include "journal_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const char *text = (const char *) data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        int64_t fen = 0, back = 0;
        if (clr_money_parse(text, len, &fen, NULL) == 0) {
            assert(fen >= -CLR_AMOUNT_MAX && fen <= CLR_AMOUNT_MAX);
            char out[32];
            clr_money_format(fen, out);
            assert(clr_money_parse(out, strlen(out), &back, NULL) == 0 && back == fen);
        }
        return 0;
    }
    clr_event ev;
    dbao_err err;
    if (clr_json_decode(text, len, &ev, &err) != 0) {
        assert(err.msg[0] != '\0');
        return 0;
    }
    assert(clr__intake_check(&ev, NULL) == 0);
    uint8_t a[CLR_WIRE_FRAME_MAX], b[CLR_WIRE_FRAME_MAX];
    size_t n = clr_wire_encode_event(a, 1, &ev);
    clr_event ev2;
    uint64_t id;
    assert(clr_wire_decode(a, n, &ev2, &id, NULL) == (int) n);
    assert(clr_wire_encode_event(b, id, &ev2) == n && memcmp(a, b, n) == 0);
    clr_result res = {.seq = 1,
                      .account = ev.account,
                      .order_id = ev.order_id,
                      .type = ev.type,
                      .cash_available = ev.amount,
                      .cash_frozen = -ev.price,
                      .open_qty = ev.qty};
    char *out = NULL;
    size_t out_len = 0;
    if (clr_json_result(&res, &out, &out_len, NULL) == 0) {
        json_t *j = json_loadb(out, out_len, 0, NULL);
        assert(j != NULL && json_is_object(j));
        json_decref(j);
        dbao_free(out);
    }
    return 0;
}
