/* pgclient.c: a small libpq client for the masking proxy's integration tests
 * (tests/integration/maskproxy.sh). psql covers the simple query protocol; this covers what
 * psql 15 cannot do: the extended protocol (prepared statements with parameters, binary
 * results), cancellation, and COPY TO read through PQgetCopyData.
 *
 *   pgclient CONNINFO exec SQL             simple query
 *   pgclient CONNINFO prepare SQL [P...]   PQprepare + PQexecPrepared twice (text results)
 *   pgclient CONNINFO params SQL [P...]    PQexecParams (unnamed statement, text results)
 *   pgclient CONNINFO binary SQL           PQexecParams asking for binary results (hex out)
 *   pgclient CONNINFO copy SQL             COPY ... TO STDOUT, data printed as received
 *   pgclient CONNINFO cancel               pg_sleep(10), cancelled (again every 300 ms until it
 * ends)
 *
 * Rows are printed one per line, fields separated by '|', NULL as \N. An error prints
 * "ERROR <sqlstate> <message>" and exits 1. Connection failure exits 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

static int
report(PGconn *c, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            for (int j = 0; j < PQnfields(r); j++) {
                if (j)
                    putchar('|');
                if (PQgetisnull(r, i, j)) {
                    fputs("\\N", stdout);
                } else if (PQfformat(r, j) == 1) {
                    const unsigned char *v = (const unsigned char *) PQgetvalue(r, i, j);
                    for (int k = 0; k < PQgetlength(r, i, j); k++)
                        printf("%02x", v[k]);
                } else {
                    fputs(PQgetvalue(r, i, j), stdout);
                }
            }
            putchar('\n');
        }
        return 0;
    }
    if (st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
        printf("OK %s\n", PQcmdStatus(r));
        return 0;
    }
    const char *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    printf("ERROR %s %s\n", ss ? ss : "?????", m ? m : PQerrorMessage(c));
    return 1;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: pgclient CONNINFO exec|prepare|params|binary|copy|cancel ...\n");
        return 2;
    }
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        printf("CONNECT %s", PQerrorMessage(c));
        PQfinish(c);
        return 2;
    }
    const char *cmd = argv[2];
    const char *sql = argc > 3 ? argv[3] : "";
    int np = argc > 4 ? argc - 4 : 0;
    const char *const *pv = (const char *const *) (argv + 4);
    int rc = 0;
    PGresult *r = NULL;
    if (strcmp(cmd, "exec") == 0) {
        r = PQexec(c, sql);
        rc = report(c, r);
    } else if (strcmp(cmd, "prepare") == 0) {
        r = PQprepare(c, "s1", sql, np, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = report(c, r);
        } else {
            for (int k = 0; k < 2 && rc == 0; k++) {
                PQclear(r);
                r = PQexecPrepared(c, "s1", np, pv, NULL, NULL, 0);
                rc = report(c, r);
            }
        }
    } else if (strcmp(cmd, "params") == 0) {
        r = PQexecParams(c, sql, np, NULL, pv, NULL, NULL, 0);
        rc = report(c, r);
    } else if (strcmp(cmd, "binary") == 0) {
        r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 1);
        rc = report(c, r);
    } else if (strcmp(cmd, "copy") == 0) {
        r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COPY_OUT) {
            rc = report(c, r);
        } else {
            char *buf;
            int n;
            while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
                fwrite(buf, 1, (size_t) n, stdout);
                PQfreemem(buf);
            }
            PQclear(r);
            r = PQgetResult(c);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                rc = report(c, r);
        }
    } else if (strcmp(cmd, "cancel") == 0) {
        if (!PQsendQuery(c, "SELECT pg_sleep(10)")) {
            printf("ERROR ????? send failed\n");
            rc = 1;
        } else {
            /* A cancel that arrives before the backend starts the query is ignored by the
             * server: send one every 300 ms until the query has ended (10 s at most). */
            PGcancel *cn = PQgetCancel(c);
            if (cn == NULL) {
                printf("CANCEL-FAILED no cancel object\n");
                rc = 1;
            }
            for (int i = 0; cn != NULL && i < 30; i++) {
                usleep(300000);
                char eb[256];
                if (!PQcancel(cn, eb, sizeof eb)) {
                    printf("CANCEL-FAILED %s\n", eb);
                    rc = 1;
                    break;
                }
                if (!PQconsumeInput(c) || !PQisBusy(c))
                    break;
                usleep(100000);
                if (!PQconsumeInput(c) || !PQisBusy(c))
                    break;
            }
            PQfreeCancel(cn);
            while ((r = PQgetResult(c)) != NULL) {
                if (PQresultStatus(r) != PGRES_TUPLES_OK)
                    rc = report(c, r) ? 0 : rc; /* the expected error: 57014 */
                PQclear(r);
            }
        }
    } else {
        fprintf(stderr, "pgclient: unknown command %s\n", cmd);
        rc = 2;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}
