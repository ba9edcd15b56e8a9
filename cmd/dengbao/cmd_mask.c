/* cmd_mask.c: `dengbao mask ...`, the command-line face of the masking library (mask.h).
 *
 *   dengbao mask detect [--types T1,T2] [--in FILE]
 *       one JSON object per input line: {"line":N,"findings":[{"type":T,"start":B,"end":E}]}
 *   dengbao mask apply --policy P.yaml [--role R]... [--json] [--in FILE]
 *       the input with personal data masked, line by line (--json: each line a JSON document)
 *   dengbao mask decrypt --policy P.yaml [--in FILE]
 *       one enc1 value per line -> the clear value
 *
 * Input is streamed line by line (getline), so a large file is never held in memory; lines
 * are split on \n and a trailing \r is not part of the line (apply writes it back). A line is
 * at most 64 MiB. Line numbers start at 1; offsets are bytes into the line.
 *
 * Exit status as cli.h: 0 success, 1 an enc1 value that fails verification, 2 usage or
 * malformed input (bad policy, JSON that is not JSON, unknown key id), 3 internal failure
 * (out of memory, cannot write). Error messages name line numbers, never values. Output
 * already written for earlier lines stays written when a later line fails.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/mask.h"

#define LINE_MAX_BYTES ((size_t) 64 << 20)
#define ROLES_MAX      64

enum {
    OPT_HELP = 'h',
    OPT_TYPES = 256,
    OPT_IN,
    OPT_POLICY,
    OPT_ROLE,
    OPT_JSON,
};

typedef struct mask_args {
    const char *types, *in, *policy;
    const char *roles[ROLES_MAX];
    size_t num_roles;
    bool json, help;
} mask_args;

static int
parse_args(mask_args *a, int argc, char **argv, const struct option *opts, const char *usage)
{
    int c;
    memset(a, 0, sizeof(*a));
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP:
            a->help = true;
            break;
        case OPT_TYPES:
            a->types = optarg;
            break;
        case OPT_IN:
            a->in = optarg;
            break;
        case OPT_POLICY:
            a->policy = optarg;
            break;
        case OPT_ROLE:
            if (a->num_roles == ROLES_MAX)
                return cli_usage_error(usage, "more than %d roles", ROLES_MAX);
            if (optarg[0] == '\0')
                return cli_usage_error(usage, "empty role name");
            a->roles[a->num_roles++] = optarg;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case ':':
            return cli_usage_error(usage, "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error(usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* ---- line reader ------------------------------------------------------------------------- */

typedef struct lines {
    FILE *f;
    bool close;
    char *buf;
    size_t cap;
    unsigned long long num;
} lines;

static int
lines_open(lines *l, const char *path)
{
    memset(l, 0, sizeof(*l));
    if (path == NULL || strcmp(path, "-") == 0) {
        l->f = stdin;
        return 0;
    }
    l->f = fopen(path, "rb");
    if (l->f == NULL) {
        int e = errno;
        return cli_error(-e, "cannot open '%s': %s", path, strerror(e));
    }
    l->close = true;
    return 0;
}

/* lines_next: 1 with a line (without \n; *cr tells whether a \r was stripped), 0 at the end,
 * else an exit status (the error printed). */
static int
lines_next(lines *l, char **line, size_t *len, bool *cr)
{
    errno = 0;
    ssize_t n = getline(&l->buf, &l->cap, l->f);
    if (n < 0) {
        if (ferror(l->f))
            return cli_error(DBAO_EIO, "cannot read the input: %s", strerror(errno ? errno : EIO));
        return 0;
    }
    l->num++;
    if ((size_t) n > LINE_MAX_BYTES)
        return cli_error(DBAO_ERANGE, "line %llu is longer than %zu bytes", l->num, LINE_MAX_BYTES);
    size_t m = (size_t) n;
    if (m > 0 && l->buf[m - 1] == '\n')
        m--;
    *cr = m > 0 && l->buf[m - 1] == '\r';
    if (*cr)
        m--;
    *line = l->buf;
    *len = m;
    return 1;
}

static void
lines_close(lines *l)
{
    if (l->close && l->f)
        fclose(l->f);
    if (l->buf) {
        dbao_cleanse(l->buf, l->cap);
        free(l->buf);
    }
    memset(l, 0, sizeof(*l));
}

static int
write_out(const void *p, size_t n)
{
    if (n > 0 && fwrite(p, 1, n, stdout) != n)
        return cli_error(DBAO_EIO, "cannot write the output");
    return 0;
}

static int
finish_out(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return cli_error(DBAO_EIO, "cannot write the output");
    return CLI_OK;
}

/* ---- detect ------------------------------------------------------------------------------ */

static const char detect_usage[] = "dengbao mask detect [--types T1,T2] [--in FILE]";

static int
mask_detect_cmd(int argc, char **argv)
{
    static const struct option opts[] = {
        {"types", required_argument, NULL, OPT_TYPES},
        {"in", required_argument, NULL, OPT_IN},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    mask_args a;
    int rc = parse_args(&a, argc, argv, opts, detect_usage);
    if (rc != 0)
        return rc;
    if (a.help) {
        printf("usage: %s\n\nOne JSON object per input line: "
               "{\"line\":N,\"findings\":[{\"type\":T,\"start\":B,\"end\":E}]}\n"
               "(byte offsets into the line). --types: a comma-separated list of CN_RID18,\n"
               "CN_RID15, CN_MOBILE, BANK_CARD, USCC, CN_PASSPORT, HKMO_PERMIT, HRP, EMAIL, "
               "IPV4,\nCN_PLATE, CN_NAME (default: all but CN_NAME).\n",
               detect_usage);
        return CLI_OK;
    }
    mask_detect_opts o = {0};
    dbao_err err;
    dbao_err_clear(&err);
    if (a.types != NULL && (rc = mask_types_parse(a.types, &o.types, &err)) != 0)
        return cli_usage_error(detect_usage, "--types: %s", err.msg);
    mask_detector *d = NULL;
    if ((rc = mask_detector_new(&d, &o, &err)) != 0)
        return cli_report(rc, &err);
    lines l;
    if ((rc = lines_open(&l, a.in)) != 0) {
        mask_detector_free(d);
        return rc;
    }
    size_t cap = 256;
    mask_finding *f = malloc(cap * sizeof(*f));
    dbao_buf o2 = {0};
    int status = f ? CLI_OK : cli_error(DBAO_ENOMEM, "out of memory");
    char *line;
    size_t len;
    bool cr;
    while (status == CLI_OK && (rc = lines_next(&l, &line, &len, &cr)) == 1) {
        size_t n = mask_detect(d, line, len, f, cap);
        if (n > cap) {
            mask_finding *nf = realloc(f, n * sizeof(*f));
            if (nf == NULL) {
                status = cli_error(DBAO_ENOMEM, "out of memory");
                break;
            }
            f = nf;
            cap = n;
            n = mask_detect(d, line, len, f, cap);
            if (n > cap)
                n = cap;
        }
        dbao_buf_reset(&o2);
        int e = dbao_buf_printf(&o2, "{\"line\":%llu,\"findings\":[", l.num);
        for (size_t i = 0; e == 0 && i < n; i++)
            e = dbao_buf_printf(&o2, "%s{\"type\":\"%s\",\"start\":%u,\"end\":%u}", i ? "," : "",
                                mask_type_name(f[i].type), f[i].start, f[i].end);
        if (e == 0)
            e = dbao_buf_put(&o2, "]}\n", 3);
        if (e != 0)
            status = cli_error(e, "out of memory");
        else
            status = write_out(o2.data, o2.len);
    }
    if (status == CLI_OK && rc != 0 && rc != 1)
        status = rc;
    if (status == CLI_OK)
        status = finish_out();
    free(f);
    dbao_buf_free(&o2);
    lines_close(&l);
    mask_detector_free(d);
    return status;
}

/* ---- apply ------------------------------------------------------------------------------- */

static const char apply_usage[] =
    "dengbao mask apply --policy P.yaml [--role R]... [--json] [--in FILE]";

static int
load_policy(mask_policy **p, const char *path, const char *usage)
{
    if (path == NULL)
        return cli_usage_error(usage, "--policy is required");
    dbao_err err;
    dbao_err_clear(&err);
    int rc = mask_policy_load(p, path, &err);
    if (rc != 0)
        return cli_report(rc, &err);
    return 0;
}

static int
mask_apply_cmd(int argc, char **argv)
{
    static const struct option opts[] = {
        {"policy", required_argument, NULL, OPT_POLICY},
        {"role", required_argument, NULL, OPT_ROLE},
        {"json", no_argument, NULL, OPT_JSON},
        {"in", required_argument, NULL, OPT_IN},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    mask_args a;
    int rc = parse_args(&a, argc, argv, opts, apply_usage);
    if (rc != 0)
        return rc;
    if (a.help) {
        printf("usage: %s\n\nMasks personal data in each input line with the policy "
               "(docs/mask.md):\ntext lines by the detectors and the policy's type rules; with "
               "--json each line\nis a JSON document and field rules apply too. --role names "
               "the caller's roles\n(repeatable) for the policy's role overrides.\n",
               apply_usage);
        return CLI_OK;
    }
    mask_policy *p = NULL;
    if ((rc = load_policy(&p, a.policy, apply_usage)) != 0)
        return rc;
    lines l;
    if ((rc = lines_open(&l, a.in)) != 0) {
        mask_policy_free(p);
        return rc;
    }
    dbao_buf out = {0};
    dbao_err err;
    int status = CLI_OK;
    char *line;
    size_t len;
    bool cr;
    while (status == CLI_OK && (rc = lines_next(&l, &line, &len, &cr)) == 1) {
        dbao_buf_reset(&out);
        dbao_err_clear(&err);
        int e;
        if (a.json && len == 0)
            e = 0;
        else if (a.json)
            e = mask_apply_json(p, a.roles, a.num_roles, line, len, &out, NULL, &err);
        else
            e = mask_apply_text(p, a.roles, a.num_roles, line, len, &out, NULL, &err);
        if (e == 0 && cr)
            e = dbao_buf_putc(&out, '\r');
        if (e == 0)
            e = dbao_buf_putc(&out, '\n');
        if (e != 0) {
            status = cli_error(e, "line %llu: %s", l.num,
                               err.code == e && err.msg[0] ? err.msg : dbao_strerror(e));
            break;
        }
        status = write_out(out.data, out.len);
    }
    if (status == CLI_OK && rc != 0 && rc != 1)
        status = rc;
    if (status == CLI_OK)
        status = finish_out();
    dbao_buf_free_secret(&out);
    lines_close(&l);
    mask_policy_free(p);
    return status;
}

/* ---- decrypt ----------------------------------------------------------------------------- */

static const char decrypt_usage[] = "dengbao mask decrypt --policy P.yaml [--in FILE]";

static int
mask_decrypt_cmd(int argc, char **argv)
{
    static const struct option opts[] = {
        {"policy", required_argument, NULL, OPT_POLICY},
        {"in", required_argument, NULL, OPT_IN},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    mask_args a;
    int rc = parse_args(&a, argc, argv, opts, decrypt_usage);
    if (rc != 0)
        return rc;
    if (a.help) {
        printf("usage: %s\n\nDecrypts enc1 values (one per line, as the encrypt(KEYID) "
               "function writes them)\nwith the keys of the policy; an empty line stays "
               "empty.\n",
               decrypt_usage);
        return CLI_OK;
    }
    mask_policy *p = NULL;
    if ((rc = load_policy(&p, a.policy, decrypt_usage)) != 0)
        return rc;
    lines l;
    if ((rc = lines_open(&l, a.in)) != 0) {
        mask_policy_free(p);
        return rc;
    }
    dbao_buf out = {0};
    dbao_err err;
    int status = CLI_OK;
    char *line;
    size_t len;
    bool cr;
    while (status == CLI_OK && (rc = lines_next(&l, &line, &len, &cr)) == 1) {
        dbao_buf_reset(&out);
        dbao_err_clear(&err);
        size_t b = 0, e = len;
        while (b < e && (line[b] == ' ' || line[b] == '\t'))
            b++;
        while (e > b && (line[e - 1] == ' ' || line[e - 1] == '\t'))
            e--;
        int r = 0;
        if (e > b)
            r = mask_decrypt(mask_policy_keys(p), line + b, e - b, &out, &err);
        if (r == 0)
            r = dbao_buf_putc(&out, '\n');
        if (r != 0) {
            status = cli_error(r, "line %llu: %s", l.num,
                               err.code == r && err.msg[0] ? err.msg : dbao_strerror(r));
            break;
        }
        status = write_out(out.data, out.len);
    }
    if (status == CLI_OK && rc != 0 && rc != 1)
        status = rc;
    if (status == CLI_OK)
        status = finish_out();
    dbao_buf_free_secret(&out);
    lines_close(&l);
    mask_policy_free(p);
    return status;
}

static const char mask_help[] =
    "usage: dengbao mask <command> [options]\n"
    "\n"
    "Chinese personal-data detection and masking (docs/mask.md).\n"
    "\n"
    "commands:\n"
    "  detect    the personal data found in each input line, as JSON lines\n"
    "  apply     the input with personal data masked by a policy (text or JSON lines)\n"
    "  decrypt   enc1 values (the encrypt function's output) back to clear, with the policy's "
    "keys\n"
    "\n"
    "Input is standard input or --in FILE, read line by line. Exit status: 0 success, 1 an\n"
    "enc1 value failed verification, 2 usage or malformed input, 3 internal failure.\n";

int
cmd_mask(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"detect", mask_detect_cmd},
        {"apply", mask_apply_cmd},
        {"decrypt", mask_decrypt_cmd},
    };
    if (argc < 2)
        return cli_usage_error("dengbao mask <command> [options]; see dengbao mask --help",
                               "no mask command given");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(mask_help, stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    return cli_usage_error("dengbao mask <command> [options]; see dengbao mask --help",
                           "unknown mask command '%s'", argv[1]);
}
