/* fuzz_clearing_wire.c: libFuzzer target for the clearing binary protocol (wire.c).
 *
 * The input is a byte stream of frames. Both decoders walk it frame by frame, stopping at the
 * first refusal or when more bytes are needed. Invariants: nothing crashes or leaks; a
 * decoder never returns more than it was given; every accepted frame re-encodes to exactly
 * the bytes it was decoded from (EVENT with clr_wire_encode_event, RESULT with
 * clr_wire_encode_result, ERROR with clr_wire_encode_error), so the encoding is canonical;
 * an accepted event passes the intake rules again; and every proper prefix of an accepted
 * frame asks for more bytes (0) or is refused, never accepted.
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_clearing_wire/.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/clearing.h"
#include "journal_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t out[CLR_WIRE_FRAME_MAX];
    size_t off = 0;
    for (;;) {
        clr_event ev;
        uint64_t id;
        dbao_err err;
        int n = clr_wire_decode(data + off, size - off, &ev, &id, &err);
        if (n <= 0) {
            break;
        }
        assert((size_t) n <= size - off && (size_t) n <= CLR_WIRE_FRAME_MAX + 4);
        assert(clr__intake_check(&ev, NULL) == 0);
        size_t m = clr_wire_encode_event(out, id, &ev);
        assert(m == (size_t) n && memcmp(out, data + off, m) == 0);
        for (size_t k = 0; k < (size_t) n; k++) {
            assert(clr_wire_decode(data + off, k, &ev, &id, NULL) <= 0);
        }
        off += (size_t) n;
    }
    off = 0;
    for (;;) {
        clr_result res;
        uint64_t id;
        uint16_t code;
        dbao_err err;
        dbao_err_clear(&err);
        int n = clr_wire_decode_result(data + off, size - off, &res, &id, &code, &err);
        if (n <= 0) {
            break;
        }
        assert((size_t) n <= size - off);
        size_t m;
        if (code == 0) {
            m = clr_wire_encode_result(out, id, &res);
        } else {
            const char *prefix = "clearing server: ";
            assert(strncmp(err.msg, prefix, strlen(prefix)) == 0);
            m = clr_wire_encode_error(out, id, code, err.msg + strlen(prefix));
        }
        /* The error text may have been cut by dbao_err's size; compare what fits. */
        if (code == 0 || (size_t) n - 20 < DBAO_ERR_MSG_MAX - 18) {
            assert(m == (size_t) n && memcmp(out, data + off, m) == 0);
        }
        off += (size_t) n;
    }
    return 0;
}
