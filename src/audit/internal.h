/* internal.h: helpers shared by the files of src/audit (private; no other component includes
 * it). Unit tests include it through -I src/audit to test the helpers directly.
 *
 *   audit__buf     a growable byte buffer on dbao_realloc with a hard size cap; the first
 *                  failure (ENOMEM or the cap) sticks, so writers append without checking and
 *                  look at buf.rc once at the end.
 *   audit__utf8_*  a strict UTF-8 decoder (no overlong forms, no surrogates, nothing above
 *                  U+10FFFF) and the character classes the formats forbid.
 *   audit__b64_*   RFC 4648 section 4 base64; the decoder is strict (padding required, no
 *                  white space, zero trailing bits), because a note has one spelling.
 *   audit__jcs_*   RFC 8785 canonical JSON of a jansson value, restricted to the details rules.
 */
#ifndef DENGBAO_AUDIT_INTERNAL_H
#define DENGBAO_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/audit.h"

typedef struct audit__buf {
    uint8_t *p;
    size_t len;
    size_t cap;
    size_t max; /* appends beyond this many bytes fail with DBAO_ERANGE */
    int rc;     /* 0, or the first failure */
} audit__buf;

void audit__buf_init(audit__buf *b, size_t max);
void audit__buf_cleanup(audit__buf *b);
void audit__buf_put(audit__buf *b, const void *data, size_t len);
void audit__buf_putc(audit__buf *b, uint8_t c);
void audit__buf_puts(audit__buf *b, const char *s);
/* audit__buf_take NUL-terminates the buffer and hands it over (*out, free with dbao_free);
 * returns b->rc (and frees the buffer) if any append failed. */
int audit__buf_take(audit__buf *b, char **out, size_t *out_len);

/* audit__utf8_next decodes the code point at s[*pos] (len bytes in total), stores it in *cp and
 * advances *pos. Returns false on an invalid or truncated sequence. */
bool audit__utf8_next(const uint8_t *s, size_t len, size_t *pos, uint32_t *cp);

/* Character classes. */
bool audit__cp_is_control(uint32_t cp); /* C0, DEL, C1 */
bool audit__cp_is_bidi(uint32_t cp);    /* U+202A..U+202E, U+2066..U+2069 */
bool audit__cp_is_space(uint32_t cp);   /* Unicode White_Space */

/* Base64. encoded length of n bytes: 4 * ((n + 2) / 3). */
#define AUDIT__B64_LEN(n) (4 * (((n) + 2) / 3))
/* audit__b64_encode writes AUDIT__B64_LEN(len) characters and a NUL to out. */
void audit__b64_encode(char *out, const uint8_t *in, size_t len);
/* audit__b64_decode decodes `in_len` characters into `out` (room for `out_cap` bytes).
 * Returns false unless the input is canonical base64 of at most out_cap bytes. */
bool audit__b64_decode(uint8_t *out, size_t *out_len, size_t out_cap, const char *in,
                       size_t in_len);

/* audit__jcs_write appends the canonical text of `value` (a json_t *) to `b`, enforcing the
 * details rules. On a rule violation it returns DBAO_EFORMAT with err naming the path below
 * `path` (e.g. "details.amount"); DBAO_ERANGE/DBAO_ENOMEM come from the buffer. */
int audit__jcs_write(audit__buf *b, const void *value, const char *path, int depth, dbao_err *err);

/* audit__details_canonicalize parses `json` as a details object and stores its canonical text
 * in a new NUL-terminated buffer. `field` names it in messages. */
int audit__details_canonicalize(char **out, size_t *out_len, const char *json, size_t json_len,
                                const char *field, dbao_err *err);
/* audit__details_canonicalize_dom is its general path (jansson DOM, re-serialised), which it
 * skips when audit__jcs_is_canonical already says yes; kept apart for the differential fuzz
 * target. */
int audit__details_canonicalize_dom(char **out, size_t *out_len, const char *json, size_t json_len,
                                    const char *field, dbao_err *err);

/* audit__jcs_is_canonical (jcscheck.c): true iff `s` is exactly the canonical details text
 * audit__details_canonicalize would produce from it; false means "check the slow way". */
bool audit__jcs_is_canonical(const char *s, size_t len);

/* ---- CRC32C (Castagnoli), crc32c.c ---------------------------------------------------------
 * Frames on disk carry CRC32C: hardware instructions on x86-64 (SSE4.2) and aarch64 (CRC
 * extension), picked once at run time; a slicing-by-8 table otherwise. Standard convention:
 * audit__crc32c(0, "123456789", 9) == 0xE3069283. Chain calls by passing the previous value. */
uint32_t audit__crc32c(uint32_t crc, const void *data, size_t len);

/* ---- file I/O with fault injection, fio.c -------------------------------------------------
 * Every write, sync and allocation of the log goes through these, so that tests can inject
 * ENOSPC and EIO and simulate a power cut. With no fault configured each is one system call
 * (plus one relaxed atomic load). They return 0 or a negative errno (a short write is retried
 * until complete or an error).
 *
 * Faults come from audit__fault_config() (tests) or from the environment variable
 * DENGBAO_AUDIT_FAULT read once at the first I/O (integration tests through the CLI):
 *   "enospc-after=N"   writes fail with ENOSPC once N bytes have been written in total
 *   "eio-write-after=N" the same with EIO
 *   "eio-sync=N"       the Nth fdatasync (1-based) and every later one fail with EIO
 *   "powercut"         keep an undo journal of unsynced writes (see audit__fault_powercut)
 * Several may be given, separated by commas. */
int audit__pwrite(int fd, const void *buf, size_t len, uint64_t off);
int audit__fdatasync(int fd);
int audit__fsync_dir(const char *dir);
int audit__fallocate(int fd, uint64_t len);
int audit__ftruncate(int fd, uint64_t len);
/* audit__close closes fd and forgets its journal. */
void audit__close(int fd);

typedef struct audit__faults {
    uint64_t enospc_after;    /* 0 = off */
    uint64_t eio_write_after; /* 0 = off */
    uint64_t eio_sync;        /* 0 = off */
    bool powercut;            /* journal unsynced writes */
} audit__faults;
void audit__fault_config(const audit__faults *f); /* NULL turns every fault off */

/* audit__fault_powercut undoes writes made since each file's last fdatasync, newest first,
 * as a power cut would: each unsynced write is, at random (seeded), lost entirely, kept, or
 * torn (its second half lost). Files are restored through their recorded paths. Returns the
 * number of writes undone (fully or partly). Only with "powercut" on. */
int audit__fault_powercut(uint64_t seed);

/* ---- segment format, segment.c -----------------------------------------------------------
 * See docs/audit-format.md "Segments". All integers little-endian.
 *   header (64 bytes): "DBAUDSEG" | u32 version (1) | u32 header length (64) | u64 first index |
 *                      i64 created ns | u64 capacity | 20 zero bytes | u32 CRC32C of bytes 0..59
 *   frame:             u32 len (1..AUDIT_RECORD_MAX) | u64 index | len record bytes |
 *                      u32 CRC32C(len || index || record)
 *   seal frame:        u32 0xFFFFFFFF | u64 next index | 32-byte tree root at that size |
 *                      u32 CRC32C of the 44 bytes before it; nothing follows a seal
 *   end of data:       a u32 0 length (the preallocated space reads as zeros) */
#define AUDIT__SEG_MAGIC      "DBAUDSEG"
#define AUDIT__SEG_VERSION    1
#define AUDIT__SEG_HDR        64
#define AUDIT__FRAME_OVERHEAD 16
#define AUDIT__SEAL_LEN       48
#define AUDIT__SEAL_MARK      0xFFFFFFFFu
/* A batch is at most this many bytes (one request may be AUDIT_REQ_BYTES_MAX), so a torn
 * write can leave at most this much damage after the last valid frame: scans for stray data
 * look this far and no further. */
#define AUDIT__BATCH_BYTES_MAX ((uint64_t) AUDIT_REQ_BYTES_MAX + 65536)

void audit__seg_header(uint8_t out[AUDIT__SEG_HDR], uint64_t first, int64_t created_ns,
                       uint64_t capacity);
int audit__seg_header_parse(const uint8_t *in, size_t len, uint64_t *first, int64_t *created_ns,
                            uint64_t *capacity, dbao_err *err);
/* audit__frame_put writes one frame at out (AUDIT__FRAME_OVERHEAD + len bytes). */
size_t audit__frame_put(uint8_t *out, uint64_t index, const uint8_t *rec, uint32_t len);
void audit__seal_put(uint8_t out[AUDIT__SEAL_LEN], uint64_t next, const uint8_t root[32]);

/* Why a scan stopped. */
enum {
    AUDIT__SCAN_END = 0,   /* a zero length: the end of the data */
    AUDIT__SCAN_SEALED,    /* a valid seal frame */
    AUDIT__SCAN_EOF,       /* the buffer ended exactly at a frame boundary */
    AUDIT__SCAN_TRUNCATED, /* the buffer ended inside a frame */
    AUDIT__SCAN_BAD_LEN,   /* a length that no frame may have */
    AUDIT__SCAN_BAD_CRC,   /* CRC mismatch */
    AUDIT__SCAN_BAD_INDEX, /* a valid frame with the wrong index */
    AUDIT__SCAN_BAD_SEAL,  /* a seal whose CRC or next index is wrong */
    AUDIT__SCAN_STOPPED,   /* the callback returned > 0 */
};

typedef struct audit__scan {
    uint64_t next_index; /* index after the last valid frame */
    uint64_t end;        /* offset after the last valid frame (or after the seal) */
    int stop;            /* AUDIT__SCAN_* */
    uint64_t stop_offset;
    uint8_t seal_root[32]; /* when stop == AUDIT__SCAN_SEALED */
    uint64_t nonzero_end;  /* offset after the last non-zero byte in [end, end +
                              AUDIT__BATCH_BYTES_MAX) */
} audit__scan;

/* Called for each valid frame; a negative return aborts the scan with that code, a positive
 * one stops it (AUDIT__SCAN_STOPPED, `end` after that frame). */
typedef int (*audit__frame_fn)(void *arg, uint64_t index, const uint8_t *rec, uint32_t len,
                               uint64_t offset);

/* audit__seg_scan walks the frames of buf[from, len) expecting `next` as the first index. It
 * never fails on bad data: it stops and says why in *out. With want_nonzero it also finds
 * out->nonzero_end (a scan of the rest of the buffer). Returns 0 or the callback's error. */
int audit__seg_scan(const uint8_t *buf, size_t len, size_t from, uint64_t next, audit__frame_fn fn,
                    void *arg, bool want_nonzero, audit__scan *out);

/* audit__seg_resync looks for a valid frame (index >= want) starting anywhere in
 * buf[from, to): evidence that data follows a damaged frame (corruption, not a torn tail).
 * Returns the offset found or UINT64_MAX. */
uint64_t audit__seg_resync(const uint8_t *buf, size_t to, size_t from, uint64_t want);

/* Little-endian helpers. */
static inline void
audit__le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}
static inline void
audit__le64(uint8_t *p, uint64_t v)
{
    audit__le32(p, (uint32_t) v);
    audit__le32(p + 4, (uint32_t) (v >> 32));
}
static inline uint32_t
audit__rd32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}
static inline uint64_t
audit__rd64(const uint8_t *p)
{
    return (uint64_t) audit__rd32(p) | (uint64_t) audit__rd32(p + 4) << 32;
}

/* Segment file names: 16 lowercase hex digits (the first index) and ".seg". */
typedef struct audit__seg_name {
    char name[64];  /* as in seg/ (truncated for display when longer) */
    uint64_t first; /* parsed from the name when valid */
    bool valid;     /* a segment name */
} audit__seg_name;

bool audit__seg_name_parse(const char *name, uint64_t *first);

/* audit__seg_list lists DIR/seg: every entry whose name does not start with '.', segment names
 * first in index order, then any other name (callers refuse or report those). With
 * remove_tmp, the temporary files of segments whose creation never completed (".*.tmp") are
 * removed on the way. *out is freed with free(). DBAO_EFORMAT if seg/ cannot be opened. */
int audit__seg_list(const char *dir, bool remove_tmp, audit__seg_name **out, size_t *num,
                    dbao_err *err);

/* ---- tree files and checkpoint file formats (log.c, verify.c) ----
 *   tree/L<nn>:  "DBAUTREE" | u32 version (1) | u32 level | node hashes, 32 bytes each
 *   checkpoints: "DBAUDCKP" | u32 version (1) | u32 header length (16) | frames of
 *                u32 len | u32 CRC32C(note) | note bytes */
#define AUDIT__TREE_MAGIC "DBAUTREE"
#define AUDIT__TREE_HDR   16
#define AUDIT__CKP_MAGIC  "DBAUDCKP"
#define AUDIT__CKP_HDR    16

/* audit__ckp_scan walks the checkpoint file image buf[0, len): calls fn for each valid note in
 * order; stops at the first bad frame (*end = offset after the last good one, *bad = true if a
 * damaged frame (not zeros/EOF) follows). DBAO_EFORMAT for a bad header. */
typedef int (*audit__note_fn)(void *arg, const char *note, size_t len, uint64_t offset);
int audit__ckp_scan(const uint8_t *buf, size_t len, audit__note_fn fn, void *arg, uint64_t *end,
                    bool *bad, dbao_err *err);

/* ---- the pruned marker (retention.c, read by log.c and verify.c) ----
 *   pruned: "dengbao-audit-pruned 1\nfirst = <index>\narchive = <path>\n"
 * Records below `first` were moved to the archive; the tree cache and the checkpoints keep
 * covering them, so proofs for them still verify. No file means first = 0. */
int audit__pruned_read(const char *dir, uint64_t *first, char *archive, size_t archive_cap,
                       dbao_err *err);

/* audit__log_dir returns the directory the log was opened from. */
const char *audit__log_dir(const audit_log *log);

/* audit__log_abandon (tests): stops the writer at once without completing queued requests
 * (they never complete), without a final checkpoint, and frees the log as a crashed process
 * would leave it. */
void audit__log_abandon(audit_log *log);

#endif /* DENGBAO_AUDIT_INTERNAL_H */
