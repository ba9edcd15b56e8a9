/* test_func.c: the masking functions, keyring and mask_decrypt (src/mask/func.c).
 *
 * Every function on UTF-8, empty, short and invalid UTF-8 values; every type default; spec
 * parsing and canonical formatting (round trip) and refusals; pseudonym stability and key
 * dependence; encrypt/decrypt round trip, tampering (DBAO_EVERIFY), unknown keys (DBAO_EKEY),
 * malformed values (DBAO_EFORMAT); year, round and noise on the formats they accept and
 * DBAO_EFORMAT on others; key files (0600 accepted, 0644 refused, bad hex, wiping on free is
 * not observable here).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "dengbao/gm.h"
#include "dengbao/mask.h"

static const uint8_t KEY16[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t KEY32[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static mask_keyring *
ring(void)
{
    mask_keyring *k = NULL;
    assert_int_equal(mask_keyring_new(&k), 0);
    assert_int_equal(mask_keyring_add(k, "k1", KEY16, 16, NULL), 0);
    assert_int_equal(mask_keyring_add(k, "k2", KEY32, 32, NULL), 0);
    uint8_t other[16];
    memcpy(other, KEY16, 16);
    other[0] ^= 1;
    assert_int_equal(mask_keyring_add(k, "k3", other, 16, NULL), 0);
    return k;
}

/* run applies spec to in (of given length) and returns the result (static buffer) */
static char result[4096];
static int
run_len(const char *spec, mask_type t, const mask_keyring *k, const char *in, size_t len)
{
    mask_fn f;
    dbao_err err;
    dbao_buf out = {0};
    int rc = mask_fn_parse(&f, spec, strlen(spec), &err);
    if (rc != 0) {
        fprintf(stderr, "parse %s: %s\n", spec, err.msg);
        return rc;
    }
    rc = mask_fn_apply(&f, t, k, in, len, &out, &err);
    result[0] = '\0';
    if (rc == 0) {
        assert_true(out.len < sizeof(result));
        memcpy(result, out.data ? out.data : "", out.len);
        result[out.len] = '\0';
    }
    dbao_buf_free(&out);
    mask_fn_cleanup(&f);
    return rc;
}

static const char *
run(const char *spec, mask_type t, const char *in)
{
    assert_int_equal(run_len(spec, t, NULL, in, strlen(in)), 0);
    return result;
}

static void
test_keep_range(void **state)
{
    (void) state;
    assert_string_equal(run("keep(3,4)", MASK_T_NONE, "13800138000"), "138****8000");
    assert_string_equal(run("keep(1,0)", MASK_T_NONE, "张三丰"), "张**");
    assert_string_equal(run("keep(1,1)", MASK_T_NONE, "欧阳娜娜"), "欧**娜");
    assert_string_equal(run(" keep ( 2 , 1 ) ", MASK_T_NONE, "abcdef"), "ab***f");
    /* keep longer than (or as long as) the value: everything masked */
    assert_string_equal(run("keep(6,4)", MASK_T_NONE, "12345"), "*****");
    assert_string_equal(run("keep(2,2)", MASK_T_NONE, "张三丰年"), "****");
    assert_string_equal(run("keep(0,0)", MASK_T_NONE, "ab"), "**");
    assert_string_equal(run("keep(3,4)", MASK_T_NONE, ""), "");
    assert_string_equal(run("range(1,3)", MASK_T_NONE, "abcdef"), "a**def");
    assert_string_equal(run("range(1,100)", MASK_T_NONE, "张三丰"), "张**");
    assert_string_equal(run("range(0,1)", MASK_T_NONE, ""), "");
    assert_string_equal(run("range(5,9)", MASK_T_NONE, "abc"), "abc");
}

static void
test_before_after_replace(void **state)
{
    (void) state;
    assert_string_equal(run("before(@)", MASK_T_NONE, "zhang@example.com"), "*****@example.com");
    assert_string_equal(run("after(@)", MASK_T_NONE, "zhang@ex.com"), "zhang@******");
    assert_string_equal(run("before('@')", MASK_T_NONE, "a@b"), "*@b");
    assert_string_equal(run("after(：)", MASK_T_NONE, "电话：123"), "电话：***");
    /* the character absent: everything masked */
    assert_string_equal(run("before(@)", MASK_T_NONE, "nobody"), "******");
    assert_string_equal(run("after(',')", MASK_T_NONE, "a,bc"), "a,**");
    assert_string_equal(run("replace('***')", MASK_T_NONE, "secret"), "***");
    assert_string_equal(run("replace('it''s')", MASK_T_NONE, "x"), "it's");
    assert_string_equal(run("replace(\"[隐藏]\")", MASK_T_NONE, "x"), "[隐藏]");
    assert_string_equal(run("replace('')", MASK_T_NONE, "x"), "");
    assert_string_equal(run("replace(XX)", MASK_T_NONE, "x"), "XX");
    assert_string_equal(run("clear", MASK_T_NONE, "张三"), "张三");
}

static void
test_invalid_utf8(void **state)
{
    (void) state;
    /* invalid bytes count as one character each and are never passed through */
    const char bad[] = "a\xff\xfe"
                       "b\xe5\xbc";
    assert_int_equal(run_len("keep(1,1)", MASK_T_NONE, NULL, bad, sizeof(bad) - 1), 0);
    assert_string_equal(result,
                        "a*****"); /* a, ff, fe, b, e5, bc: 6 chars, the kept last one invalid */
    assert_int_equal(run_len("keep(2,0)", MASK_T_NONE, NULL, bad, sizeof(bad) - 1), 0);
    assert_string_equal(result, "a*****");
    assert_int_equal(run_len("range(5,6)", MASK_T_NONE, NULL, bad, sizeof(bad) - 1), 0);
    assert_string_equal(result, "a**b**");
    /* overlong and surrogate forms are invalid */
    assert_int_equal(run_len("range(9,10)", MASK_T_NONE, NULL, "\xc0\xaf\xed\xa0\x80", 5), 0);
    assert_string_equal(result, "*****");
    assert_int_equal(run_len("default", MASK_T_CN_NAME, NULL, "\xe5\xbc\xa0\xff", 4), 0);
    assert_string_equal(result, "张*");
    assert_int_equal(run_len("clear", MASK_T_NONE, NULL, "\xff", 1), 0);
    assert_string_equal(result, "\xff");
}

static void
test_defaults(void **state)
{
    (void) state;
    assert_string_equal(run("default", MASK_T_CN_RID18, "11010519491231002X"),
                        "110105********002X");
    assert_string_equal(run("default", MASK_T_CN_RID15, "110105491231002"), "110105*****1002");
    assert_string_equal(run("default", MASK_T_CN_MOBILE, "13800138000"), "138****8000");
    assert_string_equal(run("default", MASK_T_CN_MOBILE, "+86 138 0013 8000"), "+86 138 **** 8000");
    assert_string_equal(run("default", MASK_T_CN_MOBILE, "008613800138000"), "0086138****8000");
    assert_string_equal(run("default", MASK_T_CN_MOBILE, "86-13800138000"), "86-138****8000");
    assert_string_equal(run("default", MASK_T_CN_MOBILE, "0086-138-0013-8000"),
                        "0086-138-****-8000");
    assert_string_equal(run("default", MASK_T_BANK_CARD, "6222021234567890"), "************7890");
    assert_string_equal(run("default", MASK_T_BANK_CARD, "6222 0212 3456 7890"),
                        "**** **** **** 7890");
    assert_string_equal(run("default", MASK_T_USCC, "91350100M000100Y43"), "91************0Y43");
    assert_string_equal(run("default", MASK_T_CN_PASSPORT, "E12345678"), "E*****678");
    assert_string_equal(run("default", MASK_T_HKMO_PERMIT, "C12345678"), "C*****678");
    assert_string_equal(run("default", MASK_T_HRP, "H12345678"), "H*****678");
    assert_string_equal(run("default", MASK_T_EMAIL, "zhang@example.com"), "z****@example.com");
    assert_string_equal(run("default", MASK_T_EMAIL, "z@example.com"), "*@example.com");
    assert_string_equal(run("default", MASK_T_EMAIL, "noat"), "****");
    assert_string_equal(run("default", MASK_T_IPV4, "10.1.2.3"), "10.1.*.*");
    assert_string_equal(run("default", MASK_T_IPV4, "192.168.100.254"), "192.168.*.*");
    assert_string_equal(run("default", MASK_T_IPV4, "1.2"), "***");
    assert_string_equal(run("default", MASK_T_CN_PLATE, "京A12345"), "京A****5");
    assert_string_equal(run("default", MASK_T_CN_PLATE, "粤BD12345"), "粤B*****5");
    assert_string_equal(run("default", MASK_T_CN_NAME, "张三丰"), "张**");
    assert_string_equal(run("default", MASK_T_CN_NAME, "张"), "*");
    assert_string_equal(run("default", MASK_T_NONE, "anything"), "***");
    /* short values are masked completely */
    assert_string_equal(run("default", MASK_T_CN_RID18, "1234"), "****");
    assert_string_equal(run("default", MASK_T_CN_MOBILE, ""), "");
}

static void
test_parse_format(void **state)
{
    (void) state;
    static const char *const good[][2] = {
        {"clear", "clear"},
        {"default", "default"},
        {"keep( 6 , 4 )", "keep(6,4)"},
        {"range(0,3)", "range(0,3)"},
        {"before(@)", "before(@)"},
        {"after(',')", "after(',')"},
        {"after('''')", "after('''')"},
        {"before(：)", "before(：)"},
        {"replace('***')", "replace('***')"},
        {"replace('a''b')", "replace('a''b')"},
        {"pseudonym(k2026)", "pseudonym(k2026)"},
        {"encrypt( k.1-x_ )", "encrypt(k.1-x_)"},
        {"year", "year"},
        {"year()", "year"},
        {"round(100)", "round(100)"},
        {"noise(10)", "noise(10)"},
        {"noise(5, k1)", "noise(5,k1)"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        mask_fn f, g;
        dbao_err err;
        dbao_buf b = {0};
        if (mask_fn_parse(&f, good[i][0], strlen(good[i][0]), &err) != 0)
            fail_msg("%s: %s", good[i][0], err.msg);
        assert_int_equal(mask_fn_format(&f, &b), 0);
        assert_string_equal(b.data, good[i][1]);
        /* the canonical form parses to the same function */
        assert_int_equal(mask_fn_parse(&g, b.data, b.len, &err), 0);
        assert_int_equal(f.kind, g.kind);
        assert_int_equal(f.a, g.a);
        assert_int_equal(f.b, g.b);
        assert_int_equal(f.ch, g.ch);
        assert_string_equal(f.key_id, g.key_id);
        if (f.value)
            assert_string_equal(f.value, g.value);
        mask_fn_cleanup(&f);
        mask_fn_cleanup(&g);
        dbao_buf_free(&b);
    }
    static const char *const bad[] = {
        "",
        "keep",
        "keep(1)",
        "keep(1,2,3)",
        "keep(-1,2)",
        "keep(a,b)",
        "keep(1,2",
        "range(3,3)",
        "range(4,2)",
        "before()",
        "before(ab)",
        "before('')",
        "replace('x)",
        "replace()",
        "pseudonym()",
        "pseudonym(a b)",
        "encrypt('k1')",
        "pseudonym(k!)",
        "round(0)",
        "round(1.5)",
        "noise(0)",
        "noise(101)",
        "noise(5,k1,k2)",
        "Keep(1,2)",
        "mask(1)",
        "year(1)",
        "after(,)",
        "clear()x",
        "keep(1,2)x",
        "keep(99999999999999999999,1)",
        "pseudonym(aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa)",
        "replace('\xff')",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mask_fn f;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = mask_fn_parse(&f, bad[i], strlen(bad[i]), &err);
        if (rc != DBAO_EFORMAT)
            fail_msg("'%s' gave %d", bad[i], rc);
        assert_true(err.msg[0] != '\0');
        assert_null(f.value);
    }
}

static void
test_pseudonym(void **state)
{
    (void) state;
    mask_keyring *k = ring();
    char a[64], b[64];
    assert_int_equal(run_len("pseudonym(k2)", MASK_T_NONE, k, "11010519491231002X", 18), 0);
    strcpy(a, result);
    assert_int_equal(strlen(a), 34);
    assert_memory_equal(a, "p_", 2);
    for (size_t i = 2; i < 34; i++)
        assert_true((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
    /* the definition: "p_" + hex of the first 16 bytes of HMAC-SM3(key, value) */
    uint8_t mac[32];
    char hex[65];
    gm_hmac_sm3(mac, KEY32, 32, "11010519491231002X", 18);
    dbao_hex_encode(hex, mac, 16);
    assert_string_equal(a + 2, hex);
    /* stable */
    assert_int_equal(run_len("pseudonym(k2)", MASK_T_NONE, k, "11010519491231002X", 18), 0);
    assert_string_equal(result, a);
    /* key dependent and value dependent */
    assert_int_equal(run_len("pseudonym(k1)", MASK_T_NONE, k, "11010519491231002X", 18), 0);
    strcpy(b, result);
    assert_string_not_equal(a, b);
    assert_int_equal(run_len("pseudonym(k1)", MASK_T_NONE, k, "11010519491231003X", 18), 0);
    assert_string_not_equal(result, b);
    /* unknown key */
    assert_int_equal(run_len("pseudonym(nokey)", MASK_T_NONE, k, "x", 1), DBAO_EKEY);
    assert_int_equal(run_len("pseudonym(k1)", MASK_T_NONE, NULL, "x", 1), DBAO_EKEY);
    mask_keyring_free(k);
}

static void
test_encrypt_decrypt(void **state)
{
    (void) state;
    mask_keyring *k = ring();
    const char *vals[] = {"", "张三", "11010519491231002X", "a\xff\x62"};
    for (size_t i = 0; i < 4; i++) {
        size_t vl = strlen(vals[i]);
        char c1[256];
        assert_int_equal(run_len("encrypt(k1)", MASK_T_NONE, k, vals[i], vl), 0);
        assert_memory_equal(result, "enc1:k1:", 8);
        strcpy(c1, result);
        /* base64url without padding: 12 + len + 16 bytes */
        size_t blen = 12 + vl + 16;
        assert_int_equal(strlen(c1) - 8, blen / 3 * 4 + (blen % 3 ? blen % 3 + 1 : 0));
        for (const char *p = c1 + 8; *p; p++)
            assert_true(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                               *p) != NULL);
        /* fresh nonce */
        assert_int_equal(run_len("encrypt(k1)", MASK_T_NONE, k, vals[i], vl), 0);
        assert_string_not_equal(result, c1);
        dbao_buf out = {0};
        dbao_err err;
        assert_int_equal(mask_decrypt(k, c1, strlen(c1), &out, &err), 0);
        assert_int_equal(out.len, vl);
        assert_memory_equal(out.data, vals[i], vl);
        dbao_buf_free(&out);
        /* tampering anywhere in the blob */
        for (size_t j = 8; j < strlen(c1); j++) {
            char t[256];
            strcpy(t, c1);
            t[j] = t[j] == 'A' ? 'B' : 'A';
            int rc = mask_decrypt(k, t, strlen(t), &out, &err);
            assert_true(rc == DBAO_EVERIFY || rc == DBAO_EFORMAT);
            assert_int_equal(out.len, 0);
        }
        /* the key id is authenticated: another 16-byte key under its id fails */
        char t2[256];
        snprintf(t2, sizeof(t2), "enc1:k3:%s", c1 + 8);
        assert_int_equal(mask_decrypt(k, t2, strlen(t2), &out, &err), DBAO_EVERIFY);
        assert_null(strstr(err.msg, vals[i][0] ? vals[i] : "\x01"));
        dbao_buf_free(&out);
    }
    dbao_buf out = {0};
    dbao_err err;
    assert_int_equal(run_len("encrypt(k1)", MASK_T_NONE, k, "abc", 3), 0);
    char c[128];
    strcpy(c, result);
    memcpy(c + 5, "kx", 2);
    assert_int_equal(mask_decrypt(k, c, strlen(c), &out, &err), DBAO_EKEY);
    assert_int_equal(mask_decrypt(k, "enc2:k1:AAAA", 12, &out, &err), DBAO_EFORMAT);
    assert_int_equal(mask_decrypt(k, "enc1:k1", 7, &out, &err), DBAO_EFORMAT);
    assert_int_equal(mask_decrypt(k, "enc1:k1:AAAA", 12, &out, &err), DBAO_EFORMAT);
    assert_int_equal(mask_decrypt(k, "enc1:k1:A=AA", 12, &out, &err), DBAO_EFORMAT);
    assert_int_equal(mask_decrypt(k, "", 0, &out, &err), DBAO_EFORMAT);
    /* a 32-byte key is not an SM4 key */
    assert_int_equal(run_len("encrypt(k2)", MASK_T_NONE, k, "abc", 3), DBAO_EKEY);
    assert_int_equal(run_len("encrypt(none)", MASK_T_NONE, k, "abc", 3), DBAO_EKEY);
    dbao_buf_free(&out);
    mask_keyring_free(k);
}

/* An enc1 value built here from gm and OpenSSL's base64 (not from func.c) decrypts: the
 * format is the documented one. */
static void
test_encrypt_format(void **state)
{
    (void) state;
    mask_keyring *k = ring();
    uint8_t blob[12 + 5 + 16], nonce[12] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2};
    gm_sm4_ctx ctx;
    gm_sm4_init(&ctx);
    assert_int_equal(gm_sm4_setkey(&ctx, KEY16, 16), 0);
    memcpy(blob, nonce, 12);
    assert_int_equal(gm_sm4_gcm_seal(&ctx, blob + 12, blob + 17, nonce, 12,
                                     (const uint8_t *) "enc1:k1", 7, (const uint8_t *) "hello", 5),
                     0);
    gm_sm4_cleanup(&ctx);
    unsigned char b64[64];
    int n = EVP_EncodeBlock(b64, blob, (int) sizeof(blob));
    char val[96];
    size_t o = (size_t) snprintf(val, sizeof(val), "enc1:k1:");
    for (int i = 0; i < n && b64[i] != '='; i++)
        val[o++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char) b64[i];
    val[o] = '\0';
    dbao_buf out = {0};
    dbao_err err;
    assert_int_equal(mask_decrypt(k, val, o, &out, &err), 0);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "hello", 5);
    /* padding is not part of the format */
    dbao_buf_reset(&out);
    char padded[100];
    snprintf(padded, sizeof(padded), "%s=", val);
    assert_int_equal(mask_decrypt(k, padded, strlen(padded), &out, &err), DBAO_EFORMAT);
    dbao_buf_free(&out);
    mask_keyring_free(k);
}

static void
test_year(void **state)
{
    (void) state;
    static const char *const ok[] = {"1985-07-23",
                                     "1985/7/3",
                                     "19850723",
                                     "1985年7月23日",
                                     "1985年07月03号",
                                     "1985-07-23 10:11:12",
                                     "1985-07-23T10:11:12+08:00",
                                     "2000-02-29",
                                     "19850723 1200"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (run_len("year", MASK_T_NONE, NULL, ok[i], strlen(ok[i])) != 0)
            fail_msg("year rejected %s", ok[i]);
        assert_string_equal(result, i == 7 ? "2000" : "1985");
    }
    static const char *const bad[] = {"1985",        "1985-13-01", "1985-02-30", "1900-02-29",
                                      "1985-07-23x", "1985.07.23", "abcd-07-23", "",
                                      "1985年7月",   "1985-07/23", "198507231"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (run_len("year", MASK_T_NONE, NULL, bad[i], strlen(bad[i])) != DBAO_EFORMAT)
            fail_msg("year accepted %s", bad[i]);
}

static void
test_round(void **state)
{
    (void) state;
    assert_string_equal(run("round(100)", MASK_T_NONE, "1234"), "1200");
    assert_string_equal(run("round(100)", MASK_T_NONE, "1250"), "1300");
    assert_string_equal(run("round(100)", MASK_T_NONE, "1249.99"), "1200");
    assert_string_equal(run("round(100)", MASK_T_NONE, "1249.5"), "1200");
    assert_string_equal(run("round(1)", MASK_T_NONE, "12.5"), "13");
    assert_string_equal(run("round(1)", MASK_T_NONE, "12.49"), "12");
    assert_string_equal(run("round(3)", MASK_T_NONE, "4.5"), "6");
    assert_string_equal(run("round(3)", MASK_T_NONE, "4.49"), "3");
    assert_string_equal(run("round(1000)", MASK_T_NONE, "-1500"), "-2000");
    assert_string_equal(run("round(1000)", MASK_T_NONE, "-499"), "0");
    assert_string_equal(run("round(10)", MASK_T_NONE, "+0.000"), "0");
    assert_string_equal(run("round(10)", MASK_T_NONE, " 7 "), "10");
    assert_string_equal(run("round(10)", MASK_T_NONE, "999999999999999999"), "1000000000000000000");
    static const char *const bad[] = {"",    "abc",   "1e5",   "1.",   ".5",
                                      "--1", "1.2.3", "1,000", "0x10", "12345678901234567890",
                                      "NaN"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = run_len("round(10)", MASK_T_NONE, NULL, bad[i], strlen(bad[i]));
        if (rc != DBAO_EFORMAT)
            fail_msg("round accepted '%s' (%d)", bad[i], rc);
    }
}

static void
test_noise(void **state)
{
    (void) state;
    mask_keyring *k = ring();
    char a[64];
    assert_int_equal(run_len("noise(10,k1)", MASK_T_NONE, k, "1000.00", 7), 0);
    strcpy(a, result);
    assert_int_equal(run_len("noise(10,k1)", MASK_T_NONE, k, "1000.00", 7), 0);
    assert_string_equal(a, result); /* deterministic per key and value */
    /* two decimals kept, within 10 percent */
    char *dot = strchr(a, '.');
    assert_non_null(dot);
    assert_int_equal(strlen(dot + 1), 2);
    double v = strtod(a, NULL);
    assert_true(v >= 900.0 && v <= 1100.0);
    /* different keys give (almost surely) different values over a few inputs */
    int diff = 0;
    for (int i = 1; i <= 20; i++) {
        char in[32], r1[64];
        snprintf(in, sizeof(in), "%d", 100000 + i);
        assert_int_equal(run_len("noise(50,k1)", MASK_T_NONE, k, in, strlen(in)), 0);
        strcpy(r1, result);
        long x = strtol(r1, NULL, 10);
        assert_true(x >= (100000 + i) / 2 && x <= (100000 + i) * 3 / 2 + 1);
        assert_int_equal(run_len("noise(50,k3)", MASK_T_NONE, k, in, strlen(in)), 0);
        diff += strcmp(r1, result) != 0;
    }
    assert_true(diff >= 15);
    /* unkeyed noise is random: 20 draws of a large number are not all equal */
    int changes = 0;
    char first[64] = "";
    for (int i = 0; i < 20; i++) {
        assert_string_not_equal(run("noise(100)", MASK_T_NONE, "-5000000"), "");
        long x = strtol(result, NULL, 10);
        assert_true(x <= 0 && x >= -10000000);
        if (i == 0)
            strcpy(first, result);
        else
            changes += strcmp(first, result) != 0;
    }
    assert_true(changes > 0);
    assert_int_equal(run_len("noise(10)", MASK_T_NONE, k, "ten", 3), DBAO_EFORMAT);
    assert_int_equal(run_len("noise(10,nokey)", MASK_T_NONE, k, "10", 2), DBAO_EKEY);
    mask_keyring_free(k);
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void
test_keyring(void **state)
{
    (void) state;
    mask_keyring *k = NULL;
    dbao_err err;
    assert_int_equal(mask_keyring_new(&k), 0);
    assert_int_equal(mask_keyring_add(k, "a", KEY16, 15, &err), DBAO_EINVAL);
    assert_int_equal(mask_keyring_add(k, "a", KEY16, 24, &err), DBAO_EINVAL);
    assert_int_equal(mask_keyring_add(k, "bad id", KEY16, 16, &err), DBAO_EINVAL);
    assert_int_equal(mask_keyring_add(k, "a", KEY16, 16, &err), 0);
    assert_int_equal(mask_keyring_add(k, "a", KEY32, 32, &err), DBAO_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate"));
    for (int i = 0; i < 40; i++) { /* growth */
        char id[16];
        snprintf(id, sizeof(id), "g%d", i);
        assert_int_equal(mask_keyring_add(k, id, KEY32, 32, &err), 0);
    }
    char dir[] = "/tmp/test_func.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p1[64], p2[64], p3[64], p4[64];
    snprintf(p1, sizeof(p1), "%s/k1.key", dir);
    snprintf(p2, sizeof(p2), "%s/k2.key", dir);
    snprintf(p3, sizeof(p3), "%s/k3.key", dir);
    snprintf(p4, sizeof(p4), "%s/k4.key", dir);
    write_file(p1, "000102030405060708090a0b\n0c0d0e0f\n", 0600);
    write_file(p2, "000102030405060708090a0b0c0d0e0f\n", 0644);
    write_file(p3, "0001020304zz", 0600);
    write_file(p4, "000102030405060708090a0b0c0d0e0f", 0400);
    assert_int_equal(mask_keyring_load_file(k, "f1", p1, &err), 0);
    assert_int_equal(mask_keyring_load_file(k, "f2", p2, &err), DBAO_EINVAL);
    assert_non_null(strstr(err.msg, "0644"));
    assert_int_equal(mask_keyring_load_file(k, "f3", p3, &err), DBAO_EINVAL);
    assert_null(strstr(err.msg, "0001")); /* no key material in messages */
    assert_int_equal(mask_keyring_load_file(k, "f4", p4, &err), 0);
    assert_true(mask_keyring_load_file(k, "f5", "/nonexistent/k", &err) < 0);
    /* the key loaded from the file is KEY16: same pseudonym as under "a" */
    char a[64];
    assert_int_equal(run_len("pseudonym(a)", MASK_T_NONE, k, "v", 1), 0);
    strcpy(a, result);
    assert_int_equal(run_len("pseudonym(f1)", MASK_T_NONE, k, "v", 1), 0);
    assert_string_equal(a, result);
    unlink(p1);
    unlink(p2);
    unlink(p3);
    unlink(p4);
    rmdir(dir);
    mask_keyring_free(k);
    mask_keyring_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_range),
        cmocka_unit_test(test_before_after_replace),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_parse_format),
        cmocka_unit_test(test_pseudonym),
        cmocka_unit_test(test_encrypt_decrypt),
        cmocka_unit_test(test_encrypt_format),
        cmocka_unit_test(test_year),
        cmocka_unit_test(test_round),
        cmocka_unit_test(test_noise),
        cmocka_unit_test(test_keyring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
