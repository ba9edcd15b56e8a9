/* checkpoint.c: signed tree heads as C2SP tlog-checkpoint bodies in C2SP signed notes, with
 * SM2 signature lines.
 *
 * A signed checkpoint, byte for byte (docs/audit-format.md section 4 is normative):
 *
 *   <origin> LF                         1..255 bytes, UTF-8, no controls, spaces or '+'
 *   <size> LF                           ASCII decimal, no leading zeros, <= 2^63 - 1
 *   <base64(root)> LF                   44 characters: RFC 4648 base64 of 32 bytes
 *   [extension lines LF]                accepted (non-empty) when parsing; never written
 *   LF                                  the blank line that ends the note text
 *   "— " <key name> " " <base64(key ID || signature)> LF      one or more, at most 100
 *
 * "—" is U+2014 (E2 80 94). The note text (what is signed) runs from the first byte up to and
 * including the LF before the blank line. For dengbao keys:
 *   key ID    = SM3(key name || 0x0A || 0xFF || "dengbao/sm2" || 04||x||y)[0:4], big-endian
 *   signature = DER SEQUENCE { INTEGER r, INTEGER s } (GM/T 0009) of SM2 with the default
 *               distinguishing ID "1234567812345678" over the note text
 * C2SP signed-note reserves type byte 0xFF for signature types it has not assigned, "followed
 * by a longer identifier that is unlikely to collide"; the other free bytes may be assigned to
 * someone else later, so dengbao does not squat on one. SM3 replaces the RECOMMENDED SHA-256 in
 * the key ID so that the whole scheme stays within the national algorithms (密评).
 *
 * Verification follows the C2SP rules: lines whose (key name, key ID) match no trusted key are
 * ignored (after the syntax checks every line must pass); a matching line must verify, else the
 * note is rejected; a trusted key may sign once; at least one trusted signature must verify.
 * The parser is strict: the whole note must be valid UTF-8 without C0 controls other than LF,
 * every line of the body and every signature line must have exactly the shape above, base64
 * must be canonical (padding, no white space, zero trailing bits).
 *
 * Written by hand: the note and checkpoint grammar (no Debian C library implements signed
 * notes) and the strictness checks on base64. OpenSSL (EVP_EncodeBlock / EVP_DecodeBlock)
 * does the base64 arithmetic; gm does SM2 and SM3.
 */
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "dengbao/audit.h"
#include "internal.h"

#define EM_DASH    "\xe2\x80\x94"
#define SIG_PREFIX EM_DASH " "
#define ROOT_B64   AUDIT__B64_LEN(AUDIT_HASH_LEN)

/* ---- base64 ------------------------------------------------------------------------------ */

void
audit__b64_encode(char *out, const uint8_t *in, size_t len)
{
    EVP_EncodeBlock((unsigned char *) out, in, (int) len);
}

static int
b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

bool
audit__b64_decode(uint8_t *out, size_t *out_len, size_t out_cap, const char *in, size_t in_len)
{
    size_t pad = 0, n;
    int v;

    *out_len = 0;
    if (in_len % 4 != 0 || in_len > (size_t) 1 << 30) {
        return false;
    }
    if (in_len > 0 && in[in_len - 1] == '=') {
        pad++;
        if (in[in_len - 2] == '=') {
            pad++;
        }
    }
    for (size_t i = 0; i < in_len - pad; i++) {
        if (b64_value(in[i]) < 0) {
            return false;
        }
    }
    /* Canonical: the bits the padding leaves unused must be zero. */
    if (pad == 1 && (b64_value(in[in_len - 2]) & 0x03) != 0) {
        return false;
    }
    if (pad == 2 && (b64_value(in[in_len - 3]) & 0x0f) != 0) {
        return false;
    }
    n = in_len / 4 * 3;
    if (n > out_cap) {
        return false; /* EVP_DecodeBlock writes the padding bytes too */
    }
    if (in_len == 0) {
        return true;
    }
    v = EVP_DecodeBlock(out, (const unsigned char *) in, (int) in_len);
    if (v < 0 || (size_t) v != n) {
        return false;
    }
    *out_len = n - pad;
    return true;
}

/* ---- names and key IDs --------------------------------------------------------------------- */

/* name_ok: the C2SP key-name rule (non-empty, no Unicode spaces, no '+') on valid UTF-8.
 * `ours` adds dengbao's own rules for names it signs with or trusts: a length limit and no
 * control characters at all. */
static bool
name_ok(const char *s, size_t len, bool ours)
{
    size_t pos = 0;
    uint32_t cp;

    if (len == 0 || (ours && len > AUDIT_KEY_NAME_MAX)) {
        return false;
    }
    while (pos < len) {
        if (!audit__utf8_next((const uint8_t *) s, len, &pos, &cp) || audit__cp_is_space(cp) ||
            cp == '+' || cp < 0x20 || (ours && audit__cp_is_control(cp))) {
            return false;
        }
    }
    return true;
}

static void
key_id_raw(uint32_t *out, const char *name, size_t name_len, const gm_sm2_key *key)
{
    uint8_t pub[GM_SM2_PUB_LEN], h[GM_SM3_DIGEST_LEN];
    gm_sm3_ctx c;

    gm_sm2_key_get_pub(key, pub);
    gm_sm3_init(&c);
    gm_sm3_update(&c, name, name_len);
    gm_sm3_update(&c, "\n", 1);
    gm_sm3_update(&c, AUDIT_NOTE_SIG_TYPE, AUDIT_NOTE_SIG_TYPE_LEN);
    gm_sm3_update(&c, pub, sizeof(pub));
    gm_sm3_final(&c, h);
    *out = (uint32_t) h[0] << 24 | (uint32_t) h[1] << 16 | (uint32_t) h[2] << 8 | h[3];
}

int
audit_note_key_id(uint32_t *out, const audit_note_key *key, dbao_err *err)
{
    *out = 0;
    if (key == NULL || key->name == NULL || key->key == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "note key: missing name or key");
    }
    if (!name_ok(key->name, strnlen(key->name, AUDIT_KEY_NAME_MAX + 1), true)) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "note key: name must be 1-%d bytes of UTF-8 without controls, spaces "
                            "or '+'",
                            AUDIT_KEY_NAME_MAX);
    }
    key_id_raw(out, key->name, strlen(key->name), key->key);
    return 0;
}

/* ---- signing --------------------------------------------------------------------------------- */

static int
origin_check(const char *origin, dbao_err *err)
{
    if (!name_ok(origin, strnlen(origin, AUDIT_ORIGIN_MAX + 1), true) ||
        strnlen(origin, AUDIT_ORIGIN_MAX + 1) > AUDIT_ORIGIN_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "checkpoint: origin must be 1-%d bytes of UTF-8 without controls, "
                            "spaces or '+'",
                            AUDIT_ORIGIN_MAX);
    }
    return 0;
}

int
audit_checkpoint_sign(char **out, size_t *out_len, const audit_checkpoint *cp,
                      const audit_note_key *signers, size_t num_signers, dbao_err *err)
{
    char root_b64[ROOT_B64 + 1], num[24];
    uint32_t ids[AUDIT_NOTE_SIGS_MAX];
    audit__buf b;
    size_t text_len;
    int rc;

    *out = NULL;
    *out_len = 0;
    if ((rc = origin_check(cp->origin, err)) != 0) {
        return rc;
    }
    if (cp->size > AUDIT_TREE_SIZE_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "checkpoint: tree size out of range");
    }
    if (num_signers == 0 || num_signers > AUDIT_NOTE_SIGS_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "checkpoint: needs 1-%d signers, got %zu",
                            AUDIT_NOTE_SIGS_MAX, num_signers);
    }
    for (size_t i = 0; i < num_signers; i++) {
        if ((rc = audit_note_key_id(&ids[i], &signers[i], err)) != 0) {
            return rc;
        }
        if (!gm_sm2_key_has_priv(signers[i].key)) {
            return dbao_err_set(err, DBAO_EKEY, "checkpoint: signer %zu has no private key", i);
        }
        for (size_t j = 0; j < i; j++) {
            if (ids[j] == ids[i] && strcmp(signers[j].name, signers[i].name) == 0) {
                return dbao_err_set(err, DBAO_EINVAL,
                                    "checkpoint: signers %zu and %zu are the "
                                    "same key",
                                    j, i);
            }
        }
    }

    audit__b64_encode(root_b64, cp->root, AUDIT_HASH_LEN);
    snprintf(num, sizeof(num), "%" PRIu64, cp->size);
    audit__buf_init(&b, AUDIT_NOTE_MAX);
    audit__buf_puts(&b, cp->origin);
    audit__buf_putc(&b, '\n');
    audit__buf_puts(&b, num);
    audit__buf_putc(&b, '\n');
    audit__buf_puts(&b, root_b64);
    audit__buf_putc(&b, '\n');
    text_len = b.len;
    audit__buf_putc(&b, '\n');

    for (size_t i = 0; i < num_signers && b.rc == 0; i++) {
        uint8_t sig[GM_SM2_SIG_RAW_LEN], blob[4 + GM_SM2_SIG_DER_MAX];
        char line[AUDIT__B64_LEN(sizeof(blob)) + 1];
        size_t der_len;

        rc = gm_sm2_sign(signers[i].key, sig, (const uint8_t *) GM_SM2_DEFAULT_ID,
                         GM_SM2_DEFAULT_ID_LEN, b.p, text_len);
        if (rc == 0) {
            rc = gm_sm2_sig_to_der(blob + 4, &der_len, sig);
        }
        if (rc != 0) {
            audit__buf_cleanup(&b);
            return dbao_err_set(err, rc, "checkpoint: signing with signer %zu failed", i);
        }
        blob[0] = (uint8_t) (ids[i] >> 24);
        blob[1] = (uint8_t) (ids[i] >> 16);
        blob[2] = (uint8_t) (ids[i] >> 8);
        blob[3] = (uint8_t) ids[i];
        audit__b64_encode(line, blob, 4 + der_len);
        audit__buf_puts(&b, SIG_PREFIX);
        audit__buf_puts(&b, signers[i].name);
        audit__buf_putc(&b, ' ');
        audit__buf_puts(&b, line);
        audit__buf_putc(&b, '\n');
    }
    rc = audit__buf_take(&b, out, out_len);
    if (rc != 0) {
        return dbao_err_set(err, rc, "checkpoint: %s",
                            rc == DBAO_ERANGE ? "note longer than the limit" : "out of memory");
    }
    return 0;
}

/* ---- parsing -------------------------------------------------------------------------------- */

typedef struct sig_line {
    const char *name;
    size_t name_len;
    const char *b64;
    size_t b64_len;
    size_t line_no;
} sig_line;

typedef struct parsed_note {
    const char *text;
    size_t text_len;
    sig_line sigs[AUDIT_NOTE_SIGS_MAX];
    size_t num_sigs;
} parsed_note;

static size_t
line_of(const char *s, size_t off)
{
    size_t line = 1;

    for (size_t i = 0; i < off; i++) {
        line += s[i] == '\n';
    }
    return line;
}

/* note_parse splits a signed note into text and signature lines and checks their syntax
 * (not the base64 content, which note_open decodes). */
static int
note_parse(parsed_note *n, const char *s, size_t len, dbao_err *err)
{
    size_t pos = 0, split = 0, i;
    bool found = false;
    uint32_t cp;

    memset(n, 0, sizeof(*n));
    if (len == 0 || len > AUDIT_NOTE_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "note: length %zu outside 1-%d bytes", len,
                            AUDIT_NOTE_MAX);
    }
    while (pos < len) {
        size_t at = pos;

        if (!audit__utf8_next((const uint8_t *) s, len, &pos, &cp)) {
            return dbao_err_set(err, DBAO_EFORMAT, "note: line %zu: invalid UTF-8", line_of(s, at));
        }
        if (cp < 0x20 && cp != '\n') {
            return dbao_err_set(err, DBAO_EFORMAT, "note: line %zu: control character",
                                line_of(s, at));
        }
    }
    if (s[len - 1] != '\n') {
        return dbao_err_set(err, DBAO_EFORMAT, "note: does not end with a newline");
    }
    for (i = len - 1; i > 0; i--) {
        if (s[i] == '\n' && s[i - 1] == '\n') {
            split = i - 1;
            found = true;
            break;
        }
    }
    if (!found) {
        return dbao_err_set(err, DBAO_EFORMAT, "note: no blank line before the signatures");
    }
    n->text = s;
    n->text_len = split + 1;
    pos = split + 2;
    if (pos >= len) {
        return dbao_err_set(err, DBAO_EFORMAT, "note: no signature lines");
    }
    while (pos < len) {
        const char *line = s + pos, *nl = memchr(line, '\n', len - pos), *sp;
        size_t line_len = (size_t) (nl - line), line_no = line_of(s, pos);
        sig_line *sl;

        if (n->num_sigs == AUDIT_NOTE_SIGS_MAX) {
            return dbao_err_set(err, DBAO_EFORMAT, "note: more than %d signatures",
                                AUDIT_NOTE_SIGS_MAX);
        }
        if (line_len < 4 || memcmp(line, SIG_PREFIX, 4) != 0) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "note: line %zu: signature line does not start with \"— \"",
                                line_no);
        }
        sl = &n->sigs[n->num_sigs++];
        sl->line_no = line_no;
        sl->name = line + 4;
        sp = memchr(sl->name, ' ', line_len - 4);
        if (sp == NULL) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "note: line %zu: no signature after the key "
                                "name",
                                line_no);
        }
        sl->name_len = (size_t) (sp - sl->name);
        sl->b64 = sp + 1;
        sl->b64_len = (size_t) (nl - sl->b64);
        if (!name_ok(sl->name, sl->name_len, false)) {
            return dbao_err_set(err, DBAO_EFORMAT, "note: line %zu: invalid key name", line_no);
        }
        pos += line_len + 1;
    }
    return 0;
}

/* body_parse reads the tlog-checkpoint lines of the note text. */
static int
body_parse(audit_checkpoint *cp, const char *t, size_t len, dbao_err *err)
{
    const char *line[3];
    size_t line_len[3], pos = 0, num = 0;
    uint8_t root[ROOT_B64];
    size_t root_len;
    uint64_t size = 0;

    memset(cp, 0, sizeof(*cp));
    while (pos < len) {
        const char *nl = memchr(t + pos, '\n', len - pos); /* text ends with '\n' */
        size_t l = (size_t) (nl - (t + pos));

        if (l == 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "checkpoint: line %zu: empty", num + 1);
        }
        if (num < 3) {
            line[num] = t + pos;
            line_len[num] = l;
        }
        num++;
        pos += l + 1;
    }
    if (num < 3) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "checkpoint: %zu lines, needs origin, size and "
                            "root",
                            num);
    }
    if (line_len[0] > AUDIT_ORIGIN_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "checkpoint: line 1: origin longer than %d bytes",
                            AUDIT_ORIGIN_MAX);
    }
    memcpy(cp->origin, line[0], line_len[0]);
    cp->origin[line_len[0]] = '\0';
    if (line_len[1] > 1 && line[1][0] == '0') {
        return dbao_err_set(err, DBAO_EFORMAT, "checkpoint: line 2: tree size has leading zeros");
    }
    for (size_t i = 0; i < line_len[1]; i++) {
        unsigned d = (unsigned) (line[1][i] - '0');

        if (line[1][i] < '0' || line[1][i] > '9') {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "checkpoint: line 2: tree size is not a "
                                "decimal number");
        }
        if (size > (AUDIT_TREE_SIZE_MAX - d) / 10) {
            return dbao_err_set(err, DBAO_EFORMAT, "checkpoint: line 2: tree size out of range");
        }
        size = size * 10 + d;
    }
    if (line_len[2] != ROOT_B64 ||
        !audit__b64_decode(root, &root_len, sizeof(root), line[2], line_len[2]) ||
        root_len != AUDIT_HASH_LEN) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "checkpoint: line 3: root is not base64 of 32 "
                            "bytes");
    }
    cp->size = size;
    memcpy(cp->root, root, AUDIT_HASH_LEN);
    cp->num_extensions = num - 3;
    return 0;
}

static int
checkpoint_open(audit_checkpoint *out, const char *s, size_t len, const audit_note_key *trusted,
                size_t num_trusted, bool *out_verified, bool verify, dbao_err *err)
{
    parsed_note *n = NULL;
    uint8_t *blob = NULL;
    uint32_t *ids = NULL;
    bool *seen = NULL;
    size_t good = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    if (out_verified != NULL) {
        memset(out_verified, 0, num_trusted * sizeof(*out_verified));
    }
    n = dbao_malloc(sizeof(*n));
    blob = dbao_malloc(len);
    ids = dbao_calloc(num_trusted + 1, sizeof(*ids));
    seen = dbao_calloc(num_trusted + 1, sizeof(*seen));
    if (n == NULL || blob == NULL || ids == NULL || seen == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "checkpoint: out of memory");
        goto out;
    }
    for (size_t i = 0; i < num_trusted; i++) {
        if ((rc = audit_note_key_id(&ids[i], &trusted[i], err)) != 0) {
            rc = dbao_err_set(err, DBAO_EINVAL, "checkpoint: trusted key %zu is invalid", i);
            goto out;
        }
        for (size_t j = 0; j < i; j++) {
            if (ids[j] == ids[i] && strcmp(trusted[j].name, trusted[i].name) == 0) {
                rc = dbao_err_set(err, DBAO_EINVAL,
                                  "checkpoint: trusted keys %zu and %zu share name and key ID", j,
                                  i);
                goto out;
            }
        }
    }
    if ((rc = note_parse(n, s, len, err)) != 0 ||
        (rc = body_parse(out, n->text, n->text_len, err)) != 0) {
        goto out;
    }

    for (size_t k = 0; k < n->num_sigs; k++) {
        const sig_line *sl = &n->sigs[k];
        uint8_t sig[GM_SM2_SIG_RAW_LEN];
        size_t blob_len, t;
        uint32_t id;

        if (!audit__b64_decode(blob, &blob_len, len, sl->b64, sl->b64_len) || blob_len < 5) {
            rc = dbao_err_set(err, DBAO_EFORMAT,
                              "note: line %zu: signature is not base64 of a "
                              "key ID and a signature",
                              sl->line_no);
            goto out;
        }
        if (!verify) {
            continue;
        }
        id =
            (uint32_t) blob[0] << 24 | (uint32_t) blob[1] << 16 | (uint32_t) blob[2] << 8 | blob[3];
        for (t = 0; t < num_trusted; t++) {
            if (ids[t] == id && strlen(trusted[t].name) == sl->name_len &&
                memcmp(trusted[t].name, sl->name, sl->name_len) == 0) {
                break;
            }
        }
        if (t == num_trusted) {
            continue; /* unknown key: ignored, as C2SP signed-note requires */
        }
        if (seen[t]) {
            rc = dbao_err_set(err, DBAO_EVERIFY, "note: line %zu: trusted key %zu signed twice",
                              sl->line_no, t);
            goto out;
        }
        seen[t] = true;
        if (gm_sm2_sig_from_der(sig, blob + 4, blob_len - 4) != 0 ||
            gm_sm2_verify(trusted[t].key, sig, (const uint8_t *) GM_SM2_DEFAULT_ID,
                          GM_SM2_DEFAULT_ID_LEN, (const uint8_t *) n->text, n->text_len) != 0) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "note: line %zu: signature of trusted key %zu does not verify",
                              sl->line_no, t);
            goto out;
        }
        if (out_verified != NULL) {
            out_verified[t] = true;
        }
        good++;
    }
    if (verify && good == 0) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "note: no signature from a trusted key");
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        memset(out, 0, sizeof(*out));
        if (out_verified != NULL) {
            memset(out_verified, 0, num_trusted * sizeof(*out_verified));
        }
    }
    dbao_free(n);
    dbao_free(blob);
    dbao_free(ids);
    dbao_free(seen);
    return rc;
}

int
audit_checkpoint_open(audit_checkpoint *out, const char *note, size_t note_len,
                      const audit_note_key *trusted, size_t num_trusted, bool *out_verified,
                      dbao_err *err)
{
    return checkpoint_open(out, note, note_len, trusted, num_trusted, out_verified, true, err);
}

int
audit_checkpoint_parse_unverified(audit_checkpoint *out, const char *note, size_t note_len,
                                  dbao_err *err)
{
    return checkpoint_open(out, note, note_len, NULL, 0, NULL, false, err);
}
