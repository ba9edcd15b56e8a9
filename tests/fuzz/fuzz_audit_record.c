/* fuzz_audit_record.c: libFuzzer target for the audit record parsers (audit.h).
 *
 * The input is tried three ways; no output is checked against expectations, only invariants:
 *   - as JSON (audit_record_from_json): an accepted record encodes; the encoding decodes; the
 *     decoded record encodes to the same bytes; its JSON parses back to the same bytes;
 *   - as canonical bytes (audit_record_decode): accepted bytes re-encode to exactly the input
 *     (round-trip exactness: the decoder accepts only what the encoder produces), and go
 *     through JSON and back unchanged;
 *   - as a details object (audit__details_canonicalize): the canonical text is a fixed point.
 * Return codes are limited to the documented ones.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include -I src/audit
 *        tests/fuzz/fuzz_audit_record.c <library sources or an instrumented libdengbao.a>
 *        -ljansson -lcrypto
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/audit.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t enc1[AUDIT_RECORD_MAX], enc2[AUDIT_RECORD_MAX];

/* through_json checks that `r` (encoded as enc/enc_len) survives JSON printing and parsing. */
static void
through_json(const audit_record *r, const uint8_t *enc, size_t enc_len)
{
    audit_record r2;
    char *json = NULL;
    size_t json_len = 0, len = 0;

    audit_record_init(&r2);
    assert(audit_record_to_json(r, &json, &json_len, NULL) == 0);
    assert(strlen(json) == json_len);
    assert(audit_record_from_json(&r2, json, json_len, 0, NULL) == 0);
    assert(audit_record_encode(&r2, enc2, &len, sizeof(enc2), NULL) == 0);
    assert(len == enc_len && memcmp(enc2, enc, len) == 0);
    dbao_free(json);
    audit_record_cleanup(&r2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    audit_record r, r2;
    size_t len = 0, len2 = 0;
    char *canon = NULL, *canon2 = NULL;
    size_t canon_len = 0, canon2_len = 0;
    dbao_err err;
    int rc;

    audit_record_init(&r);
    audit_record_init(&r2);

    rc = audit_record_from_json(&r, (const char *) data, size, 0, &err);
    assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_ENOMEM);
    if (rc == 0) {
        assert(audit_record_validate(&r, NULL) == 0);
        assert(audit_record_encode(&r, enc1, &len, sizeof(enc1), NULL) == 0);
        assert(len <= AUDIT_RECORD_MAX);
        assert(audit_record_decode(&r2, enc1, len, NULL) == 0);
        assert(audit_record_encode(&r2, enc2, &len2, sizeof(enc2), NULL) == 0);
        assert(len2 == len && memcmp(enc1, enc2, len) == 0);
        through_json(&r2, enc1, len);
    } else {
        assert(r.details == NULL && r.subject.id[0] == '\0');
        assert(strlen(err.msg) < sizeof(err.msg));
    }

    rc = audit_record_decode(&r, data, size, &err);
    assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_ENOTSUP || rc == DBAO_ENOMEM);
    if (rc == 0) {
        assert(audit_record_encode(&r, enc1, &len, sizeof(enc1), NULL) == 0);
        assert(len == size && memcmp(enc1, data, size) == 0);
        through_json(&r, data, size);
    }

    rc =
        audit__details_canonicalize(&canon, &canon_len, (const char *) data, size, "details", NULL);
    assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_ENOMEM);
    if (rc == 0) {
        assert(canon_len <= AUDIT_DETAILS_MAX && strlen(canon) == canon_len);
        assert(audit__details_canonicalize(&canon2, &canon2_len, canon, canon_len, "details",
                                           NULL) == 0);
        assert(canon2_len == canon_len && memcmp(canon, canon2, canon_len) == 0);
    }
    dbao_free(canon);
    dbao_free(canon2);
    audit_record_cleanup(&r);
    audit_record_cleanup(&r2);
    return 0;
}
