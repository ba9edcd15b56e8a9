/* journal.c: the clearing shard's write-ahead journal: group commit, segment rotation,
 * crash recovery, snapshots and replay (clr_journal_*; docs/clearing-journal.md).
 *
 * Layout: <dir>/shard-<N>/ holds
 *   lock                          flock(LOCK_EX) by the one writer (clr_journal_open)
 *   seg-<first seq, 20 digits>.jnl  segments, in seq order, the last one is active
 *   snap-<seq, 20 digits>.bin     clr_engine_snapshot bytes as of <seq> (dbao_file_write:
 *                                 temp file, fsync, rename, directory fsync)
 *
 * Segment = a 32-byte header, then fixed-size records, all little-endian:
 *   header  0  8 magic "DBCLJNL1" | 8 4 version (1) | 12 4 shard | 16 8 first seq |
 *          24  4 zero | 28 4 CRC32C of bytes 0..27
 *   record  0  4 length (96)      | 4 4 CRC32C of bytes 0..3 and 8..103 |
 *           8 96 the event (clr_event_encode: seq and ts_ns inside)
 * so record k of a segment sits at 32 + 104 k and carries seq first + k.
 *
 * Invariants, which recovery checks:
 *   - seqs are contiguous: 1, 2, 3, ... within a segment and across segments (a segment's
 *     first seq is the previous segment's last + 1); every segment but the last holds only
 *     whole records; a segment's name and header agree.
 *   - a record is durable once clr_journal_sync returned 0: one pwrite of the whole batch at
 *     the end of the active segment, then one fdatasync. The daemon acknowledges only after
 *     that, so whatever a crash leaves past the last durable record was never acknowledged.
 *   - a new segment is created (O_EXCL), its header written and fsynced, and the directory
 *     fsynced, before any record goes into it.
 * Recovery (clr_journal_open) therefore treats a bad tail of the last segment (a short
 * record, a wrong length or CRC, zero fill) as a torn write: it truncates the segment to its
 * last whole record (ftruncate + fsync) and says so in the recovery note. A bad record
 * followed by a valid one is not a torn write but damage: DBAO_EVERIFY, nothing is changed.
 * A record whose CRC holds but whose event does not decode, or a header this version does not
 * understand, is DBAO_EFORMAT (DBAO_ENOTSUP for a newer version): the reader refuses, never
 * guesses. A last segment whose header is short or all zero (a crash while creating it) is
 * rewritten empty.
 *
 * Snapshots: clr_journal_snapshot writes snap-<engine seq>.bin, keeps the newest `keep`, and
 * deletes segments whose records are all <= the oldest kept snapshot's seq (never the active
 * one). clr_journal_load restores the newest snapshot that restores (older ones if it does not,
 * then an empty engine if the journal still starts at seq 1) and applies the records after it.
 * A snapshot newer than the last record means the journal was lost: DBAO_EVERIFY.
 *
 * What is hand-written and why: the CRC-32C is a 256-entry table (the audit component's copy
 * is private to src/audit and there is no public one); the file handling is plain POSIX
 * (openat/pwrite/fdatasync/flock) because the whole point is to control exactly which bytes
 * are durable when. dbao_file_write (common) writes the snapshot files atomically.
 *
 * Threading: one thread at a time per clr_journal (the shard's writer thread). Loading and
 * scanning take no lock: they read only whole records and ignore a torn tail, so they are safe
 * next to a stopped daemon and harmless (a possibly stale view) next to a running one.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/clearing.h"
#include "internal.h"
#include "journal_internal.h"

#define DEFAULT_SEGMENT_BYTES ((size_t) 64 << 20)
#define NOTE_MAX              512

/* ---- CRC-32C ------------------------------------------------------------------------------ */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_table[i] = c;
    }
}

uint32_t
clr__crc32c(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    while (len-- > 0) {
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

/* ---- formats ------------------------------------------------------------------------------ */

void
clr__journal_header(uint8_t out[CLR_JNL_HEADER_LEN], unsigned shard, uint64_t first_seq)
{
    memcpy(out, CLR_JNL_MAGIC, 8);
    clr__put_u32(out + 8, CLR_JNL_VERSION);
    clr__put_u32(out + 12, shard);
    clr__put_u64(out + 16, first_seq);
    clr__put_u32(out + 24, 0);
    clr__put_u32(out + 28, clr__crc32c(0, out, 28));
}

static uint32_t
record_crc(const uint8_t *rec)
{
    return clr__crc32c(clr__crc32c(0, rec, 4), rec + 8, CLR_EVENT_WIRE_LEN);
}

void
clr__journal_record(uint8_t out[CLR_JNL_REC_LEN], const clr_event *ev)
{
    clr__put_u32(out, CLR_EVENT_WIRE_LEN);
    clr_event_encode(ev, out + 8);
    clr__put_u32(out + 4, record_crc(out));
}

void
clr__journal_segment_name(char *out, size_t cap, uint64_t first_seq)
{
    snprintf(out, cap, "seg-%020" PRIu64 ".jnl", first_seq);
}

static bool
record_ok(const uint8_t *rec)
{
    return clr__get_u32(rec) == CLR_EVENT_WIRE_LEN && clr__get_u32(rec + 4) == record_crc(rec);
}

static bool
all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

/* parse_name: "<prefix><20 digits><suffix>" exactly; the seq in *seq. */
static bool
parse_name(const char *name, const char *prefix, const char *suffix, uint64_t *seq)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    if (strlen(name) != pl + 20 + sl || strncmp(name, prefix, pl) != 0 ||
        strcmp(name + pl + 20, suffix) != 0) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = pl; i < pl + 20; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return false;
        }
        unsigned d = (unsigned) (name[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *seq = v;
    return true;
}

/* ---- directory listing ------------------------------------------------------------------- */

typedef struct seq_list {
    uint64_t *v;
    size_t n, cap;
} seq_list;

static int
seq_push(seq_list *l, uint64_t s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        uint64_t *v = dbao_realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            return DBAO_ENOMEM;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

typedef struct listing {
    seq_list segs, snaps; /* ascending */
} listing;

static void
listing_free(listing *l)
{
    dbao_free(l->segs.v);
    dbao_free(l->snaps.v);
    memset(l, 0, sizeof *l);
}

/* list_dir: the segments and snapshots of a shard directory. `writable` removes leftover
 * snapshot temporaries (snap-*.tmp.*, a crash inside dbao_file_write). A name that starts
 * like a segment or snapshot but does not parse is refused: it is not ours to ignore. */
static int
list_dir(int dirfd, const char *path, bool writable, listing *out, dbao_err *err)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return dbao_err_set(err, -errno, "journal: cannot list '%s': %s", path, strerror(errno));
    }
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int rc = -errno;
        close(fd);
        return dbao_err_set(err, rc, "journal: cannot list '%s': %s", path, strerror(-rc));
    }
    int rc = 0;
    struct dirent *de;
    memset(out, 0, sizeof *out);
    while (rc == 0 && (de = readdir(d)) != NULL) {
        uint64_t s;
        const char *n = de->d_name;
        if (parse_name(n, "seg-", ".jnl", &s)) {
            rc = seq_push(&out->segs, s);
        } else if (parse_name(n, "snap-", ".bin", &s)) {
            rc = seq_push(&out->snaps, s);
        } else if (strncmp(n, "snap-", 5) == 0 && strstr(n, ".bin.tmp.") != NULL) {
            if (writable) {
                (void) unlinkat(dirfd, n, 0);
            }
        } else if (strncmp(n, "seg-", 4) == 0 || strncmp(n, "snap-", 5) == 0) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "journal: unexpected file '%s' in '%s'", n, path);
        }
    }
    closedir(d);
    if (rc == DBAO_ENOMEM) {
        dbao_err_set(err, rc, "journal: out of memory listing '%s'", path);
    }
    if (rc != 0) {
        listing_free(out);
        return rc;
    }
    if (out->segs.n > 1) {
        qsort(out->segs.v, out->segs.n, sizeof(uint64_t), cmp_u64);
    }
    if (out->snaps.n > 1) {
        qsort(out->snaps.v, out->snaps.n, sizeof(uint64_t), cmp_u64);
    }
    return 0;
}

/* ---- reading segments --------------------------------------------------------------------- */

static int
read_file_at(int dirfd, const char *name, uint8_t **out, size_t *out_len, dbao_err *err)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return dbao_err_set(err, -errno, "journal: cannot open '%s': %s", name, strerror(errno));
    }
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    size_t got = 0;
    if (fstat(fd, &st) != 0) {
        rc = dbao_err_set(err, -errno, "journal: cannot stat '%s': %s", name, strerror(errno));
        goto out;
    }
    buf = dbao_malloc((size_t) st.st_size + 1);
    if (buf == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "journal: out of memory reading '%s'", name);
        goto out;
    }
    while (got < (size_t) st.st_size) {
        ssize_t n = pread(fd, buf + got, (size_t) st.st_size - got, (off_t) got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = dbao_err_set(err, -errno, "journal: cannot read '%s': %s", name, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break; /* shrank under us: use what we have */
        }
        got += (size_t) n;
    }
out:
    close(fd);
    if (rc != 0) {
        dbao_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = got;
    return 0;
}

/* check_header: 0, or DBAO_EFORMAT / DBAO_ENOTSUP / DBAO_EVERIFY naming the segment. A short
 * or all-zero header is reported as 1 (torn: the caller decides). */
static int
check_header(const uint8_t *p, size_t len, const char *name, unsigned shard, uint64_t first,
             dbao_err *err)
{
    if (len < CLR_JNL_HEADER_LEN || (all_zero(p, CLR_JNL_HEADER_LEN) && all_zero(p, len))) {
        return 1;
    }
    if (memcmp(p, CLR_JNL_MAGIC, 8) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "journal: '%s' is not a journal segment", name);
    }
    uint32_t version = clr__get_u32(p + 8);
    if (clr__get_u32(p + 28) != clr__crc32c(0, p, 28)) {
        return dbao_err_set(err, DBAO_EVERIFY, "journal: '%s' header CRC mismatch", name);
    }
    if (version > CLR_JNL_VERSION) {
        return dbao_err_set(err, DBAO_ENOTSUP, "journal: '%s' has version %u, newer than %u", name,
                            (unsigned) version, CLR_JNL_VERSION);
    }
    if (version != CLR_JNL_VERSION || clr__get_u32(p + 24) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "journal: '%s' header version %u unknown", name,
                            (unsigned) version);
    }
    if (clr__get_u32(p + 12) != shard) {
        return dbao_err_set(err, DBAO_EVERIFY, "journal: '%s' belongs to shard %u, not %u", name,
                            (unsigned) clr__get_u32(p + 12), shard);
    }
    if (clr__get_u64(p + 16) != first) {
        return dbao_err_set(err, DBAO_EVERIFY, "journal: '%s' header and name disagree", name);
    }
    return 0;
}

typedef struct seg_scan {
    uint64_t nrec;    /* whole, valid records */
    size_t valid_len; /* header + nrec records */
    bool torn;        /* bytes after valid_len */
    char why[96];     /* what they were */
} seg_scan;

/* scan_records walks the records of one segment image. It stops at the first bad record
 * (reported as torn, with `why`) unless a valid record follows it (DBAO_EVERIFY). Events with
 * seq >= from go to fn (a non-zero return stops the walk and is returned). */
static int
scan_records(const uint8_t *d, size_t len, const char *name, uint64_t first, uint64_t from,
             clr_journal_fn fn, void *arg, seg_scan *s, dbao_err *err)
{
    size_t off = CLR_JNL_HEADER_LEN;
    memset(s, 0, sizeof *s);
    while (off < len) {
        const uint8_t *r = d + off;
        if (len - off < CLR_JNL_REC_LEN) {
            s->torn = true;
            snprintf(s->why, sizeof s->why, "short record of %zu bytes", len - off);
            break;
        }
        if (!record_ok(r)) {
            for (size_t o = off + CLR_JNL_REC_LEN; o + CLR_JNL_REC_LEN <= len;
                 o += CLR_JNL_REC_LEN) {
                if (record_ok(d + o)) {
                    return dbao_err_set(err, DBAO_EVERIFY,
                                        "journal: '%s' record at offset %zu is corrupt and "
                                        "followed by a valid one at %zu (damage, not a torn write)",
                                        name, off, o);
                }
            }
            s->torn = true;
            snprintf(s->why, sizeof s->why, "%s at offset %zu (%zu bytes)",
                     all_zero(r, len - off)                  ? "zero fill"
                     : clr__get_u32(r) != CLR_EVENT_WIRE_LEN ? "bad record length"
                                                             : "bad record CRC",
                     off, len - off);
            break;
        }
        clr_event ev;
        dbao_err e2;
        if (clr_event_decode(&ev, r + 8, &e2) != 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "journal: '%s' record at offset %zu: %s", name,
                                off, e2.msg);
        }
        if (ev.seq != first + s->nrec) {
            return dbao_err_set(err, DBAO_EVERIFY,
                                "journal: '%s' record at offset %zu has seq %" PRIu64
                                ", expected %" PRIu64,
                                name, off, ev.seq, first + s->nrec);
        }
        if (fn != NULL && ev.seq >= from) {
            int rc = fn(arg, &ev);
            if (rc != 0) {
                return rc;
            }
        }
        s->nrec++;
        off += CLR_JNL_REC_LEN;
    }
    s->valid_len = CLR_JNL_HEADER_LEN + (size_t) s->nrec * CLR_JNL_REC_LEN;
    return 0;
}

/* ---- the survey: structure of a shard directory ------------------------------------------- */

typedef struct survey {
    listing l;
    uint64_t last_seq;     /* last whole record (first - 1 of the last segment if empty) */
    size_t last_valid_len; /* bytes of the last segment to keep */
    bool header_torn;      /* the last segment's header must be rewritten */
    bool tail_torn;        /* the last segment must be truncated to last_valid_len */
    char why[256];
} survey;

static void note_add(char *note, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
note_add(char *note, const char *fmt, ...)
{
    size_t n = strlen(note);
    if (n > 0 && n + 2 < NOTE_MAX) {
        memcpy(note + n, "; ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + n, NOTE_MAX - n, fmt, ap);
    va_end(ap);
}

/* survey_dir checks every segment header, that every segment but the last holds whole records
 * and that the segments are contiguous, scans the last segment fully, and refuses a snapshot
 * newer than the last record. It changes nothing on disk. */
static int
survey_dir(int dirfd, const char *path, unsigned shard, bool writable, survey *sv, dbao_err *err)
{
    memset(sv, 0, sizeof *sv);
    int rc = list_dir(dirfd, path, writable, &sv->l, err);
    if (rc != 0) {
        return rc;
    }
    const seq_list *segs = &sv->l.segs;
    char name[64];
    uint8_t hdr[CLR_JNL_HEADER_LEN];
    if (segs->n == 0) {
        if (sv->l.snaps.n > 0) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "journal: '%s' has snapshots but no segment (journal lost?)", path);
        }
        goto out;
    }
    if (segs->v[0] == 0) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "journal: '%s' has a segment starting at seq 0", path);
        goto out;
    }
    for (size_t i = 0; i + 1 < segs->n; i++) {
        clr__journal_segment_name(name, sizeof name, segs->v[i]);
        int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            rc = dbao_err_set(err, -errno, "journal: cannot open '%s': %s", name, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            goto out;
        }
        ssize_t n = pread(fd, hdr, sizeof hdr, 0);
        close(fd);
        rc = check_header(hdr, n < 0 ? 0 : (size_t) n, name, shard, segs->v[i], err);
        if (rc == 1) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "journal: '%s' header is torn but it is not the "
                              "last segment",
                              name);
        }
        if (rc != 0) {
            goto out;
        }
        uint64_t body = (uint64_t) st.st_size - CLR_JNL_HEADER_LEN;
        if (body % CLR_JNL_REC_LEN != 0 || body == 0) {
            rc = dbao_err_set(err, DBAO_EVERIFY, "journal: '%s' is not the last segment but %s",
                              name, body == 0 ? "holds no record" : "ends in a partial record");
            goto out;
        }
        if (segs->v[i] + body / CLR_JNL_REC_LEN != segs->v[i + 1]) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "journal: '%s' ends at seq %" PRIu64 " but the next segment "
                              "starts at %" PRIu64,
                              name, segs->v[i] + body / CLR_JNL_REC_LEN - 1, segs->v[i + 1]);
            goto out;
        }
    }
    uint64_t first = segs->v[segs->n - 1];
    clr__journal_segment_name(name, sizeof name, first);
    uint8_t *d = NULL;
    size_t len = 0;
    if ((rc = read_file_at(dirfd, name, &d, &len, err)) != 0) {
        goto out;
    }
    rc = check_header(d, len, name, shard, first, err);
    sv->last_seq = first - 1;
    if (rc == 1) {
        rc = 0;
        sv->header_torn = true;
        sv->last_valid_len = 0;
        snprintf(sv->why, sizeof sv->why, "%s: torn header (%zu bytes) rewritten", name, len);
    } else if (rc == 0) {
        seg_scan s;
        rc = scan_records(d, len, name, first, 0, NULL, NULL, &s, err);
        if (rc == 0) {
            sv->last_seq = first + s.nrec - 1;
            sv->last_valid_len = s.valid_len;
            if (s.torn) {
                sv->tail_torn = true;
                snprintf(sv->why, sizeof sv->why, "%s: torn tail truncated (%s); last seq %" PRIu64,
                         name, s.why, sv->last_seq);
            }
        }
    }
    dbao_free(d);
    if (rc != 0) {
        goto out;
    }
    if (sv->l.snaps.n > 0 && sv->l.snaps.v[sv->l.snaps.n - 1] > sv->last_seq) {
        rc = dbao_err_set(err, DBAO_EVERIFY,
                          "journal: '%s' has a snapshot at seq %" PRIu64
                          " beyond the last record %" PRIu64 " (journal lost?)",
                          path, sv->l.snaps.v[sv->l.snaps.n - 1], sv->last_seq);
    }
out:
    if (rc != 0) {
        listing_free(&sv->l);
    }
    return rc;
}

/* ---- the writer --------------------------------------------------------------------------- */

struct clr_journal {
    char path[PATH_MAX]; /* <dir>/shard-<N> */
    unsigned shard;
    int dirfd, lockfd, fd; /* fd: the active segment */
    uint64_t seg_first;    /* first seq of the active segment */
    uint64_t seg_size;     /* its durable size */
    uint64_t last_seq;     /* last durable seq */
    uint64_t next_seq;     /* last seq assigned (buffered) */
    uint8_t *buf;          /* buffered records */
    size_t buf_len, buf_cap;
    size_t segment_bytes;
    bool no_sync;
    bool failed; /* a write or sync failed: what is on disk is unknown, refuse everything */
    char note[NOTE_MAX];
};

static int
fsync_fd(int fd, bool no_sync)
{
    return no_sync || fsync(fd) == 0 ? 0 : -errno;
}

static int
pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t) off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t) n;
        off += (uint64_t) n;
    }
    return 0;
}

/* create_segment: a new, empty segment starting at `first`, made durable (file and
 * directory) before it is used. A leftover with a torn header (truncate = true) is rewritten
 * in place. */
static int
create_segment(clr_journal *j, uint64_t first, bool rewrite, dbao_err *err)
{
    char name[64];
    uint8_t hdr[CLR_JNL_HEADER_LEN];
    clr__journal_segment_name(name, sizeof name, first);
    int flags = O_RDWR | O_CLOEXEC | O_CREAT | (rewrite ? O_TRUNC : O_EXCL);
    int fd = openat(j->dirfd, name, flags, 0600);
    if (fd < 0) {
        return dbao_err_set(err, -errno, "journal: cannot create '%s': %s", name, strerror(errno));
    }
    clr__journal_header(hdr, j->shard, first);
    int rc = pwrite_all(fd, hdr, sizeof hdr, 0);
    if (rc == 0) {
        rc = fsync_fd(fd, j->no_sync);
    }
    if (rc == 0) {
        rc = fsync_fd(j->dirfd, j->no_sync);
    }
    if (rc != 0) {
        close(fd);
        return dbao_err_set(err, rc, "journal: cannot initialise '%s': %s", name, strerror(-rc));
    }
    if (j->fd >= 0) {
        close(j->fd);
    }
    j->fd = fd;
    j->seg_first = first;
    j->seg_size = CLR_JNL_HEADER_LEN;
    return 0;
}

static int
mkdir_durable(const char *path, dbao_err *err)
{
    if (mkdir(path, 0700) == 0) {
        /* Make the new entry durable in its parent. */
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", path);
        char *slash = strrchr(parent, '/');
        if (slash != NULL && slash != parent) {
            *slash = '\0';
        } else {
            snprintf(parent, sizeof parent, "%s", slash == parent ? "/" : ".");
        }
        int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            (void) fsync(fd);
            close(fd);
        }
        return 0;
    }
    if (errno == EEXIST) {
        return 0;
    }
    return dbao_err_set(err, -errno, "journal: cannot create directory '%s': %s", path,
                        strerror(errno));
}

static int
shard_path(char *out, size_t cap, const char *dir, unsigned shard, dbao_err *err)
{
    if (dir == NULL || dir[0] == '\0') {
        return dbao_err_set(err, DBAO_EINVAL, "journal: dir is empty");
    }
    if ((size_t) snprintf(out, cap, "%s/shard-%u", dir, shard) >= cap - 64) {
        return dbao_err_set(err, DBAO_ERANGE, "journal: dir path too long");
    }
    return 0;
}

int
clr_journal_open(clr_journal **out, const char *dir, unsigned shard, const clr_journal_opts *opts,
                 dbao_err *err)
{
    *out = NULL;
    clr_journal *j = dbao_calloc(1, sizeof *j);
    if (j == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "journal: out of memory");
    }
    j->dirfd = j->lockfd = j->fd = -1;
    j->shard = shard;
    j->segment_bytes =
        opts != NULL && opts->segment_bytes > 0 ? opts->segment_bytes : DEFAULT_SEGMENT_BYTES;
    j->no_sync = opts != NULL && opts->no_sync;
    survey sv;
    memset(&sv, 0, sizeof sv);
    int rc = shard_path(j->path, sizeof j->path, dir, shard, err);
    if (rc == 0) {
        rc = mkdir_durable(dir, err);
    }
    if (rc == 0) {
        rc = mkdir_durable(j->path, err);
    }
    if (rc != 0) {
        goto fail;
    }
    j->dirfd = open(j->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        rc = dbao_err_set(err, -errno, "journal: cannot open '%s': %s", j->path, strerror(errno));
        goto fail;
    }
    j->lockfd = openat(j->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->lockfd < 0) {
        rc = dbao_err_set(err, -errno, "journal: cannot open the lock file in '%s': %s", j->path,
                          strerror(errno));
        goto fail;
    }
    if (flock(j->lockfd, LOCK_EX | LOCK_NB) != 0) {
        rc = dbao_err_set(err, DBAO_EINVAL,
                          "journal: '%s' is locked by another writer (is a daemon running?)",
                          j->path);
        goto fail;
    }
    if ((rc = survey_dir(j->dirfd, j->path, shard, true, &sv, err)) != 0) {
        goto fail;
    }
    if (sv.l.segs.n == 0) {
        rc = create_segment(j, 1, false, err);
        j->last_seq = 0;
    } else {
        uint64_t first = sv.l.segs.v[sv.l.segs.n - 1];
        j->last_seq = sv.last_seq;
        if (sv.header_torn) {
            rc = create_segment(j, first, true, err);
        } else {
            char name[64];
            clr__journal_segment_name(name, sizeof name, first);
            j->fd = openat(j->dirfd, name, O_RDWR | O_CLOEXEC);
            if (j->fd < 0) {
                rc = dbao_err_set(err, -errno, "journal: cannot open '%s': %s", name,
                                  strerror(errno));
            } else {
                j->seg_first = first;
                j->seg_size = sv.last_valid_len;
                if (sv.tail_torn) {
                    /* Drop the torn tail and make the new length durable before anything is
                     * appended after it. */
                    if (ftruncate(j->fd, (off_t) sv.last_valid_len) != 0 ||
                        fsync_fd(j->fd, j->no_sync) != 0) {
                        rc = dbao_err_set(err, -errno, "journal: cannot truncate '%s': %s", name,
                                          strerror(errno));
                    }
                }
            }
        }
        if (rc == 0 && sv.why[0] != '\0') {
            note_add(j->note, "%s", sv.why);
        }
    }
    if (rc != 0) {
        goto fail;
    }
    j->next_seq = j->last_seq;
    listing_free(&sv.l);
    *out = j;
    return 0;
fail:
    listing_free(&sv.l);
    j->buf_len = 0;
    clr_journal_close(j);
    return rc;
}

uint64_t
clr_journal_last_seq(const clr_journal *j)
{
    return j->last_seq;
}

const char *
clr_journal_recovery_note(const clr_journal *j)
{
    return j->note;
}

int
clr_journal_append(clr_journal *j, clr_event *ev, size_t n, dbao_err *err)
{
    if (j->failed) {
        return dbao_err_set(err, DBAO_EIO, "journal: '%s' failed earlier", j->path);
    }
    if (n > (SIZE_MAX - j->buf_len) / CLR_JNL_REC_LEN) {
        return dbao_err_set(err, DBAO_ERANGE, "journal: batch too large");
    }
    size_t need = j->buf_len + n * CLR_JNL_REC_LEN;
    if (need > j->buf_cap) {
        size_t cap = j->buf_cap ? j->buf_cap : 64 * CLR_JNL_REC_LEN;
        while (cap < need) {
            cap *= 2;
        }
        uint8_t *b = dbao_realloc(j->buf, cap);
        if (b == NULL) {
            return dbao_err_set(err, DBAO_ENOMEM, "journal: out of memory buffering a batch");
        }
        j->buf = b;
        j->buf_cap = cap;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
    for (size_t i = 0; i < n; i++) {
        ev[i].seq = ++j->next_seq;
        ev[i].ts_ns = now;
        clr__journal_record(j->buf + j->buf_len, &ev[i]);
        j->buf_len += CLR_JNL_REC_LEN;
    }
    return 0;
}

int
clr_journal_sync(clr_journal *j, dbao_err *err)
{
    if (j->failed) {
        return dbao_err_set(err, DBAO_EIO, "journal: '%s' failed earlier", j->path);
    }
    if (j->buf_len == 0) {
        return 0;
    }
    int rc = 0;
    if (j->seg_size >= j->segment_bytes && j->last_seq >= j->seg_first) {
        if ((rc = create_segment(j, j->last_seq + 1, false, err)) != 0) {
            j->failed = true;
            return rc;
        }
    }
    rc = pwrite_all(j->fd, j->buf, j->buf_len, j->seg_size);
    if (rc == 0 && !j->no_sync && fdatasync(j->fd) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        /* Part of the batch may be on disk; recovery on the next open sorts it out. This
         * handle is done: the caller must not acknowledge anything of the batch. */
        j->failed = true;
        return dbao_err_set(err, rc, "journal: cannot write '%s': %s", j->path, strerror(-rc));
    }
    j->seg_size += j->buf_len;
    j->last_seq = j->next_seq;
    j->buf_len = 0;
    return 0;
}

int
clr_journal_close(clr_journal *j)
{
    if (j == NULL) {
        return 0;
    }
    int rc = j->buf_len > 0 ? clr_journal_sync(j, NULL) : 0;
    if (j->fd >= 0) {
        close(j->fd);
    }
    if (j->lockfd >= 0) {
        close(j->lockfd); /* releases the flock */
    }
    if (j->dirfd >= 0) {
        close(j->dirfd);
    }
    dbao_free(j->buf);
    dbao_free(j);
    return rc;
}

int
clr_journal_snapshot(clr_journal *j, const clr_engine *e, unsigned keep, dbao_err *err)
{
    if (keep == 0) {
        return dbao_err_set(err, DBAO_EINVAL, "journal: snapshot keep must be >= 1");
    }
    uint64_t seq = clr_engine_seq(e);
    if (seq > j->last_seq) {
        return dbao_err_set(err, DBAO_EINVAL,
                            "journal: engine seq %" PRIu64 " is beyond the durable seq %" PRIu64,
                            seq, j->last_seq);
    }
    uint8_t *snap = NULL;
    size_t snap_len = 0;
    int rc = clr_engine_snapshot(e, &snap, &snap_len, err);
    if (rc != 0) {
        return rc;
    }
    char path[PATH_MAX + 64], name[64];
    snprintf(path, sizeof path, "%s/snap-%020" PRIu64 ".bin", j->path, seq);
    rc = dbao_file_write(path, snap, snap_len, 0600, err);
    dbao_free(snap);
    if (rc != 0) {
        return rc;
    }
    listing l;
    if ((rc = list_dir(j->dirfd, j->path, true, &l, err)) != 0) {
        return rc;
    }
    bool changed = false;
    if (l.snaps.n == 0) {
        goto out; /* removed under us: nothing to prune against */
    }
    size_t drop = l.snaps.n > keep ? l.snaps.n - keep : 0;
    for (size_t i = 0; i < drop; i++) {
        snprintf(name, sizeof name, "snap-%020" PRIu64 ".bin", l.snaps.v[i]);
        if (unlinkat(j->dirfd, name, 0) != 0 && errno != ENOENT) {
            rc =
                dbao_err_set(err, -errno, "journal: cannot delete '%s': %s", name, strerror(errno));
            goto out;
        }
        changed = true;
    }
    /* Segments wholly before the oldest kept snapshot, oldest first, never the active one:
     * segment i holds seqs segs[i] .. segs[i+1] - 1. */
    uint64_t oldest = l.snaps.v[drop];
    for (size_t i = 0; i + 1 < l.segs.n && l.segs.v[i + 1] - 1 <= oldest; i++) {
        if (l.segs.v[i] == j->seg_first) {
            break;
        }
        clr__journal_segment_name(name, sizeof name, l.segs.v[i]);
        if (unlinkat(j->dirfd, name, 0) != 0 && errno != ENOENT) {
            rc =
                dbao_err_set(err, -errno, "journal: cannot delete '%s': %s", name, strerror(errno));
            goto out;
        }
        changed = true;
    }
out:
    if (changed) {
        (void) fsync_fd(j->dirfd, j->no_sync);
    }
    listing_free(&l);
    return rc;
}

/* ---- readers ------------------------------------------------------------------------------ */

/* walk: every record with seq >= from, through every segment that can hold one. Assumes a
 * survey passed; every record is checked again (CRC, decode, contiguity) as it is read. */
static int
walk(int dirfd, unsigned shard, const survey *sv, uint64_t from, clr_journal_fn fn, void *arg,
     dbao_err *err)
{
    const seq_list *segs = &sv->l.segs;
    for (size_t i = 0; i < segs->n; i++) {
        if (i + 1 < segs->n && segs->v[i + 1] <= from) {
            continue; /* every record of this segment is before `from` */
        }
        char name[64];
        clr__journal_segment_name(name, sizeof name, segs->v[i]);
        uint8_t *d = NULL;
        size_t len = 0;
        int rc = read_file_at(dirfd, name, &d, &len, err);
        if (rc != 0) {
            return rc;
        }
        bool last = i + 1 == segs->n;
        seg_scan s;
        rc = check_header(d, len, name, shard, segs->v[i], err);
        if (rc == 1 && last) {
            rc = 0; /* a torn last header holds no record */
            s.nrec = 0;
        } else if (rc == 0) {
            rc = scan_records(d, len, name, segs->v[i], from, fn, arg, &s, err);
            if (rc == 0 && !last && (s.torn || segs->v[i] + s.nrec != segs->v[i + 1])) {
                rc =
                    dbao_err_set(err, DBAO_EVERIFY, "journal: '%s' changed while being read", name);
            }
        } else if (rc == 1) {
            rc = dbao_err_set(err, DBAO_EVERIFY, "journal: '%s' header is torn", name);
        }
        dbao_free(d);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int
open_readonly(int *dirfd, char *path, size_t cap, const char *dir, unsigned shard, survey *sv,
              dbao_err *err)
{
    int rc = shard_path(path, cap, dir, shard, err);
    if (rc != 0) {
        return rc;
    }
    *dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*dirfd < 0) {
        return dbao_err_set(err, -errno, "journal: cannot open '%s': %s", path, strerror(errno));
    }
    rc = survey_dir(*dirfd, path, shard, false, sv, err);
    if (rc != 0) {
        close(*dirfd);
        *dirfd = -1;
    }
    return rc;
}

int
clr_journal_scan(const char *dir, unsigned shard, uint64_t from_seq, clr_journal_fn fn, void *arg,
                 dbao_err *err)
{
    char path[PATH_MAX];
    int dirfd = -1;
    survey sv;
    int rc = open_readonly(&dirfd, path, sizeof path, dir, shard, &sv, err);
    if (rc != 0) {
        return rc;
    }
    uint64_t first = sv.l.segs.n > 0 ? sv.l.segs.v[0] : 1;
    if (from_seq == 0) {
        from_seq = first;
    }
    if (from_seq < first) {
        rc = dbao_err_set(err, DBAO_ERANGE,
                          "journal: records before seq %" PRIu64 " were pruned (asked from %" PRIu64
                          ")",
                          first, from_seq);
    } else {
        rc = walk(dirfd, shard, &sv, from_seq, fn, arg, err);
    }
    listing_free(&sv.l);
    close(dirfd);
    return rc;
}

typedef struct load_ctx {
    clr_engine *e;
    clr_move_fn move;
    void *move_arg;
    dbao_err *err;
} load_ctx;

static int
load_apply(void *arg, const clr_event *ev)
{
    load_ctx *c = arg;
    clr_result res;
    int rc = clr_engine_apply(c->e, ev, &res, c->move, c->move_arg);
    if (rc != 0) {
        return dbao_err_set(c->err, rc, "journal: the engine refused seq %" PRIu64 ": %s", ev->seq,
                            dbao_strerror(rc));
    }
    return 0;
}

int
clr_journal_load(clr_engine **out, const char *dir, unsigned shard, unsigned nshards,
                 const clr_refdata *ref, bool from_scratch, clr_move_fn move, void *move_arg,
                 dbao_err *err)
{
    char path[PATH_MAX];
    int dirfd = -1;
    survey sv;
    *out = NULL;
    int rc = open_readonly(&dirfd, path, sizeof path, dir, shard, &sv, err);
    if (rc != 0) {
        return rc;
    }
    clr_engine *e = NULL;
    uint64_t first = sv.l.segs.n > 0 ? sv.l.segs.v[0] : 1;
    for (size_t i = sv.l.snaps.n; !from_scratch && e == NULL && i-- > 0;) {
        uint64_t s = sv.l.snaps.v[i];
        if (s + 1 < first) {
            break; /* the records right after it were pruned; older ones are worse */
        }
        char name[64];
        snprintf(name, sizeof name, "snap-%020" PRIu64 ".bin", s);
        uint8_t *d = NULL;
        size_t len = 0;
        dbao_err e2;
        dbao_err_clear(&e2);
        rc = read_file_at(dirfd, name, &d, &len, &e2);
        if (rc == 0) {
            rc = clr_engine_restore(&e, ref, shard, nshards, d, len, &e2);
            dbao_free(d);
        }
        if (rc == 0 && clr_engine_seq(e) != s) {
            clr_engine_free(e);
            e = NULL;
            rc = dbao_err_set(&e2, DBAO_EVERIFY, "snapshot seq differs from its name");
        }
        if (rc == DBAO_EFORMAT || rc == DBAO_EVERIFY || rc == DBAO_ENOTSUP) {
            continue; /* fall back to an older snapshot */
        }
        if (rc != 0) {
            dbao_err_set(err, rc, "journal: snapshot '%s': %s", name, e2.msg);
            goto out;
        }
    }
    if (e == NULL) {
        if (first != 1) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "journal: '%s' starts at seq %" PRIu64
                              " and no usable snapshot covers the records before it",
                              path, first);
            goto out;
        }
        if ((rc = clr_engine_new(&e, ref, shard, nshards, err)) != 0) {
            goto out;
        }
    }
    load_ctx c = {e, move, move_arg, err};
    rc = walk(dirfd, shard, &sv, clr_engine_seq(e) + 1, load_apply, &c, err);
out:
    if (rc != 0) {
        clr_engine_free(e);
    } else {
        *out = e;
    }
    listing_free(&sv.l);
    close(dirfd);
    return rc;
}
