/* cmd_gm.c: `dengbao gm ...`, the command-line face of the gm component.
 *
 * Scripts outside the project call exactly these commands and flags (see README.md): binary
 * values travel as lowercase hex where a flag ends in -hex or --hex is given; exit status 0
 * success, 1 verification failed, 2 usage or malformed input, 3 internal failure.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

/* ---- option parsing ---------------------------------------------------------------------- */

enum {
    OPT_HELP = 'h',
    OPT_HMAC_KEY_HEX = 256,
    OPT_MSG_HEX,
    OPT_IN,
    OPT_OUT,
    OPT_ENCRYPT,
    OPT_DECRYPT,
    OPT_MODE,
    OPT_KEY_HEX,
    OPT_IV_HEX,
    OPT_AAD_HEX,
    OPT_NO_PAD,
    OPT_HEX,
    OPT_PUB_OUT,
    OPT_KEY,
    OPT_PUB,
    OPT_PUB_HEX,
    OPT_ID,
    OPT_RAW,
    OPT_DIGEST_HEX,
    OPT_SIG_HEX,
    OPT_CT_HEX,
    OPT_FORMAT,
};

typedef struct gm_args {
    const char *hmac_key_hex, *msg_hex, *in, *out, *mode, *key_hex, *iv_hex, *aad_hex;
    const char *pub_out, *key, *pub, *pub_hex, *id, *digest_hex, *sig_hex, *ct_hex, *format;
    bool encrypt, decrypt, no_pad, hex, raw, help;
} gm_args;

/* Parses argv against `opts`; prints the error and returns CLI_USAGE on failure. */
static int
parse_args(gm_args *a, int argc, char **argv, const struct option *opts, const char *usage)
{
    int c;

    memset(a, 0, sizeof(*a));
    optind = 0; /* glibc: full re-initialisation */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP:
            a->help = true;
            break;
        case OPT_HMAC_KEY_HEX:
            a->hmac_key_hex = optarg;
            break;
        case OPT_MSG_HEX:
            a->msg_hex = optarg;
            break;
        case OPT_IN:
            a->in = optarg;
            break;
        case OPT_OUT:
            a->out = optarg;
            break;
        case OPT_ENCRYPT:
            a->encrypt = true;
            break;
        case OPT_DECRYPT:
            a->decrypt = true;
            break;
        case OPT_MODE:
            a->mode = optarg;
            break;
        case OPT_KEY_HEX:
            a->key_hex = optarg;
            break;
        case OPT_IV_HEX:
            a->iv_hex = optarg;
            break;
        case OPT_AAD_HEX:
            a->aad_hex = optarg;
            break;
        case OPT_NO_PAD:
            a->no_pad = true;
            break;
        case OPT_HEX:
            a->hex = true;
            break;
        case OPT_PUB_OUT:
            a->pub_out = optarg;
            break;
        case OPT_KEY:
            a->key = optarg;
            break;
        case OPT_PUB:
            a->pub = optarg;
            break;
        case OPT_PUB_HEX:
            a->pub_hex = optarg;
            break;
        case OPT_ID:
            a->id = optarg;
            break;
        case OPT_RAW:
            a->raw = true;
            break;
        case OPT_DIGEST_HEX:
            a->digest_hex = optarg;
            break;
        case OPT_SIG_HEX:
            a->sig_hex = optarg;
            break;
        case OPT_CT_HEX:
            a->ct_hex = optarg;
            break;
        case OPT_FORMAT:
            a->format = optarg;
            break;
        case ':':
            return cli_usage_error(usage, "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error(usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return cli_usage_error(usage, "unexpected argument '%s'", argv[optind]);
    }
    return 0;
}

static int
count_set(const char *a, const char *b, const char *c)
{
    return (a != NULL) + (b != NULL) + (c != NULL);
}

#define O(name, has_arg, val)                                                                      \
    {                                                                                              \
        name, has_arg, NULL, val                                                                   \
    }
#define HELP_OPT O("help", no_argument, OPT_HELP)
#define END_OPT                                                                                    \
    {                                                                                              \
        NULL, 0, NULL, 0                                                                           \
    }

/* ---- sm3 --------------------------------------------------------------------------------- */

static const char sm3_usage[] = "dengbao gm sm3 [--hmac-key-hex K] [--msg-hex M | --in FILE]";
static const char sm3_help[] =
    "usage: dengbao gm sm3 [--hmac-key-hex K] [--msg-hex M | --in FILE]\n"
    "\n"
    "SM3 hash (GB/T 32905-2016) of the message, or HMAC-SM3 (GM/T 0042) with --hmac-key-hex.\n"
    "The message is --msg-hex, the file --in, or standard input. Prints 64 hex digits.\n";

static int
gm_sm3_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("hmac-key-hex", required_argument, OPT_HMAC_KEY_HEX),
                                         O("msg-hex", required_argument, OPT_MSG_HEX),
                                         O("in", required_argument, OPT_IN), HELP_OPT, END_OPT};
    uint8_t *msg = NULL, *key = NULL, md[GM_SM3_DIGEST_LEN];
    size_t msg_len = 0, key_len = 0;
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, sm3_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(sm3_help, stdout), CLI_OK);
    }
    if (a.msg_hex != NULL && a.in != NULL) {
        return cli_usage_error(sm3_usage, "give --msg-hex or --in, not both");
    }
    if (a.hmac_key_hex != NULL) {
        rc = dbao_hex_decode(&key, &key_len, a.hmac_key_hex, strlen(a.hmac_key_hex), &err);
        if (rc != 0) {
            return cli_error(rc, "--hmac-key-hex: %s", err.msg);
        }
    }
    rc = cli_read_input(&msg, &msg_len, a.msg_hex, a.in, false, &err);
    if (rc != 0) {
        dbao_free_secret(key, key_len);
        return cli_report(rc, &err);
    }
    if (key != NULL) {
        gm_hmac_sm3(md, key, key_len, msg, msg_len);
    } else {
        gm_sm3(md, msg, msg_len);
    }
    dbao_free_secret(key, key_len);
    dbao_free_secret(msg, msg_len);
    return cli_print_hex(md, sizeof(md));
}

/* ---- sm4 --------------------------------------------------------------------------------- */

static const char sm4_usage[] =
    "dengbao gm sm4 --encrypt|--decrypt --mode ecb|cbc|ctr|gcm --key-hex K [--iv-hex IV] "
    "[--aad-hex A] [--no-pad] [--hex] [--in FILE] [--out FILE]";
static const char sm4_help[] =
    "usage: dengbao gm sm4 --encrypt|--decrypt --mode ecb|cbc|ctr|gcm --key-hex K\n"
    "                      [--iv-hex IV] [--aad-hex A] [--no-pad] [--hex] [--in FILE] [--out "
    "FILE]\n"
    "\n"
    "SM4 (GB/T 32907-2016) encryption or decryption of --in (default standard input) to --out\n"
    "(default standard output).\n"
    "  --key-hex K   the 16-byte key as 32 hex digits\n"
    "  --iv-hex IV   cbc and ctr: the 16-byte IV / initial counter block; gcm: the IV, 1 to\n"
    "                65536 bytes (12 recommended); ecb takes none\n"
    "  --aad-hex A   gcm: additional authenticated data\n"
    "  --no-pad      ecb and cbc: no PKCS#7 padding (length must be a multiple of 16)\n"
    "  --hex         input and output are hex text instead of bytes\n"
    "gcm encryption outputs ciphertext || 16-byte tag; decryption takes the same and exits 1,\n"
    "writing nothing, if the tag does not match. A wrong padding on decryption also exits 1.\n";

static int
gm_sm4_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("encrypt", no_argument, OPT_ENCRYPT),
                                         O("decrypt", no_argument, OPT_DECRYPT),
                                         O("mode", required_argument, OPT_MODE),
                                         O("key-hex", required_argument, OPT_KEY_HEX),
                                         O("iv-hex", required_argument, OPT_IV_HEX),
                                         O("aad-hex", required_argument, OPT_AAD_HEX),
                                         O("no-pad", no_argument, OPT_NO_PAD),
                                         O("hex", no_argument, OPT_HEX),
                                         O("in", required_argument, OPT_IN),
                                         O("out", required_argument, OPT_OUT),
                                         HELP_OPT,
                                         END_OPT};
    uint8_t key[16], iv16[16], *iv = NULL, *aad = NULL, *in = NULL, *out = NULL;
    size_t iv_len = 0, aad_len = 0, in_len = 0, out_len = 0, out_cap = 0;
    gm_sm4_ctx ctx;
    dbao_err err;
    gm_args a;
    int rc, mode;

    gm_sm4_init(&ctx);
    rc = parse_args(&a, argc, argv, opts, sm4_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(sm4_help, stdout), CLI_OK);
    }
    if (a.encrypt == a.decrypt) {
        return cli_usage_error(sm4_usage, "give exactly one of --encrypt and --decrypt");
    }
    if (a.mode == NULL) {
        return cli_usage_error(sm4_usage, "--mode is required");
    }
    if (strcmp(a.mode, "ecb") == 0) {
        mode = 0;
    } else if (strcmp(a.mode, "cbc") == 0) {
        mode = 1;
    } else if (strcmp(a.mode, "ctr") == 0) {
        mode = 2;
    } else if (strcmp(a.mode, "gcm") == 0) {
        mode = 3;
    } else {
        return cli_usage_error(sm4_usage, "unknown mode '%s'", a.mode);
    }
    if (a.key_hex == NULL) {
        return cli_usage_error(sm4_usage, "--key-hex is required");
    }
    if (mode == 0 && a.iv_hex != NULL) {
        return cli_usage_error(sm4_usage, "ecb takes no --iv-hex");
    }
    if (mode != 0 && a.iv_hex == NULL) {
        return cli_usage_error(sm4_usage, "--iv-hex is required for %s", a.mode);
    }
    if (mode != 3 && a.aad_hex != NULL) {
        return cli_usage_error(sm4_usage, "--aad-hex applies to gcm only");
    }
    if (mode >= 2 && a.no_pad) {
        return cli_usage_error(sm4_usage, "--no-pad applies to ecb and cbc only");
    }
    rc = dbao_hex_decode_fixed(key, sizeof(key), a.key_hex, strlen(a.key_hex), &err);
    if (rc != 0) {
        return cli_error(rc, "--key-hex: sm4 key must be 16 bytes: %s", err.msg);
    }
    if (a.iv_hex != NULL) {
        rc = dbao_hex_decode(&iv, &iv_len, a.iv_hex, strlen(a.iv_hex), &err);
        if (rc != 0) {
            rc = cli_error(rc, "--iv-hex: %s", err.msg);
            goto out;
        }
        if (mode != 3 && iv_len != 16) {
            rc = cli_error(DBAO_EFORMAT, "--iv-hex: %s needs a 16-byte iv, got %zu bytes", a.mode,
                           iv_len);
            goto out;
        }
        if (mode == 3 && (iv_len == 0 || iv_len > GM_SM4_GCM_IV_MAX)) {
            rc = cli_error(DBAO_EFORMAT, "--iv-hex: gcm iv must be 1 to %u bytes, got %zu",
                           GM_SM4_GCM_IV_MAX, iv_len);
            goto out;
        }
    }
    if (a.aad_hex != NULL) {
        rc = dbao_hex_decode(&aad, &aad_len, a.aad_hex, strlen(a.aad_hex), &err);
        if (rc != 0) {
            rc = cli_error(rc, "--aad-hex: %s", err.msg);
            goto out;
        }
    }
    rc = cli_read_input(&in, &in_len, NULL, a.in, a.hex, &err);
    if (rc != 0) {
        rc = cli_report(rc, &err);
        goto out;
    }
    rc = gm_sm4_setkey(&ctx, key, sizeof(key));
    if (rc != 0) {
        rc = cli_error(rc, "cannot set sm4 key");
        goto out;
    }
    out_cap = in_len + 32;
    out = dbao_malloc(out_cap);
    if (out == NULL) {
        rc = cli_error(DBAO_ENOMEM, "out of memory");
        goto out;
    }
    if (mode <= 1) {
        bool pad = !a.no_pad;

        if ((a.decrypt || !pad) && in_len % 16 != 0) {
            rc = cli_error(DBAO_ERANGE, "input length %zu is not a multiple of 16 bytes", in_len);
            goto out;
        }
        if (a.decrypt && pad && in_len == 0) {
            rc = cli_error(DBAO_ERANGE, "padded input cannot be empty");
            goto out;
        }
        if (mode == 1) {
            memcpy(iv16, iv, 16);
        }
        out_len = in_len;
        if (mode == 0 && pad) {
            rc = a.encrypt ? gm_sm4_ecb_encrypt_pad(&ctx, out, &out_len, in, in_len)
                           : gm_sm4_ecb_decrypt_pad(&ctx, out, &out_len, in, in_len);
        } else if (mode == 0) {
            rc = a.encrypt ? gm_sm4_ecb_encrypt(&ctx, out, in, in_len)
                           : gm_sm4_ecb_decrypt(&ctx, out, in, in_len);
        } else if (pad) {
            rc = a.encrypt ? gm_sm4_cbc_encrypt_pad(&ctx, out, &out_len, in, in_len, iv16)
                           : gm_sm4_cbc_decrypt_pad(&ctx, out, &out_len, in, in_len, iv16);
        } else {
            rc = a.encrypt ? gm_sm4_cbc_encrypt(&ctx, out, in, in_len, iv16)
                           : gm_sm4_cbc_decrypt(&ctx, out, in, in_len, iv16);
        }
        if (rc == DBAO_EVERIFY) {
            rc = cli_error(rc, "decryption failed: bad padding");
            goto out;
        }
    } else if (mode == 2) {
        memcpy(iv16, iv, 16);
        out_len = in_len;
        rc = gm_sm4_ctr(&ctx, out, in, in_len, iv16);
    } else if (a.encrypt) {
        rc = gm_sm4_gcm_seal(&ctx, out, out + in_len, iv, iv_len, aad, aad_len, in, in_len);
        out_len = in_len + GM_SM4_GCM_TAG_LEN;
    } else {
        if (in_len < GM_SM4_GCM_TAG_LEN) {
            rc = cli_error(DBAO_ERANGE, "gcm input is shorter than the 16-byte tag");
            goto out;
        }
        out_len = in_len - GM_SM4_GCM_TAG_LEN;
        rc = gm_sm4_gcm_open(&ctx, out, iv, iv_len, aad, aad_len, in, out_len, in + out_len);
        if (rc == DBAO_EVERIFY) {
            rc = cli_error(rc, "gcm authentication failed: tag mismatch");
            goto out;
        }
    }
    if (rc != 0) {
        rc = cli_error(rc, "sm4 %s failed: %s", a.mode, dbao_strerror(rc));
        goto out;
    }
    rc = cli_write_output(a.out, out, out_len, a.hex, &err);
    rc = rc == 0 ? CLI_OK : cli_report(rc, &err);
out:
    gm_sm4_cleanup(&ctx);
    dbao_cleanse(key, sizeof(key));
    dbao_free(iv);
    dbao_free(aad);
    dbao_free_secret(in, in_len);
    dbao_free_secret(out, out_cap);
    return rc;
}

/* ---- keygen, pub ------------------------------------------------------------------------- */

static const char keygen_usage[] = "dengbao gm keygen --out KEY.pem [--pub-out PUB.pem]";
static const char keygen_help[] =
    "usage: dengbao gm keygen --out KEY.pem [--pub-out PUB.pem]\n"
    "\n"
    "Generates an SM2 key pair. The private key is written as PKCS#8 PEM with mode 0600; the\n"
    "public key, if asked for, as SubjectPublicKeyInfo PEM.\n";

static int
write_key_pem(const gm_sm2_key *key, const char *path, bool priv, dbao_err *err)
{
    char *pem = NULL;
    size_t len = 0;
    int rc = gm_sm2_key_to_pem(key, &pem, &len, priv, err);

    if (rc == 0) {
        rc = dbao_file_write(path, pem, len, priv ? 0600 : 0644, err);
    }
    dbao_free_secret(pem, len);
    return rc;
}

static int
gm_keygen_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("out", required_argument, OPT_OUT),
                                         O("pub-out", required_argument, OPT_PUB_OUT), HELP_OPT,
                                         END_OPT};
    gm_sm2_key *key = NULL;
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, keygen_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(keygen_help, stdout), CLI_OK);
    }
    if (a.out == NULL) {
        return cli_usage_error(keygen_usage, "--out is required");
    }
    rc = gm_sm2_key_generate(&key, &err);
    if (rc == 0) {
        rc = write_key_pem(key, a.out, true, &err);
    }
    if (rc == 0 && a.pub_out != NULL) {
        rc = write_key_pem(key, a.pub_out, false, &err);
    }
    gm_sm2_key_free(key);
    return rc == 0 ? CLI_OK : cli_report(rc, &err);
}

static const char pub_usage[] = "dengbao gm pub (--key KEY.pem | --key-hex D) [--hex]";
static const char pub_help[] =
    "usage: dengbao gm pub (--key KEY.pem | --key-hex D) [--hex]\n"
    "\n"
    "Prints the public key of an SM2 private key as SubjectPublicKeyInfo PEM, or with --hex as\n"
    "04||x||y (130 hex digits).\n";

static int
gm_pub_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("key", required_argument, OPT_KEY),
                                         O("key-hex", required_argument, OPT_KEY_HEX),
                                         O("hex", no_argument, OPT_HEX), HELP_OPT, END_OPT};
    gm_sm2_key *key = NULL;
    uint8_t pub[GM_SM2_PUB_LEN];
    char *pem = NULL;
    size_t pem_len = 0;
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, pub_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(pub_help, stdout), CLI_OK);
    }
    if (count_set(a.key, a.key_hex, NULL) != 1) {
        return cli_usage_error(pub_usage, "give exactly one of --key and --key-hex");
    }
    rc = cli_load_key(&key, a.key, a.key_hex, true, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    if (a.hex) {
        gm_sm2_key_get_pub(key, pub);
        gm_sm2_key_free(key);
        return cli_print_hex(pub, sizeof(pub));
    }
    rc = gm_sm2_key_to_pem(key, &pem, &pem_len, false, &err);
    gm_sm2_key_free(key);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    rc = dbao_file_write("-", pem, pem_len, 0644, &err);
    dbao_free(pem);
    return rc == 0 ? CLI_OK : cli_report(rc, &err);
}

/* ---- sign, verify ------------------------------------------------------------------------ */

/* The message digest e for sign/verify: --digest-hex directly, else SM3(Z || M). */
static int
message_digest(uint8_t e[32], const gm_sm2_key *key, const gm_args *a, dbao_err *err)
{
    const char *id = a->id != NULL ? a->id : GM_SM2_DEFAULT_ID;
    uint8_t *msg = NULL;
    size_t msg_len = 0;
    int rc;

    if (a->digest_hex != NULL) {
        char why[DBAO_ERR_MSG_MAX];

        rc = dbao_hex_decode_fixed(e, 32, a->digest_hex, strlen(a->digest_hex), err);
        if (rc != 0) {
            /* Copy first: a message cannot be formatted into its own buffer. */
            snprintf(why, sizeof(why), "%s", err->msg);
            return dbao_err_set(err, rc, "--digest-hex: the digest must be 32 bytes: %s", why);
        }
        return 0;
    }
    if (strlen(id) > GM_SM2_ID_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "--id is longer than %d bytes", GM_SM2_ID_MAX);
    }
    rc = cli_read_input(&msg, &msg_len, a->msg_hex, a->in, false, err);
    if (rc != 0) {
        return rc;
    }
    rc = gm_sm2_compute_e(e, key, (const uint8_t *) id, strlen(id), msg, msg_len);
    dbao_free_secret(msg, msg_len);
    return rc;
}

static const char sign_usage[] = "dengbao gm sign (--key KEY.pem | --key-hex D) [--id STR] [--raw] "
                                 "[--msg-hex M | --digest-hex E | --in FILE]";
static const char sign_help[] =
    "usage: dengbao gm sign (--key KEY.pem | --key-hex D) [--id STR] [--raw]\n"
    "                       [--msg-hex M | --digest-hex E | --in FILE]\n"
    "\n"
    "SM2 signature (GB/T 32918.2) of the message (--msg-hex, --in FILE or standard input) with\n"
    "the distinguishing ID (default 1234567812345678), or of a ready digest e = SM3(Z||M) given\n"
    "with --digest-hex. Prints the DER signature (GM/T 0009) in hex, or raw r||s with --raw.\n";

static int
gm_sign_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("key", required_argument, OPT_KEY),
                                         O("key-hex", required_argument, OPT_KEY_HEX),
                                         O("id", required_argument, OPT_ID),
                                         O("raw", no_argument, OPT_RAW),
                                         O("msg-hex", required_argument, OPT_MSG_HEX),
                                         O("digest-hex", required_argument, OPT_DIGEST_HEX),
                                         O("in", required_argument, OPT_IN),
                                         HELP_OPT,
                                         END_OPT};
    gm_sm2_key *key = NULL;
    uint8_t e[32], sig[64], der[GM_SM2_SIG_DER_MAX];
    size_t der_len;
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, sign_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(sign_help, stdout), CLI_OK);
    }
    if (count_set(a.key, a.key_hex, NULL) != 1) {
        return cli_usage_error(sign_usage, "give exactly one of --key and --key-hex");
    }
    if (count_set(a.msg_hex, a.digest_hex, a.in) > 1) {
        return cli_usage_error(sign_usage, "give at most one of --msg-hex, --digest-hex, --in");
    }
    if (a.digest_hex != NULL && a.id != NULL) {
        return cli_usage_error(sign_usage, "--id has no effect with --digest-hex");
    }
    rc = cli_load_key(&key, a.key, a.key_hex, true, &err);
    if (rc == 0) {
        rc = message_digest(e, key, &a, &err);
    }
    if (rc != 0) {
        gm_sm2_key_free(key);
        return cli_report(rc, &err);
    }
    rc = gm_sm2_sign_digest(key, sig, e);
    gm_sm2_key_free(key);
    if (rc != 0) {
        return cli_error(rc, "sm2 signing failed: %s", dbao_strerror(rc));
    }
    if (a.raw) {
        return cli_print_hex(sig, sizeof(sig));
    }
    gm_sm2_sig_to_der(der, &der_len, sig);
    return cli_print_hex(der, der_len);
}

static const char verify_usage[] =
    "dengbao gm verify (--pub PUB.pem | --pub-hex P) [--id STR] --sig-hex S "
    "[--msg-hex M | --digest-hex E | --in FILE]";
static const char verify_help[] =
    "usage: dengbao gm verify (--pub PUB.pem | --pub-hex P) [--id STR] --sig-hex S\n"
    "                         [--msg-hex M | --digest-hex E | --in FILE]\n"
    "\n"
    "Checks an SM2 signature (DER or raw 64-byte r||s) over the message with the distinguishing\n"
    "ID (default 1234567812345678), or over a ready digest e = SM3(Z||M) (--digest-hex).\n"
    "Prints 'ok' and exits 0 if it is valid; exits 1 if it is not.\n";

static int
gm_verify_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("pub", required_argument, OPT_PUB),
                                         O("pub-hex", required_argument, OPT_PUB_HEX),
                                         O("id", required_argument, OPT_ID),
                                         O("sig-hex", required_argument, OPT_SIG_HEX),
                                         O("msg-hex", required_argument, OPT_MSG_HEX),
                                         O("digest-hex", required_argument, OPT_DIGEST_HEX),
                                         O("in", required_argument, OPT_IN),
                                         HELP_OPT,
                                         END_OPT};
    gm_sm2_key *key = NULL;
    uint8_t e[32], sig[64], *sig_in = NULL;
    size_t sig_len = 0;
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, verify_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(verify_help, stdout), CLI_OK);
    }
    if (count_set(a.pub, a.pub_hex, NULL) != 1) {
        return cli_usage_error(verify_usage, "give exactly one of --pub and --pub-hex");
    }
    if (a.sig_hex == NULL) {
        return cli_usage_error(verify_usage, "--sig-hex is required");
    }
    if (count_set(a.msg_hex, a.digest_hex, a.in) > 1) {
        return cli_usage_error(verify_usage, "give at most one of --msg-hex, --digest-hex, --in");
    }
    if (a.digest_hex != NULL && a.id != NULL) {
        return cli_usage_error(verify_usage, "--id has no effect with --digest-hex");
    }
    rc = dbao_hex_decode(&sig_in, &sig_len, a.sig_hex, strlen(a.sig_hex), &err);
    if (rc != 0) {
        return cli_error(rc, "--sig-hex: %s", err.msg);
    }
    rc = gm_sm2_sig_parse(sig, sig_in, sig_len);
    dbao_free(sig_in);
    if (rc != 0) {
        return cli_error(rc, "--sig-hex: not a DER or raw 64-byte sm2 signature");
    }
    rc = cli_load_key(&key, a.pub, a.pub_hex, false, &err);
    if (rc == 0) {
        rc = message_digest(e, key, &a, &err);
    }
    if (rc != 0) {
        gm_sm2_key_free(key);
        return cli_report(rc, &err);
    }
    rc = gm_sm2_verify_digest(key, sig, e);
    gm_sm2_key_free(key);
    if (rc == DBAO_EVERIFY) {
        return cli_error(rc, "signature verification failed");
    }
    if (rc != 0) {
        return cli_error(rc, "sm2 verification failed: %s", dbao_strerror(rc));
    }
    puts("ok");
    return CLI_OK;
}

/* ---- encrypt, decrypt -------------------------------------------------------------------- */

static int
parse_form(gm_sm2_ct_form *out, const char *s)
{
    if (s == NULL || strcmp(s, "der") == 0) {
        *out = GM_SM2_CT_DER;
    } else if (strcmp(s, "c1c3c2") == 0) {
        *out = GM_SM2_CT_C1C3C2;
    } else if (strcmp(s, "c1c2c3") == 0) {
        *out = GM_SM2_CT_C1C2C3;
    } else {
        return -1;
    }
    return 0;
}

static const char encrypt_usage[] =
    "dengbao gm encrypt (--pub PUB.pem | --pub-hex P) [--msg-hex M | --in FILE] "
    "[--format der|c1c3c2|c1c2c3]";
static const char encrypt_help[] =
    "usage: dengbao gm encrypt (--pub PUB.pem | --pub-hex P) [--msg-hex M | --in FILE]\n"
    "                          [--format der|c1c3c2|c1c2c3]\n"
    "\n"
    "SM2 public-key encryption (GB/T 32918.4) of the message. Prints the ciphertext in hex as\n"
    "GM/T 0009 DER (default), or raw 04||x1||y1||C3||C2 (c1c3c2) or 04||x1||y1||C2||C3 (c1c2c3).\n";

static int
gm_encrypt_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("pub", required_argument, OPT_PUB),
                                         O("pub-hex", required_argument, OPT_PUB_HEX),
                                         O("msg-hex", required_argument, OPT_MSG_HEX),
                                         O("in", required_argument, OPT_IN),
                                         O("format", required_argument, OPT_FORMAT),
                                         HELP_OPT,
                                         END_OPT};
    gm_sm2_key *key = NULL;
    gm_sm2_ct_form form;
    uint8_t *msg = NULL, *ct = NULL;
    size_t msg_len = 0, ct_len = 0;
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, encrypt_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(encrypt_help, stdout), CLI_OK);
    }
    if (count_set(a.pub, a.pub_hex, NULL) != 1) {
        return cli_usage_error(encrypt_usage, "give exactly one of --pub and --pub-hex");
    }
    if (a.msg_hex != NULL && a.in != NULL) {
        return cli_usage_error(encrypt_usage, "give --msg-hex or --in, not both");
    }
    if (parse_form(&form, a.format) != 0) {
        return cli_usage_error(encrypt_usage, "unknown --format '%s'", a.format);
    }
    rc = cli_load_key(&key, a.pub, a.pub_hex, false, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    rc = cli_read_input(&msg, &msg_len, a.msg_hex, a.in, false, &err);
    if (rc != 0) {
        gm_sm2_key_free(key);
        return cli_report(rc, &err);
    }
    rc = gm_sm2_encrypt(key, &ct, &ct_len, form, msg, msg_len);
    gm_sm2_key_free(key);
    dbao_free_secret(msg, msg_len);
    if (rc == DBAO_ERANGE) {
        return cli_error(rc, "sm2 encryption needs a message of 1 byte to 1 GiB");
    }
    if (rc != 0) {
        return cli_error(rc, "sm2 encryption failed: %s", dbao_strerror(rc));
    }
    rc = cli_print_hex(ct, ct_len);
    dbao_free(ct);
    return rc;
}

static const char decrypt_usage[] =
    "dengbao gm decrypt (--key KEY.pem | --key-hex D) --ct-hex C [--format der|c1c3c2|c1c2c3]";
static const char decrypt_help[] =
    "usage: dengbao gm decrypt (--key KEY.pem | --key-hex D) --ct-hex C\n"
    "                          [--format der|c1c3c2|c1c2c3]\n"
    "\n"
    "SM2 decryption of a ciphertext in GM/T 0009 DER (default) or a raw form. Prints the\n"
    "plaintext in hex. Exits 1 if the ciphertext's hash C3 does not match (tampered or wrong\n"
    "key), 2 if it is not a well-formed SM2 ciphertext.\n";

static int
gm_decrypt_cmd(int argc, char **argv)
{
    static const struct option opts[] = {O("key", required_argument, OPT_KEY),
                                         O("key-hex", required_argument, OPT_KEY_HEX),
                                         O("ct-hex", required_argument, OPT_CT_HEX),
                                         O("format", required_argument, OPT_FORMAT),
                                         HELP_OPT,
                                         END_OPT};
    gm_sm2_key *key = NULL;
    gm_sm2_ct_form form;
    uint8_t *ct = NULL, *pt = NULL;
    size_t ct_len = 0, pt_len = 0;
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, decrypt_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(decrypt_help, stdout), CLI_OK);
    }
    if (count_set(a.key, a.key_hex, NULL) != 1) {
        return cli_usage_error(decrypt_usage, "give exactly one of --key and --key-hex");
    }
    if (a.ct_hex == NULL) {
        return cli_usage_error(decrypt_usage, "--ct-hex is required");
    }
    if (parse_form(&form, a.format) != 0) {
        return cli_usage_error(decrypt_usage, "unknown --format '%s'", a.format);
    }
    rc = dbao_hex_decode(&ct, &ct_len, a.ct_hex, strlen(a.ct_hex), &err);
    if (rc != 0) {
        return cli_error(rc, "--ct-hex: %s", err.msg);
    }
    rc = cli_load_key(&key, a.key, a.key_hex, true, &err);
    if (rc != 0) {
        dbao_free(ct);
        return cli_report(rc, &err);
    }
    rc = gm_sm2_decrypt(key, &pt, &pt_len, form, ct, ct_len);
    gm_sm2_key_free(key);
    dbao_free(ct);
    if (rc == DBAO_EVERIFY) {
        return cli_error(rc, "sm2 decryption failed: the ciphertext hash does not match");
    }
    if (rc == DBAO_EFORMAT) {
        return cli_error(rc, "--ct-hex: not a well-formed sm2 ciphertext in the %s form",
                         a.format != NULL ? a.format : "der");
    }
    if (rc != 0) {
        return cli_error(rc, "sm2 decryption failed: %s", dbao_strerror(rc));
    }
    rc = cli_print_hex(pt, pt_len);
    dbao_free_secret(pt, pt_len);
    return rc;
}

/* ---- selftest ---------------------------------------------------------------------------- */

static const char selftest_usage[] = "dengbao gm selftest";
static const char selftest_help[] =
    "usage: dengbao gm selftest\n"
    "\n"
    "Runs the known-answer tests of SM3 and HMAC-SM3 (GB/T 32905), SM4 and SM4-GCM (GB/T 32907,\n"
    "RFC 8998) and SM2 (GB/T 32918.5 Annex A), and SM2 pairwise-consistency checks. Prints 'ok'\n"
    "and exits 0, or names the failed test and exits 1.\n";

static int
gm_selftest_cmd(int argc, char **argv)
{
    static const struct option opts[] = {HELP_OPT, END_OPT};
    dbao_err err;
    gm_args a;
    int rc;

    rc = parse_args(&a, argc, argv, opts, selftest_usage);
    if (rc != 0 || a.help) {
        return rc != 0 ? rc : (fputs(selftest_help, stdout), CLI_OK);
    }
    dbao_err_clear(&err);
    rc = gm_selftest(&err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    puts("ok");
    return CLI_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static const char gm_help[] =
    "usage: dengbao gm <command> [options]\n"
    "\n"
    "National cryptography (商用密码): SM2 (GB/T 32918), SM3 (GB/T 32905), SM4 (GB/T 32907).\n"
    "\n"
    "commands:\n"
    "  sm3       SM3 hash or HMAC-SM3\n"
    "  sm4       SM4 encryption and decryption: ecb, cbc, ctr, gcm\n"
    "  keygen    generate an SM2 key pair\n"
    "  pub       print the public key of an SM2 private key\n"
    "  sign      SM2 signature\n"
    "  verify    check an SM2 signature\n"
    "  encrypt   SM2 public-key encryption\n"
    "  decrypt   SM2 decryption\n"
    "  selftest  known-answer self-tests of every algorithm\n"
    "  speed     throughput of every primitive on every implementation path (like openssl speed)\n"
    "  cpu       the CPU features and implementation paths in use (also: dengbao gm --cpu)\n"
    "\n"
    "Binary values are lowercase hex where a flag ends in -hex. Exit status: 0 success or valid,\n"
    "1 verification failed, 2 usage or malformed input, 3 internal failure.\n";

int
cmd_gm(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"sm3", gm_sm3_cmd},         {"sm4", gm_sm4_cmd},         {"keygen", gm_keygen_cmd},
        {"pub", gm_pub_cmd},         {"sign", gm_sign_cmd},       {"verify", gm_verify_cmd},
        {"encrypt", gm_encrypt_cmd}, {"decrypt", gm_decrypt_cmd}, {"selftest", gm_selftest_cmd},
        {"speed", cmd_gm_speed},     {"cpu", cmd_gm_cpu},         {"--cpu", cmd_gm_cpu},
    };
    size_t i;

    if (argc < 2) {
        return cli_usage_error("dengbao gm <command> [options]; see dengbao gm --help",
                               "no gm command given");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(gm_help, stdout);
        return CLI_OK;
    }
    for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(argv[1], cmds[i].name) == 0) {
            return cmds[i].fn(argc - 1, argv + 1);
        }
    }
    return cli_usage_error("dengbao gm <command> [options]; see dengbao gm --help",
                           "unknown gm command '%s'", argv[1]);
}
