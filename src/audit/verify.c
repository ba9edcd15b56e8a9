/* verify.c: offline verification of a whole log directory (dengbao audit verify).
 *
 * It trusts nothing in the directory except the public keys the caller passes. One pass:
 *
 *  1. Every checkpoint in the checkpoint file must carry a valid signature by a trusted key,
 *     name the log's origin, and not shrink. A damaged last frame is reported as a torn
 *     append (what a crash leaves until the next open repairs it), not as tampering: deleting
 *     the newest checkpoints is indistinguishable from never having cut them, which is why
 *     records after the newest checkpoint are reported as "unsigned".
 *  2. Segments are read in index order: header (magic, version, first index = its name = the
 *     next expected index), every frame (CRC, the index it carries, a canonical record), the
 *     seal of every segment but the last (next index, root). Leaves are hashed eight at a time
 *     (gm_sm3_hash_many) into a frontier; whenever the tree reaches a checkpoint's size its
 *     root must equal the signed root.
 *  3. The tree cache's leaf hashes (tree/L00) are compared with the recomputed ones. When a
 *     signed root does not match, and the cache's own tree does reproduce the signed root, the
 *     cache is authentic and the first record whose leaf differs from it is the one that was
 *     altered: that index, its segment and its offset are reported.
 *
 * The first failure stops the pass and is described in the report; torn tails are counted but
 * do not fail it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define PATH_LEN 4096
#define CHUNK    64

typedef struct ckp_ent {
    uint64_t size;
    uint8_t root[AUDIT_HASH_LEN];
    uint64_t offset;
} ckp_ent;

typedef struct vstate {
    const char *dir;
    audit_verify_report *rep;
    dbao_err *err;
    const char *origin;
    const audit_note_key *trusted;
    size_t num_trusted;
    /* checkpoints */
    ckp_ent *ckps;
    size_t nckp, ckp_cap;
    size_t next_ckp; /* first checkpoint not yet reached */
    uint64_t ckp_prev_size;
    /* tree */
    audit_frontier fr;
    int l00_fd;
    uint64_t l00_count;
    uint64_t leaf_mismatch; /* first index whose leaf differs from tree/L00, or UINT64_MAX */
    char leaf_mismatch_file[64];
    uint64_t leaf_mismatch_off;
    /* pending leaves of the current segment */
    const uint8_t *msgs[CHUNK];
    size_t lens[CHUNK];
    uint64_t offs[CHUNK];
    uint64_t first_pending;
    size_t npending;
    const char *segname;
    audit_record rec;
    int fail;
} vstate;

static int vfail(vstate *v, uint64_t index, const char *file, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int
vfail(vstate *v, uint64_t index, const char *file, uint64_t off, const char *fmt, ...)
{
    audit_verify_report *r = v->rep;
    r->bad_index = index;
    snprintf(r->bad_file, sizeof r->bad_file, "%s", file);
    r->bad_offset = off;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->what, sizeof r->what, fmt, ap);
    va_end(ap);
    v->fail = DBAO_EVERIFY;
    return dbao_err_set(v->err, DBAO_EVERIFY, "%s", r->what);
}

static int
read_file(const char *path, uint8_t **out, size_t *len, dbao_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return dbao_err_set(err, errno == ENOENT ? DBAO_EFORMAT : DBAO_EIO, "cannot open %s: %s",
                            path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return dbao_err_set(err, DBAO_EIO, "cannot stat %s", path);
    }
    size_t n = (size_t) st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        close(fd);
        return DBAO_ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            break;
        }
        got += (size_t) k;
    }
    close(fd);
    if (got != n) {
        free(buf);
        return dbao_err_set(err, DBAO_EIO, "cannot read %s", path);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* map_file maps a segment read-only: only the pages the scan touches are read (a segment is
 * preallocated, mostly zeros until full). Offline use: the log must not be truncated under
 * the verifier. */
static int
map_file(const char *path, uint8_t **out, size_t *len, dbao_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return dbao_err_set(err, DBAO_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return dbao_err_set(err, DBAO_EIO, "cannot stat %s", path);
    }
    *len = (size_t) st.st_size;
    if (*len == 0) {
        close(fd);
        *out = NULL;
        return 0;
    }
    void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        return dbao_err_set(err, DBAO_EIO, "cannot map %s: %s", path, strerror(errno));
    }
    madvise(m, *len, MADV_SEQUENTIAL);
    *out = m;
    return 0;
}

static int
ckp_cb(void *arg, const char *note, size_t len, uint64_t offset)
{
    vstate *v = arg;
    audit_checkpoint cp;
    dbao_err e2;
    int rc = audit_checkpoint_open(&cp, note, len, v->trusted, v->num_trusted, NULL, &e2);
    if (rc != 0) {
        return vfail(v, UINT64_MAX, "checkpoints", offset,
                     "checkpoint %zu does not verify: %s (after a key rotation, trust every key "
                     "the log was signed with)",
                     v->nckp, e2.msg);
    }
    if (strcmp(cp.origin, v->origin) != 0) {
        return vfail(v, UINT64_MAX, "checkpoints", offset,
                     "checkpoint %zu names another log (origin differs from log.conf)", v->nckp);
    }
    if (v->nckp > 0 && cp.size < v->ckps[v->nckp - 1].size) {
        return vfail(v, cp.size, "checkpoints", offset,
                     "checkpoint %zu has size %" PRIu64 ", smaller than the one before it", v->nckp,
                     cp.size);
    }
    if (v->nckp == v->ckp_cap) {
        size_t ncap = v->ckp_cap ? v->ckp_cap * 2 : 64;
        ckp_ent *n = realloc(v->ckps, ncap * sizeof *n);
        if (n == NULL) {
            return DBAO_ENOMEM;
        }
        v->ckps = n;
        v->ckp_cap = ncap;
    }
    ckp_ent *e = &v->ckps[v->nckp++];
    e->size = cp.size;
    memcpy(e->root, cp.root, AUDIT_HASH_LEN);
    e->offset = offset;
    return 0;
}

static int
tree_file_source(void *arg, uint8_t out[AUDIT_HASH_LEN], unsigned level, uint64_t index)
{
    const char *dir = arg;
    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s/tree/L%02u", dir, level);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return level == 0 ? DBAO_EIO : DBAO_ENOTSUP;
    }
    ssize_t n = pread(fd, out, AUDIT_HASH_LEN, (off_t) (AUDIT__TREE_HDR + index * 32));
    close(fd);
    if (n != AUDIT_HASH_LEN) {
        return level == 0 ? DBAO_EIO : DBAO_ENOTSUP;
    }
    return 0;
}

/* check_root is called when the tree reaches checkpoint k's size. */
static int
check_root(vstate *v, size_t k)
{
    uint8_t root[AUDIT_HASH_LEN];
    audit_frontier_root(&v->fr, root);
    const ckp_ent *c = &v->ckps[k];
    if (dbao_ct_memeq(root, c->root, AUDIT_HASH_LEN)) {
        v->rep->checkpoints++;
        v->rep->signed_size = c->size;
        v->ckp_prev_size = c->size;
        return 0;
    }
    /* Which record? If the tree cache reproduces the signed root it is authentic, and the
     * first leaf that differs from it names the altered record. */
    uint8_t croot[AUDIT_HASH_LEN];
    if (v->leaf_mismatch < c->size &&
        audit_merkle_root(croot, c->size, tree_file_source, (void *) v->dir) == 0 &&
        dbao_ct_memeq(croot, c->root, AUDIT_HASH_LEN)) {
        return vfail(v, v->leaf_mismatch, v->leaf_mismatch_file, v->leaf_mismatch_off,
                     "record %" PRIu64 " was altered: its hash differs from the one signed in "
                     "checkpoint %zu (size %" PRIu64 ")",
                     v->leaf_mismatch, k, c->size);
    }
    return vfail(v, v->ckp_prev_size, "checkpoints", c->offset,
                 "the records %" PRIu64 "..%" PRIu64 " do not match checkpoint %zu: the root "
                 "computed from them differs from the signed root (records altered, inserted "
                 "or removed in that range)",
                 v->ckp_prev_size, c->size - 1, k);
}

/* flush hashes the pending records and feeds them to the frontier. */
static int
flush(vstate *v)
{
    if (v->npending == 0) {
        return 0;
    }
    uint8_t leaves[CHUNK * AUDIT_HASH_LEN];
    static const uint8_t zero = 0;
    gm_sm3_hash_many(leaves, v->msgs, v->lens, v->npending, &zero, 1);
    /* compare with the tree cache's leaves */
    uint64_t first = v->first_pending;
    if (v->l00_fd >= 0 && first < v->l00_count && v->leaf_mismatch == UINT64_MAX) {
        uint8_t cached[CHUNK * AUDIT_HASH_LEN];
        size_t k = v->npending;
        if (first + k > v->l00_count) {
            k = (size_t) (v->l00_count - first);
        }
        ssize_t n = pread(v->l00_fd, cached, k * 32, (off_t) (AUDIT__TREE_HDR + first * 32));
        if (n == (ssize_t) (k * 32)) {
            for (size_t i = 0; i < k; i++) {
                if (memcmp(cached + i * 32, leaves + i * 32, 32) != 0) {
                    v->leaf_mismatch = first + i;
                    snprintf(v->leaf_mismatch_file, sizeof v->leaf_mismatch_file, "%s", v->segname);
                    v->leaf_mismatch_off = v->offs[i];
                    break;
                }
            }
        }
    }
    for (size_t i = 0; i < v->npending; i++) {
        int rc = audit_frontier_append(&v->fr, leaves + i * 32, NULL, NULL);
        if (rc != 0) {
            return rc;
        }
        uint64_t size = audit_frontier_size(&v->fr);
        while (v->next_ckp < v->nckp && v->ckps[v->next_ckp].size == size) {
            rc = check_root(v, v->next_ckp);
            if (rc != 0) {
                return rc;
            }
            v->next_ckp++;
        }
    }
    v->npending = 0;
    return 0;
}

static int
frame_cb(void *arg, uint64_t index, const uint8_t *rec, uint32_t len, uint64_t off)
{
    vstate *v = arg;
    dbao_err e2;
    int rc = audit_record_decode(&v->rec, rec, len, &e2);
    if (rc != 0) {
        return vfail(v, index, v->segname, off, "record %" PRIu64 " is not a valid record: %s",
                     index, e2.msg);
    }
    if (v->npending == 0) {
        v->first_pending = index;
    }
    v->msgs[v->npending] = rec;
    v->lens[v->npending] = len;
    v->offs[v->npending] = off;
    v->npending++;
    v->rep->records++;
    if (v->npending == CHUNK) {
        return flush(v);
    }
    return 0;
}

static const char *
why(int stop)
{
    switch (stop) {
    case AUDIT__SCAN_TRUNCATED:
        return "a frame runs past the end of the file";
    case AUDIT__SCAN_BAD_LEN:
        return "a frame length is out of range";
    case AUDIT__SCAN_BAD_CRC:
        return "a frame fails its CRC";
    case AUDIT__SCAN_BAD_INDEX:
        return "a frame carries the wrong index (records reordered, duplicated or removed)";
    case AUDIT__SCAN_BAD_SEAL:
        return "the seal is damaged or names the wrong next index";
    case AUDIT__SCAN_END:
        return "the data ends without a seal";
    default:
        return "unexpected data";
    }
}

static int
verify_segments(vstate *v)
{
    char p[PATH_LEN];
    audit__seg_name *names = NULL;
    size_t n = 0;
    int rc = audit__seg_list(v->dir, false, &names, &n, v->err);
    if (rc != 0) {
        return rc;
    }
    uint64_t expect = v->rep->pruned_below;
    char segname[80];
    if (n > 0 && !names[n - 1].valid) { /* other names sort last */
        snprintf(segname, sizeof segname, "seg/%s", names[n - 1].name);
        rc = vfail(v, UINT64_MAX, segname, 0, "unexpected file in the segment folder");
        n = 0;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(segname, sizeof segname, "seg/%s", names[i].name);
        if (names[i].first < v->rep->pruned_below) {
            continue; /* left by a prune interrupted after its marker */
        }
        v->segname = segname;
        uint64_t name_first = names[i].first;
        snprintf(p, sizeof p, "%s/%s", v->dir, segname);
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = map_file(p, &buf, &len, v->err);
        if (rc != 0) {
            break;
        }
        uint64_t first = 0;
        dbao_err e2;
        if (audit__seg_header_parse(buf, len, &first, NULL, NULL, &e2) != 0) {
            rc = vfail(v, expect, segname, 0, "bad segment header: %s", e2.msg);
        } else if (first != name_first) {
            rc =
                vfail(v, expect, segname, 16,
                      "segment header says it starts at record %" PRIu64 ", its name says %" PRIu64,
                      first, name_first);
        } else if (first != expect) {
            rc = vfail(v, expect, segname, 0,
                       "segment starts at record %" PRIu64 " but %" PRIu64
                       " was expected: records are missing",
                       first, expect);
        }
        if (rc != 0) {
            if (buf != NULL) {
                munmap(buf, len);
            }
            break;
        }
        bool last = i + 1 == n;
        audit__scan sc;
        rc = audit__seg_scan(buf, len, AUDIT__SEG_HDR, first, frame_cb, v, true, &sc);
        if (rc == 0) {
            rc = flush(v);
        }
        if (rc == 0) {
            if (sc.stop == AUDIT__SCAN_SEALED) {
                uint8_t root[AUDIT_HASH_LEN];
                audit_frontier_root(&v->fr, root);
                if (!dbao_ct_memeq(root, sc.seal_root, AUDIT_HASH_LEN)) {
                    rc = vfail(v, sc.next_index, segname, sc.end - AUDIT__SEAL_LEN,
                               "the root in the seal differs from the tree of the records");
                } else if (sc.nonzero_end > sc.end) {
                    rc = vfail(v, sc.next_index, segname, sc.end, "data after the seal");
                } else if (last) {
                    /* sealed last segment: fine (the next one was not created yet) */
                }
            } else if (!last) {
                rc = vfail(v, sc.next_index, segname, sc.stop_offset,
                           "record %" PRIu64 ": %s; this segment should end with a seal",
                           sc.next_index, why(sc.stop));
            } else if (sc.stop == AUDIT__SCAN_END || sc.stop == AUDIT__SCAN_EOF) {
                if (sc.nonzero_end > sc.end) {
                    uint64_t f = audit__seg_resync(buf, sc.nonzero_end, sc.end + 1, sc.next_index);
                    if (f != UINT64_MAX) {
                        rc = vfail(v, sc.next_index, segname, sc.end,
                                   "records follow the end of the data at offset %" PRIu64, f);
                    } else {
                        v->rep->torn_bytes += sc.nonzero_end - sc.end;
                    }
                }
            } else {
                uint64_t f = audit__seg_resync(buf, sc.nonzero_end, sc.end + 1, sc.next_index);
                if (f != UINT64_MAX) {
                    rc =
                        vfail(v, sc.next_index, segname, sc.stop_offset,
                              "record %" PRIu64 ": %s (valid records follow at offset %" PRIu64 ")",
                              sc.next_index, why(sc.stop), f);
                } else {
                    v->rep->torn_bytes += sc.nonzero_end - sc.end;
                }
            }
        }
        expect = sc.next_index;
        munmap(buf, len);
        if (rc == 0 && !last && sc.stop != AUDIT__SCAN_SEALED) {
            break;
        }
    }
    if (rc == 0 && v->next_ckp < v->nckp) {
        const ckp_ent *c = &v->ckps[v->next_ckp];
        rc = vfail(v, expect, n ? segname : "seg", 0,
                   "the log was truncated: checkpoint %zu covers %" PRIu64
                   " records but only %" PRIu64 " are present",
                   v->next_ckp, c->size, expect);
    }
    free(names);
    return rc;
}

int
audit_log_verify_dir(const char *dir, const audit_note_key *trusted, size_t num_trusted,
                     audit_verify_report *rep, dbao_err *err)
{
    memset(rep, 0, sizeof *rep);
    rep->bad_index = UINT64_MAX;
    if (num_trusted == 0) {
        return dbao_err_set(err, DBAO_EINVAL, "verification needs at least one trusted key");
    }
    audit_log_config cfg;
    char *holder = NULL;
    int rc = audit_log_read_config(dir, &cfg, &holder, err);
    if (rc != 0) {
        return rc;
    }
    vstate v;
    memset(&v, 0, sizeof v);
    v.dir = dir;
    v.rep = rep;
    v.err = err;
    v.origin = cfg.origin;
    v.trusted = trusted;
    v.num_trusted = num_trusted;
    v.l00_fd = -1;
    v.leaf_mismatch = UINT64_MAX;
    audit_frontier_init(&v.fr);
    audit_record_init(&v.rec);

    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s/checkpoints", dir);
    uint8_t *cbuf = NULL;
    size_t clen = 0;
    rc = read_file(p, &cbuf, &clen, err);
    if (rc == 0) {
        uint64_t end = 0;
        bool bad = false;
        dbao_err e2;
        rc = audit__ckp_scan(cbuf, clen, ckp_cb, &v, &end, &bad, &e2);
        if (rc != 0 && v.fail == 0) {
            rc = vfail(&v, UINT64_MAX, "checkpoints", 0, "%s", e2.msg);
        }
        if (rc == 0 && bad) {
            rep->torn_bytes += clen - end;
        }
        free(cbuf);
    }
    if (rc == 0) {
        snprintf(p, sizeof p, "%s/tree/L00", dir);
        v.l00_fd = open(p, O_RDONLY | O_CLOEXEC);
        if (v.l00_fd >= 0) {
            struct stat st;
            if (fstat(v.l00_fd, &st) == 0 && (uint64_t) st.st_size >= AUDIT__TREE_HDR) {
                v.l00_count = ((uint64_t) st.st_size - AUDIT__TREE_HDR) / 32;
            }
        }
        /* records below the pruned mark are in the archive: start from the tree cache's
         * frontier there; the later signed roots authenticate it */
        char archive[1024];
        uint64_t first = 0;
        rc = audit__pruned_read(dir, &first, archive, sizeof archive, err);
        if (rc == 0 && first > 0) {
            rep->pruned_below = first;
            rc = audit_frontier_load(&v.fr, first, tree_file_source, (void *) dir);
            if (rc != 0) {
                rc = vfail(&v, first, "tree/", 0,
                           "records below %" PRIu64 " are archived and the tree cache cannot "
                           "supply their hashes",
                           first);
            }
            while (rc == 0 && v.next_ckp < v.nckp && v.ckps[v.next_ckp].size < first) {
                v.next_ckp++; /* about archived records only */
            }
        }
        /* checkpoints at the starting size (the empty tree, or the pruned mark) */
        while (rc == 0 && v.next_ckp < v.nckp &&
               v.ckps[v.next_ckp].size == audit_frontier_size(&v.fr)) {
            rc = check_root(&v, v.next_ckp);
            v.next_ckp++;
        }
        if (rc == 0) {
            rc = verify_segments(&v);
        }
    }
    /* The tree cache must agree with the signed records (it serves the proofs). */
    if (rc == 0 && v.leaf_mismatch < rep->signed_size) {
        rc = vfail(&v, v.leaf_mismatch, "tree/L00", AUDIT__TREE_HDR + v.leaf_mismatch * 32,
                   "the tree cache's hash of record %" PRIu64 " differs from the record",
                   v.leaf_mismatch);
    }
    if (v.l00_fd >= 0) {
        close(v.l00_fd);
    }
    audit_record_cleanup(&v.rec);
    free(v.ckps);
    dbao_free(holder);
    return rc;
}
