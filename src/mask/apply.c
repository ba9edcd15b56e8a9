/* apply.c: a masking policy applied to free text and to JSON documents (mask_apply_text,
 * mask_apply_json).
 *
 * Text: the policy's detector finds the values (its `detect.types`); each finding is replaced
 * by its type rule's action for the caller's roles; the bytes between findings are copied.
 *
 * JSON: jansson parses the document (JSON_DECODE_ANY, so a bare string or number is a
 * document too) and it is walked by hand. A field path is the dot-joined chain of object keys
 * from the root; array elements do not add to it, so the rule "patients.id_no" matches
 * {"patients":[{"id_no":...}]}. A value whose path has a rule is masked with the rule's action
 * for the roles: a string as text; a number under a number function (round, noise) stays a
 * number, under any other function it becomes a string; an object or array under a rule has
 * every string and number inside masked the same way; null and booleans stay. Every other
 * string, and every integer (an ID or mobile stored as a number), is scanned by the detectors.
 * Object keys are not scanned (they are names, not values). The output keeps key order, is
 * compact and UTF-8 (not \u-escaped).
 *
 * When a function cannot take a value (a number function given text, a date function given
 * something that is not a date), the value is replaced by "***": the code fails closed, it
 * never lets the value through.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dengbao/mask.h"

#define STACK_FINDINGS 64
#define FALLBACK       "***"
#define MAX_DEPTH      512

/* apply_action appends action `idx` (-1 = clear) applied to in[0..len) */
static int
apply_action(const mask_policy *p, int idx, mask_type type, const char *in, size_t len,
             dbao_buf *out, dbao_err *err)
{
    if (idx < 0)
        return dbao_buf_put(out, in, len);
    const mask_action *a = mask_policy_action(p, (size_t) idx);
    if (a == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "bad action index %d", idx);
    size_t mark = out->len;
    int rc = mask_fn_apply(&a->fn, type != MASK_T_NONE ? type : a->type, mask_policy_keys(p), in,
                           len, out, NULL);
    if (rc == DBAO_ENOMEM || rc == DBAO_ECRYPTO)
        return dbao_err_set(err, rc, "masking failed: %s", dbao_strerror(rc));
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return dbao_buf_put(out, FALLBACK, strlen(FALLBACK));
    }
    return 0;
}

/* text_into: the text masking into out; *changed tells whether anything was masked */
static int
text_into(const mask_policy *p, const char *const *roles, size_t num_roles, const char *in,
          size_t len, dbao_buf *out, mask_stats *st, bool *changed, dbao_err *err)
{
    mask_finding stackf[STACK_FINDINGS];
    mask_finding *f = stackf;
    if (changed)
        *changed = false;
    if (len >= UINT32_MAX)
        return dbao_err_set(err, DBAO_ERANGE, "text longer than 4 GiB");
    const mask_detector *d = mask_policy_detector(p);
    size_t n = mask_detect(d, in, len, f, STACK_FINDINGS);
    if (n > STACK_FINDINGS) {
        f = dbao_malloc(n * sizeof(*f));
        if (f == NULL)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        size_t n2 = mask_detect(d, in, len, f, n);
        if (n2 < n)
            n = n2;
    }
    size_t pos = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (f[i].start < pos || f[i].end > len || f[i].end <= f[i].start)
            continue; /* defensive: the detector promises ordered, non-overlapping findings */
        rc = dbao_buf_put(out, in + pos, f[i].start - pos);
        if (rc != 0)
            break;
        const mask_rule *r = mask_policy_type_rule(p, f[i].type);
        int idx = mask_rule_action_for(r, roles, num_roles);
        rc = apply_action(p, idx, f[i].type, in + f[i].start, f[i].end - f[i].start, out, err);
        pos = f[i].end;
        if (idx >= 0) {
            if (st) {
                st->findings++;
                st->types |= MASK_TYPE_BIT(f[i].type);
            }
            if (changed)
                *changed = true;
        }
    }
    if (rc == 0)
        rc = dbao_buf_put(out, in + pos, len - pos);
    if (f != stackf)
        dbao_free(f);
    if (rc == DBAO_ENOMEM)
        return dbao_err_set(err, rc, "out of memory");
    return rc;
}

int
mask_apply_text(const mask_policy *p, const char *const *roles, size_t num_roles, const char *in,
                size_t len, dbao_buf *out, mask_stats *st, dbao_err *err)
{
    if (p == NULL || out == NULL || (in == NULL && len > 0) || (roles == NULL && num_roles > 0))
        return dbao_err_set(err, DBAO_EINVAL, "mask_apply_text: NULL argument");
    size_t mark = out->len;
    int rc = text_into(p, roles, num_roles, in ? in : "", len, out, st, NULL, err);
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
    }
    return rc;
}

/* ---- JSON -------------------------------------------------------------------------------- */

typedef struct W {
    const mask_policy *p;
    const char *const *roles;
    size_t num_roles;
    mask_stats *st;
    dbao_err *err;
    dbao_buf path;
    dbao_buf tmp;
} W;

static bool
is_number_fn(const mask_policy *p, int idx)
{
    if (idx < 0)
        return false;
    const mask_action *a = mask_policy_action(p, (size_t) idx);
    return a && (a->fn.kind == MASK_FN_ROUND || a->fn.kind == MASK_FN_NOISE);
}

static int
number_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_integer(v))
        return snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return snprintf(buf, cap, "%.15g", json_real_value(v));
}

/* masked_value: the replacement for scalar v under a rule's action (NULL: keep v) */
static int
masked_value(W *w, const mask_rule *r, int idx, json_t *v, json_t **repl)
{
    *repl = NULL;
    if (idx < 0 || !(json_is_string(v) || json_is_number(v)))
        return 0;
    char nb[64];
    const char *s;
    size_t len;
    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);
    } else {
        int n = number_text(v, nb, sizeof(nb));
        if (n < 0 || (size_t) n >= sizeof(nb))
            return dbao_err_set(w->err, DBAO_EFORMAT, "bad number");
        s = nb;
        len = (size_t) n;
    }
    dbao_buf_reset(&w->tmp);
    int rc = apply_action(w->p, idx, r->type, s, len, &w->tmp, w->err);
    if (rc != 0)
        return rc;
    if (json_is_number(v) && is_number_fn(w->p, idx)) {
        *repl = json_loadb(w->tmp.data, w->tmp.len, JSON_DECODE_ANY, NULL);
        if (*repl != NULL && !json_is_number(*repl)) {
            json_decref(*repl);
            *repl = NULL;
        }
    }
    if (*repl == NULL)
        *repl = json_stringn(w->tmp.data ? w->tmp.data : "", w->tmp.len);
    if (*repl == NULL)
        return dbao_err_set(w->err, DBAO_ENOMEM, "out of memory");
    w->st->fields++;
    if (r->type != MASK_T_NONE)
        w->st->types |= MASK_TYPE_BIT(r->type);
    return 0;
}

/* scanned_value: the replacement for an unruled scalar found by the detectors (NULL: keep) */
static int
scanned_value(W *w, json_t *v, json_t **repl)
{
    *repl = NULL;
    char nb[32];
    const char *s;
    size_t len;
    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);
    } else if (json_is_integer(v)) {
        int n = snprintf(nb, sizeof(nb), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = nb;
        len = (size_t) n;
    } else {
        return 0;
    }
    bool changed = false;
    dbao_buf_reset(&w->tmp);
    int rc = text_into(w->p, w->roles, w->num_roles, s, len, &w->tmp, w->st, &changed, w->err);
    if (rc != 0 || !changed)
        return rc;
    *repl = json_stringn(w->tmp.data ? w->tmp.data : "", w->tmp.len);
    return *repl ? 0 : dbao_err_set(w->err, DBAO_ENOMEM, "out of memory");
}

static int walk(W *w, json_t *v, const mask_rule *r, int idx, int depth, json_t **repl);

static int
walk_object(W *w, json_t *obj, const mask_rule *r, int idx, int depth)
{
    size_t base = w->path.len;
    for (void *it = json_object_iter(obj); it != NULL; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        json_t *val = json_object_iter_value(it);
        const mask_rule *kr = r;
        int kidx = idx;
        int rc = 0;
        if (base > 0)
            rc = dbao_buf_putc(&w->path, '.');
        if (rc == 0)
            rc = dbao_buf_put(&w->path, key, strlen(key));
        if (rc != 0)
            return dbao_err_set(w->err, DBAO_ENOMEM, "out of memory");
        if (kr == NULL) {
            const mask_rule *fr = mask_policy_field(w->p, w->path.data, w->path.len);
            if (fr != NULL) {
                kr = fr;
                kidx = mask_rule_action_for(fr, w->roles, w->num_roles);
            }
        }
        json_t *repl = NULL;
        rc = walk(w, val, kr, kidx, depth + 1, &repl);
        w->path.len = base;
        w->path.data[base] = '\0';
        if (rc != 0)
            return rc;
        if (repl != NULL && json_object_iter_set_new(obj, it, repl) != 0)
            return dbao_err_set(w->err, DBAO_ENOMEM, "out of memory");
    }
    return 0;
}

/* walk: r/idx are the rule above v (NULL: none). *repl receives a replacement for a scalar. */
static int
walk(W *w, json_t *v, const mask_rule *r, int idx, int depth, json_t **repl)
{
    *repl = NULL;
    if (depth > MAX_DEPTH)
        return dbao_err_set(w->err, DBAO_EFORMAT, "json nested deeper than %d", MAX_DEPTH);
    if (json_is_object(v))
        return walk_object(w, v, r, idx, depth);
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(v, i), *er = NULL;
            int rc = walk(w, e, r, idx, depth + 1, &er);
            if (rc != 0)
                return rc;
            if (er != NULL && json_array_set_new(v, i, er) != 0)
                return dbao_err_set(w->err, DBAO_ENOMEM, "out of memory");
        }
        return 0;
    }
    if (r != NULL) {
        if (idx < 0)
            return 0;
        return masked_value(w, r, idx, v, repl);
    }
    return scanned_value(w, v, repl);
}

static int
dump_cb(const char *buffer, size_t size, void *data)
{
    return dbao_buf_put(data, buffer, size) == 0 ? 0 : -1;
}

int
mask_apply_json(const mask_policy *p, const char *const *roles, size_t num_roles, const char *in,
                size_t len, dbao_buf *out, mask_stats *st, dbao_err *err)
{
    if (p == NULL || out == NULL || (in == NULL && len > 0) || (roles == NULL && num_roles > 0))
        return dbao_err_set(err, DBAO_EINVAL, "mask_apply_json: NULL argument");
    json_error_t je;
    json_t *root = json_loadb(in ? in : "", len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (root == NULL)
        return dbao_err_set(err, DBAO_EFORMAT, "not json (line %d, column %d)", je.line, je.column);
    mask_stats local = {0};
    W w = {.p = p, .roles = roles, .num_roles = num_roles, .st = st ? st : &local, .err = err};
    json_t *repl = NULL;
    int rc = dbao_buf_reserve(&w.path, 64);
    if (rc == 0)
        rc = walk(&w, root, NULL, 0, 0, &repl);
    else
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    if (rc == 0 && repl != NULL) {
        json_decref(root);
        root = repl;
    }
    size_t mark = out->len;
    if (rc == 0 && json_dump_callback(root, dump_cb, out,
                                      JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
                                          JSON_REAL_PRECISION(15)) != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    json_decref(root);
    dbao_buf_free(&w.path);
    dbao_buf_free_secret(&w.tmp);
    return rc;
}
