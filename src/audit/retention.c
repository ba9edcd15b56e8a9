/* retention.c: archiving sealed segments and pruning them from the log directory.
 *
 * GB/T 22239-2019 8.1.4.3 c) asks that audit records be backed up and protected; the
 * Cybersecurity Law (art. 21) asks for at least six months of logs. So: archive copies, prune
 * removes only what is provably safe to remove, and the rules are checked here, not left to
 * the operator.
 *
 * Archive layout: the archive directory mirrors the log directory (log.conf, signer.pub.pem,
 * checkpoints, seg/<first index>.seg), so `dengbao audit verify --dir ARCHIVE` style tools can
 * read it. Each copy goes to a temporary name, is fdatasync'd, read back and compared, then
 * renamed into place and the directory synced: an archive never holds a partial segment under
 * its final name. A segment already in the archive must be identical, or archiving stops with
 * an error (never overwrite).
 *
 * Prune order of operations (crash safe): for the oldest sealed segments that qualify, first
 * the marker file "pruned" (first kept index, archive path) is written atomically, then the
 * segment files below it are unlinked. A crash in between leaves files below the marker,
 * which the next read-write open removes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define PATH_LEN 4096

int
audit__pruned_read(const char *dir, uint64_t *first, char *archive, size_t archive_cap,
                   dbao_err *err)
{
    char p[PATH_LEN];
    *first = 0;
    if (archive_cap) {
        archive[0] = '\0';
    }
    snprintf(p, sizeof p, "%s/pruned", dir);
    uint8_t *b = NULL;
    size_t len = 0;
    dbao_err e2;
    int rc = dbao_file_read(&b, &len, p, 8192, &e2);
    if (rc == -ENOENT) {
        return 0;
    }
    if (rc != 0) {
        return dbao_err_set(err, rc, "cannot read %s", p);
    }
    char *s = malloc(len + 1);
    if (s == NULL) {
        dbao_free(b);
        return DBAO_ENOMEM;
    }
    memcpy(s, b, len);
    s[len] = '\0';
    dbao_free(b);
    unsigned long long f = 0;
    int off = 0;
    if (sscanf(s, "dengbao-audit-pruned 1\nfirst = %llu\narchive = %n", &f, &off) != 1 ||
        off == 0) {
        free(s);
        return dbao_err_set(err, DBAO_EFORMAT, "%s: not a pruned marker this version reads", p);
    }
    char *nl = strchr(s + off, '\n');
    if (nl == NULL || nl[1] != '\0' || (size_t) (nl - (s + off)) >= archive_cap) {
        free(s);
        return dbao_err_set(err, DBAO_EFORMAT, "%s: bad archive line", p);
    }
    *nl = '\0';
    snprintf(archive, archive_cap, "%s", s + off);
    *first = f;
    free(s);
    return 0;
}

/* crc_file computes the CRC32C and size of a whole file. */
static int
crc_file(const char *path, uint32_t *crc, uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    uint8_t *buf = malloc(1 << 20);
    if (buf == NULL) {
        close(fd);
        return DBAO_ENOMEM;
    }
    uint32_t c = 0;
    uint64_t n = 0;
    ssize_t k;
    while ((k = read(fd, buf, 1 << 20)) > 0) {
        c = audit__crc32c(c, buf, (size_t) k);
        n += (uint64_t) k;
    }
    int rc = k < 0 ? -errno : 0;
    free(buf);
    close(fd);
    *crc = c;
    *size = n;
    return rc;
}

/* copy_file copies src to dst through dst.tmp, fdatasync, compare, rename. */
static int
copy_file(const char *src, const char *dst, const char *dst_dir, dbao_err *err)
{
    char tmp[PATH_LEN + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return dbao_err_set(err, DBAO_EIO, "cannot open %s: %s", src, strerror(errno));
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        close(in);
        return dbao_err_set(err, DBAO_EIO, "cannot create %s: %s", tmp, strerror(errno));
    }
    uint8_t *buf = malloc(1 << 20);
    int rc = buf ? 0 : DBAO_ENOMEM;
    ssize_t k;
    uint64_t off = 0;
    while (rc == 0 && (k = read(in, buf, 1 << 20)) > 0) {
        rc = audit__pwrite(out, buf, (size_t) k, off);
        off += (uint64_t) k;
    }
    if (rc == 0) {
        rc = audit__fdatasync(out);
    }
    free(buf);
    close(in);
    close(out);
    uint32_t c1 = 0, c2 = 0;
    uint64_t n1 = 0, n2 = 0;
    if (rc == 0) {
        rc = crc_file(src, &c1, &n1);
    }
    if (rc == 0) {
        rc = crc_file(tmp, &c2, &n2);
    }
    if (rc == 0 && (c1 != c2 || n1 != n2)) {
        rc = DBAO_EIO;
    }
    if (rc == 0 && rename(tmp, dst) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = audit__fsync_dir(dst_dir);
    }
    if (rc != 0) {
        unlink(tmp);
        return dbao_err_set(err, rc == DBAO_ENOMEM ? rc : DBAO_EIO, "cannot archive %s: %s", src,
                            rc == DBAO_EIO ? "the copy differs from the original"
                                           : dbao_strerror(rc));
    }
    return 0;
}

typedef struct seg_info {
    char name[64];
    uint64_t first;
    uint64_t next; /* first index after it (sealed only) */
    bool sealed;
    int64_t newest_ns; /* time of its newest record */
} seg_info;

static int
last_time_cb(void *arg, uint64_t index, const uint8_t *rec, uint32_t len, uint64_t off)
{
    (void) index;
    (void) off;
    /* canonical layout: version(1) event_id(16) time(8, big-endian) ...; decoding fully is
     * the robust way and costs little next to copying */
    audit_record r;
    audit_record_init(&r);
    if (audit_record_decode(&r, rec, len, NULL) == 0) {
        int64_t *t = arg;
        if (r.time_ns > *t) {
            *t = r.time_ns;
        }
    }
    audit_record_cleanup(&r);
    return 0;
}

/* list_sealed describes the segments of a log directory, in order. */
static int
list_sealed(const char *dir, seg_info **out, size_t *num, dbao_err *err)
{
    audit__seg_name *names = NULL;
    size_t listed = 0;
    int rc = audit__seg_list(dir, false, &names, &listed, err);
    if (rc != 0) {
        return rc;
    }
    seg_info *v = calloc(listed ? listed : 1, sizeof *v);
    size_t n = 0;
    if (v == NULL) {
        free(names);
        return DBAO_ENOMEM;
    }
    for (size_t i = 0; i < listed; i++) {
        if (names[i].valid) { /* in index order; anything else is not ours to archive */
            snprintf(v[n].name, sizeof v[n].name, "%s", names[i].name);
            v[n].first = names[i].first;
            n++;
        }
    }
    free(names);
    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s/seg", dir);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char sp[PATH_LEN + 64];
        snprintf(sp, sizeof sp, "%s/%s", p, v[i].name);
        uint8_t *b = NULL;
        size_t len = 0;
        rc = dbao_file_read(&b, &len, sp, (size_t) 1 << 40, err);
        if (rc != 0) {
            break;
        }
        uint64_t first = 0;
        if (audit__seg_header_parse(b, len, &first, NULL, NULL, err) != 0 || first != v[i].first) {
            dbao_free(b);
            rc = dbao_err_set(err, DBAO_EVERIFY, "seg/%s: bad header", v[i].name);
            break;
        }
        audit__scan sc;
        v[i].newest_ns = INT64_MIN;
        audit__seg_scan(b, len, AUDIT__SEG_HDR, first, last_time_cb, &v[i].newest_ns, false, &sc);
        v[i].sealed = sc.stop == AUDIT__SCAN_SEALED;
        v[i].next = sc.next_index;
        dbao_free(b);
    }
    if (rc != 0) {
        free(v);
        return rc;
    }
    *out = v;
    *num = n;
    return 0;
}

static int
ensure_dir(const char *p, dbao_err *err)
{
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        return dbao_err_set(err, DBAO_EIO, "cannot create %s: %s", p, strerror(errno));
    }
    return 0;
}

int
audit_log_archive(const char *dir, const char *archive_dir, audit_retention_report *rep,
                  dbao_err *err)
{
    memset(rep, 0, sizeof *rep);
    audit_log_config cfg;
    char *holder = NULL;
    int rc = audit_log_read_config(dir, &cfg, &holder, err);
    if (rc != 0) {
        return rc;
    }
    char p[PATH_LEN], q[PATH_LEN], adir[PATH_LEN];
    snprintf(adir, sizeof adir, "%s/seg", archive_dir);
    if ((rc = ensure_dir(archive_dir, err)) != 0 || (rc = ensure_dir(adir, err)) != 0) {
        dbao_free(holder);
        return rc;
    }
    seg_info *segs = NULL;
    size_t n = 0;
    rc = list_sealed(dir, &segs, &n, err);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!segs[i].sealed) {
            continue;
        }
        int l1 = snprintf(p, sizeof p, "%s/seg/%s", dir, segs[i].name);
        int l2 = snprintf(q, sizeof q, "%s/%s", adir, segs[i].name);
        if (l1 < 0 || l2 < 0 || (size_t) l1 >= sizeof p || (size_t) l2 >= sizeof q) {
            rc = dbao_err_set(err, DBAO_ERANGE, "path too long");
            break;
        }
        if (access(q, F_OK) == 0) {
            uint32_t c1, c2;
            uint64_t n1, n2;
            if (crc_file(p, &c1, &n1) != 0 || crc_file(q, &c2, &n2) != 0 || c1 != c2 || n1 != n2) {
                rc = dbao_err_set(err, DBAO_EVERIFY,
                                  "the archive's copy of seg/%s differs from the log's: refusing "
                                  "to overwrite it",
                                  segs[i].name);
                break;
            }
            rep->skipped++;
            continue;
        }
        rc = copy_file(p, q, adir, err);
        if (rc == 0) {
            rep->segments++;
        }
    }
    /* the files that make the archive verifiable on its own (replaced by newer copies) */
    const char *files[] = {"log.conf", "checkpoints", cfg.pub_path};
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        if (strchr(files[i], '/') != NULL) {
            continue; /* a public key kept outside the log directory */
        }
        int l1 = snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        int l2 = snprintf(q, sizeof q, "%s/%s", archive_dir, files[i]);
        if (l1 < 0 || l2 < 0 || (size_t) l1 >= sizeof p || (size_t) l2 >= sizeof q) {
            rc = dbao_err_set(err, DBAO_ERANGE, "path too long");
        } else if (access(p, F_OK) == 0) {
            rc = copy_file(p, q, archive_dir, err);
        }
    }
    free(segs);
    dbao_free(holder);
    return rc;
}

typedef struct last_ckp {
    const char *note;
    size_t len;
} last_ckp;

static int
last_ckp_cb(void *arg, const char *note, size_t len, uint64_t offset)
{
    (void) offset;
    last_ckp *l = arg;
    l->note = note;
    l->len = len;
    return 0;
}

int
audit_log_prune(const char *dir, const char *archive_dir, int64_t before_ns, int64_t now_ns,
                audit_retention_report *rep, dbao_err *err)
{
    memset(rep, 0, sizeof *rep);
    audit_log_config cfg;
    char *holder = NULL;
    int rc = audit_log_read_config(dir, &cfg, &holder, err);
    if (rc != 0) {
        return rc;
    }
    char p[PATH_LEN], q[PATH_LEN];
    snprintf(p, sizeof p, "%s/lock", dir);
    int lock = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) != 0) {
        if (lock >= 0) {
            close(lock);
        }
        dbao_free(holder);
        return dbao_err_set(err, DBAO_EINVAL,
                            "%s is in use (auditd or an append holds its lock): stop it first",
                            dir);
    }
    int64_t min_age = (int64_t) cfg.retention_days * 86400 * 1000000000LL;
    int64_t limit = now_ns - min_age < before_ns ? now_ns - min_age : before_ns;
    /* the latest checkpoint's size (any well-formed one: prune only needs coverage, and
     * verify checks signatures) */
    snprintf(p, sizeof p, "%s/checkpoints", dir);
    uint8_t *cb = NULL;
    size_t clen = 0;
    uint64_t covered = 0;
    rc = dbao_file_read(&cb, &clen, p, (size_t) 1 << 34, err);
    if (rc == 0) {
        last_ckp l = {0};
        uint64_t end;
        bool bad;
        rc = audit__ckp_scan(cb, clen, last_ckp_cb, &l, &end, &bad, err);
        audit_checkpoint cp;
        if (rc == 0 && l.note != NULL &&
            audit_checkpoint_parse_unverified(&cp, l.note, l.len, NULL) == 0) {
            covered = cp.size;
        }
        dbao_free(cb);
    }
    uint64_t first = 0;
    char archived_to[1024];
    if (rc == 0) {
        rc = audit__pruned_read(dir, &first, archived_to, sizeof archived_to, err);
    }
    seg_info *segs = NULL;
    size_t n = 0;
    if (rc == 0) {
        rc = list_sealed(dir, &segs, &n, err);
    }
    uint64_t new_first = first;
    size_t upto = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        seg_info *s = &segs[i];
        if (s->first < first) {
            upto = i + 1;
            continue;
        }
        if (!s->sealed) {
            snprintf(rep->stopped_at, sizeof rep->stopped_at,
                     "seg/%s is the open segment (not sealed)", s->name);
            break;
        }
        if (s->next > covered) {
            snprintf(rep->stopped_at, sizeof rep->stopped_at,
                     "seg/%s is not yet covered by a signed checkpoint", s->name);
            break;
        }
        if (s->newest_ns >= limit) {
            snprintf(rep->stopped_at, sizeof rep->stopped_at,
                     "seg/%s holds records younger than the retention limit (%u days, or "
                     "--before)",
                     s->name, cfg.retention_days);
            break;
        }
        snprintf(p, sizeof p, "%s/seg/%s", dir, s->name);
        snprintf(q, sizeof q, "%s/seg/%s", archive_dir, s->name);
        uint32_t c1, c2;
        uint64_t n1, n2;
        if (crc_file(q, &c2, &n2) != 0) {
            snprintf(rep->stopped_at, sizeof rep->stopped_at,
                     "seg/%s is not in the archive: run archive first", s->name);
            break;
        }
        if (crc_file(p, &c1, &n1) != 0 || c1 != c2 || n1 != n2) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "the archive's copy of seg/%s differs from the log's", s->name);
            break;
        }
        new_first = s->next;
        upto = i + 1;
        rep->segments++;
    }
    if (rc == 0 && new_first > first) {
        char text[2048];
        int tl = snprintf(text, sizeof text,
                          "dengbao-audit-pruned 1\nfirst = %" PRIu64 "\narchive = %s\n", new_first,
                          archive_dir);
        snprintf(p, sizeof p, "%s/pruned", dir);
        if (tl < 0 || (size_t) tl >= sizeof text || strchr(archive_dir, '\n') != NULL) {
            rc = dbao_err_set(err, DBAO_EINVAL, "archive path unusable");
        } else {
            rc = dbao_file_write(p, text, (size_t) tl, 0600, err);
        }
        if (rc == 0) {
            rc = audit__fsync_dir(dir);
        }
    }
    for (size_t i = 0; i < upto && rc == 0; i++) {
        if (segs[i].next <= new_first) {
            snprintf(p, sizeof p, "%s/seg/%s", dir, segs[i].name);
            unlink(p);
        }
    }
    if (rc == 0) {
        snprintf(p, sizeof p, "%s/seg", dir);
        audit__fsync_dir(p);
    }
    rep->first_kept = new_first;
    free(segs);
    close(lock);
    dbao_free(holder);
    return rc;
}
