/* policy.c: the masking policy of mask.h, read from YAML (libyaml document API).
 *
 * The file is loaded as one libyaml document and walked by hand against a fixed schema
 * (docs/mask.md, "Policy reference"), as strictly as the gateway configuration
 * (src/gateway/config.c), because a typo in a masking policy silently shows personal data:
 * unknown keys, duplicate keys, wrong node kinds, YAML aliases (every node may be visited only
 * once, which also defeats "billion laughs"), more than one document, unknown types, bad
 * function specs, unknown key ids, bad role or column names, `clear` as a rule's mask: all
 * refused with "file:line: ...". Values are never quoted in messages, only names.
 *
 * Top-level keys, processed in this order whatever their order in the file (later sections
 * refer to earlier ones): keys, detect, derived, types, data_types, allow_functions, columns,
 * fields.
 *
 * Rules inherit from their type's rule: a column or field rule with a type but without `mask`
 * gets the type rule's action, without `roles` the type rule's role overrides, without
 * `predicates` the type rule's. An untyped rule without `mask` gets replace('***').
 *
 * Actions: every function the policy names goes into one table (identical (function, type)
 * pairs share an index); rules hold indexes, -1 meaning clear (role overrides only). Column and
 * field rules are found through one open-addressing hash table keyed by (kind, target).
 *
 * Ownership: a mask_policy owns every string, array, the keyring and the detector; it is
 * immutable after mask_policy_parse returns and may be shared by threads.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "dengbao/mask.h"
#include "dengbao/yamlcfg.h"

#define MAX_FILE      (4u << 20)
#define MAX_STR       4096
#define MAX_RULES     100000
#define MAX_ROLES     256
#define MAX_NAME      63
#define RULE_COLUMN   0
#define RULE_FIELD    1
#define DEFAULT_DERIV "replace('***')"

typedef struct data_type {
    char *name;
    mask_type type;
} data_type;

struct mask_policy {
    mask_keyring *keys;
    mask_detector *det;
    uint32_t detect_types;
    mask_action *actions;
    size_t num_actions, cap_actions;
    int derived;
    mask_rule type_rules[MASK_T_COUNT];
    mask_rule *rules; /* columns, then fields */
    uint8_t *kinds;   /* RULE_COLUMN or RULE_FIELD per rule */
    size_t num_rules, num_columns;
    uint32_t *table; /* rule index + 1, 0 empty */
    size_t table_size;
    data_type *data_types;
    size_t num_data_types;
    char **functions;
    size_t num_functions;
};

/* ---- parser state and error reporting ---------------------------------------------------- */

typedef struct P {
    dbao_yaml y; /* the document, the file name (y.name), its folder (y.base), errors (y.err) */
    mask_policy *pol;
    const yaml_node_t *prefix_node; /* detect.mobile_prefixes, for error lines */
} P;

#define fail(p, ...) dbao_yaml_fail(&(p)->y, __VA_ARGS__)
#define is_null(n)   dbao_yaml_is_null(n)

static int
oom(P *p)
{
    return dbao_err_set(p->y.err, DBAO_ENOMEM, "%s: out of memory", p->y.name);
}

static int
node(P *p, int id, const yaml_node_t *parent, yaml_node_t **out)
{
    return dbao_yaml_node(&p->y, id, parent, out);
}

static const char *
sval(const yaml_node_t *n)
{
    return dbao_yaml_scalar(n);
}

/* want_str: a non-empty scalar string without NUL bytes */
static int
want_str(P *p, const yaml_node_t *n, const char *key)
{
    if (n->type != YAML_SCALAR_NODE || is_null(n))
        return fail(p, DBAO_EFORMAT, n, "%s must be a string", key);
    if (strlen(sval(n)) != n->data.scalar.length || n->data.scalar.length > MAX_STR)
        return fail(p, DBAO_EFORMAT, n, "%s: bad or too long value", key);
    if (n->data.scalar.length == 0)
        return fail(p, DBAO_EFORMAT, n, "%s must not be empty", key);
    return 0;
}

/* each_pair iterates a mapping: checks kind, key scalars, duplicates (by string). */
typedef int (*pair_fn)(P *p, yaml_node_t *k, yaml_node_t *v, void *ctx);

static int
each_pair(P *p, yaml_node_t *m, const char *what, pair_fn fn, void *ctx, bool check_dups)
{
    if (m->type != YAML_MAPPING_NODE)
        return fail(p, DBAO_EFORMAT, m, "'%s' must be a mapping", what);
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn, *vn;
        int rc = node(p, pr->key, m, &kn);
        if (rc != 0)
            return rc;
        if ((rc = want_str(p, kn, what)) != 0)
            return fail(p, DBAO_EFORMAT, kn, "keys in '%s' must be non-empty strings", what);
        for (yaml_node_pair_t *q = m->data.mapping.pairs.start; check_dups && q < pr; q++) {
            yaml_node_t *qk = yaml_document_get_node(&p->y.doc, q->key);
            if (qk && qk->type == YAML_SCALAR_NODE && strcmp(sval(qk), sval(kn)) == 0)
                return fail(p, DBAO_EFORMAT, kn, "duplicate key '%.64s' in '%s'", sval(kn), what);
        }
        if ((rc = node(p, pr->value, m, &vn)) != 0)
            return rc;
        if ((rc = fn(p, kn, vn, ctx)) != 0)
            return rc;
    }
    return 0;
}

/* fields: a mapping with a fixed key set */
static int
fields(P *p, const yaml_node_t *m, const char *ctx, const char *const *keys, size_t nk,
       yaml_node_t **vals)
{
    return dbao_yaml_fields(&p->y, m, ctx, keys, nk, vals);
}

/* ---- names ------------------------------------------------------------------------------- */

static bool
ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || (unsigned char) c >= 0x80;
}

/* dotted: `min`..`max` non-empty identifier parts joined by '.' */
static bool
dotted(const char *s, size_t min, size_t max, bool json)
{
    size_t parts = 0, plen = 0;
    for (const char *c = s;; c++) {
        if (*c == '.' || *c == '\0') {
            if (plen == 0)
                return false;
            parts++;
            plen = 0;
            if (*c == '\0')
                break;
            continue;
        }
        if (json ? (unsigned char) *c < 0x20 : !ident_char(*c))
            return false;
        plen++;
    }
    return parts >= min && parts <= max;
}

static bool
role_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_NAME)
        return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!ident_char(s[i]) && s[i] != '-' && s[i] != '.')
            return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) s[i] >= 0x80)
            return false;
    return true;
}

/* ---- actions ----------------------------------------------------------------------------- */

static bool
fn_equal(const mask_fn *a, const mask_fn *b)
{
    if (a->kind != b->kind || a->a != b->a || a->b != b->b || a->ch != b->ch ||
        a->step != b->step || strcmp(a->key_id, b->key_id) != 0)
        return false;
    if ((a->value == NULL) != (b->value == NULL))
        return false;
    return a->value == NULL || strcmp(a->value, b->value) == 0;
}

/* add_action takes ownership of *fn (cleans it up when an equal action exists). */
static int
add_action(P *p, mask_fn *fn, mask_type type, int *index)
{
    mask_policy *pol = p->pol;
    for (size_t i = 0; i < pol->num_actions; i++) {
        if (pol->actions[i].type == type && fn_equal(&pol->actions[i].fn, fn)) {
            mask_fn_cleanup(fn);
            *index = (int) i;
            return 0;
        }
    }
    if (pol->num_actions >= (size_t) MAX_RULES * 4) {
        mask_fn_cleanup(fn);
        return dbao_err_set(p->y.err, DBAO_ERANGE, "%s: too many actions", p->y.name);
    }
    if (pol->num_actions == pol->cap_actions) {
        size_t nc = pol->cap_actions ? pol->cap_actions * 2 : 16;
        mask_action *na = dbao_realloc(pol->actions, nc * sizeof(*na));
        if (na == NULL) {
            mask_fn_cleanup(fn);
            return oom(p);
        }
        pol->actions = na;
        pol->cap_actions = nc;
    }
    pol->actions[pol->num_actions].fn = *fn;
    pol->actions[pol->num_actions].type = type;
    memset(fn, 0, sizeof(*fn));
    *index = (int) pol->num_actions++;
    return 0;
}

/* parse_action: a function spec node; clear allowed only when allow_clear (then index -1). */
static int
parse_action(P *p, const yaml_node_t *n, const char *what, mask_type type, bool allow_clear,
             int *index)
{
    int rc = want_str(p, n, what);
    if (rc != 0)
        return rc;
    mask_fn fn;
    dbao_err e;
    dbao_err_clear(&e);
    if ((rc = mask_fn_parse(&fn, sval(n), n->data.scalar.length, &e)) != 0)
        return fail(p, rc == DBAO_ENOMEM ? rc : DBAO_EFORMAT, n, "%s: %s", what, e.msg);
    if (fn.kind == MASK_FN_CLEAR) {
        mask_fn_cleanup(&fn);
        if (!allow_clear)
            return fail(p, DBAO_EFORMAT, n, "%s: 'clear' is only allowed as a role override", what);
        *index = -1;
        return 0;
    }
    if (fn.key_id[0]) {
        /* the keyring is private to func.c: probe it by applying to an empty value */
        dbao_buf tmp = {0};
        dbao_err ke;
        dbao_err_clear(&ke);
        int krc = 0;
        if (fn.kind == MASK_FN_NOISE)
            krc = mask_fn_apply(&fn, type, p->pol->keys, "0", 1, &tmp, &ke);
        else
            krc = mask_fn_apply(&fn, type, p->pol->keys, "", 0, &tmp, &ke);
        dbao_buf_free(&tmp);
        if (krc == DBAO_EKEY) {
            char kid[MASK_KEY_ID_MAX + 1];
            memcpy(kid, fn.key_id, sizeof(kid));
            mask_fn_cleanup(&fn);
            return fail(p, DBAO_EFORMAT, n, "%s: key '%s' is unknown or unfit (%s)", what, kid,
                        ke.msg);
        }
    }
    return add_action(p, &fn, type, index);
}

/* ---- sections ---------------------------------------------------------------------------- */

static int
key_pair(P *p, yaml_node_t *k, yaml_node_t *v, void *ctx)
{
    (void) ctx;
    const char *id = sval(k);
    size_t il = strlen(id);
    bool ok = il <= MASK_KEY_ID_MAX;
    for (size_t i = 0; ok && i < il; i++)
        ok = (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
             (id[i] >= '0' && id[i] <= '9') || id[i] == '_' || id[i] == '.' || id[i] == '-';
    if (!ok)
        return fail(p, DBAO_EFORMAT, k, "bad key id (want [A-Za-z0-9_.-]{1,64})");
    int rc = want_str(p, v, "'keys'");
    if (rc != 0)
        return rc;
    const char *path = sval(v);
    char *full = NULL;
    if (path[0] != '/' && p->y.base != NULL) {
        size_t pl = strlen(path), bl = strlen(p->y.base);
        full = dbao_malloc(bl + 1 + pl + 1);
        if (full == NULL)
            return oom(p);
        memcpy(full, p->y.base, bl);
        full[bl] = '/';
        memcpy(full + bl + 1, path, pl + 1);
    }
    dbao_err e;
    dbao_err_clear(&e);
    rc = mask_keyring_load_file(p->pol->keys, id, full ? full : path, &e);
    dbao_free(full);
    if (rc != 0)
        return fail(p, rc == DBAO_ENOMEM ? rc : DBAO_EINVAL, v, "key '%s': %s", id, e.msg);
    return 0;
}

static int
parse_detect(P *p, yaml_node_t *n, char **prefixes)
{
    static const char *const keys[] = {"types", "mobile_prefixes"};
    yaml_node_t *v[2];
    int rc = fields(p, n, "'detect'", keys, 2, v);
    if (rc != 0)
        return rc;
    if (v[0]) {
        if (v[0]->type != YAML_SEQUENCE_NODE)
            return fail(p, DBAO_EFORMAT, v[0], "'detect.types' must be a list of type names");
        uint32_t set = 0;
        for (yaml_node_item_t *it = v[0]->data.sequence.items.start;
             it < v[0]->data.sequence.items.top; it++) {
            yaml_node_t *t;
            if ((rc = node(p, *it, v[0], &t)) != 0)
                return rc;
            if ((rc = want_str(p, t, "'detect.types'")) != 0)
                return rc;
            mask_type ty;
            if (mask_type_parse(sval(t), strlen(sval(t)), &ty) != 0 || ty == MASK_T_NONE)
                return fail(p, DBAO_EFORMAT, t, "unknown type '%.64s' in 'detect.types'", sval(t));
            if (set & MASK_TYPE_BIT(ty))
                return fail(p, DBAO_EFORMAT, t, "duplicate type '%s' in 'detect.types'", sval(t));
            set |= MASK_TYPE_BIT(ty);
        }
        if (set == 0)
            return fail(p, DBAO_EFORMAT, v[0], "'detect.types' must not be empty");
        p->pol->detect_types = set;
    }
    if (v[1]) {
        if ((rc = want_str(p, v[1], "'detect.mobile_prefixes'")) != 0)
            return rc;
        const char *s = sval(v[1]);
        p->prefix_node = v[1]; /* checked by mask_detector_new */
        *prefixes = strdup(s);
        if (*prefixes == NULL)
            return oom(p);
    }
    return 0;
}

static int
parse_roles(P *p, yaml_node_t *n, mask_rule *r, const char *ctx)
{
    if (n->type != YAML_MAPPING_NODE)
        return fail(p, DBAO_EFORMAT, n, "'roles' must be a mapping (role: function) in %s", ctx);
    size_t c = (size_t) (n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (c == 0)
        return fail(p, DBAO_EFORMAT, n, "'roles' must not be empty in %s", ctx);
    if (c > MAX_ROLES)
        return fail(p, DBAO_EFORMAT, n, "'roles': more than %d roles in %s", MAX_ROLES, ctx);
    r->roles = dbao_calloc(c, sizeof(char *));
    r->role_actions = dbao_calloc(c, sizeof(int));
    if (r->roles == NULL || r->role_actions == NULL)
        return oom(p);
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn, *vn;
        int rc = node(p, pr->key, n, &kn);
        if (rc != 0)
            return rc;
        if (kn->type != YAML_SCALAR_NODE || !role_ok(sval(kn)))
            return fail(p, DBAO_EFORMAT, kn,
                        "bad role name in %s (want [A-Za-z_][A-Za-z0-9_$.-]{0,62})", ctx);
        for (size_t i = 0; i < r->num_roles; i++)
            if (strcmp(r->roles[i], sval(kn)) == 0)
                return fail(p, DBAO_EFORMAT, kn, "duplicate role '%s' in %s", sval(kn), ctx);
        if ((rc = node(p, pr->value, n, &vn)) != 0)
            return rc;
        int idx;
        char what[160];
        snprintf(what, sizeof(what), "role '%s' in %s", sval(kn), ctx);
        if ((rc = parse_action(p, vn, what, r->type, true, &idx)) != 0)
            return rc;
        r->roles[r->num_roles] = strdup(sval(kn));
        if (r->roles[r->num_roles] == NULL)
            return oom(p);
        r->role_actions[r->num_roles++] = idx;
    }
    return 0;
}

static int
parse_pred(P *p, yaml_node_t *n, mask_pred *out)
{
    int rc = want_str(p, n, "'predicates'");
    if (rc != 0)
        return rc;
    if (strcmp(sval(n), "equality") == 0)
        *out = MASK_PRED_EQUALITY;
    else if (strcmp(sval(n), "allow") == 0)
        *out = MASK_PRED_ALLOW;
    else if (strcmp(sval(n), "deny") == 0)
        *out = MASK_PRED_DENY;
    else
        return fail(p, DBAO_EFORMAT, n, "'predicates' must be equality, allow or deny");
    return 0;
}

static int
copy_roles(P *p, mask_rule *dst, const mask_rule *src)
{
    if (src->num_roles == 0)
        return 0;
    dst->roles = dbao_calloc(src->num_roles, sizeof(char *));
    dst->role_actions = dbao_calloc(src->num_roles, sizeof(int));
    if (dst->roles == NULL || dst->role_actions == NULL)
        return oom(p);
    for (size_t i = 0; i < src->num_roles; i++) {
        dst->roles[i] = strdup(src->roles[i]);
        if (dst->roles[i] == NULL)
            return oom(p);
        dst->role_actions[i] = src->role_actions[i];
        dst->num_roles++;
    }
    return 0;
}

/* parse_rule: a type rule (is_type) or a column/field rule */
static int
parse_rule(P *p, yaml_node_t *n, mask_rule *r, bool is_type, const char *ctx)
{
    static const char *const keys[] = {"mask", "roles", "predicates", "type"};
    yaml_node_t *v[4];
    int rc = fields(p, n, ctx, keys, is_type ? 3 : 4, v);
    if (rc != 0)
        return rc;
    if (!is_type) {
        r->type = MASK_T_NONE;
        if (v[3]) {
            if ((rc = want_str(p, v[3], "'type'")) != 0)
                return rc;
            mask_type t;
            if (mask_type_parse(sval(v[3]), strlen(sval(v[3])), &t) != 0)
                return fail(p, DBAO_EFORMAT, v[3], "unknown type '%.64s' in %s", sval(v[3]), ctx);
            r->type = t;
        }
    }
    const mask_rule *tr = &p->pol->type_rules[r->type];
    char what[160];
    snprintf(what, sizeof(what), "'mask' in %s", ctx);
    if (v[0]) {
        if ((rc = parse_action(p, v[0], what, r->type, false, &r->action)) != 0)
            return rc;
    } else if (!is_type) {
        r->action = tr->action;
    }
    if (v[1]) {
        if ((rc = parse_roles(p, v[1], r, ctx)) != 0)
            return rc;
    } else if (!is_type && (rc = copy_roles(p, r, tr)) != 0) {
        return rc;
    }
    if (v[2]) {
        if ((rc = parse_pred(p, v[2], &r->predicates)) != 0)
            return rc;
    } else if (!is_type) {
        r->predicates = tr->predicates;
    }
    return 0;
}

static int
type_pair(P *p, yaml_node_t *k, yaml_node_t *v, void *ctx)
{
    (void) ctx;
    mask_type t;
    if (mask_type_parse(sval(k), strlen(sval(k)), &t) != 0)
        return fail(p, DBAO_EFORMAT, k, "unknown type '%.64s' in 'types'", sval(k));
    char c[96];
    snprintf(c, sizeof(c), "type '%s'", sval(k));
    return parse_rule(p, v, &p->pol->type_rules[t], true, c);
}

static int
data_type_pair(P *p, yaml_node_t *k, yaml_node_t *v, void *ctx)
{
    (void) ctx;
    mask_policy *pol = p->pol;
    if (!dotted(sval(k), 1, 2, false))
        return fail(p, DBAO_EFORMAT, k, "bad data type name in 'data_types'");
    if (pol->num_data_types >= 4096)
        return fail(p, DBAO_EFORMAT, k, "more than 4096 entries in 'data_types'");
    int rc = want_str(p, v, "'data_types'");
    if (rc != 0)
        return rc;
    mask_type t;
    if (mask_type_parse(sval(v), strlen(sval(v)), &t) != 0 || t == MASK_T_NONE)
        return fail(p, DBAO_EFORMAT, v, "unknown type '%.64s' in 'data_types'", sval(v));
    data_type *nd = dbao_realloc(pol->data_types, (pol->num_data_types + 1) * sizeof(*nd));
    if (nd == NULL)
        return oom(p);
    pol->data_types = nd;
    nd[pol->num_data_types].name = strdup(sval(k));
    if (nd[pol->num_data_types].name == NULL)
        return oom(p);
    nd[pol->num_data_types++].type = t;
    return 0;
}

static int
parse_functions(P *p, yaml_node_t *n)
{
    mask_policy *pol = p->pol;
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(p, DBAO_EFORMAT, n, "'allow_functions' must be a list");
    size_t c = (size_t) (n->data.sequence.items.top - n->data.sequence.items.start);
    if (c > MAX_RULES)
        return fail(p, DBAO_EFORMAT, n, "'allow_functions': too many entries");
    pol->functions = dbao_calloc(c ? c : 1, sizeof(char *));
    if (pol->functions == NULL)
        return oom(p);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *f;
        int rc = node(p, *it, n, &f);
        if (rc != 0)
            return rc;
        if ((rc = want_str(p, f, "'allow_functions'")) != 0)
            return rc;
        if (!dotted(sval(f), 1, 2, false))
            return fail(p, DBAO_EFORMAT, f,
                        "bad function name in 'allow_functions' (want name or schema.name)");
        pol->functions[pol->num_functions] = strdup(sval(f));
        if (pol->functions[pol->num_functions] == NULL)
            return oom(p);
        pol->num_functions++;
    }
    return 0;
}

/* ---- lookup table ------------------------------------------------------------------------ */

static uint64_t
hash_key(uint8_t kind, const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ kind;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char) s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static const mask_rule *
table_find(const mask_policy *pol, uint8_t kind, const char *s, size_t len)
{
    if (pol->table_size == 0)
        return NULL;
    size_t mask = pol->table_size - 1;
    for (size_t i = (size_t) hash_key(kind, s, len) & mask;; i = (i + 1) & mask) {
        uint32_t v = pol->table[i];
        if (v == 0)
            return NULL;
        const mask_rule *r = &pol->rules[v - 1];
        if (pol->kinds[v - 1] == kind && strlen(r->target) == len && memcmp(r->target, s, len) == 0)
            return r;
    }
}

typedef struct rules_ctx {
    uint8_t kind;
} rules_ctx;

static int
rule_pair(P *p, yaml_node_t *k, yaml_node_t *v, void *vctx)
{
    rules_ctx *rc_ = vctx;
    mask_policy *pol = p->pol;
    const char *t = sval(k);
    if (rc_->kind == RULE_COLUMN ? !dotted(t, 2, 3, false) : !dotted(t, 1, 64, true))
        return fail(p, DBAO_EFORMAT, k,
                    rc_->kind == RULE_COLUMN
                        ? "bad column name (want table.column or schema.table.column)"
                        : "bad field path (want dot-joined object keys)");
    if (table_find(pol, rc_->kind, t, strlen(t)) != NULL)
        return fail(p, DBAO_EFORMAT, k, "duplicate %s '%.100s'",
                    rc_->kind == RULE_COLUMN ? "column" : "field", t);
    mask_rule *r = &pol->rules[pol->num_rules];
    memset(r, 0, sizeof(*r));
    pol->kinds[pol->num_rules] = rc_->kind;
    pol->num_rules++; /* from here on freed with the policy */
    r->target = strdup(t);
    if (r->target == NULL)
        return oom(p);
    size_t mask = pol->table_size - 1;
    size_t i = (size_t) hash_key(rc_->kind, t, strlen(t)) & mask;
    while (pol->table[i] != 0)
        i = (i + 1) & mask;
    pol->table[i] = (uint32_t) pol->num_rules;
    char c[160];
    snprintf(c, sizeof(c), "%s '%.100s'", rc_->kind == RULE_COLUMN ? "column" : "field", t);
    return parse_rule(p, v, r, false, c);
}

static int
parse_rules(P *p, yaml_node_t *n, uint8_t kind)
{
    rules_ctx c = {kind};
    return each_pair(p, n, kind == RULE_COLUMN ? "columns" : "fields", rule_pair, &c, false);
}

/* ---- top level --------------------------------------------------------------------------- */

static int
parse_top(P *p, yaml_node_t *root)
{
    static const char *const keys[] = {"keys",       "detect",  "derived", "types",
                                       "data_types", "columns", "fields",  "allow_functions"};
    enum { K_KEYS, K_DETECT, K_DERIVED, K_TYPES, K_DATA, K_COLUMNS, K_FIELDS, K_FUNCS, K_N };
    yaml_node_t *v[K_N];
    mask_policy *pol = p->pol;
    int rc = fields(p, root, "the policy", keys, K_N, v);
    if (rc != 0)
        return rc;
    if (v[K_KEYS] && (rc = each_pair(p, v[K_KEYS], "keys", key_pair, NULL, true)) != 0)
        return rc;
    char *prefixes = NULL;
    if (v[K_DETECT] && (rc = parse_detect(p, v[K_DETECT], &prefixes)) != 0) {
        free(prefixes);
        return rc;
    }
    mask_detect_opts o = {.types = pol->detect_types, .mobile_prefixes = prefixes, .today = 0};
    dbao_err e;
    dbao_err_clear(&e);
    rc = mask_detector_new(&pol->det, &o, &e);
    free(prefixes);
    if (rc != 0)
        return fail(p, rc == DBAO_ENOMEM ? rc : DBAO_EFORMAT,
                    p->prefix_node ? p->prefix_node
                    : v[K_DETECT]  ? v[K_DETECT]
                                   : root,
                    "%s", e.msg);
    /* the default actions of every type first, so they have the low indexes */
    for (int t = 0; t < MASK_T_COUNT; t++) {
        mask_fn fn;
        memset(&fn, 0, sizeof(fn));
        if (t == MASK_T_NONE) {
            if ((rc = mask_fn_parse(&fn, DEFAULT_DERIV, strlen(DEFAULT_DERIV), p->y.err)) != 0)
                return rc;
        } else {
            fn.kind = MASK_FN_DEFAULT;
        }
        pol->type_rules[t].type = (mask_type) t;
        pol->type_rules[t].predicates = MASK_PRED_EQUALITY;
        pol->type_rules[t].target = strdup(mask_type_name((mask_type) t));
        if (pol->type_rules[t].target == NULL) {
            mask_fn_cleanup(&fn);
            return oom(p);
        }
        if ((rc = add_action(p, &fn, (mask_type) t, &pol->type_rules[t].action)) != 0)
            return rc;
    }
    pol->derived = pol->type_rules[MASK_T_NONE].action;
    if (v[K_DERIVED] &&
        (rc = parse_action(p, v[K_DERIVED], "'derived'", MASK_T_NONE, false, &pol->derived)) != 0)
        return rc;
    if (v[K_TYPES] && (rc = each_pair(p, v[K_TYPES], "types", type_pair, NULL, true)) != 0)
        return rc;
    if (v[K_DATA] && (rc = each_pair(p, v[K_DATA], "data_types", data_type_pair, NULL, true)) != 0)
        return rc;
    if (v[K_FUNCS] && (rc = parse_functions(p, v[K_FUNCS])) != 0)
        return rc;
    size_t nr = 0;
    if (v[K_COLUMNS]) {
        if (v[K_COLUMNS]->type != YAML_MAPPING_NODE)
            return fail(p, DBAO_EFORMAT, v[K_COLUMNS], "'columns' must be a mapping");
        nr += (size_t) (v[K_COLUMNS]->data.mapping.pairs.top -
                        v[K_COLUMNS]->data.mapping.pairs.start);
    }
    if (v[K_FIELDS]) {
        if (v[K_FIELDS]->type != YAML_MAPPING_NODE)
            return fail(p, DBAO_EFORMAT, v[K_FIELDS], "'fields' must be a mapping");
        nr +=
            (size_t) (v[K_FIELDS]->data.mapping.pairs.top - v[K_FIELDS]->data.mapping.pairs.start);
    }
    if (nr > MAX_RULES)
        return fail(p, DBAO_EFORMAT, root, "more than %d rules", MAX_RULES);
    pol->rules = dbao_calloc(nr ? nr : 1, sizeof(mask_rule));
    pol->kinds = dbao_calloc(nr ? nr : 1, 1);
    size_t sz = 16;
    while (sz < nr * 2)
        sz *= 2;
    pol->table = dbao_calloc(sz, sizeof(uint32_t));
    if (pol->rules == NULL || pol->kinds == NULL || pol->table == NULL)
        return oom(p);
    pol->table_size = sz;
    if (v[K_COLUMNS] && (rc = parse_rules(p, v[K_COLUMNS], RULE_COLUMN)) != 0)
        return rc;
    pol->num_columns = pol->num_rules;
    if (v[K_FIELDS] && (rc = parse_rules(p, v[K_FIELDS], RULE_FIELD)) != 0)
        return rc;
    return 0;
}

static int
parse_doc(P *p, const char *yaml, size_t len, const char *name, dbao_err *err)
{
    int rc = dbao_yaml_load(&p->y, yaml, len, name, err);
    if (rc == 0 && p->y.root == NULL)
        rc = dbao_err_set(err, DBAO_EFORMAT, "%s:1: empty policy", name);
    if (rc == 0)
        rc = parse_top(p, p->y.root);
    dbao_yaml_free(&p->y);
    return rc;
}

int
mask_policy_parse(mask_policy **out, const char *text, size_t len, const char *name, dbao_err *err)
{
    if (out == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "mask_policy_parse: out is NULL");
    *out = NULL;
    if (text == NULL && len > 0)
        return dbao_err_set(err, DBAO_EINVAL, "mask_policy_parse: text is NULL");
    P p = {0};
    name = name ? name : "policy";
    p.y.name = name;
    p.y.err = err;
    if (len > MAX_FILE)
        return dbao_err_set(err, DBAO_ERANGE, "%s: policy larger than %u bytes", name, MAX_FILE);
    mask_policy *pol = dbao_calloc(1, sizeof(*pol));
    if (pol == NULL)
        return oom(&p);
    pol->detect_types = MASK_TYPES_DEFAULT;
    p.pol = pol;
    int rc = mask_keyring_new(&pol->keys);
    if (rc != 0) {
        mask_policy_free(pol);
        return oom(&p);
    }
    rc = parse_doc(&p, text ? text : "", len, name, err);
    if (rc != 0) {
        mask_policy_free(pol);
        return rc;
    }
    *out = pol;
    return 0;
}

int
mask_policy_load(mask_policy **out, const char *path, dbao_err *err)
{
    if (out == NULL || path == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "mask_policy_load: NULL argument");
    *out = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = dbao_file_read(&data, &len, path, MAX_FILE, err);
    if (rc != 0)
        return rc;
    rc = mask_policy_parse(out, (const char *) data, len, path, err);
    dbao_free(data);
    return rc;
}

static void
rule_free(mask_rule *r)
{
    free(r->target);
    for (size_t i = 0; i < r->num_roles; i++)
        free(r->roles[i]);
    dbao_free(r->roles);
    dbao_free(r->role_actions);
}

void
mask_policy_free(mask_policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->num_actions; i++)
        mask_fn_cleanup(&p->actions[i].fn);
    dbao_free(p->actions);
    for (int t = 0; t < MASK_T_COUNT; t++)
        rule_free(&p->type_rules[t]);
    for (size_t i = 0; i < p->num_rules; i++)
        rule_free(&p->rules[i]);
    dbao_free(p->rules);
    dbao_free(p->kinds);
    dbao_free(p->table);
    for (size_t i = 0; i < p->num_data_types; i++)
        free(p->data_types[i].name);
    dbao_free(p->data_types);
    for (size_t i = 0; i < p->num_functions; i++)
        free(p->functions[i]);
    dbao_free(p->functions);
    mask_detector_free(p->det);
    mask_keyring_free(p->keys);
    dbao_free(p);
}

/* ---- queries ----------------------------------------------------------------------------- */

const mask_keyring *
mask_policy_keys(const mask_policy *p)
{
    return p ? p->keys : NULL;
}

const mask_detector *
mask_policy_detector(const mask_policy *p)
{
    return p ? p->det : NULL;
}

size_t
mask_policy_num_actions(const mask_policy *p)
{
    return p ? p->num_actions : 0;
}

const mask_action *
mask_policy_action(const mask_policy *p, size_t index)
{
    return p && index < p->num_actions ? &p->actions[index] : NULL;
}

int
mask_policy_derived_action(const mask_policy *p)
{
    return p->derived;
}

const mask_rule *
mask_policy_type_rule(const mask_policy *p, mask_type t)
{
    if ((unsigned) t >= MASK_T_COUNT)
        t = MASK_T_NONE;
    return &p->type_rules[t];
}

uint32_t
mask_policy_detect_types(const mask_policy *p)
{
    return p ? p->detect_types : MASK_TYPES_DEFAULT;
}

const mask_rule *
mask_policy_column(const mask_policy *p, const char *schema, const char *table, const char *column)
{
    if (p == NULL || table == NULL || column == NULL)
        return NULL;
    size_t sl = schema ? strlen(schema) : 0, tl = strlen(table), cl = strlen(column);
    char stackbuf[256];
    size_t need = sl + tl + cl + 3;
    char *b = need <= sizeof(stackbuf) ? stackbuf : malloc(need);
    if (b == NULL)
        return NULL;
    const mask_rule *r = NULL;
    size_t o = 0;
    if (schema && sl) {
        memcpy(b, schema, sl);
        b[sl] = '.';
        o = sl + 1;
    }
    memcpy(b + o, table, tl);
    b[o + tl] = '.';
    memcpy(b + o + tl + 1, column, cl);
    size_t total = o + tl + 1 + cl;
    if (o > 0)
        r = table_find(p, RULE_COLUMN, b, total);
    if (r == NULL)
        r = table_find(p, RULE_COLUMN, b + o, total - o);
    if (b != stackbuf)
        free(b);
    return r;
}

const mask_rule *
mask_policy_field(const mask_policy *p, const char *path, size_t len)
{
    if (p == NULL || path == NULL)
        return NULL;
    return table_find(p, RULE_FIELD, path, len);
}

size_t
mask_policy_num_rules(const mask_policy *p)
{
    return p ? p->num_rules : 0;
}

const mask_rule *
mask_policy_rule(const mask_policy *p, size_t index)
{
    return p && index < p->num_rules ? &p->rules[index] : NULL;
}

mask_type
mask_policy_data_type(const mask_policy *p, const char *type_name)
{
    if (p == NULL || type_name == NULL)
        return MASK_T_NONE;
    for (size_t i = 0; i < p->num_data_types; i++)
        if (strcmp(p->data_types[i].name, type_name) == 0)
            return p->data_types[i].type;
    return MASK_T_NONE;
}

bool
mask_policy_function_allowed(const mask_policy *p, const char *schema, const char *name)
{
    if (p == NULL || name == NULL)
        return false;
    size_t sl = schema ? strlen(schema) : 0;
    for (size_t i = 0; i < p->num_functions; i++) {
        const char *f = p->functions[i];
        const char *dot = strchr(f, '.');
        if (dot == NULL) {
            if (strcmp(f, name) == 0)
                return true;
        } else if (schema != NULL && (size_t) (dot - f) == sl && memcmp(f, schema, sl) == 0 &&
                   strcmp(dot + 1, name) == 0) {
            return true;
        }
    }
    return false;
}

int
mask_rule_action_for(const mask_rule *r, const char *const *roles, size_t num_roles)
{
    if (r == NULL)
        return 0;
    int found = INT32_MIN;
    for (size_t i = 0; i < r->num_roles; i++) {
        for (size_t j = 0; j < num_roles; j++) {
            if (roles[j] != NULL && strcmp(r->roles[i], roles[j]) == 0) {
                if (r->role_actions[i] < 0)
                    return -1;
                if (found == INT32_MIN)
                    found = r->role_actions[i];
            }
        }
    }
    return found != INT32_MIN ? found : r->action;
}
