/* der.c: the two small DER structures of SM2 (GM/T 0009-2012), written by hand because they
 * are on the hot path of every signature check and because we want them strict.
 *
 *   SM2Signature   ::= SEQUENCE { r INTEGER, s INTEGER }
 *   SM2Cipher      ::= SEQUENCE { x INTEGER, y INTEGER, hash OCTET STRING (32),
 *                                 ciphertext OCTET STRING }
 *
 * Readers accept DER only, never BER: definite minimal lengths (short form below 128, long
 * form with no leading zero byte and at most 4 length bytes), minimal non-negative INTEGERs
 * (a leading 0x00 only when the next byte has its top bit set), no bytes after the outer
 * SEQUENCE. A value that does not fit 32 bytes is refused. Writers produce exactly that form,
 * so read(write(x)) == x and write(read(b)) == b for every accepted b.
 *
 * Raw ciphertext forms: C1C3C2 = 04 || x1 || y1 || C3 || C2 and C1C2C3 = 04 || x1 || y1 ||
 * C2 || C3, with C1 always uncompressed and C2 at least one byte.
 */
#include "internal.h"

#include <stdlib.h>

typedef struct der_reader {
    const uint8_t *p;
    size_t len;
} der_reader;

/* Reads one TLV with the expected tag; content is returned by pointer into the input. */
static int
der_get(der_reader *r, uint8_t tag, const uint8_t **content, size_t *content_len)
{
    size_t n, i, hdr;

    if (r->len < 2 || r->p[0] != tag) {
        return DBAO_EFORMAT;
    }
    if (r->p[1] < 0x80) {
        n = r->p[1];
        hdr = 2;
    } else {
        size_t nb = r->p[1] & 0x7f;

        if (nb == 0 || nb > 4 || r->len < 2 + nb || r->p[2] == 0) {
            return DBAO_EFORMAT;
        }
        n = 0;
        for (i = 0; i < nb; i++) {
            n = n << 8 | r->p[2 + i];
        }
        if (n < 0x80) {
            return DBAO_EFORMAT; /* long form where short form fits */
        }
        hdr = 2 + nb;
    }
    if (n > r->len - hdr) {
        return DBAO_EFORMAT;
    }
    *content = r->p + hdr;
    *content_len = n;
    r->p += hdr + n;
    r->len -= hdr + n;
    return 0;
}

/* A minimal non-negative INTEGER of at most 32 significant bytes, left-padded into out. */
static int
der_get_uint256(der_reader *r, uint8_t out[32])
{
    const uint8_t *c;
    size_t n;
    int rc = der_get(r, 0x02, &c, &n);

    if (rc != 0) {
        return rc;
    }
    if (n == 0 || (c[0] & 0x80) != 0) {
        return DBAO_EFORMAT; /* empty or negative */
    }
    if (n > 1 && c[0] == 0 && (c[1] & 0x80) == 0) {
        return DBAO_EFORMAT; /* non-minimal */
    }
    if (c[0] == 0 && n > 1) {
        c++;
        n--;
    }
    if (n > 32) {
        return DBAO_EFORMAT;
    }
    memset(out, 0, 32 - n);
    memcpy(out + 32 - n, c, n);
    return 0;
}

static size_t
der_len_size(size_t n)
{
    return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x1000000 ? 4 : 5;
}

static uint8_t *
der_put_hdr(uint8_t *p, uint8_t tag, size_t n)
{
    size_t ls = der_len_size(n), i;

    *p++ = tag;
    if (ls == 1) {
        *p++ = (uint8_t) n;
        return p;
    }
    *p++ = (uint8_t) (0x80 | (ls - 1));
    for (i = ls - 1; i > 0; i--) {
        *p++ = (uint8_t) (n >> (8 * (i - 1)));
    }
    return p;
}

/* Content length of the minimal INTEGER encoding of a 32-byte unsigned value. */
static size_t
uint256_der_content_len(const uint8_t v[32])
{
    size_t i = 0;

    while (i < 31 && v[i] == 0) {
        i++;
    }
    return 32 - i + ((v[i] & 0x80) != 0);
}

static uint8_t *
der_put_uint256(uint8_t *p, const uint8_t v[32])
{
    size_t n = uint256_der_content_len(v), i = 0;

    p = der_put_hdr(p, 0x02, n);
    while (i < 31 && v[i] == 0) {
        i++;
    }
    if ((v[i] & 0x80) != 0) {
        *p++ = 0;
    }
    memcpy(p, v + i, 32 - i);
    return p + 32 - i;
}

static bool
is_zero32(const uint8_t v[32])
{
    uint8_t acc = 0;
    int i;

    for (i = 0; i < 32; i++) {
        acc |= v[i];
    }
    return acc == 0;
}

int
gm_sm2_sig_to_der(uint8_t out[GM_SM2_SIG_DER_MAX], size_t *out_len,
                  const uint8_t sig[GM_SM2_SIG_RAW_LEN])
{
    size_t lr = uint256_der_content_len(sig), ls = uint256_der_content_len(sig + 32);
    size_t body = 2 + lr + 2 + ls;
    uint8_t *p = out;

    p = der_put_hdr(p, 0x30, body);
    p = der_put_uint256(p, sig);
    p = der_put_uint256(p, sig + 32);
    *out_len = (size_t) (p - out);
    return 0;
}

int
gm_sm2_sig_from_der(uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *der, size_t der_len)
{
    der_reader outer = {der, der_len}, in;
    uint8_t raw[64];
    int rc;

    rc = der_get(&outer, 0x30, &in.p, &in.len);
    if (rc == 0 && outer.len != 0) {
        rc = DBAO_EFORMAT;
    }
    if (rc == 0) {
        rc = der_get_uint256(&in, raw);
    }
    if (rc == 0) {
        rc = der_get_uint256(&in, raw + 32);
    }
    if (rc == 0 && (in.len != 0 || is_zero32(raw) || is_zero32(raw + 32))) {
        rc = DBAO_EFORMAT;
    }
    if (rc == 0) {
        memcpy(sig, raw, 64);
    }
    return rc;
}

int
gm_sm2_sig_parse(uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *in, size_t in_len)
{
    /* A DER signature is at least 8 and at most 72 bytes and starts with 0x30; a raw one is
     * exactly 64 bytes. A 64-byte input starting with 0x30 and parsing as DER is taken as DER:
     * raw r||s whose first 64 bytes happen to form valid DER would need r to begin 0x30 0x3e
     * and a structure exactly filling 64 bytes; the DER reading is tried first and the raw
     * reading is used only if DER parsing fails. */
    if (in_len != 64 || in[0] == 0x30) {
        int rc = gm_sm2_sig_from_der(sig, in, in_len);

        if (rc == 0 || in_len != 64) {
            return rc;
        }
    }
    memcpy(sig, in, 64);
    return 0;
}

/* ---- ciphertexts ------------------------------------------------------------------------- */

int
gm__sm2_ct_parse(gm__sm2_ct_parts *out, gm_sm2_ct_form form, const uint8_t *in, size_t in_len)
{
    der_reader outer = {in, in_len}, seq;
    size_t c3_len;
    int rc;

    switch (form) {
    case GM_SM2_CT_DER:
        rc = der_get(&outer, 0x30, &seq.p, &seq.len);
        if (rc == 0 && outer.len != 0) {
            rc = DBAO_EFORMAT;
        }
        out->c1[0] = 0x04;
        if (rc == 0) {
            rc = der_get_uint256(&seq, out->c1 + 1);
        }
        if (rc == 0) {
            rc = der_get_uint256(&seq, out->c1 + 33);
        }
        if (rc == 0) {
            rc = der_get(&seq, 0x04, &out->c3, &c3_len);
        }
        if (rc == 0) {
            rc = der_get(&seq, 0x04, &out->c2, &out->c2_len);
        }
        if (rc == 0 && (c3_len != 32 || out->c2_len == 0 || seq.len != 0)) {
            rc = DBAO_EFORMAT;
        }
        return rc;
    case GM_SM2_CT_C1C3C2:
    case GM_SM2_CT_C1C2C3:
        if (in_len < GM_SM2_CT_OVERHEAD + 1 || in[0] != 0x04) {
            return DBAO_EFORMAT;
        }
        memcpy(out->c1, in, 65);
        out->c2_len = in_len - GM_SM2_CT_OVERHEAD;
        if (form == GM_SM2_CT_C1C3C2) {
            out->c3 = in + 65;
            out->c2 = in + 97;
        } else {
            out->c2 = in + 65;
            out->c3 = in + 65 + out->c2_len;
        }
        return 0;
    default:
        return DBAO_EINVAL;
    }
}

int
gm__sm2_ct_encode(uint8_t **out, size_t *out_len, gm_sm2_ct_form form, const uint8_t c1[65],
                  const uint8_t c3[32], const uint8_t *c2, size_t c2_len)
{
    uint8_t *buf, *p;
    size_t body, total;

    *out = NULL;
    *out_len = 0;
    if (c2_len == 0 || c2_len > ((size_t) 1 << 30)) {
        return DBAO_ERANGE;
    }
    if (form == GM_SM2_CT_DER) {
        size_t lx = uint256_der_content_len(c1 + 1), ly = uint256_der_content_len(c1 + 33);

        body = 1 + der_len_size(lx) + lx + 1 + der_len_size(ly) + ly + 2 + 32 + 1 +
               der_len_size(c2_len) + c2_len;
        total = 1 + der_len_size(body) + body;
    } else if (form == GM_SM2_CT_C1C3C2 || form == GM_SM2_CT_C1C2C3) {
        body = 0;
        total = GM_SM2_CT_OVERHEAD + c2_len;
    } else {
        return DBAO_EINVAL;
    }
    buf = dbao_malloc(total);
    if (buf == NULL) {
        return DBAO_ENOMEM;
    }
    p = buf;
    if (form == GM_SM2_CT_DER) {
        p = der_put_hdr(p, 0x30, body);
        p = der_put_uint256(p, c1 + 1);
        p = der_put_uint256(p, c1 + 33);
        p = der_put_hdr(p, 0x04, 32);
        memcpy(p, c3, 32);
        p += 32;
        p = der_put_hdr(p, 0x04, c2_len);
        memcpy(p, c2, c2_len);
    } else {
        memcpy(p, c1, 65);
        if (form == GM_SM2_CT_C1C3C2) {
            memcpy(p + 65, c3, 32);
            memcpy(p + 97, c2, c2_len);
        } else {
            memcpy(p + 65, c2, c2_len);
            memcpy(p + 65 + c2_len, c3, 32);
        }
    }
    *out = buf;
    *out_len = total;
    return 0;
}

int
gm_sm2_ct_convert(uint8_t **out, size_t *out_len, gm_sm2_ct_form to, const uint8_t *in,
                  size_t in_len, gm_sm2_ct_form from)
{
    gm__sm2_ct_parts parts;
    int rc;

    *out = NULL;
    *out_len = 0;
    rc = gm__sm2_ct_parse(&parts, from, in, in_len);
    if (rc != 0) {
        return rc;
    }
    return gm__sm2_ct_encode(out, out_len, to, parts.c1, parts.c3, parts.c2, parts.c2_len);
}
