/* main.c: the dengbao multi-command binary. Each subcommand lives in its own cmd_*.c; this
 * file only dispatches. Daemons arrive as subcommands too (dengbao gateway, dengbao auditd). */
#include "cli.h"

#include <string.h>

int cmd_token(int argc, char **argv);    /* cmd_token.c */
int cmd_clearing(int argc, char **argv); /* cmd_clearing.c */
int cmd_saga(int argc, char **argv);     /* cmd_saga.c */

#ifndef DBAO_VERSION
#define DBAO_VERSION "0.1.0"
#endif

static const char usage_text[] =
    "usage: dengbao <command> [options]\n"
    "\n"
    "dengbao: infrastructure for GB/T 22239-2019 Level 3 (等保三级) and GB/T 39786-2021 (密评).\n"
    "\n"
    "commands:\n"
    "  gm        national cryptography: SM2 keys, signatures and encryption, SM3, SM4\n"
    "  audit     the tamper-evident audit log: init, append, verify, prove, export\n"
    "  auditd    the audit log service (HTTP API; TLS, mTLS or tokens)\n"
    "  gateway   the API gateway: a reverse proxy (TLS, mTLS, routing, health, reload)\n"
    "  mask      personal data: detect, mask with a policy, decrypt (docs/mask.md)\n"
    "  maskproxy a PostgreSQL-protocol proxy that masks sensitive columns per role\n"
    "  token     bearer tokens and SM2 device signatures for the gateway (issue, sign, verify)\n"
    "  clearing  order intake and a clearing engine with a journal (and replay|settle|reconcile)\n"
    "  saga      a saga coordinator with durable state (and its example participant)\n"

    "\n"
    "options:\n"
    "  --help      this text\n"
    "  --version   the version\n"
    "\n"
    "'dengbao <command> --help' describes a command. Exit status: 0 success, 1 verification\n"
    "failed, 2 usage or malformed input, 3 internal failure.\n";

int
main(int argc, char **argv)
{
    if (argc < 2) {
        return cli_usage_error("dengbao <command> [options]; see dengbao --help",
                               "no command given");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, stdout);
        return CLI_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("dengbao %s\n", DBAO_VERSION);
        return CLI_OK;
    }
    if (strcmp(argv[1], "gm") == 0) {
        return cmd_gm(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "audit") == 0) {
        return cmd_audit(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "auditd") == 0) {
        return cmd_auditd(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "gateway") == 0) {
        return cmd_gateway(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "mask") == 0) {
        return cmd_mask(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "maskproxy") == 0) {
        return cmd_maskproxy(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "token") == 0) {
        return cmd_token(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "clearing") == 0) {
        return cmd_clearing(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "saga") == 0) {
        return cmd_saga(argc - 1, argv + 1);
    }

    return cli_usage_error("dengbao <command> [options]; see dengbao --help",
                           "unknown command '%s'", argv[1]);
}
