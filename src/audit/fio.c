/* fio.c: the audit log's file I/O, with a fault-injection layer for the crash tests.
 *
 * Production path: each call is the system call (pwrite looped until complete, fdatasync,
 * posix_fallocate, ftruncate) after one relaxed atomic load that says no fault is configured.
 *
 * Test path: faults are configured by audit__fault_config() or, once, from the environment
 * variable DENGBAO_AUDIT_FAULT (see internal.h). "powercut" keeps, per file descriptor, an undo
 * journal of every write since that descriptor's last fdatasync: the old bytes of the range
 * (zeros past the end of the file) and the file's size before the write. audit__fault_powercut
 * then rolls unsynced writes back newest first, as a power failure that lost the page cache
 * would: each entry is lost entirely, kept, or torn (its second half lost), chosen by a seeded
 * generator, and a file whose unsynced writes are all lost returns to its synced size. An
 * fdatasync empties the descriptor's journal (the data is durable). This models the guarantee
 * the log relies on and nothing stronger: after fdatasync returns, the bytes written through
 * that descriptor before it survive; nothing else is promised.
 *
 * Journal and counters live under one mutex; only tests pay for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

typedef struct undo {
    int fd;
    uint64_t off;
    size_t len;
    uint8_t *old; /* len bytes before the write */
    uint64_t old_size;
    struct undo *prev; /* newer entries point at older ones */
} undo;

static atomic_int fault_on = -1; /* -1: environment not read yet */
static pthread_mutex_t fault_mu = PTHREAD_MUTEX_INITIALIZER;
static audit__faults faults;
static uint64_t written_total;
static uint64_t syncs_total;
static undo *journal; /* newest first */

static void
parse_env(void)
{
    const char *e = getenv("DENGBAO_AUDIT_FAULT");
    audit__faults f = {0};
    bool any = false;
    if (e != NULL && *e != '\0') {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", e);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            unsigned long long v = 0;
            if (sscanf(t, "enospc-after=%llu", &v) == 1) {
                f.enospc_after = v;
            } else if (sscanf(t, "eio-write-after=%llu", &v) == 1) {
                f.eio_write_after = v;
            } else if (sscanf(t, "eio-sync=%llu", &v) == 1) {
                f.eio_sync = v;
            } else if (strcmp(t, "powercut") == 0) {
                f.powercut = true;
            } else {
                fprintf(stderr, "dengbao: DENGBAO_AUDIT_FAULT: ignoring unknown fault '%s'\n", t);
                continue;
            }
            any = true;
        }
    }
    pthread_mutex_lock(&fault_mu);
    if (atomic_load(&fault_on) == -1) {
        faults = f;
        atomic_store(&fault_on, any ? 1 : 0);
    }
    pthread_mutex_unlock(&fault_mu);
}

static bool
faults_enabled(void)
{
    int on = atomic_load_explicit(&fault_on, memory_order_relaxed);
    if (on == -1) {
        parse_env();
        on = atomic_load(&fault_on);
    }
    return on == 1;
}

void
audit__fault_config(const audit__faults *f)
{
    pthread_mutex_lock(&fault_mu);
    memset(&faults, 0, sizeof faults);
    if (f != NULL) {
        faults = *f;
    }
    written_total = 0;
    syncs_total = 0;
    while (journal != NULL) {
        undo *u = journal;
        journal = u->prev;
        free(u->old);
        free(u);
    }
    bool any = f != NULL && (f->enospc_after || f->eio_write_after || f->eio_sync || f->powercut);
    atomic_store(&fault_on, any ? 1 : 0);
    pthread_mutex_unlock(&fault_mu);
}

static int
raw_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t) off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -EIO;
        }
        p += n;
        len -= (size_t) n;
        off += (uint64_t) n;
    }
    return 0;
}

/* journal_write records the old contents of [off, off + len) of fd. Called with fault_mu. */
static int
journal_write(int fd, size_t len, uint64_t off)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -errno;
    }
    undo *u = calloc(1, sizeof *u);
    uint8_t *old = malloc(len ? len : 1);
    if (u == NULL || old == NULL) {
        free(u);
        free(old);
        return -ENOMEM;
    }
    memset(old, 0, len);
    ssize_t n = pread(fd, old, len, (off_t) off);
    (void) n; /* bytes past the end stay zero */
    u->fd = fd;
    u->off = off;
    u->len = len;
    u->old = old;
    u->old_size = (uint64_t) st.st_size;
    u->prev = journal;
    journal = u;
    return 0;
}

int
audit__pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    if (!faults_enabled()) {
        return raw_pwrite(fd, buf, len, off);
    }
    pthread_mutex_lock(&fault_mu);
    int rc = 0;
    if (faults.enospc_after && written_total + len > faults.enospc_after) {
        rc = -ENOSPC;
    } else if (faults.eio_write_after && written_total + len > faults.eio_write_after) {
        rc = -EIO;
    } else if (faults.powercut) {
        rc = journal_write(fd, len, off);
    }
    if (rc == 0) {
        written_total += len;
    }
    pthread_mutex_unlock(&fault_mu);
    if (rc != 0) {
        return rc;
    }
    return raw_pwrite(fd, buf, len, off);
}

static void
journal_forget(int fd)
{
    undo **pp = &journal;
    while (*pp != NULL) {
        undo *u = *pp;
        if (u->fd == fd) {
            *pp = u->prev;
            free(u->old);
            free(u);
        } else {
            pp = &u->prev;
        }
    }
}

int
audit__fdatasync(int fd)
{
    if (faults_enabled()) {
        pthread_mutex_lock(&fault_mu);
        syncs_total++;
        bool fail = faults.eio_sync && syncs_total >= faults.eio_sync;
        if (!fail && faults.powercut) {
            journal_forget(fd);
        }
        pthread_mutex_unlock(&fault_mu);
        if (fail) {
            return -EIO;
        }
    }
    while (fdatasync(fd) != 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

int
audit__fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int
audit__fallocate(int fd, uint64_t len)
{
    if (faults_enabled()) {
        pthread_mutex_lock(&fault_mu);
        bool fail = faults.enospc_after && written_total + len > faults.enospc_after;
        pthread_mutex_unlock(&fault_mu);
        if (fail) {
            return -ENOSPC;
        }
    }
    int rc = posix_fallocate(fd, 0, (off_t) len);
    return rc == 0 ? 0 : -rc;
}

int
audit__ftruncate(int fd, uint64_t len)
{
    if (faults_enabled()) {
        pthread_mutex_lock(&fault_mu);
        int rc = 0;
        if (faults.powercut) {
            struct stat st;
            if (fstat(fd, &st) == 0 && (uint64_t) st.st_size > len) {
                rc = journal_write(fd, (size_t) ((uint64_t) st.st_size - len), len);
            }
        }
        pthread_mutex_unlock(&fault_mu);
        if (rc != 0) {
            return rc;
        }
    }
    return ftruncate(fd, (off_t) len) == 0 ? 0 : -errno;
}

/* Descriptors closed while they still have unsynced writes journalled: kept open until the
 * power cut has rolled them back (the journal refers to them by number). */
#define DEFERRED_MAX 1024
static int deferred[DEFERRED_MAX];
static int num_deferred;

void
audit__close(int fd)
{
    if (fd < 0) {
        return;
    }
    if (faults_enabled()) {
        pthread_mutex_lock(&fault_mu);
        bool keep = false;
        if (faults.powercut && num_deferred < DEFERRED_MAX) {
            for (undo *u = journal; u != NULL; u = u->prev) {
                if (u->fd == fd) {
                    keep = true;
                    break;
                }
            }
            if (keep) {
                deferred[num_deferred++] = fd;
            }
        }
        pthread_mutex_unlock(&fault_mu);
        if (keep) {
            return;
        }
    }
    close(fd);
}

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int
audit__fault_powercut(uint64_t seed)
{
    pthread_mutex_lock(&fault_mu);
    int undone = 0;
    uint64_t s = seed;
    /* Newest first. Each entry restores the bytes it overwrote (wholly or its second half). */
    while (journal != NULL) {
        undo *u = journal;
        journal = u->prev;
        unsigned pick = (unsigned) (rng_next(&s) % 3);
        if (pick == 0) {
            (void) raw_pwrite(u->fd, u->old, u->len, u->off);
            struct stat st;
            if (fstat(u->fd, &st) == 0 && (uint64_t) st.st_size > u->old_size &&
                u->off + u->len >= (uint64_t) st.st_size) {
                if (ftruncate(u->fd, (off_t) u->old_size) != 0) {
                    /* the file keeps its size: zeros, as the rolled-back bytes say */
                }
            }
            undone++;
        } else if (pick == 1 && u->len > 1) {
            size_t half = u->len / 2;
            (void) raw_pwrite(u->fd, u->old + half, u->len - half, u->off + half);
            undone++;
        }
        free(u->old);
        free(u);
    }
    for (int i = 0; i < num_deferred; i++) {
        close(deferred[i]);
    }
    num_deferred = 0;
    pthread_mutex_unlock(&fault_mu);
    return undone;
}
