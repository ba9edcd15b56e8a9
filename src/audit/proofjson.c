/* proofjson.c: inclusion and consistency proofs as JSON, the form auditd serves and the CLI
 * prints and reads back (dengbao audit prove / verify-proof).
 *
 *   {"type":"inclusion","index":N,"size":S,"leaf_hash":"<base64>","hashes":["<base64>",...]}
 *   {"type":"consistency","from":A,"to":B,"hashes":["<base64>",...]}
 *
 * The writer emits exactly this key order; the reader (jansson, duplicates rejected) accepts
 * the keys in any order but nothing else: unknown keys, wrong types, negative or non-integer
 * numbers, numbers above 2^53 - 1 (the I-JSON limit), base64 that is not the canonical
 * encoding of 32 bytes, more than AUDIT_PROOF_MAX hashes. The shape is all it checks; whether
 * a proof proves anything is audit_merkle_verify_*'s job.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define JSON_INT_MAX ((uint64_t) 9007199254740991) /* 2^53 - 1 */

int
audit_proof_to_json(const audit_proof *p, char **out, size_t *out_len, dbao_err *err)
{
    if (p->num > AUDIT_PROOF_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "proof has too many hashes");
    }
    audit__buf b;
    audit__buf_init(&b, 16384);
    char tmp[128];
    char b64[AUDIT__B64_LEN(AUDIT_HASH_LEN) + 1];
    if (p->type == AUDIT_PROOF_INCLUSION) {
        snprintf(tmp, sizeof tmp, "{\"type\":\"inclusion\",\"index\":%" PRIu64 ",\"size\":%" PRIu64,
                 p->index, p->size);
        audit__buf_puts(&b, tmp);
        if (p->has_leaf) {
            audit__b64_encode(b64, p->leaf_hash, AUDIT_HASH_LEN);
            audit__buf_puts(&b, ",\"leaf_hash\":\"");
            audit__buf_puts(&b, b64);
            audit__buf_puts(&b, "\"");
        }
    } else if (p->type == AUDIT_PROOF_CONSISTENCY) {
        snprintf(tmp, sizeof tmp, "{\"type\":\"consistency\",\"from\":%" PRIu64 ",\"to\":%" PRIu64,
                 p->from, p->to);
        audit__buf_puts(&b, tmp);
    } else {
        audit__buf_cleanup(&b);
        return dbao_err_set(err, DBAO_EINVAL, "unknown proof type");
    }
    audit__buf_puts(&b, ",\"hashes\":[");
    for (size_t i = 0; i < p->num; i++) {
        audit__b64_encode(b64, p->hashes[i], AUDIT_HASH_LEN);
        audit__buf_puts(&b, i ? ",\"" : "\"");
        audit__buf_puts(&b, b64);
        audit__buf_puts(&b, "\"");
    }
    audit__buf_puts(&b, "]}");
    return audit__buf_take(&b, out, out_len);
}

static int
get_u64(const json_t *v, const char *name, uint64_t *out, dbao_err *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t) json_integer_value(v) > JSON_INT_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': not an integer in 0..2^53-1", name);
    }
    *out = (uint64_t) json_integer_value(v);
    return 0;
}

static int
get_hash(const json_t *v, const char *name, uint8_t out[AUDIT_HASH_LEN], dbao_err *err)
{
    size_t n = 0;
    uint8_t tmp[AUDIT_HASH_LEN + 3]; /* the decoder wants room for whole 3-byte groups */
    if (!json_is_string(v) ||
        !audit__b64_decode(tmp, &n, sizeof tmp, json_string_value(v), json_string_length(v)) ||
        n != AUDIT_HASH_LEN) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': not base64 of a 32-byte hash", name);
    }
    memcpy(out, tmp, AUDIT_HASH_LEN);
    return 0;
}

int
audit_proof_from_json(audit_proof *p, const char *json, size_t len, dbao_err *err)
{
    memset(p, 0, sizeof *p);
    if (len > 65536) {
        return dbao_err_set(err, DBAO_EFORMAT, "proof JSON too long");
    }
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "proof is not valid JSON (line %d column %d)",
                            je.line, je.column);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "proof is not a JSON object");
        goto out;
    }
    const json_t *t = json_object_get(root, "type");
    if (!json_is_string(t)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'type': missing or not a string");
        goto out;
    }
    const char *ts = json_string_value(t);
    const char *allowed[5] = {0};
    if (strcmp(ts, "inclusion") == 0) {
        p->type = AUDIT_PROOF_INCLUSION;
        allowed[0] = "index";
        allowed[1] = "size";
        allowed[2] = "leaf_hash";
        if ((rc = get_u64(json_object_get(root, "index"), "index", &p->index, err)) != 0 ||
            (rc = get_u64(json_object_get(root, "size"), "size", &p->size, err)) != 0) {
            goto out;
        }
        const json_t *lh = json_object_get(root, "leaf_hash");
        if (lh != NULL) {
            if ((rc = get_hash(lh, "leaf_hash", p->leaf_hash, err)) != 0) {
                goto out;
            }
            p->has_leaf = true;
        }
    } else if (strcmp(ts, "consistency") == 0) {
        p->type = AUDIT_PROOF_CONSISTENCY;
        allowed[0] = "from";
        allowed[1] = "to";
        if ((rc = get_u64(json_object_get(root, "from"), "from", &p->from, err)) != 0 ||
            (rc = get_u64(json_object_get(root, "to"), "to", &p->to, err)) != 0) {
            goto out;
        }
    } else {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'type': unknown proof type");
        goto out;
    }
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *) root, key, val)
    {
        bool ok = strcmp(key, "type") == 0 || strcmp(key, "hashes") == 0;
        for (int i = 0; allowed[i] != NULL && !ok; i++) {
            ok = strcmp(key, allowed[i]) == 0;
        }
        if (!ok) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "unknown field in proof");
            goto out;
        }
    }
    const json_t *h = json_object_get(root, "hashes");
    if (!json_is_array(h)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'hashes': missing or not an array");
        goto out;
    }
    if (json_array_size(h) > AUDIT_PROOF_MAX) {
        rc =
            dbao_err_set(err, DBAO_EFORMAT, "field 'hashes': more than %d hashes", AUDIT_PROOF_MAX);
        goto out;
    }
    p->num = json_array_size(h);
    for (size_t i = 0; i < p->num; i++) {
        if ((rc = get_hash(json_array_get(h, i), "hashes", p->hashes[i], err)) != 0) {
            goto out;
        }
    }
out:
    json_decref(root);
    if (rc != 0) {
        memset(p, 0, sizeof *p);
    }
    return rc;
}
