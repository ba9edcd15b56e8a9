/* ztcheck.c: a test tool that runs the zt token and device-signature verifiers from the command
 * line, for tests/integration/zt_jwt_interop.sh (tokens and signatures made by npm packages).
 *
 *   ztcheck verify JWKS TOKEN [options]
 *       verifies TOKEN ("-": stdin, "@FILE": a file) against the key set in JWKS and prints
 *       "ok alg=A kid=K sub=S roles=R1,R2 aud=A cnf=<b64url>" (exit 0) or "fail <code> <msg>"
 *       (exit 1). Options: --iss I, --aud A (repeatable), --now N, --skew S, --sm2-alg NAME,
 *       --algs HS256,ES256,RS256,SM2, --require-cnf.
 *   ztcheck devsig-token JWKS TOKEN SIG [--pub-hex P] [options]
 *       verifies TOKEN as above, then SIG (X-SM2-Signature) over it with the device key P
 *       (04||x||y hex; without it, the token's cnf.jwk).
 *   ztcheck devsig-request JWKS TOKEN METHOD PATH QUERY TS NONCE CONTENT_SM3 SIG BODYFILE
 *       [--pub-hex P] [--window W] [options]: request mode; BODYFILE "-" for no body.
 *   ztcheck canonical METHOD PATH QUERY TS NONCE CONTENT_SM3
 *       prints the canonical request string (no trailing LF).
 *   ztcheck thumbprint PUBHEX
 *       prints base64url(SM3(04||x||y)).
 *
 * Exit status: 0 ok, 1 verification failed, 2 usage or unreadable input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/zt.h"

#define MAX_AUD 8

typedef struct args {
    zt_jwt_opts opts;
    const char *aud[MAX_AUD];
    const char *sm2_alg;
    const char *pub_hex;
    uint32_t window;
    const char *pos[16];
    int num_pos;
} args;

static int
usage(void)
{
    fprintf(stderr, "usage: ztcheck verify|devsig-token|devsig-request|canonical|thumbprint ...\n"
                    "       (see the comment at the top of tests/tools/ztcheck.c)\n");
    return 2;
}

static int
parse_algs(const char *s, unsigned *out)
{
    char buf[128];
    char *save = NULL, *tok;

    snprintf(buf, sizeof(buf), "%s", s);
    *out = 0;
    for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "HS256") == 0) {
            *out |= ZT_ALG_HS256;
        } else if (strcmp(tok, "ES256") == 0) {
            *out |= ZT_ALG_ES256;
        } else if (strcmp(tok, "RS256") == 0) {
            *out |= ZT_ALG_RS256;
        } else if (strcmp(tok, "SM2") == 0) {
            *out |= ZT_ALG_SM2;
        } else {
            return -1;
        }
    }
    return 0;
}

static int
parse_args(args *a, int argc, char **argv)
{
    memset(a, 0, sizeof(*a));
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strncmp(s, "--", 2) != 0 || strcmp(s, "--") == 0) {
            if (a->num_pos == 16) {
                return -1;
            }
            a->pos[a->num_pos++] = s;
            continue;
        }
        if (strcmp(s, "--require-cnf") == 0) {
            a->opts.require_cnf = true;
            continue;
        }
        if (v == NULL) {
            return -1;
        }
        i++;
        if (strcmp(s, "--iss") == 0) {
            a->opts.iss = v;
        } else if (strcmp(s, "--aud") == 0 && a->opts.num_aud < MAX_AUD) {
            a->aud[a->opts.num_aud++] = v;
        } else if (strcmp(s, "--now") == 0) {
            a->opts.now = strtoll(v, NULL, 10);
        } else if (strcmp(s, "--skew") == 0) {
            a->opts.skew = strtoll(v, NULL, 10);
        } else if (strcmp(s, "--sm2-alg") == 0) {
            a->sm2_alg = v;
        } else if (strcmp(s, "--algs") == 0) {
            if (parse_algs(v, &a->opts.algs) != 0) {
                return -1;
            }
        } else if (strcmp(s, "--pub-hex") == 0) {
            a->pub_hex = v;
        } else if (strcmp(s, "--window") == 0) {
            a->window = (uint32_t) strtoul(v, NULL, 10);
        } else {
            return -1;
        }
    }
    a->opts.aud = a->aud;
    return 0;
}

/* read_arg returns the text of an argument: itself, stdin for "-", a file for "@FILE". */
static char *
read_arg(const char *s, size_t *len)
{
    uint8_t *buf = NULL;

    if (strcmp(s, "-") == 0 || s[0] == '@') {
        if (dbao_file_read(&buf, len, s[0] == '@' ? s + 1 : "-", 1 << 20, NULL) != 0) {
            return NULL;
        }
        while (*len > 0 && (buf[*len - 1] == '\n' || buf[*len - 1] == '\r')) {
            buf[--*len] = '\0';
        }
        return (char *) buf;
    }
    *len = strlen(s);
    buf = dbao_malloc(*len + 1);
    if (buf != NULL) {
        memcpy(buf, s, *len + 1);
    }
    return (char *) buf;
}

static void
print_claims(const zt_claims *c, const zt_keyset *ks)
{
    char cnf[ZT_SM3_B64_LEN + 1] = "-";

    if (c->has_cnf) {
        zt_b64url_encode(cnf, c->cnf_sm3, sizeof(c->cnf_sm3));
    }
    printf("ok alg=%s kid=%s sub=%s roles=",
           c->alg == ZT_ALG_HS256   ? "HS256"
           : c->alg == ZT_ALG_ES256 ? "ES256"
           : c->alg == ZT_ALG_RS256 ? "RS256"
                                    : zt_keyset_sm2_alg(ks),
           c->kid[0] ? c->kid : "-", c->sub[0] ? c->sub : "-");
    for (size_t i = 0; i < c->num_roles; i++) {
        printf("%s%s", i ? "," : "", c->roles[i]);
    }
    printf("%s aud=%s cnf=%s\n", c->num_roles ? "" : "-", c->aud[0] ? c->aud : "-", cnf);
}

static int
fail(int rc, const dbao_err *err)
{
    printf("fail %d %s\n", rc, err->msg[0] ? err->msg : dbao_strerror(rc));
    return 1;
}

static int
pub_key(gm_sm2_key **out, const char *hex)
{
    uint8_t pub[GM_SM2_PUB_LEN];

    *out = NULL;
    if (hex == NULL) {
        return 0;
    }
    if (dbao_hex_decode_fixed(pub, sizeof(pub), hex, strlen(hex), NULL) != 0 ||
        gm_sm2_key_from_pub(out, pub, sizeof(pub), NULL) != 0) {
        fprintf(stderr, "ztcheck: bad --pub-hex\n");
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    args a;
    zt_keyset *ks = NULL;
    zt_claims c;
    dbao_err err = {0};
    char *tok = NULL;
    size_t tok_len = 0;
    gm_sm2_key *dev = NULL;
    const char *cmd;
    int rc, status = 2;

    if (argc < 2 || parse_args(&a, argc - 2, argv + 2) != 0) {
        return usage();
    }
    cmd = argv[1];
    if (strcmp(cmd, "thumbprint") == 0) {
        uint8_t th[GM_SM3_DIGEST_LEN];
        char out[ZT_SM3_B64_LEN + 1];

        if (a.num_pos != 1 || pub_key(&dev, a.pos[0]) != 0) {
            return usage();
        }
        zt_sm2_thumbprint(th, dev);
        zt_b64url_encode(out, th, sizeof(th));
        printf("%s\n", out);
        gm_sm2_key_free(dev);
        return 0;
    }
    if (strcmp(cmd, "canonical") == 0) {
        zt_devsig_request r = {0};
        dbao_buf b = {0};

        if (a.num_pos != 6) {
            return usage();
        }
        r.method = a.pos[0];
        r.method_len = strlen(a.pos[0]);
        r.path = a.pos[1];
        r.path_len = strlen(a.pos[1]);
        r.query = a.pos[2];
        r.query_len = strlen(a.pos[2]);
        r.timestamp = a.pos[3];
        r.timestamp_len = strlen(a.pos[3]);
        r.nonce = a.pos[4];
        r.nonce_len = strlen(a.pos[4]);
        r.content_sm3 = a.pos[5];
        r.content_sm3_len = strlen(a.pos[5]);
        if (zt_devsig_canonical(&b, &r, &err) != 0) {
            fprintf(stderr, "ztcheck: %s\n", err.msg);
            return 2;
        }
        fwrite(b.data, 1, b.len, stdout);
        dbao_buf_free(&b);
        return 0;
    }
    if ((strcmp(cmd, "verify") == 0 && a.num_pos != 2) ||
        (strcmp(cmd, "devsig-token") == 0 && a.num_pos != 3) ||
        (strcmp(cmd, "devsig-request") == 0 && a.num_pos != 10) ||
        (strcmp(cmd, "verify") != 0 && strcmp(cmd, "devsig-token") != 0 &&
         strcmp(cmd, "devsig-request") != 0)) {
        return usage();
    }
    if (zt_keyset_new(&ks, a.sm2_alg, &err) != 0 ||
        zt_keyset_load_jwks_file(ks, a.pos[0], &err) != 0) {
        fprintf(stderr, "ztcheck: %s\n", err.msg);
        goto out;
    }
    tok = read_arg(a.pos[1], &tok_len);
    if (tok == NULL || pub_key(&dev, a.pub_hex) != 0) {
        fprintf(stderr, "ztcheck: cannot read the token or key\n");
        goto out;
    }
    rc = zt_jwt_verify(ks, &a.opts, tok, tok_len, &c, &err);
    if (rc != 0) {
        status = fail(rc, &err);
        goto out;
    }
    if (strcmp(cmd, "devsig-token") == 0) {
        rc = zt_devsig_verify_token(&c, dev, tok, tok_len, a.pos[2], strlen(a.pos[2]), NULL,
                                    a.opts.now, &err);
    } else if (strcmp(cmd, "devsig-request") == 0) {
        zt_devsig_request r = {0};
        uint8_t body_sm3[GM_SM3_DIGEST_LEN];
        uint8_t *body = NULL;
        size_t body_len = 0;

        if (strcmp(a.pos[9], "-") != 0 &&
            dbao_file_read(&body, &body_len, a.pos[9], 1 << 24, &err) != 0) {
            fprintf(stderr, "ztcheck: %s\n", err.msg);
            goto out;
        }
        gm_sm3(body_sm3, body, body_len);
        dbao_free(body);
        r.method = a.pos[2];
        r.method_len = strlen(a.pos[2]);
        r.path = a.pos[3];
        r.path_len = strlen(a.pos[3]);
        r.query = a.pos[4];
        r.query_len = strlen(a.pos[4]);
        r.timestamp = a.pos[5];
        r.timestamp_len = strlen(a.pos[5]);
        r.nonce = a.pos[6];
        r.nonce_len = strlen(a.pos[6]);
        r.content_sm3 = a.pos[7];
        r.content_sm3_len = strlen(a.pos[7]);
        r.sig = a.pos[8];
        r.sig_len = strlen(a.pos[8]);
        r.body_sm3 = body_sm3;
        rc = zt_devsig_verify_request(&c, dev, &r, NULL, a.opts.now, a.window, &err);
    }
    if (rc != 0) {
        status = fail(rc, &err);
        goto out;
    }
    print_claims(&c, ks);
    status = 0;
out:
    gm_sm2_key_free(dev);
    dbao_free(tok);
    zt_keyset_unref(ks);
    return status;
}
