/* fuzz_audit_checkpoint.c: libFuzzer target for the signed-checkpoint parser (audit.h) and the
 * strict base64 decoder under it.
 *
 * Invariants:
 *   - audit_checkpoint_open against a fixed trusted key returns only documented codes, and when
 *     it succeeds parse_unverified succeeds with the same checkpoint;
 *   - a checkpoint that parses re-signs (when its origin is one we would sign) and the new note
 *     opens to the same origin, size and root;
 *   - base64 that decodes re-encodes to exactly the input.
 * The trusted key is generated once per process, so random inputs almost never carry a valid
 * signature; the seed corpus holds notes of other keys (ignored lines) to reach the body.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include -I src/audit
 *        tests/fuzz/fuzz_audit_checkpoint.c <library sources or an instrumented libdengbao.a>
 *        -ljansson -lcrypto
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/audit.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static gm_sm2_key *key;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    audit_checkpoint cp, cp2, cp3;
    audit_note_key trusted = {"bank.example/audit", NULL};
    bool verified = false;
    char *note = NULL;
    size_t note_len = 0;
    int rc, rc2;

    if (key == NULL && gm_sm2_key_generate(&key, NULL) != 0) {
        abort();
    }
    trusted.key = key;

    rc = audit_checkpoint_open(&cp, (const char *) data, size, &trusted, 1, &verified, NULL);
    assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_EVERIFY || rc == DBAO_ENOMEM);
    assert(verified == (rc == 0));
    rc2 = audit_checkpoint_parse_unverified(&cp2, (const char *) data, size, NULL);
    assert(rc2 == 0 || rc2 == DBAO_EFORMAT || rc2 == DBAO_ENOMEM);
    if (rc == 0) {
        assert(rc2 == 0 && memcmp(&cp, &cp2, sizeof(cp)) == 0);
    }
    if (rc == DBAO_EVERIFY) {
        assert(rc2 == 0);
    }
    if (rc2 == 0) {
        assert(strlen(cp2.origin) > 0 && strlen(cp2.origin) <= AUDIT_ORIGIN_MAX);
        assert(cp2.size <= AUDIT_TREE_SIZE_MAX);
        if (audit_checkpoint_sign(&note, &note_len, &cp2, &trusted, 1, NULL) == 0) {
            assert(audit_checkpoint_open(&cp3, note, note_len, &trusted, 1, NULL, NULL) == 0);
            assert(strcmp(cp3.origin, cp2.origin) == 0 && cp3.size == cp2.size &&
                   memcmp(cp3.root, cp2.root, AUDIT_HASH_LEN) == 0 && cp3.num_extensions == 0);
            dbao_free(note);
        }
    }

    if (size <= 4096) {
        uint8_t out[4096];
        char enc[AUDIT__B64_LEN(4096) + 1];
        size_t out_len;

        if (audit__b64_decode(out, &out_len, sizeof(out), (const char *) data, size)) {
            audit__b64_encode(enc, out, out_len);
            assert(strlen(enc) == size && memcmp(enc, data, size) == 0);
        }
    }
    return 0;
}
