/* common.c: errors, secret hygiene, allocation hooks, hex and whole-file I/O.
 *
 * Key files must never exist with loose permissions, not even for a moment: dbao_file_write
 * creates a unique temporary file (mkostemp: mode 0600 from birth), sets the final mode with
 * fchmod, writes, fsyncs, renames it over the target and fsyncs the folder, so a crash leaves
 * either the old file or the new one, never a torn one (and at worst a stray *.tmp.XXXXXX).
 */
#include "dengbao/common.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
dbao_err_set(dbao_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL) {
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

void
dbao_err_clear(dbao_err *err)
{
    if (err != NULL) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

const char *
dbao_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case DBAO_EFORMAT:
        return "malformed input";
    case DBAO_EVERIFY:
        return "verification failed";
    case DBAO_ECRYPTO:
        return "cryptographic library failure";
    case DBAO_EKEY:
        return "invalid key";
    case DBAO_ENOTSUP:
        return "not supported";
    default:
        if (code < 0 && code > -4096) {
            return strerror(-code);
        }
        return "unknown error";
    }
}

void
dbao_cleanse(void *p, size_t len)
{
    if (p != NULL && len != 0) {
        explicit_bzero(p, len);
    }
}

bool
dbao_ct_memeq(const void *a, const void *b, size_t len)
{
    const volatile uint8_t *x = a;
    const volatile uint8_t *y = b;
    uint8_t acc = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        acc |= (uint8_t) (x[i] ^ y[i]);
    }
    return acc == 0;
}

/* Allocation-failure injection: fail_countdown counts allocations down to the one that fails;
 * -1 means off. Atomic so that multi-threaded tests stay well-defined. */
static _Atomic long fail_countdown = -1;
static _Atomic bool fail_sticky = false;

void
dbao_alloc_fail_after(long n, bool sticky)
{
    atomic_store_explicit(&fail_sticky, sticky, memory_order_relaxed);
    atomic_store_explicit(&fail_countdown, n < 0 ? -1 : n, memory_order_relaxed);
}

static bool
alloc_should_fail(void)
{
    long v = atomic_load_explicit(&fail_countdown, memory_order_relaxed);

    if (v < 0) {
        return false;
    }
    if (v == 0) {
        if (!atomic_load_explicit(&fail_sticky, memory_order_relaxed)) {
            atomic_store_explicit(&fail_countdown, -1, memory_order_relaxed);
        }
        return true;
    }
    atomic_store_explicit(&fail_countdown, v - 1, memory_order_relaxed);
    return false;
}

void *
dbao_malloc(size_t len)
{
    if (alloc_should_fail()) {
        return NULL;
    }
    return malloc(len == 0 ? 1 : len);
}

void *
dbao_calloc(size_t num, size_t len)
{
    if (len != 0 && num > SIZE_MAX / len) {
        return NULL; /* num * len overflows */
    }
    if (alloc_should_fail()) {
        return NULL;
    }
    return calloc(num == 0 ? 1 : num, len == 0 ? 1 : len);
}

void *
dbao_realloc(void *p, size_t len)
{
    if (alloc_should_fail()) {
        return NULL;
    }
    return realloc(p, len == 0 ? 1 : len);
}

void
dbao_free(void *p)
{
    free(p);
}

void
dbao_free_secret(void *p, size_t len)
{
    if (p != NULL) {
        dbao_cleanse(p, len);
        free(p);
    }
}

static const char hex_digits[] = "0123456789abcdef";

void
dbao_hex_encode(char *out, const uint8_t *in, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int
hex_decode_into(uint8_t *out, const char *hex, size_t hex_len, dbao_err *err)
{
    size_t i;

    for (i = 0; i < hex_len; i += 2) {
        int hi = hex_value(hex[i]);
        int lo = hex_value(hex[i + 1]);

        if (hi < 0 || lo < 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "invalid hex digit at offset %zu",
                                hi < 0 ? i : i + 1);
        }
        out[i / 2] = (uint8_t) (hi << 4 | lo);
    }
    return 0;
}

int
dbao_hex_decode(uint8_t **out, size_t *out_len, const char *hex, size_t hex_len, dbao_err *err)
{
    uint8_t *buf;
    int rc;

    *out = NULL;
    *out_len = 0;
    for (size_t i = 0; i < hex_len; i++) {
        if (hex_value(hex[i]) < 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "invalid hex digit at offset %zu", i);
        }
    }
    if (hex_len % 2 != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "odd number of hex digits (%zu)", hex_len);
    }
    buf = dbao_malloc(hex_len / 2);
    if (buf == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory decoding hex");
    }
    rc = hex_decode_into(buf, hex, hex_len, err);
    if (rc != 0) {
        dbao_free_secret(buf, hex_len / 2);
        return rc;
    }
    *out = buf;
    *out_len = hex_len / 2;
    return 0;
}

int
dbao_hex_decode_fixed(uint8_t *out, size_t len, const char *hex, size_t hex_len, dbao_err *err)
{
    int rc;

    if (hex_len != 2 * len) {
        return dbao_err_set(err, DBAO_EFORMAT, "expected %zu hex digits, got %zu", 2 * len,
                            hex_len);
    }
    rc = hex_decode_into(out, hex, hex_len, err);
    if (rc != 0) {
        dbao_cleanse(out, len); /* no half-decoded secret left behind */
    }
    return rc;
}

int
dbao_file_read(uint8_t **out, size_t *out_len, const char *path, size_t max, dbao_err *err)
{
    uint8_t *buf = NULL, *nbuf;
    size_t len = 0, cap = 0;
    int fd, rc = 0;
    bool is_stdin = strcmp(path, "-") == 0;

    *out = NULL;
    *out_len = 0;
    fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return dbao_err_set(err, -errno, "cannot open '%s': %s", path, strerror(errno));
    }
    for (;;) {
        ssize_t n;

        if (cap - len < 4096 + 1) {
            /* Grow geometrically, but never past what max allows (+1 to detect an overrun,
             * +1 for the NUL); written so that max = SIZE_MAX cannot overflow. */
            size_t limit = max > SIZE_MAX - 4096 - 2 ? SIZE_MAX : max + 4096 + 2;
            size_t ncap = cap == 0 ? 8192 : cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;

            if (ncap > limit) {
                ncap = limit;
            }
            if (ncap <= cap) {
                rc = dbao_err_set(err, DBAO_ERANGE, "'%s' is too large to read", path);
                goto out;
            }
            nbuf = dbao_realloc(buf, ncap);
            if (nbuf == NULL) {
                rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory reading '%s'", path);
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        n = read(fd, buf + len, cap - len - 1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = dbao_err_set(err, -errno, "cannot read '%s': %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t) n;
        if (len > max) {
            rc = dbao_err_set(err, DBAO_ERANGE, "'%s' is larger than %zu bytes", path, max);
            goto out;
        }
    }
    if (buf == NULL) {
        buf = dbao_malloc(1);
        if (buf == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory reading '%s'", path);
            goto out;
        }
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    buf = NULL;
out:
    if (!is_stdin) {
        close(fd);
    }
    dbao_free_secret(buf, cap);
    return rc;
}

static int
write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

int
dbao_file_write(const char *path, const void *data, size_t len, unsigned mode, dbao_err *err)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    const char *slash;
    int fd, dfd, rc;

    if (strcmp(path, "-") == 0) {
        rc = write_all(STDOUT_FILENO, data, len);
        if (rc != 0) {
            return dbao_err_set(err, rc, "cannot write to stdout: %s", strerror(-rc));
        }
        return 0;
    }
    /* A unique temporary name per call (mkostemp creates it 0600, O_EXCL): concurrent writers
     * of one path and stale files left by a crash cannot collide with it. */
    if ((size_t) snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= sizeof(tmp)) {
        return dbao_err_set(err, DBAO_ERANGE, "path too long '%s'", path);
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        return dbao_err_set(err, -errno, "cannot create a temporary file for '%s': %s", path,
                            strerror(errno));
    }
    /* The umask may have removed bits but never added any; make the mode exact. */
    rc = 0;
    if (fchmod(fd, mode & 07777) != 0) {
        rc = -errno;
    } else if ((rc = write_all(fd, data, len)) == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        close(fd);
        unlink(tmp);
        return dbao_err_set(err, rc, "cannot write '%s': %s", tmp, strerror(-rc));
    }
    if (close(fd) != 0) {
        rc = -errno;
        unlink(tmp);
        return dbao_err_set(err, rc, "cannot write '%s': %s", tmp, strerror(-rc));
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        unlink(tmp);
        return dbao_err_set(err, rc, "cannot rename '%s' to '%s': %s", tmp, path, strerror(-rc));
    }
    slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        snprintf(dir, sizeof(dir), "%.*s", (int) (slash - path), path);
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void) fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- dbao_buf ---------------------------------------------------------------------------- */

void
dbao_buf_init(dbao_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

int
dbao_buf_reserve(dbao_buf *b, size_t more)
{
    if (more > SIZE_MAX - 1 - b->len)
        return DBAO_ENOMEM;
    size_t need = b->len + more + 1; /* the trailing NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = dbao_realloc(b->data, cap);
    if (p == NULL)
        return DBAO_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int
dbao_buf_put(dbao_buf *b, const void *data, size_t len)
{
    if (dbao_buf_reserve(b, len) != 0)
        return DBAO_ENOMEM;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int
dbao_buf_putc(dbao_buf *b, char c)
{
    return dbao_buf_put(b, &c, 1);
}

int
dbao_buf_printf(dbao_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return DBAO_EINVAL;
    if ((size_t) n < sizeof tmp)
        return dbao_buf_put(b, tmp, (size_t) n);
    if (dbao_buf_reserve(b, (size_t) n) != 0)
        return DBAO_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t) n;
    return 0;
}

void
dbao_buf_reset(dbao_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

char *
dbao_buf_take(dbao_buf *b, size_t *len)
{
    char *p = b->data;
    if (len != NULL)
        *len = b->len;
    dbao_buf_init(b);
    return p;
}

void
dbao_buf_free(dbao_buf *b)
{
    dbao_free(b->data);
    dbao_buf_init(b);
}

void
dbao_buf_free_secret(dbao_buf *b)
{
    if (b->data != NULL)
        dbao_free_secret(b->data, b->cap);
    dbao_buf_init(b);
}
