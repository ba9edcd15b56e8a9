/* cmd_gm_speed.c: `dengbao gm speed` and `dengbao gm cpu`, in the manner of `openssl speed`.
 *
 * speed measures each primitive on every implementation path this CPU supports, through the
 * public gm API (so it measures what callers get), switching paths with gm_impl_use. Ciphers
 * and hashes work on 16 KiB buffers, SM2 on 32-byte digests (sign/verify) and 100-byte
 * messages (encrypt/decrypt), multi-buffer SM3 on batches of 64 records of 512 bytes. With
 * --json each result is one line: {"alg":...,"path":...,"ops_per_s":...,"mb_per_s":...}.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPEED_BUF  16384
#define MB_RECORDS 64
#define MB_REC_LEN 512

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

typedef struct speed_state {
    uint8_t *in, *out;
    uint8_t key16[16], iv[16], tag[16], e[32], sig[64];
    gm_sm4_ctx sm4;
    gm_sm2_key *sm2;
    gm_sm2_signer *signer;
    uint8_t *ct;
    size_t ct_len;
    const uint8_t *msgs[MB_RECORDS];
    size_t lens[MB_RECORDS];
} speed_state;

typedef int (*speed_fn)(speed_state *s);

static int
op_sm3(speed_state *s)
{
    gm_sm3(s->out, s->in, SPEED_BUF);
    return 0;
}

static int
op_sm3_mb(speed_state *s)
{
    gm_sm3_hash_many(s->out, s->msgs, s->lens, MB_RECORDS, NULL, 0);
    return 0;
}

static int
op_sm4_ecb(speed_state *s)
{
    return gm_sm4_ecb_encrypt(&s->sm4, s->out, s->in, SPEED_BUF);
}

static int
op_sm4_cbc_enc(speed_state *s)
{
    return gm_sm4_cbc_encrypt(&s->sm4, s->out, s->in, SPEED_BUF, s->iv);
}

static int
op_sm4_cbc_dec(speed_state *s)
{
    return gm_sm4_cbc_decrypt(&s->sm4, s->out, s->in, SPEED_BUF, s->iv);
}

static int
op_sm4_ctr(speed_state *s)
{
    return gm_sm4_ctr(&s->sm4, s->out, s->in, SPEED_BUF, s->iv);
}

static int
op_sm4_gcm(speed_state *s)
{
    return gm_sm4_gcm_seal(&s->sm4, s->out, s->tag, s->iv, 12, NULL, 0, s->in, SPEED_BUF);
}

static int
op_sm2_sign(speed_state *s)
{
    return gm_sm2_sign_digest(s->sm2, s->sig, s->e);
}

static int
op_sm2_sign_precomp(speed_state *s)
{
    return gm_sm2_signer_sign_digest(s->signer, s->sig, s->e);
}

static int
op_sm2_verify(speed_state *s)
{
    return gm_sm2_verify_digest(s->sm2, s->sig, s->e);
}

static int
op_sm2_encrypt(speed_state *s)
{
    uint8_t *ct;
    size_t len;
    int rc = gm_sm2_encrypt(s->sm2, &ct, &len, GM_SM2_CT_DER, s->in, 100);

    dbao_free(ct);
    return rc;
}

static int
op_sm2_decrypt(speed_state *s)
{
    uint8_t *pt;
    size_t len;
    int rc = gm_sm2_decrypt(s->sm2, &pt, &len, GM_SM2_CT_DER, s->ct, s->ct_len);

    dbao_free_secret(pt, len);
    return rc;
}

typedef struct speed_prim {
    const char *name;
    const char *alg; /* whose paths are iterated */
    speed_fn fn;
    double bytes_per_op; /* 0 for public-key operations */
    int setup;           /* what must be rebuilt after a path change: 1 sm4, 2 sm2 */
} speed_prim;

static const speed_prim prims[] = {
    {"sm2-sign", "sm2", op_sm2_sign, 0, 2},
    {"sm2-sign-precomp", "sm2", op_sm2_sign_precomp, 0, 2},
    {"sm2-verify", "sm2", op_sm2_verify, 0, 2},
    {"sm2-verify-hotkey", "sm2", op_sm2_verify, 0, 3},
    {"sm2-encrypt", "sm2", op_sm2_encrypt, 0, 2},
    {"sm2-decrypt", "sm2", op_sm2_decrypt, 0, 2},
    {"sm3", "sm3", op_sm3, SPEED_BUF, 0},
    {"sm3-mb", "sm3-mb", op_sm3_mb, (double) MB_RECORDS *MB_REC_LEN, 0},
    {"sm4-ecb", "sm4", op_sm4_ecb, SPEED_BUF, 1},
    {"sm4-cbc-enc", "sm4", op_sm4_cbc_enc, SPEED_BUF, 1},
    {"sm4-cbc-dec", "sm4", op_sm4_cbc_dec, SPEED_BUF, 1},
    {"sm4-ctr", "sm4", op_sm4_ctr, SPEED_BUF, 1},
    {"sm4-gcm", "sm4", op_sm4_gcm, SPEED_BUF, 1},
};

/* GCM pairs each SM4 path with the GHASH path of the same instruction family. */
static const char *
ghash_for(const char *sm4_path)
{
    static const char *const prefs[][3] = {
        {"gfni-avx512", "vpclmul-avx512", "pclmul"},
        {"aesni-avx2", "pclmul", "portable"},
        {"portable", "portable", "portable"},
    };
    size_t i;

    for (i = 0; i < sizeof(prefs) / sizeof(prefs[0]); i++) {
        if (strcmp(prefs[i][0], sm4_path) == 0) {
            return gm_impl_use("ghash", prefs[i][1]) == 0 ? prefs[i][1] : prefs[i][2];
        }
    }
    return "portable";
}

static int
setup(speed_state *s, int what)
{
    int rc = 0;

    if (what == 1) {
        gm_sm4_cleanup(&s->sm4);
        gm_sm4_init(&s->sm4);
        rc = gm_sm4_setkey(&s->sm4, s->key16, 16);
    } else if (what >= 2) {
        gm_sm2_signer_free(s->signer);
        s->signer = NULL;
        gm_sm2_key_free(s->sm2);
        s->sm2 = NULL;
        dbao_free(s->ct);
        s->ct = NULL;
        rc = gm_sm2_key_generate(&s->sm2, NULL);
        if (rc == 0 && what == 3) {
            rc = gm_sm2_key_precompute(s->sm2);
        }
        if (rc == 0) {
            rc = gm_sm2_signer_new(&s->signer, s->sm2);
        }
        if (rc == 0) {
            rc = gm_sm2_sign_digest(s->sm2, s->sig, s->e);
        }
        if (rc == 0) {
            rc = gm_sm2_encrypt(s->sm2, &s->ct, &s->ct_len, GM_SM2_CT_DER, s->in, 100);
        }
    }
    return rc;
}

static int
run_one(speed_state *s, const speed_prim *p, const char *path, double seconds, bool json)
{
    double t0, t, ops;
    long n = 0;
    int rc;

    rc = setup(s, p->setup);
    if (rc != 0) {
        return cli_error(rc, "speed: setup of %s failed: %s", p->name, dbao_strerror(rc));
    }
    t0 = now();
    do {
        int i;

        for (i = 0; i < 4; i++) {
            rc = p->fn(s);
            if (rc != 0) {
                return cli_error(rc, "speed: %s on %s failed: %s", p->name, path,
                                 dbao_strerror(rc));
            }
        }
        n += 4;
        t = now();
    } while (t - t0 < seconds);
    ops = (double) n / (t - t0);
    if (json) {
        printf("{\"alg\":\"%s\",\"path\":\"%s\",\"ops_per_s\":%.1f,\"mb_per_s\":", p->name, path,
               ops);
        if (p->bytes_per_op > 0) {
            printf("%.1f}\n", ops * p->bytes_per_op / 1e6);
        } else {
            printf("null}\n");
        }
    } else if (p->bytes_per_op > 0) {
        printf("%-18s %-28s %14.1f ops/s %10.1f MB/s\n", p->name, path, ops,
               ops * p->bytes_per_op / 1e6);
    } else {
        printf("%-18s %-28s %14.1f ops/s\n", p->name, path, ops);
    }
    fflush(stdout);
    return 0;
}

static const char speed_usage[] = "dengbao gm speed [--seconds N] [--json] [primitive...]";
static const char speed_help[] =
    "usage: dengbao gm speed [--seconds N] [--json] [primitive...]\n"
    "\n"
    "Measures each primitive on every implementation path this CPU supports, through the gm API,\n"
    "for N seconds each (default 1). Primitives: sm2-sign sm2-sign-precomp sm2-verify\n"
    "sm2-verify-hotkey sm2-encrypt sm2-decrypt sm3 sm3-mb sm4-ecb sm4-cbc-enc sm4-cbc-dec\n"
    "sm4-ctr sm4-gcm (default: all). Ciphers and hashes use 16 KiB buffers, sm3-mb batches of\n"
    "64 x 512-byte records. --json prints one object per line:\n"
    "{\"alg\":...,\"path\":...,\"ops_per_s\":...,\"mb_per_s\":...}\n";

int
cmd_gm_speed(int argc, char **argv)
{
    static const struct option opts[] = {{"seconds", required_argument, NULL, 's'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    gm_impl_info impls[64];
    size_t num_impls, i, j;
    double seconds = 1.0;
    bool json = false;
    speed_state s;
    char *end;
    int c, rc = 0, k;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            seconds = strtod(optarg, &end);
            if (*end != '\0' || !(seconds > 0 && seconds <= 3600)) {
                return cli_usage_error(speed_usage, "--seconds takes a number in (0, 3600]");
            }
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(speed_help, stdout);
            return CLI_OK;
        case ':':
            return cli_usage_error(speed_usage, "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error(speed_usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    for (k = optind; k < argc; k++) {
        for (j = 0; j < sizeof(prims) / sizeof(prims[0]); j++) {
            if (strcmp(argv[k], prims[j].name) == 0) {
                break;
            }
        }
        if (j == sizeof(prims) / sizeof(prims[0])) {
            return cli_usage_error(speed_usage, "unknown primitive '%s'", argv[k]);
        }
    }
    memset(&s, 0, sizeof(s));
    gm_sm4_init(&s.sm4);
    s.in = dbao_malloc(MB_RECORDS * MB_REC_LEN > SPEED_BUF ? MB_RECORDS * MB_REC_LEN : SPEED_BUF);
    s.out = dbao_malloc(SPEED_BUF + 64 + MB_RECORDS * 32);
    if (s.in == NULL || s.out == NULL) {
        rc = cli_error(DBAO_ENOMEM, "out of memory");
        goto out;
    }
    if (gm_rand_bytes(s.in, SPEED_BUF) != 0 || gm_rand_bytes(s.key16, 16) != 0 ||
        gm_rand_bytes(s.iv, 16) != 0 || gm_rand_bytes(s.e, 32) != 0) {
        rc = cli_error(DBAO_ECRYPTO, "random generator failed");
        goto out;
    }
    for (i = 0; i < MB_RECORDS; i++) {
        s.msgs[i] = s.in + (i * MB_REC_LEN) % (SPEED_BUF - MB_REC_LEN);
        s.lens[i] = MB_REC_LEN;
    }
    num_impls = gm_impl_list(impls, sizeof(impls) / sizeof(impls[0]));
    if (!json) {
        printf("cpu: %s\n", gm_cpu_features());
    }
    for (j = 0; j < sizeof(prims) / sizeof(prims[0]) && rc == 0; j++) {
        const speed_prim *p = &prims[j];
        bool wanted = optind >= argc;
        char saved[64];

        for (k = optind; k < argc; k++) {
            wanted |= strcmp(argv[k], p->name) == 0;
        }
        if (!wanted) {
            continue;
        }
        snprintf(saved, sizeof(saved), "%s", gm_impl_active(p->alg));
        for (i = 0; i < num_impls && i < sizeof(impls) / sizeof(impls[0]) && rc == 0; i++) {
            char label[64];

            if (strcmp(impls[i].alg, p->alg) != 0 || !impls[i].supported) {
                continue;
            }
            gm_impl_use(p->alg, impls[i].path);
            if (strcmp(p->name, "sm4-gcm") == 0) {
                snprintf(label, sizeof(label), "%s+%s", impls[i].path, ghash_for(impls[i].path));
            } else {
                snprintf(label, sizeof(label), "%s", impls[i].path);
            }
            rc = run_one(&s, p, label, seconds, json);
        }
        gm_impl_use(p->alg, saved);
    }
out:
    gm_sm2_signer_free(s.signer);
    gm_sm2_key_free(s.sm2);
    dbao_free(s.ct);
    gm_sm4_cleanup(&s.sm4);
    dbao_free(s.in);
    dbao_free(s.out);
    return rc;
}

static const char cpu_help[] =
    "usage: dengbao gm cpu\n"
    "\n"
    "Prints the CPU features gm uses and, for each algorithm, every implementation path with\n"
    "'active' (in use), 'supported' (this CPU can run it) or 'unsupported'. The environment\n"
    "variable DENGBAO_GM_IMPL (\"portable\" or \"alg=path,...\") changes the choice.\n";

int
cmd_gm_cpu(int argc, char **argv)
{
    gm_impl_info impls[64];
    size_t n, i;

    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(cpu_help, stdout);
        return CLI_OK;
    }
    if (argc != 1) {
        return cli_usage_error("dengbao gm cpu", "unexpected argument '%s'", argv[1]);
    }
    n = gm_impl_list(impls, sizeof(impls) / sizeof(impls[0]));
    printf("cpu features: %s\n", gm_cpu_features());
    for (i = 0; i < n && i < sizeof(impls) / sizeof(impls[0]); i++) {
        printf("%-8s %-18s %s\n", impls[i].alg, impls[i].path,
               impls[i].active      ? "active"
               : impls[i].supported ? "supported"
                                    : "unsupported");
    }
    return CLI_OK;
}
