/* cli.h: helpers shared by the dengbao subcommands (private to cmd/dengbao).
 *
 * Exit status contract (scripts depend on it):
 *   0  success, or a signature/tag that verifies
 *   1  well-formed input that fails verification (signature, GCM tag, SM2 decryption, padding)
 *   2  usage error or malformed input (bad hex, wrong key length, unreadable PEM or file)
 *   3  internal failure (out of memory, crypto library failure, cannot write output)
 * Every failure prints exactly one line "dengbao: <what went wrong>" on stderr.
 */
#ifndef DENGBAO_CLI_H
#define DENGBAO_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dengbao/common.h"
#include "dengbao/audit.h"
#include "dengbao/gm.h"

#define CLI_OK       0
#define CLI_FAIL     1
#define CLI_USAGE    2
#define CLI_INTERNAL 3

#define CLI_INPUT_MAX ((size_t) 1 << 30)

/* cli_exit_code maps a DBAO_E* code to the exit status above. */
int cli_exit_code(int rc);

/* cli_error prints "dengbao: <msg>" and returns the exit status for `rc`. */
int cli_error(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_usage_error prints "dengbao: <msg>" and the usage line, and returns CLI_USAGE. */
int cli_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_report prints err's message (or dbao_strerror(rc)) and returns the exit status. */
int cli_report(int rc, const dbao_err *err);

/* cli_read_input gets the message: from --xxx-hex text if given, else from the file `path`
 * (NULL or "-" = stdin). With hex_text the file holds hex (white space anywhere ignored).
 * *out is freed with dbao_free_secret(*out, *out_len). */
int cli_read_input(uint8_t **out, size_t *out_len, const char *hex, const char *path, bool hex_text,
                   dbao_err *err);

/* cli_write_output writes bytes raw or as one line of lowercase hex to `path` (NULL or "-" =
 * stdout). */
int cli_write_output(const char *path, const uint8_t *data, size_t len, bool hex, dbao_err *err);

/* cli_print_hex prints data as lowercase hex and a newline to stdout. */
int cli_print_hex(const uint8_t *data, size_t len);

/* cli_load_key loads an SM2 key from a PEM file or from hex (32-byte private d, or a 65/33-byte
 * public point when !need_priv). */
int cli_load_key(gm_sm2_key **out, const char *pem_path, const char *hex, bool need_priv,
                 dbao_err *err);

/* cli_audit_keys_load reads the log's configuration (log.conf of `dir`, into *cfg; strings in
 * *holder, free with dbao_free) and its signing key (need_priv) or public key: the one named
 * by pub_override if not NULL, else the log's own signer.pub.pem. Paths in log.conf are
 * relative to dir unless absolute. The note key name of an audit log is its origin. */
int cli_audit_keys_load(const char *dir, bool need_priv, const char *pub_override, gm_sm2_key **key,
                        audit_log_config *cfg, char **holder, dbao_err *err);

/* The earlier signers' public keys a log trusts after key rotation (log.conf trusted_pub). */
typedef struct cli_audit_trust {
    gm_sm2_key *keys[AUDIT_LOG_TRUSTED_MAX];
    audit_note_key nk[AUDIT_LOG_TRUSTED_MAX]; /* name = the origin */
    size_t n;
} cli_audit_trust;
int cli_audit_trust_load(cli_audit_trust *t, const char *dir, const audit_log_config *cfg,
                         dbao_err *err);
void cli_audit_trust_free(cli_audit_trust *t);

/* A service's audit log opened for writing (the daemons maskproxy, clearing, saga): its
 * signing key, the keys it trusts after a rotation, and the log, which borrows the key for its
 * whole life, so a writer must not move between open and close. cli_audit_writer_open loads
 * the keys and opens the log in `dir` (recovery included) or fails with a message naming the
 * folder; on failure nothing is left to free. cli_audit_writer_close closes the log and
 * returns its result (0, or the error that failed it), then frees the keys; a zeroed or failed
 * writer is a no-op. */
typedef struct cli_audit_writer {
    audit_log *log;
    gm_sm2_key *key;
    cli_audit_trust trust;
    audit_log_config cfg;
    audit_note_key nk;
    char *holder;
} cli_audit_writer;
int cli_audit_writer_open(cli_audit_writer *w, const char *dir, audit_log_alarm_fn alarm,
                          void *alarm_arg, dbao_err *err);
int cli_audit_writer_close(cli_audit_writer *w);

/* Subcommands. */
int cmd_audit(int argc, char **argv);
int cmd_audit_export(int argc, char **argv); /* argv[0] is "export" */
int cmd_auditd(int argc, char **argv);
int cmd_gateway(int argc, char **argv);
int cmd_gm(int argc, char **argv);
int cmd_gm_speed(int argc, char **argv);
int cmd_gm_cpu(int argc, char **argv);
int cmd_mask(int argc, char **argv);
int cmd_maskproxy(int argc, char **argv);

#endif
