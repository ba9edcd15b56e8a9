/* log.c: the audit log: segments, group commit, the tree cache, checkpoints, recovery.
 *
 * Threads. Producers call audit_log_submit: the leaf hashes of their records are computed on
 * their own thread, then the request joins a FIFO queue under q_mu. One writer thread owns
 * every write: it takes the queued requests (whole requests, up to batch_max records), frames
 * them into one buffer, writes it with one pwrite at the segment's end, makes it durable with
 * one fdatasync, appends the leaf hashes to the frontier (which emits the perfect-subtree
 * nodes it completes), writes those nodes to the tree files, and only then publishes the new
 * size (release store) and completes the requests. Requests that arrive during the
 * fdatasync form the next batch, so batching grows with load without a timer; batch_delay_us
 * can add a short wait for fuller batches.
 *
 * Invariants.
 *  - A request is completed with status 0 only after fdatasync of the segment holding its
 *    records returned 0. Everything readers can see (index < size) is durable.
 *  - Frames are written only at the end of the data of the last segment; a segment that is
 *    full gets a seal frame (next index and root) and is never written again. Nothing that was
 *    acknowledged is ever overwritten or truncated.
 *  - Tree files hold, for level k, the hashes of the perfect subtrees [i*2^k, (i+1)*2^k) for
 *    i < count_k; for a published size n, count_k >= n >> k. They are a cache: fdatasync'd
 *    before each checkpoint, rebuilt from the segments when they disagree with one.
 *  - A checkpoint is signed only for a tree that a consistency proof (checked, not assumed)
 *    shows extends the previous checkpoint; the checkpoint file is fdatasync'd before the
 *    checkpoint is served.
 *  - After the first write or sync error the log is failed: no request completes with 0 again.
 *
 * Recovery (audit_log_open, read-write): every segment but the last must end with a valid
 * seal; the last may end with a torn tail, which is zeroed when no valid frame follows the
 * damage (data after a bad frame means damage, and the log refuses to open). The latest
 * checkpoint must verify with a trusted key, be no larger than the log, and agree with the
 * tree; otherwise the tree is rebuilt from the records and, if it still disagrees, the log
 * refuses to open and says which checkpoint and why.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SPARSE_SHIFT 4 /* one offset kept per 16 records */
#define SPARSE       (1u << SPARSE_SHIFT)
#define SEG_RESERVE  ((uint64_t) 32768) /* kept free at the end of a segment for alarm + seal */
#define TREE_LEVELS  64
#define PATH_MAX_LEN 4096

typedef struct seg {
    uint64_t first; /* index of its first record */
    uint64_t count; /* records in it (published) */
    uint64_t end;   /* offset after the last frame (or the seal) */
    uint64_t cap;   /* file size (preallocated) */
    int fd;
    uint8_t *map; /* PROT_READ, MAP_SHARED, cap bytes */
    bool sealed;
    int64_t created_ns;
    uint64_t *sparse; /* sparse[k] = offset of record first + k * SPARSE */
    size_t nsparse, sparse_cap;
    char name[40];
} seg;

struct audit_log {
    char *dir;
    audit_log_config cfg;
    char *cfg_holder;
    bool rdonly;
    int lock_fd;
    uint64_t first;     /* records below were pruned to the archive */
    char archive[1024]; /* where they went */

    /* keys */
    audit_note_key *signers;
    size_t num_signers;
    audit_note_key *trusted; /* signers first, then the caller's trusted keys */
    size_t num_trusted;
    audit_log_alarm_fn alarm;
    void *alarm_arg;

    /* segments: the array is changed by the writer under segs_mu (write lock) */
    pthread_rwlock_t segs_mu;
    seg **segs;
    size_t nsegs, segs_cap;

    /* published size and tree */
    _Atomic uint64_t size;
    int tree_fd[TREE_LEVELS];
    _Atomic uint64_t tree_count[TREE_LEVELS];
    bool tree_dirty[TREE_LEVELS];
    audit__buf tree_pending[TREE_LEVELS]; /* writer: nodes not yet written */
    audit_frontier frontier;              /* writer */

    /* checkpoints */
    pthread_mutex_t ckp_mu;
    int ckp_fd;
    uint64_t ckp_end;
    char *ckp_note; /* latest */
    size_t ckp_note_len;
    audit_checkpoint ckp; /* latest (size 0 and no note when none) */
    bool have_ckp;
    bool ckp_foreign; /* the latest is not signed by our signers (a rotated key): re-sign */
    int64_t ckp_time_ns;
    int64_t ckp_mono_ns; /* when the latest was cut, monotonic */

    /* queue */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;   /* writer waits for work */
    pthread_cond_t cut_cv; /* checkpoint_cut callers wait */
    audit_log_req *q_head, *q_tail;
    uint64_t q_records;
    bool closing, abandon;
    uint64_t cut_requested, cut_done;
    int cut_rc;
    pthread_t writer;
    bool writer_started;

    /* writer state */
    uint8_t *wbuf;
    size_t wcap;
    uint64_t *spbuf; /* sparse offsets of the batch being written */
    size_t spcap;

    /* failure */
    _Atomic int failed;
    bool alarm_written; /* writer: the alarm record is in (or could not be written) */
    char fail_msg[256];

    /* stats */
    _Atomic uint64_t st_batches, st_appended, st_bytes, st_fsync_ns;

    char recovery[512];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
path_join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return (n < 0 || (size_t) n >= cap) ? DBAO_ERANGE : 0;
}

static int
errno_err(dbao_err *err, int rc, const char *what, const char *path)
{
    return dbao_err_set(err, rc == -ENOSPC ? DBAO_EIO : (rc < 0 ? rc : DBAO_EIO), "%s %s: %s", what,
                        path, strerror(rc < 0 ? -rc : EIO));
}

/* ---- configuration ------------------------------------------------------------------------ */

static void
cfg_defaults(audit_log_config *c)
{
    if (c->key_path == NULL || *c->key_path == '\0') {
        c->key_path = "signer.key";
    }
    if (c->pub_path == NULL || *c->pub_path == '\0') {
        c->pub_path = "signer.pub.pem";
    }
    if (c->segment_bytes == 0) {
        c->segment_bytes = (uint64_t) 64 << 20;
    }
    if (c->batch_max == 0) {
        c->batch_max = 8192;
    }
    if (c->checkpoint_ms == 0) {
        c->checkpoint_ms = 1000;
    }
    if (c->checkpoint_records == 0) {
        c->checkpoint_records = 100000;
    }
    if (c->retention_days == 0) {
        c->retention_days = 180;
    }
}

static int
cfg_check(const audit_log_config *c, dbao_err *err)
{
    if (c->origin == NULL || *c->origin == '\0' || strlen(c->origin) > AUDIT_ORIGIN_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "log origin must be 1..%d bytes", AUDIT_ORIGIN_MAX);
    }
    for (const char *p = c->origin; *p; p++) {
        unsigned char ch = (unsigned char) *p;
        if (ch <= 0x20 || ch == 0x7f || ch == '+') {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "log origin must not contain spaces, control characters or '+'");
        }
    }
    if (c->segment_bytes < ((uint64_t) 1 << 20) || c->segment_bytes > ((uint64_t) 1 << 40)) {
        return dbao_err_set(err, DBAO_ERANGE, "segment_bytes must be 1 MiB .. 1 TiB");
    }
    if (c->batch_max > AUDIT_REQ_RECORDS_MAX * 4u) {
        return dbao_err_set(err, DBAO_ERANGE, "batch_max must be at most %u",
                            AUDIT_REQ_RECORDS_MAX * 4u);
    }
    if (c->batch_delay_us > 1000) {
        return dbao_err_set(err, DBAO_ERANGE, "batch_delay_us must be at most 1000");
    }
    if (c->retention_days < 180) {
        return dbao_err_set(err, DBAO_ERANGE,
                            "retention_days must be at least 180 (Cybersecurity Law art. 21)");
    }
    if (strchr(c->key_path, '\n') || strchr(c->pub_path, '\n')) {
        return dbao_err_set(err, DBAO_EFORMAT, "key paths must be one line");
    }
    if (c->num_trusted_pubs > AUDIT_LOG_TRUSTED_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "at most %d trusted_pub lines",
                            AUDIT_LOG_TRUSTED_MAX);
    }
    for (size_t i = 0; i < c->num_trusted_pubs; i++) {
        if (c->trusted_pubs[i] == NULL || *c->trusted_pubs[i] == '\0' ||
            strchr(c->trusted_pubs[i], '\n')) {
            return dbao_err_set(err, DBAO_EFORMAT, "trusted_pub paths must be one line");
        }
    }
    return 0;
}

int
audit_log_create(const char *dir, const audit_log_config *cfg_in, dbao_err *err)
{
    if (dir == NULL || cfg_in == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "audit_log_create: NULL argument");
    }
    audit_log_config c = *cfg_in;
    cfg_defaults(&c);
    int rc = cfg_check(&c, err);
    if (rc != 0) {
        return rc;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return errno_err(err, -errno, "cannot create", dir);
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        return errno_err(err, -errno, "cannot open", dir);
    }
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
            strcmp(de->d_name, c.key_path) != 0 && strcmp(de->d_name, c.pub_path) != 0) {
            empty = false;
        }
    }
    closedir(d);
    if (!empty) {
        return dbao_err_set(err, DBAO_EINVAL, "%s is not empty: refusing to create a log there",
                            dir);
    }
    char p[PATH_MAX_LEN];
    const char *subs[] = {"seg", "tree"};
    for (size_t i = 0; i < 2; i++) {
        if ((rc = path_join(p, sizeof p, dir, subs[i])) != 0 || mkdir(p, 0700) != 0) {
            return errno_err(err, rc ? rc : -errno, "cannot create", p);
        }
    }
    /* checkpoint file */
    uint8_t hdr[AUDIT__CKP_HDR] = {0};
    memcpy(hdr, AUDIT__CKP_MAGIC, 8);
    audit__le32(hdr + 8, 1);
    audit__le32(hdr + 12, AUDIT__CKP_HDR);
    if ((rc = path_join(p, sizeof p, dir, "checkpoints")) != 0 ||
        (rc = dbao_file_write(p, hdr, sizeof hdr, 0600, err)) != 0) {
        return rc ? rc : DBAO_EIO;
    }
    rc = audit_log_write_config(dir, &c, err);
    if (rc != 0) {
        return rc;
    }
    rc = audit__fsync_dir(dir);
    if (rc != 0) {
        return errno_err(err, rc, "cannot sync", dir);
    }
    return 0;
}

int
audit_log_write_config(const char *dir, const audit_log_config *cfg_in, dbao_err *err)
{
    audit_log_config c = *cfg_in;
    cfg_defaults(&c);
    int rc = cfg_check(&c, err);
    if (rc != 0) {
        return rc;
    }
    audit__buf b;
    audit__buf_init(&b, 65536);
    char line[128];
    audit__buf_puts(&b, "dengbao-audit-log 1\norigin = ");
    audit__buf_puts(&b, c.origin);
    audit__buf_puts(&b, "\nkey = ");
    audit__buf_puts(&b, c.key_path);
    audit__buf_puts(&b, "\npub = ");
    audit__buf_puts(&b, c.pub_path);
    snprintf(line, sizeof line, "\nsegment_bytes = %" PRIu64 "\nbatch_max = %u\n", c.segment_bytes,
             c.batch_max);
    audit__buf_puts(&b, line);
    snprintf(line, sizeof line, "batch_delay_us = %u\ncheckpoint_ms = %u\n", c.batch_delay_us,
             c.checkpoint_ms);
    audit__buf_puts(&b, line);
    snprintf(line, sizeof line, "checkpoint_records = %" PRIu64 "\nretention_days = %u\n",
             c.checkpoint_records, c.retention_days);
    audit__buf_puts(&b, line);
    for (size_t i = 0; i < c.num_trusted_pubs; i++) {
        audit__buf_puts(&b, "trusted_pub = ");
        audit__buf_puts(&b, c.trusted_pubs[i]);
        audit__buf_puts(&b, "\n");
    }
    char *text = NULL;
    size_t n = 0;
    rc = audit__buf_take(&b, &text, &n);
    if (rc != 0) {
        return dbao_err_set(err, rc, "configuration too long");
    }
    char p[PATH_MAX_LEN];
    if ((rc = path_join(p, sizeof p, dir, "log.conf")) != 0 ||
        (rc = dbao_file_write(p, text, n, 0600, err)) != 0) {
        dbao_free(text);
        return rc ? rc : DBAO_EIO;
    }
    dbao_free(text);
    rc = audit__fsync_dir(dir);
    if (rc != 0) {
        return errno_err(err, rc, "cannot sync", dir);
    }
    return 0;
}

static int
parse_u64(const char *v, uint64_t *out)
{
    if (*v < '0' || *v > '9') {
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = x;
    return 0;
}

int
audit_log_read_config(const char *dir, audit_log_config *cfg, char **holder, dbao_err *err)
{
    char p[PATH_MAX_LEN];
    memset(cfg, 0, sizeof *cfg);
    *holder = NULL;
    if (path_join(p, sizeof p, dir, "log.conf") != 0) {
        return dbao_err_set(err, DBAO_ERANGE, "log directory path too long");
    }
    uint8_t *text = NULL;
    size_t len = 0;
    dbao_err e2;
    int rc = dbao_file_read(&text, &len, p, 65536, &e2);
    if (rc != 0) {
        return dbao_err_set(err, (rc == DBAO_ERANGE || rc == -ENOENT) ? DBAO_EFORMAT : rc,
                            "%s: not a dengbao audit log (cannot read log.conf: %s)", dir,
                            dbao_strerror(rc));
    }
    char *s = dbao_malloc(len + 1);
    if (s == NULL) {
        dbao_free(text);
        return DBAO_ENOMEM;
    }
    memcpy(s, text, len);
    s[len] = '\0';
    dbao_free(text);
    if (strlen(s) != len) {
        dbao_free(s);
        return dbao_err_set(err, DBAO_EFORMAT, "log.conf: NUL byte");
    }
    char *save = NULL;
    int lineno = 0;
    bool seen_magic = false;
    for (char *line = strtok_r(s, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (!seen_magic) {
            if (strcmp(line, "dengbao-audit-log 1") != 0) {
                bool newer = strncmp(line, "dengbao-audit-log ", 18) == 0;
                dbao_free(s);
                if (newer) {
                    return dbao_err_set(err, DBAO_ENOTSUP, "log.conf: unsupported log version");
                }
                return dbao_err_set(err, DBAO_EFORMAT, "log.conf: not a dengbao audit log");
            }
            seen_magic = true;
            continue;
        }
        if (*line == '#') {
            continue;
        }
        char *eq = strstr(line, " = ");
        if (eq == NULL) {
            dbao_free(s);
            return dbao_err_set(err, DBAO_EFORMAT, "log.conf line %d: expected 'key = value'",
                                lineno);
        }
        *eq = '\0';
        const char *k = line, *v = eq + 3;
        uint64_t x = 0;
        bool num_ok = parse_u64(v, &x) == 0;
        bool ok = true;
        if (strcmp(k, "origin") == 0) {
            cfg->origin = v;
        } else if (strcmp(k, "key") == 0) {
            cfg->key_path = v;
        } else if (strcmp(k, "pub") == 0) {
            cfg->pub_path = v;
        } else if (strcmp(k, "segment_bytes") == 0) {
            ok = num_ok;
            cfg->segment_bytes = x;
        } else if (strcmp(k, "batch_max") == 0) {
            ok = num_ok && x <= UINT32_MAX;
            cfg->batch_max = (uint32_t) x;
        } else if (strcmp(k, "batch_delay_us") == 0) {
            ok = num_ok && x <= UINT32_MAX;
            cfg->batch_delay_us = (uint32_t) x;
        } else if (strcmp(k, "checkpoint_ms") == 0) {
            ok = num_ok && x <= UINT32_MAX && x > 0;
            cfg->checkpoint_ms = (uint32_t) x;
        } else if (strcmp(k, "checkpoint_records") == 0) {
            ok = num_ok && x > 0;
            cfg->checkpoint_records = x;
        } else if (strcmp(k, "trusted_pub") == 0) {
            ok = cfg->num_trusted_pubs < AUDIT_LOG_TRUSTED_MAX && *v != '\0';
            if (ok) {
                cfg->trusted_pubs[cfg->num_trusted_pubs++] = v;
            }
        } else if (strcmp(k, "retention_days") == 0) {
            ok = num_ok && x <= UINT32_MAX;
            cfg->retention_days = (uint32_t) x;
        } else {
            dbao_free(s);
            return dbao_err_set(err, DBAO_EFORMAT, "log.conf line %d: unknown key", lineno);
        }
        if (!ok) {
            dbao_free(s);
            return dbao_err_set(err, DBAO_EFORMAT, "log.conf line %d: bad value for '%s'", lineno,
                                k);
        }
    }
    if (!seen_magic) {
        dbao_free(s);
        return dbao_err_set(err, DBAO_EFORMAT, "log.conf: empty");
    }
    cfg_defaults(cfg);
    rc = cfg_check(cfg, err);
    if (rc != 0) {
        dbao_free(s);
        memset(cfg, 0, sizeof *cfg);
        return rc;
    }
    *holder = s;
    return 0;
}

/* ---- failure ---------------------------------------------------------------------------- */

static void log_fail(audit_log *log, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
log_fail(audit_log *log, int code, const char *fmt, ...)
{
    int expected = 0;
    if (code >= 0) {
        code = DBAO_EIO;
    }
    va_list ap;
    va_start(ap, fmt);
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!atomic_compare_exchange_strong(&log->failed, &expected, code)) {
        return;
    }
    snprintf(log->fail_msg, sizeof log->fail_msg, "%s", msg);
    if (log->alarm != NULL) {
        log->alarm(log->alarm_arg, code, log->fail_msg);
    }
}

int
audit_log_failed(const audit_log *log)
{
    return atomic_load(&((audit_log *) log)->failed);
}

/* ---- segments --------------------------------------------------------------------------- */

static void
seg_free(seg *s)
{
    if (s == NULL) {
        return;
    }
    if (s->map != NULL && s->map != MAP_FAILED) {
        munmap(s->map, s->cap);
    }
    audit__close(s->fd);
    free(s->sparse);
    free(s);
}

/* sparse_push appends one offset to the segment's sparse index (callers hold segs_mu or own
 * the segment alone). */
static int
sparse_push(seg *s, uint64_t off)
{
    if (s->nsparse == s->sparse_cap) {
        size_t ncap = s->sparse_cap ? s->sparse_cap * 2 : 256;
        uint64_t *np = realloc(s->sparse, ncap * sizeof *np);
        if (np == NULL) {
            return DBAO_ENOMEM;
        }
        s->sparse = np;
        s->sparse_cap = ncap;
    }
    s->sparse[s->nsparse++] = off;
    return 0;
}

/* seg_sparse_add records the offset of record `index` if it is one the index keeps. */
static int
seg_sparse_add(seg *s, uint64_t index, uint64_t off)
{
    return ((index - s->first) & (SPARSE - 1)) == 0 ? sparse_push(s, off) : 0;
}

static int
segs_push(audit_log *log, seg *s)
{
    if (log->nsegs == log->segs_cap) {
        size_t ncap = log->segs_cap ? log->segs_cap * 2 : 16;
        seg **np = realloc(log->segs, ncap * sizeof *np);
        if (np == NULL) {
            return DBAO_ENOMEM;
        }
        log->segs = np;
        log->segs_cap = ncap;
    }
    log->segs[log->nsegs++] = s;
    return 0;
}

/* seg_open opens and maps an existing segment file; checks its header against its name. */
static int
seg_open(seg **out, audit_log *log, const char *name, uint64_t name_first, dbao_err *err)
{
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof p, "%s/seg/%s", log->dir, name);
    seg *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return DBAO_ENOMEM;
    }
    s->fd = -1;
    snprintf(s->name, sizeof s->name, "seg/%s", name);
    s->fd = open(p, (log->rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (s->fd < 0) {
        int rc = errno_err(err, -errno, "cannot open", p);
        seg_free(s);
        return rc;
    }
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        int rc = errno_err(err, -errno, "cannot stat", p);
        seg_free(s);
        return rc;
    }
    s->cap = (uint64_t) st.st_size;
    uint8_t hdr[AUDIT__SEG_HDR];
    ssize_t n = pread(s->fd, hdr, sizeof hdr, 0);
    uint64_t capacity = 0;
    int rc = audit__seg_header_parse(hdr, n < 0 ? 0 : (size_t) n, &s->first, &s->created_ns,
                                     &capacity, err);
    if (rc != 0) {
        char why[DBAO_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err ? err->msg : "bad header");
        dbao_err_set(err, rc, "%s: %s", s->name, why);
        seg_free(s);
        return rc;
    }
    if (s->first != name_first) {
        uint64_t hf = s->first;
        seg_free(s);
        return dbao_err_set(err, DBAO_EVERIFY,
                            "seg/%s: header says its first index is %" PRIu64
                            ", its name says %" PRIu64,
                            name, hf, name_first);
    }
    s->map = mmap(NULL, s->cap, PROT_READ, MAP_SHARED, s->fd, 0);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        rc = errno_err(err, -errno, "cannot map", p);
        seg_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int
sparse_cb(void *arg, uint64_t index, const uint8_t *rec, uint32_t len, uint64_t off)
{
    (void) rec;
    (void) len;
    return seg_sparse_add(arg, index, off);
}

/* seg_create makes a new preallocated segment whose first record is `first`. It is prepared
 * under a temporary name (header, preallocation, fdatasync); then, if `seal` is not NULL, that
 * full segment is sealed; only then is the new one renamed into place. So running out of space
 * leaves the old segment unsealed with its reserve free for the alarm record, and a crash at
 * any point leaves either no new segment (a temporary file that the next open removes) or a
 * sealed old one. */
static int seal_segment(audit_log *log, seg *s, dbao_err *err);

static int
seg_create(seg **out, audit_log *log, uint64_t first, seg *seal, dbao_err *err)
{
    char name[40], tmp[PATH_MAX_LEN], fin[PATH_MAX_LEN], sdir[PATH_MAX_LEN];
    snprintf(name, sizeof name, "%016" PRIx64 ".seg", first);
    snprintf(tmp, sizeof tmp, "%s/seg/.%s.tmp", log->dir, name);
    snprintf(fin, sizeof fin, "%s/seg/%s", log->dir, name);
    snprintf(sdir, sizeof sdir, "%s/seg", log->dir);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return errno_err(err, -errno, "cannot create", tmp);
    }
    uint8_t hdr[AUDIT__SEG_HDR];
    audit__seg_header(hdr, first, audit_now_ns(), log->cfg.segment_bytes);
    int rc = audit__fallocate(fd, log->cfg.segment_bytes);
    if (rc == 0) {
        rc = audit__pwrite(fd, hdr, sizeof hdr, 0);
    }
    if (rc == 0) {
        rc = audit__fdatasync(fd);
    }
    audit__close(fd);
    if (rc != 0) {
        unlink(tmp);
        return dbao_err_set(err, rc == -ENOSPC ? -ENOSPC : DBAO_EIO, "cannot create segment %s: %s",
                            name, strerror(-rc));
    }
    if (seal != NULL) {
        rc = seal_segment(log, seal, err);
        if (rc != 0) {
            unlink(tmp);
            return rc;
        }
    }
    if (rename(tmp, fin) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = audit__fsync_dir(sdir);
    }
    if (rc != 0) {
        unlink(tmp);
        return dbao_err_set(err, DBAO_EIO, "cannot create segment %s: %s", name, strerror(-rc));
    }
    seg *s = NULL;
    rc = seg_open(&s, log, name, first, err);
    if (rc != 0) {
        return rc;
    }
    s->end = AUDIT__SEG_HDR;
    *out = s;
    return 0;
}

/* ---- tree files ---------------------------------------------------------------------------- */

static int
tree_open_level(audit_log *log, unsigned level, bool create, dbao_err *err)
{
    if (log->tree_fd[level] >= 0) {
        return 0;
    }
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof p, "%s/tree/L%02u", log->dir, level);
    int flags = (log->rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    int fd = open(p, flags);
    if (fd < 0 && errno == ENOENT && create && !log->rdonly) {
        fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            uint8_t hdr[AUDIT__TREE_HDR];
            memcpy(hdr, AUDIT__TREE_MAGIC, 8);
            audit__le32(hdr + 8, 1);
            audit__le32(hdr + 12, level);
            int rc = audit__pwrite(fd, hdr, sizeof hdr, 0);
            if (rc == 0) {
                rc = audit__fdatasync(fd);
            }
            if (rc == 0) {
                char td[PATH_MAX_LEN];
                snprintf(td, sizeof td, "%s/tree", log->dir);
                rc = audit__fsync_dir(td);
            }
            if (rc != 0) {
                close(fd);
                unlink(p); /* never leave a level file without its header */
                return errno_err(err, rc, "cannot write", p);
            }
        }
    }
    if (fd < 0) {
        if (errno == ENOENT) {
            return 0; /* absent level: count 0 */
        }
        return errno_err(err, -errno, "cannot open", p);
    }
    struct stat st;
    uint8_t hdr[AUDIT__TREE_HDR];
    if (fstat(fd, &st) != 0 || pread(fd, hdr, sizeof hdr, 0) != (ssize_t) sizeof hdr ||
        memcmp(hdr, AUDIT__TREE_MAGIC, 8) != 0 || audit__rd32(hdr + 12) != level) {
        close(fd);
        /* the cache is unreadable: the caller rebuilds it */
        return dbao_err_set(err, DBAO_EFORMAT, "tree/L%02u: bad header", level);
    }
    if (audit__rd32(hdr + 8) != 1) {
        close(fd);
        /* 0: a header torn by a crash (rebuilt by the caller); anything else is newer */
        return dbao_err_set(err, audit__rd32(hdr + 8) == 0 ? DBAO_EFORMAT : DBAO_ENOTSUP,
                            "tree/L%02u: unsupported version", level);
    }
    log->tree_fd[level] = fd;
    atomic_store(&log->tree_count[level], ((uint64_t) st.st_size - AUDIT__TREE_HDR) / 32);
    return 0;
}

static int
tree_node_emit(void *arg, unsigned level, uint64_t index, const uint8_t hash[AUDIT_HASH_LEN])
{
    audit_log *log = arg;
    (void) index;
    audit__buf_put(&log->tree_pending[level], hash, AUDIT_HASH_LEN);
    return log->tree_pending[level].rc;
}

/* tree_flush writes the pending nodes of every level. Writer (or recovery) only. */
static int
tree_flush(audit_log *log, dbao_err *err)
{
    for (unsigned l = 0; l < TREE_LEVELS; l++) {
        audit__buf *b = &log->tree_pending[l];
        if (b->rc != 0) {
            return dbao_err_set(err, b->rc, "tree: out of memory");
        }
        if (b->len == 0) {
            continue;
        }
        int rc = tree_open_level(log, l, true, err);
        if (rc != 0) {
            return rc;
        }
        uint64_t cnt = atomic_load(&log->tree_count[l]);
        rc = audit__pwrite(log->tree_fd[l], b->p, b->len, AUDIT__TREE_HDR + cnt * 32);
        if (rc != 0) {
            return errno_err(err, rc, "cannot write", "tree");
        }
        log->tree_dirty[l] = true;
        atomic_store_explicit(&log->tree_count[l], cnt + b->len / 32, memory_order_release);
        b->len = 0;
    }
    return 0;
}

static int
tree_sync(audit_log *log, dbao_err *err)
{
    for (unsigned l = 0; l < TREE_LEVELS; l++) {
        if (log->tree_dirty[l]) {
            int rc = audit__fdatasync(log->tree_fd[l]);
            if (rc != 0) {
                return errno_err(err, rc, "cannot sync", "tree");
            }
            log->tree_dirty[l] = false;
        }
    }
    return 0;
}

/* ---- reading records ---------------------------------------------------------------------- */

/* seg_find returns the segment holding `index` (caller holds segs_mu for reading). */
static seg *
seg_find(audit_log *log, uint64_t index)
{
    size_t lo = 0, hi = log->nsegs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (log->segs[mid]->first <= index) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if (log->nsegs == 0 || log->segs[lo]->first > index) {
        return NULL;
    }
    return log->segs[lo];
}

/* record_at finds record `index` in its segment's map: *rec and *len, *off of the frame. */
static int
record_at(audit_log *log, uint64_t index, const uint8_t **rec, uint32_t *len, uint64_t *off,
          const char **segname, dbao_err *err)
{
    if (index < log->first) {
        return dbao_err_set(err, DBAO_ERANGE,
                            "record %" PRIu64 " was archived to %s (records below %" PRIu64
                            " are kept there)",
                            index, log->archive, log->first);
    }
    seg *s = seg_find(log, index);
    if (s == NULL || index - s->first >= s->count) {
        return dbao_err_set(err, DBAO_ERANGE, "record %" PRIu64 " does not exist", index);
    }
    uint64_t k = (index - s->first) >> SPARSE_SHIFT;
    uint64_t o = s->sparse[k];
    uint64_t i = s->first + (k << SPARSE_SHIFT);
    for (;;) {
        if (o + AUDIT__FRAME_OVERHEAD > s->cap) {
            return dbao_err_set(err, DBAO_EVERIFY, "%s: frame of record %" PRIu64 " is damaged",
                                s->name, index);
        }
        uint32_t flen = audit__rd32(s->map + o);
        if (flen == 0 || flen > AUDIT_RECORD_MAX || o + AUDIT__FRAME_OVERHEAD + flen > s->cap) {
            return dbao_err_set(err, DBAO_EVERIFY, "%s: frame of record %" PRIu64 " is damaged",
                                s->name, i);
        }
        if (i == index) {
            const uint8_t *f = s->map + o;
            if (audit__rd64(f + 4) != index ||
                audit__rd32(f + 12 + flen) != audit__crc32c(0, f, 12 + (size_t) flen)) {
                return dbao_err_set(err, DBAO_EVERIFY,
                                    "%s: frame of record %" PRIu64 " at offset %" PRIu64
                                    " fails its check",
                                    s->name, index, o);
            }
            *rec = f + 12;
            *len = flen;
            if (off) {
                *off = o;
            }
            if (segname) {
                *segname = s->name;
            }
            return 0;
        }
        o += AUDIT__FRAME_OVERHEAD + flen;
        i++;
    }
}

uint64_t
audit_log_size(const audit_log *log)
{
    return atomic_load_explicit(&((audit_log *) log)->size, memory_order_acquire);
}

int
audit_log_get(audit_log *log, uint64_t index, uint8_t *out, size_t cap, size_t *len, dbao_err *err)
{
    if (index >= audit_log_size(log)) {
        return dbao_err_set(err, DBAO_ERANGE,
                            "record %" PRIu64 " does not exist (log size %" PRIu64 ")", index,
                            audit_log_size(log));
    }
    pthread_rwlock_rdlock(&log->segs_mu);
    const uint8_t *rec;
    uint32_t rlen;
    int rc = record_at(log, index, &rec, &rlen, NULL, NULL, err);
    if (rc == 0) {
        if (rlen > cap) {
            rc = dbao_err_set(err, DBAO_ERANGE, "buffer too small for record %" PRIu64, index);
        } else {
            memcpy(out, rec, rlen);
            *len = rlen;
        }
    }
    pthread_rwlock_unlock(&log->segs_mu);
    return rc;
}

int
audit_log_hash(void *arg, uint8_t out[AUDIT_HASH_LEN], unsigned level, uint64_t index)
{
    audit_log *log = arg;
    if (level >= TREE_LEVELS) {
        return DBAO_EINVAL;
    }
    if (index < atomic_load_explicit(&log->tree_count[level], memory_order_acquire) &&
        log->tree_fd[level] >= 0) {
        ssize_t n =
            pread(log->tree_fd[level], out, AUDIT_HASH_LEN, (off_t) (AUDIT__TREE_HDR + index * 32));
        if (n == AUDIT_HASH_LEN) {
            return 0;
        }
        return DBAO_EIO;
    }
    if (level > 0) {
        return DBAO_ENOTSUP;
    }
    /* a leaf the cache does not hold yet (read-only logs): hash the record */
    pthread_rwlock_rdlock(&log->segs_mu);
    const uint8_t *rec;
    uint32_t rlen;
    int rc = record_at(log, index, &rec, &rlen, NULL, NULL, NULL);
    if (rc == 0) {
        audit_leaf_hash(out, rec, rlen);
    }
    pthread_rwlock_unlock(&log->segs_mu);
    return rc;
}

int
audit_log_prove_inclusion(audit_log *log, uint64_t index, uint64_t size, uint8_t *proof,
                          size_t *num, dbao_err *err)
{
    if (size > audit_log_size(log) || index >= size) {
        return dbao_err_set(err, DBAO_ERANGE,
                            "no inclusion proof for index %" PRIu64 " in a tree of %" PRIu64
                            " (log size %" PRIu64 ")",
                            index, size, audit_log_size(log));
    }
    int rc = audit_merkle_inclusion_proof(proof, num, index, size, audit_log_hash, log);
    if (rc != 0) {
        return dbao_err_set(err, rc, "cannot read the tree for the proof");
    }
    return 0;
}

int
audit_log_prove_consistency(audit_log *log, uint64_t size1, uint64_t size2, uint8_t *proof,
                            size_t *num, dbao_err *err)
{
    if (size2 > audit_log_size(log) || size1 > size2) {
        return dbao_err_set(err, DBAO_ERANGE,
                            "no consistency proof from %" PRIu64 " to %" PRIu64
                            " (log size %" PRIu64 ")",
                            size1, size2, audit_log_size(log));
    }
    int rc = audit_merkle_consistency_proof(proof, num, size1, size2, audit_log_hash, log);
    if (rc != 0) {
        return dbao_err_set(err, rc, "cannot read the tree for the proof");
    }
    return 0;
}

/* ---- checkpoints ------------------------------------------------------------------------ */

typedef struct ckp_last {
    const char *note;
    size_t len;
    uint64_t offset;
    size_t count;
} ckp_last;

static int
ckp_last_cb(void *arg, const char *note, size_t len, uint64_t offset)
{
    ckp_last *l = arg;
    l->note = note;
    l->len = len;
    l->offset = offset;
    l->count++;
    return 0;
}

/* ckp_load reads the checkpoint file; sets the latest checkpoint. Read-write logs cut a torn
 * tail off; a damaged frame followed by valid ones is refused. */
static int
ckp_load(audit_log *log, dbao_err *err)
{
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof p, "%s/checkpoints", log->dir);
    if (log->ckp_fd < 0) {
        log->ckp_fd = open(p, (log->rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (log->ckp_fd < 0) {
            return errno_err(err, -errno, "cannot open", p);
        }
    }
    struct stat st;
    if (fstat(log->ckp_fd, &st) != 0) {
        return errno_err(err, -errno, "cannot stat", p);
    }
    size_t len = (size_t) st.st_size;
    uint8_t *buf = dbao_malloc(len ? len : 1);
    if (buf == NULL) {
        return DBAO_ENOMEM;
    }
    ssize_t n = pread(log->ckp_fd, buf, len, 0);
    if (n != (ssize_t) len) {
        dbao_free(buf);
        return errno_err(err, -EIO, "cannot read", p);
    }
    ckp_last last = {0};
    uint64_t end = 0;
    bool bad = false;
    dbao_err e1;
    int rc = audit__ckp_scan(buf, len, ckp_last_cb, &last, &end, &bad, &e1);
    if (rc != 0) {
        dbao_free(buf);
        return dbao_err_set(err, rc, "checkpoints: %s", e1.msg);
    }
    if (bad && !log->rdonly) {
        /* a torn append of the last checkpoint (it was never served): cut it off */
        rc = audit__ftruncate(log->ckp_fd, end);
        if (rc == 0) {
            rc = audit__fdatasync(log->ckp_fd);
        }
        if (rc != 0) {
            dbao_free(buf);
            return errno_err(err, rc, "cannot truncate", p);
        }
        snprintf(log->recovery + strlen(log->recovery),
                 sizeof log->recovery - strlen(log->recovery),
                 "removed a torn checkpoint append at offset %" PRIu64 "; ", end);
    }
    log->ckp_end = end;
    if (last.count > 0) {
        audit_checkpoint cp;
        dbao_err e2;
        if (log->num_trusted > 0) {
            rc = audit_checkpoint_open(&cp, last.note, last.len, log->trusted, log->num_trusted,
                                       NULL, &e2);
        } else {
            rc = audit_checkpoint_parse_unverified(&cp, last.note, last.len, &e2);
        }
        if (rc != 0) {
            dbao_free(buf);
            return dbao_err_set(err, rc == DBAO_EVERIFY ? DBAO_EVERIFY : DBAO_EFORMAT,
                                "checkpoints: the latest checkpoint (offset %" PRIu64
                                ") does not verify: %s",
                                last.offset, e2.msg);
        }
        if (strcmp(cp.origin, log->cfg.origin) != 0) {
            dbao_free(buf);
            return dbao_err_set(err, DBAO_EVERIFY,
                                "checkpoints: the latest checkpoint names another log's origin");
        }
        if (log->num_signers > 0) {
            audit_checkpoint c2;
            log->ckp_foreign = audit_checkpoint_open(&c2, last.note, last.len, log->signers,
                                                     log->num_signers, NULL, NULL) != 0;
        }
        char *note = dbao_malloc(last.len + 1);
        if (note == NULL) {
            dbao_free(buf);
            return DBAO_ENOMEM;
        }
        memcpy(note, last.note, last.len);
        note[last.len] = '\0';
        pthread_mutex_lock(&log->ckp_mu);
        dbao_free(log->ckp_note);
        log->ckp_note = note;
        log->ckp_note_len = last.len;
        log->ckp = cp;
        log->have_ckp = true;
        pthread_mutex_unlock(&log->ckp_mu);
    }
    dbao_free(buf);
    return 0;
}

int
audit_log_checkpoint_latest(audit_log *log, char **note, size_t *note_len, audit_checkpoint *cp,
                            dbao_err *err)
{
    pthread_mutex_lock(&log->ckp_mu);
    if (!log->have_ckp) {
        pthread_mutex_unlock(&log->ckp_mu);
        return dbao_err_set(err, DBAO_ERANGE, "the log has no checkpoint yet");
    }
    if (cp) {
        *cp = log->ckp;
    }
    int rc = 0;
    if (note) {
        *note = dbao_malloc(log->ckp_note_len + 1);
        if (*note == NULL) {
            rc = DBAO_ENOMEM;
        } else {
            memcpy(*note, log->ckp_note, log->ckp_note_len + 1);
            if (note_len) {
                *note_len = log->ckp_note_len;
            }
        }
    }
    pthread_mutex_unlock(&log->ckp_mu);
    return rc;
}

/* ckp_cut signs and appends a checkpoint for the current size (writer thread, or open). */
static int
ckp_cut(audit_log *log, dbao_err *err)
{
    uint64_t size = audit_frontier_size(&log->frontier);
    if (log->have_ckp && log->ckp.size == size && !log->ckp_foreign) {
        return 0;
    }
    int rc = tree_sync(log, err);
    if (rc != 0) {
        return rc;
    }
    audit_checkpoint cp = {0};
    snprintf(cp.origin, sizeof cp.origin, "%s", log->cfg.origin);
    cp.size = size;
    audit_frontier_root(&log->frontier, cp.root);
    if (log->have_ckp) {
        /* never sign a tree that does not extend the previous checkpoint */
        uint8_t proof[AUDIT_PROOF_MAX * AUDIT_HASH_LEN];
        size_t num = 0;
        dbao_err e2;
        rc = audit_merkle_consistency_proof(proof, &num, log->ckp.size, size, audit_log_hash, log);
        if (rc == 0) {
            rc = audit_merkle_verify_consistency(log->ckp.size, size, log->ckp.root, cp.root, proof,
                                                 num, &e2);
        }
        if (rc != 0) {
            return dbao_err_set(err, DBAO_EVERIFY,
                                "refusing to sign: the tree of %" PRIu64
                                " records is not consistent with the checkpoint of %" PRIu64,
                                size, log->ckp.size);
        }
    }
    char *note = NULL;
    size_t note_len = 0;
    rc = audit_checkpoint_sign(&note, &note_len, &cp, log->signers, log->num_signers, err);
    if (rc != 0) {
        return rc;
    }
    uint8_t *frame = dbao_malloc(note_len + 8);
    if (frame == NULL) {
        dbao_free(note);
        return DBAO_ENOMEM;
    }
    audit__le32(frame, (uint32_t) note_len);
    audit__le32(frame + 4, audit__crc32c(0, note, note_len));
    memcpy(frame + 8, note, note_len);
    rc = audit__pwrite(log->ckp_fd, frame, note_len + 8, log->ckp_end);
    if (rc == 0) {
        rc = audit__fdatasync(log->ckp_fd);
    }
    dbao_free(frame);
    if (rc != 0) {
        dbao_free(note);
        return errno_err(err, rc, "cannot append to", "checkpoints");
    }
    log->ckp_end += note_len + 8;
    pthread_mutex_lock(&log->ckp_mu);
    dbao_free(log->ckp_note);
    log->ckp_note = note;
    log->ckp_note_len = note_len;
    log->ckp = cp;
    log->have_ckp = true;
    log->ckp_foreign = false;
    log->ckp_time_ns = audit_now_ns();
    log->ckp_mono_ns = mono_ns();
    pthread_mutex_unlock(&log->ckp_mu);
    return 0;
}

/* ---- the writer ---------------------------------------------------------------------------- */

static size_t
req_bytes(const audit_log_req *r)
{
    size_t b = 0;
    for (size_t i = 0; i < r->num; i++) {
        b += AUDIT__FRAME_OVERHEAD + r->lens[i];
    }
    return b;
}

static void
req_complete(audit_log_req *r, int status, uint64_t first)
{
    dbao_free(r->leaves_);
    r->leaves_ = NULL;
    r->status = status;
    r->first_index = first;
    r->next_ = NULL;
    r->done(r);
}

/* seal_segment writes the seal of a full segment: the next index and the root there. */
static int
seal_segment(audit_log *log, seg *s, dbao_err *err)
{
    if (s->sealed) {
        return 0;
    }
    uint64_t next = s->first + s->count;
    uint8_t seal[AUDIT__SEAL_LEN], root[AUDIT_HASH_LEN];
    audit_frontier_root(&log->frontier, root);
    audit__seal_put(seal, next, root);
    int rc = audit__pwrite(s->fd, seal, sizeof seal, s->end);
    if (rc == 0) {
        rc = audit__fdatasync(s->fd);
    }
    if (rc != 0) {
        return errno_err(err, rc, "cannot seal", s->name);
    }
    s->end += AUDIT__SEAL_LEN;
    s->sealed = true;
    return 0;
}

/* seal_and_roll seals the last segment and starts the next one. */
static int
seal_and_roll(audit_log *log, dbao_err *err)
{
    seg *s = log->segs[log->nsegs - 1];
    seg *ns = NULL;
    int rc = seg_create(&ns, log, s->first + s->count, s, err);
    if (rc != 0) {
        return rc;
    }
    pthread_rwlock_wrlock(&log->segs_mu);
    rc = segs_push(log, ns);
    pthread_rwlock_unlock(&log->segs_mu);
    if (rc != 0) {
        seg_free(ns);
        return rc;
    }
    return 0;
}

/* write_alarm records the failure in the reserve of the current segment, best effort. */
static void
write_alarm(audit_log *log, int code, const char *what)
{
    if (log->nsegs == 0 || log->alarm_written) {
        return;
    }
    log->alarm_written = true;
    seg *s = log->segs[log->nsegs - 1];
    if (s->sealed) {
        return;
    }
    audit_record r;
    audit_record_init(&r);
    r.time_ns = audit_now_ns();
    if (audit_uuid7_generate(r.event_id, r.time_ns) != 0) {
        return;
    }
    snprintf(r.subject.id, sizeof r.subject.id, "dengbao-audit");
    snprintf(r.event_type, sizeof r.event_type, "audit.alarm");
    snprintf(r.action, sizeof r.action, "storage.failure");
    snprintf(r.object, sizeof r.object, "%s", s->name);
    snprintf(r.source, sizeof r.source, "audit");
    r.result = AUDIT_RESULT_FAILURE;
    r.code = code;
    char details[400];
    char safe[256];
    size_t j = 0;
    for (size_t i = 0; what[i] && j < sizeof safe - 1; i++) {
        char c = what[i];
        safe[j++] = (c == '"' || c == '\\' || (unsigned char) c < 0x20) ? '_' : c;
    }
    safe[j] = '\0';
    snprintf(details, sizeof details, "{\"error\":\"%s\"}", safe);
    uint8_t rec[AUDIT_RECORD_MAX];
    size_t rlen = 0;
    if (audit_record_set_details(&r, details, strlen(details), NULL) != 0 ||
        audit_record_encode(&r, rec, &rlen, sizeof rec, NULL) != 0) {
        audit_record_cleanup(&r);
        return;
    }
    audit_record_cleanup(&r);
    uint64_t index = s->first + s->count;
    if (s->end + AUDIT__FRAME_OVERHEAD + rlen + AUDIT__SEAL_LEN > s->cap) {
        return;
    }
    uint8_t frame[AUDIT_RECORD_MAX + AUDIT__FRAME_OVERHEAD];
    size_t flen = audit__frame_put(frame, index, rec, (uint32_t) rlen);
    /* Bypass the fault layer's byte budget: the reserve is already allocated. */
    if (pwrite(s->fd, frame, flen, (off_t) s->end) != (ssize_t) flen || fdatasync(s->fd) != 0) {
        return;
    }
    uint8_t leaf[AUDIT_HASH_LEN];
    audit_leaf_hash(leaf, rec, rlen);
    if (audit_frontier_append(&log->frontier, leaf, tree_node_emit, log) != 0) {
        return;
    }
    dbao_err e2;
    if (tree_flush(log, &e2) != 0) {
        return;
    }
    pthread_rwlock_wrlock(&log->segs_mu);
    int rc = seg_sparse_add(s, index, s->end);
    if (rc == 0) {
        s->end += flen;
        s->count++;
    }
    pthread_rwlock_unlock(&log->segs_mu);
    if (rc == 0) {
        atomic_store_explicit(&log->size, index + 1, memory_order_release);
    }
}

static void
fail_all(audit_log *log, audit_log_req *list, int code)
{
    (void) log;
    while (list != NULL) {
        audit_log_req *n = list->next_;
        req_complete(list, code, 0);
        list = n;
    }
}

/* write_batch makes the requests in `list` durable (all of them or, on failure, none). */
static int
write_batch(audit_log *log, audit_log_req *list)
{
    dbao_err err;
    dbao_err_clear(&err);
    while (list != NULL) {
        seg *s = log->segs[log->nsegs - 1];
        uint64_t room = s->sealed ? 0 : s->cap - SEG_RESERVE - s->end;
        /* take requests while they fit */
        size_t wlen = 0;
        audit_log_req *last = NULL, *r = list;
        while (r != NULL) {
            size_t b = req_bytes(r);
            if (wlen + b > room || (last != NULL && wlen + b > AUDIT__BATCH_BYTES_MAX)) {
                break;
            }
            wlen += b;
            last = r;
            r = r->next_;
        }
        if (last == NULL) {
            int rc = seal_and_roll(log, &err);
            if (rc != 0) {
                log_fail(log, rc, "%s", err.msg);
                write_alarm(log, rc, log->fail_msg);
                fail_all(log, list, atomic_load(&log->failed));
                return rc;
            }
            continue;
        }
        audit_log_req *rest = last->next_;
        last->next_ = NULL;
        if (wlen > log->wcap) {
            size_t ncap = wlen + (wlen >> 1);
            uint8_t *nb = realloc(log->wbuf, ncap);
            if (nb == NULL) {
                log_fail(log, DBAO_ENOMEM, "out of memory for a batch");
                fail_all(log, list, DBAO_ENOMEM);
                fail_all(log, rest, DBAO_ENOMEM);
                return DBAO_ENOMEM;
            }
            log->wbuf = nb;
            log->wcap = ncap;
        }
        uint64_t index = s->first + s->count;
        uint64_t first = index;
        size_t o = 0, nsp = 0;
        uint64_t nrec = 0;
        size_t spneed = wlen / AUDIT__FRAME_OVERHEAD / SPARSE + 2;
        if (spneed > log->spcap) {
            uint64_t *np = realloc(log->spbuf, spneed * 2 * sizeof *np);
            if (np == NULL) {
                log_fail(log, DBAO_ENOMEM, "out of memory for a batch");
                fail_all(log, list, DBAO_ENOMEM);
                fail_all(log, rest, DBAO_ENOMEM);
                return DBAO_ENOMEM;
            }
            log->spbuf = np;
            log->spcap = spneed * 2;
        }
        for (r = list; r != NULL; r = r->next_) {
            const uint8_t *d = r->data;
            for (size_t i = 0; i < r->num; i++) {
                if (((index - s->first) & (SPARSE - 1)) == 0) {
                    log->spbuf[nsp++] = s->end + o;
                }
                o += audit__frame_put(log->wbuf + o, index++, d, r->lens[i]);
                d += r->lens[i];
            }
            nrec += r->num;
        }
        int64_t t0 = mono_ns();
        int rc = audit__pwrite(s->fd, log->wbuf, wlen, s->end);
        if (rc == 0) {
            rc = audit__fdatasync(s->fd);
        }
        atomic_fetch_add(&log->st_fsync_ns, (uint64_t) (mono_ns() - t0));
        if (rc != 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "writing %s failed: %s", s->name, strerror(-rc));
            log_fail(log, rc == -ENOSPC ? -ENOSPC : DBAO_EIO, "%s", msg);
            /* The batch was not acknowledged; after a failed fdatasync its bytes may or may
             * not reach the disk. Blank them (best effort, outside the fault layer: this is
             * the failure path) so that the alarm record takes the first unacknowledged index
             * and recovery never resurrects records their producers were told failed. */
            uint8_t *zeros = calloc(1, wlen);
            if (zeros != NULL) {
                if (pwrite(s->fd, zeros, wlen, (off_t) s->end) != (ssize_t) wlen) {
                    /* the alarm below fails too, and the log stays failed */
                }
                free(zeros);
            }
            write_alarm(log, rc, msg);
            fail_all(log, list, atomic_load(&log->failed));
            fail_all(log, rest, atomic_load(&log->failed));
            return rc;
        }
        /* durable: extend the tree, then publish */
        for (r = list; r != NULL && rc == 0; r = r->next_) {
            for (size_t i = 0; i < r->num && rc == 0; i++) {
                rc = audit_frontier_append(&log->frontier, r->leaves_ + i * AUDIT_HASH_LEN,
                                           tree_node_emit, log);
            }
        }
        if (rc == 0) {
            rc = tree_flush(log, &err);
        }
        pthread_rwlock_wrlock(&log->segs_mu);
        for (size_t i = 0; i < nsp && rc == 0; i++) {
            rc = sparse_push(s, log->spbuf[i]);
        }
        s->end += wlen;
        s->count += nrec;
        pthread_rwlock_unlock(&log->segs_mu);
        atomic_store_explicit(&log->size, first + nrec, memory_order_release);
        atomic_fetch_add(&log->st_batches, 1);
        atomic_fetch_add(&log->st_appended, nrec);
        atomic_fetch_add(&log->st_bytes, wlen);
        /* The records are durable whatever happened to the cache: acknowledge them. */
        uint64_t fi = first;
        for (r = list; r != NULL;) {
            audit_log_req *n = r->next_;
            uint64_t num = r->num;
            req_complete(r, 0, fi);
            fi += num;
            r = n;
        }
        if (rc != 0) {
            log_fail(log, rc, "tree cache update failed: %s", err.msg);
            write_alarm(log, rc, log->fail_msg);
            fail_all(log, rest, atomic_load(&log->failed));
            return rc;
        }
        list = rest;
    }
    return 0;
}

static void *
writer_main(void *arg)
{
    audit_log *log = arg;
    /* Wake-up without preemption: a producer's signal makes the writer runnable but does not
     * switch the producer's core to it at once (SCHED_BATCH wakees never preempt). On a shared
     * core the producer keeps running until it blocks or its slice ends, and the records it
     * queued meanwhile go out in one batch (one pwrite, one fdatasync) instead of a context
     * switch pair per record. Only the moment the writer runs changes, not what it does:
     * nothing is completed before its fdatasync, and nothing queued is dropped. Best effort. */
    {
        struct sched_param sp = {.sched_priority = 0};
        (void) pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    }
    pthread_mutex_lock(&log->q_mu);
    for (;;) {
        if (log->abandon) {
            break;
        }
        uint64_t size = audit_frontier_size(&log->frontier);
        bool need_ckp = !log->have_ckp ? size > 0 : log->ckp.size != size;
        int64_t now = mono_ns();
        int64_t due = log->ckp_mono_ns + (int64_t) log->cfg.checkpoint_ms * 1000000;
        bool cut_now = log->cut_requested != log->cut_done ||
                       (need_ckp && (now >= due || size - (log->have_ckp ? log->ckp.size : 0) >=
                                                       log->cfg.checkpoint_records));
        if (cut_now && atomic_load(&log->failed) == 0) {
            uint64_t want = log->cut_requested;
            pthread_mutex_unlock(&log->q_mu);
            dbao_err err;
            int rc = ckp_cut(log, &err);
            if (rc != 0) {
                log_fail(log, rc, "checkpoint failed: %s", err.msg);
                write_alarm(log, rc, log->fail_msg);
            }
            pthread_mutex_lock(&log->q_mu);
            log->cut_rc = rc;
            log->cut_done = want;
            pthread_cond_broadcast(&log->cut_cv);
            continue;
        }
        if (log->cut_requested != log->cut_done) {
            log->cut_rc = atomic_load(&log->failed);
            log->cut_done = log->cut_requested;
            pthread_cond_broadcast(&log->cut_cv);
        }
        if (log->q_head == NULL) {
            if (log->closing) {
                break;
            }
            if (need_ckp) {
                struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
                pthread_cond_timedwait(&log->q_cv, &log->q_mu, &ts);
            } else {
                pthread_cond_wait(&log->q_cv, &log->q_mu);
            }
            continue;
        }
        if (log->cfg.batch_delay_us > 0 && log->q_records < log->cfg.batch_max && !log->closing) {
            int64_t until = mono_ns() + (int64_t) log->cfg.batch_delay_us * 1000;
            struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
            while (log->q_records < log->cfg.batch_max && !log->closing && !log->abandon) {
                if (pthread_cond_timedwait(&log->q_cv, &log->q_mu, &ts) == ETIMEDOUT) {
                    break;
                }
            }
            if (log->abandon) {
                break;
            }
        }
        /* take whole requests up to batch_max records (at least one) */
        audit_log_req *head = log->q_head, *tail = head;
        uint64_t n = head->num;
        while (tail->next_ != NULL && n + tail->next_->num <= log->cfg.batch_max) {
            tail = tail->next_;
            n += tail->num;
        }
        log->q_head = tail->next_;
        if (log->q_head == NULL) {
            log->q_tail = NULL;
        }
        log->q_records -= n;
        tail->next_ = NULL;
        pthread_mutex_unlock(&log->q_mu);
        int failed = atomic_load(&log->failed);
        if (failed != 0) {
            fail_all(log, head, failed);
        } else {
            write_batch(log, head);
        }
        pthread_mutex_lock(&log->q_mu);
    }
    pthread_mutex_unlock(&log->q_mu);
    return NULL;
}

int
audit_log_submit(audit_log *log, audit_log_req *req)
{
    if (log == NULL || req == NULL || req->done == NULL || req->num == 0 || req->data == NULL ||
        req->lens == NULL) {
        return DBAO_EINVAL;
    }
    if (log->rdonly) {
        return DBAO_EINVAL;
    }
    if (req->num > AUDIT_REQ_RECORDS_MAX) {
        return DBAO_ERANGE;
    }
    int failed = atomic_load(&log->failed);
    if (failed != 0) {
        return failed;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < req->num; i++) {
        if (req->lens[i] == 0 || req->lens[i] > AUDIT_RECORD_MAX) {
            return DBAO_EINVAL;
        }
        bytes += AUDIT__FRAME_OVERHEAD + req->lens[i];
    }
    if (bytes > AUDIT_REQ_BYTES_MAX ||
        bytes > log->cfg.segment_bytes - AUDIT__SEG_HDR - SEG_RESERVE) {
        return DBAO_ERANGE;
    }
    uint8_t *leaves = dbao_malloc(req->num * AUDIT_HASH_LEN);
    const uint8_t **msgs = dbao_malloc(req->num * sizeof *msgs);
    size_t *lens = dbao_malloc(req->num * sizeof *lens);
    if (leaves == NULL || msgs == NULL || lens == NULL) {
        dbao_free(leaves);
        dbao_free(msgs);
        dbao_free(lens);
        return DBAO_ENOMEM;
    }
    const uint8_t *d = req->data;
    for (size_t i = 0; i < req->num; i++) {
        msgs[i] = d;
        lens[i] = req->lens[i];
        d += req->lens[i];
    }
    static const uint8_t zero = 0;
    gm_sm3_hash_many(leaves, msgs, lens, req->num, &zero, 1);
    dbao_free(msgs);
    dbao_free(lens);
    req->leaves_ = leaves;
    req->next_ = NULL;
    req->status = 0;
    pthread_mutex_lock(&log->q_mu);
    if (log->closing || log->abandon) {
        pthread_mutex_unlock(&log->q_mu);
        dbao_free(leaves);
        req->leaves_ = NULL;
        return DBAO_EINVAL;
    }
    if (log->q_tail != NULL) {
        log->q_tail->next_ = req;
    } else {
        log->q_head = req;
    }
    log->q_tail = req;
    log->q_records += req->num;
    pthread_cond_signal(&log->q_cv);
    pthread_mutex_unlock(&log->q_mu);
    return 0;
}

typedef struct sync_wait {
    audit_log_req req;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} sync_wait;

static void
sync_done(audit_log_req *req)
{
    sync_wait *w = (sync_wait *) req;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int
audit_log_append(audit_log *log, const uint8_t *data, const uint32_t *lens, size_t num,
                 uint64_t *first_index, dbao_err *err)
{
    sync_wait w;
    memset(&w, 0, sizeof w);
    w.req.data = data;
    w.req.lens = lens;
    w.req.num = num;
    w.req.done = sync_done;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = audit_log_submit(log, &w.req);
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) {
            pthread_cond_wait(&w.cv, &w.mu);
        }
        pthread_mutex_unlock(&w.mu);
        rc = w.req.status;
        if (rc == 0 && first_index) {
            *first_index = w.req.first_index;
        }
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (rc != 0) {
        if (log != NULL && atomic_load(&log->failed) != 0) {
            return dbao_err_set(err, rc, "the audit log has failed and accepts no records: %s",
                                log->fail_msg);
        }
        return dbao_err_set(err, rc, "append refused: %s", dbao_strerror(rc));
    }
    return 0;
}

int
audit_log_append_record(audit_log *log, const audit_record *r, uint64_t *index, dbao_err *err)
{
    uint8_t *buf = dbao_malloc(AUDIT_RECORD_MAX);
    if (buf == NULL) {
        return DBAO_ENOMEM;
    }
    size_t len = 0;
    int rc = audit_record_encode(r, buf, &len, AUDIT_RECORD_MAX, err);
    if (rc == 0) {
        uint32_t l32 = (uint32_t) len;
        rc = audit_log_append(log, buf, &l32, 1, index, err);
    }
    dbao_free(buf);
    return rc;
}

int
audit_log_checkpoint_cut(audit_log *log, dbao_err *err)
{
    if (log->rdonly) {
        return dbao_err_set(err, DBAO_EINVAL, "the log is open read-only");
    }
    pthread_mutex_lock(&log->q_mu);
    uint64_t want = ++log->cut_requested;
    pthread_cond_signal(&log->q_cv);
    while (log->cut_done < want && !log->abandon) {
        pthread_cond_wait(&log->cut_cv, &log->q_mu);
    }
    int rc = log->cut_rc;
    pthread_mutex_unlock(&log->q_mu);
    if (rc != 0) {
        return dbao_err_set(err, rc, "checkpoint failed: %s", log->fail_msg);
    }
    return 0;
}

void
audit_log_get_stats(const audit_log *clog, audit_log_stats *st)
{
    audit_log *log = (audit_log *) clog;
    memset(st, 0, sizeof *st);
    st->size = audit_log_size(log);
    st->batches = atomic_load(&log->st_batches);
    st->appended = atomic_load(&log->st_appended);
    st->bytes = atomic_load(&log->st_bytes);
    st->fsync_ns_total = atomic_load(&log->st_fsync_ns);
    st->failed = atomic_load(&log->failed);
    pthread_mutex_lock(&log->ckp_mu);
    st->checkpoint_size = log->have_ckp ? log->ckp.size : 0;
    st->checkpoint_time_ns = log->ckp_time_ns;
    pthread_mutex_unlock(&log->ckp_mu);
}

const char *
audit__log_dir(const audit_log *log)
{
    return log->dir;
}

const char *
audit_log_recovery_note(const audit_log *log)
{
    return log->recovery[0] ? log->recovery : NULL;
}

/* ---- open: scanning and recovery ------------------------------------------------------------ */

static const char *
scan_why(int stop)
{
    switch (stop) {
    case AUDIT__SCAN_TRUNCATED:
        return "a frame runs past the end of the file";
    case AUDIT__SCAN_BAD_LEN:
        return "a frame length is out of range";
    case AUDIT__SCAN_BAD_CRC:
        return "a frame fails its CRC";
    case AUDIT__SCAN_BAD_INDEX:
        return "a frame carries the wrong index";
    case AUDIT__SCAN_BAD_SEAL:
        return "the seal is damaged";
    default:
        return "unexpected data";
    }
}

/* load_segments maps every segment and finds its records. Read-write: repairs a torn tail of
 * the last segment. */
static int
load_segments(audit_log *log, dbao_err *err)
{
    audit__seg_name *names = NULL;
    size_t n = 0;
    int rc = audit__seg_list(log->dir, !log->rdonly, &names, &n, err);
    if (rc != 0) {
        return rc;
    }
    if (n > 0 && !names[n - 1].valid) { /* other names sort last */
        rc = dbao_err_set(err, DBAO_EFORMAT, "seg/%s: unexpected file in the segment folder",
                          names[n - 1].name);
        free(names);
        return rc;
    }
    uint64_t expect = log->first;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint64_t first = names[i].first;
        if (first < log->first) {
            /* Pruned, left behind by a prune interrupted between its marker and its unlink:
             * the whole segment must lie below the mark (the next one starts at or below it). */
            bool below = i + 1 < n && names[i + 1].valid && names[i + 1].first <= log->first;
            if (!below) {
                rc = dbao_err_set(err, DBAO_EVERIFY,
                                  "seg/%s holds records that the pruned marker says were archived",
                                  names[i].name);
                break;
            }
            if (!log->rdonly) {
                char t[PATH_MAX_LEN + 64];
                snprintf(t, sizeof t, "%s/seg/%s", log->dir, names[i].name);
                unlink(t);
            }
            continue;
        }
        seg *s = NULL;
        rc = seg_open(&s, log, names[i].name, first, err);
        if (rc != 0) {
            break;
        }
        if (s->first != expect) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "seg/%s starts at record %" PRIu64 " but %" PRIu64
                              " was expected: records are missing",
                              names[i].name, s->first, expect);
            seg_free(s);
            break;
        }
        audit__scan sc;
        bool last = i + 1 == n;
        rc = audit__seg_scan(s->map, s->cap, AUDIT__SEG_HDR, s->first, sparse_cb, s, last, &sc);
        if (rc != 0) {
            seg_free(s);
            break;
        }
        s->count = sc.next_index - s->first;
        s->end = sc.end;
        if (sc.stop == AUDIT__SCAN_SEALED) {
            s->sealed = true;
            if (sc.nonzero_end > sc.end) {
                rc = dbao_err_set(err, DBAO_EVERIFY, "%s: data after the seal at offset %" PRIu64,
                                  s->name, sc.end);
            }
        } else if (!last) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "%s is damaged at offset %" PRIu64 " (record %" PRIu64
                              "): %s; it should end with a seal",
                              s->name, sc.stop_offset, sc.next_index,
                              sc.stop == AUDIT__SCAN_END ? "the data ends without a seal"
                                                         : scan_why(sc.stop));
        } else if (sc.stop != AUDIT__SCAN_END && sc.stop != AUDIT__SCAN_EOF) {
            /* damaged end of the last segment: torn tail or damage? */
            uint64_t found = audit__seg_resync(s->map, sc.nonzero_end, sc.end + 1, sc.next_index);
            if (found != UINT64_MAX) {
                rc = dbao_err_set(err, DBAO_EVERIFY,
                                  "%s is damaged at offset %" PRIu64 " (record %" PRIu64
                                  "): %s, and valid records follow at offset %" PRIu64,
                                  s->name, sc.end, sc.next_index, scan_why(sc.stop), found);
            } else if (log->rdonly) {
                /* a writer may be in the middle of a batch: stop here */
            } else {
                size_t zlen = (size_t) (sc.nonzero_end - sc.end);
                uint8_t *zeros = calloc(1, zlen);
                if (zeros == NULL) {
                    rc = DBAO_ENOMEM;
                } else {
                    rc = audit__pwrite(s->fd, zeros, zlen, sc.end);
                    if (rc == 0) {
                        rc = audit__fdatasync(s->fd);
                    }
                    free(zeros);
                    if (rc != 0) {
                        rc = errno_err(err, rc, "cannot repair", s->name);
                    } else {
                        size_t l = strlen(log->recovery);
                        snprintf(log->recovery + l, sizeof log->recovery - l,
                                 "cut a torn tail of %zu bytes from %s at offset %" PRIu64
                                 " (never acknowledged); ",
                                 zlen, s->name, sc.end);
                    }
                }
            }
        } else if (sc.nonzero_end > sc.end && !log->rdonly) {
            /* a clean end followed by stray bytes: a torn frame whose length was lost */
            uint64_t found = audit__seg_resync(s->map, sc.nonzero_end, sc.end + 1, sc.next_index);
            if (found != UINT64_MAX) {
                rc = dbao_err_set(err, DBAO_EVERIFY,
                                  "%s: valid records at offset %" PRIu64
                                  " follow the end of the data at %" PRIu64,
                                  s->name, found, sc.end);
            } else {
                size_t zlen = (size_t) (sc.nonzero_end - sc.end);
                uint8_t *zeros = calloc(1, zlen);
                rc = zeros == NULL ? DBAO_ENOMEM : audit__pwrite(s->fd, zeros, zlen, sc.end);
                if (rc == 0) {
                    rc = audit__fdatasync(s->fd);
                }
                free(zeros);
                if (rc != 0) {
                    rc = rc == DBAO_ENOMEM ? rc : errno_err(err, rc, "cannot repair", s->name);
                }
            }
        }
        if (rc == 0) {
            rc = segs_push(log, s);
        }
        if (rc != 0) {
            seg_free(s);
            break;
        }
        expect = s->first + s->count;
        if (!s->sealed && !last) {
            break;
        }
    }
    free(names);
    if (rc == 0) {
        atomic_store(&log->size, expect);
    }
    return rc;
}

/* Hash source limited to the tree files (recovery must not fall back to the records). */
static int
tree_only_source(void *arg, uint8_t out[AUDIT_HASH_LEN], unsigned level, uint64_t index)
{
    audit_log *log = arg;
    if (index < atomic_load(&log->tree_count[level]) && log->tree_fd[level] >= 0) {
        return pread(log->tree_fd[level], out, 32, (off_t) (AUDIT__TREE_HDR + index * 32)) == 32
                   ? 0
                   : DBAO_EIO;
    }
    return level == 0 ? DBAO_EIO : DBAO_ENOTSUP;
}

/* tree_truncate drops every cached node beyond the tree of `size` leaves. */
static int
tree_truncate(audit_log *log, uint64_t size, dbao_err *err)
{
    for (unsigned l = 0; l < TREE_LEVELS; l++) {
        uint64_t keep = l < 64 ? size >> l : 0;
        if (log->tree_fd[l] < 0) {
            continue;
        }
        if (atomic_load(&log->tree_count[l]) > keep) {
            int rc = audit__ftruncate(log->tree_fd[l], AUDIT__TREE_HDR + keep * 32);
            if (rc != 0) {
                return errno_err(err, rc, "cannot truncate", "tree");
            }
            atomic_store(&log->tree_count[l], keep);
            log->tree_dirty[l] = true;
        }
    }
    return 0;
}

/* extend_tree hashes records [from, size) into the frontier and the tree files. */
static int
extend_tree(audit_log *log, uint64_t from, dbao_err *err)
{
    uint64_t size = audit_log_size(log);
    enum { CHUNK = 256 };
    const uint8_t *msgs[CHUNK];
    size_t lens[CHUNK];
    uint8_t leaves[CHUNK * AUDIT_HASH_LEN];
    static const uint8_t zero = 0;
    uint64_t i = from;
    while (i < size) {
        size_t k = 0;
        for (; k < CHUNK && i + k < size; k++) {
            uint32_t l32;
            int rc = record_at(log, i + k, &msgs[k], &l32, NULL, NULL, err);
            if (rc != 0) {
                return rc;
            }
            lens[k] = l32;
        }
        gm_sm3_hash_many(leaves, msgs, lens, k, &zero, 1);
        for (size_t j = 0; j < k; j++) {
            int rc = audit_frontier_append(&log->frontier, leaves + j * 32, tree_node_emit, log);
            if (rc != 0) {
                return dbao_err_set(err, rc, "tree rebuild failed");
            }
        }
        int rc = tree_flush(log, err);
        if (rc != 0) {
            return rc;
        }
        i += k;
    }
    return 0;
}

static int
recover_tree(audit_log *log, dbao_err *err)
{
    for (unsigned l = 0; l < TREE_LEVELS; l++) {
        dbao_err e2;
        int rc = tree_open_level(log, l, false, &e2);
        if (rc == DBAO_EFORMAT && log->rdonly) {
            rc = 0; /* a reader serves that level from lower ones (or the records) */
        } else if (rc == DBAO_EFORMAT) {
            /* an unreadable cache file: remove it, it is rebuilt below */
            char p[PATH_MAX_LEN];
            snprintf(p, sizeof p, "%s/tree/L%02u", log->dir, l);
            unlink(p);
            rc = 0;
        }
        if (rc != 0) {
            return dbao_err_set(err, rc, "%s", e2.msg);
        }
    }
    if (log->rdonly) {
        return 0;
    }
    uint64_t n = audit_log_size(log);
    uint64_t s = log->have_ckp ? log->ckp.size : 0;
    if (s > n) {
        return dbao_err_set(err, DBAO_EVERIFY,
                            "the log holds %" PRIu64 " records but its latest signed checkpoint "
                            "covers %" PRIu64 ": records %" PRIu64 "..%" PRIu64 " are missing",
                            n, s, n, s - 1);
    }
    bool cache_ok = false;
    if (s > 0) {
        uint8_t root[AUDIT_HASH_LEN];
        if (audit_merkle_root(root, s, tree_only_source, log) == 0 &&
            dbao_ct_memeq(root, log->ckp.root, AUDIT_HASH_LEN)) {
            cache_ok = true;
        }
    }
    if (!cache_ok && log->first > 0) {
        return dbao_err_set(err, DBAO_EVERIFY,
                            "the tree cache does not reproduce the latest signed checkpoint and "
                            "records below %" PRIu64 " are archived: restore tree/ from a backup "
                            "or the records from %s",
                            log->first, log->archive);
    }
    uint64_t base = cache_ok ? s : 0;
    int rc = tree_truncate(log, base, err);
    if (rc != 0) {
        return rc;
    }
    audit_frontier_init(&log->frontier);
    if (base > 0) {
        rc = audit_frontier_load(&log->frontier, base, tree_only_source, log);
        if (rc != 0) {
            return dbao_err_set(err, rc, "cannot load the tree frontier");
        }
    }
    if (!cache_ok && s > 0) {
        /* rebuild up to the checkpoint, then compare */
        uint64_t saved = audit_log_size(log);
        atomic_store(&log->size, s);
        rc = extend_tree(log, 0, err);
        atomic_store(&log->size, saved);
        if (rc != 0) {
            return rc;
        }
        uint8_t root[AUDIT_HASH_LEN];
        audit_frontier_root(&log->frontier, root);
        if (!dbao_ct_memeq(root, log->ckp.root, AUDIT_HASH_LEN)) {
            return dbao_err_set(err, DBAO_EVERIFY,
                                "the records disagree with the latest signed checkpoint (size "
                                "%" PRIu64 "): the root rebuilt from them differs; the log "
                                "was altered (run 'dengbao audit verify' for the first bad "
                                "record)",
                                s);
        }
        size_t l = strlen(log->recovery);
        snprintf(log->recovery + l, sizeof log->recovery - l,
                 "rebuilt the tree cache from the records; ");
        base = s;
    }
    rc = extend_tree(log, base, err);
    if (rc != 0) {
        return rc;
    }
    /* sealed segments carry the root at their end: check them */
    for (size_t i = 0; i < log->nsegs; i++) {
        seg *sg = log->segs[i];
        if (!sg->sealed) {
            continue;
        }
        audit__scan sc;
        uint64_t next = sg->first + sg->count;
        audit__seg_scan(sg->map, sg->cap, sg->end - AUDIT__SEAL_LEN, next, NULL, NULL, false, &sc);
        uint8_t root[AUDIT_HASH_LEN];
        rc = audit_merkle_root(root, next, audit_log_hash, log);
        if (rc != 0 || sc.stop != AUDIT__SCAN_SEALED ||
            !dbao_ct_memeq(root, sc.seal_root, AUDIT_HASH_LEN)) {
            return dbao_err_set(err, DBAO_EVERIFY,
                                "%s: the root in its seal differs from the tree of its records",
                                sg->name);
        }
    }
    return tree_sync(log, err);
}

static int
copy_keys(audit_log *log, const audit_log_open_opts *o, dbao_err *err)
{
    size_t nt = o->num_signers + o->num_trusted;
    if (o->num_signers > 0) {
        log->signers = calloc(o->num_signers, sizeof *log->signers);
        if (log->signers == NULL) {
            return DBAO_ENOMEM;
        }
        memcpy(log->signers, o->signers, o->num_signers * sizeof *log->signers);
        log->num_signers = o->num_signers;
    }
    if (nt > 0) {
        log->trusted = calloc(nt, sizeof *log->trusted);
        if (log->trusted == NULL) {
            return DBAO_ENOMEM;
        }
        size_t k = 0;
        for (size_t i = 0; i < o->num_signers; i++) {
            log->trusted[k++] = o->signers[i];
        }
        for (size_t i = 0; i < o->num_trusted; i++) {
            /* skip a trusted key equal to a signer (same name and public key) */
            bool dup = false;
            uint8_t a[GM_SM2_PUB_LEN], b[GM_SM2_PUB_LEN];
            gm_sm2_key_get_pub(o->trusted[i].key, a);
            for (size_t j = 0; j < o->num_signers; j++) {
                gm_sm2_key_get_pub(o->signers[j].key, b);
                if (strcmp(o->trusted[i].name, o->signers[j].name) == 0 &&
                    memcmp(a, b, sizeof a) == 0) {
                    dup = true;
                }
            }
            if (!dup) {
                log->trusted[k++] = o->trusted[i];
            }
        }
        log->num_trusted = k;
    }
    (void) err;
    return 0;
}

static void
log_free(audit_log *log)
{
    if (log == NULL) {
        return;
    }
    for (size_t i = 0; i < log->nsegs; i++) {
        seg_free(log->segs[i]);
    }
    free(log->segs);
    for (unsigned l = 0; l < TREE_LEVELS; l++) {
        audit__close(log->tree_fd[l]);
        audit__buf_cleanup(&log->tree_pending[l]);
    }
    audit__close(log->ckp_fd);
    if (log->lock_fd >= 0) {
        close(log->lock_fd);
    }
    dbao_free(log->ckp_note);
    free(log->wbuf);
    free(log->spbuf);
    free(log->signers);
    free(log->trusted);
    dbao_free(log->cfg_holder);
    free(log->dir);
    pthread_rwlock_destroy(&log->segs_mu);
    pthread_mutex_destroy(&log->ckp_mu);
    pthread_mutex_destroy(&log->q_mu);
    pthread_cond_destroy(&log->q_cv);
    pthread_cond_destroy(&log->cut_cv);
    free(log);
}

int
audit_log_open(audit_log **out, const char *dir, const audit_log_open_opts *opts, dbao_err *err)
{
    static const audit_log_open_opts none = {0};
    const audit_log_open_opts *o = opts ? opts : &none;
    *out = NULL;
    bool rdonly = (o->flags & AUDIT_LOG_READONLY) != 0;
    if (!rdonly && o->num_signers == 0) {
        return dbao_err_set(err, DBAO_EKEY, "opening a log for appending needs a signing key");
    }
    for (size_t i = 0; i < o->num_signers; i++) {
        if (o->signers[i].key == NULL || !gm_sm2_key_has_priv(o->signers[i].key)) {
            return dbao_err_set(err, DBAO_EKEY, "signer %zu has no private key", i);
        }
    }
    audit_log *log = calloc(1, sizeof *log);
    if (log == NULL) {
        return DBAO_ENOMEM;
    }
    log->lock_fd = -1;
    log->ckp_fd = -1;
    for (unsigned l = 0; l < TREE_LEVELS; l++) {
        log->tree_fd[l] = -1;
        audit__buf_init(&log->tree_pending[l], (size_t) 1 << 30);
    }
    pthread_rwlock_init(&log->segs_mu, NULL);
    pthread_mutex_init(&log->ckp_mu, NULL);
    pthread_mutex_init(&log->q_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->q_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&log->cut_cv, NULL);
    log->rdonly = rdonly;
    log->alarm = o->alarm;
    log->alarm_arg = o->alarm_arg;
    log->dir = strdup(dir);
    int rc = log->dir ? 0 : DBAO_ENOMEM;
    if (rc == 0) {
        rc = audit_log_read_config(dir, &log->cfg, &log->cfg_holder, err);
    }
    if (rc == 0) {
        rc = copy_keys(log, o, err);
    }
    if (rc == 0 && !rdonly) {
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof p, "%s/lock", dir);
        log->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (log->lock_fd < 0) {
            rc = errno_err(err, -errno, "cannot open", p);
        } else if (flock(log->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            rc = dbao_err_set(err, DBAO_EINVAL,
                              "%s is in use: another process holds its lock (auditd or an append)",
                              dir);
        }
    }
    if (rc == 0) {
        rc = audit__pruned_read(dir, &log->first, log->archive, sizeof log->archive, err);
    }
    if (rc == 0) {
        rc = load_segments(log, err);
    }
    if (rc == 0) {
        rc = ckp_load(log, err);
    }
    if (rc == 0) {
        rc = recover_tree(log, err);
    }
    if (rc == 0 && !rdonly && log->nsegs == 0) {
        seg *s = NULL;
        rc = seg_create(&s, log, 0, NULL, err);
        if (rc == 0) {
            rc = segs_push(log, s);
            if (rc != 0) {
                seg_free(s);
            }
        }
    }
    if (rc == 0 && !rdonly) {
        if (log->segs[log->nsegs - 1]->sealed) {
            rc = seal_and_roll(log, err);
        }
    }
    if (rc == 0 && !rdonly) {
        log->ckp_mono_ns = mono_ns();
        uint64_t size = audit_log_size(log);
        if ((size > 0 && (!log->have_ckp || log->ckp.size != size)) || log->ckp_foreign) {
            rc = ckp_cut(log, err); /* sign what recovery found, or re-sign after rotation */
        }
    }
    if (rc == 0 && !rdonly) {
        if (pthread_create(&log->writer, NULL, writer_main, log) != 0) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "cannot start the writer thread");
        } else {
            log->writer_started = true;
        }
    }
    if (rc != 0) {
        log_free(log);
        return rc;
    }
    *out = log;
    return 0;
}

int
audit_log_close(audit_log *log)
{
    if (log == NULL) {
        return 0;
    }
    if (log->writer_started) {
        pthread_mutex_lock(&log->q_mu);
        log->closing = true;
        pthread_cond_signal(&log->q_cv);
        pthread_mutex_unlock(&log->q_mu);
        pthread_join(log->writer, NULL);
        if (atomic_load(&log->failed) == 0) {
            dbao_err err;
            if (ckp_cut(log, &err) != 0) {
                log_fail(log, DBAO_EIO, "final checkpoint failed: %s", err.msg);
                write_alarm(log, DBAO_EIO, log->fail_msg);
            }
        }
    }
    int rc = atomic_load(&log->failed);
    log_free(log);
    return rc;
}

void
audit__log_abandon(audit_log *log)
{
    if (log == NULL) {
        return;
    }
    if (log->writer_started) {
        pthread_mutex_lock(&log->q_mu);
        log->abandon = true;
        pthread_cond_broadcast(&log->q_cv);
        pthread_cond_broadcast(&log->cut_cv);
        pthread_mutex_unlock(&log->q_mu);
        pthread_join(log->writer, NULL);
    }
    /* requests still queued are dropped without completion, as in a crash */
    audit_log_req *r = log->q_head;
    while (r != NULL) {
        audit_log_req *n = r->next_;
        dbao_free(r->leaves_);
        r->leaves_ = NULL;
        r = n;
    }
    log_free(log);
}

/* ---- read-only refresh ---------------------------------------------------------------------- */

int
audit_log_refresh(audit_log *log, dbao_err *err)
{
    if (!log->rdonly) {
        return 0;
    }
    pthread_rwlock_wrlock(&log->segs_mu);
    int rc = 0;
    /* continue the last segment, then pick up new ones */
    for (;;) {
        if (log->nsegs == 0) {
            break;
        }
        seg *s = log->segs[log->nsegs - 1];
        if (!s->sealed) {
            audit__scan sc;
            rc = audit__seg_scan(s->map, s->cap, s->end, s->first + s->count, sparse_cb, s, false,
                                 &sc);
            if (rc != 0) {
                break;
            }
            s->count = sc.next_index - s->first;
            s->end = sc.end;
            s->sealed = sc.stop == AUDIT__SCAN_SEALED;
            if (!s->sealed) {
                break;
            }
        }
        char name[40];
        uint64_t next = s->first + s->count;
        snprintf(name, sizeof name, "%016" PRIx64 ".seg", next);
        seg *ns = NULL;
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof p, "%s/seg/%s", log->dir, name);
        if (access(p, F_OK) != 0) {
            break;
        }
        rc = seg_open(&ns, log, name, next, err);
        if (rc != 0) {
            break;
        }
        ns->end = AUDIT__SEG_HDR;
        rc = segs_push(log, ns);
        if (rc != 0) {
            seg_free(ns);
            break;
        }
    }
    uint64_t total = 0;
    if (log->nsegs > 0) {
        seg *s = log->segs[log->nsegs - 1];
        total = s->first + s->count;
    }
    pthread_rwlock_unlock(&log->segs_mu);
    if (rc != 0) {
        return rc;
    }
    for (unsigned l = 0; l < TREE_LEVELS; l++) {
        if (log->tree_fd[l] < 0) {
            dbao_err e2;
            tree_open_level(log, l, false, &e2);
            continue;
        }
        struct stat st;
        if (fstat(log->tree_fd[l], &st) == 0 && (uint64_t) st.st_size >= AUDIT__TREE_HDR) {
            atomic_store(&log->tree_count[l], ((uint64_t) st.st_size - AUDIT__TREE_HDR) / 32);
        }
    }
    atomic_store(&log->size, total);
    return ckp_load(log, err);
}

/* ---- iteration ---------------------------------------------------------------------------- */

struct audit_log_iter {
    audit_log *log;
    uint64_t next;
    uint64_t end;
    seg *s;
    uint64_t off;
};

int
audit_log_iter_open(audit_log_iter **out, audit_log *log, uint64_t start, dbao_err *err)
{
    audit_log_iter *it = calloc(1, sizeof *it);
    if (it == NULL) {
        return DBAO_ENOMEM;
    }
    it->log = log;
    it->next = start;
    it->end = audit_log_size(log);
    (void) err;
    *out = it;
    return 0;
}

int
audit_log_iter_next(audit_log_iter *it, uint64_t *index, const uint8_t **rec, size_t *len,
                    dbao_err *err)
{
    if (it->next >= it->end) {
        return 0;
    }
    audit_log *log = it->log;
    pthread_rwlock_rdlock(&log->segs_mu);
    int rc = 0;
    if (it->s == NULL || it->next >= it->s->first + it->s->count) {
        const uint8_t *r;
        uint32_t l;
        rc = record_at(log, it->next, &r, &l, &it->off, NULL, err);
        if (rc == 0) {
            it->s = seg_find(log, it->next);
        }
    }
    if (rc == 0) {
        seg *s = it->s;
        const uint8_t *f = s->map + it->off;
        uint32_t flen = audit__rd32(f);
        if (flen == 0 || flen > AUDIT_RECORD_MAX ||
            it->off + AUDIT__FRAME_OVERHEAD + flen > s->cap || audit__rd64(f + 4) != it->next ||
            audit__rd32(f + 12 + flen) != audit__crc32c(0, f, 12 + (size_t) flen)) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "%s: frame of record %" PRIu64 " at offset %" PRIu64
                              " fails its check",
                              s->name, it->next, it->off);
        } else {
            *index = it->next;
            *rec = f + 12;
            *len = flen;
            it->off += AUDIT__FRAME_OVERHEAD + flen;
            it->next++;
        }
    }
    pthread_rwlock_unlock(&log->segs_mu);
    return rc == 0 ? 1 : rc;
}

void
audit_log_iter_close(audit_log_iter *it)
{
    free(it);
}
