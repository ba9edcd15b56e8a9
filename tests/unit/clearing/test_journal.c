/* test_journal.c: the clearing journal (journal.c, docs/clearing-journal.md).
 *
 *   - append / sync / reopen / scan, close syncing what is buffered, the writer lock;
 *   - truncation at every byte offset of the last records and of the header: recovery keeps
 *     exactly the whole records before the cut, says so in the note, and the journal goes on;
 *   - damage: a bit flip in the middle is refused (DBAO_EVERIFY, file untouched), at the tail
 *     it is a torn write (truncated); zero fill; a CRC-valid record that does not decode
 *     (DBAO_EFORMAT); a seq gap; header magic / CRC / version / shard / name;
 *   - rotation: many segments, contiguity across them, a missing or partial middle segment;
 *   - snapshots: snapshot + prune + load gives the same state hash as the live engine and as
 *     a replay of the events in memory; a damaged newest snapshot falls back to an older one;
 *     a snapshot beyond the journal is refused; full replay of a pruned journal is refused;
 *   - kill -9: a child appends and syncs in a loop, reporting each durable seq through a
 *     pipe, and is killed at random moments (20 rounds); every reported seq survives.
 * Everything runs in a fresh directory under $TMPDIR (or /tmp) and is removed at the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/clearing.h"
#include "internal.h"
#include "journal_internal.h"
#include "testutil.h"

static char g_root[200];

static void
rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", path, de->d_name);
            rm_rf(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* fresh_dir: an empty journal root for one test. */
static const char *
fresh_dir(const char *name)
{
    static char path[300];
    snprintf(path, sizeof path, "%s/%s", g_root, name);
    rm_rf(path);
    return path;
}

static void
seg_path(char *out, size_t cap, const char *dir, uint64_t first)
{
    char name[64];
    clr__journal_segment_name(name, sizeof name, first);
    snprintf(out, cap, "%s/shard-0/%s", dir, name);
}

static size_t
file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (size_t) st.st_size;
}

static uint8_t *
slurp(const char *path, size_t *len)
{
    uint8_t *d = NULL;
    assert_int_equal(dbao_file_read(&d, len, path, 1 << 30, NULL), 0);
    return d;
}

static void
spit(const char *path, const uint8_t *d, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, d, len), (ssize_t) len);
    close(fd);
}

static clr_event
deposit(uint64_t account, int64_t amount)
{
    clr_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = CLR_EV_DEPOSIT;
    ev.account = account;
    ev.amount = amount;
    return ev;
}

static clr_journal *
open_ok(const char *dir, const clr_journal_opts *opts)
{
    clr_journal *j = NULL;
    dbao_err err;
    int rc = clr_journal_open(&j, dir, 0, opts, &err);
    if (rc != 0) {
        print_error("open: %s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    return j;
}

/* append_n: n deposits in batches of `batch`, each synced. */
static void
append_n(clr_journal *j, size_t n, size_t batch)
{
    clr_event ev[64];
    uint64_t base = clr_journal_last_seq(j);
    assert_true(batch <= 64);
    for (size_t done = 0; done < n;) {
        size_t k = n - done < batch ? n - done : batch;
        for (size_t i = 0; i < k; i++) {
            ev[i] = deposit(1000 + base + done + i, (int64_t) (done + i + 1));
        }
        assert_int_equal(clr_journal_append(j, ev, k, NULL), 0);
        assert_int_equal(clr_journal_sync(j, NULL), 0);
        done += k;
    }
}

typedef struct collect {
    uint64_t next; /* expected seq */
    uint64_t count;
} collect;

static int
collect_fn(void *arg, const clr_event *ev)
{
    collect *c = arg;
    if (ev->seq != c->next) {
        return -1;
    }
    if (ev->type == CLR_EV_DEPOSIT && ev->account != 1000 + ev->seq - 1) {
        return -2;
    }
    c->next++;
    c->count++;
    return 0;
}

/* scan_all: every record from seq 1 is present and contiguous; returns the count. */
static uint64_t
scan_all(const char *dir)
{
    collect c = {1, 0};
    dbao_err err;
    int rc = clr_journal_scan(dir, 0, 1, collect_fn, &c, &err);
    if (rc != 0) {
        print_error("scan: %d %s\n", rc, err.msg);
    }
    assert_int_equal(rc, 0);
    return c.count;
}

static const clr_journal_opts NOSYNC = {.no_sync = true};

static void
test_append_reopen(void **state)
{
    (void) state;
    const char *dir = fresh_dir("basic");
    clr_journal *j = open_ok(dir, NULL);
    assert_int_equal(clr_journal_last_seq(j), 0);
    assert_string_equal(clr_journal_recovery_note(j), "");
    clr_event ev[3] = {deposit(1000, 5), deposit(1001, 6), deposit(1002, 7)};
    assert_int_equal(clr_journal_append(j, ev, 3, NULL), 0);
    assert_int_equal(ev[0].seq, 1);
    assert_int_equal(ev[2].seq, 3);
    assert_true(ev[0].ts_ns > 0);
    assert_int_equal(clr_journal_last_seq(j), 0); /* not durable yet */
    assert_int_equal(clr_journal_sync(j, NULL), 0);
    assert_int_equal(clr_journal_last_seq(j), 3);
    assert_int_equal(clr_journal_sync(j, NULL), 0); /* nothing buffered: a no-op */

    /* The writer lock. */
    clr_journal *j2 = NULL;
    dbao_err err;
    assert_int_equal(clr_journal_open(&j2, dir, 0, NULL, &err), DBAO_EINVAL);
    assert_non_null(strstr(err.msg, "locked"));
    assert_null(j2);

    /* Close syncs what is buffered. */
    append_n(j, 7, 2);
    ev[0] = deposit(1010, 1);
    assert_int_equal(clr_journal_append(j, ev, 1, NULL), 0);
    assert_int_equal(clr_journal_close(j), 0);
    j = open_ok(dir, NULL);
    assert_int_equal(clr_journal_last_seq(j), 11);
    assert_string_equal(clr_journal_recovery_note(j), "");
    assert_int_equal(clr_journal_close(j), 0);
    assert_int_equal(scan_all(dir), 11);

    /* scan from the middle; from 0 = the first available; a callback's stop value. */
    collect c = {5, 0};
    assert_int_equal(clr_journal_scan(dir, 0, 5, collect_fn, &c, NULL), 0);
    assert_int_equal(c.count, 7);
    c = (collect){1, 0};
    assert_int_equal(clr_journal_scan(dir, 0, 0, collect_fn, &c, NULL), 0);
    assert_int_equal(c.count, 11);
    c = (collect){2, 0};
    assert_int_equal(clr_journal_scan(dir, 0, 1, collect_fn, &c, NULL), -1);
    /* A shard that does not exist. */
    assert_true(clr_journal_scan(dir, 3, 1, collect_fn, &c, NULL) < 0);
    clr_journal_close(NULL);
}

/* Truncation at every byte offset from inside the header to the end of the last records. */
static void
test_truncate_every_offset(void **state)
{
    (void) state;
    const char *dir = fresh_dir("trunc");
    clr_journal *j = open_ok(dir, &NOSYNC);
    append_n(j, 12, 5);
    assert_int_equal(clr_journal_close(j), 0);
    char path[1024];
    seg_path(path, sizeof path, dir, 1);
    size_t full_len;
    uint8_t *full = slurp(path, &full_len);
    assert_int_equal(full_len, CLR_JNL_HEADER_LEN + 12 * CLR_JNL_REC_LEN);
    size_t from = full_len - 3 * CLR_JNL_REC_LEN - 1;
    for (size_t cut = 0; cut <= full_len; cut++) {
        if (cut > CLR_JNL_HEADER_LEN + 2 && cut < from) {
            cut = from; /* the middle records behave like the last ones; skip to save time */
        }
        spit(path, full, cut);
        j = open_ok(dir, &NOSYNC);
        uint64_t want = cut < CLR_JNL_HEADER_LEN ? 0 : (cut - CLR_JNL_HEADER_LEN) / CLR_JNL_REC_LEN;
        bool torn = cut < CLR_JNL_HEADER_LEN || (cut - CLR_JNL_HEADER_LEN) % CLR_JNL_REC_LEN != 0;
        assert_int_equal(clr_journal_last_seq(j), want);
        assert_int_equal(clr_journal_recovery_note(j)[0] != '\0', torn);
        assert_int_equal(file_size(path), CLR_JNL_HEADER_LEN + want * CLR_JNL_REC_LEN);
        /* The journal goes on after the cut. */
        append_n(j, 1, 1);
        assert_int_equal(clr_journal_last_seq(j), want + 1);
        assert_int_equal(clr_journal_close(j), 0);
        assert_int_equal(scan_all(dir), want + 1);
        /* The bytes kept are exactly the original prefix. */
        size_t len;
        uint8_t *now = slurp(path, &len);
        size_t keep = CLR_JNL_HEADER_LEN + want * CLR_JNL_REC_LEN;
        assert_memory_equal(now, full, keep);
        dbao_free(now);
    }
    dbao_free(full);
}

/* expect_open_fails: open refuses with `code` and leaves the segment byte for byte as is. */
static void
expect_open_fails(const char *dir, const char *path, int code, const char *needle)
{
    size_t before_len, after_len;
    uint8_t *before = slurp(path, &before_len);
    clr_journal *j = NULL;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = clr_journal_open(&j, dir, 0, &NOSYNC, &err);
    if (rc != code || strstr(err.msg, needle) == NULL) {
        print_error("want %d \"%s\", got %d \"%s\"\n", code, needle, rc, err.msg);
    }
    assert_int_equal(rc, code);
    assert_non_null(strstr(err.msg, needle));
    assert_null(j);
    uint8_t *after = slurp(path, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    dbao_free(before);
    dbao_free(after);
    /* Readers refuse the same way. */
    collect c = {1, 0};
    assert_int_equal(clr_journal_scan(dir, 0, 1, collect_fn, &c, NULL), code);
}

static void
write_fresh(const char *dir, size_t n, uint8_t **data, size_t *len, char *path, size_t cap)
{
    clr_journal *j = open_ok(dir, &NOSYNC);
    append_n(j, n, 4);
    assert_int_equal(clr_journal_close(j), 0);
    seg_path(path, cap, dir, 1);
    *data = slurp(path, len);
}

static void
test_damage(void **state)
{
    (void) state;
    const char *dir = fresh_dir("damage");
    char path[1024];
    uint8_t *d;
    size_t len;
    write_fresh(dir, 10, &d, &len, path, sizeof path);

    /* Every bit of record 3 (payload, CRC, length): refused, nothing changed. */
    size_t r3 = CLR_JNL_HEADER_LEN + 3 * CLR_JNL_REC_LEN;
    for (size_t bit = 0; bit < CLR_JNL_REC_LEN * 8; bit += 7) {
        d[r3 + bit / 8] ^= (uint8_t) (1u << (bit % 8));
        spit(path, d, len);
        expect_open_fails(dir, path, DBAO_EVERIFY, "followed by a valid one");
        d[r3 + bit / 8] ^= (uint8_t) (1u << (bit % 8));
    }
    /* A flip in the last record is a torn tail: truncated, 9 records left. */
    size_t r9 = CLR_JNL_HEADER_LEN + 9 * CLR_JNL_REC_LEN;
    d[r9 + 50] ^= 0x10;
    spit(path, d, len);
    clr_journal *j = open_ok(dir, &NOSYNC);
    assert_int_equal(clr_journal_last_seq(j), 9);
    assert_non_null(strstr(clr_journal_recovery_note(j), "bad record CRC"));
    assert_int_equal(clr_journal_close(j), 0);
    assert_int_equal(file_size(path), r9);
    d[r9 + 50] ^= 0x10;

    /* Zero fill after the last record (a preallocated or half-written tail). */
    uint8_t *z = calloc(1, len + 3 * CLR_JNL_REC_LEN);
    memcpy(z, d, len);
    spit(path, z, len + 3 * CLR_JNL_REC_LEN);
    j = open_ok(dir, &NOSYNC);
    assert_int_equal(clr_journal_last_seq(j), 10);
    assert_non_null(strstr(clr_journal_recovery_note(j), "zero fill"));
    assert_int_equal(clr_journal_close(j), 0);
    /* Zeros and then a valid record again: damage. */
    memcpy(z + len + CLR_JNL_REC_LEN, d + r9, CLR_JNL_REC_LEN);
    spit(path, z, len + 2 * CLR_JNL_REC_LEN);
    expect_open_fails(dir, path, DBAO_EVERIFY, "followed by a valid one");
    free(z);

    /* A CRC-valid record whose event does not decode: format, not a torn write. */
    uint8_t rec[CLR_JNL_REC_LEN];
    clr_event ev = deposit(1, 1);
    ev.seq = 11;
    clr__journal_record(rec, &ev);
    rec[8 + 16] = 42; /* type */
    clr__put_u32(rec + 4, clr__crc32c(clr__crc32c(0, rec, 4), rec + 8, CLR_EVENT_WIRE_LEN));
    uint8_t *d2 = malloc(len + CLR_JNL_REC_LEN);
    memcpy(d2, d, len);
    memcpy(d2 + len, rec, sizeof rec);
    spit(path, d2, len + CLR_JNL_REC_LEN);
    expect_open_fails(dir, path, DBAO_EFORMAT, "unknown type");
    /* A gap in seq. */
    ev.seq = 12;
    clr__journal_record(rec, &ev);
    memcpy(d2 + len, rec, sizeof rec);
    spit(path, d2, len + CLR_JNL_REC_LEN);
    expect_open_fails(dir, path, DBAO_EVERIFY, "expected 11");
    free(d2);

    /* Headers: magic, CRC, version (newer, with a valid CRC), shard. */
    uint8_t h[CLR_JNL_HEADER_LEN];
    memcpy(d2 = malloc(len), d, len);
    d2[0] = 'X';
    spit(path, d2, len);
    expect_open_fails(dir, path, DBAO_EFORMAT, "not a journal segment");
    memcpy(d2, d, len);
    d2[17] ^= 1;
    spit(path, d2, len);
    expect_open_fails(dir, path, DBAO_EVERIFY, "header CRC");
    memcpy(d2, d, len);
    clr__journal_header(h, 0, 1);
    clr__put_u32(h + 8, 2);
    clr__put_u32(h + 28, clr__crc32c(0, h, 28));
    memcpy(d2, h, sizeof h);
    spit(path, d2, len);
    expect_open_fails(dir, path, DBAO_ENOTSUP, "newer");
    clr__journal_header(h, 5, 1);
    memcpy(d2, h, sizeof h);
    spit(path, d2, len);
    expect_open_fails(dir, path, DBAO_EVERIFY, "shard 5");
    clr__journal_header(h, 0, 2);
    memcpy(d2, h, sizeof h);
    spit(path, d2, len);
    expect_open_fails(dir, path, DBAO_EVERIFY, "disagree");
    free(d2);

    /* A stray file named like a segment is refused, not ignored. */
    spit(path, d, len);
    char stray[1024];
    snprintf(stray, sizeof stray, "%s/shard-0/seg-1.jnl", dir);
    spit(stray, d, 1);
    expect_open_fails(dir, path, DBAO_EFORMAT, "unexpected file");
    unlink(stray);
    dbao_free(d);
    assert_int_equal(scan_all(dir), 10);

    /* CRC-32C known answer. */
    assert_int_equal(clr__crc32c(0, "123456789", 9), 0xE3069283u);
}

static size_t
count_files(const char *dir, const char *prefix)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/shard-0", dir);
    DIR *d = opendir(p);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    }
    closedir(d);
    return n;
}

static void
test_rotation(void **state)
{
    (void) state;
    const char *dir = fresh_dir("rotate");
    clr_journal_opts o = {.segment_bytes = CLR_JNL_HEADER_LEN + 5 * CLR_JNL_REC_LEN,
                          .no_sync = true};
    clr_journal *j = open_ok(dir, &o);
    append_n(j, 40, 3);
    assert_int_equal(clr_journal_close(j), 0);
    size_t nseg = count_files(dir, "seg-");
    assert_true(nseg >= 7);
    j = open_ok(dir, &o);
    assert_int_equal(clr_journal_last_seq(j), 40);
    append_n(j, 5, 2);
    assert_int_equal(clr_journal_close(j), 0);
    assert_int_equal(scan_all(dir), 45);

    /* Segment 1 holds 1..6 (two batches of 3), segment 7 starts next. A partial record in a
     * middle segment, then the segment missing: both refused. */
    char path[1024], path7[1024];
    seg_path(path, sizeof path, dir, 1);
    seg_path(path7, sizeof path7, dir, 7);
    assert_int_equal(file_size(path), CLR_JNL_HEADER_LEN + 6 * CLR_JNL_REC_LEN);
    size_t len;
    uint8_t *d = slurp(path7, &len);
    spit(path7, d, len - 1);
    expect_open_fails(dir, path7, DBAO_EVERIFY, "partial record");
    unlink(path7);
    expect_open_fails(dir, path, DBAO_EVERIFY, "next segment starts");
    spit(path7, d, len);
    dbao_free(d);
    assert_int_equal(scan_all(dir), 45);

    /* A crash right after a new segment was created, before its header was written: the
     * empty file is rewritten and the journal goes on. */
    j = open_ok(dir, &o);
    uint64_t last = clr_journal_last_seq(j);
    assert_int_equal(clr_journal_close(j), 0);
    char pnew[1024];
    seg_path(pnew, sizeof pnew, dir, last + 1);
    spit(pnew, (const uint8_t *) "", 0);
    j = open_ok(dir, &o);
    assert_non_null(strstr(clr_journal_recovery_note(j), "torn header"));
    assert_int_equal(clr_journal_last_seq(j), last);
    append_n(j, 3, 3);
    assert_int_equal(clr_journal_close(j), 0);
    assert_int_equal(scan_all(dir), last + 3);
}

/* ---- snapshots: need the engine --------------------------------------------------------- */

static const clr_instrument INSTS[] = {
    {.security = 1, .tick = 1, .lot = 100},
    {.security = 300750, .tick = 1, .lot = 100},
    {.security = 600000, .tick = 1, .lot = 100, .price_lo = 500, .price_hi = 2000},
};
static const clr_refdata REF = {INSTS, 3, {250, 500, 500, 10}};

/* gen_event: a deterministic mix of every type over 12 accounts; many are rejected by the
 * engine, which is fine (rejections are journaled and replayed too). */
static clr_event
gen_event(tu_rng *r, uint64_t i)
{
    clr_event ev;
    memset(&ev, 0, sizeof ev);
    uint64_t acct = 1 + tu_rng_next(r) % 12;
    static const uint32_t secs[] = {1, 300750, 600000};
    if (i < 12) {
        ev.type = CLR_EV_OPEN, ev.account = i + 1, ev.member = 1 + (uint32_t) (i % 3);
        ev.amount = i % 4 == 0 ? 100000 : 0;
        return ev;
    }
    switch (tu_rng_next(r) % 8) {
    case 0:
        ev.type = CLR_EV_DEPOSIT, ev.account = acct, ev.amount = 1 + tu_rng_next(r) % 5000000;
        break;
    case 1:
        ev.type = CLR_EV_XFER_IN, ev.account = acct, ev.security = secs[tu_rng_next(r) % 3];
        ev.qty = 100 * (1 + tu_rng_next(r) % 20);
        break;
    case 2:
    case 3:
        ev.type = CLR_EV_ORDER, ev.account = acct, ev.order_id = 1 + tu_rng_next(r) % 60;
        ev.side = tu_rng_next(r) % 2 ? CLR_SIDE_BUY : CLR_SIDE_SELL;
        ev.security = secs[tu_rng_next(r) % 3], ev.price = 800 + (int64_t) (tu_rng_next(r) % 400);
        ev.qty = 100 * (1 + (int64_t) (tu_rng_next(r) % 5));
        break;
    case 4:
    case 5:
        ev.type = CLR_EV_FILL, ev.account = acct, ev.order_id = 1 + tu_rng_next(r) % 60;
        ev.exec_id = 1 + tu_rng_next(r) % 1000;
        ev.price = 800 + (int64_t) (tu_rng_next(r) % 400), ev.qty = 100;
        break;
    case 6:
        ev.type = CLR_EV_CANCEL, ev.account = acct, ev.order_id = 1 + tu_rng_next(r) % 60;
        break;
    default:
        if (i % 50 == 0) {
            ev.type = CLR_EV_EOD, ev.qty = 20261101 + (int64_t) (i / 50);
        } else {
            ev.type = CLR_EV_WITHDRAW, ev.account = acct, ev.amount = 1 + tu_rng_next(r) % 10000;
        }
        break;
    }
    return ev;
}

static void
hash_of(const clr_engine *e, uint8_t out[32])
{
    assert_int_equal(clr_engine_state_hash(e, out, NULL), 0);
}

static void
test_snapshot_load(void **state)
{
    (void) state;
    const char *dir = fresh_dir("snap");
    clr_journal_opts o = {.segment_bytes = CLR_JNL_HEADER_LEN + 40 * CLR_JNL_REC_LEN,
                          .no_sync = true};
    clr_journal *j = open_ok(dir, &o);
    clr_engine *live = NULL, *mem = NULL;
    assert_int_equal(clr_engine_new(&live, &REF, 0, 1, NULL), 0);
    assert_int_equal(clr_engine_new(&mem, &REF, 0, 1, NULL), 0);
    tu_rng r = {42};
    uint64_t i = 0, accepted = 0;
    dbao_err err;
    for (int round = 0; round < 60; round++) {
        clr_event ev[16];
        size_t k = 1 + tu_rng_next(&r) % 16;
        for (size_t x = 0; x < k; x++) {
            ev[x] = gen_event(&r, i++);
        }
        assert_int_equal(clr_journal_append(j, ev, k, NULL), 0);
        assert_int_equal(clr_journal_sync(j, NULL), 0);
        for (size_t x = 0; x < k; x++) {
            clr_result res;
            assert_int_equal(clr_engine_apply(live, &ev[x], &res, NULL, NULL), 0);
            accepted += res.reject == CLR_OK;
            clr_event copy = ev[x];
            assert_int_equal(clr_engine_apply(mem, &copy, &res, NULL, NULL), 0);
        }
        if (round % 12 == 11) {
            int rc = clr_journal_snapshot(j, live, 2, &err);
            if (rc != 0) {
                print_error("snapshot: %s\n", err.msg);
            }
            assert_int_equal(rc, 0);
        }
    }
    assert_true(accepted > i / 10); /* the stream is not all rejections */
    uint64_t last = clr_journal_last_seq(j);
    assert_int_equal(last, i);
    assert_int_equal(count_files(dir, "snap-"), 2);
    char first_seg[1024];
    seg_path(first_seg, sizeof first_seg, dir, 1);
    assert_int_not_equal(access(first_seg, F_OK), 0); /* pruned */
    /* A snapshot of a seq that is not durable yet is refused. */
    clr_event extra = deposit(1, 1);
    assert_int_equal(clr_journal_append(j, &extra, 1, NULL), 0);
    clr_result res;
    assert_int_equal(clr_engine_apply(live, &extra, &res, NULL, NULL), 0);
    assert_int_equal(clr_journal_snapshot(j, live, 2, NULL), DBAO_EINVAL);
    assert_int_equal(clr_journal_sync(j, NULL), 0);
    clr_event copy = extra;
    assert_int_equal(clr_engine_apply(mem, &copy, &res, NULL, NULL), 0);
    assert_int_equal(clr_journal_close(j), 0);

    uint8_t h_live[32], h_mem[32], h_load[32];
    hash_of(live, h_live);
    hash_of(mem, h_mem);
    assert_memory_equal(h_live, h_mem, 32);
    clr_engine *loaded = NULL;
    int rc = clr_journal_load(&loaded, dir, 0, 1, &REF, false, NULL, NULL, &err);
    if (rc != 0) {
        print_error("load: %s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    hash_of(loaded, h_load);
    assert_memory_equal(h_live, h_load, 32);
    assert_int_equal(clr_engine_seq(loaded), last + 1);
    clr_engine_free(loaded);

    /* Full replay is impossible once segments were pruned. */
    assert_int_equal(clr_journal_load(&loaded, dir, 0, 1, &REF, true, NULL, NULL, &err),
                     DBAO_EVERIFY);
    assert_null(loaded);

    /* The newest snapshot damaged: the older one is used, same state. */
    char snaps[2][1300];
    size_t ns = 0;
    char sd[1024];
    snprintf(sd, sizeof sd, "%s/shard-0", dir);
    DIR *dd = opendir(sd);
    struct dirent *de;
    while ((de = readdir(dd)) != NULL) {
        if (strncmp(de->d_name, "snap-", 5) == 0) {
            snprintf(snaps[ns++], sizeof snaps[0], "%s/%s", sd, de->d_name);
        }
    }
    closedir(dd);
    assert_int_equal(ns, 2);
    const char *newest = strcmp(snaps[0], snaps[1]) > 0 ? snaps[0] : snaps[1];
    const char *oldest = newest == snaps[0] ? snaps[1] : snaps[0];
    size_t slen;
    uint8_t *sbytes = slurp(newest, &slen);
    sbytes[slen / 2] ^= 1;
    spit(newest, sbytes, slen);
    assert_int_equal(clr_journal_load(&loaded, dir, 0, 1, &REF, false, NULL, NULL, &err), 0);
    hash_of(loaded, h_load);
    assert_memory_equal(h_live, h_load, 32);
    clr_engine_free(loaded);
    /* Both damaged: the journal no longer starts at 1, so nothing can rebuild the shard. */
    size_t olen;
    uint8_t *obytes = slurp(oldest, &olen);
    obytes[olen / 2] ^= 1;
    spit(oldest, obytes, olen);
    assert_int_equal(clr_journal_load(&loaded, dir, 0, 1, &REF, false, NULL, NULL, &err),
                     DBAO_EVERIFY);
    obytes[olen / 2] ^= 1;
    spit(oldest, obytes, olen);
    sbytes[slen / 2] ^= 1;
    spit(newest, sbytes, slen);
    dbao_free(obytes);

    /* A snapshot beyond the journal's last record: the journal was lost. */
    char future[1200];
    snprintf(future, sizeof future, "%s/snap-%020llu.bin", sd, (unsigned long long) last + 100);
    spit(future, sbytes, slen);
    dbao_free(sbytes);
    assert_int_equal(clr_journal_load(&loaded, dir, 0, 1, &REF, false, NULL, NULL, &err),
                     DBAO_EVERIFY);
    assert_non_null(strstr(err.msg, "journal lost"));
    clr_journal *j2 = NULL;
    assert_int_equal(clr_journal_open(&j2, dir, 0, &o, &err), DBAO_EVERIFY);
    unlink(future);

    /* Without pruning (a fresh journal, no snapshot) full replay equals the memory replay. */
    const char *dir2 = fresh_dir("snap-full");
    j = open_ok(dir2, &o);
    clr_engine *mem2 = NULL;
    assert_int_equal(clr_engine_new(&mem2, &REF, 0, 1, NULL), 0);
    tu_rng r2 = {7};
    for (uint64_t x = 0; x < 400; x++) {
        clr_event ev = gen_event(&r2, x);
        assert_int_equal(clr_journal_append(j, &ev, 1, NULL), 0);
        assert_int_equal(clr_engine_apply(mem2, &ev, &res, NULL, NULL), 0);
    }
    assert_int_equal(clr_journal_sync(j, NULL), 0);
    uint8_t h_full[32], h_snap[32], h_mem2[32];
    hash_of(mem2, h_mem2);
    /* Readers take no lock: a full replay while the writer is open, before the snapshot
     * prunes the segments. */
    assert_int_equal(clr_journal_load(&loaded, dir2, 0, 1, &REF, true, NULL, NULL, &err), 0);
    hash_of(loaded, h_full);
    clr_engine_free(loaded);
    assert_int_equal(clr_journal_snapshot(j, mem2, 3, NULL), 0);
    assert_int_equal(clr_journal_close(j), 0);
    assert_int_equal(clr_journal_load(&loaded, dir2, 0, 1, &REF, false, NULL, NULL, &err), 0);
    hash_of(loaded, h_snap);
    clr_engine_free(loaded);
    assert_memory_equal(h_full, h_mem2, 32);
    assert_memory_equal(h_snap, h_mem2, 32);

    clr_engine_free(mem2);
    clr_engine_free(live);
    clr_engine_free(mem);
}

/* ---- kill -9 ---------------------------------------------------------------------------- */

static void
child_loop(const char *dir, int wfd, uint64_t seed)
{
    clr_journal *j = NULL;
    if (clr_journal_open(&j, dir, 0, NULL, NULL) != 0) {
        _exit(3);
    }
    tu_rng r = {seed};
    clr_event ev[64];
    for (;;) {
        size_t k = 1 + tu_rng_next(&r) % 64;
        uint64_t base = clr_journal_last_seq(j);
        for (size_t i = 0; i < k; i++) {
            ev[i] = deposit(1000 + base + i, 1);
        }
        if (clr_journal_append(j, ev, k, NULL) != 0 || clr_journal_sync(j, NULL) != 0) {
            _exit(4);
        }
        uint64_t s = clr_journal_last_seq(j);
        if (write(wfd, &s, sizeof s) != (ssize_t) sizeof s) {
            _exit(5);
        }
    }
}

static void
test_kill9(void **state)
{
    (void) state;
    const char *dir = fresh_dir("kill9");
    char dirbuf[1024];
    snprintf(dirbuf, sizeof dirbuf, "%s", dir);
    clr_journal_opts o = {.segment_bytes = 64 << 10};
    tu_rng r = {2026};
    uint64_t reported = 0;
    for (int round = 0; round < 20; round++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child_loop(dirbuf, p[1], tu_rng_next(&r) + (uint64_t) round);
        }
        close(p[1]);
        struct timespec ts = {0, (long) (2 + tu_rng_next(&r) % 40) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* killed, not exited on an error */
        uint64_t s;
        while (read(p[0], &s, sizeof s) == (ssize_t) sizeof s) {
            assert_true(s >= reported);
            reported = s;
        }
        close(p[0]);
        clr_journal *j = open_ok(dirbuf, &o);
        uint64_t last = clr_journal_last_seq(j);
        assert_true(last >= reported);
        assert_int_equal(clr_journal_close(j), 0);
        assert_int_equal(scan_all(dirbuf), last);
    }
    assert_true(reported > 0);
    collect c = {1, 0};
    assert_int_equal(clr_journal_scan(dirbuf, 0, 1, collect_fn, &c, NULL), 0);
    assert_true(c.count >= reported);
    print_message("kill9: %llu records durable after 20 kills, %llu reported\n",
                  (unsigned long long) c.count, (unsigned long long) reported);
}

static int
setup(void **state)
{
    (void) state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/dbao-jnl-XXXXXX", tmp != NULL ? tmp : "/tmp");
    return mkdtemp(g_root) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    (void) state;
    rm_rf(g_root);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_reopen), cmocka_unit_test(test_truncate_every_offset),
        cmocka_unit_test(test_damage),        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_snapshot_load), cmocka_unit_test(test_kill9),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
