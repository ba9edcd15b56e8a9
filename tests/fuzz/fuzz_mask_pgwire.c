/* fuzz_mask_pgwire.c: libFuzzer target for the PostgreSQL protocol helpers (src/mask/pgwire.h).
 *
 * The first byte selects what the rest of the input is fed to:
 *   0 startup packet: pgw_startup_frame, then pgw_startup_parse of a framed packet;
 *   1 a stream of messages: pgw_frame until it stops, each Q/P decoded, each D iterated, each
 *     E/N iterated, each R run through the SASL filter;
 *   2 the payload alone as DataRow, fields, Parse and SASL list.
 * Invariants: no reads out of bounds (ASan); a frame never claims more bytes than given nor
 * fewer than 5; parsed startup parameters are NUL-terminated strings inside the packet; a
 * DataRow that iterates cleanly rebuilds byte for byte; a Parse that decodes re-encodes to the
 * same message; the SASL filter output is itself well formed, shorter, and has no -PLUS entry.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pgwire.h"

static void
check_datarow(const uint8_t *p, size_t n)
{
    pgw_datarow it;
    if (pgw_datarow_begin(&it, p, n) < 0) {
        return;
    }
    dbao_buf b = {0};
    pgw_datarow_build_begin(&b, it.ncols);
    const uint8_t *v;
    int32_t vl;
    int r;
    while ((r = pgw_datarow_next(&it, &v, &vl)) == 1) {
        assert(vl >= -1);
        assert(vl < 0 || v + vl <= p + n);
        pgw_datarow_build_field(&b, v, vl);
    }
    if (r == 0) {
        assert(b.len == n && memcmp(b.data, p, n) == 0);
    }
    dbao_buf_free(&b);
}

static void
check_fields(const uint8_t *p, size_t n)
{
    pgw_fields it;
    pgw_fields_begin(&it, p, n);
    char code;
    const char *val;
    size_t vl;
    while (pgw_fields_next(&it, &code, &val, &vl) == 1) {
        assert(code != 0 && strlen(val) == vl);
    }
}

static void
check_parse(const uint8_t *p, size_t n)
{
    pgw_parse q;
    if (pgw_parse_decode(&q, p, n) != 0) {
        return;
    }
    dbao_buf b = {0};
    int rc = pgw_parse_encode(&b, &q, q.sql, q.sql_len);
    assert(rc == 0);
    assert(b.len == n + 5 && memcmp(b.data + 5, p, n) == 0);
    dbao_buf_free(&b);
}

static void
check_sasl(const uint8_t *p, size_t n)
{
    dbao_buf out = {0};
    int r = pgw_sasl_filter(p, n, &out);
    if (r == 1) {
        assert(out.len < n);
        dbao_buf again = {0};
        assert(pgw_sasl_filter((const uint8_t *) out.data, out.len, &again) == 0);
        dbao_buf_free(&again);
    } else {
        assert(out.len == 0);
    }
    dbao_buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0] % 3;
    data++;
    size--;
    if (mode == 0) {
        size_t total = 0;
        if (pgw_startup_frame(data, size, &total) == 1) {
            assert(total >= 8 && total <= size && total <= PGW_STARTUP_MAX);
            pgw_startup s;
            if (pgw_startup_parse(&s, data, total, NULL) == 0) {
                for (size_t i = 0; i < 2 * s.nparams; i++) {
                    assert(s.params[i] != NULL);
                    (void) strlen(s.params[i]);
                }
                assert(s.params[2 * s.nparams] == NULL);
                pgw_startup_free(&s);
            }
        }
        return 0;
    }
    if (mode == 1) {
        size_t pos = 0;
        for (;;) {
            uint8_t type;
            size_t total;
            int r = pgw_frame(data + pos, size - pos, 1u << 20, &type, &total);
            if (r != 1) {
                break;
            }
            assert(total >= 5 && total <= size - pos);
            const uint8_t *pl = data + pos + 5;
            size_t pn = total - 5;
            const char *sql;
            size_t sl;
            switch (type) {
            case 'Q':
                if (pgw_query_decode(pl, pn, &sql, &sl) == 0) {
                    assert(strlen(sql) == sl && sl + 1 == pn);
                }
                break;
            case 'P':
                check_parse(pl, pn);
                break;
            case 'D':
                check_datarow(pl, pn);
                break;
            case 'E':
            case 'N':
                check_fields(pl, pn);
                break;
            case 'R':
                check_sasl(pl, pn);
                break;
            default:
                break;
            }
            pos += total;
        }
        return 0;
    }
    check_datarow(data, size);
    check_fields(data, size);
    check_parse(data, size);
    check_sasl(data, size);
    return 0;
}
