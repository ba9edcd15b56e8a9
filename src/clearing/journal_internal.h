/* journal_internal.h: private declarations shared by the intake codecs (wire.c, jsonin.c) and
 * the journal (journal.c), and exposed to their unit tests and fuzz targets. Nothing outside
 * src/clearing, tests/unit/clearing and tests/fuzz/fuzz_clearing_* includes it.
 *
 * The journal's on-disk constants live here so that the tests can build damaged segments
 * byte by byte (docs/clearing-journal.md has the same table).
 */
#ifndef DENGBAO_CLEARING_JOURNAL_INTERNAL_H
#define DENGBAO_CLEARING_JOURNAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dengbao/clearing.h"

/* ---- journal segment format (journal.c) ------------------------------------------------- */

#define CLR_JNL_MAGIC      "DBCLJNL1" /* 8 bytes, no NUL */
#define CLR_JNL_VERSION    1u
#define CLR_JNL_HEADER_LEN 32u                       /* magic, version, shard, first, 0, crc */
#define CLR_JNL_REC_LEN    (8u + CLR_EVENT_WIRE_LEN) /* u32 len, u32 crc, 96-byte event */

/* clr__crc32c: CRC-32C (Castagnoli, reflected 0x82F63B78), chained like zlib's crc32:
 * clr__crc32c(0, "123456789", 9) == 0xE3069283. Table-driven, hand-written here because the
 * audit component's copy is private to src/audit. */
uint32_t clr__crc32c(uint32_t crc, const void *data, size_t len);

/* clr__journal_header: the 32-byte header of segment `first_seq` of `shard`. */
void clr__journal_header(uint8_t out[CLR_JNL_HEADER_LEN], unsigned shard, uint64_t first_seq);

/* clr__journal_record: one framed record (length, CRC32C over length and payload, payload). */
void clr__journal_record(uint8_t out[CLR_JNL_REC_LEN], const clr_event *ev);

/* clr__journal_segment_name: "seg-<20 digits>.jnl" into out (>= 32 bytes). */
void clr__journal_segment_name(char *out, size_t cap, uint64_t first_seq);

/* ---- intake codecs (wire.c) ------------------------------------------------------------- */

#define CLR_WIRE_HDR_LEN    16u /* u32 length, u16 type, u16 version, u64 request id */
#define CLR_WIRE_EVENT_LEN  (CLR_WIRE_HDR_LEN + CLR_EVENT_WIRE_LEN)
#define CLR_WIRE_RESULT_LEN (CLR_WIRE_HDR_LEN + 56u)

/* clr__intake_check: the protocol rules both intakes (binary and JSON) apply to a client
 * event on top of clr__event_fields_check: seq and ts_ns zero, side B or S for an order,
 * no negative price / qty / amount, amounts and prices at most CLR_AMOUNT_MAX, an account in
 * 1..CLR_ACCOUNT_MAX where the type takes one, member >= 1 for OPEN, a security code in
 * 1..999999 where the type takes one, a real calendar date for EOD. DBAO_EFORMAT naming the
 * field. */
int clr__intake_check(const clr_event *ev, dbao_err *err);

/* clr__date_valid: YYYYMMDD with year 1970..9999 and a real day of the month. */
bool clr__date_valid(int64_t yyyymmdd);

#endif /* DENGBAO_CLEARING_JOURNAL_INTERNAL_H */
