/* cmd_maskproxy.c: dengbao maskproxy --config mask.yaml [--check]
 *
 * The PostgreSQL-protocol masking proxy (docs/mask.md). It opens the audit log
 * named by the configuration (created beforehand with `dengbao audit init`; the
 * proxy holds its signing key and is its only writer), then serves until
 * SIGTERM or SIGINT.
 *
 * Ready line on stderr: "maskproxy: listening on H:P". Exit status: 0 after a
 * clean stop, 2 for a bad configuration or policy, 3 when the audit log or the
 * listener cannot be opened.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dengbao/audit.h"
#include "dengbao/mask.h"

static const char maskproxy_usage[] = "dengbao maskproxy --config mask.yaml [--check]";

static void
on_alarm(void *arg, int code, const char *what)
{
    (void) arg;
    fprintf(stderr,
            "dengbao: maskproxy: the audit log failed (%s): %s; statements on "
            "sensitive data "
            "are refused\n",
            dbao_strerror(code), what);
}

int
cmd_maskproxy(int argc, char **argv)
{
    const char *config = NULL;
    bool check = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s\n\n"
                   "A PostgreSQL-protocol proxy that masks sensitive columns per "
                   "role (docs/mask.md).\n"
                   "  --config FILE   the proxy configuration (YAML); it names the "
                   "masking policy\n"
                   "  --check         load and check the configuration and policy, "
                   "then exit\n",
                   maskproxy_usage);
            return CLI_OK;
        } else {
            return cli_usage_error(maskproxy_usage, "unknown option '%s'", argv[i]);
        }
    }
    if (config == NULL)
        return cli_usage_error(maskproxy_usage, "--config is required");

    dbao_err err;
    dbao_err_clear(&err);
    mask_proxy_config *cfg = NULL;
    int rc = mask_proxy_config_load(&cfg, config, &err);
    if (rc != 0)
        return cli_report(rc == DBAO_ENOMEM ? rc : DBAO_EFORMAT, &err);
    if (check) {
        printf("maskproxy: %s is valid\n", config);
        mask_proxy_config_free(cfg);
        return CLI_OK;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *dir = mask_proxy_config_audit_dir(cfg);
    cli_audit_writer aw = {0};
    mask_proxy *mp = NULL;
    rc = cli_audit_writer_open(&aw, dir, on_alarm, NULL, &err);
    if (rc != 0) {
        fprintf(stderr, "dengbao: maskproxy: %s\n", err.msg);
        rc = CLI_INTERNAL;
        goto out;
    }
    audit_log *log = aw.log;
    rc = mask_proxy_start(&mp, cfg, log, &err);
    if (rc != 0) {
        rc = cli_report(rc == DBAO_EFORMAT ? rc : DBAO_EIO, &err);
        rc = rc == CLI_USAGE ? CLI_USAGE : CLI_INTERNAL;
        goto out;
    }
    fprintf(stderr, "maskproxy: listening on %s:%u\n", mask_proxy_config_listen_host(cfg),
            (unsigned) mask_proxy_port(mp));
    fflush(stderr);
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) == 0)
            break;
    }
    fprintf(stderr, "maskproxy: stopping\n");
    rc = CLI_OK;
out:
    mask_proxy_stop(mp);
    if (cli_audit_writer_close(&aw) != 0 && rc == CLI_OK)
        rc = CLI_INTERNAL;
    mask_proxy_config_free(cfg);
    return rc;
}
