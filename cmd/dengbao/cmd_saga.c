/* cmd_saga.c: dengbao saga --config saga.yaml [--check]
 *             dengbao saga participant ...   (the example participant, src/saga/participant.c)
 *
 * The saga coordinator (docs/saga.md). It opens the audit log named by the configuration
 * (created beforehand with `dengbao audit init`; the coordinator holds its signing key and is
 * its only writer; fail closed: if the log fails, submits are refused, no participant is
 * called any more and /healthz answers 503), opens the store, resumes every unfinished
 * transaction whose lease is free or expired, and serves the public and admin HTTP APIs until
 * SIGTERM or SIGINT. On SIGTERM: the listeners close, calls in flight finish (at most `drain`),
 * their results are stored, leases are released, the audit log is closed; exit 0.
 *
 * Ready line on stderr: "saga: listening on H:P admin H:P". Exit status: 0 after a clean stop,
 * 2 for a bad configuration, 3 when the audit log, the store or a listener cannot be opened.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../src/saga/coord.h"
#include "../../src/saga/participant.h"
#include "cli.h"
#include "dengbao/audit.h"

static const char saga_usage[] = "dengbao saga --config saga.yaml [--check]\n"
                                 "       dengbao saga participant --help";

static void
on_alarm(void *arg, int code, const char *what)
{
    (void) arg;
    fprintf(stderr,
            "dengbao: saga: the audit log failed (%s): %s; submits are refused and no "
            "participant is called\n",
            dbao_strerror(code), what);
}

/* read_token: the admin bearer token file must not be readable by group or others. */
static int
read_token(const char *path, char **out, dbao_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return dbao_err_set(err, -errno, "admin_token_file: cannot stat %s", path);
    if ((st.st_mode & 077) != 0)
        return dbao_err_set(err, DBAO_EINVAL, "admin_token_file: %s must be mode 0600 or stricter",
                            path);
    uint8_t *t = NULL;
    size_t len = 0;
    int rc = dbao_file_read(&t, &len, path, 4096, err);
    if (rc != 0)
        return rc;
    while (len > 0 && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
        t[--len] = 0;
    if (len < 16) {
        dbao_free_secret(t, len);
        return dbao_err_set(err, DBAO_EINVAL,
                            "admin_token_file: the token is shorter than 16 "
                            "bytes");
    }
    *out = (char *) t;
    return 0;
}

int
cmd_saga(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "participant") == 0)
        return saga_participant_main(argc - 1, argv + 1);
    const char *config = NULL;
    bool check = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s\n\n"
                   "A saga coordinator: global transactions of steps with compensations,\n"
                   "durable state, retries with backoff, parking, crash recovery "
                   "(docs/saga.md).\n"
                   "  --config FILE   the coordinator configuration (YAML)\n"
                   "  --check         load and check the configuration, then exit\n",
                   saga_usage);
            return CLI_OK;
        } else {
            return cli_usage_error(saga_usage, "unknown option '%s'", argv[i]);
        }
    }
    if (config == NULL)
        return cli_usage_error(saga_usage, "--config is required");

    dbao_err err;
    dbao_err_clear(&err);
    saga_config cfg;
    int rc = saga_config_load(&cfg, config, &err);
    if (rc != 0)
        return cli_report(rc == DBAO_ENOMEM ? rc : DBAO_EFORMAT, &err);
    char *token = NULL;
    if (cfg.admin_token_file != NULL && (rc = read_token(cfg.admin_token_file, &token, &err))) {
        saga_config_free(&cfg);
        return cli_report(DBAO_EFORMAT, &err);
    }
    if (check) {
        printf("saga: %s is valid\n", config);
        if (token)
            dbao_free_secret(token, strlen(token));
        saga_config_free(&cfg);
        return CLI_OK;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    cli_audit_writer aw = {0};
    saga_coord *coord = NULL;
    saga_api *api = NULL;
    rc = cli_audit_writer_open(&aw, cfg.audit_dir, on_alarm, NULL, &err);
    if (rc != 0) {
        fprintf(stderr, "dengbao: saga: %s\n", err.msg);
        rc = CLI_INTERNAL;
        goto out;
    }
    audit_log *log = aw.log;
    saga_coord_opts co = {.store_url = cfg.store_url,
                          .owner = cfg.owner,
                          .lease_ms = cfg.lease_ms,
                          .claim_interval_ms = cfg.claim_interval_ms,
                          .purge_after_ms = cfg.purge_after_ms,
                          .max_inflight = cfg.max_inflight,
                          .defaults = {.timeout_ms = cfg.timeout_ms,
                                       .call_timeout_ms = cfg.call_timeout_ms,
                                       .retry_initial_ms = cfg.retry_initial_ms,
                                       .retry_max_ms = cfg.retry_max_ms,
                                       .max_attempts = cfg.max_attempts,
                                       .allow = (const char *const *) cfg.allow,
                                       .num_allow = cfg.num_allow},
                          .log = log,
                          .audit_source = "saga"};
    rc = saga_coord_new(&coord, &co, &err);
    if (rc == 0)
        rc = saga_coord_start(coord, &err);
    if (rc != 0) {
        fprintf(stderr, "dengbao: saga: cannot start the coordinator: %s\n",
                err.msg[0] ? err.msg : dbao_strerror(rc));
        rc = CLI_INTERNAL;
        goto out;
    }
    saga_api_opts ao = {.host = cfg.listen_host,
                        .port = cfg.listen_port,
                        .admin_host = cfg.admin_host,
                        .admin_port = cfg.admin_port,
                        .admin_token = token,
                        .workers = cfg.workers};
    rc = saga_api_start(&api, coord, &ao, &err);
    if (rc != 0) {
        fprintf(stderr, "dengbao: saga: cannot listen: %s\n",
                err.msg[0] ? err.msg : dbao_strerror(rc));
        rc = CLI_INTERNAL;
        goto out;
    }
    fprintf(stderr, "saga: listening on %s:%u admin %s:%u\n", cfg.listen_host,
            (unsigned) saga_api_port(api), cfg.admin_host, (unsigned) saga_api_admin_port(api));
    fflush(stderr);
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) == 0)
            break;
    }
    fprintf(stderr, "saga: stopping\n");
    rc = CLI_OK;
out:
    saga_api_stop_accepting(api);
    saga_coord_stop(coord, cfg.drain_ms);
    saga_api_free(api);
    saga_coord_free(coord);
    if (cli_audit_writer_close(&aw) != 0 && rc == CLI_OK)
        rc = CLI_INTERNAL;
    if (token)
        dbao_free_secret(token, strlen(token));
    saga_config_free(&cfg);
    return rc;
}
