/* test_checkpoint.c: signed checkpoints (audit.h): C2SP tlog-checkpoint bodies in C2SP signed
 * notes with SM2 signature lines.
 *
 * The signature lines are checked against an independent construction in this file (key ID
 * from gm_sm3 over name || LF || 0xff "dengbao/sm2" || 04||x||y; DER SM2 over the note text),
 * so that the format, not only the round trip, is pinned. Then: several signers and trusted-key
 * sets, every single-bit flip of a signed note rejected, wrong keys, known keys with bad
 * signatures, unknown-key lines ignored (also ML-DSA-sized ones), duplicate trusted signatures,
 * extension lines, and a table of malformed notes and bodies, each rejected with DBAO_EFORMAT.
 *
 * Build: cc -std=gnu11 -Wall -Wextra -Werror -I include -I src/audit -I tests/unit
 *        test_checkpoint.c src/audit/{record,merkle,checkpoint}.c build/libdengbao.a
 *        -ljansson -lcrypto -lcmocka -lpthread
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "dengbao/audit.h"
#include "internal.h"
#include "testutil.h"

#define NAME_A "bank.example/audit"
#define NAME_B "bank.example/audit-2025"
#define NAME_C "witness.example/w1"

static gm_sm2_key *key_a, *key_b, *key_c, *pub_a;

static int
setup(void **state)
{
    uint8_t pub[GM_SM2_PUB_LEN];

    (void) state;
    if (gm_sm2_key_generate(&key_a, NULL) != 0 || gm_sm2_key_generate(&key_b, NULL) != 0 ||
        gm_sm2_key_generate(&key_c, NULL) != 0) {
        return -1;
    }
    gm_sm2_key_get_pub(key_a, pub);
    return gm_sm2_key_from_pub(&pub_a, pub, sizeof(pub), NULL);
}

static int
teardown(void **state)
{
    (void) state;
    gm_sm2_key_free(key_a);
    gm_sm2_key_free(key_b);
    gm_sm2_key_free(key_c);
    gm_sm2_key_free(pub_a);
    return 0;
}

static void
sample(audit_checkpoint *cp)
{
    memset(cp, 0, sizeof(*cp));
    strcpy(cp->origin, NAME_A);
    cp->size = 20852163;
    for (int i = 0; i < AUDIT_HASH_LEN; i++) {
        cp->root[i] = (uint8_t) (i * 7 + 1);
    }
}

/* ref_key_id: the key ID computed here, independently of checkpoint.c. */
static uint32_t
ref_key_id(const char *name, const gm_sm2_key *key)
{
    uint8_t buf[512], h[32];
    size_t n = strlen(name);

    memcpy(buf, name, n);
    buf[n++] = 0x0a;
    buf[n++] = 0xff;
    memcpy(buf + n, "dengbao/sm2", 11);
    n += 11;
    gm_sm2_key_get_pub(key, buf + n);
    n += 65;
    gm_sm3(h, buf, n);
    return (uint32_t) h[0] << 24 | (uint32_t) h[1] << 16 | (uint32_t) h[2] << 8 | h[3];
}

/* sig_line builds "— name base64(id || DER(SM2(text)))\n" with this file's own code. */
static void
sig_line(char *out, size_t cap, const char *name, const gm_sm2_key *key, uint32_t id,
         const char *text)
{
    uint8_t sig[64], blob[4 + GM_SM2_SIG_DER_MAX];
    char b64[AUDIT__B64_LEN(sizeof(blob)) + 1];
    size_t der_len;

    assert_int_equal(gm_sm2_sign(key, sig, (const uint8_t *) GM_SM2_DEFAULT_ID, 16,
                                 (const uint8_t *) text, strlen(text)),
                     0);
    assert_int_equal(gm_sm2_sig_to_der(blob + 4, &der_len, sig), 0);
    blob[0] = (uint8_t) (id >> 24);
    blob[1] = (uint8_t) (id >> 16);
    blob[2] = (uint8_t) (id >> 8);
    blob[3] = (uint8_t) id;
    audit__b64_encode(b64, blob, 4 + der_len);
    snprintf(out, cap, "\xe2\x80\x94 %s %s\n", name, b64);
}

/* signed_text returns text + "\n" + a valid signature line of key A (static buffer). */
static const char *
signed_text(const char *text)
{
    static char buf[AUDIT_NOTE_MAX + 1024];
    char line[256];

    sig_line(line, sizeof(line), NAME_A, key_a, ref_key_id(NAME_A, key_a), text);
    snprintf(buf, sizeof(buf), "%s\n%s", text, line);
    return buf;
}

static int
open_a(const char *note, audit_checkpoint *cp, dbao_err *err)
{
    audit_note_key trusted[] = {{NAME_A, pub_a}};

    return audit_checkpoint_open(cp, note, strlen(note), trusted, 1, NULL, err);
}

/* ---- format and round trip --------------------------------------------------------------------
 */

static void
test_format_and_round_trip(void **state)
{
    audit_checkpoint cp, got;
    audit_note_key signer = {NAME_A, key_a};
    char *note, root_b64[64], body[512];
    uint8_t blob[128], sig[64];
    size_t note_len, blob_len;
    const char *line, *b64;
    uint32_t id;
    bool verified[1];

    (void) state;
    sample(&cp);
    assert_int_equal(audit_note_key_id(&id, &signer, NULL), 0);
    assert_int_equal(id, ref_key_id(NAME_A, key_a));

    assert_int_equal(audit_checkpoint_sign(&note, &note_len, &cp, &signer, 1, NULL), 0);
    assert_int_equal(note_len, strlen(note));
    audit__b64_encode(root_b64, cp.root, AUDIT_HASH_LEN);
    snprintf(body, sizeof(body), "%s\n20852163\n%s\n", NAME_A, root_b64);
    assert_memory_equal(note, body, strlen(body));
    line = note + strlen(body);
    assert_memory_equal(line, "\n\xe2\x80\x94 " NAME_A " ", 5 + strlen(NAME_A) + 1);
    b64 = line + 5 + strlen(NAME_A) + 1;
    assert_true(
        audit__b64_decode(blob, &blob_len, sizeof(blob), b64, strlen(b64) - 1 /* the final LF */));
    assert_int_equal((uint32_t) blob[0] << 24 | (uint32_t) blob[1] << 16 | (uint32_t) blob[2] << 8 |
                         blob[3],
                     id);
    assert_int_equal(gm_sm2_sig_from_der(sig, blob + 4, blob_len - 4), 0);
    assert_int_equal(gm_sm2_verify(pub_a, sig, (const uint8_t *) GM_SM2_DEFAULT_ID, 16,
                                   (const uint8_t *) body, strlen(body)),
                     0);

    {
        audit_note_key trusted[] = {{NAME_A, pub_a}};

        assert_int_equal(audit_checkpoint_open(&got, note, note_len, trusted, 1, verified, NULL),
                         0);
    }
    assert_true(verified[0]);
    assert_string_equal(got.origin, cp.origin);
    assert_int_equal(got.size, cp.size);
    assert_memory_equal(got.root, cp.root, AUDIT_HASH_LEN);
    assert_int_equal(got.num_extensions, 0);
    assert_int_equal(audit_checkpoint_parse_unverified(&got, note, note_len, NULL), 0);
    assert_int_equal(got.size, cp.size);
    dbao_free(note);

    /* The empty tree. */
    cp.size = 0;
    audit_empty_root(cp.root);
    assert_int_equal(audit_checkpoint_sign(&note, &note_len, &cp, &signer, 1, NULL), 0);
    assert_non_null(strstr(note, "\n0\nGrIdg1XPoX+OYRlIMegajyK+yMco/vt0ftA161CCqis=\n\n"));
    assert_int_equal(open_a(note, &got, NULL), 0);
    assert_int_equal(got.size, 0);
    dbao_free(note);

    /* The largest size. */
    cp.size = AUDIT_TREE_SIZE_MAX;
    assert_int_equal(audit_checkpoint_sign(&note, &note_len, &cp, &signer, 1, NULL), 0);
    assert_int_equal(open_a(note, &got, NULL), 0);
    assert_int_equal(got.size, AUDIT_TREE_SIZE_MAX);
    dbao_free(note);
}

/* ---- signers and trust ------------------------------------------------------------------------
 */

static void
test_multiple_signers(void **state)
{
    audit_checkpoint cp, got;
    audit_note_key signers[] = {{NAME_A, key_a}, {NAME_B, key_b}};
    audit_note_key all[] = {{NAME_C, key_c}, {NAME_B, key_b}, {NAME_A, pub_a}};
    audit_note_key only_c[] = {{NAME_C, key_c}};
    audit_note_key a_under_b[] = {{NAME_B, pub_a}};
    audit_note_key b_key_a_name[] = {{NAME_A, key_b}};
    bool verified[3];
    char *note;
    size_t len;
    dbao_err err;

    (void) state;
    sample(&cp);
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, signers, 2, NULL), 0);

    assert_int_equal(audit_checkpoint_open(&got, note, len, all, 3, verified, NULL), 0);
    assert_false(verified[0]);
    assert_true(verified[1]);
    assert_true(verified[2]);
    assert_int_equal(audit_checkpoint_open(&got, note, len, &all[1], 1, verified, NULL), 0);
    assert_true(verified[0]);

    /* No trusted signer; a trusted key under another name; another key under a trusted name:
     * all three are "unknown" lines and are ignored, so nothing verifies. */
    verified[0] = true;
    assert_int_equal(audit_checkpoint_open(&got, note, len, only_c, 1, verified, &err),
                     DBAO_EVERIFY);
    assert_string_equal(err.msg, "note: no signature from a trusted key");
    assert_false(verified[0]);
    assert_int_equal(got.size, 0);
    assert_int_equal(audit_checkpoint_open(&got, note, len, a_under_b, 1, NULL, NULL),
                     DBAO_EVERIFY);
    assert_int_equal(audit_checkpoint_open(&got, note, len, b_key_a_name, 1, NULL, NULL),
                     DBAO_EVERIFY);
    assert_int_equal(audit_checkpoint_open(&got, note, len, NULL, 0, NULL, NULL), DBAO_EVERIFY);
    dbao_free(note);
}

static void
test_tamper_every_bit(void **state)
{
    audit_checkpoint cp, got;
    audit_note_key signer = {NAME_A, key_a};
    char *note;
    size_t len;

    (void) state;
    sample(&cp);
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 1, NULL), 0);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            int rc;

            note[i] ^= (char) (1 << bit);
            rc = open_a(note, &got, NULL);
            assert_true(rc == DBAO_EFORMAT || rc == DBAO_EVERIFY);
            note[i] ^= (char) (1 << bit);
        }
    }
    /* Truncations too. */
    for (size_t n = 0; n < len; n++) {
        audit_note_key trusted[] = {{NAME_A, pub_a}};

        assert_int_not_equal(audit_checkpoint_open(&got, note, n, trusted, 1, NULL, NULL), 0);
    }
    assert_int_equal(open_a(note, &got, NULL), 0);
    dbao_free(note);
}

static void
test_known_key_bad_signature(void **state)
{
    char text[256], line[256], note[1024];
    audit_checkpoint got;
    dbao_err err;

    (void) state;
    snprintf(text, sizeof(text), "%s\n5\n%s\n", NAME_A,
             "GrIdg1XPoX+OYRlIMegajyK+yMco/vt0ftA161CCqis=");
    /* A's name and key ID, but the signature is B's: a known key that fails to verify rejects
     * the note even when another line verifies. */
    sig_line(line, sizeof(line), NAME_A, key_b, ref_key_id(NAME_A, key_a), text);
    snprintf(note, sizeof(note), "%s\n%s%s", text, line, strchr(signed_text(text), '\xe2'));
    assert_int_equal(open_a(note, &got, &err), DBAO_EVERIFY);
    assert_string_equal(err.msg, "note: line 5: signature of trusted key 0 does not verify");

    /* The same trusted key twice. */
    assert_true(snprintf(note, sizeof(note), "%s", signed_text(text)) < (int) sizeof(note));
    sig_line(line, sizeof(line), NAME_A, key_a, ref_key_id(NAME_A, key_a), text);
    strcat(note, line);
    assert_int_equal(open_a(note, &got, &err), DBAO_EVERIFY);
    assert_string_equal(err.msg, "note: line 6: trusted key 0 signed twice");

    /* A signature over other text. */
    sig_line(line, sizeof(line), NAME_A, key_a, ref_key_id(NAME_A, key_a), "other\n1\nx\n");
    snprintf(note, sizeof(note), "%s\n%s", text, line);
    assert_int_equal(open_a(note, &got, &err), DBAO_EVERIFY);

    /* A known key whose blob is not DER. */
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 %s %s\n", text, NAME_A, "AAAAAAAAAAAA");
    {
        uint32_t id = ref_key_id(NAME_A, key_a);
        uint8_t blob[9] = {(uint8_t) (id >> 24),
                           (uint8_t) (id >> 16),
                           (uint8_t) (id >> 8),
                           (uint8_t) id,
                           0x30,
                           0x03,
                           0x02,
                           0x01,
                           0x01};
        char b64[32];

        audit__b64_encode(b64, blob, sizeof(blob));
        snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 %s %s\n", text, NAME_A, b64);
    }
    assert_int_equal(open_a(note, &got, &err), DBAO_EVERIFY);
}

static void
test_unknown_lines_ignored(void **state)
{
    char text[256], note[8192], b64[4096];
    uint8_t blob[2424];
    audit_checkpoint got;
    tu_rng rng = {7};

    (void) state;
    snprintf(text, sizeof(text), "%s\n5\n%s\nextension line\n", NAME_A,
             "GrIdg1XPoX+OYRlIMegajyK+yMco/vt0ftA161CCqis=");
    tu_fill(&rng, blob, sizeof(blob));
    /* An Ed25519-sized and an ML-DSA-44-sized signature from keys we do not know, before and
     * after ours; a line under our name with another key ID. */
    audit__b64_encode(b64, blob, 68);
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 other.example/k %s\n", text, b64);
    audit__b64_encode(b64, blob, sizeof(blob));
    snprintf(note + strlen(note), sizeof(note) - strlen(note),
             "\xe2\x80\x94 \xe8\xaf\x81\xe4\xb9\xa6.example %s\n", b64);
    audit__b64_encode(b64, blob, 70);
    snprintf(note + strlen(note), sizeof(note) - strlen(note), "\xe2\x80\x94 %s %s\n", NAME_A, b64);
    strcat(note, strchr(signed_text(text), '\xe2'));
    assert_int_equal(open_a(note, &got, NULL), 0);
    assert_int_equal(got.size, 5);
    assert_int_equal(got.num_extensions, 1);
    assert_int_equal(audit_checkpoint_parse_unverified(&got, note, strlen(note), NULL), 0);
}

/* ---- malformed input ---------------------------------------------------------------------------
 */

static void
expect_malformed(const char *note, const char *msg)
{
    audit_checkpoint got;
    dbao_err err;

    assert_int_equal(open_a(note, &got, &err), DBAO_EFORMAT);
    if (msg != NULL && strcmp(err.msg, msg) != 0) {
        fprintf(stderr, "message: got '%s', want '%s'\n", err.msg, msg);
        fail();
    }
    assert_int_equal(audit_checkpoint_parse_unverified(&got, note, strlen(note), NULL),
                     DBAO_EFORMAT);
}

static void
test_malformed_notes(void **state)
{
    static const char ROOT[] = "GrIdg1XPoX+OYRlIMegajyK+yMco/vt0ftA161CCqis=";
    static char big[AUDIT_NOTE_MAX + 64];
    char text[512], note[4096], good[1024];
    const char *sig;

    (void) state;
    snprintf(text, sizeof(text), "%s\n5\n%s\n", NAME_A, ROOT);
    assert_true(snprintf(good, sizeof(good), "%s", signed_text(text)) < (int) sizeof(good));
    sig = strchr(good, '\xe2'); /* the signature line */

    /* Note structure. */
    snprintf(note, sizeof(note), "%.*s", (int) strlen(good) - 1, good);
    expect_malformed(note, "note: does not end with a newline");
    snprintf(note, sizeof(note), "%s%s", text, sig);
    expect_malformed(note, NULL); /* no blank line: the text's last line is taken as a sig */
    snprintf(note, sizeof(note), "%s\n", text);
    expect_malformed(note, "note: no signature lines");
    expect_malformed("", "note: length 0 outside 1-65536 bytes");
    snprintf(note, sizeof(note), "%s\n-- %s", text, sig + 4);
    expect_malformed(note, "note: line 5: signature line does not start with \"— \"");
    snprintf(note, sizeof(note), "%s\n%s%s\n", text, sig, "junk");
    expect_malformed(note, "note: line 6: signature line does not start with \"— \"");
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 a+b AAAAAAAA\n", text);
    expect_malformed(note, "note: line 5: invalid key name");
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94  AAAAAAAA\n", text);
    expect_malformed(note, "note: line 5: invalid key name");
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 a\xe3\x80\x80z AAAAAAAA\n", text);
    expect_malformed(note, "note: line 5: invalid key name"); /* U+3000 is a space */
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 name\n", text);
    expect_malformed(note, "note: line 5: no signature after the key name");
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 name AAAA\n", text);
    expect_malformed(note, "note: line 5: signature is not base64 of a key ID and a signature");
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 name AAAAAAB=\n", text);
    expect_malformed(note, "note: line 5: signature is not base64 of a key ID and a signature");
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 name AAAAAAA\n", text);
    expect_malformed(note, NULL);
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 name AAAA AAAA\n", text);
    expect_malformed(note, NULL);
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 name AAAA=AAA\n", text);
    expect_malformed(note, NULL);
    snprintf(note, sizeof(note), "%s\n\xe2\x80\x94 name AAAAAA-_\n", text);
    expect_malformed(note, NULL);
    /* Control characters and UTF-8. */
    snprintf(note, sizeof(note), "%s\r\n", good);
    expect_malformed(note, NULL);
    snprintf(note, sizeof(note), "%s", good);
    note[3] = '\t';
    expect_malformed(note, "note: line 1: control character");
    snprintf(note, sizeof(note), "%s", good);
    note[3] = (char) 0xc0;
    expect_malformed(note, "note: line 1: invalid UTF-8");
    /* Too many signatures, too long. */
    {
        size_t n = (size_t) snprintf(big, sizeof(big), "%s\n", text);

        for (int i = 0; i <= AUDIT_NOTE_SIGS_MAX; i++) {
            n += (size_t) snprintf(big + n, sizeof(big) - n, "%s", sig);
        }
        expect_malformed(big, "note: more than 100 signatures");
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        expect_malformed(big, "note: length 65599 outside 1-65536 bytes");
    }

    /* Bodies (correctly signed, so only the body is wrong). */
    expect_malformed(signed_text(NAME_A "\n5\n"), "checkpoint: 2 lines, needs origin, size and "
                                                  "root");
    snprintf(text, sizeof(text), "\n5\n%s\n", ROOT);
    expect_malformed(signed_text(text), "checkpoint: line 1: empty");
    snprintf(text, sizeof(text), "%s\n05\n%s\n", NAME_A, ROOT);
    expect_malformed(signed_text(text), "checkpoint: line 2: tree size has leading zeros");
    snprintf(text, sizeof(text), "%s\n-5\n%s\n", NAME_A, ROOT);
    expect_malformed(signed_text(text), "checkpoint: line 2: tree size is not a decimal number");
    snprintf(text, sizeof(text), "%s\n 5\n%s\n", NAME_A, ROOT);
    expect_malformed(signed_text(text), "checkpoint: line 2: tree size is not a decimal number");
    snprintf(text, sizeof(text), "%s\n9223372036854775808\n%s\n", NAME_A, ROOT);
    expect_malformed(signed_text(text), "checkpoint: line 2: tree size out of range");
    snprintf(text, sizeof(text), "%s\n99999999999999999999999\n%s\n", NAME_A, ROOT);
    expect_malformed(signed_text(text), "checkpoint: line 2: tree size out of range");
    snprintf(text, sizeof(text), "%s\n5\n%s\n", NAME_A,
             "GrIdg1XPoX+OYRlIMegajyK+yMco/vt0ftA161CCqiq=");
    expect_malformed(signed_text(text), "checkpoint: line 3: root is not base64 of 32 bytes");
    snprintf(text, sizeof(text), "%s\n5\n%s\n", NAME_A,
             "GrIdg1XPoX+OYRlIMegajyK+yMco/vt0ftA161CCqg==");
    expect_malformed(signed_text(text), "checkpoint: line 3: root is not base64 of 32 bytes");
    snprintf(text, sizeof(text), "%s\n5\n%s\n\nafter a blank\n", NAME_A, ROOT);
    expect_malformed(signed_text(text), "checkpoint: line 4: empty");
    {
        char origin[AUDIT_ORIGIN_MAX + 2];

        memset(origin, 'o', sizeof(origin) - 1);
        origin[sizeof(origin) - 1] = '\0';
        snprintf(text, sizeof(text), "%s\n5\n%s\n", origin, ROOT);
        expect_malformed(signed_text(text), "checkpoint: line 1: origin longer than 255 bytes");
    }
}

static void
test_sign_errors(void **state)
{
    audit_checkpoint cp;
    audit_note_key signer = {NAME_A, key_a};
    audit_note_key pub_only = {NAME_A, pub_a};
    audit_note_key twice[] = {{NAME_A, key_a}, {NAME_A, key_a}};
    audit_note_key bad_name = {"a b", key_a};
    audit_note_key trusted_twice[] = {{NAME_A, pub_a}, {NAME_A, key_a}};
    audit_checkpoint got;
    char *note = (char *) 1;
    size_t len;
    dbao_err err;

    (void) state;
    sample(&cp);
    strcpy(cp.origin, "bank example");
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 1, &err), DBAO_EFORMAT);
    assert_null(note);
    strcpy(cp.origin, "a+b");
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 1, &err), DBAO_EFORMAT);
    cp.origin[0] = '\0';
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 1, &err), DBAO_EFORMAT);
    memset(cp.origin, 'o', sizeof(cp.origin)); /* no NUL: 256 bytes */
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 1, &err), DBAO_EFORMAT);
    sample(&cp);
    cp.size = AUDIT_TREE_SIZE_MAX + 1;
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 1, &err), DBAO_ERANGE);
    sample(&cp);
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 0, &err), DBAO_ERANGE);
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &pub_only, 1, &err), DBAO_EKEY);
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, twice, 2, &err), DBAO_EINVAL);
    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &bad_name, 1, &err), DBAO_EFORMAT);
    assert_null(note);

    assert_int_equal(audit_checkpoint_sign(&note, &len, &cp, &signer, 1, NULL), 0);
    assert_int_equal(audit_checkpoint_open(&got, note, len, trusted_twice, 2, NULL, &err),
                     DBAO_EINVAL);
    assert_int_equal(audit_checkpoint_open(&got, note, len, &bad_name, 1, NULL, &err), DBAO_EINVAL);
    dbao_free(note);
}

static void
test_base64_helpers(void **state)
{
    uint8_t out[16];
    size_t len;
    char enc[32];

    (void) state;
    assert_true(audit__b64_decode(out, &len, sizeof(out), "", 0));
    assert_int_equal(len, 0);
    assert_true(audit__b64_decode(out, &len, sizeof(out), "Zm9vYg==", 8));
    assert_int_equal(len, 4);
    assert_memory_equal(out, "foob", 4);
    assert_true(audit__b64_decode(out, &len, sizeof(out), "Zm9vYmE=", 8));
    assert_int_equal(len, 5);
    assert_false(audit__b64_decode(out, &len, sizeof(out), "Zm9vYh==", 8)); /* trailing bits */
    assert_false(audit__b64_decode(out, &len, sizeof(out), "Zm9vYmF=", 8));
    assert_false(audit__b64_decode(out, &len, sizeof(out), "Zm9vYg=", 7));
    assert_false(audit__b64_decode(out, &len, sizeof(out), "Zm9v\nYg==", 9));
    assert_false(audit__b64_decode(out, &len, sizeof(out), "Zm9=Yg==", 8));
    assert_false(audit__b64_decode(out, &len, sizeof(out), "====", 4));
    assert_false(audit__b64_decode(out, &len, 5, "Zm9vYmFy", 8)); /* too long for out */
    audit__b64_encode(enc, (const uint8_t *) "foobar", 6);
    assert_string_equal(enc, "Zm9vYmFy");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_round_trip),
        cmocka_unit_test(test_multiple_signers),
        cmocka_unit_test(test_tamper_every_bit),
        cmocka_unit_test(test_known_key_bad_signature),
        cmocka_unit_test(test_unknown_lines_ignored),
        cmocka_unit_test(test_malformed_notes),
        cmocka_unit_test(test_sign_errors),
        cmocka_unit_test(test_base64_helpers),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
