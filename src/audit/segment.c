/* segment.c: the on-disk frame formats of the audit log: segment headers, record frames,
 * seals, and the checkpoint file's frames (normative text: docs/audit-format.md, "The log
 * directory"). Pure functions over byte buffers, so that recovery, the live log, the offline
 * verifier and the fuzzer share one reader.
 *
 * The reader never trusts a length before checking it against the limits and the buffer, and
 * never reads past `len`. A scan stops at the first thing that is not a valid frame with the
 * expected index and says why; deciding whether that is a torn tail (a batch that was never
 * acknowledged) or damage is the caller's business (log.c recovery, verify.c).
 *
 * audit__seg_list is the one reader of the seg/ folder (log open, verify, retention).
 *
 * Frame (all integers little-endian):
 *     u32 len | u64 index | record[len] | u32 CRC32C(len || index || record)
 * The index inside every frame makes a swapped, duplicated or dropped frame visible even when
 * each frame's CRC is valid. A length of 0 is the end of data (preallocated space reads as
 * zeros); 0xFFFFFFFF marks the seal written when a segment is full:
 *     u32 0xFFFFFFFF | u64 next index | root[32] | u32 CRC32C of the 44 bytes before it
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void
audit__seg_header(uint8_t out[AUDIT__SEG_HDR], uint64_t first, int64_t created_ns,
                  uint64_t capacity)
{
    memset(out, 0, AUDIT__SEG_HDR);
    memcpy(out, AUDIT__SEG_MAGIC, 8);
    audit__le32(out + 8, AUDIT__SEG_VERSION);
    audit__le32(out + 12, AUDIT__SEG_HDR);
    audit__le64(out + 16, first);
    audit__le64(out + 24, (uint64_t) created_ns);
    audit__le64(out + 32, capacity);
    audit__le32(out + 60, audit__crc32c(0, out, 60));
}

int
audit__seg_header_parse(const uint8_t *in, size_t len, uint64_t *first, int64_t *created_ns,
                        uint64_t *capacity, dbao_err *err)
{
    if (len < AUDIT__SEG_HDR) {
        return dbao_err_set(err, DBAO_EFORMAT, "segment header truncated (%zu bytes)", len);
    }
    if (memcmp(in, AUDIT__SEG_MAGIC, 8) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "not a dengbao audit segment (bad magic)");
    }
    if (audit__rd32(in + 60) != audit__crc32c(0, in, 60)) {
        return dbao_err_set(err, DBAO_EFORMAT, "segment header CRC mismatch");
    }
    uint32_t version = audit__rd32(in + 8);
    if (version != AUDIT__SEG_VERSION) {
        return dbao_err_set(err, DBAO_ENOTSUP, "segment format version %u is not supported",
                            version);
    }
    if (audit__rd32(in + 12) != AUDIT__SEG_HDR) {
        return dbao_err_set(err, DBAO_EFORMAT, "segment header length is not 64");
    }
    for (int i = 40; i < 60; i++) {
        if (in[i] != 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "segment header reserved bytes not zero");
        }
    }
    uint64_t f = audit__rd64(in + 16);
    if (f > AUDIT_TREE_SIZE_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "segment first index out of range");
    }
    if (first) {
        *first = f;
    }
    if (created_ns) {
        *created_ns = (int64_t) audit__rd64(in + 24);
    }
    if (capacity) {
        *capacity = audit__rd64(in + 32);
    }
    return 0;
}

static uint32_t
frame_crc(const uint8_t *frame, uint32_t len)
{
    return audit__crc32c(0, frame, 12 + (size_t) len);
}

size_t
audit__frame_put(uint8_t *out, uint64_t index, const uint8_t *rec, uint32_t len)
{
    audit__le32(out, len);
    audit__le64(out + 4, index);
    memcpy(out + 12, rec, len);
    audit__le32(out + 12 + len, frame_crc(out, len));
    return AUDIT__FRAME_OVERHEAD + (size_t) len;
}

void
audit__seal_put(uint8_t out[AUDIT__SEAL_LEN], uint64_t next, const uint8_t root[32])
{
    audit__le32(out, AUDIT__SEAL_MARK);
    audit__le64(out + 4, next);
    memcpy(out + 12, root, 32);
    audit__le32(out + 44, audit__crc32c(0, out, 44));
}

static uint64_t
nonzero_end(const uint8_t *buf, size_t len, size_t from)
{
    /* Scan backwards: the preallocated space is zeros, so this is short for a healthy tail. */
    size_t i = len;
    while (i > from && buf[i - 1] == 0) {
        i--;
    }
    return i;
}

int
audit__seg_scan(const uint8_t *buf, size_t len, size_t from, uint64_t next, audit__frame_fn fn,
                void *arg, bool want_nonzero, audit__scan *out)
{
    size_t off = from;
    int stop;
    memset(out, 0, sizeof *out);
    for (;;) {
        if (off == len) {
            stop = AUDIT__SCAN_EOF;
            break;
        }
        if (len - off < 4) {
            stop = AUDIT__SCAN_TRUNCATED;
            break;
        }
        uint32_t flen = audit__rd32(buf + off);
        if (flen == 0) {
            stop = AUDIT__SCAN_END;
            break;
        }
        if (flen == AUDIT__SEAL_MARK) {
            if (len - off < AUDIT__SEAL_LEN) {
                stop = AUDIT__SCAN_TRUNCATED;
                break;
            }
            if (audit__rd32(buf + off + 44) != audit__crc32c(0, buf + off, 44) ||
                audit__rd64(buf + off + 4) != next) {
                stop = AUDIT__SCAN_BAD_SEAL;
                break;
            }
            memcpy(out->seal_root, buf + off + 12, 32);
            off += AUDIT__SEAL_LEN;
            stop = AUDIT__SCAN_SEALED;
            break;
        }
        if (flen > AUDIT_RECORD_MAX) {
            stop = AUDIT__SCAN_BAD_LEN;
            break;
        }
        if (len - off < AUDIT__FRAME_OVERHEAD + (size_t) flen) {
            stop = AUDIT__SCAN_TRUNCATED;
            break;
        }
        if (audit__rd32(buf + off + 12 + flen) != frame_crc(buf + off, flen)) {
            stop = AUDIT__SCAN_BAD_CRC;
            break;
        }
        uint64_t idx = audit__rd64(buf + off + 4);
        if (idx != next) {
            stop = AUDIT__SCAN_BAD_INDEX;
            break;
        }
        if (fn != NULL) {
            int rc = fn(arg, idx, buf + off + 12, flen, off);
            if (rc < 0) {
                return rc;
            }
            if (rc > 0) {
                off += AUDIT__FRAME_OVERHEAD + (size_t) flen;
                next++;
                stop = AUDIT__SCAN_STOPPED;
                break;
            }
        }
        off += AUDIT__FRAME_OVERHEAD + (size_t) flen;
        next++;
    }
    out->next_index = next;
    out->end = off;
    out->stop = stop;
    out->stop_offset = off;
    size_t window = len - off > AUDIT__BATCH_BYTES_MAX ? off + AUDIT__BATCH_BYTES_MAX : len;
    out->nonzero_end = want_nonzero ? nonzero_end(buf, window, off) : off;
    return 0;
}

uint64_t
audit__seg_resync(const uint8_t *buf, size_t to, size_t from, uint64_t want)
{
    for (size_t off = from; off + AUDIT__FRAME_OVERHEAD < to; off++) {
        uint32_t flen = audit__rd32(buf + off);
        if (flen == 0 || flen > AUDIT_RECORD_MAX || to - off < AUDIT__FRAME_OVERHEAD + flen) {
            continue;
        }
        uint64_t idx = audit__rd64(buf + off + 4);
        if (idx < want || idx - want > ((uint64_t) 1 << 32)) {
            continue;
        }
        if (audit__rd32(buf + off + 12 + flen) == frame_crc(buf + off, flen)) {
            return off;
        }
    }
    return UINT64_MAX;
}

int
audit__ckp_scan(const uint8_t *buf, size_t len, audit__note_fn fn, void *arg, uint64_t *end,
                bool *bad, dbao_err *err)
{
    *end = 0;
    *bad = false;
    if (len < AUDIT__CKP_HDR) {
        return dbao_err_set(err, DBAO_EFORMAT, "checkpoint file header truncated");
    }
    if (memcmp(buf, AUDIT__CKP_MAGIC, 8) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "not a dengbao checkpoint file (bad magic)");
    }
    uint32_t version = audit__rd32(buf + 8);
    if (version != 1) {
        return dbao_err_set(err, DBAO_ENOTSUP, "checkpoint file version %u is not supported",
                            version);
    }
    if (audit__rd32(buf + 12) != AUDIT__CKP_HDR) {
        return dbao_err_set(err, DBAO_EFORMAT, "checkpoint file header length is not 16");
    }
    size_t off = AUDIT__CKP_HDR;
    while (off < len) {
        if (len - off < 8) {
            *bad = nonzero_end(buf, len, off) > off;
            break;
        }
        uint32_t n = audit__rd32(buf + off);
        if (n == 0) {
            *bad = nonzero_end(buf, len, off) > off;
            break;
        }
        if (n > AUDIT_NOTE_MAX || len - off - 8 < n ||
            audit__rd32(buf + off + 4) != audit__crc32c(0, buf + off + 8, n)) {
            *bad = true;
            break;
        }
        if (fn != NULL) {
            int rc = fn(arg, (const char *) buf + off + 8, n, off);
            if (rc != 0) {
                *end = off;
                return rc;
            }
        }
        off += 8 + (size_t) n;
    }
    *end = off < len ? off : len;
    return 0;
}

bool
audit__seg_name_parse(const char *name, uint64_t *first)
{
    if (strlen(name) != 20 || strcmp(name + 16, ".seg") != 0) {
        return false;
    }
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) {
            return false;
        }
        v = v << 4 | (uint64_t) d;
    }
    *first = v;
    return true;
}

static int
seg_name_cmp(const void *pa, const void *pb)
{
    const audit__seg_name *a = pa, *b = pb;
    if (a->valid != b->valid) {
        return a->valid ? -1 : 1;
    }
    if (a->valid) {
        return a->first < b->first ? -1 : a->first > b->first;
    }
    return strcmp(a->name, b->name);
}

int
audit__seg_list(const char *dir, bool remove_tmp, audit__seg_name **out, size_t *num, dbao_err *err)
{
    char p[4096];
    int pl = snprintf(p, sizeof p, "%s/seg", dir);
    if (pl < 0 || (size_t) pl >= sizeof p) {
        return dbao_err_set(err, DBAO_ERANGE, "log directory path too long");
    }
    DIR *d = opendir(p);
    if (d == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "%s: not a dengbao audit log (cannot open seg/: %s)",
                            dir, strerror(errno));
    }
    audit__seg_name *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t l = strlen(nm);
        if (nm[0] == '.') {
            if (remove_tmp && l > 4 && strcmp(nm + l - 4, ".tmp") == 0) {
                char t[4096 + 300];
                snprintf(t, sizeof t, "%s/%s", p, nm);
                unlink(t); /* a segment whose creation never completed */
            }
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            audit__seg_name *nv = realloc(v, cap * sizeof *nv);
            if (nv == NULL) {
                rc = DBAO_ENOMEM;
                break;
            }
            v = nv;
        }
        memset(&v[n], 0, sizeof v[n]);
        /* truncated for display when longer (bounded copy: no format-truncation warning) */
        size_t cl = l < sizeof v[n].name - 1 ? l : sizeof v[n].name - 1;
        memcpy(v[n].name, nm, cl);
        v[n].name[cl] = 0;
        v[n].valid = audit__seg_name_parse(nm, &v[n].first);
        n++;
    }
    closedir(d);
    if (rc != 0) {
        free(v);
        return rc;
    }
    if (n > 0) {
        qsort(v, n, sizeof *v, seg_name_cmp);
    }
    *out = v;
    *num = n;
    return 0;
}
