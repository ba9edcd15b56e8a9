/* fuzz_audit_jcs.c: differential target for the byte-level canonical-details check
 * (audit__jcs_is_canonical, jcscheck.c) against the jansson path (parse, canonicalise, compare):
 * both must agree on every input (audit__details_canonicalize takes the fast path when it says yes,
 * so the comparison is with the DOM path itself). A "yes" from the fast check that the slow path
 * refuses would let audit_record_decode accept bytes audit_record_encode cannot produce. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > AUDIT_DETAILS_MAX + 16) {
        return 0;
    }
    bool fast = audit__jcs_is_canonical((const char *) data, size);
    char *canon = NULL;
    size_t canon_len = 0;
    int rc = audit__details_canonicalize_dom(&canon, &canon_len, (const char *) data, size,
                                             "details", NULL);
    bool slow = rc == 0 && canon_len == size && memcmp(canon, data, size) == 0;
    dbao_free(canon);
    if (rc == DBAO_ENOMEM) {
        return 0;
    }
    assert(fast == slow);
    return 0;
}
