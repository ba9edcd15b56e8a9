/* accesslog.c: the gateway's access log, one JSON object per line.
 *
 * Line format (fields with a NULL/zero "none" value are omitted; keys in this order):
 *   {"ts":"2026-11-28T23:40:01.123456Z","client":"..","method":"..","host":"..","path":"..",
 *    "status":200,"bytes_in":0,"bytes_out":512,"duration_us":1234,"route":"..",
 *    "upstream":"..","upstream_status":200,"upstream_us":1000,"attempts":1,
 *    "trace_id":"..","tls":true,"identity":"..","error":".."}
 * ("tls" is always present; "upstream_status", "upstream_us" and "attempts" only when an
 * upstream was tried.) The query string is never logged (it can carry personal data).
 *
 * Written by hand for the hot path: JSON string escaping (", \, control characters as \n, \r,
 * \t or \u00XX, invalid UTF-8 bytes each replaced by \ufffd, so a line is always valid JSON
 * and valid UTF-8), decimal numbers, and the timestamp, whose date-time part comes from
 * gmtime_r once per second per worker and is then copied. Strings are truncated (path to 1024
 * bytes, other strings to 256) so that a line is at most LINE_MAX bytes.
 *
 * Buffering: one 64 KiB buffer per worker, used only by that worker's thread; it is written
 * with one write(2) (O_APPEND: lines from different workers never interleave) when it passes
 * 32 KiB or on gw_accesslog_flush. Since a line is at most 32 KiB and the buffer is flushed as
 * soon as it passes 32 KiB, a line always fits. Rotation: gw_accesslog_reopen opens the new
 * file, then swaps the descriptor under the mutex that writers take only while flushing, then
 * closes the old one. A failed write drops the buffered lines: they are counted
 * (gw_accesslog_dropped) and reported on stderr at most once a minute.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/gateway.h"

#define BUF_CAP   (64 * 1024)
#define FLUSH_AT  (32 * 1024)
#define LINE_MAX_ (32 * 1024)
#define PATH_MAX_ 1024
#define STR_MAX   256

typedef struct shard {
    _Alignas(64) char buf[BUF_CAP];
    size_t len;
    uint64_t lines;
    int64_t ts_sec; /* cached second and its "YYYY-MM-DDTHH:MM:SS" */
    char ts_text[20];
} shard;

struct gw_accesslog {
    pthread_mutex_t mu;
    int fd;
    bool is_stdout;
    char *path;
    unsigned workers;
    shard *shards;
    atomic_uint_fast64_t dropped;
    atomic_int_fast64_t last_report; /* CLOCK_MONOTONIC seconds of the last stderr report */
};

static int
open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int
gw_accesslog_open(gw_accesslog **out, const char *path, unsigned workers, dbao_err *err)
{
    if (out == NULL || path == NULL || workers == 0)
        return dbao_err_set(err, DBAO_EINVAL, "gw_accesslog_open: bad arguments");
    *out = NULL;
    gw_accesslog *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    l->shards = aligned_alloc(64, sizeof(shard) * workers);
    l->path = strdup(path);
    if (l->shards == NULL || l->path == NULL) {
        free(l->shards);
        free(l->path);
        free(l);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < workers; i++) {
        l->shards[i].len = 0;
        l->shards[i].lines = 0;
        l->shards[i].ts_sec = -1;
    }
    l->workers = workers;
    if (strcmp(path, "-") == 0) {
        l->is_stdout = true;
        l->fd = STDOUT_FILENO;
    } else {
        l->fd = open_file(path);
        if (l->fd < 0) {
            int e = errno;
            free(l->shards);
            free(l->path);
            free(l);
            return dbao_err_set(err, -e, "access log %s: %s", path, strerror(e));
        }
    }
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->dropped, 0);
    atomic_init(&l->last_report, -1000);
    *out = l;
    return 0;
}

static void
report_failure(gw_accesslog *l, int e, uint64_t lines)
{
    uint64_t total = atomic_fetch_add(&l->dropped, lines) + lines;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int_fast64_t last = atomic_load(&l->last_report);
    if ((int_fast64_t) ts.tv_sec - last < 60)
        return;
    if (!atomic_compare_exchange_strong(&l->last_report, &last, (int_fast64_t) ts.tv_sec))
        return;
    fprintf(stderr, "dengbao gateway: access log %s: write failed: %s (%llu lines dropped)\n",
            l->path, strerror(e), (unsigned long long) total);
}

void
gw_accesslog_flush(gw_accesslog *l, unsigned worker)
{
    if (l == NULL || worker >= l->workers)
        return;
    shard *s = &l->shards[worker];
    if (s->len == 0)
        return;
    int e = 0;
    pthread_mutex_lock(&l->mu);
    size_t off = 0;
    while (off < s->len) {
        ssize_t n = write(l->fd, s->buf + off, s->len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            break;
        }
        if (n == 0) {
            e = EIO;
            break;
        }
        off += (size_t) n;
    }
    pthread_mutex_unlock(&l->mu);
    if (e != 0)
        report_failure(l, e, s->lines); /* a partly written line may be counted as dropped */
    s->len = 0;
    s->lines = 0;
}

int
gw_accesslog_reopen(gw_accesslog *l, dbao_err *err)
{
    if (l == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "gw_accesslog_reopen: NULL log");
    if (l->is_stdout)
        return 0;
    int fd = open_file(l->path);
    if (fd < 0) {
        int e = errno;
        return dbao_err_set(err, -e, "access log %s: %s", l->path, strerror(e));
    }
    pthread_mutex_lock(&l->mu);
    int old = l->fd;
    l->fd = fd;
    pthread_mutex_unlock(&l->mu);
    close(old);
    return 0;
}

void
gw_accesslog_close(gw_accesslog *l)
{
    if (l == NULL)
        return;
    if (!l->is_stdout && l->fd >= 0)
        close(l->fd);
    pthread_mutex_destroy(&l->mu);
    free(l->shards);
    free(l->path);
    free(l);
}

uint64_t
gw_accesslog_dropped(const gw_accesslog *l)
{
    return l ? atomic_load(&((gw_accesslog *) l)->dropped) : 0;
}

/* ---- line building (no bounds checks inside: LINE_MAX_ bounds a line) ---- */

static char *
put_lit(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define LIT(p, s) put_lit((p), (s), sizeof(s) - 1)

static char *
put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *
put_int(char *p, int v)
{
    if (v < 0) {
        *p++ = '-';
        return put_u64(p, (uint64_t) (-(int64_t) v));
    }
    return put_u64(p, (uint64_t) v);
}

/* utf8_len returns the length of a valid UTF-8 sequence at s (n bytes available), or 0 */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c >= 0xc2 && c <= 0xdf)
        return (n >= 2 && (s[1] & 0xc0) == 0x80) ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && s[1] < 0xa0)
            return 0; /* overlong */
        if (c == 0xed && s[1] >= 0xa0)
            return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && s[1] < 0x90)
            return 0;
        if (c == 0xf4 && s[1] >= 0x90)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

/* put_str writes a quoted JSON string of at most `max` input bytes (worst case 6 * max + 2) */
static char *
put_str(char *p, const char *str, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *) str;
    size_t n = strnlen(str, max);
    *p++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *p++ = (char) c;
            i++;
        } else if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char) c;
            i++;
        } else if (c < 0x20) {
            *p++ = '\\';
            switch (c) {
            case '\n':
                *p++ = 'n';
                break;
            case '\r':
                *p++ = 'r';
                break;
            case '\t':
                *p++ = 't';
                break;
            default:
                p = LIT(p, "u00");
                *p++ = hex[c >> 4];
                *p++ = hex[c & 15];
            }
            i++;
        } else {
            size_t k = utf8_len(s + i, n - i);
            if (k == 0) {
                p = LIT(p, "\\ufffd");
                i++;
            } else {
                memcpy(p, s + i, k);
                p += k;
                i += k;
            }
        }
    }
    *p++ = '"';
    return p;
}

static char *
put_ts(shard *s, char *p, uint64_t ts_us)
{
    int64_t sec = (int64_t) (ts_us / 1000000);
    uint32_t us = (uint32_t) (ts_us % 1000000);
    if (sec != s->ts_sec) {
        struct tm tm;
        time_t t = (time_t) sec;
        if (gmtime_r(&t, &tm) == NULL)
            memset(&tm, 0, sizeof(tm));
        unsigned y = (unsigned) (tm.tm_year + 1900) % 10000;
        unsigned f[5] = {(unsigned) tm.tm_mon + 1, (unsigned) tm.tm_mday, (unsigned) tm.tm_hour,
                         (unsigned) tm.tm_min, (unsigned) tm.tm_sec};
        static const char sep[5] = {'-', 'T', ':', ':', '\0'};
        char *q = s->ts_text;
        *q++ = (char) ('0' + y / 1000);
        *q++ = (char) ('0' + y / 100 % 10);
        *q++ = (char) ('0' + y / 10 % 10);
        *q++ = (char) ('0' + y % 10);
        *q++ = '-';
        for (int i = 0; i < 5; i++) {
            *q++ = (char) ('0' + f[i] / 10 % 10);
            *q++ = (char) ('0' + f[i] % 10);
            if (i < 4)
                *q++ = sep[i];
        }
        s->ts_sec = sec;
    }
    p = put_lit(p, s->ts_text, 19);
    *p++ = '.';
    for (uint32_t d = 100000; d > 0; d /= 10)
        *p++ = (char) ('0' + us / d % 10);
    *p++ = 'Z';
    return p;
}

void
gw_accesslog_write(gw_accesslog *l, unsigned worker, const gw_access_rec *r)
{
    if (l == NULL || r == NULL || worker >= l->workers)
        return;
    shard *s = &l->shards[worker];
    char *p = s->buf + s->len, *start = p;
    p = LIT(p, "{\"ts\":\"");
    p = put_ts(s, p, r->ts_us);
    p = LIT(p, "\",\"client\":");
    p = put_str(p, r->client ? r->client : "", STR_MAX);
    p = LIT(p, ",\"method\":");
    p = put_str(p, r->method ? r->method : "", STR_MAX);
    if (r->host) {
        p = LIT(p, ",\"host\":");
        p = put_str(p, r->host, STR_MAX);
    }
    p = LIT(p, ",\"path\":");
    p = put_str(p, r->path ? r->path : "", PATH_MAX_);
    p = LIT(p, ",\"status\":");
    p = put_int(p, r->status);
    p = LIT(p, ",\"bytes_in\":");
    p = put_u64(p, r->bytes_in);
    p = LIT(p, ",\"bytes_out\":");
    p = put_u64(p, r->bytes_out);
    p = LIT(p, ",\"duration_us\":");
    p = put_u64(p, r->duration_us);
    if (r->route) {
        p = LIT(p, ",\"route\":");
        p = put_str(p, r->route, STR_MAX);
    }
    if (r->upstream) {
        p = LIT(p, ",\"upstream\":");
        p = put_str(p, r->upstream, STR_MAX);
    }
    if (r->upstream_status) {
        p = LIT(p, ",\"upstream_status\":");
        p = put_int(p, r->upstream_status);
    }
    if (r->upstream || r->upstream_us) {
        p = LIT(p, ",\"upstream_us\":");
        p = put_u64(p, r->upstream_us);
    }
    if (r->attempts) {
        p = LIT(p, ",\"attempts\":");
        p = put_u64(p, r->attempts);
    }
    if (r->trace_id) {
        p = LIT(p, ",\"trace_id\":");
        p = put_str(p, r->trace_id, 64);
    }
    p = r->tls ? LIT(p, ",\"tls\":true") : LIT(p, ",\"tls\":false");
    if (r->identity) {
        p = LIT(p, ",\"identity\":");
        p = put_str(p, r->identity, STR_MAX);
    }
    if (r->error) {
        p = LIT(p, ",\"error\":");
        p = put_str(p, r->error, STR_MAX);
    }
    p = LIT(p, "}\n");
    s->len += (size_t) (p - start);
    s->lines++;
    if (s->len > FLUSH_AT)
        gw_accesslog_flush(l, worker);
}

_Static_assert(6 * PATH_MAX_ + 8 * (6 * STR_MAX + 2) + 6 * 64 + 2 + 600 < LINE_MAX_,
               "a line must fit in LINE_MAX_");
_Static_assert(FLUSH_AT + LINE_MAX_ <= BUF_CAP, "a line must fit after FLUSH_AT");
