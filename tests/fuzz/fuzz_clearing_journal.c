/* fuzz_clearing_journal.c: libFuzzer target for the clearing journal's recovery (journal.c).
 *
 * Input: the first byte picks the layout (bit 0: the input follows a valid segment header,
 * else it is the whole segment file; bit 1: a valid first segment of three records comes
 * first and the input is the second, active, segment starting at seq 4), the rest are the
 * segment bytes. A scan (read-only) and an open (recovery) run over the directory.
 * Invariants: nothing crashes or leaks; a scan either refuses or yields contiguous seqs from
 * 1; open either refuses, or recovers exactly the records the scan saw (a prefix: recovery
 * only ever truncates), and the recovered journal accepts and syncs one more record which a
 * second scan then sees.
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_clearing_journal/ (journal segments with whole, torn and damaged
 * records).
 */
#include <assert.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dengbao/clearing.h"
#include "journal_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[256];
static char g_shard[300];

static void
put_file(const char *name, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    char p[400];
    snprintf(p, sizeof p, "%s/%s", g_shard, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert(fd >= 0);
    assert(write(fd, a, alen) == (ssize_t) alen);
    if (blen > 0) {
        assert(write(fd, b, blen) == (ssize_t) blen);
    }
    close(fd);
}

static void
clean(void)
{
    static const char *names[] = {"seg-00000000000000000001.jnl", "seg-00000000000000000004.jnl",
                                  "seg-00000000000000000002.jnl", "seg-00000000000000000005.jnl",
                                  "lock"};
    char p[400];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_shard, names[i]);
        unlink(p);
    }
}

/* remove_dir: at exit, so that a fuzzing run leaves nothing in /tmp. */
static void
remove_dir(void)
{
    clean();
    rmdir(g_shard);
    rmdir(g_dir);
}

typedef struct seen {
    uint64_t next, count;
} seen;

static int
count_fn(void *arg, const clr_event *ev)
{
    seen *s = arg;
    assert(ev->seq == s->next);
    s->next++;
    s->count++;
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_dir[0] == '\0') {
        snprintf(g_dir, sizeof g_dir, "/tmp/fuzz-clr-jnl-XXXXXX");
        assert(mkdtemp(g_dir) != NULL);
        snprintf(g_shard, sizeof g_shard, "%s/shard-0", g_dir);
        assert(mkdir(g_shard, 0700) == 0);
        atexit(remove_dir);
    }
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0];
    data++;
    size--;
    clean();
    uint64_t first = 1;
    if (mode & 2) {
        uint8_t seg[CLR_JNL_HEADER_LEN + 3 * CLR_JNL_REC_LEN];
        clr__journal_header(seg, 0, 1);
        for (uint64_t i = 0; i < 3; i++) {
            clr_event ev;
            memset(&ev, 0, sizeof ev);
            ev.seq = i + 1;
            ev.type = CLR_EV_DEPOSIT;
            ev.account = 1;
            ev.amount = 100;
            clr__journal_record(seg + CLR_JNL_HEADER_LEN + i * CLR_JNL_REC_LEN, &ev);
        }
        put_file("seg-00000000000000000001.jnl", seg, sizeof seg, NULL, 0);
        first = 4;
    }
    char name[64];
    clr__journal_segment_name(name, sizeof name, first);
    if (mode & 1) {
        uint8_t hdr[CLR_JNL_HEADER_LEN];
        clr__journal_header(hdr, 0, first);
        put_file(name, hdr, sizeof hdr, data, size);
    } else {
        put_file(name, data, size, NULL, 0);
    }

    seen s1 = {1, 0};
    int scan_rc = clr_journal_scan(g_dir, 0, 1, count_fn, &s1, NULL);
    clr_journal *j = NULL;
    clr_journal_opts o = {.no_sync = true};
    int rc = clr_journal_open(&j, g_dir, 0, &o, NULL);
    if (rc == 0) {
        assert(scan_rc == 0);
        assert(clr_journal_last_seq(j) == s1.count);
        clr_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = CLR_EV_EOD;
        ev.qty = 20261130;
        assert(clr_journal_append(j, &ev, 1, NULL) == 0);
        assert(clr_journal_sync(j, NULL) == 0);
        assert(clr_journal_close(j) == 0);
        seen s2 = {1, 0};
        assert(clr_journal_scan(g_dir, 0, 1, count_fn, &s2, NULL) == 0);
        assert(s2.count == s1.count + 1);
    } else {
        assert(j == NULL);
    }
    return 0;
}
