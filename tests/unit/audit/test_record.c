/* test_record.c: audit records (audit.h): JSON in and out, the canonical encoding, validation.
 *
 * The known-answer record was encoded by an independent Python implementation written from
 * docs/audit-format.md (struct.pack, ipaddress, json), and its leaf hash computed with hashlib's
 * SM3; the same bytes appear in the format document. Beyond that:
 *   - round trips: JSON -> record -> bytes -> record -> bytes, and record -> JSON -> record;
 *   - decode strictness: every truncation, a trailing byte, every single-bit flip (either
 *     rejected, or accepted and re-encoded to exactly the flipped bytes), and hand-made
 *     violations of each rule;
 *   - details canonicalisation: the RFC 8785 key order (including the UTF-16 rule), escapes,
 *     integer range, no reals, depth, size, duplicate keys;
 *   - every field's rules with the exact message, and that messages never echo values;
 *   - UUIDv7 shape and monotonicity; an allocation-failure sweep.
 *
 * Build: cc -std=gnu11 -Wall -Wextra -Werror -I include -I src/audit -I tests/unit
 *        test_record.c src/audit/{record,merkle,checkpoint}.c build/libdengbao.a
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

static const char KAT_JSON[] =
    "{\"event_id\":\"01890a5d-ac96-774b-bcce-b302099a8057\","
    "\"time\":\"2024-03-01T08:30:15.123456789+08:00\","
    "\"subject\":{\"id\":\"\xe5\xbc\xa0\xe4\xb8\x89\",\"role\":\"teller\",\"ip\":\"10.1.2.3\","
    "\"device\":\"pos-17\"},"
    "\"event_type\":\"auth.login\",\"action\":\"login\",\"object\":\"/api/v1/session\","
    "\"result\":\"failure\",\"code\":401,"
    "\"trace_id\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\","
    "\"source\":\"gateway\","
    "\"details\":{ \"z\": [true, null, \"\\u000F\"], \"reason\": \"bad password\", "
    "\"attempt\": 3 }}";

static const char KAT_HEX[] =
    "444241520101890a5dac96774bbcceb302099a805717b87c8fadb2f31501000001910006e5bca0e4b889000674"
    "656c6c657200040a0102030006706f732d3137000a617574682e6c6f67696e00056c6f67696e000f2f617069"
    "2f76312f73657373696f6e003730302d34626639326633353737623334646136613363653932396430653065"
    "343733362d303066303637616130626139303262372d3031000767617465776179003e7b22617474656d7074"
    "223a332c22726561736f6e223a226261642070617373776f7264222c227a223a5b747275652c6e756c6c2c22"
    "5c7530303066225d7d";

static const char KAT_LEAF[] = "7f0cf6105db2cfa69e331bf948f6b3c8c3f1c47601b18049531e3481247b3967";

static const char KAT_OUT_JSON[] =
    "{\"event_id\":\"01890a5d-ac96-774b-bcce-b302099a8057\","
    "\"time\":\"2024-03-01T00:30:15.123456789Z\","
    "\"subject\":{\"id\":\"\xe5\xbc\xa0\xe4\xb8\x89\",\"role\":\"teller\",\"ip\":\"10.1.2.3\","
    "\"device\":\"pos-17\"},"
    "\"event_type\":\"auth.login\",\"action\":\"login\",\"object\":\"/api/v1/session\","
    "\"result\":\"failure\",\"code\":401,"
    "\"trace_id\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\","
    "\"source\":\"gateway\","
    "\"details\":{\"attempt\":3,\"reason\":\"bad password\",\"z\":[true,null,\"\\u000f\"]}}";

static const char MINIMAL[] = "{\"event_id\":\"01890a5d-ac96-774b-bcce-b302099a8057\","
                              "\"time\":\"2024-03-01T00:00:00Z\",\"subject\":{\"id\":\"u1\"},"
                              "\"event_type\":\"t\",\"action\":\"a\",\"result\":\"success\","
                              "\"source\":\"s\"}";

/* ---- helpers ------------------------------------------------------------------------------ */

static void
parse_ok(audit_record *r, const char *json)
{
    dbao_err err;
    int rc = audit_record_from_json(r, json, strlen(json), 0, &err);

    if (rc != 0) {
        fprintf(stderr, "unexpected: %s\n  for %s\n", err.msg, json);
    }
    assert_int_equal(rc, 0);
}

/* with_member returns MINIMAL with `member` ("\"key\":value") added or replacing a key. The
 * replacement is textual: the key must appear in MINIMAL as "\"key\":" exactly once or not. */
static char *
with_member(const char *key, const char *value)
{
    static char buf[AUDIT_JSON_MAX + 4096];
    char pat[64];
    const char *at;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    at = strstr(MINIMAL, pat);
    if (at == NULL) {
        snprintf(buf, sizeof(buf), "{\"%s\":%s,%s", key, value, MINIMAL + 1);
    } else {
        const char *end = at + strlen(pat);
        int depth = 0;

        /* Skip the old value: a string, an object, or a bare word. */
        if (*end == '"') {
            end = strchr(end + 1, '"') + 1;
        } else if (*end == '{') {
            do {
                depth += *end == '{' ? 1 : *end == '}' ? -1 : 0;
                end++;
            } while (depth > 0);
        } else {
            end += strcspn(end, ",}");
        }
        snprintf(buf, sizeof(buf), "%.*s%s%s%s", (int) (at - MINIMAL), MINIMAL, pat, value, end);
    }
    return buf;
}

static void
expect_json_error(const char *json, const char *msg)
{
    audit_record r;
    dbao_err err;

    audit_record_init(&r);
    dbao_err_clear(&err);
    assert_int_equal(audit_record_from_json(&r, json, strlen(json), 0, &err), DBAO_EFORMAT);
    if (strcmp(err.msg, msg) != 0) {
        fprintf(stderr, "message: got  '%s'\n         want '%s'\n  input %s\n", err.msg, msg, json);
        fail();
    }
    /* The record is left empty. */
    assert_null(r.details);
    assert_string_equal(r.subject.id, "");
    audit_record_cleanup(&r);
}

static void
expect_member_error(const char *key, const char *value, const char *msg)
{
    expect_json_error(with_member(key, value), msg);
}

static void
expect_member_ok(const char *key, const char *value)
{
    audit_record r;

    audit_record_init(&r);
    parse_ok(&r, with_member(key, value));
    audit_record_cleanup(&r);
}

static size_t
encode_ok(const audit_record *r, uint8_t *out)
{
    size_t len = 0;
    dbao_err err;
    int rc = audit_record_encode(r, out, &len, AUDIT_RECORD_MAX, &err);

    if (rc != 0) {
        fprintf(stderr, "encode: %s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    assert_true(len <= AUDIT_RECORD_MAX);
    return len;
}

/* ---- known answer and round trips -------------------------------------------------------------
 */

static void
test_known_answer(void **state)
{
    static uint8_t buf[AUDIT_RECORD_MAX], buf2[AUDIT_RECORD_MAX];
    audit_record r, r2;
    uint8_t leaf[AUDIT_HASH_LEN];
    size_t len, len2, json_len;
    char *json;

    (void) state;
    audit_record_init(&r);
    audit_record_init(&r2);
    parse_ok(&r, KAT_JSON);
    assert_int_equal(r.time_ns, 1709253015123456789LL);
    assert_int_equal(r.code, 401);
    assert_int_equal(r.result, AUDIT_RESULT_FAILURE);
    assert_int_equal(r.subject.ip_len, 4);
    len = encode_ok(&r, buf);
    assert_true(tu_eq_hex(buf, len, KAT_HEX));
    audit_leaf_hash(leaf, buf, len);
    assert_true(tu_eq_hex(leaf, sizeof(leaf), KAT_LEAF));

    /* bytes -> record -> bytes */
    assert_int_equal(audit_record_decode(&r2, buf, len, NULL), 0);
    len2 = encode_ok(&r2, buf2);
    assert_true(tu_mem_eq(buf2, len2, buf, len));

    /* record -> JSON (exact) -> record -> the same bytes */
    assert_int_equal(audit_record_to_json(&r2, &json, &json_len, NULL), 0);
    assert_int_equal(json_len, strlen(json));
    assert_string_equal(json, KAT_OUT_JSON);
    parse_ok(&r, json);
    len2 = encode_ok(&r, buf2);
    assert_true(tu_mem_eq(buf2, len2, buf, len));
    dbao_free(json);

    /* A buffer one byte short. */
    assert_int_equal(audit_record_encode(&r, buf2, &len2, len - 1, NULL), DBAO_ERANGE);
    audit_record_cleanup(&r);
    audit_record_cleanup(&r2);
}

static void
test_minimal_and_optional(void **state)
{
    static uint8_t buf[AUDIT_RECORD_MAX];
    audit_record r;
    char *json;
    size_t len, json_len;

    (void) state;
    audit_record_init(&r);
    parse_ok(&r, MINIMAL);
    assert_null(r.details);
    assert_int_equal(r.code, 0);
    len = encode_ok(&r, buf);
    assert_int_equal(len, 34 + 20 + 2 + 1 + 1 + 1 + 2); /* "u1" "t" "a" "s" "{}" */
    assert_int_equal(audit_record_to_json(&r, &json, &json_len, NULL), 0);
    assert_string_equal(json, "{\"event_id\":\"01890a5d-ac96-774b-bcce-b302099a8057\","
                              "\"time\":\"2024-03-01T00:00:00.000000000Z\",\"subject\":{\"id\":"
                              "\"u1\"},\"event_type\":\"t\",\"action\":\"a\",\"result\":"
                              "\"success\",\"code\":0,\"source\":\"s\",\"details\":{}}");
    dbao_free(json);

    /* null means absent; {} details are stored as absent. */
    parse_ok(&r, with_member("object", "null"));
    assert_string_equal(r.object, "");
    parse_ok(&r, with_member("details", "{}"));
    assert_null(r.details);
    parse_ok(&r, with_member("details", "null"));
    assert_null(r.details);
    audit_record_cleanup(&r);
}

static void
test_assign(void **state)
{
    audit_record r;
    const char *j = "{\"subject\":{\"id\":\"u\"},\"event_type\":\"t\",\"action\":\"a\","
                    "\"result\":\"success\",\"source\":\"s\"}";
    int64_t before = audit_now_ns(), ms;
    dbao_err err;

    (void) state;
    audit_record_init(&r);
    assert_int_equal(audit_record_from_json(&r, j, strlen(j), 0, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'time': required");
    assert_int_equal(audit_record_from_json(&r, j, strlen(j), AUDIT_JSON_ASSIGN, NULL), 0);
    assert_true(r.time_ns >= before && r.time_ns <= audit_now_ns());
    ms = 0;
    for (int i = 0; i < 6; i++) {
        ms = ms << 8 | r.event_id[i];
    }
    assert_true(ms >= before / 1000000 && ms <= r.time_ns / 1000000 + 1000);
    assert_int_equal(audit_record_validate(&r, NULL), 0);
    audit_record_cleanup(&r);
}

/* ---- decode strictness -------------------------------------------------------------------------
 */

static void
test_decode_strict(void **state)
{
    static uint8_t buf[AUDIT_RECORD_MAX + 1], mut[AUDIT_RECORD_MAX + 1], re[AUDIT_RECORD_MAX];
    audit_record r, r2;
    size_t len, relen;
    dbao_err err;
    unsigned accepted = 0;

    (void) state;
    audit_record_init(&r);
    audit_record_init(&r2);
    parse_ok(&r, KAT_JSON);
    len = encode_ok(&r, buf);

    for (size_t n = 0; n < len; n++) {
        assert_int_equal(audit_record_decode(&r2, buf, n, NULL), DBAO_EFORMAT);
    }
    memcpy(mut, buf, len);
    mut[len] = 0;
    assert_int_equal(audit_record_decode(&r2, mut, len + 1, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "audit record: 1 bytes after the last field");

    /* Every single-bit flip: rejected, or accepted with encode(decode(b)) == b. */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            int rc;

            memcpy(mut, buf, len);
            mut[i] ^= (uint8_t) (1u << bit);
            rc = audit_record_decode(&r2, mut, len, NULL);
            if (rc == 0) {
                relen = encode_ok(&r2, re);
                assert_true(tu_mem_eq(re, relen, mut, len));
                accepted++;
            } else {
                assert_true(rc == DBAO_EFORMAT || rc == DBAO_ENOTSUP);
                assert_null(r2.details);
            }
        }
    }
    assert_true(accepted > 0); /* e.g. flips inside the event_id random bits */

    /* Specific violations. */
    memcpy(mut, buf, len);
    mut[0] = 'X';
    assert_int_equal(audit_record_decode(&r2, mut, len, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "audit record: bad magic");
    memcpy(mut, buf, len);
    mut[4] = 2;
    assert_int_equal(audit_record_decode(&r2, mut, len, &err), DBAO_ENOTSUP);
    assert_string_equal(err.msg, "audit record: unsupported version 2");
    memcpy(mut, buf, len);
    mut[29] = 2;
    assert_int_equal(audit_record_decode(&r2, mut, len, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'result': not success or failure");
    memcpy(mut, buf, len);
    mut[21] |= 0x80;
    assert_int_equal(audit_record_decode(&r2, mut, len, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'time': before 1970-01-01T00:00:00Z");
    memcpy(mut, buf, len);
    mut[5 + 6] = 0x47; /* UUID version 4 */
    assert_int_equal(audit_record_decode(&r2, mut, len, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'event_id': not a UUIDv7");
    memcpy(mut, buf, len);
    mut[34 + 2] = 0x00; /* a NUL inside subject.id */
    assert_int_equal(audit_record_decode(&r2, mut, len, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'subject.id': contains a control character");

    audit_record_cleanup(&r);
    audit_record_cleanup(&r2);
}

/* build_bytes encodes MINIMAL with a replaced details text (any bytes), bypassing validation. */
static size_t
bytes_with_details(uint8_t *out, const char *details)
{
    audit_record r;
    size_t len, dl = strlen(details);

    audit_record_init(&r);
    parse_ok(&r, MINIMAL);
    len = encode_ok(&r, out);
    audit_record_cleanup(&r);
    /* MINIMAL ends with the details field "{}": replace it. */
    len -= 4;
    out[len] = (uint8_t) (dl >> 8);
    out[len + 1] = (uint8_t) dl;
    memcpy(out + len + 2, details, dl);
    return len + 2 + dl;
}

static void
test_decode_details(void **state)
{
    static uint8_t buf[AUDIT_RECORD_MAX + 64];
    static const char *const bad[] = {
        "{ }",
        "{\"b\":1,\"a\":2}",
        "{\"a\":1.0}",
        "{\"a\":01}",
        "[]",
        "{\"a\":\"\\u00e9\"}",
        "{\"a\":\"\\/\"}",
        "{\"a\":\"\\u000F\"}",
        "{\"a\":-0}",
        "{\"a\":1,\"a\":1}",
        "{\"a\":1} ",
        "",
        "{\"a\":9007199254740992}",
    };
    static const char *const good[] = {
        "{}",        "{\"a\":\"\xc3\xa9\"}",      "{\"a\":\"/\"}", "{\"a\":\"\\u000f\"}",
        "{\"a\":0}", "{\"a\":-9007199254740991}",
    };
    audit_record r;
    dbao_err err;

    (void) state;
    audit_record_init(&r);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = bytes_with_details(buf, bad[i]);

        assert_int_equal(audit_record_decode(&r, buf, len, &err), DBAO_EFORMAT);
        if (strstr(err.msg, "field 'details") == NULL) {
            fprintf(stderr, "case %zu: %s\n", i, err.msg);
            fail();
        }
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t len = bytes_with_details(buf, good[i]);

        assert_int_equal(audit_record_decode(&r, buf, len, &err), 0);
    }
    audit_record_cleanup(&r);
}

/* ---- details canonicalisation ------------------------------------------------------------------
 */

static void
expect_canon(const char *in, const char *want)
{
    char *out;
    size_t len;
    dbao_err err;
    int rc = audit__details_canonicalize(&out, &len, in, strlen(in), "details", &err);

    if (rc != 0) {
        fprintf(stderr, "canonicalize: %s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    dbao_free(out);
}

static void
expect_canon_error(const char *in, const char *msg)
{
    char *out = (char *) 1;
    size_t len;
    dbao_err err;

    assert_int_equal(audit__details_canonicalize(&out, &len, in, strlen(in), "details", &err),
                     DBAO_EFORMAT);
    assert_null(out);
    if (strcmp(err.msg, msg) != 0) {
        fprintf(stderr, "message: got '%s', want '%s'\n", err.msg, msg);
        fail();
    }
}

static void
test_details_canonical(void **state)
{
    char deep[256], big[AUDIT_DETAILS_MAX + 64];

    (void) state;
    /* RFC 8785 3.2.3: keys in UTF-16 code-unit order (U+1F600 sorts before U+FB33). */
    expect_canon("{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew "
                 "Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning "
                 "Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With "
                 "Diaeresis\"}",
                 "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\",\"\xc3\xb6\":"
                 "\"Latin Small Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro Sign\","
                 "\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\",\"\xef\xac\xb3\":\"Hebrew Letter "
                 "Dalet With Dagesh\"}");
    /* Escapes: the short forms, \u00xx lowercase for other controls, nothing else. */
    expect_canon("{\"s\":\"\\b\\f\\n\\r\\t\\u0001\\u001F\\\"\\\\\\/\\u007f\\u00e9\"}",
                 "{\"s\":\"\\b\\f\\n\\r\\t\\u0001\\u001f\\\"\\\\/\x7f\xc3\xa9\"}");
    /* Integers, literals, nesting, white space. */
    expect_canon(" { \"n\" : [ -0 , 9007199254740991, -9007199254740991, true, false, null, {} ,"
                 "[]] , \"m\":{\"b\":{},\"a\":[{\"y\":1,\"x\":2}]}} ",
                 "{\"m\":{\"a\":[{\"x\":2,\"y\":1}],\"b\":{}},\"n\":[0,9007199254740991,"
                 "-9007199254740991,true,false,null,{},[]]}");
    expect_canon("{\"\":1}", "{\"\":1}");

    expect_canon_error("{\"amount\":12.5}",
                       "field 'details.amount': real numbers are not allowed (send a string or an "
                       "integer)");
    expect_canon_error("{\"a\":[1,1e3]}",
                       "field 'details.a[1]': real numbers are not allowed (send a string or an "
                       "integer)");
    expect_canon_error("{\"id\":9007199254740992}",
                       "field 'details.id': integer outside +-(2^53 - 1) (send it as a string)");
    expect_canon_error("{\"id\":99999999999999999999}",
                       "field 'details': invalid JSON at byte 26: number out of range");
    expect_canon_error("[1]", "field 'details': not a JSON object");
    expect_canon_error("{\"a\":1,\"a\":2}", "field 'details': invalid JSON at byte 10: duplicate "
                                            "key");
    expect_canon_error("{\"a\":\"\\u0000\"}",
                       "field 'details': invalid JSON at byte 13: NUL character");
    expect_canon_error("{\"a\":1} x", "field 'details': invalid JSON at byte 9: trailing data "
                                      "after the value");
    /* A quote in a key name does not break the message. */
    expect_canon_error("{\"a'b\":0.5}", "field 'details.a?b': real numbers are not allowed (send "
                                        "a string or an integer)");

    /* Depth: the object itself is level 1; 16 levels are fine, 17 are not. */
    strcpy(deep, "{\"a\":");
    for (int i = 0; i < 14; i++) {
        strcat(deep, "[");
    }
    strcat(deep, "{}");
    for (int i = 0; i < 14; i++) {
        strcat(deep, "]");
    }
    strcat(deep, "}");
    expect_canon(deep, deep);
    deep[5] = '\0';
    for (int i = 0; i < 15; i++) {
        strcat(deep, "[");
    }
    strcat(deep, "{}");
    for (int i = 0; i < 15; i++) {
        strcat(deep, "]");
    }
    strcat(deep, "}");
    expect_canon_error(deep, "field 'details.a[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]': "
                             "nested deeper than 16 levels");

    /* Size: exactly AUDIT_DETAILS_MAX canonical bytes pass, one more fails. */
    memset(big, 'x', sizeof(big));
    memcpy(big, "{\"k\":\"", 6);
    memcpy(big + AUDIT_DETAILS_MAX - 2, "\"}", 3);
    expect_canon(big, big);
    memcpy(big + AUDIT_DETAILS_MAX - 2, "x\"}", 4);
    expect_canon_error(big, "field 'details': canonical form longer than 16384 bytes");
}

/* ---- field rules --------------------------------------------------------------------------------
 */

static void
test_field_rules(void **state)
{
    char long_id[AUDIT_SUBJECT_ID_MAX + 16];

    (void) state;
    expect_json_error("[]", "record: not a JSON object");
    expect_json_error("{\"a\":", "record: invalid JSON at byte 5: unexpected end of input");
    expect_json_error("{\"source\":\"s\",\"source\":\"s\"}",
                      "record: invalid JSON at byte 22: duplicate key");
    expect_member_error("extra", "1", "field 'extra': unknown field");
    expect_member_error("subject", "{\"id\":\"u\",\"name\":\"x\"}",
                        "field 'subject.name': unknown field");
    expect_member_error("subject", "\"u\"", "field 'subject': not a JSON object");
    expect_member_error("subject", "{}", "field 'subject.id': required");
    expect_member_error("subject", "{\"id\":\"u\",\"ip\":\"999.1.1.1\"}",
                        "field 'subject.ip': not an IPv4 or IPv6 address");
    expect_member_error("subject", "{\"id\":\"u\",\"ip\":\"01.2.3.4\"}",
                        "field 'subject.ip': not an IPv4 or IPv6 address");
    expect_member_error("subject", "{\"id\":\"u\",\"ip\":\"fe80::1%eth0\"}",
                        "field 'subject.ip': not an IPv4 or IPv6 address");
    expect_member_error("subject", "{\"id\":\"u\",\"ip\":7}",
                        "field 'subject.ip': not an IPv4 or IPv6 address");
    expect_member_ok("subject", "{\"id\":\"u\",\"ip\":\"::ffff:10.0.0.1\"}");
    expect_member_ok("subject", "{\"id\":\"u\",\"ip\":null,\"role\":null}");
    expect_member_error("subject", "{\"id\":\"u\",\"role\":\"\"}",
                        "field 'subject.role': empty (omit the field instead)");
    expect_member_error("subject", "{\"id\":\"a\\u0007b\"}",
                        "field 'subject.id': contains a control character");
    expect_member_error("subject", "{\"id\":\"a\\u0085b\"}",
                        "field 'subject.id': contains a control character");
    expect_member_error("subject", "{\"id\":\"a\\u202eb\"}",
                        "field 'subject.id': contains a bidirectional override character");
    expect_member_error("subject", "{\"id\":5}", "field 'subject.id': not a string");

    /* Length limits count bytes: 256 ASCII bytes pass, 257 do not, and 86 three-byte
     * characters (258 bytes) do not either. */
    memset(long_id, 'a', AUDIT_SUBJECT_ID_MAX);
    long_id[AUDIT_SUBJECT_ID_MAX] = '\0';
    {
        char v[AUDIT_SUBJECT_ID_MAX + 64];

        snprintf(v, sizeof(v), "{\"id\":\"%s\"}", long_id);
        expect_member_ok("subject", v);
        snprintf(v, sizeof(v), "{\"id\":\"%sa\"}", long_id);
        expect_member_error("subject", v, "field 'subject.id': longer than 256 bytes");
        strcpy(v, "{\"id\":\"");
        for (int i = 0; i < 86; i++) {
            strcat(v, "\xe5\xbc\xa0");
        }
        strcat(v, "\"}");
        expect_member_error("subject", v, "field 'subject.id': longer than 256 bytes");
    }

    expect_member_error("event_type", "\"auth login\"",
                        "field 'event_type': only ASCII letters, digits and . _ - : / allowed");
    expect_member_error("event_type", "\"\xe7\x99\xbb\xe5\xbd\x95\"",
                        "field 'event_type': only ASCII letters, digits and . _ - : / allowed");
    expect_member_ok("event_type", "\"mask:sql/rewrite_v2.ok-1\"");
    expect_member_error("source", "\"gw#1\"",
                        "field 'source': only ASCII letters, digits and . _ - : / allowed");
    expect_member_error("source", "\"\"", "field 'source': empty (omit the field instead)");
    expect_member_ok("action", "\"\xe6\x9f\xa5\xe8\xaf\xa2\""); /* UTF-8 text is fine */
    expect_member_error("action", "null", "field 'action': required");

    expect_member_error("result", "\"ok\"", "field 'result': not \"success\" or \"failure\"");
    expect_member_error("result", "true", "field 'result': not \"success\" or \"failure\"");
    expect_member_error("code", "2147483648", "field 'code': not a 32-bit integer");
    expect_member_error("code", "1.5", "field 'code': not a 32-bit integer");
    expect_member_error("code", "\"1\"", "field 'code': not a 32-bit integer");
    expect_member_ok("code", "-2147483648");

    expect_member_error("trace_id", "\"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\"",
                        "field 'trace_id': not a W3C traceparent (version 00, lowercase hex, "
                        "non-zero ids)");
    expect_member_error("trace_id", "\"00-00000000000000000000000000000000-00f067aa0ba902b7-01\"",
                        "field 'trace_id': not a W3C traceparent (version 00, lowercase hex, "
                        "non-zero ids)");
    expect_member_error("trace_id", "\"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01\"",
                        "field 'trace_id': not a W3C traceparent (version 00, lowercase hex, "
                        "non-zero ids)");
    expect_member_error("trace_id", "\"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"",
                        "field 'trace_id': not a W3C traceparent (version 00, lowercase hex, "
                        "non-zero ids)");
    expect_member_error("trace_id", "\"4bf92f3577b34da6a3ce929d0e0e4736\"",
                        "field 'trace_id': not a W3C traceparent (version 00, lowercase hex, "
                        "non-zero ids)");

    expect_member_error("event_id", "\"01890a5d-ac96-474b-bcce-b302099a8057\"",
                        "field 'event_id': not a UUIDv7");
    expect_member_error("event_id", "\"01890a5d-ac96-774b-fcce-b302099a8057\"",
                        "field 'event_id': not a UUIDv7");
    expect_member_error("event_id", "\"01890a5dac96774bbcceb302099a8057\"",
                        "field 'event_id': not a UUIDv7");
    expect_member_ok("event_id", "\"01890A5D-AC96-774B-BCCE-B302099A8057\"");

    expect_member_error("details", "[]", "field 'details': not a JSON object");
    expect_member_error("details", "{\"x\":0.1}",
                        "field 'details.x': real numbers are not allowed (send a string or an "
                        "integer)");
}

static void
test_time_rules(void **state)
{
    static const char *const bad[] = {
        "\"2024-02-30T00:00:00Z\"",
        "\"2023-02-29T00:00:00Z\"",
        "\"2024-01-01t00:00:00Z\"",
        "\"2024-01-01T00:00:00z\"",
        "\"2024-01-01T24:00:00Z\"",
        "\"2024-01-01T00:00:00\"",
        "\"2024-01-01T00:00:00.Z\"",
        "\"2024-1-01T00:00:00Z\"",
        "\"2024-01-01T00:00:00+0800\"",
        "\"2024-01-01 00:00:00Z\"",
        "1709253015",
    };
    audit_record r;
    struct {
        const char *in;
        int64_t ns;
    } good[] = {
        {"\"1970-01-01T00:00:00Z\"", 0},
        {"\"2000-02-29T12:00:00.5Z\"", 951825600500000000LL},
        {"\"2024-03-01T08:00:00+08:00\"", 1709251200000000000LL},
        {"\"2024-02-29T23:30:00-00:30\"", 1709251200000000000LL},
        {"\"2262-04-11T23:47:16.854775807Z\"", INT64_MAX},
    };

    (void) state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_member_error("time", bad[i],
                            i == sizeof(bad) / sizeof(bad[0]) - 1
                                ? "field 'time': not a string"
                                : "field 'time': not an RFC 3339 date-time "
                                  "(YYYY-MM-DDTHH:MM:SS[.fraction]Z)");
    }
    expect_member_error("time", "\"2016-12-31T23:59:60Z\"",
                        "field 'time': leap seconds are not representable");
    expect_member_error("time", "\"2024-01-01T00:00:00.1234567891Z\"",
                        "field 'time': more than 9 fraction digits");
    expect_member_error("time", "\"1969-12-31T23:59:59.999999999Z\"",
                        "field 'time': outside 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z");
    expect_member_error("time", "\"1970-01-01T00:00:00+00:01\"",
                        "field 'time': outside 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z");
    expect_member_error("time", "\"2262-04-11T23:47:16.854775808Z\"",
                        "field 'time': outside 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z");
    audit_record_init(&r);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char *json;
        size_t len;

        parse_ok(&r, with_member("time", good[i].in));
        assert_int_equal(r.time_ns, good[i].ns);
        /* Printing and parsing again gives the same instant. */
        assert_int_equal(audit_record_to_json(&r, &json, &len, NULL), 0);
        parse_ok(&r, json);
        assert_int_equal(r.time_ns, good[i].ns);
        dbao_free(json);
    }
    audit_record_cleanup(&r);
}

static void
test_messages_hide_values(void **state)
{
    static const char *const inputs[] = {
        "{\"subject\":{\"id\":\"SECRET\\u0001\"}}",
        "{\"event_type\":\"SECRET value\"}",
        "{\"subject\":{\"id\":\"u\",\"ip\":\"SECRET\"}}",
        "{\"time\":\"SECRET\"}",
        "{\"event_id\":\"SECRET\"}",
        "{\"result\":\"SECRET\"}",
        "{\"a\":SECRET}",
        "SECRET",
    };

    (void) state;
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        audit_record r;
        dbao_err err;

        audit_record_init(&r);
        assert_int_not_equal(
            audit_record_from_json(&r, inputs[i], strlen(inputs[i]), AUDIT_JSON_ASSIGN, &err), 0);
        assert_null(strstr(err.msg, "SECRET"));
        audit_record_cleanup(&r);
    }
}

/* ---- struct-level API
 * ---------------------------------------------------------------------------- */

static void
test_struct_api(void **state)
{
    static uint8_t buf[AUDIT_RECORD_MAX];
    audit_record r;
    dbao_err err;
    char *json;
    size_t len;

    (void) state;
    audit_record_init(&r);
    assert_int_equal(audit_record_validate(&r, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'event_id': not a UUIDv7");
    assert_int_equal(audit_uuid7_generate(r.event_id, audit_now_ns()), 0);
    r.time_ns = audit_now_ns();
    assert_int_equal(audit_record_validate(&r, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'subject.id': required");
    strcpy(r.subject.id, "alice");
    strcpy(r.event_type, "data.read");
    strcpy(r.action, "select");
    strcpy(r.source, "maskproxy");
    assert_int_equal(audit_record_validate(&r, NULL), 0);

    assert_int_equal(audit_record_set_ip(&r, "2001:DB8:0:0::1", NULL), 0);
    assert_int_equal(r.subject.ip_len, 16);
    assert_int_equal(audit_record_set_ip(&r, "1.2.3", &err), DBAO_EFORMAT);
    assert_int_equal(r.subject.ip_len, 16);
    assert_int_equal(audit_record_set_details(&r, "{\"rows\":3,\"masked\":[\"phone\"]}", 29, NULL),
                     0);
    assert_string_equal(r.details, "{\"masked\":[\"phone\"],\"rows\":3}");
    assert_int_equal(audit_record_set_details(&r, "{\"x\":1.5}", 9, &err), DBAO_EFORMAT);
    assert_string_equal(r.details, "{\"masked\":[\"phone\"],\"rows\":3}"); /* unchanged */
    assert_int_equal(audit_record_to_json(&r, &json, &len, NULL), 0);
    assert_non_null(strstr(json, "\"ip\":\"2001:db8::1\""));
    dbao_free(json);

    /* Direct writes that break the rules are caught by validate, encode and to_json. */
    r.subject.ip_len = 5;
    assert_int_equal(audit_record_encode(&r, buf, &len, sizeof(buf), &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'subject.ip': not an IPv4 or IPv6 address");
    r.subject.ip_len = 0;
    r.result = (audit_result) 7;
    assert_int_equal(audit_record_to_json(&r, &json, &len, &err), DBAO_EFORMAT);
    assert_null(json);
    r.result = AUDIT_RESULT_SUCCESS;
    memset(r.object, 'o', sizeof(r.object)); /* no NUL within the limit */
    assert_int_equal(audit_record_validate(&r, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'object': longer than 1024 bytes");
    r.object[0] = '\0';
    memcpy(r.details, "{\"rows\":3,\"masked\":[\"phone\"]}", 29); /* not canonical */
    r.details_len = 29;
    assert_int_equal(audit_record_validate(&r, &err), DBAO_EFORMAT);
    assert_string_equal(err.msg, "field 'details': not in canonical form");
    audit_record_cleanup(&r);
    audit_record_cleanup(&r); /* twice is fine */
}

static void
test_maximal_record(void **state)
{
    static uint8_t buf[AUDIT_RECORD_MAX];
    static char details[AUDIT_DETAILS_MAX + 1];
    audit_record r, r2;
    size_t len;

    (void) state;
    audit_record_init(&r);
    audit_record_init(&r2);
    parse_ok(&r, KAT_JSON);
    memset(r.subject.id, 'i', AUDIT_SUBJECT_ID_MAX);
    memset(r.subject.role, 'r', AUDIT_SUBJECT_ROLE_MAX);
    memset(r.subject.device, 'd', AUDIT_SUBJECT_DEVICE_MAX);
    memset(r.event_type, 'e', AUDIT_EVENT_TYPE_MAX);
    memset(r.action, 'a', AUDIT_ACTION_MAX);
    memset(r.object, 'o', AUDIT_OBJECT_MAX);
    memset(r.source, 's', AUDIT_SOURCE_MAX);
    assert_int_equal(audit_record_set_ip(&r, "::1", NULL), 0);
    memset(details, 'x', AUDIT_DETAILS_MAX);
    memcpy(details, "{\"k\":\"", 6);
    memcpy(details + AUDIT_DETAILS_MAX - 2, "\"}", 3);
    assert_int_equal(audit_record_set_details(&r, details, AUDIT_DETAILS_MAX, NULL), 0);
    len = encode_ok(&r, buf);
    assert_int_equal(len, AUDIT_RECORD_MAX);
    assert_int_equal(audit_record_decode(&r2, buf, len, NULL), 0);
    assert_int_equal(r2.details_len, AUDIT_DETAILS_MAX);
    audit_record_cleanup(&r);
    audit_record_cleanup(&r2);
}

/* ---- UUIDv7 -------------------------------------------------------------------------------------
 */

static void
test_uuid7(void **state)
{
    uint8_t prev[16] = {0}, id[16], want[6];
    int64_t t = audit_now_ns() + 86400 * 1000000000LL, ms;

    (void) state;
    assert_int_equal(audit_uuid7_generate(id, -1), DBAO_ERANGE);
    for (int i = 0; i < 10000; i++) {
        /* The same instant again and again, then a clock step back. */
        assert_int_equal(audit_uuid7_generate(id, i == 5000 ? t - 1000000000 : t), 0);
        assert_int_equal(id[6] >> 4, 7);
        assert_int_equal(id[8] & 0xc0, 0x80);
        assert_true(memcmp(id, prev, 8) > 0); /* strictly increasing in its time bits */
        memcpy(prev, id, 16);
    }
    /* A fresh instant far ahead starts from its own millisecond. */
    assert_int_equal(audit_uuid7_generate(id, t + 3600 * 1000000000LL), 0);
    ms = (t + 3600 * 1000000000LL) / 1000000;
    for (int i = 0; i < 6; i++) {
        want[i] = (uint8_t) (ms >> (40 - 8 * i));
    }
    assert_memory_equal(id, want, 6);
}

/* ---- allocation failures
 * ------------------------------------------------------------------------- */

static void
test_alloc_failures(void **state)
{
    static uint8_t buf[AUDIT_RECORD_MAX];
    audit_record r, r2;
    size_t len, json_len;
    char *json;
    int rc;
    long n;

    (void) state;
    audit_record_init(&r);
    audit_record_init(&r2);
    parse_ok(&r, KAT_JSON);
    len = encode_ok(&r, buf);

    for (n = 0;; n++) {
        dbao_alloc_fail_after(n, false);
        rc = audit_record_from_json(&r2, KAT_JSON, strlen(KAT_JSON), 0, NULL);
        dbao_alloc_fail_after(-1, false);
        if (rc == 0) {
            break;
        }
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_null(r2.details);
    }
    assert_true(n > 0);
    for (n = 0;; n++) {
        dbao_alloc_fail_after(n, false);
        rc = audit_record_decode(&r2, buf, len, NULL);
        dbao_alloc_fail_after(-1, false);
        if (rc == 0) {
            break;
        }
        assert_int_equal(rc, DBAO_ENOMEM);
    }
    assert_true(n > 0);
    for (n = 0;; n++) {
        dbao_alloc_fail_after(n, false);
        rc = audit_record_to_json(&r2, &json, &json_len, NULL);
        dbao_alloc_fail_after(-1, false);
        if (rc == 0) {
            break;
        }
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_null(json);
    }
    dbao_free(json);
    assert_true(n > 0);
    audit_record_cleanup(&r);
    audit_record_cleanup(&r2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_minimal_and_optional),
        cmocka_unit_test(test_assign),
        cmocka_unit_test(test_decode_strict),
        cmocka_unit_test(test_decode_details),
        cmocka_unit_test(test_details_canonical),
        cmocka_unit_test(test_field_rules),
        cmocka_unit_test(test_time_rules),
        cmocka_unit_test(test_messages_hide_values),
        cmocka_unit_test(test_struct_api),
        cmocka_unit_test(test_maximal_record),
        cmocka_unit_test(test_uuid7),
        cmocka_unit_test(test_alloc_failures),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
