/* test_pgproxy.c: the PostgreSQL proxy engine against a real PostgreSQL 15.
 *
 * The group setup starts PostgreSQL with scripts/services.sh (found relative to this file; a
 * failure to start fails the tests, it does not skip them), creates a SCRAM user, an md5 user and a
 * table over the trusted unix socket, and the teardown stops it. Each test starts a proxy with test
 * hooks and talks to it with libpq: authentication (SCRAM, md5, a wrong password), TLS on either
 * side, rewritten Query and Parse texts (also decided asynchronously), rewritten DataRows, COPY
 * both ways, cancel, pipelining, the message size limit, a client vanishing mid-query and 50
 * concurrent sessions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "pgproxy.h"
#include "testsvc.h"

/* cmocka asserts must not run on the proxy's threads: hooks abort instead. */
#define CHECK(x) ((x) ? (void) 0 : abort())

static tu_svc g_svc;
static int g_pgport;
static atomic_int g_closes;
static atomic_int g_startups;
static uv_async_t *g_left;

/* ---- hooks ------------------------------------------------------------------------------- */

static int
h_startup(pgp_session *s, void *arg, const char *const *params, char sqlstate[6], dbao_buf *msg)
{
    (void) arg;
    atomic_fetch_add(&g_startups, 1);
    for (size_t i = 0; params[i] != NULL; i += 2) {
        if (strcmp(params[i], "user") == 0 && strcmp(params[i + 1], "refused") == 0) {
            memcpy(sqlstate, "28000", 6);
            dbao_buf_printf(msg, "refused by the test hook");
            return DBAO_EINVAL;
        }
    }
    const char *app = pgp_session_param(s, "application_name");
    if (app != NULL && strcmp(app, "rewrite") == 0) {
        pgp_session_filter(s, 'D', true);
    }
    if (app != NULL && strcmp(app, "leave-handle") == 0 && g_left == NULL) {
        /* a handle left open on the worker loop: pgp_server_stop must still return */
        g_left = calloc(1, sizeof *g_left);
        CHECK(g_left != NULL);
        uv_async_init(pgp_session_loop(s), g_left, NULL);
    }
    return 0;
}

typedef struct pend {
    uv_timer_t t;
    pgp_session *s;
} pend;

static void
pend_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
pend_fire(uv_timer_t *t)
{
    pend *p = t->data;
    static const char q[] = "SELECT 'pending-replaced'";
    pgp_session_resume(p->s, PGP_REPLACE, q, sizeof q - 1);
    uv_close((uv_handle_t *) t, pend_closed);
}

static int
h_query(pgp_session *s, void *arg, bool parse, const char *sql, size_t len, dbao_buf *repl)
{
    (void) arg;
    CHECK(strlen(sql) == len);
    if (strstr(sql, "/*REPLACE*/") != NULL) {
        dbao_buf_printf(repl, "%s", parse ? "SELECT $1::int + 100" : "SELECT 'replaced'");
        return PGP_REPLACE;
    }
    if (strstr(sql, "/*PENDING*/") != NULL) {
        pend *p = calloc(1, sizeof *p);
        p->s = s;
        p->t.data = p;
        uv_timer_init(pgp_session_loop(s), &p->t);
        uv_timer_start(&p->t, pend_fire, 20, 0);
        return PGP_PENDING;
    }
    if (strstr(sql, "/*KILL*/") != NULL) {
        return DBAO_EINVAL;
    }
    return PGP_FORWARD;
}

static int
h_server(pgp_session *s, void *arg, uint8_t type, const uint8_t *payload, size_t len, dbao_buf *out)
{
    (void) s;
    (void) arg;
    CHECK(type == 'D' && len >= 2);
    uint16_t n = (uint16_t) ((payload[0] << 8) | payload[1]);
    size_t pos = 2;
    dbao_buf_put(out, payload, 2);
    for (uint16_t i = 0; i < n; i++) {
        int32_t l = (int32_t) ((uint32_t) payload[pos] << 24 | (uint32_t) payload[pos + 1] << 16 |
                               (uint32_t) payload[pos + 2] << 8 | payload[pos + 3]);
        pos += 4;
        if (l < 0) {
            dbao_buf_put(out, "\xff\xff\xff\xff", 4);
        } else {
            dbao_buf_put(out, "\0\0\0\2XX", 6);
            pos += (size_t) l;
        }
    }
    CHECK(pos == len);
    return 1;
}

static void
h_close(pgp_session *s, void *arg)
{
    (void) s;
    (void) arg;
    atomic_fetch_add(&g_closes, 1);
}

static const pgp_hooks g_hooks = {h_startup, h_query, h_server, h_close};

/* ---- helpers ----------------------------------------------------------------------------- */

static PGconn *
admin(void)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=%s/postgres port=%d user=postgres dbname=postgres", g_svc.dir,
             g_pgport);
    return PQconnectdb(ci);
}

static int
exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "setup: %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        return -1;
    }
    PQclear(r);
    return 0;
}

static int
group_setup(void **state)
{
    (void) state;
    if (tu_svc_init(&g_svc, "pgp-test") != 0 ||
        (g_pgport = tu_svc_start(&g_svc, "postgres", 0)) <= 0) {
        return -1;
    }
    PGconn *c = admin();
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "admin connection: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    int rc = exec_ok(c, "SET password_encryption = 'md5'");
    rc |= exec_ok(c, "CREATE USER md5user PASSWORD 'md5pw'");
    rc |= exec_ok(c, "RESET password_encryption");
    rc |= exec_ok(c, "CREATE USER scramuser PASSWORD 'scrampw'");
    rc |= exec_ok(c, "CREATE TABLE t (id int, name text)");
    rc |= exec_ok(c, "GRANT ALL ON t TO scramuser, md5user");
    PQfinish(c);
    return rc;
}

static int
group_teardown(void **state)
{
    (void) state;
    return tu_svc_cleanup(&g_svc);
}

static pgp_opts
base_opts(void)
{
    pgp_opts o = {0};
    o.listen_host = "127.0.0.1";
    o.server_host = "127.0.0.1";
    o.server_port = (uint16_t) g_pgport;
    o.workers = 2;
    o.hooks = &g_hooks;
    return o;
}

static pgp_server *
start(const pgp_opts *o)
{
    pgp_server *srv = NULL;
    dbao_err err;
    int rc = pgp_server_start(&srv, o, &err);
    if (rc != 0) {
        fprintf(stderr, "pgp_server_start: %s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    return srv;
}

static PGconn *
connect_to(pgp_server *srv, const char *user, const char *pw, const char *extra)
{
    char ci[512];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%u user=%s password=%s dbname=postgres "
             "connect_timeout=5 %s",
             pgp_server_port(srv), user, pw, extra != NULL ? extra : "sslmode=disable");
    return PQconnectdb(ci);
}

static char *
query1(PGconn *c, const char *sql)
{
    static char buf[256];
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1) {
        fprintf(stderr, "query %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        return NULL;
    }
    snprintf(buf, sizeof buf, "%s", PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return buf;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* cancel_check cancels a pg_sleep(10) and expects 57014 within 3 s. */
static void
cancel_check(PGconn *c)
{
    double t0 = now_s();
    assert_int_equal(PQsendQuery(c, "SELECT pg_sleep(10)"), 1);
    usleep(200000);
    PGcancel *cc = PQgetCancel(c);
    char eb[256];
    assert_int_equal(PQcancel(cc, eb, sizeof eb), 1);
    PQfreeCancel(cc);
    PGresult *r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014");
    PQclear(r);
    while ((r = PQgetResult(c)) != NULL) {
        PQclear(r);
    }
    assert_true(now_s() - t0 < 3.0);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void
test_auth(void **state)
{
    (void) state;
    pgp_opts o = base_opts();
    pgp_server *srv = start(&o);
    PGconn *c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_string_equal(query1(c, "SELECT current_user"), "scramuser");
    PQfinish(c);
    c = connect_to(srv, "md5user", "md5pw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_string_equal(query1(c, "SELECT 40 + 2"), "42");
    PQfinish(c);
    c = connect_to(srv, "md5user", "wrong", NULL);
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    assert_non_null(strstr(PQerrorMessage(c), "password authentication failed"));
    PQfinish(c);
    c = connect_to(srv, "scramuser", "wrong", NULL);
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    assert_non_null(strstr(PQerrorMessage(c), "password authentication failed"));
    PQfinish(c);
    c = connect_to(srv, "md5user", "md5pw", "sslmode=disable application_name=leave-handle");
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQfinish(c);
    assert_non_null(g_left);
    c = connect_to(srv, "refused", "x", NULL);
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    assert_non_null(strstr(PQerrorMessage(c), "refused by the test hook"));
    PQfinish(c);
    pgp_server_stop(srv);
    free(g_left);
    g_left = NULL;
    /* the server over its unix socket */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/postgres", g_svc.dir);
    o = base_opts();
    o.server_host = dir;
    srv = start(&o);
    c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_string_equal(query1(c, "SELECT coalesce(inet_client_addr()::text, 'local')"), "local");
    PQfinish(c);
    c = connect_to(srv, "md5user", "wrong", NULL);
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    PQfinish(c);
    pgp_server_stop(srv);
}

static SSL_CTX *
server_ctx(void)
{
    char cert[256], key[256];
    snprintf(cert, sizeof cert, "%s/postgres/data/server.crt", g_svc.dir);
    snprintf(key, sizeof key, "%s/postgres/data/server.key", g_svc.dir);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    return ctx;
}

static void
test_tls(void **state)
{
    (void) state;
    SSL_CTX *ctx = server_ctx();
    char ca[256];
    snprintf(ca, sizeof ca, "%s/postgres/data/server.crt", g_svc.dir);
    pgp_upstream_tls modes[] = {PGP_TLS_PREFER, PGP_TLS_REQUIRE, PGP_TLS_VERIFY};
    for (size_t i = 0; i < 3; i++) {
        pgp_opts o = base_opts();
        o.client_tls = ctx;
        o.server_tls = modes[i];
        o.server_ca_file = ca;
        pgp_server *srv = start(&o);
        /* channel_binding=disable: a TLS client that sees no -PLUS mechanism says "y" (it could
         * bind but thinks the server cannot), and a TLS server rejects that as a downgrade; a
         * pass-through proxy cannot fix it (the flag is covered by the proof) */
        PGconn *c =
            connect_to(srv, "scramuser", "scrampw", "sslmode=require channel_binding=disable");
        if (PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "mode %d: %s", (int) modes[i], PQerrorMessage(c));
        }
        assert_int_equal(PQstatus(c), CONNECTION_OK);
        assert_int_equal(PQsslInUse(c), 1);
        assert_string_equal(query1(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
                            "t");
        cancel_check(c); /* the cancel request goes over TLS to the server */
        PQfinish(c);
        /* SCRAM-SHA-256-PLUS was removed from the mechanism list */
        c = connect_to(srv, "scramuser", "scrampw", "sslmode=require channel_binding=require");
        assert_int_not_equal(PQstatus(c), CONNECTION_OK);
        assert_non_null(strstr(PQerrorMessage(c), "channel binding"));
        PQfinish(c);
        c = connect_to(srv, "md5user", "md5pw", "sslmode=disable");
        assert_int_equal(PQstatus(c), CONNECTION_OK);
        assert_int_equal(PQsslInUse(c), 0);
        PQfinish(c);
        c = connect_to(srv, "md5user", "md5pw", "sslmode=require");
        assert_int_equal(PQstatus(c), CONNECTION_OK);
        assert_int_equal(PQsslInUse(c), 1);
        assert_string_equal(query1(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
                            "t");
        PQfinish(c);
        pgp_server_stop(srv);
    }
    /* verification against the wrong name fails */
    pgp_opts o = base_opts();
    o.server_tls = PGP_TLS_VERIFY;
    o.server_ca_file = ca;
    o.server_name = "wrong.example";
    pgp_server *srv = start(&o);
    PGconn *c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    PQfinish(c);
    pgp_server_stop(srv);
    /* require_client_tls */
    o = base_opts();
    o.client_tls = ctx;
    o.require_client_tls = true;
    srv = start(&o);
    c = connect_to(srv, "scramuser", "scrampw", "sslmode=disable");
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    assert_non_null(strstr(PQerrorMessage(c), "TLS is required"));
    PQfinish(c);
    c = connect_to(srv, "scramuser", "scrampw", "sslmode=require");
    assert_int_equal(PQstatus(c), CONNECTION_OK); /* plain upstream: "y" is accepted */
    assert_string_equal(query1(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), "f");
    PQfinish(c);
    pgp_server_stop(srv);
    SSL_CTX_free(ctx);
}

static void
test_rewrite(void **state)
{
    (void) state;
    pgp_opts o = base_opts();
    pgp_server *srv = start(&o);
    PGconn *c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_string_equal(query1(c, "SELECT 'orig' /*REPLACE*/"), "replaced");
    assert_string_equal(query1(c, "SELECT 'orig'"), "orig");
    assert_string_equal(query1(c, "SELECT 'orig' /*PENDING*/"), "pending-replaced");
    /* extended protocol: the Parse text is replaced, the parameter types are kept
     */
    Oid types[1] = {23};
    PGresult *r = PQprepare(c, "s1", "SELECT $1::int + 0 /*REPLACE*/", 1, types);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    const char *vals[1] = {"5"};
    r = PQexecPrepared(c, "s1", 1, vals, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "105");
    PQclear(r);
    r = PQdescribePrepared(c, "s1");
    assert_int_equal(PQnparams(r), 1);
    assert_int_equal(PQparamtype(r, 0), 23);
    PQclear(r);
    r = PQexecParams(c, "SELECT $1::text || '!'", 1, NULL, vals, NULL, NULL, 0);
    assert_string_equal(PQgetvalue(r, 0, 0), "5!");
    PQclear(r);
    /* a hook failure closes the session */
    r = PQexec(c, "SELECT 1 /*KILL*/");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    PQfinish(c);
    /* DataRow filter */
    c = connect_to(srv, "scramuser", "scrampw", "sslmode=disable application_name=rewrite");
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, "SELECT 'secret', NULL::text, 'x' FROM generate_series(1, 3)");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(PQgetvalue(r, i, 0), "XX");
        assert_true(PQgetisnull(r, i, 1));
        assert_string_equal(PQgetvalue(r, i, 2), "XX");
    }
    PQclear(r);
    PQfinish(c);
    pgp_server_stop(srv);
}

static void
test_copy(void **state)
{
    (void) state;
    pgp_opts o = base_opts();
    pgp_server *srv = start(&o);
    PGconn *c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "COPY t FROM STDIN");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    char line[64];
    for (int i = 1; i <= 2000; i++) {
        int n = snprintf(line, sizeof line, "%d\tname%d\n", i, i);
        assert_int_equal(PQputCopyData(c, line, n), 1);
    }
    assert_int_equal(PQputCopyEnd(c, NULL), 1);
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    while ((r = PQgetResult(c)) != NULL) {
        PQclear(r);
    }
    r = PQexec(c, "COPY (SELECT id, name FROM t ORDER BY id) TO STDOUT");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_OUT);
    PQclear(r);
    int rows = 0;
    long sum = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
        rows++;
        sum += atol(buf);
        PQfreemem(buf);
    }
    assert_int_equal(n, -1);
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    assert_int_equal(rows, 2000);
    assert_int_equal(sum, 2000L * 2001 / 2);
    assert_int_equal(exec_ok(c, "DELETE FROM t"), 0);
    /* large messages both ways: streamed through when unfiltered */
    size_t big = 3u << 20;
    char *row = malloc(big + 16);
    assert_non_null(row);
    memcpy(row, "7\t", 2);
    memset(row + 2, 'y', big);
    row[big + 2] = '\n';
    r = PQexec(c, "COPY t FROM STDIN");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    assert_int_equal(PQputCopyData(c, row, (int) big + 3), 1);
    assert_int_equal(PQputCopyEnd(c, NULL), 1);
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    while ((r = PQgetResult(c)) != NULL) {
        PQclear(r);
    }
    r = PQexec(c, "SELECT name, length(name), repeat('z', 2000000) FROM t");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQgetlength(r, 0, 0), (int) big);
    assert_memory_equal(PQgetvalue(r, 0, 0), row + 2, big);
    assert_int_equal(atoi(PQgetvalue(r, 0, 1)), (int) big);
    assert_int_equal(PQgetlength(r, 0, 2), 2000000);
    PQclear(r);
    free(row);
    assert_int_equal(exec_ok(c, "DELETE FROM t"), 0);
    PQfinish(c);
    /* ... and buffered whole when filtered */
    c = connect_to(srv, "scramuser", "scrampw", "sslmode=disable application_name=rewrite");
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, "SELECT repeat('z', 2000000), 1");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "XX");
    PQclear(r);
    PQfinish(c);
    pgp_server_stop(srv);
}

static void
test_cancel_and_pipeline(void **state)
{
    (void) state;
    pgp_opts o = base_opts();
    pgp_server *srv = start(&o);
    PGconn *c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    cancel_check(c);
    PGresult *r;
    /* pipelined extended queries */
    assert_int_equal(PQenterPipelineMode(c), 1);
    char v[16];
    for (int i = 0; i < 20; i++) {
        snprintf(v, sizeof v, "%d", i);
        const char *vals[1] = {v};
        assert_int_equal(PQsendQueryParams(c, "SELECT $1::int * 2", 1, NULL, vals, NULL, NULL, 0),
                         1);
    }
    assert_int_equal(PQpipelineSync(c), 1);
    for (int i = 0; i < 20; i++) {
        r = PQgetResult(c);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_int_equal(atoi(PQgetvalue(r, 0, 0)), 2 * i);
        PQclear(r);
        assert_null(PQgetResult(c));
    }
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_PIPELINE_SYNC);
    PQclear(r);
    /* a pending decision in the middle of a pipeline: what follows waits, order is kept */
    assert_int_equal(PQsendQueryParams(c, "SELECT 'first'", 0, NULL, NULL, NULL, NULL, 0), 1);
    assert_int_equal(
        PQsendQueryParams(c, "SELECT 'second' /*PENDING*/", 0, NULL, NULL, NULL, NULL, 0), 1);
    assert_int_equal(PQsendQueryParams(c, "SELECT 'third'", 0, NULL, NULL, NULL, NULL, 0), 1);
    assert_int_equal(PQpipelineSync(c), 1);
    const char *want[3] = {"first", "pending-replaced", "third"};
    for (int i = 0; i < 3; i++) {
        r = PQgetResult(c);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_string_equal(PQgetvalue(r, 0, 0), want[i]);
        PQclear(r);
        assert_null(PQgetResult(c));
    }
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_PIPELINE_SYNC);
    PQclear(r);
    assert_int_equal(PQexitPipelineMode(c), 1);
    /* simple queries sent back to back in one packet */
    r = PQexec(c, "SELECT 1; SELECT 2; SELECT 'three'");
    assert_string_equal(PQgetvalue(r, 0, 0), "three");
    PQclear(r);
    PQfinish(c);
    pgp_server_stop(srv);
}

static void
test_limits(void **state)
{
    (void) state;
    pgp_opts o = base_opts();
    o.max_message = 1024;
    pgp_server *srv = start(&o);
    PGconn *c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    char big[2100];
    strcpy(big, "SELECT '");
    memset(big + 8, 'a', 2000);
    strcpy(big + 2008, "'");
    PGresult *r = PQexec(c, big);
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    assert_non_null(strstr(PQerrorMessage(c), "message too large"));
    PQfinish(c);
    /* a client that disconnects mid-query: the proxy closes the session and goes on */
    int closes = atomic_load(&g_closes);
    c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_int_equal(PQsendQuery(c, "SELECT pg_sleep(0.3)"), 1);
    PQflush(c);
    usleep(50000);
    close(PQsocket(c));
    PQfinish(c);
    for (int i = 0; i < 200 && atomic_load(&g_closes) == closes; i++) {
        usleep(10000);
    }
    assert_true(atomic_load(&g_closes) > closes);
    c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_string_equal(query1(c, "SELECT 'alive'"), "alive");
    PQfinish(c);
    pgp_server_stop(srv);
}

static void
test_concurrent(void **state)
{
    (void) state;
    pgp_opts o = base_opts();
    pgp_server *srv = start(&o);
    enum { N = 50 };
    PGconn *cs[N];
    char ci[256];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%u user=md5user password=md5pw dbname=postgres "
             "sslmode=disable",
             pgp_server_port(srv));
    for (int i = 0; i < N; i++) {
        cs[i] = PQconnectStart(ci);
        assert_non_null(cs[i]);
    }
    /* drive all handshakes at once */
    for (int round = 0; round < 2000; round++) {
        int busy = 0;
        for (int i = 0; i < N; i++) {
            ConnStatusType st = PQstatus(cs[i]);
            if (st == CONNECTION_OK || st == CONNECTION_BAD) {
                continue;
            }
            busy++;
            (void) PQconnectPoll(cs[i]);
        }
        if (busy == 0) {
            break;
        }
        usleep(1000);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(PQstatus(cs[i]), CONNECTION_OK);
        char q[64];
        snprintf(q, sizeof q, "SELECT %d, pg_sleep(0.05)", i);
        assert_int_equal(PQsendQuery(cs[i], q), 1);
    }
    for (int i = 0; i < N; i++) {
        PGresult *r = PQgetResult(cs[i]);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_int_equal(atoi(PQgetvalue(r, 0, 0)), i);
        PQclear(r);
        while ((r = PQgetResult(cs[i])) != NULL) {
            PQclear(r);
        }
    }
    for (int i = 0; i < N; i++) {
        PQfinish(cs[i]);
    }
    pgp_server_stop(srv);
}

/* raw_connect opens a plain TCP connection to the proxy (recv timeout 3 s). */
static int
raw_connect(pgp_server *srv)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(pgp_server_port(srv))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *) &a, sizeof a), 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

static void
test_raw(void **state)
{
    (void) state;
    pgp_opts o = base_opts();
    o.startup_timeout_ms = 300;
    pgp_server *srv = start(&o);
    uint8_t b[64], r[256];
    /* GSSENCRequest and SSLRequest (no client TLS) are answered 'N' */
    int fd = raw_connect(srv);
    put32(b, 8);
    put32(b + 4, 80877104);
    assert_int_equal(write(fd, b, 8), 8);
    assert_int_equal(read(fd, r, sizeof r), 1);
    assert_int_equal(r[0], 'N');
    put32(b + 4, 80877103);
    assert_int_equal(write(fd, b, 8), 8);
    assert_int_equal(read(fd, r, sizeof r), 1);
    assert_int_equal(r[0], 'N');
    /* then nothing: the startup timeout closes the connection with an error */
    double t0 = now_s();
    ssize_t n = read(fd, r, sizeof r);
    assert_true(n > 0 && r[0] == 'E');
    assert_true(now_s() - t0 < 2.0);
    assert_int_equal(read(fd, r, sizeof r), 0);
    close(fd);
    /* protocol 2.0 is refused */
    fd = raw_connect(srv);
    put32(b, 8 + 11);
    put32(b + 4, 2u << 16);
    memcpy(b + 8, "user\0u\0\0\0\0\0", 11);
    assert_int_equal(write(fd, b, 19), 19);
    n = read(fd, r, sizeof r);
    assert_true(n > 0 && r[0] == 'E');
    assert_non_null(memmem(r, (size_t) n, "0A000", 5));
    close(fd);
    /* bytes pipelined behind an SSLRequest: closed without an answer */
    fd = raw_connect(srv);
    put32(b, 8);
    put32(b + 4, 80877103);
    memcpy(b + 8, "garbage", 7);
    assert_int_equal(write(fd, b, 15), 15);
    assert_int_equal(read(fd, r, sizeof r), 0);
    close(fd);
    /* a startup packet over 10000 bytes: closed */
    fd = raw_connect(srv);
    put32(b, 20000);
    put32(b + 4, 3u << 16);
    assert_int_equal(write(fd, b, 8), 8);
    assert_int_equal(read(fd, r, sizeof r), 0);
    close(fd);
    pgp_server_stop(srv);
    /* start failures: a port in use, a missing CA file, no server host */
    o = base_opts();
    o.workers = 1;
    srv = start(&o);
    pgp_opts o2 = base_opts();
    o2.workers = 1;
    o2.listen_port = pgp_server_port(srv);
    pgp_server *bad = NULL;
    dbao_err err;
    assert_int_not_equal(pgp_server_start(&bad, &o2, &err), 0);
    assert_null(bad);
    pgp_server_stop(srv);
    o2 = base_opts();
    o2.server_tls = PGP_TLS_VERIFY;
    o2.server_ca_file = "/nonexistent/ca.pem";
    assert_int_not_equal(pgp_server_start(&bad, &o2, &err), 0);
    o2 = base_opts();
    o2.server_host = NULL;
    assert_int_equal(pgp_server_start(&bad, &o2, &err), DBAO_EINVAL);
    /* the server cannot be reached */
    o = base_opts();
    o.server_port = 1;
    srv = start(&o);
    PGconn *c = connect_to(srv, "scramuser", "scrampw", NULL);
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    assert_non_null(strstr(PQerrorMessage(c), "could not connect to the database server"));
    PQfinish(c);
    pgp_server_stop(srv);
}

/* on_alarm: the tests hang; stop PostgreSQL and fail (not async-signal-safe, but the process is
 * about to die anyway). */
static void
on_alarm(int sig)
{
    (void) sig;
    fprintf(stderr, "test_pgproxy: timed out\n");
    (void) group_teardown(NULL);
    _exit(1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_cancel_and_pipeline),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_raw),
    };
    signal(SIGALRM, on_alarm);
    alarm(60); /* a hang (a stop that never returns) fails instead of blocking ctest */
    return cmocka_run_group_tests_name("mask/pgproxy", tests, group_setup, group_teardown);
}
