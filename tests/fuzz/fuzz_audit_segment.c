/* fuzz_audit_segment.c: libFuzzer target for the audit log's on-disk readers (segment.c): the
 * segment header parser, the frame scanner, the resynchronising search that tells a torn tail
 * from damage, and the checkpoint file scanner. The input is taken as a whole segment image
 * and, separately, as a whole checkpoint file image.
 *
 * Invariants (no output is trusted without being checked against the buffer):
 *   - audit__seg_header_parse returns 0, DBAO_EFORMAT or DBAO_ENOTSUP, and on success the
 *     header re-encodes (audit__seg_header) to the same 64 bytes;
 *   - audit__seg_scan never fails on data; every frame it reports lies inside the buffer right
 *     after the previous one (the first at `from`), has a length in 1..AUDIT_RECORD_MAX, the
 *     expected consecutive index and a valid CRC32C (recomputed here), and the record pointer
 *     is the frame's body; its summary agrees with the frames seen (next index, end offset; a
 *     seal at the end when it says SEALED, with the root it copied; nonzero_end: only zeros
 *     follow it within AUDIT__BATCH_BYTES_MAX of the end); a callback that stops the scan
 *     (positive return) stops it right there;
 *   - audit__seg_resync returns UINT64_MAX or the offset of a frame inside [from, to) that
 *     has a valid CRC and an index >= want;
 *   - audit__ckp_scan returns 0, DBAO_EFORMAT or DBAO_ENOTSUP; every note it reports lies
 *     inside the buffer after its 8-byte frame head, with a matching CRC32C, in order; *end
 *     never passes the end of the buffer.
 * Frames with valid CRCs are out of reach of random mutation; the seed corpus holds real
 * segment images (open, sealed, torn) and checkpoint files, and libFuzzer's comparison tracing
 * takes it from there.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include -I src/audit
 *        tests/fuzz/fuzz_audit_segment.c <library sources or an instrumented libdengbao.a>
 *        -ljansson -lcrypto
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/audit.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct scan_ctx {
    const uint8_t *buf;
    size_t len;
    uint64_t next;     /* the index the next frame must carry */
    uint64_t next_off; /* where the next frame must start */
    uint64_t frames;
    uint64_t stop_after; /* return 1 after this many frames (UINT64_MAX: never) */
} scan_ctx;

static int
frame_cb(void *arg, uint64_t index, const uint8_t *rec, uint32_t len, uint64_t offset)
{
    scan_ctx *c = arg;

    assert(offset == c->next_off);
    assert(index == c->next);
    assert(len >= 1 && len <= AUDIT_RECORD_MAX);
    assert(offset + AUDIT__FRAME_OVERHEAD + len <= c->len);
    assert(rec == c->buf + offset + 12);
    assert(audit__rd32(c->buf + offset) == len);
    assert(audit__rd64(c->buf + offset + 4) == index);
    assert(audit__rd32(rec + len) == audit__crc32c(0, c->buf + offset, 12 + (size_t) len));
    c->next++;
    c->next_off = offset + AUDIT__FRAME_OVERHEAD + len;
    c->frames++;
    return c->frames == c->stop_after ? 1 : 0;
}

typedef struct note_ctx {
    const uint8_t *buf;
    size_t len;
    uint64_t next_off;
} note_ctx;

static int
note_cb(void *arg, const char *note, size_t len, uint64_t offset)
{
    note_ctx *c = arg;
    const uint8_t *n = (const uint8_t *) note;

    assert(offset == c->next_off);
    assert(offset >= AUDIT__CKP_HDR && offset + 8 + len <= c->len);
    assert(n == c->buf + offset + 8);
    assert(len >= 1 && len <= AUDIT_NOTE_MAX);
    assert(audit__rd32(c->buf + offset) == len);
    assert(audit__rd32(c->buf + offset + 4) == audit__crc32c(0, n, len));
    c->next_off = offset + 8 + len;
    return 0;
}

static void
check_resync(const uint8_t *buf, size_t to, size_t from, uint64_t want)
{
    uint64_t off = audit__seg_resync(buf, to, from, want);

    if (off == UINT64_MAX) {
        return;
    }
    assert(off >= from && off + AUDIT__FRAME_OVERHEAD <= to);
    uint32_t len = audit__rd32(buf + off);
    uint64_t idx = audit__rd64(buf + off + 4);
    assert(len >= 1 && len <= AUDIT_RECORD_MAX);
    assert(off + AUDIT__FRAME_OVERHEAD + len <= to);
    assert(idx >= want);
    assert(audit__rd32(buf + off + 12 + len) == audit__crc32c(0, buf + off, 12 + (size_t) len));
}

static void
scan_segment(const uint8_t *data, size_t size, size_t from, uint64_t first, uint64_t stop_after)
{
    scan_ctx c = {data, size, first, from, 0, stop_after};
    audit__scan sc;
    int rc;

    rc = audit__seg_scan(data, size, from, first, frame_cb, &c, true, &sc);
    assert(rc == 0);
    assert(sc.stop >= AUDIT__SCAN_END && sc.stop <= AUDIT__SCAN_STOPPED);
    assert(sc.next_index == first + c.frames);
    assert(sc.end <= size && sc.end >= from);
    assert(sc.stop_offset == sc.end);
    if (sc.stop == AUDIT__SCAN_SEALED) {
        const uint8_t *s = data + sc.end - AUDIT__SEAL_LEN;

        assert(sc.end == c.next_off + AUDIT__SEAL_LEN);
        assert(audit__rd32(s) == AUDIT__SEAL_MARK);
        assert(audit__rd64(s + 4) == sc.next_index);
        assert(audit__rd32(s + 44) == audit__crc32c(0, s, 44));
        assert(memcmp(s + 12, sc.seal_root, 32) == 0);
    } else {
        assert(sc.end == c.next_off);
    }
    if (sc.stop == AUDIT__SCAN_STOPPED) {
        assert(c.frames == stop_after);
    }
    if (sc.stop == AUDIT__SCAN_EOF) {
        assert(sc.end == size);
    }
    if (sc.stop == AUDIT__SCAN_END) {
        assert(sc.end + 4 <= size && audit__rd32(data + sc.end) == 0);
    }
    assert(sc.nonzero_end >= sc.end && sc.nonzero_end <= size);
    assert(sc.nonzero_end - sc.end <= AUDIT__BATCH_BYTES_MAX);
    for (size_t i = sc.nonzero_end; i < size && i - sc.end < AUDIT__BATCH_BYTES_MAX; i++) {
        assert(data[i] == 0);
    }
    if (sc.nonzero_end > sc.end) {
        assert(data[sc.nonzero_end - 1] != 0);
    }
    /* Without a callback (recovery reads a seal this way) the scan ends in the same place
     * unless the callback stopped it. */
    if (sc.stop != AUDIT__SCAN_STOPPED) {
        audit__scan sc2;

        rc = audit__seg_scan(data, size, from, first, NULL, NULL, false, &sc2);
        assert(rc == 0);
        assert(sc2.stop == sc.stop && sc2.end == sc.end && sc2.next_index == sc.next_index);
        assert(sc2.nonzero_end == sc2.end);
    }
    /* What recovery and verify do after a damaged frame. */
    if (sc.nonzero_end > sc.end) {
        check_resync(data, (size_t) sc.nonzero_end, (size_t) sc.end + 1, sc.next_index);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t first = 0, capacity = 0;
    int64_t created = 0;
    int rc;

    /* The header. */
    rc = audit__seg_header_parse(data, size, &first, &created, &capacity, NULL);
    assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_ENOTSUP);
    if (rc == 0) {
        uint8_t hdr[AUDIT__SEG_HDR];

        assert(size >= AUDIT__SEG_HDR && first <= AUDIT_TREE_SIZE_MAX);
        audit__seg_header(hdr, first, created, capacity);
        assert(memcmp(hdr, data, AUDIT__SEG_HDR) == 0);
    } else if (size >= 24) {
        first = audit__rd64(data + 16); /* what a header would say */
    }

    /* The frames, from where the log reads them, and stopping after a chosen frame. */
    if (size >= AUDIT__SEG_HDR) {
        scan_segment(data, size, AUDIT__SEG_HDR, first, UINT64_MAX);
        scan_segment(data, size, AUDIT__SEG_HDR, first, 1 + data[40] % 4);
    } else {
        scan_segment(data, size, 0, first, UINT64_MAX);
    }
    scan_segment(data, size, size, first, UINT64_MAX); /* empty range */

    /* Resynchronisation over the whole buffer and from a chosen offset. */
    check_resync(data, size, 0, 0);
    check_resync(data, size, 0, first);
    if (size > 0) {
        check_resync(data, size, data[size - 1] % (size + 1), first);
    }

    /* The same bytes as a checkpoint file. */
    {
        note_ctx c = {data, size, AUDIT__CKP_HDR};
        uint64_t end = 0;
        bool bad = false;

        rc = audit__ckp_scan(data, size, note_cb, &c, &end, &bad, NULL);
        assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_ENOTSUP);
        assert(end <= size);
        if (rc == 0) {
            assert(end == c.next_off || (end == size && c.next_off >= size));
            assert(end >= AUDIT__CKP_HDR);
        }
    }
    return 0;
}
