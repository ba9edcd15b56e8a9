/* wire.c: the clearing intake's binary protocol (docs/clearing-protocol.md is the contract).
 *
 * Every frame is little-endian and starts with a 16-byte header:
 *
 *   off len field
 *     0   4 length      bytes that follow this field: 12 + body (12..CLR_WIRE_FRAME_MAX)
 *     4   2 msg type    1 EVENT, 2 RESULT, 3 ERROR
 *     6   2 version     1 (a newer one is DBAO_ENOTSUP, anything else DBAO_EFORMAT)
 *     8   8 request id  chosen by the client, echoed in the answer
 *
 * Bodies (offsets from the start of the body, i.e. frame offset 16):
 *   EVENT  (96 bytes, length 108): exactly the journal's event layout (clr_event_encode,
 *          event.c), with seq and ts_ns sent as zero (the engine stamps them).
 *   RESULT (56 bytes, length 68):
 *          0 u64 seq | 8 u64 account | 16 u64 order_id | 24 u8 type | 25 u8 reject |
 *          26 u16 zero | 28 u32 zero | 32 i64 cash_available | 40 i64 cash_frozen |
 *          48 i64 open_qty
 *   ERROR  (4 + n bytes): 0 u16 code (the DBAO code negated: 1001 = malformed frame, 1005 =
 *          unsupported version, 22 = invalid) | 2 u16 n | 4 n bytes of printable ASCII text
 *          (no NUL), n <= CLR_WIRE_FRAME_MAX - 20 so every frame fits in CLR_WIRE_FRAME_MAX.
 *
 * Invariants: a decoder consumes exactly one frame or nothing; it returns 0 (need more bytes)
 * only while the bytes seen so far could still be a valid frame's prefix, so a stream of
 * garbage is refused as soon as its length field is read. Every accepted EVENT re-encodes to
 * the same bytes (the fuzz target checks it). Everything here is hand-written byte shuffling
 * on the helpers in internal.h: no struct is ever copied to or from the wire.
 */
#include <string.h>

#include "dengbao/clearing.h"
#include "internal.h"
#include "journal_internal.h"

bool
clr__date_valid(int64_t d)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (d < 19700101 || d > 99991231) {
        return false;
    }
    int y = (int) (d / 10000), m = (int) (d / 100 % 100), day = (int) (d % 100);
    if (m < 1 || m > 12 || day < 1 || day > mdays[m - 1]) {
        return false;
    }
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return !(m == 2 && day == 29 && !leap);
}

int
clr__intake_check(const clr_event *ev, dbao_err *err)
{
    int rc = clr__event_fields_check(ev, err);
    if (rc != 0) {
        return rc;
    }
    if (ev->seq != 0 || ev->ts_ns != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing intake: field \"%s\" must not be sent",
                            ev->seq != 0 ? "seq" : "ts_ns");
    }
    if (ev->type == CLR_EV_ORDER && ev->side != CLR_SIDE_BUY && ev->side != CLR_SIDE_SELL) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing intake: field \"side\" must be B or S");
    }
    if (ev->price < 0 || ev->qty < 0 || ev->amount < 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing intake: field \"%s\" is negative",
                            ev->price < 0 ? "price"
                            : ev->qty < 0 ? "qty"
                                          : "amount");
    }
    if (ev->price > CLR_AMOUNT_MAX || ev->amount > CLR_AMOUNT_MAX ||
        (ev->type != CLR_EV_EOD && ev->qty > CLR_AMOUNT_MAX)) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing intake: field \"%s\" is out of range",
                            ev->price > CLR_AMOUNT_MAX    ? "price"
                            : ev->amount > CLR_AMOUNT_MAX ? "amount"
                                                          : "qty");
    }
    if (ev->type == CLR_EV_EOD) {
        if (!clr__date_valid(ev->qty)) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "clearing intake: field \"date\" is not a valid YYYYMMDD date");
        }
        return 0;
    }
    if (ev->account == 0 || ev->account > CLR_ACCOUNT_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "clearing intake: field \"account\" must be in 1..2^48");
    }
    if (ev->type == CLR_EV_OPEN && ev->member == 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing intake: field \"member\" must be >= 1");
    }
    bool has_security =
        ev->type == CLR_EV_ORDER || ev->type == CLR_EV_XFER_IN || ev->type == CLR_EV_XFER_OUT;
    if (has_security && (ev->security == 0 || ev->security > 999999)) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "clearing intake: field \"security\" must be a 6-digit code");
    }
    bool has_order =
        ev->type == CLR_EV_ORDER || ev->type == CLR_EV_CANCEL || ev->type == CLR_EV_FILL;
    if (has_order && ev->order_id == 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing intake: field \"order_id\" must be >= 1");
    }
    if (ev->type == CLR_EV_FILL && ev->exec_id == 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing intake: field \"exec_id\" must be >= 1");
    }
    return 0;
}

static void
put_header(uint8_t *out, uint32_t length, uint16_t type, uint64_t req_id)
{
    clr__put_u32(out, length);
    clr__put_u16(out + 4, type);
    clr__put_u16(out + 6, CLR_WIRE_VERSION);
    clr__put_u64(out + 8, req_id);
}

/* read_header: the shared first half of both decoders. Returns the frame's total length, 0 if
 * more bytes are needed, or a negative code. */
static int
read_header(const uint8_t *buf, size_t len, bool request, uint16_t *type, uint64_t *req_id,
            dbao_err *err)
{
    if (len < 4) {
        return 0;
    }
    uint32_t flen = clr__get_u32(buf);
    if (flen < CLR_WIRE_HDR_LEN - 4 || flen > CLR_WIRE_FRAME_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: length %u outside 12..%u",
                            (unsigned) flen, (unsigned) CLR_WIRE_FRAME_MAX);
    }
    if (len < 8) {
        return 0;
    }
    /* Type and version are checked as soon as they arrive, so that garbage is refused early. */
    uint16_t version = clr__get_u16(buf + 6);
    if (version > CLR_WIRE_VERSION) {
        return dbao_err_set(err, DBAO_ENOTSUP, "clearing frame: version %u is newer than %u",
                            (unsigned) version, (unsigned) CLR_WIRE_VERSION);
    }
    if (version != CLR_WIRE_VERSION) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: version %u unknown",
                            (unsigned) version);
    }
    *type = clr__get_u16(buf + 4);
    if (*type < CLR_MSG_EVENT || *type > CLR_MSG_ERROR) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: message type %u unknown",
                            (unsigned) *type);
    }
    if (request != (*type == CLR_MSG_EVENT)) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: message type %u is not %s",
                            (unsigned) *type, request ? "a request" : "an answer");
    }
    if (len < (size_t) flen + 4) {
        return 0;
    }
    *req_id = clr__get_u64(buf + 8);
    return (int) flen + 4;
}

int
clr_wire_decode(const uint8_t *buf, size_t len, clr_event *ev, uint64_t *req_id, dbao_err *err)
{
    uint16_t type = 0;
    uint64_t id = 0;
    int n = read_header(buf, len, true, &type, &id, err);
    if (n <= 0) {
        return n;
    }
    if ((size_t) n != CLR_WIRE_EVENT_LEN) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: event body is %d bytes, not %u",
                            n - (int) CLR_WIRE_HDR_LEN, (unsigned) CLR_EVENT_WIRE_LEN);
    }
    clr_event e;
    int rc = clr_event_decode(&e, buf + CLR_WIRE_HDR_LEN, err);
    if (rc == 0) {
        rc = clr__intake_check(&e, err);
    }
    if (rc != 0) {
        return rc;
    }
    *ev = e;
    *req_id = id;
    return n;
}

size_t
clr_wire_encode_event(uint8_t *out, uint64_t req_id, const clr_event *ev)
{
    put_header(out, CLR_WIRE_EVENT_LEN - 4, CLR_MSG_EVENT, req_id);
    clr_event_encode(ev, out + CLR_WIRE_HDR_LEN);
    return CLR_WIRE_EVENT_LEN;
}

size_t
clr_wire_encode_result(uint8_t *out, uint64_t req_id, const clr_result *res)
{
    uint8_t *b = out + CLR_WIRE_HDR_LEN;
    put_header(out, CLR_WIRE_RESULT_LEN - 4, CLR_MSG_RESULT, req_id);
    clr__put_u64(b + 0, res->seq);
    clr__put_u64(b + 8, res->account);
    clr__put_u64(b + 16, res->order_id);
    b[24] = res->type;
    b[25] = res->reject;
    clr__put_u16(b + 26, 0);
    clr__put_u32(b + 28, 0);
    clr__put_u64(b + 32, (uint64_t) res->cash_available);
    clr__put_u64(b + 40, (uint64_t) res->cash_frozen);
    clr__put_u64(b + 48, (uint64_t) res->open_qty);
    return CLR_WIRE_RESULT_LEN;
}

size_t
clr_wire_encode_error(uint8_t *out, uint64_t req_id, uint16_t code, const char *msg)
{
    const size_t max = CLR_WIRE_FRAME_MAX - CLR_WIRE_HDR_LEN - 4;
    size_t n = 0;
    uint8_t *text = out + CLR_WIRE_HDR_LEN + 4;
    /* Copy printable ASCII only (anything else becomes '?'), so the frame always decodes. */
    for (; msg != NULL && msg[n] != '\0' && n < max; n++) {
        unsigned char c = (unsigned char) msg[n];
        text[n] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    put_header(out, (uint32_t) (CLR_WIRE_HDR_LEN - 4 + 4 + n), CLR_MSG_ERROR, req_id);
    clr__put_u16(out + CLR_WIRE_HDR_LEN, code);
    clr__put_u16(out + CLR_WIRE_HDR_LEN + 2, (uint16_t) n);
    return CLR_WIRE_HDR_LEN + 4 + n;
}

int
clr_wire_decode_result(const uint8_t *buf, size_t len, clr_result *res, uint64_t *req_id,
                       uint16_t *err_code, dbao_err *err)
{
    uint16_t type = 0;
    uint64_t id = 0;
    int n = read_header(buf, len, false, &type, &id, err);
    if (n <= 0) {
        return n;
    }
    const uint8_t *b = buf + CLR_WIRE_HDR_LEN;
    size_t blen = (size_t) n - CLR_WIRE_HDR_LEN;
    if (type == CLR_MSG_RESULT) {
        if ((size_t) n != CLR_WIRE_RESULT_LEN) {
            return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: result body is %zu bytes",
                                blen);
        }
        if (clr__get_u16(b + 26) != 0 || clr__get_u32(b + 28) != 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: result reserved not zero");
        }
        if (b[24] < CLR_EV_OPEN || b[24] > CLR_EV_EOD) {
            return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: result type %u unknown",
                                (unsigned) b[24]);
        }
        if (b[25] > CLR_REJ_MEMBER) {
            return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: result reject %u unknown",
                                (unsigned) b[25]);
        }
        memset(res, 0, sizeof *res);
        res->seq = clr__get_u64(b + 0);
        res->account = clr__get_u64(b + 8);
        res->order_id = clr__get_u64(b + 16);
        res->type = b[24];
        res->reject = b[25];
        res->cash_available = (int64_t) clr__get_u64(b + 32);
        res->cash_frozen = (int64_t) clr__get_u64(b + 40);
        res->open_qty = (int64_t) clr__get_u64(b + 48);
        *err_code = 0;
        *req_id = id;
        return n;
    }
    if (blen < 4 || clr__get_u16(b + 2) != blen - 4) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: error text length mismatch");
    }
    uint16_t code = clr__get_u16(b);
    if (code == 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: error code 0");
    }
    char text[CLR_WIRE_FRAME_MAX];
    for (size_t i = 0; i < blen - 4; i++) {
        if (b[4 + i] < 0x20 || b[4 + i] >= 0x7f) {
            return dbao_err_set(err, DBAO_EFORMAT, "clearing frame: error text not printable");
        }
        text[i] = (char) b[4 + i];
    }
    text[blen - 4] = '\0';
    memset(res, 0, sizeof *res);
    *err_code = code;
    *req_id = id;
    /* The server's text goes to err; the return value is still the frame length, so the
     * caller tells the two answers apart by *err_code. */
    dbao_err_set(err, -(int) code, "clearing server: %s", text);
    return n;
}
