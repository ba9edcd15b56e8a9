/* rbac.c: role-based access control for the gateway: a YAML policy compiled into one segment
 * trie per role, immutable and shared by every worker thread, swapped atomically.
 *
 * Policy text (docs/zt-policy.md has the full reference):
 *
 *     version: 1                      # optional, must be 1
 *     roles:
 *       doctor:
 *         - id: read-patients         # optional; default "<role>#<n>"
 *           methods: [GET, HEAD]      # or "*"
 *           path: /patients/{id}      # exact, "*", "{name}", a last "**"
 *           route: emr                # optional: only requests on this gateway route
 *           effect: allow             # allow (default) or deny
 *       "*":                          # rules for every request, whatever its roles
 *         - {effect: deny, methods: "*", path: "/internal/+"}   ("+" stands for "**")
 *
 * Parsing is strict in the style of src/gateway/config.c (unknown or duplicate keys, wrong
 * node kinds, aliases, a second document, unknown methods, malformed patterns, duplicate rule
 * ids: each an error "name:line: message"), because a typo in an access policy silently opens
 * or closes a door. The loader takes (text, len, name) so that the same text can come from a
 * file or an etcd value.
 *
 * Compiled form: each role has a trie whose edges are pattern segments: literal children in a
 * sorted array (binary search by length, then bytes), one wildcard child shared by "*" and
 * "{name}" (both match one non-empty segment), and at each node two rule lists: rules whose
 * pattern ends there, and rules whose pattern continues with "**" (which match on reaching the
 * node, whatever follows, including nothing). Rule lists hold rule indices in text order, so
 * the first rule of a list that passes the method and route test is the earliest one there.
 *
 * Matching walks the trie of each of the request's roles and of the role "*" with the path's
 * segments (split on '/', so "/" is one empty segment and "/a/" is "a" then ""). Each trie
 * node corresponds to one pattern prefix and is compared with one path segment only, so a walk
 * visits every node at most once however many wildcards the patterns hold: the cost is bounded
 * by the trie size and the path length, and nothing is allocated. The decision: the earliest
 * matching deny rule if any, else the earliest matching allow rule, else default deny.
 *
 * Paths: the gateway hands over gw_path_normalize's output. zt_rbac_check first verifies that
 * the path is such a fixpoint (no "//", no "." or ".." segment, escapes only in upper-case hex
 * and only for reserved bytes, no '\' or control byte) and denies anything else outright: a
 * trick path can then neither dodge a deny rule nor borrow an allow rule. Matching is
 * byte-exact and case-sensitive, with no second percent-decoding ("/Admin" is not "/admin").
 * Patterns obey the same form, so a pattern can never need an input the gateway cannot send.
 *
 * Lifetime: the policy is reference-counted with C11 atomics; a zt_rbac_slot is the hot-swap
 * point (a mutex for the writer and for readers that refresh, a generation counter that readers
 * poll with one acquire load per request).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "dengbao/yamlcfg.h"
#include "dengbao/zt.h"

#define MAX_ROLES    4096
#define MAX_STR      4096
#define METHODS_ALL  0xffffffffu
#define METHOD_OTHER (1u << 31)

typedef struct rule {
    char *id;
    char *route; /* NULL: any route */
    uint32_t methods;
    uint32_t order; /* index in text order */
    bool deny;
    unsigned long line; /* where the rule starts (for the duplicate-id error) */
} rule;

typedef struct tnode tnode;

typedef struct tedge {
    char *seg;
    size_t len;
    tnode *child;
} tedge;

typedef struct ulist {
    uint32_t *v;
    size_t n, cap;
} ulist;

struct tnode {
    tedge *lit; /* sorted by (len, bytes) */
    size_t num_lit, cap_lit;
    tnode *star;
    ulist end;  /* patterns ending here */
    ulist rest; /* patterns ending here with a final "**" */
};

typedef struct role {
    char *name;
    tnode *root;
} role;

struct zt_rbac {
    atomic_long refs;
    rule *rules;
    size_t num_rules, cap_rules;
    role *roles; /* sorted by name after parsing */
    size_t num_roles;
    const role *any; /* the role "*", or NULL */
};

/* ---- methods ---- */

static const char *const METHODS[] = {"GET",   "HEAD",    "POST",  "PUT",    "DELETE",
                                      "PATCH", "OPTIONS", "TRACE", "CONNECT"};

static uint32_t
method_bit(const char *m)
{
    for (size_t i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]); i++) {
        if (strcmp(m, METHODS[i]) == 0) {
            return 1u << i;
        }
    }
    return METHOD_OTHER;
}

/* ---- paths ---- */

static int
hexu(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static bool
unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

bool
zt_rbac_path_is_normalized(const char *path)
{
    if (path == NULL || path[0] != '/') {
        return false;
    }
    const unsigned char *p = (const unsigned char *) path + 1;
    const unsigned char *seg = p;
    for (;; p++) {
        unsigned char c = *p;
        if (c == '/' || c == '\0') {
            size_t n = (size_t) (p - seg);
            if (n == 1 && seg[0] == '.') {
                return false;
            }
            if (n == 2 && seg[0] == '.' && seg[1] == '.') {
                return false;
            }
            if (n == 0 && c == '/') {
                return false; /* "//" */
            }
            if (c == '\0') {
                return true;
            }
            seg = p + 1;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c == '\\') {
            return false;
        }
        if (c == '%') {
            int hi = hexu(p[1]);
            int lo = hi >= 0 ? hexu(p[2]) : -1;
            if (hi < 0 || lo < 0) {
                return false;
            }
            unsigned char d = (unsigned char) (hi << 4 | lo);
            if (d == '/' || d == '\\' || d == 0 || unreserved(d)) {
                return false;
            }
            p += 2;
        }
    }
}

/* ---- trie ---- */

static int
ulist_push(ulist *l, uint32_t v)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 2;
        uint32_t *nv = dbao_realloc(l->v, nc * sizeof(*nv));
        if (nv == NULL) {
            return DBAO_ENOMEM;
        }
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = v;
    return 0;
}

static void
tnode_free(tnode *n)
{
    if (n == NULL) {
        return;
    }
    for (size_t i = 0; i < n->num_lit; i++) {
        dbao_free(n->lit[i].seg);
        tnode_free(n->lit[i].child);
    }
    dbao_free(n->lit);
    tnode_free(n->star);
    dbao_free(n->end.v);
    dbao_free(n->rest.v);
    dbao_free(n);
}

static int
seg_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    if (al != bl) {
        return al < bl ? -1 : 1;
    }
    return memcmp(a, b, al);
}

/* lit_find returns the index of the edge (s, len) or, with *found false, where to insert it */
static size_t
lit_find(const tnode *n, const char *s, size_t len, bool *found)
{
    size_t lo = 0, hi = n->num_lit;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = seg_cmp(n->lit[mid].seg, n->lit[mid].len, s, len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = false;
    return lo;
}

static int
tnode_lit_child(tnode *n, const char *s, size_t len, tnode **out)
{
    bool found;
    size_t i = lit_find(n, s, len, &found);
    if (found) {
        *out = n->lit[i].child;
        return 0;
    }
    if (n->num_lit == n->cap_lit) {
        size_t nc = n->cap_lit ? n->cap_lit * 2 : 2;
        tedge *ne = dbao_realloc(n->lit, nc * sizeof(*ne));
        if (ne == NULL) {
            return DBAO_ENOMEM;
        }
        n->lit = ne;
        n->cap_lit = nc;
    }
    char *seg = dbao_malloc(len + 1);
    tnode *child = dbao_calloc(1, sizeof(*child));
    if (seg == NULL || child == NULL) {
        dbao_free(seg);
        dbao_free(child);
        return DBAO_ENOMEM;
    }
    memcpy(seg, s, len);
    seg[len] = '\0';
    memmove(&n->lit[i + 1], &n->lit[i], (n->num_lit - i) * sizeof(*n->lit));
    n->lit[i] = (tedge){seg, len, child};
    n->num_lit++;
    *out = child;
    return 0;
}

/* ---- policy object ---- */

static void
rbac_free(zt_rbac *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->num_rules; i++) {
        dbao_free(p->rules[i].id);
        dbao_free(p->rules[i].route);
    }
    dbao_free(p->rules);
    for (size_t i = 0; i < p->num_roles; i++) {
        dbao_free(p->roles[i].name);
        tnode_free(p->roles[i].root);
    }
    dbao_free(p->roles);
    dbao_free(p);
}

zt_rbac *
zt_rbac_ref(zt_rbac *p)
{
    if (p != NULL) {
        /* Relaxed: taking a reference needs no ordering, the caller already holds one. */
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    }
    return p;
}

void
zt_rbac_unref(zt_rbac *p)
{
    if (p == NULL) {
        return;
    }
    /* Acq_rel: the release orders this thread's reads of the policy before the count drops; the
     * acquire in the thread that drops the last one orders the free after all of them. */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) {
        rbac_free(p);
    }
}

size_t
zt_rbac_num_rules(const zt_rbac *p)
{
    return p ? p->num_rules : 0;
}

/* ---- parser ---- */

typedef struct P {
    dbao_yaml y; /* the document, the file name (y.name), errors (y.err) */
    zt_rbac *pol;
} P;

#define fail(p, ...) dbao_yaml_fail(&(p)->y, __VA_ARGS__)

static unsigned long
line_of(const yaml_node_t *n)
{
    return n ? (unsigned long) n->start_mark.line + 1 : 0;
}
#define is_null(n) dbao_yaml_is_null(n)

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

/* scalar checks that n is a non-null, non-empty string without NUL bytes */
static int
scalar(P *p, const yaml_node_t *n, const char *key, const char *ctx)
{
    if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        return fail(p, DBAO_EFORMAT, n, "'%s' must be a string%s", key, ctx);
    }
    size_t len = n->data.scalar.length;
    if (strlen(sval(n)) != len || len > MAX_STR) {
        return fail(p, DBAO_EFORMAT, n, "'%s': bad or too long value%s", key, ctx);
    }
    if (len == 0) {
        return fail(p, DBAO_EFORMAT, n, "'%s' must not be empty%s", key, ctx);
    }
    return 0;
}

static char *
xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *r = dbao_malloc(n);
    if (r != NULL) {
        memcpy(r, s, n);
    }
    return r;
}

static bool
is_token(const char *s)
{
    /* RFC 9110 tchar */
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0') {
        return false;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && strchr(extra, c) != NULL))) {
            return false;
        }
    }
    return true;
}

static int
parse_methods(P *p, const yaml_node_t *n, const char *ctx, uint32_t *out)
{
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        if (strcmp(sval(n), "*") == 0) {
            *out = METHODS_ALL;
            return 0;
        }
        return fail(p, DBAO_EFORMAT, n, "'methods' must be \"*\" or a list of methods%s", ctx);
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        return fail(p, DBAO_EFORMAT, n, "'methods' must be \"*\" or a list of methods%s", ctx);
    }
    uint32_t m = 0;
    yaml_node_item_t *it = n->data.sequence.items.start;
    if (it == n->data.sequence.items.top) {
        return fail(p, DBAO_EFORMAT, n, "'methods' must not be empty%s", ctx);
    }
    for (; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e;
        int rc = node(p, *it, n, &e);
        if (rc != 0) {
            return rc;
        }
        rc = scalar(p, e, "methods", ctx);
        if (rc != 0) {
            return rc;
        }
        if (strcmp(sval(e), "*") == 0) {
            return fail(p, DBAO_EFORMAT, e, "'*' must be the whole 'methods' value%s", ctx);
        }
        uint32_t b = method_bit(sval(e));
        if (b == METHOD_OTHER) {
            if (!is_token(sval(e))) {
                return fail(p, DBAO_EFORMAT, e, "bad method '%.64s'%s", sval(e), ctx);
            }
            return fail(p, DBAO_EFORMAT, e, "unknown method '%.64s'%s", sval(e), ctx);
        }
        if (m & b) {
            return fail(p, DBAO_EFORMAT, e, "duplicate method '%s'%s", sval(e), ctx);
        }
        m |= b;
    }
    *out = m;
    return 0;
}

static bool
is_param(const char *s, size_t len)
{
    if (len < 3 || s[0] != '{' || s[len - 1] != '}') {
        return false;
    }
    for (size_t i = 1; i + 1 < len; i++) {
        unsigned char c = (unsigned char) s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!(alpha || (i > 1 && c >= '0' && c <= '9'))) {
            return false;
        }
    }
    return true;
}

/* insert_pattern checks `pat` and adds rule `ri` to `root` */
static int
insert_pattern(P *p, const yaml_node_t *n, tnode *root, const char *pat, uint32_t ri,
               const char *ctx)
{
    if (!zt_rbac_path_is_normalized(pat)) {
        return fail(p, DBAO_EFORMAT, n,
                    "path '%.128s' is not a normalised path (it must start with '/' and "
                    "have no "
                    "'//', '.' or '..' segments, or lower-case or needless escapes)%s",
                    pat, ctx);
    }
    tnode *cur = root;
    const char *s = pat + 1;
    size_t depth = 0;
    for (;;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t) (e - s) : strlen(s);
        if (++depth > ZT_RBAC_MAX_DEPTH) {
            return fail(p, DBAO_EFORMAT, n, "path '%.128s' has more than %d segments%s", pat,
                        ZT_RBAC_MAX_DEPTH, ctx);
        }
        if (len == 2 && s[0] == '*' && s[1] == '*') {
            if (e != NULL) {
                return fail(p, DBAO_EFORMAT, n, "'**' must be the last segment in '%.128s'%s", pat,
                            ctx);
            }
            return ulist_push(&cur->rest, ri) == 0 ? 0 : oom(p);
        }
        if ((len == 1 && s[0] == '*') || is_param(s, len)) {
            if (cur->star == NULL) {
                cur->star = dbao_calloc(1, sizeof(*cur->star));
                if (cur->star == NULL) {
                    return oom(p);
                }
            }
            cur = cur->star;
        } else {
            for (size_t i = 0; i < len; i++) {
                if (s[i] == '*' || s[i] == '{' || s[i] == '}') {
                    return fail(p, DBAO_EFORMAT, n,
                                "bad segment '%.*s' in '%.128s' ('*', '**' and '{name}' must be "
                                "whole segments)%s",
                                (int) (len > 64 ? 64 : len), s, pat, ctx);
                }
            }
            if (tnode_lit_child(cur, s, len, &cur) != 0) {
                return oom(p);
            }
        }
        if (e == NULL) {
            return ulist_push(&cur->end, ri) == 0 ? 0 : oom(p);
        }
        s = e + 1;
    }
}

static int
rule_ptr_cmp(const void *a, const void *b)
{
    const rule *x = *(const rule *const *) a, *y = *(const rule *const *) b;
    int c = strcmp(x->id, y->id);
    if (c != 0) {
        return c;
    }
    return x->order < y->order ? -1 : x->order > y->order;
}

/* check_ids refuses duplicate rule ids, naming the first rule (in text order) that repeats an
 * earlier id: sorted once, O(n log n) even for the largest policies */
static int
check_ids(P *p)
{
    zt_rbac *pol = p->pol;
    if (pol->num_rules < 2) {
        return 0;
    }
    const rule **v = dbao_malloc(pol->num_rules * sizeof(*v));
    if (v == NULL) {
        return oom(p);
    }
    for (size_t i = 0; i < pol->num_rules; i++) {
        v[i] = &pol->rules[i];
    }
    qsort(v, pol->num_rules, sizeof(*v), rule_ptr_cmp);
    const rule *dup = NULL;
    for (size_t i = 1; i < pol->num_rules; i++) {
        if (strcmp(v[i]->id, v[i - 1]->id) == 0 && (dup == NULL || v[i]->order < dup->order)) {
            dup = v[i];
        }
    }
    dbao_free(v);
    if (dup != NULL) {
        return dbao_err_set(p->y.err, DBAO_EFORMAT, "%s:%lu: duplicate rule id '%.64s'", p->y.name,
                            dup->line, dup->id);
    }
    return 0;
}

static int
parse_rule(P *p, const yaml_node_t *m, role *ro, size_t nth)
{
    static const char *const keys[] = {"id", "effect", "methods", "path", "route", "description"};
    enum { K_ID, K_EFFECT, K_METHODS, K_PATH, K_ROUTE, K_DESC, NK };
    yaml_node_t *v[NK] = {0};
    char ctx[128];
    snprintf(ctx, sizeof(ctx), " in rule %zu of role '%.64s'", nth, ro->name);
    if (m->type != YAML_MAPPING_NODE) {
        return fail(p, DBAO_EFORMAT, m, "a rule must be a mapping%s", ctx);
    }
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn, *vn;
        int rc = node(p, pr->key, m, &kn);
        if (rc != 0) {
            return rc;
        }
        if (kn->type != YAML_SCALAR_NODE) {
            return fail(p, DBAO_EFORMAT, kn, "keys must be strings%s", ctx);
        }
        size_t k = 0;
        while (k < NK && strcmp(keys[k], sval(kn)) != 0) {
            k++;
        }
        if (k == NK) {
            return fail(p, DBAO_EFORMAT, kn, "unknown key '%.64s'%s", sval(kn), ctx);
        }
        if (v[k] != NULL) {
            return fail(p, DBAO_EFORMAT, kn, "duplicate key '%s'%s", keys[k], ctx);
        }
        rc = node(p, pr->value, m, &vn);
        if (rc != 0) {
            return rc;
        }
        v[k] = vn;
    }
    if (v[K_PATH] == NULL) {
        return fail(p, DBAO_EFORMAT, m, "missing 'path'%s", ctx);
    }
    if (v[K_METHODS] == NULL) {
        return fail(p, DBAO_EFORMAT, m, "missing 'methods'%s", ctx);
    }
    zt_rbac *pol = p->pol;
    if (pol->num_rules >= ZT_RBAC_MAX_RULES) {
        return fail(p, DBAO_ERANGE, m, "more than %d rules", ZT_RBAC_MAX_RULES);
    }
    rule r = {0};
    int rc;
    if (v[K_DESC] != NULL && (rc = scalar(p, v[K_DESC], "description", ctx)) != 0) {
        return rc;
    }
    if (v[K_EFFECT] != NULL) {
        if ((rc = scalar(p, v[K_EFFECT], "effect", ctx)) != 0) {
            return rc;
        }
        if (strcmp(sval(v[K_EFFECT]), "deny") == 0) {
            r.deny = true;
        } else if (strcmp(sval(v[K_EFFECT]), "allow") != 0) {
            return fail(p, DBAO_EFORMAT, v[K_EFFECT],
                        "'effect' must be allow or deny, not '%.64s'%s", sval(v[K_EFFECT]), ctx);
        }
    }
    if ((rc = parse_methods(p, v[K_METHODS], ctx, &r.methods)) != 0) {
        return rc;
    }
    if ((rc = scalar(p, v[K_PATH], "path", ctx)) != 0) {
        return rc;
    }
    if (v[K_ROUTE] != NULL) {
        if ((rc = scalar(p, v[K_ROUTE], "route", ctx)) != 0) {
            return rc;
        }
    }
    if (v[K_ID] != NULL) {
        if ((rc = scalar(p, v[K_ID], "id", ctx)) != 0) {
            return rc;
        }
        if (strlen(sval(v[K_ID])) > 256) {
            return fail(p, DBAO_EFORMAT, v[K_ID], "'id' is longer than 256 bytes%s", ctx);
        }
        if (strcmp(sval(v[K_ID]), ZT_RBAC_RULE_DEFAULT) == 0 ||
            strcmp(sval(v[K_ID]), ZT_RBAC_RULE_BAD_PATH) == 0) {
            return fail(p, DBAO_EFORMAT, v[K_ID], "'id' '%s' is reserved%s", sval(v[K_ID]), ctx);
        }
        r.id = xstrdup(sval(v[K_ID]));
    } else {
        char buf[128];
        snprintf(buf, sizeof(buf), "%.64s#%zu", ro->name, nth);
        r.id = xstrdup(buf);
    }
    if (r.id == NULL) {
        return oom(p);
    }
    r.line = line_of(v[K_ID] ? v[K_ID] : m);
    if (v[K_ROUTE] != NULL && (r.route = xstrdup(sval(v[K_ROUTE]))) == NULL) {
        dbao_free(r.id);
        return oom(p);
    }
    if (pol->num_rules == pol->cap_rules) {
        size_t nc = pol->cap_rules ? pol->cap_rules * 2 : 16;
        rule *nr = dbao_realloc(pol->rules, nc * sizeof(*nr));
        if (nr == NULL) {
            dbao_free(r.id);
            dbao_free(r.route);
            return oom(p);
        }
        pol->rules = nr;
        pol->cap_rules = nc;
    }
    r.order = (uint32_t) pol->num_rules;
    pol->rules[pol->num_rules++] = r;
    return insert_pattern(p, v[K_PATH], ro->root, sval(v[K_PATH]), r.order, ctx);
}

static int
role_cmp(const void *a, const void *b)
{
    return strcmp(((const role *) a)->name, ((const role *) b)->name);
}

static int
parse_roles(P *p, const yaml_node_t *m)
{
    zt_rbac *pol = p->pol;
    if (m->type != YAML_MAPPING_NODE) {
        return fail(p, DBAO_EFORMAT, m, "'roles' must be a mapping of role names to rule lists");
    }
    size_t n = (size_t) (m->data.mapping.pairs.top - m->data.mapping.pairs.start);
    if (n > MAX_ROLES) {
        return fail(p, DBAO_ERANGE, m, "more than %d roles", MAX_ROLES);
    }
    pol->roles = dbao_calloc(n ? n : 1, sizeof(*pol->roles));
    if (pol->roles == NULL) {
        return oom(p);
    }
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn, *vn;
        int rc = node(p, pr->key, m, &kn);
        if (rc != 0) {
            return rc;
        }
        if ((rc = scalar(p, kn, "roles", "")) != 0) {
            return rc;
        }
        if (strlen(sval(kn)) > 256) {
            return fail(p, DBAO_EFORMAT, kn, "role name longer than 256 bytes");
        }
        for (size_t i = 0; i < pol->num_roles; i++) {
            if (strcmp(pol->roles[i].name, sval(kn)) == 0) {
                return fail(p, DBAO_EFORMAT, kn, "duplicate role '%.64s'", sval(kn));
            }
        }
        role *ro = &pol->roles[pol->num_roles];
        ro->name = xstrdup(sval(kn));
        ro->root = dbao_calloc(1, sizeof(*ro->root));
        pol->num_roles++;
        if (ro->name == NULL || ro->root == NULL) {
            return oom(p);
        }
        if ((rc = node(p, pr->value, m, &vn)) != 0) {
            return rc;
        }
        if (is_null(vn)) {
            continue; /* a role without rules */
        }
        if (vn->type != YAML_SEQUENCE_NODE) {
            return fail(p, DBAO_EFORMAT, vn, "role '%.64s' must be a list of rules", ro->name);
        }
        size_t nth = 0;
        for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top;
             it++) {
            yaml_node_t *rn;
            if ((rc = node(p, *it, vn, &rn)) != 0) {
                return rc;
            }
            if ((rc = parse_rule(p, rn, ro, ++nth)) != 0) {
                return rc;
            }
        }
    }
    qsort(pol->roles, pol->num_roles, sizeof(*pol->roles), role_cmp);
    for (size_t i = 0; i < pol->num_roles; i++) {
        if (strcmp(pol->roles[i].name, "*") == 0) {
            pol->any = &pol->roles[i];
        }
    }
    return 0;
}

static int
parse_top(P *p, const yaml_node_t *root)
{
    yaml_node_t *roles = NULL, *version = NULL;
    if (root->type != YAML_MAPPING_NODE) {
        return fail(p, DBAO_EFORMAT, root, "the policy must be a mapping with 'roles'");
    }
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = NULL, *vn = NULL;
        int rc = node(p, pr->key, root, &kn);
        if (rc != 0) {
            return rc;
        }
        if (kn->type != YAML_SCALAR_NODE) {
            return fail(p, DBAO_EFORMAT, kn, "keys must be strings");
        }
        yaml_node_t **slot;
        if (strcmp(sval(kn), "roles") == 0) {
            slot = &roles;
        } else if (strcmp(sval(kn), "version") == 0) {
            slot = &version;
        } else {
            return fail(p, DBAO_EFORMAT, kn, "unknown key '%.64s'", sval(kn));
        }
        if (*slot != NULL) {
            return fail(p, DBAO_EFORMAT, kn, "duplicate key '%s'", sval(kn));
        }
        if ((rc = node(p, pr->value, root, &vn)) != 0) {
            return rc;
        }
        *slot = vn;
    }
    if (version != NULL && (version->type != YAML_SCALAR_NODE ||
                            version->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
                            strcmp(sval(version), "1") != 0)) {
        return fail(p, DBAO_EFORMAT, version, "'version' must be 1");
    }
    if (roles == NULL) {
        return fail(p, DBAO_EFORMAT, root, "missing 'roles'");
    }
    int rc = parse_roles(p, roles);
    return rc != 0 ? rc : check_ids(p);
}

int
zt_rbac_parse(zt_rbac **out, const char *text, size_t len, const char *name, dbao_err *err)
{
    P p = {0};
    name = name ? name : "policy";
    if (out == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "zt_rbac_parse: out is NULL");
    }
    *out = NULL;
    if (text == NULL && len > 0) {
        return dbao_err_set(err, DBAO_EINVAL, "zt_rbac_parse: text is NULL");
    }
    if (len > ZT_RBAC_MAX_TEXT) {
        return dbao_err_set(err, DBAO_ERANGE, "%s: policy larger than %u bytes", name,
                            ZT_RBAC_MAX_TEXT);
    }
    int rc = dbao_yaml_load(&p.y, text ? text : "", len, name, err);
    if (rc == 0 && p.y.root == NULL) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "%s:1: empty policy", name);
    }
    if (rc == 0) {
        p.pol = dbao_calloc(1, sizeof(*p.pol));
        if (p.pol == NULL) {
            rc = oom(&p);
        }
    }
    if (rc == 0) {
        atomic_init(&p.pol->refs, 1);
        rc = parse_top(&p, p.y.root);
    }
    dbao_yaml_free(&p.y);
    if (rc != 0) {
        if (p.pol != NULL) {
            rbac_free(p.pol);
        }
        return rc;
    }
    *out = p.pol;
    return 0;
}

int
zt_rbac_load(zt_rbac **out, const char *path, dbao_err *err)
{
    uint8_t *text = NULL;
    size_t len = 0;
    if (out != NULL) {
        *out = NULL;
    }
    int rc = dbao_file_read(&text, &len, path, ZT_RBAC_MAX_TEXT, err);
    if (rc != 0) {
        return dbao_err_set(err, rc, "cannot read policy '%s'", path);
    }
    rc = zt_rbac_parse(out, (const char *) text, len, path, err);
    dbao_free(text);
    return rc;
}

/* ---- matching ---- */

typedef struct M {
    uint32_t mbit;
    const char *route;
    uint32_t allow, deny; /* earliest matching rule of each effect; UINT32_MAX: none */
} M;

static void
consider(const zt_rbac *pol, const ulist *l, M *m)
{
    /* A list is in text order: past the first passing rule of each effect nothing in it can lower
     * either minimum. */
    bool seen_allow = false, seen_deny = false;
    for (size_t i = 0; i < l->n && !(seen_allow && seen_deny); i++) {
        const rule *r = &pol->rules[l->v[i]];
        if ((r->methods & m->mbit) == 0) {
            continue;
        }
        if (r->route != NULL && (m->route == NULL || strcmp(r->route, m->route) != 0)) {
            continue;
        }
        bool *seen = r->deny ? &seen_deny : &seen_allow;
        uint32_t *best = r->deny ? &m->deny : &m->allow;
        if (*seen) {
            continue;
        }
        *seen = true;
        if (r->order < *best) {
            *best = r->order;
        }
    }
}

/* walk matches the segments starting at `s` (NULL: no segment left) below node n */
static void
walk(const zt_rbac *pol, const tnode *n, const char *s, M *m)
{
    consider(pol, &n->rest, m);
    if (s == NULL) {
        consider(pol, &n->end, m);
        return;
    }
    const char *e = strchr(s, '/');
    size_t len = e ? (size_t) (e - s) : strlen(s);
    const char *next = e ? e + 1 : NULL;
    if (n->num_lit > 0) {
        bool found;
        size_t i = lit_find(n, s, len, &found);
        if (found) {
            walk(pol, n->lit[i].child, next, m);
        }
    }
    if (n->star != NULL && len > 0) {
        walk(pol, n->star, next, m);
    }
}

static const role *
find_role(const zt_rbac *pol, const char *name)
{
    size_t lo = 0, hi = pol->num_roles;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(pol->roles[mid].name, name);
        if (c == 0) {
            return &pol->roles[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

zt_rbac_decision
zt_rbac_check(const zt_rbac *p, const char *const *roles, size_t num_roles, const char *method,
              const char *path, const char *route, const char **out_rule)
{
    if (out_rule != NULL) {
        *out_rule = ZT_RBAC_RULE_DEFAULT;
    }
    if (p == NULL || method == NULL || path == NULL) {
        return ZT_RBAC_DENY;
    }
    if (!zt_rbac_path_is_normalized(path)) {
        if (out_rule != NULL) {
            *out_rule = ZT_RBAC_RULE_BAD_PATH;
        }
        return ZT_RBAC_DENY;
    }
    M m = {.mbit = method_bit(method), .route = route, .allow = UINT32_MAX, .deny = UINT32_MAX};
    if (p->any != NULL) {
        walk(p, p->any->root, path + 1, &m);
    }
    for (size_t i = 0; i < num_roles && roles != NULL; i++) {
        if (roles[i] == NULL) {
            continue;
        }
        const role *ro = find_role(p, roles[i]);
        if (ro != NULL && ro != p->any) {
            walk(p, ro->root, path + 1, &m);
        }
    }
    if (m.deny != UINT32_MAX) {
        if (out_rule != NULL) {
            *out_rule = p->rules[m.deny].id;
        }
        return ZT_RBAC_DENY;
    }
    if (m.allow != UINT32_MAX) {
        if (out_rule != NULL) {
            *out_rule = p->rules[m.allow].id;
        }
        return ZT_RBAC_ALLOW;
    }
    return ZT_RBAC_DENY;
}

/* ---- hot swap ---- */

struct zt_rbac_slot {
    pthread_mutex_t mu;
    zt_rbac *cur;         /* guarded by mu */
    _Atomic uint64_t gen; /* written under mu; read without it by zt_rbac_slot_get */
};

int
zt_rbac_slot_new(zt_rbac_slot **out, zt_rbac *initial)
{
    zt_rbac_slot *s = dbao_calloc(1, sizeof(*s));
    if (s == NULL) {
        return DBAO_ENOMEM;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        dbao_free(s);
        return DBAO_ENOMEM;
    }
    s->cur = initial;
    atomic_init(&s->gen, 1);
    *out = s;
    return 0;
}

void
zt_rbac_slot_free(zt_rbac_slot *s)
{
    if (s == NULL) {
        return;
    }
    zt_rbac_unref(s->cur);
    pthread_mutex_destroy(&s->mu);
    dbao_free(s);
}

void
zt_rbac_slot_set(zt_rbac_slot *s, zt_rbac *p)
{
    pthread_mutex_lock(&s->mu);
    zt_rbac *old = s->cur;
    s->cur = p;
    /* Release pairs with the acquire in zt_rbac_slot_get: a reader that sees the new generation
     * refreshes under the mutex and so sees `p`. */
    uint64_t g = atomic_load_explicit(&s->gen, memory_order_relaxed);
    atomic_store_explicit(&s->gen, g + 1, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    zt_rbac_unref(old); /* readers that still use it hold their own reference */
}

const zt_rbac *
zt_rbac_slot_get(zt_rbac_slot *s, zt_rbac_local *local)
{
    /* Acquire pairs with the release in zt_rbac_slot_set. */
    uint64_t g = atomic_load_explicit(&s->gen, memory_order_acquire);
    if (g == local->gen) {
        return local->policy;
    }
    pthread_mutex_lock(&s->mu);
    zt_rbac *p = zt_rbac_ref(s->cur);
    g = atomic_load_explicit(&s->gen, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    zt_rbac_unref(local->policy);
    local->policy = p;
    local->gen = g;
    return p;
}

void
zt_rbac_local_cleanup(zt_rbac_local *local)
{
    if (local == NULL) {
        return;
    }
    zt_rbac_unref(local->policy);
    local->policy = NULL;
    local->gen = 0;
}
