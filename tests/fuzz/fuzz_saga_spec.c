/* fuzz_saga_spec.c: libFuzzer target for the saga spec parser (src/saga/spec.c).
 *
 * Input: the bytes of a submitted spec (POST /v1/sagas body). Invariants: nothing crashes or
 * leaks; a refusal always carries a message; an accepted spec has 1..SAGA_STEPS_MAX steps with
 * URLs, payloads and a canonical text, and that canonical text parses again
 * (saga_spec_from_canonical) to exactly the same bytes (the canonical form is a fixed point),
 * with the same number of steps, groups, timeouts and retry policy.
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_saga_spec/.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "coord.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ALLOW[] = {"127.0.0.1:*", "bank.example:8443", "*:9000"};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    saga_spec_defaults d = {.timeout_ms = 30000,
                            .call_timeout_ms = 3000,
                            .retry_initial_ms = 100,
                            .retry_max_ms = 5000,
                            .max_attempts = 6,
                            .allow = ALLOW,
                            .num_allow = 3};
    saga_spec s;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = saga_spec_parse(&s, (const char *) data, size, &d, &err);
    if (rc != 0) {
        assert(err.msg[0] != 0);
        return 0;
    }
    assert(s.num_steps >= 1 && s.num_steps <= SAGA_STEPS_MAX);
    assert(s.canonical != NULL && s.canonical_len == strlen(s.canonical));
    for (size_t i = 0; i < s.num_steps; i++)
        assert(s.steps[i].action && s.steps[i].compensate && s.steps[i].payload);
    saga_spec t;
    rc = saga_spec_from_canonical(&t, "g", s.canonical, s.canonical_len, &err);
    assert(rc == 0);
    assert(t.canonical_len == s.canonical_len);
    assert(memcmp(t.canonical, s.canonical, s.canonical_len) == 0);
    assert(t.num_steps == s.num_steps && t.timeout_ms == s.timeout_ms);
    assert(t.max_attempts == s.max_attempts && t.retry_initial_ms == s.retry_initial_ms);
    for (size_t i = 0; i < s.num_steps; i++) {
        assert(t.steps[i].group == s.steps[i].group);
        assert(t.steps[i].timeout_ms == s.steps[i].timeout_ms);
        assert(strcmp(t.steps[i].payload, s.steps[i].payload) == 0);
    }
    saga_spec_free(&t);
    saga_spec_free(&s);
    return 0;
}
