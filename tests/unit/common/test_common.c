/* test_common.c: unit tests for common.h (errors, hex, constant-time helpers, allocation hooks
 * with failure injection, and the file helpers).
 *
 * The file tests work in a fresh mkdtemp() folder under $TMPDIR (or /tmp) that is removed at
 * the end of each test. Allocation-failure injection is always switched off again
 * (dbao_alloc_fail_after(-1, false)) before an assertion can fail, so one failing test does
 * not poison the next.
 *
 * Build: cc -std=gnu11 -Wall -Wextra -Werror -I include -I tests/unit test_common.c
 *        build/libdengbao.a -lcrypto -lcmocka -lpthread
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "dengbao/common.h"
#include "testutil.h"

/* ---- errors ------------------------------------------------------------------------------ */

static void
test_err_set_and_clear(void **state)
{
    dbao_err err;
    int rc;

    (void) state;
    memset(&err, 0x5a, sizeof(err));
    dbao_err_clear(&err);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.msg, "");

    rc = dbao_err_set(&err, DBAO_EFORMAT, "bad hex at offset %d in '%s'", 7, "zz");
    assert_int_equal(rc, DBAO_EFORMAT);
    assert_int_equal(err.code, DBAO_EFORMAT);
    assert_string_equal(err.msg, "bad hex at offset 7 in 'zz'");

    /* A second call replaces the message, it does not append. */
    rc = dbao_err_set(&err, -ENOENT, "cannot open '%s'", "x");
    assert_int_equal(rc, -ENOENT);
    assert_int_equal(err.code, -ENOENT);
    assert_string_equal(err.msg, "cannot open 'x'");

    dbao_err_clear(&err);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.msg, "");

    /* NULL is allowed everywhere. */
    assert_int_equal(dbao_err_set(NULL, DBAO_EKEY, "no key %d", 1), DBAO_EKEY);
    dbao_err_clear(NULL);
}

static void
test_err_truncates_long_message(void **state)
{
    dbao_err err;
    char big[3 * DBAO_ERR_MSG_MAX];

    (void) state;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memset(&err, 0, sizeof(err));
    assert_int_equal(dbao_err_set(&err, DBAO_ERANGE, "%s", big), DBAO_ERANGE);
    assert_int_equal(err.code, DBAO_ERANGE);
    assert_int_equal(strlen(err.msg), DBAO_ERR_MSG_MAX - 1);
    assert_int_equal(err.msg[DBAO_ERR_MSG_MAX - 1], '\0');
}

static void
test_strerror(void **state)
{
    const int codes[] = {
        DBAO_EINVAL,  DBAO_ENOMEM, DBAO_EIO,     DBAO_ERANGE, DBAO_EFORMAT, DBAO_EVERIFY,
        DBAO_ECRYPTO, DBAO_EKEY,   DBAO_ENOTSUP, -ENOENT,     -EACCES,      0,
        -999999,      12345,
    };

    (void) state;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *s = dbao_strerror(codes[i]);

        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
    /* dengbao's own codes must not all share one description. */
    assert_string_not_equal(dbao_strerror(DBAO_EFORMAT), dbao_strerror(DBAO_EVERIFY));
    assert_string_not_equal(dbao_strerror(DBAO_EKEY), dbao_strerror(DBAO_ECRYPTO));
}

/* ---- hex --------------------------------------------------------------------------------- */

static void
test_hex_encode(void **state)
{
    const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff};
    char out[2 * sizeof(in) + 1];
    char empty[1] = {'x'};

    (void) state;
    memset(out, 'x', sizeof(out));
    dbao_hex_encode(out, in, sizeof(in));
    assert_string_equal(out, "00017f80abcdefff");

    dbao_hex_encode(empty, in, 0);
    assert_int_equal(empty[0], '\0');
}

static void
test_hex_decode_cases(void **state)
{
    uint8_t *out = NULL;
    size_t out_len = 99;
    dbao_err err;

    (void) state;
    /* Lower, upper and mixed case all decode. */
    assert_int_equal(dbao_hex_decode(&out, &out_len, "00ff10ab", 8, NULL), 0);
    assert_true(tu_eq_hex(out, out_len, "00ff10ab"));
    dbao_free(out);
    out = NULL;
    assert_int_equal(dbao_hex_decode(&out, &out_len, "ABCDEF0123", 10, NULL), 0);
    assert_true(tu_eq_hex(out, out_len, "abcdef0123"));
    dbao_free(out);
    out = NULL;
    assert_int_equal(dbao_hex_decode(&out, &out_len, "aBcD", 4, NULL), 0);
    assert_true(tu_eq_hex(out, out_len, "abcd"));
    dbao_free(out);
    out = NULL;

    /* Empty input: a non-NULL buffer of length 0. */
    out_len = 99;
    assert_int_equal(dbao_hex_decode(&out, &out_len, "", 0, NULL), 0);
    assert_non_null(out);
    assert_int_equal(out_len, 0);
    dbao_free(out);
    out = NULL;

    /* hex_len, not the NUL, bounds the input. */
    assert_int_equal(dbao_hex_decode(&out, &out_len, "abcdzz", 4, NULL), 0);
    assert_true(tu_eq_hex(out, out_len, "abcd"));
    dbao_free(out);
    out = NULL;

    /* Odd length. */
    memset(&err, 0, sizeof(err));
    assert_int_equal(dbao_hex_decode(&out, &out_len, "abc", 3, &err), DBAO_EFORMAT);
    assert_int_equal(err.code, DBAO_EFORMAT);
    assert_true(strlen(err.msg) > 0);
    assert_int_equal(dbao_hex_decode(&out, &out_len, "a", 1, NULL), DBAO_EFORMAT);

    /* A bad digit; the message gives the offset (4). */
    memset(&err, 0, sizeof(err));
    assert_int_equal(dbao_hex_decode(&out, &out_len, "0011zz22", 8, &err), DBAO_EFORMAT);
    assert_int_equal(err.code, DBAO_EFORMAT);
    assert_non_null(strchr(err.msg, '4'));

    /* Things that are not plain hex digits. */
    const char *bad[] = {"0x00",  " 0", "0 ", "g0", "0G", "-1", "+1", "\t0",
                         "00\n0", ":0", "@0", "`0", "/0", "0[", "0{"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = strlen(bad[i]);

        if (len % 2 == 1) {
            continue;
        }
        assert_int_equal(dbao_hex_decode(&out, &out_len, bad[i], len, NULL), DBAO_EFORMAT);
    }
    /* An embedded NUL counts as a bad digit. */
    assert_int_equal(dbao_hex_decode(&out, &out_len,
                                     "00\0"
                                     "0",
                                     4, NULL),
                     DBAO_EFORMAT);
}

static void
test_hex_decode_every_char(void **state)
{
    (void) state;
    /* Every byte value as the second digit; bytes >= 0x80 catch signed-char table lookups. */
    for (int c = 0; c < 256; c++) {
        char hex[2] = {'0', (char) c};
        uint8_t *out = NULL;
        size_t out_len = 0;
        int want_ok = tu_hex_digit((char) c) >= 0;
        int rc = dbao_hex_decode(&out, &out_len, hex, 2, NULL);

        if (want_ok) {
            assert_int_equal(rc, 0);
            assert_int_equal(out_len, 1);
            assert_int_equal(out[0], tu_hex_digit((char) c));
            dbao_free(out);
        } else {
            assert_int_equal(rc, DBAO_EFORMAT);
        }
        /* And as the first digit. */
        hex[0] = (char) c;
        hex[1] = 'f';
        out = NULL;
        rc = dbao_hex_decode(&out, &out_len, hex, 2, NULL);
        if (want_ok) {
            assert_int_equal(rc, 0);
            assert_int_equal(out[0], tu_hex_digit((char) c) << 4 | 0xf);
            dbao_free(out);
        } else {
            assert_int_equal(rc, DBAO_EFORMAT);
        }
    }
}

static void
test_hex_round_trip_all_bytes(void **state)
{
    uint8_t in[256];
    char hex[2 * sizeof(in) + 1];
    uint8_t *out = NULL;
    size_t out_len = 0;

    (void) state;
    for (size_t i = 0; i < sizeof(in); i++) {
        in[i] = (uint8_t) i;
    }
    dbao_hex_encode(hex, in, sizeof(in));
    assert_int_equal(strlen(hex), 2 * sizeof(in));
    for (size_t i = 0; i < strlen(hex); i++) {
        assert_true((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'));
    }
    assert_int_equal(dbao_hex_decode(&out, &out_len, hex, strlen(hex), NULL), 0);
    assert_true(tu_mem_eq(out, out_len, in, sizeof(in)));
    dbao_free(out);
}

static void
test_hex_decode_fixed(void **state)
{
    uint8_t out[4];
    dbao_err err;

    (void) state;
    memset(out, 0, sizeof(out));
    assert_int_equal(dbao_hex_decode_fixed(out, 4, "DEADbeef", 8, NULL), 0);
    assert_true(tu_eq_hex(out, 4, "deadbeef"));
    assert_int_equal(dbao_hex_decode_fixed(out, 0, "", 0, NULL), 0);

    memset(&err, 0, sizeof(err));
    assert_int_equal(dbao_hex_decode_fixed(out, 4, "deadbe", 6, &err), DBAO_EFORMAT);
    assert_int_equal(err.code, DBAO_EFORMAT);
    assert_int_equal(dbao_hex_decode_fixed(out, 4, "deadbeef00", 10, NULL), DBAO_EFORMAT);
    assert_int_equal(dbao_hex_decode_fixed(out, 4, "deadbee", 7, NULL), DBAO_EFORMAT);
    assert_int_equal(dbao_hex_decode_fixed(out, 4, "deadbeeg", 8, NULL), DBAO_EFORMAT);
    assert_int_equal(dbao_hex_decode_fixed(out, 2, "", 0, NULL), DBAO_EFORMAT);
}

/* ---- constant-time helpers --------------------------------------------------------------- */

static void
test_ct_memeq(void **state)
{
    uint8_t a[64], b[64];

    (void) state;
    for (size_t i = 0; i < sizeof(a); i++) {
        a[i] = (uint8_t) (i * 7 + 3);
    }
    memcpy(b, a, sizeof(a));
    assert_true(dbao_ct_memeq(a, b, sizeof(a)));
    assert_true(dbao_ct_memeq(a, b, 0));
    assert_true(dbao_ct_memeq(a, a, sizeof(a)));
    /* Every single-bit difference at every position is seen. */
    for (size_t i = 0; i < sizeof(a); i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (uint8_t) (1u << bit);
            assert_false(dbao_ct_memeq(a, b, sizeof(a)));
            assert_true(dbao_ct_memeq(a, b, i)); /* a prefix before the difference */
            b[i] ^= (uint8_t) (1u << bit);
        }
    }
    assert_true(dbao_ct_memeq(a, b, sizeof(a)));
}

static void
test_cleanse(void **state)
{
    uint8_t buf[100];

    (void) state;
    memset(buf, 0xa5, sizeof(buf));
    dbao_cleanse(buf + 10, 50);
    assert_true(tu_is_zero(buf + 10, 50));
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(buf[i], 0xa5);
    }
    for (size_t i = 60; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], 0xa5);
    }
    dbao_cleanse(buf, 0);
    assert_int_equal(buf[0], 0xa5);
}

/* ---- allocation and failure injection ---------------------------------------------------- */

static void
test_alloc_basic(void **state)
{
    uint8_t *p, *q;

    (void) state;
    dbao_alloc_fail_after(-1, false);
    p = dbao_malloc(100);
    assert_non_null(p);
    memset(p, 0x11, 100);
    q = dbao_realloc(p, 10000);
    assert_non_null(q);
    for (size_t i = 0; i < 100; i++) {
        assert_int_equal(q[i], 0x11);
    }
    dbao_free(q);

    p = dbao_calloc(50, 40);
    assert_non_null(p);
    assert_true(tu_is_zero(p, 2000));
    dbao_free_secret(p, 2000);

    /* realloc(NULL, n) behaves as malloc. */
    p = dbao_realloc(NULL, 32);
    assert_non_null(p);
    dbao_free(p);

    /* calloc must detect num * len overflow. */
    assert_null(dbao_calloc(SIZE_MAX / 2, 3));
    assert_null(dbao_calloc(3, SIZE_MAX / 2));

    dbao_free(NULL);
    dbao_free_secret(NULL, 0);
}

static void
test_alloc_fail_after(void **state)
{
    void *a, *b, *c, *d;

    (void) state;
    /* n = 0: the next allocation fails, the one after succeeds. */
    dbao_alloc_fail_after(0, false);
    a = dbao_malloc(8);
    b = dbao_malloc(8);
    dbao_alloc_fail_after(-1, false);
    assert_null(a);
    assert_non_null(b);
    dbao_free(b);

    /* n = 2: two succeed, the third fails, then it is over. */
    dbao_alloc_fail_after(2, false);
    a = dbao_malloc(8);
    b = dbao_calloc(1, 8);
    c = dbao_malloc(8);
    d = dbao_malloc(8);
    dbao_alloc_fail_after(-1, false);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_non_null(d);
    dbao_free(a);
    dbao_free(b);
    dbao_free(d);

    /* Sticky: the n-th and every later allocation fail until switched off. */
    dbao_alloc_fail_after(1, true);
    a = dbao_malloc(8);
    b = dbao_malloc(8);
    c = dbao_calloc(2, 8);
    d = dbao_malloc(8);
    dbao_alloc_fail_after(-1, false);
    assert_non_null(a);
    assert_null(b);
    assert_null(c);
    assert_null(d);
    dbao_free(a);

    /* Switched off: allocations work again. */
    a = dbao_malloc(8);
    assert_non_null(a);
    dbao_free(a);
}

static void
test_alloc_fail_realloc_keeps_block(void **state)
{
    uint8_t *p, *q;

    (void) state;
    p = dbao_malloc(16);
    assert_non_null(p);
    memset(p, 0x42, 16);
    dbao_alloc_fail_after(0, false);
    q = dbao_realloc(p, 1 << 20);
    dbao_alloc_fail_after(-1, false);
    assert_null(q);
    /* On failure the old block is untouched and still owned by the caller. */
    for (size_t i = 0; i < 16; i++) {
        assert_int_equal(p[i], 0x42);
    }
    dbao_free(p);
}

static void
test_hex_decode_enomem(void **state)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc;

    (void) state;
    dbao_alloc_fail_after(0, true);
    rc = dbao_hex_decode(&out, &out_len, "0011", 4, NULL);
    dbao_alloc_fail_after(-1, false);
    assert_int_equal(rc, DBAO_ENOMEM);

    dbao_alloc_fail_after(0, true);
    rc = dbao_hex_decode(&out, &out_len, "", 0, NULL);
    dbao_alloc_fail_after(-1, false);
    assert_int_equal(rc, DBAO_ENOMEM);
}

/* ---- files ------------------------------------------------------------------------------- */

typedef struct tmpdir {
    char path[PATH_MAX];
} tmpdir;

static void
tmpdir_make(tmpdir *t)
{
    const char *base = getenv("TMPDIR");

    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    snprintf(t->path, sizeof(t->path), "%s/dbao_test_common.XXXXXX", base);
    assert_non_null(mkdtemp(t->path));
}

static void
tmpdir_file(const tmpdir *t, char *out, size_t out_size, const char *name)
{
    int n = snprintf(out, out_size, "%s/%s", t->path, name);

    assert_true(n > 0 && (size_t) n < out_size);
}

static size_t
tmpdir_count(const tmpdir *t)
{
    DIR *d = opendir(t->path);
    struct dirent *e;
    size_t n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void
tmpdir_remove(const tmpdir *t)
{
    DIR *d = opendir(t->path);
    struct dirent *e;
    char p[PATH_MAX];

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (snprintf(p, sizeof(p), "%s/%s", t->path, e->d_name) >= (int) sizeof(p)) {
            continue;
        }
        if (unlink(p) != 0) {
            rmdir(p);
        }
    }
    closedir(d);
    rmdir(t->path);
}

static void
write_plain(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t) len);
    close(fd);
}

static void
test_file_round_trip(void **state)
{
    tmpdir t;
    char path[PATH_MAX];
    uint8_t data[1000];
    uint8_t *out = NULL;
    size_t out_len = 0;
    struct stat st;
    dbao_err err;

    (void) state;
    tmpdir_make(&t);
    tmpdir_file(&t, path, sizeof(path), "key.bin");
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t) (i * 31); /* includes NUL bytes */
    }
    memset(&err, 0, sizeof(err));
    assert_int_equal(dbao_file_write(path, data, sizeof(data), 0600, &err), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, (off_t) sizeof(data));
    assert_int_equal(st.st_mode & 07777, 0600);
    /* The atomic write leaves no temporary file behind. */
    assert_int_equal(tmpdir_count(&t), 1);

    assert_int_equal(dbao_file_read(&out, &out_len, path, sizeof(data), &err), 0);
    assert_true(tu_mem_eq(out, out_len, data, sizeof(data)));
    assert_int_equal(out[out_len], '\0');
    dbao_free(out);

    /* Overwriting replaces content and mode (a new file is renamed over the old one). */
    write_plain(path, "old contents that are longer", 28, 0644);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(dbao_file_write(path, "new", 3, 0600, NULL), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    out = NULL;
    assert_int_equal(dbao_file_read(&out, &out_len, path, 100, NULL), 0);
    assert_true(tu_mem_eq(out, out_len, "new", 3));
    assert_int_equal(out[3], '\0');
    dbao_free(out);
    assert_int_equal(tmpdir_count(&t), 1);

    tmpdir_remove(&t);
}

static void
test_file_modes(void **state)
{
    tmpdir t;
    char path[PATH_MAX];
    struct stat st;
    const unsigned modes[] = {0600, 0640, 0644, 0400};
    mode_t old_umask = umask(022);

    (void) state;
    tmpdir_make(&t);
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        char name[32];

        snprintf(name, sizeof(name), "f%zu", i);
        tmpdir_file(&t, path, sizeof(path), name);
        assert_int_equal(dbao_file_write(path, "x", 1, modes[i], NULL), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, modes[i]);
    }
    assert_int_equal(tmpdir_count(&t), sizeof(modes) / sizeof(modes[0]));
    umask(old_umask);
    tmpdir_remove(&t);
}

static void
test_file_limits_and_errors(void **state)
{
    tmpdir t;
    char path[PATH_MAX], missing[PATH_MAX], nodir[PATH_MAX];
    uint8_t *out = NULL;
    size_t out_len = 99;
    dbao_err err;
    uint8_t data[100];

    (void) state;
    tmpdir_make(&t);
    tmpdir_file(&t, path, sizeof(path), "hundred");
    memset(data, 'z', sizeof(data));
    write_plain(path, data, sizeof(data), 0600);

    /* Exactly max bytes is fine, one more than max is DBAO_ERANGE. */
    assert_int_equal(dbao_file_read(&out, &out_len, path, 100, NULL), 0);
    assert_int_equal(out_len, 100);
    dbao_free(out);
    out = NULL;
    memset(&err, 0, sizeof(err));
    assert_int_equal(dbao_file_read(&out, &out_len, path, 99, &err), DBAO_ERANGE);
    assert_int_equal(err.code, DBAO_ERANGE);
    assert_int_equal(dbao_file_read(&out, &out_len, path, 0, NULL), DBAO_ERANGE);

    /* An empty file gives an empty NUL-terminated buffer. */
    tmpdir_file(&t, path, sizeof(path), "empty");
    write_plain(path, "", 0, 0600);
    out = NULL;
    out_len = 99;
    assert_int_equal(dbao_file_read(&out, &out_len, path, 0, NULL), 0);
    assert_non_null(out);
    assert_int_equal(out_len, 0);
    assert_int_equal(out[0], '\0');
    dbao_free(out);
    out = NULL;

    /* A missing file is -ENOENT, with the detail in err. */
    tmpdir_file(&t, missing, sizeof(missing), "does-not-exist");
    memset(&err, 0, sizeof(err));
    assert_int_equal(dbao_file_read(&out, &out_len, missing, 100, &err), -ENOENT);
    assert_int_equal(err.code, -ENOENT);
    assert_true(strlen(err.msg) > 0);

    /* Writing into a missing folder fails with -ENOENT and creates nothing. */
    tmpdir_file(&t, nodir, sizeof(nodir), "no-such-dir/file");
    assert_int_equal(dbao_file_write(nodir, "x", 1, 0600, NULL), -ENOENT);

    /* Reading a folder fails cleanly. */
    assert_true(dbao_file_read(&out, &out_len, t.path, 100, NULL) < 0);

    tmpdir_remove(&t);
}

static void
test_file_large(void **state)
{
    tmpdir t;
    char path[PATH_MAX];
    const size_t len = (1u << 20) + 123;
    uint8_t *data = tu_xmalloc(len);
    uint8_t *out = NULL;
    size_t out_len = 0;
    tu_rng rng = {1};

    (void) state;
    tu_fill(&rng, data, len);
    tmpdir_make(&t);
    tmpdir_file(&t, path, sizeof(path), "big");
    assert_int_equal(dbao_file_write(path, data, len, 0600, NULL), 0);
    assert_int_equal(dbao_file_read(&out, &out_len, path, len, NULL), 0);
    assert_true(tu_mem_eq(out, out_len, data, len));
    assert_int_equal(out[len], '\0');
    dbao_free(out);
    assert_int_equal(dbao_file_read(&out, &out_len, path, len - 1, NULL), DBAO_ERANGE);
    free(data);
    tmpdir_remove(&t);
}

static void
test_file_read_unlimited_max(void **state)
{
    /* A caller with no size limit passes SIZE_MAX; the whole file must still be read. */
    tmpdir t;
    char path[PATH_MAX];
    uint8_t data[10000];
    const size_t maxes[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4096, SIZE_MAX / 2};

    (void) state;
    memset(data, 'x', sizeof(data));
    tmpdir_make(&t);
    tmpdir_file(&t, path, sizeof(path), "unlimited");
    write_plain(path, data, sizeof(data), 0600);
    for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        int rc = dbao_file_read(&out, &out_len, path, maxes[i], NULL);

        if (rc != 0 || out_len != sizeof(data)) {
            dbao_free(out);
            tmpdir_remove(&t);
            fail_msg("dbao_file_read(max = SIZE_MAX - %zu) of a %zu-byte file returned %d with "
                     "%zu bytes",
                     SIZE_MAX - maxes[i], sizeof(data), rc, out_len);
        }
        assert_true(tu_mem_eq(out, out_len, data, sizeof(data)));
        dbao_free(out);
    }
    tmpdir_remove(&t);
}

typedef struct writer_arg {
    const char *path;
    char byte;
    int failures;
    int first_error;
} writer_arg;

static void *
writer_main(void *p)
{
    writer_arg *a = p;
    char buf[64];

    memset(buf, a->byte, sizeof(buf));
    for (int i = 0; i < 300; i++) {
        int rc = dbao_file_write(a->path, buf, sizeof(buf), 0600, NULL);

        if (rc != 0) {
            if (a->failures++ == 0) {
                a->first_error = rc;
            }
        }
    }
    return NULL;
}

static void
test_file_write_concurrent_same_path(void **state)
{
    /* common.h: every function is thread-safe. Two threads replacing the same file must both
     * succeed every time (last rename wins), and leave no temporary files behind. */
    tmpdir t;
    char path[PATH_MAX];
    pthread_t th[2];
    writer_arg args[2];
    uint8_t *out = NULL;
    size_t out_len = 0;

    (void) state;
    tmpdir_make(&t);
    tmpdir_file(&t, path, sizeof(path), "shared");
    for (int i = 0; i < 2; i++) {
        args[i] = (writer_arg){.path = path, .byte = (char) ('a' + i)};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &args[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    if (args[0].failures != 0 || args[1].failures != 0) {
        tmpdir_remove(&t);
        fail_msg("concurrent dbao_file_write to one path: %d and %d of 300 calls failed (first "
                 "error %d, %d)",
                 args[0].failures, args[1].failures, args[0].first_error, args[1].first_error);
    }
    assert_int_equal(dbao_file_read(&out, &out_len, path, 100, NULL), 0);
    assert_int_equal(out_len, 64);
    assert_true(out[0] == 'a' || out[0] == 'b');
    for (size_t i = 1; i < out_len; i++) {
        assert_int_equal(out[i], out[0]); /* never a mix of the two */
    }
    dbao_free(out);
    assert_int_equal(tmpdir_count(&t), 1);
    tmpdir_remove(&t);
}

static void
test_file_write_stale_temp(void **state)
{
    /* A writer that crashed between creating its temporary file and renaming it leaves the
     * temporary behind; in a container the restarted daemon often has the same pid. The next
     * write must still succeed. White-box: src/common/common.c names the temporary
     * "<path>.tmp.<pid>"; if that changes this test only loses its bite. */
    tmpdir t;
    char path[PATH_MAX], stale[PATH_MAX + 32];
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc;

    (void) state;
    tmpdir_make(&t);
    tmpdir_file(&t, path, sizeof(path), "key.pem");
    snprintf(stale, sizeof(stale), "%s.tmp.%ld", path, (long) getpid());
    write_plain(stale, "half-written", 12, 0600);
    rc = dbao_file_write(path, "fresh", 5, 0600, NULL);
    if (rc != 0) {
        unlink(stale);
        tmpdir_remove(&t);
        fail_msg("dbao_file_write with a stale temporary file present returned %d (%s)", rc,
                 dbao_strerror(rc));
    }
    assert_int_equal(dbao_file_read(&out, &out_len, path, 100, NULL), 0);
    assert_true(tu_mem_eq(out, out_len, "fresh", 5));
    dbao_free(out);
    unlink(stale);
    tmpdir_remove(&t);
}

static void
test_file_stdio(void **state)
{
    tmpdir t;
    char path[PATH_MAX];
    int saved, fd;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc;
    char buf[64];
    ssize_t n;

    (void) state;
    tmpdir_make(&t);

    /* "-" reads standard input. */
    tmpdir_file(&t, path, sizeof(path), "in");
    write_plain(path, "from stdin", 10, 0600);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDIN_FILENO) >= 0);
    close(fd);
    rc = dbao_file_read(&out, &out_len, "-", 100, NULL);
    assert_true(dup2(saved, STDIN_FILENO) >= 0);
    close(saved);
    assert_int_equal(rc, 0);
    assert_true(tu_mem_eq(out, out_len, "from stdin", 10));
    dbao_free(out);

    /* "-" writes standard output. */
    tmpdir_file(&t, path, sizeof(path), "out");
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDOUT_FILENO) >= 0);
    close(fd);
    rc = dbao_file_write("-", "to stdout", 9, 0600, NULL);
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    assert_int_equal(rc, 0);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    n = read(fd, buf, sizeof(buf));
    close(fd);
    assert_true(tu_mem_eq(buf, n < 0 ? 0 : (size_t) n, "to stdout", 9));

    tmpdir_remove(&t);
}

static void
test_file_read_alloc_failure_sweep(void **state)
{
    tmpdir t;
    char path[PATH_MAX];
    long n;
    bool saw_enomem = false;

    (void) state;
    tmpdir_make(&t);
    tmpdir_file(&t, path, sizeof(path), "sweep");
    write_plain(path, "0123456789abcdef", 16, 0600);
    for (n = 0; n < 1000; n++) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        int rc_r, rc_w;

        dbao_alloc_fail_after(n, false);
        rc_r = dbao_file_read(&out, &out_len, path, 100, NULL);
        dbao_alloc_fail_after(-1, false);
        if (rc_r == 0) {
            assert_true(tu_mem_eq(out, out_len, "0123456789abcdef", 16));
            dbao_free(out);
        } else {
            assert_int_equal(rc_r, DBAO_ENOMEM);
            saw_enomem = true;
        }
        dbao_alloc_fail_after(n, false);
        rc_w = dbao_file_write(path, "0123456789abcdef", 16, 0600, NULL);
        dbao_alloc_fail_after(-1, false);
        assert_true(rc_w == 0 || rc_w == DBAO_ENOMEM);
        if (rc_r == 0 && rc_w == 0) {
            break;
        }
    }
    assert_true(n < 1000);
    /* dbao_file_read allocates its buffer with dbao_malloc, so n = 0 must have failed. */
    assert_true(saw_enomem);
    /* No temporary files left behind by failed writes. */
    assert_int_equal(tmpdir_count(&t), 1);
    tmpdir_remove(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_and_clear),
        cmocka_unit_test(test_err_truncates_long_message),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_hex_decode_cases),
        cmocka_unit_test(test_hex_decode_every_char),
        cmocka_unit_test(test_hex_round_trip_all_bytes),
        cmocka_unit_test(test_hex_decode_fixed),
        cmocka_unit_test(test_ct_memeq),
        cmocka_unit_test(test_cleanse),
        cmocka_unit_test(test_alloc_basic),
        cmocka_unit_test(test_alloc_fail_after),
        cmocka_unit_test(test_alloc_fail_realloc_keeps_block),
        cmocka_unit_test(test_hex_decode_enomem),
        cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_file_modes),
        cmocka_unit_test(test_file_limits_and_errors),
        cmocka_unit_test(test_file_large),
        cmocka_unit_test(test_file_read_unlimited_max),
        cmocka_unit_test(test_file_write_concurrent_same_path),
        cmocka_unit_test(test_file_write_stale_temp),
        cmocka_unit_test(test_file_stdio),
        cmocka_unit_test(test_file_read_alloc_failure_sweep),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
