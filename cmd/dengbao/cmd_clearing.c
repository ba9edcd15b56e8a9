/* cmd_clearing.c: dengbao clearing — the clearing daemon and its offline tools (issue 8).
 *
 *   dengbao clearing --config C [--check]            the daemon (src/clearing/server.c)
 *   dengbao clearing replay --config C [--shard N] [--from-scratch]
 *   dengbao clearing settle --config C --out FILE
 *   dengbao clearing reconcile --config C [--settlement FILE]
 *   dengbao clearing dump --config C [--shard N]     every journal record, one line each
 *   dengbao clearing send --connect HOST:PORT [--window N]   a small binary-protocol client
 *
 * The daemon opens the audit log named by the configuration (created beforehand with `dengbao
 * audit init`; the daemon holds its signing key and is its only writer), recovers every shard
 * from its journal, prints "clearing: listening tcp H:P http H:P" on stderr and serves until
 * SIGTERM or SIGINT, then drains, snapshots and exits 0. Exit 2: bad configuration; 3: the
 * audit log, a journal or a listener cannot be opened, or a shard failed closed while running.
 *
 * The offline tools read the journals only (clr_journal_load is read-only) and must not run
 * against a journal a live daemon is appending to while a snapshot is being taken (they may see
 * a torn tail, which they ignore as recovery would). Exit codes: 0 ok / balanced, 1 not
 * balanced or inconsistent (the identity and the difference in fen are printed), 2 usage or
 * I/O error.
 *
 * `send` reads JSON events (the HTTP face's format, one per line) on stdin, sends each as a
 * binary frame (request id = line number), pipelining up to --window frames, and prints one
 * line per answer as it arrives, flushed at once (the crash test records acknowledgements from
 * it): "ack <req_id> seq=<seq> type=<t> reject=<NAME> account=<a> avail=<fen> frozen=<fen>
 * open=<qty>", or "error <req_id> code=<c> <text>". Exit 0 when every line was answered.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "dengbao/audit.h"
#include "dengbao/clearing.h"
#include "../../src/clearing/server.h"

static const char clearing_usage[] =
    "dengbao clearing --config FILE [--check]\n"
    "       dengbao clearing replay --config FILE [--shard N] [--from-scratch]\n"
    "       dengbao clearing settle --config FILE --out FILE\n"
    "       dengbao clearing reconcile --config FILE [--settlement FILE]\n"
    "       dengbao clearing dump --config FILE [--shard N]\n"
    "       dengbao clearing send --connect HOST:PORT [--window N]";

static void
on_alarm(void *arg, int code, const char *what)
{
    (void) arg;
    fprintf(stderr,
            "dengbao: clearing: the audit log failed (%s): %s; events that move money are "
            "refused\n",
            dbao_strerror(code), what);
}

static int
load_config(clr_config **cfg, const char *path)
{
    dbao_err err;
    dbao_err_clear(&err);
    int rc = clr_config_load(cfg, path, &err);
    if (rc != 0) {
        fprintf(stderr, "dengbao: %s\n", err.msg[0] ? err.msg : dbao_strerror(rc));
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* ---- the daemon ---- */

static int
run_daemon(const char *config, bool check)
{
    clr_config *cfg = NULL;
    int rc = load_config(&cfg, config);
    if (rc != CLI_OK)
        return rc;
    if (check) {
        printf("clearing: %s is valid (%u shards, %zu instruments)\n", config, cfg->shards,
               cfg->num_instruments);
        clr_config_free(cfg);
        return CLI_OK;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    dbao_err err;
    dbao_err_clear(&err);
    cli_audit_writer aw = {0};
    clr_server *srv = NULL;
    if (cfg->audit_dir != NULL) {
        rc = cli_audit_writer_open(&aw, cfg->audit_dir, on_alarm, NULL, &err);
        if (rc != 0) {
            fprintf(stderr, "dengbao: clearing: %s\n", err.msg);
            rc = CLI_INTERNAL;
            goto out;
        }
        const char *note = audit_log_recovery_note(aw.log);
        if (note != NULL)
            fprintf(stderr, "clearing: audit log recovery: %s\n", note);
    }
    audit_log *log = aw.log;
    rc = clr_server_start(&srv, cfg, log, &err);
    if (rc != 0) {
        fprintf(stderr, "dengbao: clearing: cannot start: %s\n",
                err.msg[0] ? err.msg : dbao_strerror(rc));
        rc = CLI_INTERNAL;
        goto out;
    }
    fprintf(stderr, "clearing: listening tcp %s:%u http %s:%u\n",
            cfg->tcp_enabled ? cfg->tcp_host : "-", (unsigned) clr_server_tcp_port(srv),
            cfg->http_enabled ? cfg->http_host : "-", (unsigned) clr_server_http_port(srv));
    fflush(stderr);
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) == 0)
            break;
    }
    fprintf(stderr, "clearing: stopping\n");
    rc = clr_server_stop(srv) == 0 ? CLI_OK : CLI_INTERNAL;
    srv = NULL;
out:
    if (cli_audit_writer_close(&aw) != 0 && rc == CLI_OK)
        rc = CLI_INTERNAL;
    clr_config_free(cfg);
    return rc;
}

/* ---- offline tools ---- */

static void
print_totals(unsigned k, const clr_totals *t)
{
    char c[32], d[32], w[32], f[32];
    clr_money_format(t->cash_total, c);
    clr_money_format(t->deposits, d);
    clr_money_format(t->withdrawals, w);
    clr_money_format(t->fees, f);
    printf("shard %u: cash_total %s deposits %s withdrawals %s fees %s accounts %" PRIu64
           " orders_open %" PRIu64 " fills %" PRIu64 " negative_accounts %" PRIu64
           " shares_imbalance %" PRId64 "\n",
           k, c, d, w, f, t->accounts, t->orders_open, t->fills, t->negative_accounts,
           t->shares_imbalance);
}

static void
count_move(void *arg, const clr_movement *m)
{
    (void) m;
    (*(uint64_t *) arg)++;
}

static int
load_shard_moves(clr_engine **e, const clr_config *cfg, unsigned k, bool scratch, uint64_t *moves)
{
    clr_refdata ref;
    clr_config_refdata(cfg, &ref);
    dbao_err err;
    dbao_err_clear(&err);
    int rc =
        clr_journal_load(e, cfg->data_dir, k, cfg->shards, &ref, scratch, count_move, moves, &err);
    if (rc != 0)
        fprintf(stderr, "dengbao: clearing: shard %u: %s\n", k,
                err.msg[0] ? err.msg : dbao_strerror(rc));
    return rc;
}

static int
load_shard(clr_engine **e, const clr_config *cfg, unsigned k, bool scratch)
{
    clr_refdata ref;
    clr_config_refdata(cfg, &ref);
    dbao_err err;
    dbao_err_clear(&err);
    int rc = clr_journal_load(e, cfg->data_dir, k, cfg->shards, &ref, scratch, NULL, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "dengbao: clearing: shard %u: %s\n", k,
                err.msg[0] ? err.msg : dbao_strerror(rc));
    return rc;
}

static int
cmd_replay(const clr_config *cfg, int shard, bool scratch)
{
    int status = CLI_OK;
    for (unsigned k = 0; k < cfg->shards; k++) {
        if (shard >= 0 && (unsigned) shard != k)
            continue;
        clr_engine *e = NULL, *f = NULL;
        if (load_shard(&e, cfg, k, false) != 0)
            return CLI_USAGE;
        uint8_t h[32], g[32];
        char hex[65];
        if (clr_engine_state_hash(e, h, NULL) != 0) {
            clr_engine_free(e);
            return cli_error(DBAO_EIO, "clearing: shard %u: cannot hash the state", k);
        }
        dbao_hex_encode(hex, h, 32);
        printf("shard %u: last seq %" PRIu64 " state %s\n", k, clr_engine_seq(e), hex);
        clr_totals t;
        clr_engine_totals(e, &t);
        print_totals(k, &t);
        if (scratch) {
            uint64_t moves = 0;
            if (load_shard_moves(&f, cfg, k, true, &moves) != 0) {
                clr_engine_free(e);
                return CLI_USAGE;
            }
            clr_engine_state_hash(f, g, NULL);
            dbao_hex_encode(hex, g, 32);
            if (memcmp(h, g, 32) == 0 && clr_engine_seq(e) == clr_engine_seq(f)) {
                printf("shard %u: consistent (snapshot load == from-scratch replay, seq %" PRIu64
                       ", %" PRIu64 " fund movements)\n",
                       k, clr_engine_seq(f), moves);
            } else {
                printf("shard %u: INCONSISTENT: from-scratch replay seq %" PRIu64 " state %s\n", k,
                       clr_engine_seq(f), hex);
                status = CLI_FAIL;
            }
            clr_engine_free(f);
        }
        clr_engine_free(e);
    }
    return status;
}

static int
dump_one(void *arg, const clr_event *ev)
{
    unsigned k = *(const unsigned *) arg;
    printf("%u %" PRIu64 " %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %06u %c %" PRId64 " %" PRId64
           " %" PRId64 " %u\n",
           k, ev->seq, (unsigned) ev->type, ev->account, ev->order_id, ev->exec_id,
           (unsigned) ev->security, ev->side ? (char) ev->side : '-', ev->price, ev->qty,
           ev->amount, (unsigned) ev->member);
    return 0;
}

/* dump: every durable journal record, one line each (tests, forensics). */
static int
cmd_dump(const clr_config *cfg, int shard)
{
    printf("# shard seq type account order_id exec_id security side price qty amount member\n");
    for (unsigned k = 0; k < cfg->shards; k++) {
        if (shard >= 0 && (unsigned) shard != k)
            continue;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = clr_journal_scan(cfg->data_dir, k, 1, dump_one, &k, &err);
        if (rc != 0) {
            fprintf(stderr, "dengbao: clearing: shard %u: %s\n", k,
                    err.msg[0] ? err.msg : dbao_strerror(rc));
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}

/* Rows of every shard's last closed day, concatenated (clr_settlement_write merges them). */
static int
gather_settlement(const clr_config *cfg, uint32_t *date, clr_net_row **rows, size_t *num)
{
    *rows = NULL;
    *num = 0;
    *date = 0;
    for (unsigned k = 0; k < cfg->shards; k++) {
        clr_engine *e = NULL;
        if (load_shard(&e, cfg, k, false) != 0) {
            free(*rows);
            return CLI_USAGE;
        }
        uint32_t d = 0;
        clr_net_row *r = NULL;
        size_t n = 0;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = clr_engine_settlement(e, &d, &r, &n, &err);
        clr_engine_free(e);
        if (rc != 0) {
            free(*rows);
            return cli_report(rc, &err);
        }
        if (d != 0 && *date != 0 && d != *date) {
            fprintf(stderr, "dengbao: clearing: shard %u closed day %u, another shard %u\n", k,
                    (unsigned) d, (unsigned) *date);
            free(r);
            free(*rows);
            return CLI_FAIL;
        }
        if (d != 0)
            *date = d;
        if (n > 0) {
            clr_net_row *nr = realloc(*rows, (*num + n) * sizeof *nr);
            if (nr == NULL) {
                free(r);
                free(*rows);
                return cli_error(DBAO_ENOMEM, "out of memory");
            }
            memcpy(nr + *num, r, n * sizeof *r);
            *rows = nr;
            *num += n;
        }
        free(r);
    }
    return CLI_OK;
}

static void
print_settle(const char *what, const clr_settle_totals *t)
{
    char b[32], s[32], f[32], n[32];
    clr_money_format(t->buy_amount, b);
    clr_money_format(t->sell_amount, s);
    clr_money_format(t->fees, f);
    clr_money_format(t->net_cash, n);
    printf("%s: trade_date %u rows %" PRIu64 " buy_amount %s sell_amount %s fees %s net_cash %s "
           "buy_qty %" PRId64 " sell_qty %" PRId64 "\n",
           what, (unsigned) t->trade_date, t->rows, b, s, f, n, t->buy_qty, t->sell_qty);
}

static int
cmd_settle(const clr_config *cfg, const char *out)
{
    uint32_t date;
    clr_net_row *rows;
    size_t n;
    int rc = gather_settlement(cfg, &date, &rows, &n);
    if (rc != CLI_OK)
        return rc;
    if (date == 0) {
        free(rows);
        return cli_error(DBAO_EINVAL, "clearing: no trading day has been closed (no EOD yet)");
    }
    clr_settle_totals t;
    dbao_err err;
    dbao_err_clear(&err);
    rc = clr_settlement_write(out, date, rows, n, &t, &err);
    free(rows);
    if (rc != 0)
        return cli_report(rc, &err) == CLI_OK ? CLI_USAGE : CLI_USAGE;
    print_settle("settlement", &t);
    printf("settlement written to %s\n", out);
    return CLI_OK;
}

static int
cmd_reconcile(const clr_config *cfg, const char *settlement)
{
    int status = CLI_OK;
    for (unsigned k = 0; k < cfg->shards; k++) {
        clr_engine *e = NULL;
        if (load_shard(&e, cfg, k, false) != 0)
            return CLI_USAGE;
        clr_totals t;
        clr_engine_totals(e, &t);
        clr_engine_free(e);
        print_totals(k, &t);
        int64_t want = t.deposits - t.withdrawals;
        if (t.cash_total != want) {
            printf("shard %u: NOT BALANCED: cash_total - (deposits - withdrawals) = %" PRId64
                   " fen\n",
                   k, t.cash_total - want);
            status = CLI_FAIL;
        }
        if (t.shares_imbalance != 0) {
            printf("shard %u: NOT BALANCED: shares imbalance %" PRId64 " shares\n", k,
                   t.shares_imbalance);
            status = CLI_FAIL;
        }
        if (status == CLI_OK)
            printf("shard %u: balanced (cash == deposits - withdrawals, shares conserved)\n", k);
    }
    if (settlement != NULL) {
        clr_settle_totals ft, rt;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = clr_settlement_check(settlement, &ft, &err);
        if (rc == DBAO_EVERIFY) {
            printf("settlement %s: NOT VALID: %s\n", settlement, err.msg);
            return CLI_FAIL;
        }
        if (rc != 0) {
            fprintf(stderr, "dengbao: clearing: %s\n", err.msg[0] ? err.msg : dbao_strerror(rc));
            return CLI_USAGE;
        }
        print_settle("settlement file", &ft);
        uint32_t date;
        clr_net_row *rows;
        size_t n;
        if ((rc = gather_settlement(cfg, &date, &rows, &n)) != CLI_OK)
            return rc;
        rc = clr_settlement_write(NULL, date, rows, n, &rt, &err);
        free(rows);
        if (rc != 0) {
            cli_report(rc, &err);
            return CLI_USAGE;
        }
        print_settle("recomputed", &rt);
        struct {
            const char *name;
            int64_t a, b;
        } cmp[] = {
            {"trade_date", ft.trade_date, rt.trade_date},
            {"rows", (int64_t) ft.rows, (int64_t) rt.rows},
            {"buy_amount", ft.buy_amount, rt.buy_amount},
            {"sell_amount", ft.sell_amount, rt.sell_amount},
            {"fees", ft.fees, rt.fees},
            {"net_cash", ft.net_cash, rt.net_cash},
            {"buy_qty", ft.buy_qty, rt.buy_qty},
            {"sell_qty", ft.sell_qty, rt.sell_qty},
        };
        for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
            if (cmp[i].a != cmp[i].b) {
                printf("settlement: NOT BALANCED: %s in the file differs from the journals by "
                       "%" PRId64 "%s\n",
                       cmp[i].name, cmp[i].a - cmp[i].b,
                       strstr(cmp[i].name, "amount") || strcmp(cmp[i].name, "fees") == 0 ||
                               strcmp(cmp[i].name, "net_cash") == 0
                           ? " fen"
                           : "");
                status = CLI_FAIL;
            }
        }
        if (status == CLI_OK)
            printf("settlement: digest verified, totals equal the journals\n");
    }
    if (status == CLI_OK)
        printf("reconcile: balanced\n");
    return status;
}

/* ---- send: a small binary-protocol client ---- */

static int
connect_to(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || (size_t) (colon - hostport) >= sizeof host)
        return -1;
    memcpy(host, hostport, (size_t) (colon - hostport));
    host[colon - hostport] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static int
cmd_send(const char *hostport, size_t window)
{
    int fd = connect_to(hostport);
    if (fd < 0)
        return cli_error(DBAO_EIO, "clearing send: cannot connect to %s", hostport);
    setvbuf(stdout, NULL, _IOLBF, 0);
    char *line = NULL;
    size_t lcap = 0;
    uint64_t sent = 0, answered = 0;
    bool eof = false, closed = false;
    uint8_t rbuf[65536];
    size_t rlen = 0;
    int status = CLI_OK;
    while (!closed && (!eof || answered < sent)) {
        /* send while the window allows */
        while (!eof && sent - answered < window) {
            ssize_t n = getline(&line, &lcap, stdin);
            if (n < 0) {
                eof = true;
                shutdown(fd, SHUT_WR);
                break;
            }
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
            if (n == 0)
                continue;
            clr_event ev;
            dbao_err err;
            dbao_err_clear(&err);
            sent++;
            if (clr_json_decode(line, (size_t) n, &ev, &err) != 0) {
                fprintf(stderr, "dengbao: clearing send: line %" PRIu64 ": %s\n", sent, err.msg);
                free(line);
                close(fd);
                return CLI_USAGE;
            }
            uint8_t f[CLR_WIRE_FRAME_MAX];
            size_t fl = clr_wire_encode_event(f, sent, &ev);
            for (size_t off = 0; off < fl;) {
                ssize_t w = write(fd, f + off, fl - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    closed = true;
                    break;
                }
                off += (size_t) w;
            }
            if (closed)
                break;
        }
        if (closed || answered >= sent)
            continue;
        ssize_t r = read(fd, rbuf + rlen, sizeof rbuf - rlen);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            closed = true;
            break;
        }
        rlen += (size_t) r;
        size_t off = 0;
        for (;;) {
            clr_result res;
            uint64_t rid = 0;
            uint16_t ecode = 0;
            dbao_err err;
            dbao_err_clear(&err);
            int n = clr_wire_decode_result(rbuf + off, rlen - off, &res, &rid, &ecode, &err);
            if (n == 0)
                break;
            if (n < 0) {
                fprintf(stderr, "dengbao: clearing send: bad answer: %s\n", err.msg);
                free(line);
                close(fd);
                return CLI_FAIL;
            }
            off += (size_t) n;
            if (ecode != 0) {
                printf("error %" PRIu64 " code=%u %s\n", rid, (unsigned) ecode, err.msg);
                status = CLI_FAIL;
                answered++;
                closed = true;
                break;
            }
            answered++;
            printf("ack %" PRIu64 " seq=%" PRIu64 " type=%u reject=%s account=%" PRIu64
                   " avail=%" PRId64 " frozen=%" PRId64 " open=%" PRId64 "\n",
                   rid, res.seq, (unsigned) res.type, clr_reject_name((clr_reject) res.reject),
                   res.account, res.cash_available, res.cash_frozen, res.open_qty);
        }
        memmove(rbuf, rbuf + off, rlen - off);
        rlen -= off;
    }
    free(line);
    close(fd);
    if (answered < sent) {
        fprintf(stderr, "dengbao: clearing send: %" PRIu64 " of %" PRIu64 " answered\n", answered,
                sent);
        return CLI_FAIL;
    }
    return status;
}

int
cmd_clearing(int argc, char **argv)
{
    const char *sub = NULL;
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') {
        sub = argv[1];
        i = 2;
    }
    const char *config = NULL, *out = NULL, *settlement = NULL, *connect = NULL;
    bool check = false, scratch = false;
    long shard = -1, window = 64;
    for (; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (strcmp(a, "--config") == 0 && more) {
            config = argv[++i];
        } else if (strcmp(a, "--check") == 0) {
            check = true;
        } else if (strcmp(a, "--from-scratch") == 0) {
            scratch = true;
        } else if (strcmp(a, "--shard") == 0 && more) {
            char *end;
            shard = strtol(argv[++i], &end, 10);
            if (*end != '\0' || shard < 0 || shard >= CLR_SHARDS_MAX)
                return cli_usage_error(clearing_usage, "--shard must be 0..%d", CLR_SHARDS_MAX - 1);
        } else if (strcmp(a, "--out") == 0 && more) {
            out = argv[++i];
        } else if (strcmp(a, "--settlement") == 0 && more) {
            settlement = argv[++i];
        } else if (strcmp(a, "--connect") == 0 && more) {
            connect = argv[++i];
        } else if (strcmp(a, "--window") == 0 && more) {
            char *end;
            window = strtol(argv[++i], &end, 10);
            if (*end != '\0' || window < 1 || window > 65536)
                return cli_usage_error(clearing_usage, "--window must be 1..65536");
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: %s\n\nThe clearing engine daemon and its offline tools "
                   "(docs/clearing-ops.md).\n",
                   clearing_usage);
            return CLI_OK;
        } else {
            return cli_usage_error(clearing_usage, "unknown option '%s'", a);
        }
    }
    if (sub != NULL && strcmp(sub, "send") == 0) {
        if (connect == NULL)
            return cli_usage_error(clearing_usage, "--connect is required");
        return cmd_send(connect, (size_t) window);
    }
    if (config == NULL)
        return cli_usage_error(clearing_usage, "--config is required");
    if (sub == NULL)
        return run_daemon(config, check);
    clr_config *cfg = NULL;
    int rc = load_config(&cfg, config);
    if (rc != CLI_OK)
        return rc;
    if (shard >= 0 && (unsigned) shard >= cfg->shards) {
        clr_config_free(cfg);
        return cli_usage_error(clearing_usage, "--shard %ld: the configuration has %u shards",
                               shard, cfg->shards);
    }
    if (strcmp(sub, "replay") == 0) {
        rc = cmd_replay(cfg, (int) shard, scratch);
    } else if (strcmp(sub, "settle") == 0) {
        rc = out == NULL ? cli_usage_error(clearing_usage, "--out is required")
                         : cmd_settle(cfg, out);
    } else if (strcmp(sub, "dump") == 0) {
        rc = cmd_dump(cfg, (int) shard);
    } else if (strcmp(sub, "reconcile") == 0) {
        rc = cmd_reconcile(cfg, settlement);
    } else {
        rc = cli_usage_error(clearing_usage, "unknown subcommand '%s'", sub);
    }
    clr_config_free(cfg);
    return rc;
}
