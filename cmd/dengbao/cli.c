/* cli.c: input, output, key loading and error reporting shared by the subcommands. */
#include "cli.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int
cli_exit_code(int rc)
{
    switch (rc) {
    case 0:
        return CLI_OK;
    case DBAO_EVERIFY:
        return CLI_FAIL;
    case DBAO_ENOMEM:
    case DBAO_ECRYPTO:
    case DBAO_EIO:
    case -ENOSPC:
    case -EPIPE:
        return CLI_INTERNAL;
    default:
        return CLI_USAGE;
    }
}

static void vprint_line(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

static void
vprint_line(const char *fmt, va_list ap)
{
    fputs("dengbao: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int
cli_error(int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprint_line(fmt, ap);
    va_end(ap);
    return cli_exit_code(rc);
}

int
cli_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("dengbao: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (usage: %s)\n", usage);
    return CLI_USAGE;
}

int
cli_report(int rc, const dbao_err *err)
{
    if (err != NULL && err->code == rc && err->msg[0] != '\0') {
        return cli_error(rc, "%s", err->msg);
    }
    return cli_error(rc, "%s", dbao_strerror(rc));
}

int
cli_read_input(uint8_t **out, size_t *out_len, const char *hex, const char *path, bool hex_text,
               dbao_err *err)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0, start = 0, end;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (hex != NULL) {
        return dbao_hex_decode(out, out_len, hex, strlen(hex), err);
    }
    rc = dbao_file_read(&raw, &raw_len, path == NULL ? "-" : path,
                        hex_text ? 2 * CLI_INPUT_MAX + 4096 : CLI_INPUT_MAX, err);
    if (rc != 0) {
        return rc;
    }
    if (!hex_text) {
        *out = raw;
        *out_len = raw_len;
        return 0;
    }
    /* Hex text may be wrapped (xxd -p, base16 tools): drop all white space first. */
    for (start = 0, end = 0; start < raw_len; start++) {
        if (!isspace(raw[start])) {
            raw[end++] = raw[start];
        }
    }
    rc = dbao_hex_decode(out, out_len, (const char *) raw, end, err);
    dbao_free_secret(raw, raw_len);
    return rc;
}

int
cli_write_output(const char *path, const uint8_t *data, size_t len, bool hex, dbao_err *err)
{
    char *text;
    int rc;

    if (path == NULL) {
        path = "-";
    }
    if (!hex) {
        return dbao_file_write(path, data, len, 0644, err);
    }
    text = dbao_malloc(2 * len + 2);
    if (text == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    dbao_hex_encode(text, data, len);
    text[2 * len] = '\n';
    rc = dbao_file_write(path, text, 2 * len + 1, 0644, err);
    dbao_free_secret(text, 2 * len + 2);
    return rc;
}

int
cli_print_hex(const uint8_t *data, size_t len)
{
    dbao_err err;
    int rc = cli_write_output("-", data, len, true, &err);

    return rc == 0 ? CLI_OK : cli_report(rc, &err);
}

int
cli_load_key(gm_sm2_key **out, const char *pem_path, const char *hex, bool need_priv, dbao_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (pem_path != NULL) {
        rc = dbao_file_read(&buf, &len, pem_path, 1 << 20, err);
        if (rc != 0) {
            return rc;
        }
        rc = gm_sm2_key_from_pem(out, (const char *) buf, len, err);
        dbao_free_secret(buf, len);
        if (rc == 0 && need_priv && !gm_sm2_key_has_priv(*out)) {
            gm_sm2_key_free(*out);
            *out = NULL;
            rc = dbao_err_set(err, DBAO_EKEY, "'%s' holds a public key; a private key is needed",
                              pem_path);
        }
        return rc;
    }
    rc = dbao_hex_decode(&buf, &len, hex, strlen(hex), err);
    if (rc != 0) {
        return rc;
    }
    if (need_priv) {
        rc = gm_sm2_key_from_priv(out, buf, len, err);
    } else {
        rc = gm_sm2_key_from_pub(out, buf, len, err);
    }
    dbao_free_secret(buf, len);
    return rc;
}
