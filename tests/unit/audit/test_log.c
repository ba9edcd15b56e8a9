/* test_log.c: the audit log's storage (audit.h "the log"): appends across segments, reads,
 * proofs against the signed checkpoints, concurrent producers, reopening; power cuts through
 * the fault layer (every acknowledged record survives, recovery repairs the rest); ENOSPC and
 * EIO (the log fails closed and records an alarm in its reserve); torn tails; and tampering
 * (a flipped byte, a record rewritten with a valid CRC, a deleted record, swapped records,
 * swapped records with rewritten indices, a truncated segment, a replaced checkpoint), each
 * detected by audit_log_verify_dir with the index named, and refused by audit_log_open.
 *
 * Logs live in a fresh directory under /tmp; segments are 1 MiB so that tests roll segments.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dengbao/audit.h"
#include "internal.h"

#define ORIGIN "test.example/audit"

static gm_sm2_key *key, *key_other;
static audit_note_key nk, nk_other;
static char dir[256];

static int
setup(void **state)
{
    (void) state;
    if (gm_sm2_key_generate(&key, NULL) != 0 || gm_sm2_key_generate(&key_other, NULL) != 0) {
        return -1;
    }
    nk.name = ORIGIN;
    nk.key = key;
    nk_other.name = ORIGIN;
    nk_other.key = key_other;
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    gm_sm2_key_free(key);
    gm_sm2_key_free(key_other);
    return 0;
}

static void
rm_rf(const char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

static void
new_log(uint64_t segment_bytes)
{
    snprintf(dir, sizeof dir, "/tmp/dbao-test-log-%d-XXXXXX", (int) getpid());
    assert_non_null(mkdtemp(dir));
    audit_log_config cfg = {.origin = ORIGIN, .segment_bytes = segment_bytes};
    dbao_err err;
    int rc = audit_log_create(dir, &cfg, &err);
    if (rc != 0) {
        fail_msg("create: %s", err.msg);
    }
}

#define open_rw(e) open_rw_at((e), __LINE__)
static audit_log *
open_rw_at(int expect, int line)
{
    audit_log *log = NULL;
    audit_log_open_opts o = {.signers = &nk, .num_signers = 1};
    dbao_err err;
    dbao_err_clear(&err);
    int rc = audit_log_open(&log, dir, &o, &err);
    if (rc != expect) {
        fail_msg("line %d: open: expected %d got %d: %s", line, expect, rc, err.msg);
    }
    return log;
}

/* make_record encodes record number n (its details carry n, and padding to ~300-500 bytes). */
static size_t
make_record(uint8_t *out, uint64_t n)
{
    audit_record r;
    audit_record_init(&r);
    r.time_ns = 1764300000000000000LL + (int64_t) n;
    assert_int_equal(audit_uuid7_generate(r.event_id, r.time_ns), 0);
    snprintf(r.subject.id, sizeof r.subject.id, "user-%" PRIu64, n % 97);
    snprintf(r.subject.role, sizeof r.subject.role, "teller");
    snprintf(r.event_type, sizeof r.event_type, "data.read");
    snprintf(r.action, sizeof r.action, "SELECT");
    snprintf(r.object, sizeof r.object, "db/customers/%" PRIu64, n);
    snprintf(r.source, sizeof r.source, "test");
    r.result = (n % 7) ? AUDIT_RESULT_SUCCESS : AUDIT_RESULT_FAILURE;
    char details[512];
    int pad = (int) (n % 200);
    snprintf(
        details, sizeof details, "{\"n\":%" PRIu64 ",\"pad\":\"%.*s\"}", n, pad,
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(audit_record_set_details(&r, details, strlen(details), NULL), 0);
    size_t len = 0;
    assert_int_equal(audit_record_encode(&r, out, &len, AUDIT_RECORD_MAX, NULL), 0);
    audit_record_cleanup(&r);
    return len;
}

/* record_n decodes a stored record and returns its details' n. */
static uint64_t
record_n(const uint8_t *rec, size_t len)
{
    audit_record r;
    audit_record_init(&r);
    assert_int_equal(audit_record_decode(&r, rec, len, NULL), 0);
    const char *p = strstr(r.details ? r.details : "", "\"n\":");
    assert_non_null(p);
    uint64_t n = strtoull(p + 4, NULL, 10);
    audit_record_cleanup(&r);
    return n;
}

static void
append_n(audit_log *log, uint64_t from, uint64_t count, uint64_t per_req)
{
    uint8_t *buf = malloc(per_req * 600);
    uint32_t *lens = malloc(per_req * sizeof *lens);
    uint64_t base = audit_log_size(log);
    for (uint64_t i = 0; i < count;) {
        uint64_t k = count - i < per_req ? count - i : per_req;
        size_t off = 0;
        for (uint64_t j = 0; j < k; j++) {
            lens[j] = (uint32_t) make_record(buf + off, from + i + j);
            off += lens[j];
        }
        uint64_t first = 0;
        dbao_err err;
        int rc = audit_log_append(log, buf, lens, k, &first, &err);
        if (rc != 0) {
            fail_msg("append: %s", err.msg);
        }
        assert_int_equal(first, base + i);
        i += k;
    }
    free(buf);
    free(lens);
}

static void
check_all(audit_log *log, uint64_t count)
{
    assert_int_equal(audit_log_size(log), count);
    uint8_t rec[AUDIT_RECORD_MAX];
    for (uint64_t i = 0; i < count; i++) {
        size_t len = 0;
        assert_int_equal(audit_log_get(log, i, rec, sizeof rec, &len, NULL), 0);
        assert_int_equal(record_n(rec, len), i);
    }
    audit_log_iter *it = NULL;
    assert_int_equal(audit_log_iter_open(&it, log, 0, NULL), 0);
    uint64_t idx, seen = 0;
    const uint8_t *r;
    size_t len;
    while (audit_log_iter_next(it, &idx, &r, &len, NULL) == 1) {
        assert_int_equal(idx, seen);
        assert_int_equal(record_n(r, len), seen);
        seen++;
    }
    assert_int_equal(seen, count);
    audit_log_iter_close(it);
}

static void
verify_ok(uint64_t records)
{
    audit_verify_report rep;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = audit_log_verify_dir(dir, &nk, 1, &rep, &err);
    if (rc != 0) {
        fail_msg("verify: %d %s (index %" PRIu64 " %s@%" PRIu64 ")", rc, err.msg, rep.bad_index,
                 rep.bad_file, rep.bad_offset);
    }
    assert_int_equal(rep.records, records);
}

static audit_verify_report
verify_bad(void)
{
    audit_verify_report rep;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = audit_log_verify_dir(dir, &nk, 1, &rep, &err);
    if (rc != DBAO_EVERIFY) {
        fail_msg("verify should fail: rc %d %s", rc, err.msg);
    }
    return rep;
}

/* ---- basic ---- */

static void
test_append_read_prove(void **state)
{
    (void) state;
    new_log(1 << 20);
    audit_log *log = open_rw(0);
    append_n(log, 0, 3000, 1);
    append_n(log, 3000, 7000, 500); /* 10,000 records of ~300-500 bytes: several segments */
    check_all(log, 10000);
    dbao_err err;
    assert_int_equal(audit_log_checkpoint_cut(log, &err), 0);
    audit_checkpoint cp;
    char *note = NULL;
    size_t note_len = 0;
    assert_int_equal(audit_log_checkpoint_latest(log, &note, &note_len, &cp, NULL), 0);
    assert_int_equal(cp.size, 10000);
    audit_checkpoint cp2;
    assert_int_equal(audit_checkpoint_open(&cp2, note, note_len, &nk, 1, NULL, NULL), 0);
    assert_memory_equal(cp2.root, cp.root, 32);
    dbao_free(note);
    /* inclusion proofs for many indices against the signed root */
    uint8_t proof[AUDIT_PROOF_MAX * 32], leaf[32], rec[AUDIT_RECORD_MAX];
    for (uint64_t i = 0; i < 10000; i += 37) {
        size_t num = 0, len = 0;
        assert_int_equal(audit_log_prove_inclusion(log, i, cp.size, proof, &num, NULL), 0);
        assert_int_equal(audit_log_get(log, i, rec, sizeof rec, &len, NULL), 0);
        audit_leaf_hash(leaf, rec, len);
        assert_int_equal(audit_merkle_verify_inclusion(leaf, i, cp.size, proof, num, cp.root, NULL),
                         0);
        leaf[0] ^= 1;
        assert_int_equal(audit_merkle_verify_inclusion(leaf, i, cp.size, proof, num, cp.root, NULL),
                         DBAO_EVERIFY);
    }
    /* out of range */
    size_t num = 0, len = 0;
    assert_int_equal(audit_log_prove_inclusion(log, 10000, 10000, proof, &num, NULL), DBAO_ERANGE);
    assert_int_equal(audit_log_get(log, 10000, rec, sizeof rec, &len, NULL), DBAO_ERANGE);
    audit_log_close(log);

    /* reopen: same content, appends continue, consistency from the old checkpoint */
    log = open_rw(0);
    assert_null(audit_log_recovery_note(log));
    check_all(log, 10000);
    append_n(log, 10000, 1234, 100);
    assert_int_equal(audit_log_checkpoint_cut(log, NULL), 0);
    audit_checkpoint cp3;
    assert_int_equal(audit_log_checkpoint_latest(log, NULL, NULL, &cp3, NULL), 0);
    assert_int_equal(cp3.size, 11234);
    assert_int_equal(audit_log_prove_consistency(log, cp.size, cp3.size, proof, &num, NULL), 0);
    assert_int_equal(
        audit_merkle_verify_consistency(cp.size, cp3.size, cp.root, cp3.root, proof, num, NULL), 0);
    audit_log_stats st;
    audit_log_get_stats(log, &st);
    assert_int_equal(st.size, 11234);
    assert_int_equal(st.appended, 1234);
    assert_int_equal(st.checkpoint_size, 11234);
    audit_log_close(log);

    /* read-only open sees everything; a second writer is refused while one is open */
    log = open_rw(0);
    audit_log *second = NULL;
    audit_log_open_opts o = {.signers = &nk, .num_signers = 1};
    assert_int_equal(audit_log_open(&second, dir, &o, NULL), DBAO_EINVAL);
    audit_log *ro = NULL;
    audit_log_open_opts oro = {.flags = AUDIT_LOG_READONLY, .trusted = &nk, .num_trusted = 1};
    assert_int_equal(audit_log_open(&ro, dir, &oro, NULL), 0);
    check_all(ro, 11234);
    append_n(log, 11234, 100, 10);
    assert_int_equal(audit_log_refresh(ro, NULL), 0);
    check_all(ro, 11334);
    uint8_t r1[32], r2[32];
    assert_int_equal(audit_merkle_root(r1, 11334, audit_log_hash, ro), 0);
    assert_int_equal(audit_merkle_root(r2, 11334, audit_log_hash, log), 0);
    assert_memory_equal(r1, r2, 32);
    assert_int_equal(audit_log_submit(ro, &(audit_log_req){0}), DBAO_EINVAL);
    audit_log_close(ro);
    audit_log_close(log);
    verify_ok(11334);
    rm_rf(dir);
}

/* ---- concurrency ---- */

typedef struct prod {
    audit_log *log;
    uint64_t base;
    uint64_t *got;
} prod;

static void *
producer(void *arg)
{
    prod *p = arg;
    uint8_t rec[AUDIT_RECORD_MAX];
    for (uint64_t i = 0; i < 1500; i++) {
        uint32_t len = (uint32_t) make_record(rec, p->base + i);
        uint64_t idx = 0;
        if (audit_log_append(p->log, rec, &len, 1, &idx, NULL) != 0) {
            return (void *) 1;
        }
        p->got[i] = idx;
    }
    return NULL;
}

static void
test_concurrent_producers(void **state)
{
    (void) state;
    new_log(1 << 20);
    audit_log *log = open_rw(0);
    enum { T = 6 };
    pthread_t th[T];
    prod p[T];
    for (int t = 0; t < T; t++) {
        p[t].log = log;
        p[t].base = (uint64_t) t * 1000000;
        p[t].got = calloc(1500, sizeof(uint64_t));
        assert_int_equal(pthread_create(&th[t], NULL, producer, &p[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        assert_null(ret);
    }
    assert_int_equal(audit_log_size(log), T * 1500);
    /* each acknowledged index holds that producer's record; indices of a producer increase */
    uint8_t rec[AUDIT_RECORD_MAX];
    for (int t = 0; t < T; t++) {
        for (uint64_t i = 0; i < 1500; i++) {
            size_t len;
            assert_int_equal(audit_log_get(log, p[t].got[i], rec, sizeof rec, &len, NULL), 0);
            assert_int_equal(record_n(rec, len), p[t].base + i);
            if (i > 0) {
                assert_true(p[t].got[i] > p[t].got[i - 1]);
            }
        }
        free(p[t].got);
    }
    audit_log_stats st;
    audit_log_get_stats(log, &st);
    assert_true(st.batches <= st.appended);
    audit_log_close(log);
    verify_ok(T * 1500);
    rm_rf(dir);
}

/* ---- power cuts ---- */

typedef struct acked {
    pthread_mutex_t mu;
    uint64_t *n_at; /* n_at[index] = record number, UINT64_MAX if not acknowledged */
    size_t cap;
} acked;

typedef struct areq {
    audit_log_req req;
    acked *a;
    uint64_t n0;
    uint8_t buf[8 * 600];
    uint32_t lens[8];
} areq;

static void
areq_done(audit_log_req *req)
{
    areq *q = (areq *) req;
    if (req->status == 0) {
        pthread_mutex_lock(&q->a->mu);
        for (size_t i = 0; i < req->num; i++) {
            assert_true(req->first_index + i < q->a->cap);
            q->a->n_at[req->first_index + i] = q->n0 + i;
        }
        pthread_mutex_unlock(&q->a->mu);
    }
    /* freed by the test after the round: abandoned requests never complete */
}

static void
test_powercut(void **state)
{
    (void) state;
    new_log(1 << 20);
    audit__faults f = {.powercut = true};
    acked a;
    pthread_mutex_init(&a.mu, NULL);
    a.cap = 200000;
    a.n_at = malloc(a.cap * sizeof *a.n_at);
    for (size_t i = 0; i < a.cap; i++) {
        a.n_at[i] = UINT64_MAX;
    }
    uint64_t n = 0;
    for (uint64_t round = 0; round < 40; round++) {
        audit__fault_config(&f);
        audit_log *log = open_rw(0);
        uint64_t before = audit_log_size(log);
        /* acknowledged records from earlier rounds are all there and identical */
        uint8_t rec[AUDIT_RECORD_MAX];
        for (uint64_t i = 0; i < before; i++) {
            size_t len;
            assert_int_equal(audit_log_get(log, i, rec, sizeof rec, &len, NULL), 0);
            if (a.n_at[i] != UINT64_MAX) {
                assert_int_equal(record_n(rec, len), a.n_at[i]);
            } else {
                a.n_at[i] = record_n(rec, len); /* survived without an ack: now it is in */
            }
        }
        for (uint64_t i = before; i < a.cap; i++) {
            if (a.n_at[i] != UINT64_MAX) {
                fail_msg("round %" PRIu64 ": acknowledged record %" PRIu64 " lost", round, i);
            }
        }
        /* submit a stream of requests; cut the power at a random moment */
        int k = 20 + (int) (round * 7919 % 200);
        areq **all = calloc((size_t) k, sizeof *all);
        for (int i = 0; i < k; i++) {
            areq *q = calloc(1, sizeof *q);
            all[i] = q;
            q->a = &a;
            q->n0 = n;
            size_t off = 0, num = 1 + (size_t) (i % 8);
            for (size_t j = 0; j < num; j++) {
                q->lens[j] = (uint32_t) make_record(q->buf + off, n++);
                off += q->lens[j];
            }
            q->req.data = q->buf;
            q->req.lens = q->lens;
            q->req.num = num;
            q->req.done = areq_done;
            (void) audit_log_submit(log, &q->req);
            if (i == k / 2 && round % 3 == 0) {
                audit_log_checkpoint_cut(log, NULL);
            }
        }
        usleep((useconds_t) (round * 131 % 3000));
        audit__log_abandon(log); /* the process dies: queued requests never complete */
        audit__fault_powercut(round * 0x9E3779B97F4A7C15ull + 1);
        audit__fault_config(NULL);
        for (int i = 0; i < k; i++) {
            free(all[i]);
        }
        free(all);
    }
    audit_log *log = open_rw(0);
    uint64_t size = audit_log_size(log);
    for (uint64_t i = size; i < a.cap; i++) {
        assert_int_equal(a.n_at[i], UINT64_MAX);
    }
    audit_log_close(log);
    verify_ok(size);
    free(a.n_at);
    rm_rf(dir);
}

/* ---- ENOSPC / EIO: fail closed, alarm recorded ---- */

static int alarms;
static int alarm_code;

static void
on_alarm(void *arg, int code, const char *what)
{
    (void) arg;
    (void) what;
    alarms++;
    alarm_code = code;
}

static void
fail_closed(audit__faults f, bool expect_alarm_record)
{
    new_log(1 << 20);
    audit__fault_config(&f);
    audit_log *log = NULL;
    audit_log_open_opts o = {.signers = &nk, .num_signers = 1, .alarm = on_alarm};
    alarms = 0;
    assert_int_equal(audit_log_open(&log, dir, &o, NULL), 0);
    uint8_t rec[AUDIT_RECORD_MAX];
    uint64_t nacked = 0;
    int rc = 0;
    for (uint64_t i = 0; i < 20000; i++) {
        uint32_t len = (uint32_t) make_record(rec, i);
        uint64_t idx;
        rc = audit_log_append(log, rec, &len, 1, &idx, NULL);
        if (rc != 0) {
            break;
        }
        assert_int_equal(idx, nacked);
        nacked++;
    }
    assert_int_not_equal(rc, 0);
    assert_int_equal(alarms, 1);
    assert_int_not_equal(audit_log_failed(log), 0);
    /* every later append fails at once */
    uint32_t len = (uint32_t) make_record(rec, 99999);
    assert_int_not_equal(audit_log_append(log, rec, &len, 1, NULL, NULL), 0);
    audit_log_close(log);
    audit__fault_config(NULL);
    /* reopen: the acknowledged records, then (ENOSPC) the alarm record */
    log = open_rw(0);
    uint64_t size = audit_log_size(log);
    for (uint64_t i = 0; i < nacked; i++) {
        size_t l;
        assert_int_equal(audit_log_get(log, i, rec, sizeof rec, &l, NULL), 0);
        assert_int_equal(record_n(rec, l), i);
    }
    if (expect_alarm_record) {
        assert_int_equal(size, nacked + 1);
        size_t l;
        assert_int_equal(audit_log_get(log, nacked, rec, sizeof rec, &l, NULL), 0);
        audit_record r;
        audit_record_init(&r);
        assert_int_equal(audit_record_decode(&r, rec, l, NULL), 0);
        assert_string_equal(r.event_type, "audit.alarm");
        assert_int_equal(r.result, AUDIT_RESULT_FAILURE);
        audit_record_cleanup(&r);
    } else {
        assert_true(size >= nacked);
    }
    /* and it works again */
    append_n(log, 500000, 10, 1);
    audit_log_close(log);
    verify_ok(size + 10);
    rm_rf(dir);
}

static void
test_enospc(void **state)
{
    (void) state;
    /* 3 MiB of budget: the 1 MiB segments fill and the third cannot be allocated */
    fail_closed((audit__faults){.enospc_after = 3u << 20}, true);
    /* a write (not an allocation) that fails */
    fail_closed((audit__faults){.enospc_after = 1u << 20}, true);
}

static void
test_eio(void **state)
{
    (void) state;
    fail_closed((audit__faults){.eio_sync = 50}, true);
    fail_closed((audit__faults){.eio_write_after = 200000}, true);
}

/* ---- torn tails ---- */

static char *
seg_path(uint64_t first)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/seg/%016" PRIx64 ".seg", dir, first);
    return p;
}

static uint8_t *
slurp(const char *path, size_t *len)
{
    uint8_t *b = NULL;
    assert_int_equal(dbao_file_read(&b, len, path, (size_t) 1 << 30, NULL), 0);
    return b;
}

static void
spit(const char *path, const uint8_t *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t) len);
    close(fd);
}

/* frame_off returns the offset of record i's frame in a segment image starting at index 0. */
static size_t
frame_off(const uint8_t *b, uint64_t i)
{
    size_t off = AUDIT__SEG_HDR;
    for (uint64_t k = 0; k < i; k++) {
        off += AUDIT__FRAME_OVERHEAD + audit__rd32(b + off);
    }
    return off;
}

static void
test_torn_tail(void **state)
{
    (void) state;
    new_log(1 << 20);
    audit_log *log = open_rw(0);
    append_n(log, 0, 50, 5);
    audit_log_close(log);
    size_t len;
    uint8_t *b = slurp(seg_path(0), &len);
    size_t end = frame_off(b, 50);
    /* a torn frame: a valid-looking header and half a record */
    uint8_t rec[AUDIT_RECORD_MAX];
    size_t rl = make_record(rec, 50);
    uint8_t frame[AUDIT_RECORD_MAX + 16];
    size_t fl = audit__frame_put(frame, 50, rec, (uint32_t) rl);
    memcpy(b + end, frame, fl / 2);
    spit(seg_path(0), b, len);
    verify_ok(50); /* a torn tail is not tampering */
    log = open_rw(0);
    assert_non_null(audit_log_recovery_note(log));
    assert_non_null(strstr(audit_log_recovery_note(log), "torn"));
    assert_int_equal(audit_log_size(log), 50);
    append_n(log, 50, 10, 3);
    check_all(log, 60);
    audit_log_close(log);
    verify_ok(60);
    free(b);

    /* a damaged frame followed by valid ones is damage, not a torn tail: refused */
    b = slurp(seg_path(0), &len);
    size_t o = frame_off(b, 58);
    b[o + 20] ^= 0x40;
    spit(seg_path(0), b, len);
    open_rw(DBAO_EVERIFY);
    audit_verify_report rep = verify_bad();
    assert_int_equal(rep.bad_index, 58);
    free(b);
    rm_rf(dir);
}

/* ---- tampering ---- */

static void
make_closed_log(uint64_t n)
{
    new_log(1 << 20);
    audit_log *log = open_rw(0);
    append_n(log, 0, n, 50);
    audit_log_close(log); /* the final checkpoint covers everything */
    verify_ok(n);
}

static void
rewrite_crc(uint8_t *frame)
{
    uint32_t l = audit__rd32(frame);
    audit__le32(frame + 12 + l, audit__crc32c(0, frame, 12 + (size_t) l));
}

static void
test_tamper(void **state)
{
    (void) state;
    size_t len;
    uint8_t *b;
    audit_verify_report rep;

    /* 1. a flipped byte */
    make_closed_log(300);
    b = slurp(seg_path(0), &len);
    b[frame_off(b, 123) + 40] ^= 1;
    spit(seg_path(0), b, len);
    rep = verify_bad();
    assert_int_equal(rep.bad_index, 123);
    assert_string_equal(rep.bad_file, "seg/0000000000000000.seg");
    assert_int_equal(rep.bad_offset, frame_off(b, 123));
    open_rw(DBAO_EVERIFY);
    free(b);
    rm_rf(dir);

    /* 2. a record rewritten with a valid CRC */
    make_closed_log(300);
    b = slurp(seg_path(0), &len);
    size_t o = frame_off(b, 200);
    b[o + 12 + 60] ^= 0x01; /* inside the record: subject or event fields */
    rewrite_crc(b + o);
    spit(seg_path(0), b, len);
    rep = verify_bad();
    assert_int_equal(rep.bad_index, 200);
    assert_int_equal(rep.bad_offset, o);
    /* Opening trusts the tree cache once it reproduces the signed root (rehashing every record
     * at each start would cost O(n)), so the altered record is caught where it is used: its
     * hash no longer matches the signed tree, and no proof for it verifies. */
    {
        audit_log *log = open_rw(0);
        uint8_t rec[AUDIT_RECORD_MAX], leaf[32], proof[AUDIT_PROOF_MAX * 32];
        size_t rl = 0, num = 0;
        audit_checkpoint cp;
        assert_int_equal(audit_log_get(log, 200, rec, sizeof rec, &rl, NULL), 0);
        audit_leaf_hash(leaf, rec, rl);
        assert_int_equal(audit_log_checkpoint_latest(log, NULL, NULL, &cp, NULL), 0);
        assert_int_equal(audit_log_prove_inclusion(log, 200, cp.size, proof, &num, NULL), 0);
        assert_int_equal(
            audit_merkle_verify_inclusion(leaf, 200, cp.size, proof, num, cp.root, NULL),
            DBAO_EVERIFY);
        audit__log_abandon(log); /* no final checkpoint over the altered data */
    }
    free(b);
    rm_rf(dir);

    /* 3. a deleted record */
    make_closed_log(300);
    b = slurp(seg_path(0), &len);
    o = frame_off(b, 77);
    size_t o2 = frame_off(b, 78);
    memmove(b + o, b + o2, len - o2);
    memset(b + len - (o2 - o), 0, o2 - o);
    spit(seg_path(0), b, len);
    rep = verify_bad();
    assert_int_equal(rep.bad_index, 77);
    open_rw(DBAO_EVERIFY);
    free(b);
    rm_rf(dir);

    /* 4. swapped records (their frames moved as they are) */
    make_closed_log(300);
    b = slurp(seg_path(0), &len);
    o = frame_off(b, 10);
    o2 = frame_off(b, 11);
    size_t o3 = frame_off(b, 12);
    uint8_t *tmp = malloc(o3 - o);
    memcpy(tmp, b + o2, o3 - o2);
    memcpy(tmp + (o3 - o2), b + o, o2 - o);
    memcpy(b + o, tmp, o3 - o);
    free(tmp);
    spit(seg_path(0), b, len);
    rep = verify_bad();
    assert_int_equal(rep.bad_index, 10);
    open_rw(DBAO_EVERIFY);

    /* 5. the same swap with the indices and CRCs rewritten to look consecutive */
    audit__le64(b + o + 4, 10);
    rewrite_crc(b + o);
    size_t onext = o + AUDIT__FRAME_OVERHEAD + audit__rd32(b + o);
    audit__le64(b + onext + 4, 11);
    rewrite_crc(b + onext);
    spit(seg_path(0), b, len);
    rep = verify_bad();
    assert_int_equal(rep.bad_index, 10);
    /* (as in case 2, opening trusts the authenticated tree cache; verify names the record) */
    free(b);
    rm_rf(dir);

    /* 6. a truncated (last) segment */
    make_closed_log(300);
    assert_int_equal(truncate(seg_path(0), (off_t) 20000), 0);
    rep = verify_bad();
    assert_true(rep.bad_index < 300);
    assert_non_null(strstr(rep.what, "truncated"));
    open_rw(DBAO_EVERIFY);
    rm_rf(dir);

    /* 7. a truncated sealed segment (more records than one segment) */
    make_closed_log(6000);
    assert_int_equal(truncate(seg_path(0), (off_t) 500000), 0);
    rep = verify_bad();
    assert_true(rep.bad_index < 6000);
    open_rw(DBAO_EVERIFY);
    rm_rf(dir);

    /* 8. a replaced checkpoint: signed by another key, or by the right key with another root */
    for (int variant = 0; variant < 2; variant++) {
        make_closed_log(300);
        char p[512];
        snprintf(p, sizeof p, "%s/checkpoints", dir);
        b = slurp(p, &len);
        audit_checkpoint cp = {.size = 300};
        snprintf(cp.origin, sizeof cp.origin, ORIGIN);
        memset(cp.root, 0x5a, 32);
        char *note = NULL;
        size_t nl = 0;
        assert_int_equal(audit_checkpoint_sign(&note, &nl, &cp, variant ? &nk : &nk_other, 1, NULL),
                         0);
        /* replace the last frame */
        uint64_t last = AUDIT__CKP_HDR, off = AUDIT__CKP_HDR;
        while (off < len && audit__rd32(b + off) != 0) {
            last = off;
            off += 8 + audit__rd32(b + off);
        }
        uint8_t *nb = calloc(1, last + 8 + nl);
        memcpy(nb, b, last);
        audit__le32(nb + last, (uint32_t) nl);
        audit__le32(nb + last + 4, audit__crc32c(0, note, nl));
        memcpy(nb + last + 8, note, nl);
        spit(p, nb, last + 8 + nl);
        rep = verify_bad();
        if (variant == 0) {
            assert_string_equal(rep.bad_file, "checkpoints");
            assert_int_equal(rep.bad_offset, last);
        } else {
            assert_non_null(strstr(rep.what, "checkpoint"));
        }
        open_rw(DBAO_EVERIFY);
        free(nb);
        free(b);
        dbao_free(note);
        rm_rf(dir);
    }
}

/* ---- requests: shape errors, atomicity ---- */

static void
test_bad_requests(void **state)
{
    (void) state;
    new_log(1 << 20);
    audit_log *log = open_rw(0);
    uint8_t rec[16] = {0};
    uint32_t len0 = 0, len = 16;
    assert_int_equal(audit_log_append(log, rec, &len0, 1, NULL, NULL), DBAO_EINVAL);
    assert_int_equal(audit_log_append(log, rec, &len, 0, NULL, NULL), DBAO_EINVAL);
    uint32_t big = AUDIT_RECORD_MAX + 1;
    assert_int_equal(audit_log_append(log, rec, &big, 1, NULL, NULL), DBAO_EINVAL);
    assert_int_equal(audit_log_size(log), 0);
    audit_log_close(log);
    /* a log directory that is not one */
    audit_log *l2 = NULL;
    audit_log_open_opts o = {.signers = &nk, .num_signers = 1};
    assert_int_equal(audit_log_open(&l2, "/nonexistent-dbao", &o, NULL), DBAO_EFORMAT);
    /* an unknown file in seg/ is refused */
    char p[512];
    snprintf(p, sizeof p, "%s/seg/notes.txt", dir);
    FILE *f = fopen(p, "w");
    fputs("x", f);
    fclose(f);
    open_rw(DBAO_EFORMAT);
    unlink(p);
    /* a newer log.conf version is refused */
    snprintf(p, sizeof p, "%s/log.conf", dir);
    size_t clen;
    uint8_t *c = slurp(p, &clen);
    c[18] = '2';
    spit(p, c, clen);
    open_rw(DBAO_ENOTSUP);
    free(c);
    rm_rf(dir);
}

/* ---- retention ---- */

static void
test_retention(void **state)
{
    (void) state;
    new_log(1 << 20);
    audit_log *log = open_rw(0);
    append_n(log, 0, 6000, 100); /* record times are in November 2025 */
    audit_log_close(log);
    char arch[300];
    snprintf(arch, sizeof arch, "%s/../%s-archive", dir, strrchr(dir, '/') + 1);
    audit_retention_report rep;
    dbao_err err;
    dbao_err_clear(&err);
    int64_t now = audit_now_ns();
    /* nothing may be pruned before it is archived */
    assert_int_equal(audit_log_prune(dir, arch, now, now, &rep, &err), 0);
    assert_int_equal(rep.segments, 0);
    assert_non_null(strstr(rep.stopped_at, "archive"));
    assert_int_equal(audit_log_archive(dir, arch, &rep, &err), 0);
    assert_true(rep.segments >= 1);
    uint64_t archived = rep.segments;
    assert_int_equal(audit_log_archive(dir, arch, &rep, &err), 0);
    assert_int_equal(rep.segments, 0);
    assert_int_equal(rep.skipped, archived);
    /* records younger than 180 days stay, whatever --before says */
    int64_t rec_time = 1764300000000000000LL;
    assert_int_equal(audit_log_prune(dir, arch, now, rec_time + 86400000000000LL * 100, &rep, &err),
                     0);
    assert_int_equal(rep.segments, 0);
    assert_non_null(strstr(rep.stopped_at, "younger"));
    /* a writer holding the lock blocks pruning */
    log = open_rw(0);
    assert_int_equal(audit_log_prune(dir, arch, now, now, &rep, &err), DBAO_EINVAL);
    audit_log_close(log);
    /* an altered archive copy is refused */
    char p[600];
    snprintf(p, sizeof p, "%s/seg/0000000000000000.seg", arch);
    size_t len;
    uint8_t *b = slurp(p, &len);
    b[1000] ^= 1;
    spit(p, b, len);
    assert_int_equal(audit_log_prune(dir, arch, now, now, &rep, &err), DBAO_EVERIFY);
    b[1000] ^= 1;
    spit(p, b, len);
    free(b);
    /* now it goes */
    assert_int_equal(audit_log_prune(dir, arch, now, now, &rep, &err), 0);
    assert_int_equal(rep.segments, archived);
    uint64_t kept = rep.first_kept;
    assert_true(kept > 0 && kept < 6000);
    assert_int_equal(access(seg_path(0), F_OK), -1);
    /* the log still opens, serves what it kept, says where the rest went, proves everything */
    log = open_rw(0);
    assert_int_equal(audit_log_size(log), 6000);
    uint8_t rec[AUDIT_RECORD_MAX];
    assert_int_equal(audit_log_get(log, 0, rec, sizeof rec, &len, &err), DBAO_ERANGE);
    assert_non_null(strstr(err.msg, "archived"));
    assert_int_equal(audit_log_get(log, kept, rec, sizeof rec, &len, NULL), 0);
    assert_int_equal(record_n(rec, len), kept);
    audit_checkpoint cp;
    assert_int_equal(audit_log_checkpoint_latest(log, NULL, NULL, &cp, NULL), 0);
    uint8_t proof[AUDIT_PROOF_MAX * 32], leaf[32];
    size_t num;
    uint8_t *a0 = slurp(p, &len);
    size_t f0 = frame_off(a0, 5);
    audit_leaf_hash(leaf, a0 + f0 + 12, audit__rd32(a0 + f0)); /* record 5, from the archive */
    free(a0);
    assert_int_equal(audit_log_prove_inclusion(log, 5, cp.size, proof, &num, NULL), 0);
    assert_int_equal(audit_merkle_verify_inclusion(leaf, 5, cp.size, proof, num, cp.root, NULL), 0);
    append_n(log, 6000, 100, 10);
    audit_log_close(log);
    audit_verify_report vr;
    assert_int_equal(audit_log_verify_dir(dir, &nk, 1, &vr, &err), 0);
    assert_int_equal(vr.pruned_below, kept);
    assert_int_equal(vr.records, 6100 - kept);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", arch);
    assert_int_equal(system(cmd), 0);
    rm_rf(dir);
}

static void
test_crc32c(void **state)
{
    (void) state;
    assert_int_equal(audit__crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(audit__crc32c(0, "", 0), 0);
    /* chaining, and every length / alignment against a bitwise reference */
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t) (i * 131 + 7);
    }
    for (size_t off = 0; off < 9; off++) {
        for (size_t len = 0; len + off <= sizeof buf; len += 13) {
            uint32_t ref = 0xFFFFFFFFu;
            for (size_t i = 0; i < len; i++) {
                ref ^= buf[off + i];
                for (int k = 0; k < 8; k++) {
                    ref = (ref >> 1) ^ (0x82F63B78u & (0u - (ref & 1)));
                }
            }
            ref = ~ref;
            assert_int_equal(audit__crc32c(0, buf + off, len), ref);
            size_t h = len / 3;
            assert_int_equal(audit__crc32c(audit__crc32c(0, buf + off, h), buf + off + h, len - h),
                             ref);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_append_read_prove),
        cmocka_unit_test(test_concurrent_producers),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_enospc),
        cmocka_unit_test(test_eio),
        cmocka_unit_test(test_powercut),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
