/* testsvc.h: real services (PostgreSQL, etcd, ...) for unit tests, through scripts/services.sh
 * (header-only, static inline; shared by every unit test that needs one).
 *
 * tu_svc_init() locates scripts/services.sh (through DBAO_SOURCE_DIR, else relative to this
 * header's own path in the source tree) and creates a fresh folder /tmp/<tag>.XXXXXX for the
 * services' state. tu_svc_start() starts a service there (on a given port, or a free one drawn by
 * services.sh) and returns its port; started again on the same folder and port a service keeps
 * its data (a restart). tu_svc_stop() stops everything started in the folder, by PID;
 * tu_svc_cleanup() stops and removes the folder. tu_run() runs a shell command and captures its
 * standard output. Failures print why on stderr and return -1: a service that cannot start fails
 * the test's group setup, it is never skipped.
 */
#ifndef DENGBAO_TESTSVC_H
#define DENGBAO_TESTSVC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

typedef struct tu_svc {
    char script[1024]; /* scripts/services.sh */
    char dir[64];      /* the services' state folder: /tmp/<tag>.XXXXXX */
} tu_svc;

/* tu_run runs `cmd` with /bin/sh; the first cap - 1 bytes of its stdout go to out (if not
 * NULL, NUL-terminated), the rest is read and dropped. Returns the exit status, -1 if the
 * command could not run or was killed. */
static inline int
tu_run(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        return -1;
    }
    size_t n = out != NULL && cap > 0 ? fread(out, 1, cap - 1, f) : 0;
    if (out != NULL && cap > 0) {
        out[n] = 0;
    }
    char sink[256];
    while (fread(sink, 1, sizeof sink, f) > 0) {
    }
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int
tu_svc_init(tu_svc *s, const char *tag)
{
    const char *src = __FILE__, *env = getenv("DBAO_SOURCE_DIR");
    const char *cut = strstr(src, "tests/unit/testsvc.h");
    memset(s, 0, sizeof *s);
    if (env != NULL) {
        snprintf(s->script, sizeof s->script, "%s/scripts/services.sh", env);
    } else if (cut != NULL) {
        snprintf(s->script, sizeof s->script, "%.*sscripts/services.sh", (int) (cut - src), src);
    } else {
        fprintf(stderr, "testsvc: cannot locate the source tree from %s\n", src);
        return -1;
    }
    int n = snprintf(s->dir, sizeof s->dir, "/tmp/%s.XXXXXX", tag);
    if (n < 0 || (size_t) n >= sizeof s->dir || mkdtemp(s->dir) == NULL) {
        fprintf(stderr, "testsvc: mkdtemp %s failed\n", s->dir);
        s->dir[0] = 0;
        return -1;
    }
    return 0;
}

/* tu_svc_start starts `kind` ("postgres", "etcd", ...) on `port` (0: a free one) and returns
 * the port it listens on, or -1. */
static inline int
tu_svc_start(const tu_svc *s, const char *kind, int port)
{
    char cmd[2048], out[64];
    if (port > 0) {
        snprintf(cmd, sizeof cmd, "bash '%s' start %s '%s' %d", s->script, kind, s->dir, port);
    } else {
        snprintf(cmd, sizeof cmd, "bash '%s' start %s '%s'", s->script, kind, s->dir);
    }
    int got;
    if (tu_run(cmd, out, sizeof out) != 0 || (got = atoi(out)) <= 0) {
        fprintf(stderr, "testsvc: cannot start %s with %s\n", kind, s->script);
        return -1;
    }
    return got;
}

/* tu_svc_stop stops every service started in the folder (the data stays). */
static inline int
tu_svc_stop(const tu_svc *s)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "bash '%s' stop '%s'", s->script, s->dir);
    return tu_run(cmd, NULL, 0) == 0 ? 0 : -1;
}

/* tu_svc_freeport prints a free port through services.sh; -1 on failure. */
static inline int
tu_svc_freeport(const tu_svc *s)
{
    char cmd[2048], out[64];
    snprintf(cmd, sizeof cmd, "bash '%s' freeport", s->script);
    int p;
    return tu_run(cmd, out, sizeof out) == 0 && (p = atoi(out)) > 0 ? p : -1;
}

/* tu_svc_cleanup stops the services and removes the folder; a no-op after a failed init. */
static inline int
tu_svc_cleanup(tu_svc *s)
{
    if (s->dir[0] == 0) {
        return 0;
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "bash '%s' stop '%s' && rm -rf '%s'", s->script, s->dir, s->dir);
    int rc = tu_run(cmd, NULL, 0) == 0 ? 0 : -1;
    s->dir[0] = 0;
    return rc;
}

#endif /* DENGBAO_TESTSVC_H */
