/* sql.c: the SQL analyser and rewriter of the masking proxy (contract: sqlmask.h).
 *
 * Pipeline for one text: pg_query_parse_protobuf -> protobuf-c unpack -> a lineage walk over the
 * raw parse tree -> (only when an output must be masked) edit the tree, pack,
 * pg_query_deparse_protobuf. Fingerprint and normalised text come from libpg_query too.
 *
 * Lineage. Every FROM item (table, view, CTE, subquery, VALUES, function, JOIN with USING or
 * NATURAL, LATERAL) becomes a range entry ("rte") exposing columns, each with a taint: the set of
 * sensitive catalog columns it depends on (indices into mask_catalog.sens) and whether it is
 * derived (computed) or a direct pass-through of exactly one column. Column references resolve
 * through the scope chain (innermost query first, like PostgreSQL); an unqualified name found in
 * two entries is ambiguous, a name found nowhere is unknown: both are refused for a masked role
 * because the lineage would be a guess. Any expression other than a bare column reference is
 * derived: its taint is the union of its children's. Function results in FROM are "opaque"
 * entries: any column name resolves to them with the taint of the function's arguments.
 *
 * Outputs. Only the outermost output list of a statement is rewritten (SELECT, every leaf of a set
 * operation at the same position, RETURNING, COPY, PREPARE and DECLARE queries): a marker placed
 * in an inner expression would be destroyed by the functions around it. The wrapper is the one
 * described in sqlmask.h; '<marker>' || '<k>:' is emitted as one literal, which yields the same
 * bytes. `*` and `rel.*` are expanded from the range entries when one of their columns must be
 * wrapped.
 *
 * Predicates (WHERE, JOIN ON/USING, HAVING, GROUP BY, ORDER BY, DISTINCT ON, window clauses,
 * FILTER, LIMIT) over a column masked for the roles are checked against the rule's `predicates`:
 * allow; equality (only col = const/param, col IN (consts/params), col = ANY(const/param),
 * col IS [NOT] NULL with col a bare reference); deny.
 *
 * The generic part of the walk uses protobuf-c reflection (the message descriptors): every
 * message-typed field of a node is visited, so node types this file does not name are still
 * searched for column references and subqueries. Nodes added to the tree are allocated with malloc
 * because pg_query__parse_result__free_unpacked frees them with free (protobuf-c's default
 * allocator); a string field left at protobuf-c's static "" must never be freed or replaced
 * without care. Analysis temporaries live in a per-call arena.
 *
 * Fail closed: for a role that has any masked column, a statement this file cannot analyse is
 * refused; for a role that sees everything clear, analysis problems never refuse (PASS), the
 * analysis only feeds the audit decisions. The deparsed text is parsed once more before it is
 * returned (the deparser is not faithful for every tree: $0 becomes "?").
 *
 * Cost: parse to protobuf, unpack and deparse dominate (see LIBRARY-NOTES.md). Texts that can
 * only read clean relations take a conservative pre-check instead (scan + JSON parse; the
 * argument is above fast_pass). */
#include <ctype.h>
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sql_internal.h"

#define R_REFUSE  1
#define MAX_DEPTH 400

#define TRY(e)                                                                                     \
    do {                                                                                           \
        int rc_ = (e);                                                                             \
        if (rc_ != 0)                                                                              \
            return rc_;                                                                            \
    } while (0)

/* ---- arena ----------------------------------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

typedef struct arena {
    chunk *head;
} arena;

static void *
ar_alloc(arena *a, size_t n)
{
    n = (n + 15u) & ~(size_t) 15u;
    if (a->head == NULL || a->head->cap - a->head->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        chunk *c = dbao_malloc(sizeof(chunk) + cap);
        if (c == NULL) {
            return NULL;
        }
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = (char *) a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

static void
ar_free(arena *a)
{
    while (a->head != NULL) {
        chunk *n = a->head->next;
        dbao_free(a->head);
        a->head = n;
    }
}

/* ---- analysis types -------------------------------------------------------------------------- */

typedef struct taint {
    uint32_t *ids;
    uint32_t n, cap; /* cap 0 with n > 0: shared storage, copied before any change */
    bool derived;
} taint;

typedef struct rcol {
    const char *name;
    taint t;
    bool qual_only; /* reachable only qualified (a USING column's sides) */
    bool nostar;    /* only in another relation of the same name: not part of `*` */
} rcol;

typedef struct rte {
    const char *refname; /* alias or relation name; NULL for an unnamed join */
    const char *schema;  /* base relations */
    const char *relname;
    rcol *cols;
    size_t ncols;
    bool opaque; /* unknown columns: any name resolves, with opaque_t */
    taint opaque_t;
    bool hidden; /* inside an aliased join */
    bool is_rel; /* has system columns */
} rte;

typedef struct sitem { /* one column of `*` */
    rte *r;
    size_t col; /* SIZE_MAX: the opaque entry */
} sitem;

typedef struct slist {
    sitem *v;
    size_t n, cap;
} slist;

typedef struct cte {
    const char *name;
    rcol *cols;
    size_t ncols;
    bool opaque;
    struct cte *next;
} cte;

typedef struct scope {
    struct scope *parent;
    rte **rtes;
    size_t n, cap;
    cte *ctes;
} scope;

typedef struct ocol {
    const char *name;
    taint t;
} ocol;

typedef struct qout {
    ocol *c;
    size_t n, cap;
} qout;

typedef struct oent { /* where output position p came from in a leaf */
    size_t tl;
    sitem it;
    bool star;
} oent;

typedef struct leaf {
    PgQuery__Node ***tl; /* target list (SELECT or RETURNING); NULL for VALUES */
    size_t *ntl;
    PgQuery__SelectStmt *values; /* VALUES leaf */
    oent *ents;
    size_t nents;
} leaf;

typedef struct leaves {
    leaf *v;
    size_t n, cap;
} leaves;

typedef struct tag {
    int32_t pos;
    mask_type type;
    bool forward; /* after SELECT, DISTINCT, ALL or a comma: tags the item that
                     follows */
} tag;

typedef struct ctx {
    arena ar;
    const mask_catalog *cat;
    const mask_policy *pol;
    const char *const *roles;
    size_t nroles;
    const char *marker;
    int *act; /* per sens id: action for the roles */
    bool masked_role;
    bool bind_mode;
    bool pending;
    bool user_func; /* bind mode: the view calls a user function */
    bool sensitive;
    bool masked;
    bool changed;
    bool refused;
    bool unknown_relation;
    char sqlstate[6];
    char msg[256];
    int depth;
    unsigned stmt_masked; /* outputs masked in the current statement */
    tag *tags;
    size_t ntags;
    mask_sql_decision *dec;
    size_t ndec, capdec;
} ctx;

static int refuse(ctx *x, const char *state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
refuse(ctx *x, const char *state, const char *fmt, ...)
{
    if (!x->masked_role) {
        return 0;
    }
    if (!x->refused) {
        x->refused = true;
        memcpy(x->sqlstate, state, 5);
        x->sqlstate[5] = '\0';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->msg, sizeof(x->msg), fmt, ap);
        va_end(ap);
    }
    return R_REFUSE;
}

static void *
xa(ctx *x, size_t n)
{
    return ar_alloc(&x->ar, n);
}

#define NEW(x, T) ((T *) xa((x), sizeof(T)))

static int
grow_arr(ctx *x, void **v, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return 0;
    }
    size_t nc = *cap ? *cap * 2 : 8;
    while (nc < need) {
        nc *= 2;
    }
    void *p = xa(x, nc * elem);
    if (p == NULL) {
        return DBAO_ENOMEM;
    }
    if (*cap) {
        memcpy(p, *v, *cap * elem);
    }
    *v = p;
    *cap = nc;
    return 0;
}

/* ---- taints ---------------------------------------------------------------------------------- */

static taint
t_ref(const taint *t)
{
    taint r = *t;
    r.cap = 0;
    return r;
}

static int
t_add(ctx *x, taint *t, uint32_t id)
{
    uint32_t i = 0;
    while (i < t->n && t->ids[i] < id) {
        i++;
    }
    if (i < t->n && t->ids[i] == id) {
        return 0;
    }
    if (t->n >= t->cap) {
        uint32_t nc = t->n * 2 + 4;
        uint32_t *p = xa(x, nc * sizeof(uint32_t));
        if (p == NULL) {
            return DBAO_ENOMEM;
        }
        if (t->n) {
            memcpy(p, t->ids, t->n * sizeof(uint32_t));
        }
        t->ids = p;
        t->cap = nc;
    }
    memmove(t->ids + i + 1, t->ids + i, (t->n - i) * sizeof(uint32_t));
    t->ids[i] = id;
    t->n++;
    return 0;
}

static int
t_union(ctx *x, taint *d, const taint *s)
{
    if (s->n == 0) {
        d->derived |= s->derived;
        return 0;
    }
    if (d->n == 0) {
        bool der = d->derived || s->derived;
        *d = t_ref(s);
        d->derived = der;
        return 0;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        TRY(t_add(x, d, s->ids[i]));
    }
    d->derived |= s->derived;
    return 0;
}

static bool
t_equal(const taint *a, const taint *b)
{
    if (a->n != b->n || (a->n && a->derived != b->derived)) {
        return false;
    }
    return a->n == 0 || memcmp(a->ids, b->ids, a->n * sizeof(uint32_t)) == 0;
}

static taint
t_from_cat(const mcat_taint *m)
{
    taint t = {m->ids, m->n, 0, m->derived};
    return t;
}

static void
note_taint(ctx *x, const taint *t)
{
    if (t->n > 0) {
        x->sensitive = true;
    }
}

/* ---- scopes ---------------------------------------------------------------------------------- */

static scope *
scope_new(ctx *x, scope *parent)
{
    scope *s = NEW(x, scope);
    if (s != NULL) {
        s->parent = parent;
        s->ctes = parent != NULL ? parent->ctes : NULL;
    }
    return s;
}

static int
scope_push(ctx *x, scope *s, rte *r)
{
    TRY(grow_arr(x, (void **) &s->rtes, &s->cap, s->n + 1, sizeof(rte *)));
    s->rtes[s->n++] = r;
    return 0;
}

static int
sl_push(ctx *x, slist *l, rte *r, size_t col)
{
    TRY(grow_arr(x, (void **) &l->v, &l->cap, l->n + 1, sizeof(sitem)));
    l->v[l->n].r = r;
    l->v[l->n].col = col;
    l->n++;
    return 0;
}

static int
qo_push(ctx *x, qout *o, const char *name, const taint *t)
{
    TRY(grow_arr(x, (void **) &o->c, &o->cap, o->n + 1, sizeof(ocol)));
    o->c[o->n].name = name;
    o->c[o->n].t = t_ref(t);
    o->n++;
    return 0;
}

static const char *
str_of(const PgQuery__Node *n)
{
    if (n != NULL && n->node_case == PG_QUERY__NODE__NODE_STRING && n->string != NULL) {
        return n->string->sval;
    }
    return NULL;
}

static bool
is_sys_column(const char *n)
{
    static const char *const sys[] = {"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "oid"};
    for (size_t i = 0; i < sizeof(sys) / sizeof(sys[0]); i++) {
        if (strcmp(n, sys[i]) == 0) {
            return true;
        }
    }
    return false;
}

static cte *
cte_find(scope *s, const char *name)
{
    for (cte *c = s->ctes; c != NULL; c = c->next) {
        if (strcmp(c->name, name) == 0) {
            return c;
        }
    }
    return NULL;
}

static rte *
rte_find(scope *sc, const char *schema, const char *name, int *level)
{
    int lv = 0;
    for (scope *s = sc; s != NULL; s = s->parent, lv++) {
        for (size_t i = s->n; i-- > 0;) {
            rte *r = s->rtes[i];
            if (r->hidden || r->refname == NULL || strcmp(r->refname, name) != 0) {
                continue;
            }
            if (schema != NULL && (r->schema == NULL || strcmp(r->schema, schema) != 0)) {
                continue;
            }
            if (level != NULL) {
                *level = lv;
            }
            return r;
        }
    }
    return NULL;
}

static int
whole_row(ctx *x, const rte *r, taint *out)
{
    taint t = {0};
    for (size_t i = 0; i < r->ncols; i++) {
        TRY(t_union(x, &t, &r->cols[i].t));
    }
    if (r->opaque) {
        TRY(t_union(x, &t, &r->opaque_t));
    }
    t.derived = true;
    *out = t;
    return 0;
}

/* Column `name` of entry r: 1 found, 0 not. */
static int
rte_col(const rte *r, const char *name, bool qualified, taint *out)
{
    for (size_t i = 0; i < r->ncols; i++) {
        if ((qualified || !r->cols[i].qual_only) && strcmp(r->cols[i].name, name) == 0) {
            *out = t_ref(&r->cols[i].t);
            return 1;
        }
    }
    if (r->is_rel && is_sys_column(name)) {
        *out = (taint){0};
        return 1;
    }
    return 0;
}

/* Unqualified column: 1 found (out set), 0 none, 2 ambiguous. */
static int
lookup_unqual(ctx *x, scope *sc, const char *name, taint *out, int *err)
{
    *err = 0;
    for (scope *s = sc; s != NULL; s = s->parent) {
        int found = 0;
        bool opaque = false;
        taint acc = {0}, ot = {0};
        for (size_t i = 0; i < s->n; i++) {
            rte *r = s->rtes[i];
            if (r->hidden) {
                continue;
            }
            taint t;
            if (rte_col(r, name, false, &t)) {
                found++;
                if ((*err = t_union(x, &acc, &t)) != 0) {
                    return 0;
                }
            } else if (r->opaque) {
                opaque = true;
                if ((*err = t_union(x, &ot, &r->opaque_t)) != 0) {
                    return 0;
                }
            }
        }
        if (found || opaque) {
            if (opaque && (*err = t_union(x, &acc, &ot)) != 0) {
                return 0;
            }
            *out = acc;
            return found > 1 ? 2 : 1;
        }
    }
    return 0;
}

/* ---- forward declarations -------------------------------------------------------------------- */

static int expr_taint(ctx *x, scope *sc, PgQuery__Node *n, taint *out);
static int pred_check(ctx *x, scope *sc, PgQuery__Node *n);
static int analyse_query(ctx *x, scope *parent, PgQuery__Node *q, qout *out, leaves *lv);
static int analyse_select(ctx *x, scope *parent, PgQuery__SelectStmt *s, qout *out, leaves *lv);

/* ---- column references ----------------------------------------------------------------------- */

static int
resolve_colref(ctx *x, scope *sc, PgQuery__ColumnRef *cr, taint *out)
{
    *out = (taint){0};
    const char *f[4] = {0};
    size_t nf = cr->n_fields;
    bool star = nf > 0 && cr->fields[nf - 1]->node_case == PG_QUERY__NODE__NODE_A_STAR;
    if (star) {
        nf--;
    }
    if (nf > 4) {
        return refuse(x, "0A000", "column reference with too many names");
    }
    for (size_t i = 0; i < nf; i++) {
        f[i] = str_of(cr->fields[i]);
        if (f[i] == NULL) {
            return refuse(x, "0A000", "unsupported column reference");
        }
    }
    if (star) {
        if (nf == 0) {
            /* a bare * outside a select list (e.g. in a row constructor): every entry
             */
            taint acc = {0};
            for (size_t i = 0; i < sc->n; i++) {
                taint t;
                TRY(whole_row(x, sc->rtes[i], &t));
                TRY(t_union(x, &acc, &t));
            }
            acc.derived = true;
            *out = acc;
            note_taint(x, out);
            return 0;
        }
        rte *r = rte_find(sc, nf >= 2 ? f[nf - 2] : NULL, f[nf - 1], NULL);
        if (r == NULL) {
            return refuse(x, "42P01", "missing FROM-clause entry for \"%s\"", f[nf - 1]);
        }
        TRY(whole_row(x, r, out));
        note_taint(x, out);
        return 0;
    }
    int e = 0;
    if (nf == 1) {
        int k = lookup_unqual(x, sc, f[0], out, &e);
        TRY(e);
        if (k == 2) {
            note_taint(x, out);
            return refuse(x, "42702", "column reference \"%s\" is ambiguous", f[0]);
        }
        if (k == 0) {
            rte *r = rte_find(sc, NULL, f[0], NULL);
            if (r == NULL) {
                return refuse(x, "42703", "column \"%s\" is not known", f[0]);
            }
            TRY(whole_row(x, r, out));
        }
        note_taint(x, out);
        return 0;
    }
    /* qualified: [rel, col], [schema, rel, col], [db, schema, rel, col] */
    const char *col = f[nf - 1];
    const char *rel = f[nf - 2];
    const char *schema = nf >= 3 ? f[nf - 3] : NULL;
    rte *r = rte_find(sc, schema, rel, NULL);
    if (r != NULL) {
        if (!rte_col(r, col, true, out)) {
            if (!r->opaque) {
                return refuse(x, "42703", "column \"%s.%s\" is not known", rel, col);
            }
            *out = t_ref(&r->opaque_t);
        }
        note_taint(x, out);
        return 0;
    }
    /* a field of a composite column: (rel).col.field or col.field */
    if (nf == 2 || nf == 3) {
        taint t;
        int k = 0;
        if (nf == 3 && (r = rte_find(sc, NULL, f[0], NULL)) != NULL) {
            k = rte_col(r, f[1], true, &t);
        } else if (nf == 2) {
            k = lookup_unqual(x, sc, f[0], &t, &e);
            TRY(e);
        }
        if (k == 1) {
            *out = t_ref(&t);
            out->derived = true;
            note_taint(x, out);
            return 0;
        }
    }
    return refuse(x, "42P01", "missing FROM-clause entry for \"%s\"", rel);
}

/* ---- functions ------------------------------------------------------------------------------- */

static bool
blocked_builtin(const char *n)
{
    static const char *const prefix[] = {
        "query_to_xml", "table_to_xml", "cursor_to_xml", "schema_to_xml", "database_to_xml",
        "dblink",       "lo_"};
    static const char *const exact[] = {
        "pg_read_file",  "pg_read_binary_file", "loread",     "lowrite",
        "pg_file_write", "pg_notify",           "set_config", "pg_logical_emit_message",
        "ts_stat",       "pg_stat_get_activity"};
    for (size_t i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++) {
        if (strncmp(n, prefix[i], strlen(prefix[i])) == 0) {
            return true;
        }
    }
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(n, exact[i]) == 0) {
            return true;
        }
    }
    size_t l = strlen(n);
    return l >= 13 && strcmp(n + l - 13, "_to_xmlschema") == 0;
}

/* A call of function `names` (a FuncCall/CallStmt name list). */
static int
check_func(ctx *x, PgQuery__Node **names, size_t n, bool procedure)
{
    if (x->bind_mode && n > 0) {
        /* a view calling a user function may expose anything that function reads */
        const char *fn = str_of(names[n - 1]);
        const char *fs = n >= 2 ? str_of(names[n - 2]) : NULL;
        for (int32_t i = fn ? mask__cat_func_first(x->cat, fn) : -1; i >= 0;
             i = x->cat->funcs[i].next) {
            const mcat_func *f = &x->cat->funcs[i];
            if (strcmp(f->name, fn) == 0 && (fs == NULL || strcmp(f->schema, fs) == 0) &&
                !mask_policy_function_allowed(x->pol, f->schema, fn)) {
                x->user_func = true;
            }
        }
        return 0;
    }
    if (!x->masked_role || n == 0) {
        return 0;
    }
    const char *name = str_of(names[n - 1]);
    const char *schema = n >= 2 ? str_of(names[n - 2]) : NULL;
    if (name == NULL) {
        return refuse(x, "0A000", "unsupported function name");
    }
    bool sys = schema != NULL && strcmp(schema, "pg_catalog") == 0;
    if ((schema == NULL || sys) && blocked_builtin(name)) {
        return refuse(x, "42501", "function %s is not allowed for masked roles", name);
    }
    bool found = false;
    for (int32_t i = mask__cat_func_first(x->cat, name); i >= 0; i = x->cat->funcs[i].next) {
        const mcat_func *f = &x->cat->funcs[i];
        if (strcmp(f->name, name) != 0 || (schema != NULL && strcmp(f->schema, schema) != 0)) {
            continue;
        }
        found = true;
        if (!mask_policy_function_allowed(x->pol, f->schema, name)) {
            return refuse(x, "42501", "user function %s.%s is not allowed for masked roles",
                          f->schema, name);
        }
    }
    if (procedure && !found) {
        return refuse(x, "42501", "procedure %s is not known", name);
    }
    if (!found && schema != NULL && !sys && strcmp(schema, "information_schema") != 0) {
        return refuse(x, "42883", "function %s.%s is not known", schema, name);
    }
    return 0;
}

/* ---- expressions ----------------------------------------------------------------------------- */

static int sortby_list_pred(ctx *x, scope *sc, PgQuery__Node **v, size_t n, qout *out,
                            bool out_first);

static int
walk_msg(ctx *x, scope *sc, const ProtobufCMessage *m, taint *acc)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        const char *base = (const char *) m;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *) (base + f->quantifier_offset) != f->id) {
                continue;
            }
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t cnt = *(const size_t *) (base + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *) (base + f->offset);
            for (size_t j = 0; j < cnt; j++) {
                if (arr[j] == NULL) {
                    continue;
                }
                taint t = {0};
                if (arr[j]->descriptor == &pg_query__node__descriptor) {
                    TRY(expr_taint(x, sc, (PgQuery__Node *) arr[j], &t));
                } else {
                    TRY(walk_msg(x, sc, arr[j], &t));
                }
                TRY(t_union(x, acc, &t));
            }
        } else {
            const ProtobufCMessage *c = *(ProtobufCMessage *const *) (base + f->offset);
            if (c == NULL) {
                continue;
            }
            taint t = {0};
            if (c->descriptor == &pg_query__node__descriptor) {
                TRY(expr_taint(x, sc, (PgQuery__Node *) c, &t));
            } else {
                TRY(walk_msg(x, sc, c, &t));
            }
            TRY(t_union(x, acc, &t));
        }
    }
    return 0;
}

static int
window_pred(ctx *x, scope *sc, PgQuery__WindowDef *w)
{
    if (w == NULL) {
        return 0;
    }
    TRY(sortby_list_pred(x, sc, w->partition_clause, w->n_partition_clause, NULL, false));
    TRY(sortby_list_pred(x, sc, w->order_clause, w->n_order_clause, NULL, false));
    return 0;
}

static int
expr_taint_inner(ctx *x, scope *sc, PgQuery__Node *n, taint *out)
{
    *out = (taint){0};
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_COLUMN_REF:
        return resolve_colref(x, sc, n->column_ref, out);
    case PG_QUERY__NODE__NODE_PARAM_REF:
        if (n->param_ref->number <= 0) {
            return refuse(x, "42P02", "there is no parameter $%d", n->param_ref->number);
        }
        return 0;
    case PG_QUERY__NODE__NODE_A_CONST:
    case PG_QUERY__NODE__NODE_STRING:
    case PG_QUERY__NODE__NODE_INTEGER:
    case PG_QUERY__NODE__NODE_FLOAT:
    case PG_QUERY__NODE__NODE_SQLVALUE_FUNCTION:
        return 0;
    case PG_QUERY__NODE__NODE_FUNC_CALL: {
        PgQuery__FuncCall *fc = n->func_call;
        TRY(check_func(x, fc->funcname, fc->n_funcname, false));
        taint acc = {0};
        for (size_t i = 0; i < fc->n_args; i++) {
            taint t;
            TRY(expr_taint(x, sc, fc->args[i], &t));
            TRY(t_union(x, &acc, &t));
        }
        for (size_t i = 0; i < fc->n_agg_order; i++) {
            taint t;
            TRY(expr_taint(x, sc, fc->agg_order[i], &t));
            TRY(t_union(x, &acc, &t));
        }
        TRY(pred_check(x, sc, fc->agg_filter));
        TRY(window_pred(x, sc, fc->over));
        acc.derived = true;
        *out = acc;
        return 0;
    }
    case PG_QUERY__NODE__NODE_SUB_LINK: {
        PgQuery__SubLink *sl = n->sub_link;
        qout o = {0};
        scope *s = scope_new(x, sc);
        if (s == NULL) {
            return DBAO_ENOMEM;
        }
        taint acc = {0};
        if (sl->subselect != NULL) {
            TRY(analyse_query(x, s, sl->subselect, &o, NULL));
        }
        for (size_t i = 0; i < o.n; i++) {
            TRY(t_union(x, &acc, &o.c[i].t));
        }
        if (sl->testexpr != NULL) {
            taint t;
            TRY(expr_taint(x, sc, sl->testexpr, &t));
            TRY(t_union(x, &acc, &t));
        }
        acc.derived = true;
        *out = acc;
        return 0;
    }
    case PG_QUERY__NODE__NODE_SELECT_STMT: {
        qout o = {0};
        scope *s = scope_new(x, sc);
        if (s == NULL) {
            return DBAO_ENOMEM;
        }
        TRY(analyse_select(x, s, n->select_stmt, &o, NULL));
        taint acc = {0};
        for (size_t i = 0; i < o.n; i++) {
            TRY(t_union(x, &acc, &o.c[i].t));
        }
        acc.derived = true;
        *out = acc;
        return 0;
    }
    case PG_QUERY__NODE__NODE_WINDOW_DEF:
        return window_pred(x, sc, n->window_def);
    default: {
        taint acc = {0};
        TRY(walk_msg(x, sc, (const ProtobufCMessage *) n, &acc));
        acc.derived = true;
        *out = acc;
        return 0;
    }
    }
}

static int
expr_taint(ctx *x, scope *sc, PgQuery__Node *n, taint *out)
{
    *out = (taint){0};
    if (n == NULL) {
        return 0;
    }
    if (++x->depth > MAX_DEPTH) {
        x->depth--;
        return refuse(x, "54001", "statement too complex to analyse");
    }
    int rc = expr_taint_inner(x, sc, n, out);
    x->depth--;
    return rc;
}

/* ---- predicates ------------------------------------------------------------------------------ */

static int
pred_taint(ctx *x, const taint *t, bool equality_form)
{
    note_taint(x, t);
    for (uint32_t i = 0; i < t->n; i++) {
        uint32_t id = t->ids[i];
        if (x->act[id] == -1) {
            continue;
        }
        mask_pred p = x->cat->sens[id].rule->predicates;
        if (p == MASK_PRED_ALLOW || (p == MASK_PRED_EQUALITY && equality_form)) {
            continue;
        }
        return refuse(x, "42501", "predicate on masked column %s is not allowed (policy: %s)",
                      x->cat->sens[id].path, p == MASK_PRED_DENY ? "deny" : "equality");
    }
    return 0;
}

static bool
is_const_or_param(const PgQuery__Node *n)
{
    if (n == NULL) {
        return false;
    }
    if (n->node_case == PG_QUERY__NODE__NODE_A_CONST ||
        n->node_case == PG_QUERY__NODE__NODE_PARAM_REF) {
        return true;
    }
    if (n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) {
        return is_const_or_param(n->type_cast->arg);
    }
    return false;
}

static bool
is_colref(const PgQuery__Node *n)
{
    return n != NULL && n->node_case == PG_QUERY__NODE__NODE_COLUMN_REF &&
           n->column_ref->n_fields > 0 &&
           n->column_ref->fields[n->column_ref->n_fields - 1]->node_case !=
               PG_QUERY__NODE__NODE_A_STAR;
}

static int
pred_eq_col(ctx *x, scope *sc, PgQuery__Node *col)
{
    taint t;
    TRY(expr_taint(x, sc, col, &t));
    return pred_taint(x, &t, !t.derived);
}

static int
pred_check(ctx *x, scope *sc, PgQuery__Node *n)
{
    if (n == NULL) {
        return 0;
    }
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_BOOL_EXPR:
        for (size_t i = 0; i < n->bool_expr->n_args; i++) {
            TRY(pred_check(x, sc, n->bool_expr->args[i]));
        }
        return 0;
    case PG_QUERY__NODE__NODE_NULL_TEST:
        if (is_colref(n->null_test->arg)) {
            return pred_eq_col(x, sc, n->null_test->arg);
        }
        break;
    case PG_QUERY__NODE__NODE_A_EXPR: {
        PgQuery__AExpr *e = n->a_expr;
        const char *op = e->n_name == 1 ? str_of(e->name[0]) : NULL;
        if (op == NULL || strcmp(op, "=") != 0) {
            break;
        }
        if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP) {
            if (is_colref(e->lexpr) && is_const_or_param(e->rexpr)) {
                return pred_eq_col(x, sc, e->lexpr);
            }
            if (is_colref(e->rexpr) && is_const_or_param(e->lexpr)) {
                return pred_eq_col(x, sc, e->rexpr);
            }
        } else if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP_ANY && is_colref(e->lexpr) &&
                   is_const_or_param(e->rexpr)) {
            return pred_eq_col(x, sc, e->lexpr); /* col = ANY($1): IN with an array */
        } else if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_IN && is_colref(e->lexpr) &&
                   e->rexpr != NULL && e->rexpr->node_case == PG_QUERY__NODE__NODE_LIST) {
            PgQuery__List *l = e->rexpr->list;
            bool consts = true;
            for (size_t i = 0; i < l->n_items && consts; i++) {
                consts = is_const_or_param(l->items[i]);
            }
            if (consts) {
                return pred_eq_col(x, sc, e->lexpr);
            }
        }
        break;
    }
    default:
        break;
    }
    taint t;
    TRY(expr_taint(x, sc, n, &t));
    return pred_taint(x, &t, false);
}

/* ORDER BY / GROUP BY / DISTINCT ON / PARTITION BY items. Output names and
 * positions refer to the outputs `out` (ORDER BY: output names first; GROUP BY:
 * input columns first). */
static int
sortby_list_pred(ctx *x, scope *sc, PgQuery__Node **v, size_t n, qout *out, bool out_first)
{
    for (size_t i = 0; i < n; i++) {
        PgQuery__Node *e = v[i];
        if (e == NULL) {
            continue;
        }
        if (e->node_case == PG_QUERY__NODE__NODE_SORT_BY) {
            e = e->sort_by->node;
        }
        if (e == NULL) {
            continue;
        }
        if (e->node_case == PG_QUERY__NODE__NODE_GROUPING_SET) {
            TRY(sortby_list_pred(x, sc, e->grouping_set->content, e->grouping_set->n_content, out,
                                 out_first));
            continue;
        }
        if (out != NULL && e->node_case == PG_QUERY__NODE__NODE_A_CONST &&
            e->a_const->val_case == PG_QUERY__A__CONST__VAL_IVAL && e->a_const->ival != NULL) {
            int32_t k = e->a_const->ival->ival;
            if (k >= 1 && (size_t) k <= out->n) {
                TRY(pred_taint(x, &out->c[k - 1].t, false));
            }
            continue;
        }
        if (out != NULL && e->node_case == PG_QUERY__NODE__NODE_COLUMN_REF &&
            e->column_ref->n_fields == 1) {
            const char *nm = str_of(e->column_ref->fields[0]);
            ocol *oc = NULL;
            for (size_t j = 0; nm != NULL && j < out->n; j++) {
                if (out->c[j].name != NULL && strcmp(out->c[j].name, nm) == 0) {
                    oc = &out->c[j];
                    break;
                }
            }
            if (oc != NULL) {
                taint t;
                int err = 0;
                if (out_first || lookup_unqual(x, sc, nm, &t, &err) == 0) {
                    TRY(err);
                    TRY(pred_taint(x, &oc->t, false));
                    continue;
                }
                TRY(err);
            }
        }
        TRY(pred_check(x, sc, e));
    }
    return 0;
}

/* ---- output names (PostgreSQL's FigureColname) ----------------------------------------------- */

static const char *
figure_colname(const PgQuery__Node *n, int *strength)
{
    *strength = 0;
    if (n == NULL) {
        return "?column?";
    }
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_COLUMN_REF: {
        const PgQuery__ColumnRef *c = n->column_ref;
        for (size_t i = c->n_fields; i-- > 0;) {
            const char *s = str_of(c->fields[i]);
            if (s != NULL) {
                *strength = 2;
                return s;
            }
        }
        break;
    }
    case PG_QUERY__NODE__NODE_A_INDIRECTION: {
        const PgQuery__AIndirection *a = n->a_indirection;
        for (size_t i = a->n_indirection; i-- > 0;) {
            const char *s = str_of(a->indirection[i]);
            if (s != NULL) {
                *strength = 2;
                return s;
            }
        }
        return figure_colname(a->arg, strength);
    }
    case PG_QUERY__NODE__NODE_FUNC_CALL:
        if (n->func_call->n_funcname > 0) {
            const char *s = str_of(n->func_call->funcname[n->func_call->n_funcname - 1]);
            if (s != NULL) {
                *strength = 2;
                return s;
            }
        }
        break;
    case PG_QUERY__NODE__NODE_A_EXPR:
        if (n->a_expr->kind == PG_QUERY__A__EXPR__KIND__AEXPR_NULLIF) {
            *strength = 2;
            return "nullif";
        }
        break;
    case PG_QUERY__NODE__NODE_TYPE_CAST: {
        const char *s = figure_colname(n->type_cast->arg, strength);
        if (*strength <= 1 && n->type_cast->type_name != NULL &&
            n->type_cast->type_name->n_names > 0) {
            const PgQuery__TypeName *t = n->type_cast->type_name;
            const char *tn = str_of(t->names[t->n_names - 1]);
            if (tn != NULL) {
                *strength = 1;
                return tn;
            }
        }
        return s;
    }
    case PG_QUERY__NODE__NODE_COLLATE_CLAUSE:
        return figure_colname(n->collate_clause->arg, strength);
    case PG_QUERY__NODE__NODE_SUB_LINK: {
        const PgQuery__SubLink *sl = n->sub_link;
        if (sl->sub_link_type == PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK) {
            *strength = 2;
            return "exists";
        }
        if (sl->sub_link_type == PG_QUERY__SUB_LINK_TYPE__ARRAY_SUBLINK) {
            *strength = 2;
            return "array";
        }
        if (sl->sub_link_type == PG_QUERY__SUB_LINK_TYPE__EXPR_SUBLINK && sl->subselect != NULL &&
            sl->subselect->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
            const PgQuery__SelectStmt *s = sl->subselect->select_stmt;
            while (s->larg != NULL && s->op != PG_QUERY__SET_OPERATION__SETOP_NONE) {
                s = s->larg;
            }
            if (s->n_target_list > 0 &&
                s->target_list[0]->node_case == PG_QUERY__NODE__NODE_RES_TARGET) {
                const PgQuery__ResTarget *rt = s->target_list[0]->res_target;
                if (rt->name != NULL && rt->name[0] != '\0') {
                    *strength = 2;
                    return rt->name;
                }
                int st;
                const char *nm = figure_colname(rt->val, &st);
                if (st > 0) {
                    *strength = 2;
                    return nm;
                }
            }
        }
        break;
    }
    case PG_QUERY__NODE__NODE_CASE_EXPR: {
        const char *s = figure_colname(n->case_expr->defresult, strength);
        if (*strength <= 1) {
            *strength = 1;
            return "case";
        }
        return s;
    }
    case PG_QUERY__NODE__NODE_A_ARRAY_EXPR:
        *strength = 2;
        return "array";
    case PG_QUERY__NODE__NODE_ROW_EXPR:
        *strength = 2;
        return "row";
    case PG_QUERY__NODE__NODE_COALESCE_EXPR:
        *strength = 2;
        return "coalesce";
    case PG_QUERY__NODE__NODE_MIN_MAX_EXPR:
        *strength = 2;
        return n->min_max_expr->op == PG_QUERY__MIN_MAX_OP__IS_GREATEST ? "greatest" : "least";
    case PG_QUERY__NODE__NODE_XML_SERIALIZE:
        *strength = 2;
        return "xmlserialize";
    case PG_QUERY__NODE__NODE_GROUPING_FUNC:
        *strength = 2;
        return "grouping";
    default:
        break;
    }
    return "?column?";
}

/* ---- relations ------------------------------------------------------------------------------- */

static bool
is_system_schema(const char *s)
{
    return strcmp(s, "pg_catalog") == 0 || strcmp(s, "information_schema") == 0 ||
           strncmp(s, "pg_toast", 8) == 0;
}

static bool
is_stats_relation(const char *n)
{
    static const char *const v[] = {"pg_stats",           "pg_statistic",          "pg_stats_ext",
                                    "pg_stats_ext_exprs", "pg_statistic_ext_data", "pg_largeobject",
                                    "pg_stat_activity"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (strcmp(n, v[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int
rename_cols(ctx *x, rte *r, PgQuery__Alias *a)
{
    (void) x;
    if (a == NULL) {
        return 0;
    }
    for (size_t i = 0; i < a->n_colnames && i < r->ncols; i++) {
        const char *s = str_of(a->colnames[i]);
        if (s != NULL) {
            r->cols[i].name = s;
        }
    }
    return 0;
}

static const char *
alias_name(PgQuery__Alias *a)
{
    return a != NULL && a->aliasname != NULL && a->aliasname[0] != '\0' ? a->aliasname : NULL;
}

/* An entry for catalog relation(s) `schema.name` (schema NULL: every relation
 * of that name, merged: the search_path could pick any of them). */
static int
rel_rte(ctx *x, const char *schema, const char *name, PgQuery__Alias *alias, rte **out)
{
    *out = NULL;
    rte *r = NEW(x, rte);
    if (r == NULL) {
        return DBAO_ENOMEM;
    }
    r->refname = alias_name(alias) ? alias_name(alias) : name;
    r->schema = alias_name(alias) ? NULL : schema;
    r->relname = name;
    r->is_rel = true;
    const mask_catalog *c = x->cat;
    int32_t primary = -1;
    size_t best = 0;
    for (int32_t i = mask__cat_rel_first(c, name); i >= 0; i = c->rels[i].next) {
        const mcat_rel *cr = &c->rels[i];
        if (strcmp(cr->name, name) != 0 || (schema != NULL && strcmp(cr->schema, schema) != 0)) {
            continue;
        }
        size_t ns = 0;
        for (size_t j = 0; j < cr->num_cols; j++) {
            ns += cr->cols[j].taint.n > 0;
        }
        if (primary < 0 || ns > best || (ns == best && strcmp(cr->schema, "public") == 0)) {
            primary = i;
            best = ns;
        }
    }
    if (primary < 0) {
        if ((schema != NULL && is_system_schema(schema)) ||
            (schema == NULL && strncmp(name, "pg_", 3) == 0)) {
            if (is_stats_relation(name)) {
                TRY(refuse(x, "42501", "relation %s is not allowed for masked roles", name));
            }
            r->opaque = true;
            *out = r;
            return 0;
        }
        if (schema == NULL && x->bind_mode) {
            r->opaque = true;
            *out = r;
            return 0;
        }
        x->unknown_relation = x->masked_role;
        TRY(refuse(x, "42P01", "relation %s%s%s is not in the catalog", schema ? schema : "",
                   schema ? "." : "", name));
        r->opaque = true;
        *out = r;
        return 0;
    }
    const mcat_rel *pr = &c->rels[primary];
    size_t total = 0;
    for (int32_t i = mask__cat_rel_first(c, name); i >= 0; i = c->rels[i].next) {
        total += c->rels[i].num_cols;
    }
    r->ncols = pr->num_cols;
    r->cols = xa(x, (total + 1) * sizeof(rcol));
    if (r->cols == NULL) {
        return DBAO_ENOMEM;
    }
    for (size_t j = 0; j < pr->num_cols; j++) {
        r->cols[j].name = pr->cols[j].name;
        r->cols[j].t = t_from_cat(&pr->cols[j].taint);
    }
    for (int32_t i = mask__cat_rel_first(c, name); i >= 0; i = c->rels[i].next) {
        const mcat_rel *cr = &c->rels[i];
        if (strcmp(cr->name, name) != 0 || (schema != NULL && strcmp(cr->schema, schema) != 0)) {
            continue;
        }
        if (x->bind_mode && cr->view_state == MCAT_VIEW_PENDING) {
            x->pending = true;
        }
        if (i == primary) {
            continue;
        }
        for (size_t k = 0; k < cr->num_cols; k++) {
            bool seen = false;
            for (size_t j = 0; j < r->ncols; j++) {
                if (strcmp(r->cols[j].name, cr->cols[k].name) == 0) {
                    taint t = t_from_cat(&cr->cols[k].taint);
                    TRY(t_union(x, &r->cols[j].t, &t));
                    seen = true;
                }
            }
            if (!seen) {
                r->cols[r->ncols].name = cr->cols[k].name;
                r->cols[r->ncols].t = t_from_cat(&cr->cols[k].taint);
                r->cols[r->ncols].nostar = true;
                r->ncols++;
            }
        }
    }
    TRY(rename_cols(x, r, alias));
    *out = r;
    return 0;
}

static int
outputs_rte(ctx *x, const qout *o, const char *refname, PgQuery__Alias *alias, rte **out)
{
    rte *r = NEW(x, rte);
    if (r == NULL) {
        return DBAO_ENOMEM;
    }
    r->refname = refname;
    r->ncols = o->n;
    r->cols = xa(x, (o->n + 1) * sizeof(rcol));
    if (r->cols == NULL) {
        return DBAO_ENOMEM;
    }
    for (size_t i = 0; i < o->n; i++) {
        r->cols[i].name = o->c[i].name ? o->c[i].name : "?column?";
        r->cols[i].t = t_ref(&o->c[i].t);
    }
    TRY(rename_cols(x, r, alias));
    *out = r;
    return 0;
}

static int add_from(ctx *x, scope *sc, PgQuery__Node *n, slist *sl);

static int
push_all(ctx *x, scope *sc, rte *r, slist *sl)
{
    TRY(scope_push(x, sc, r));
    if (r->opaque && r->ncols == 0) {
        return sl_push(x, sl, r, SIZE_MAX);
    }
    for (size_t i = 0; i < r->ncols; i++) {
        if (!r->cols[i].nostar) {
            TRY(sl_push(x, sl, r, i));
        }
    }
    return 0;
}

static const char *
sitem_name(const sitem *it)
{
    return it->col == SIZE_MAX ? NULL : it->r->cols[it->col].name;
}

static int
add_join(ctx *x, scope *sc, PgQuery__JoinExpr *j, slist *sl)
{
    size_t first = sc->n;
    slist L = {0}, R = {0};
    TRY(add_from(x, sc, j->larg, &L));
    TRY(add_from(x, sc, j->rarg, &R));
    const char **names = NULL;
    size_t nn = 0;
    if (j->n_using_clause > 0) {
        names = xa(x, j->n_using_clause * sizeof(char *));
        if (names == NULL) {
            return DBAO_ENOMEM;
        }
        for (size_t i = 0; i < j->n_using_clause; i++) {
            const char *s = str_of(j->using_clause[i]);
            if (s != NULL) {
                names[nn++] = s;
            }
        }
    } else if (j->is_natural) {
        names = xa(x, (L.n + 1) * sizeof(char *));
        if (names == NULL) {
            return DBAO_ENOMEM;
        }
        for (size_t a = 0; a < L.n; a++) {
            const char *ln = sitem_name(&L.v[a]);
            if (ln == NULL || L.v[a].r->cols[L.v[a].col].qual_only) {
                continue;
            }
            for (size_t b = 0; b < R.n; b++) {
                const char *rn = sitem_name(&R.v[b]);
                if (rn != NULL && strcmp(ln, rn) == 0) {
                    names[nn++] = ln;
                    break;
                }
            }
        }
    }
    slist J = {0};
    if (nn > 0) {
        rte *m = NEW(x, rte);
        if (m == NULL) {
            return DBAO_ENOMEM;
        }
        m->refname = alias_name(j->join_using_alias);
        m->cols = xa(x, nn * sizeof(rcol));
        if (m->cols == NULL) {
            return DBAO_ENOMEM;
        }
        m->ncols = nn;
        for (size_t k = 0; k < nn; k++) {
            taint t = {0}, tl = {0}, tr = {0};
            for (size_t a = 0; a < L.n; a++) {
                const char *s = sitem_name(&L.v[a]);
                if (s != NULL && strcmp(s, names[k]) == 0 &&
                    !L.v[a].r->cols[L.v[a].col].qual_only) {
                    tl = t_ref(&L.v[a].r->cols[L.v[a].col].t);
                    L.v[a].r->cols[L.v[a].col].qual_only = true;
                }
            }
            for (size_t b = 0; b < R.n; b++) {
                const char *s = sitem_name(&R.v[b]);
                if (s != NULL && strcmp(s, names[k]) == 0 &&
                    !R.v[b].r->cols[R.v[b].col].qual_only) {
                    tr = t_ref(&R.v[b].r->cols[R.v[b].col].t);
                    R.v[b].r->cols[R.v[b].col].qual_only = true;
                }
            }
            TRY(t_union(x, &t, &tl));
            TRY(t_union(x, &t, &tr));
            if (j->jointype == PG_QUERY__JOIN_TYPE__JOIN_FULL && t.n > 0) {
                t.derived = true;
            }
            /* the join condition compares the two columns */
            taint both = {0};
            TRY(t_union(x, &both, &tl));
            TRY(t_union(x, &both, &tr));
            TRY(pred_taint(x, &both, false));
            m->cols[k].name = names[k];
            m->cols[k].t = t;
        }
        TRY(scope_push(x, sc, m));
        for (size_t k = 0; k < nn; k++) {
            TRY(sl_push(x, &J, m, k));
        }
    }
    for (int side = 0; side < 2; side++) {
        slist *S = side == 0 ? &L : &R;
        for (size_t a = 0; a < S->n; a++) {
            const char *s = sitem_name(&S->v[a]);
            bool used = false;
            for (size_t k = 0; s != NULL && k < nn; k++) {
                used |= strcmp(s, names[k]) == 0;
            }
            if (!used) {
                TRY(sl_push(x, &J, S->v[a].r, S->v[a].col));
            }
        }
    }
    TRY(pred_check(x, sc, j->quals));
    const char *an = alias_name(j->alias);
    if (an != NULL) {
        rte *r = NEW(x, rte);
        if (r == NULL) {
            return DBAO_ENOMEM;
        }
        r->refname = an;
        r->cols = xa(x, (J.n + 1) * sizeof(rcol));
        if (r->cols == NULL) {
            return DBAO_ENOMEM;
        }
        for (size_t k = 0; k < J.n; k++) {
            if (J.v[k].col == SIZE_MAX) {
                r->opaque = true;
                TRY(t_union(x, &r->opaque_t, &J.v[k].r->opaque_t));
                continue;
            }
            r->cols[r->ncols].name = J.v[k].r->cols[J.v[k].col].name;
            r->cols[r->ncols].t = t_ref(&J.v[k].r->cols[J.v[k].col].t);
            r->ncols++;
        }
        TRY(rename_cols(x, r, j->alias));
        for (size_t k = first; k < sc->n; k++) {
            sc->rtes[k]->hidden = true;
        }
        return push_all(x, sc, r, sl);
    }
    for (size_t k = 0; k < J.n; k++) {
        TRY(sl_push(x, sl, J.v[k].r, J.v[k].col));
    }
    return 0;
}

static int
add_from(ctx *x, scope *sc, PgQuery__Node *n, slist *sl)
{
    if (n == NULL) {
        return 0;
    }
    if (++x->depth > MAX_DEPTH) {
        return refuse(x, "54001", "statement too complex to analyse");
    }
    int rc = 0;
    rte *r = NULL;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_RANGE_VAR: {
        PgQuery__RangeVar *rv = n->range_var;
        const char *schema =
            rv->schemaname != NULL && rv->schemaname[0] != '\0' ? rv->schemaname : NULL;
        cte *c = schema == NULL ? cte_find(sc, rv->relname) : NULL;
        if (c != NULL) {
            r = NEW(x, rte);
            if (r == NULL) {
                rc = DBAO_ENOMEM;
                break;
            }
            r->refname = alias_name(rv->alias) ? alias_name(rv->alias) : c->name;
            r->ncols = c->ncols;
            r->cols = xa(x, (c->ncols + 1) * sizeof(rcol));
            if (r->cols == NULL) {
                rc = DBAO_ENOMEM;
                break;
            }
            for (size_t i = 0; i < c->ncols; i++) {
                r->cols[i].name = c->cols[i].name;
                r->cols[i].t = t_ref(&c->cols[i].t);
            }
            r->opaque = c->opaque;
            if ((rc = rename_cols(x, r, rv->alias)) == 0) {
                rc = push_all(x, sc, r, sl);
            }
            break;
        }
        if ((rc = rel_rte(x, schema, rv->relname, rv->alias, &r)) == 0) {
            rc = push_all(x, sc, r, sl);
        }
        break;
    }
    case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        PgQuery__RangeSubselect *rs = n->range_subselect;
        scope *s = scope_new(x, rs->lateral ? sc : sc->parent);
        if (s == NULL) {
            rc = DBAO_ENOMEM;
            break;
        }
        s->ctes = sc->ctes;
        qout o = {0};
        if ((rc = analyse_query(x, s, rs->subquery, &o, NULL)) != 0) {
            break;
        }
        if ((rc = outputs_rte(x, &o, alias_name(rs->alias), rs->alias, &r)) == 0) {
            rc = push_all(x, sc, r, sl);
        }
        break;
    }
    case PG_QUERY__NODE__NODE_RANGE_FUNCTION: {
        PgQuery__RangeFunction *rf = n->range_function;
        taint acc = {0};
        const char *fname = NULL;
        for (size_t i = 0; i < rf->n_functions && rc == 0; i++) {
            PgQuery__Node *it = rf->functions[i];
            if (it != NULL && it->node_case == PG_QUERY__NODE__NODE_LIST && it->list->n_items > 0) {
                PgQuery__Node *fn = it->list->items[0];
                if (fname == NULL && fn != NULL &&
                    fn->node_case == PG_QUERY__NODE__NODE_FUNC_CALL &&
                    fn->func_call->n_funcname > 0) {
                    fname = str_of(fn->func_call->funcname[fn->func_call->n_funcname - 1]);
                }
            }
            taint t;
            if ((rc = expr_taint(x, sc, it, &t)) == 0) {
                rc = t_union(x, &acc, &t);
            }
        }
        if (rc != 0) {
            break;
        }
        r = NEW(x, rte);
        if (r == NULL) {
            rc = DBAO_ENOMEM;
            break;
        }
        r->refname = alias_name(rf->alias) ? alias_name(rf->alias) : fname;
        r->opaque = true;
        acc.derived = acc.n > 0 ? acc.derived : false;
        r->opaque_t = acc;
        size_t nc = rf->alias != NULL ? rf->alias->n_colnames : 0;
        if (nc == 0) {
            nc = rf->n_coldeflist;
        }
        if (nc > 0) {
            r->cols = xa(x, nc * sizeof(rcol));
            if (r->cols == NULL) {
                rc = DBAO_ENOMEM;
                break;
            }
            for (size_t i = 0; i < nc; i++) {
                const char *nm = NULL;
                if (rf->alias != NULL && i < rf->alias->n_colnames) {
                    nm = str_of(rf->alias->colnames[i]);
                } else if (i < rf->n_coldeflist &&
                           rf->coldeflist[i]->node_case == PG_QUERY__NODE__NODE_COLUMN_DEF) {
                    nm = rf->coldeflist[i]->column_def->colname;
                }
                r->cols[r->ncols].name = nm ? nm : "?column?";
                r->cols[r->ncols].t = t_ref(&acc);
                r->ncols++;
            }
            r->opaque = false;
        } else if (fname != NULL) {
            /* a scalar function in FROM exposes one column named like the entry */
            r->cols = xa(x, sizeof(rcol));
            if (r->cols == NULL) {
                rc = DBAO_ENOMEM;
                break;
            }
            r->cols[0].name = r->refname;
            r->cols[0].t = t_ref(&acc);
        }
        rc = push_all(x, sc, r, sl);
        break;
    }
    case PG_QUERY__NODE__NODE_JOIN_EXPR:
        rc = add_join(x, sc, n->join_expr, sl);
        break;
    case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE: {
        PgQuery__RangeTableSample *ts = n->range_table_sample;
        rc = add_from(x, sc, ts->relation, sl);
        break;
    }
    default: {
        taint acc = {0};
        if ((rc = walk_msg(x, sc, (const ProtobufCMessage *) n, &acc)) != 0) {
            break;
        }
        r = NEW(x, rte);
        if (r == NULL) {
            rc = DBAO_ENOMEM;
            break;
        }
        if (n->node_case == PG_QUERY__NODE__NODE_RANGE_TABLE_FUNC) {
            r->refname = alias_name(n->range_table_func->alias);
        }
        r->opaque = true;
        acc.derived = acc.n > 0;
        r->opaque_t = acc;
        rc = push_all(x, sc, r, sl);
        break;
    }
    }
    x->depth--;
    return rc;
}

/* ---- target lists ---------------------------------------------------------------------------- */

static int
lf_push(ctx *x, leaf *lf, size_t tl, const sitem *it, bool star)
{
    if (lf == NULL) {
        return 0;
    }
    size_t cap = lf->nents; /* grow by doubling on powers of two */
    if ((cap & (cap - 1)) == 0) {
        size_t nc = cap ? cap * 2 : 8;
        oent *p = xa(x, nc * sizeof(oent));
        if (p == NULL) {
            return DBAO_ENOMEM;
        }
        if (cap) {
            memcpy(p, lf->ents, cap * sizeof(oent));
        }
        lf->ents = p;
    }
    oent *e = &lf->ents[lf->nents++];
    e->tl = tl;
    e->star = star;
    if (it != NULL) {
        e->it = *it;
    }
    return 0;
}

static int
targets(ctx *x, scope *sc, PgQuery__Node **tl, size_t n, slist *sl, qout *out, leaf *lf)
{
    for (size_t i = 0; i < n; i++) {
        if (tl[i] == NULL || tl[i]->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
            continue;
        }
        PgQuery__ResTarget *rt = tl[i]->res_target;
        PgQuery__Node *v = rt->val;
        if (v != NULL && v->node_case == PG_QUERY__NODE__NODE_COLUMN_REF &&
            v->column_ref->n_fields > 0 &&
            v->column_ref->fields[v->column_ref->n_fields - 1]->node_case ==
                PG_QUERY__NODE__NODE_A_STAR) {
            PgQuery__ColumnRef *cr = v->column_ref;
            if (cr->n_fields == 1) {
                for (size_t k = 0; k < sl->n; k++) {
                    const sitem *it = &sl->v[k];
                    taint t = it->col == SIZE_MAX ? t_ref(&it->r->opaque_t)
                                                  : t_ref(&it->r->cols[it->col].t);
                    note_taint(x, &t);
                    TRY(qo_push(x, out, sitem_name(it), &t));
                    TRY(lf_push(x, lf, i, it, true));
                }
                continue;
            }
            const char *rel = str_of(cr->fields[cr->n_fields - 2]);
            const char *schema = cr->n_fields >= 3 ? str_of(cr->fields[cr->n_fields - 3]) : NULL;
            rte *r = rel != NULL ? rte_find(sc, schema, rel, NULL) : NULL;
            if (r == NULL) {
                TRY(refuse(x, "42P01", "missing FROM-clause entry for \"%s\"", rel ? rel : "?"));
                continue;
            }
            if (r->opaque && r->ncols == 0) {
                sitem it = {r, SIZE_MAX};
                note_taint(x, &r->opaque_t);
                TRY(qo_push(x, out, NULL, &r->opaque_t));
                TRY(lf_push(x, lf, i, &it, true));
                continue;
            }
            for (size_t k = 0; k < r->ncols; k++) {
                if (r->cols[k].nostar) {
                    continue;
                }
                sitem it = {r, k};
                note_taint(x, &r->cols[k].t);
                TRY(qo_push(x, out, r->cols[k].name, &r->cols[k].t));
                TRY(lf_push(x, lf, i, &it, true));
            }
            continue;
        }
        taint t;
        TRY(expr_taint(x, sc, v, &t));
        const char *name = rt->name;
        if (name == NULL || name[0] == '\0') {
            int st;
            name = figure_colname(v, &st);
        }
        TRY(qo_push(x, out, name, &t));
        TRY(lf_push(x, lf, i, NULL, false));
    }
    return 0;
}

static leaf *
new_leaf(ctx *x, leaves *lv)
{
    if (lv == NULL) {
        return NULL;
    }
    if (grow_arr(x, (void **) &lv->v, &lv->cap, lv->n + 1, sizeof(leaf)) != 0) {
        return NULL;
    }
    leaf *l = &lv->v[lv->n++];
    memset(l, 0, sizeof(*l));
    return l;
}

/* ---- queries --------------------------------------------------------------------------------- */

static int
add_ctes(ctx *x, scope *sc, PgQuery__WithClause *w)
{
    if (w == NULL) {
        return 0;
    }
    for (size_t i = 0; i < w->n_ctes; i++) {
        PgQuery__Node *n = w->ctes[i];
        if (n == NULL || n->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR) {
            continue;
        }
        PgQuery__CommonTableExpr *ce = n->common_table_expr;
        cte *c = NEW(x, cte);
        if (c == NULL) {
            return DBAO_ENOMEM;
        }
        c->name = ce->ctename;
        c->opaque = true;
        if (w->recursive) {
            c->next = sc->ctes;
            sc->ctes = c;
        }
        for (int iter = 0;; iter++) {
            qout o = {0};
            scope *s = scope_new(x, sc);
            if (s == NULL) {
                return DBAO_ENOMEM;
            }
            TRY(analyse_query(x, s, ce->ctequery, &o, NULL));
            bool same = !c->opaque && c->ncols == o.n;
            rcol *cols = xa(x, (o.n + 1) * sizeof(rcol));
            if (cols == NULL) {
                return DBAO_ENOMEM;
            }
            for (size_t k = 0; k < o.n; k++) {
                cols[k].name = o.c[k].name ? o.c[k].name : "?column?";
                if (k < ce->n_aliascolnames && str_of(ce->aliascolnames[k]) != NULL) {
                    cols[k].name = str_of(ce->aliascolnames[k]);
                }
                cols[k].t = t_ref(&o.c[k].t);
                if (!c->opaque && k < c->ncols) {
                    TRY(t_union(x, &cols[k].t, &c->cols[k].t));
                    same = same && t_equal(&cols[k].t, &c->cols[k].t);
                }
            }
            c->cols = cols;
            c->ncols = o.n;
            c->opaque = false;
            if (!w->recursive || same) {
                break;
            }
            if (iter >= 8) {
                /* no fixed point: every column derived from everything seen */
                taint all = {0};
                for (size_t k = 0; k < c->ncols; k++) {
                    TRY(t_union(x, &all, &c->cols[k].t));
                }
                all.derived = all.n > 0;
                for (size_t k = 0; k < c->ncols; k++) {
                    c->cols[k].t = t_ref(&all);
                }
                break;
            }
        }
        if (!w->recursive) {
            c->next = sc->ctes;
            sc->ctes = c;
        }
    }
    return 0;
}

static int
any_masked(ctx *x, const qout *o, const char **path)
{
    for (size_t i = 0; i < o->n; i++) {
        for (uint32_t k = 0; k < o->c[i].t.n; k++) {
            if (x->act[o->c[i].t.ids[k]] != -1) {
                *path = x->cat->sens[o->c[i].t.ids[k]].path;
                return 1;
            }
        }
    }
    return 0;
}

static int
taint_masked(ctx *x, const taint *t, const char **path)
{
    qout o = {0};
    ocol c = {NULL, *t};
    o.c = &c;
    o.n = 1;
    return any_masked(x, &o, path);
}

static int
analyse_values(ctx *x, scope *sc, PgQuery__SelectStmt *s, qout *out, leaves *lv)
{
    size_t ncol = 0;
    for (size_t r = 0; r < s->n_values_lists; r++) {
        PgQuery__Node *l = s->values_lists[r];
        if (l == NULL || l->node_case != PG_QUERY__NODE__NODE_LIST) {
            continue;
        }
        for (size_t i = 0; i < l->list->n_items; i++) {
            taint t;
            TRY(expr_taint(x, sc, l->list->items[i], &t));
            if (i >= ncol) {
                char *nm = xa(x, 32);
                if (nm == NULL) {
                    return DBAO_ENOMEM;
                }
                snprintf(nm, 32, "column%zu", i + 1);
                taint e = {0};
                TRY(qo_push(x, out, nm, &e));
                ncol++;
            }
            TRY(t_union(x, &out->c[i].t, &t));
        }
    }
    leaf *lf = new_leaf(x, lv);
    if (lv != NULL) {
        if (lf == NULL) {
            return DBAO_ENOMEM;
        }
        lf->values = s;
        for (size_t i = 0; i < ncol; i++) {
            TRY(lf_push(x, lf, i, NULL, false));
        }
    }
    return 0;
}

static int
analyse_select(ctx *x, scope *parent, PgQuery__SelectStmt *s, qout *out, leaves *lv)
{
    if (++x->depth > MAX_DEPTH) {
        x->depth--;
        return refuse(x, "54001", "statement too complex to analyse");
    }
    int rc = 0;
    scope *sc = scope_new(x, parent);
    if (sc == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if ((rc = add_ctes(x, sc, s->with_clause)) != 0) {
        goto out;
    }
    if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE && s->op != 0) {
        qout l = {0}, r = {0};
        if (s->larg == NULL || s->rarg == NULL) {
            rc = refuse(x, "0A000", "malformed set operation");
            goto out;
        }
        if ((rc = analyse_select(x, sc, s->larg, &l, lv)) != 0 ||
            (rc = analyse_select(x, sc, s->rarg, &r, lv)) != 0) {
            goto out;
        }
        for (size_t i = 0; i < l.n; i++) {
            taint t = t_ref(&l.c[i].t);
            if (i < r.n && (rc = t_union(x, &t, &r.c[i].t)) != 0) {
                goto out;
            }
            if ((rc = qo_push(x, out, l.c[i].name, &t)) != 0) {
                goto out;
            }
        }
        if ((rc = sortby_list_pred(x, sc, s->sort_clause, s->n_sort_clause, out, true)) != 0 ||
            (rc = pred_check(x, sc, s->limit_count)) != 0 ||
            (rc = pred_check(x, sc, s->limit_offset)) != 0) {
            goto out;
        }
        goto out;
    }
    if (s->n_values_lists > 0) {
        rc = analyse_values(x, sc, s, out, lv);
        goto out;
    }
    slist sl = {0};
    for (size_t i = 0; i < s->n_from_clause; i++) {
        if ((rc = add_from(x, sc, s->from_clause[i], &sl)) != 0) {
            goto out;
        }
    }
    if ((rc = pred_check(x, sc, s->where_clause)) != 0) {
        goto out;
    }
    leaf *lf = new_leaf(x, lv);
    if (lv != NULL && lf == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (lf != NULL) {
        lf->tl = &s->target_list;
        lf->ntl = &s->n_target_list;
    }
    if ((rc = targets(x, sc, s->target_list, s->n_target_list, &sl, out, lf)) != 0) {
        goto out;
    }
    if ((rc = sortby_list_pred(x, sc, s->group_clause, s->n_group_clause, out, false)) != 0 ||
        (rc = pred_check(x, sc, s->having_clause)) != 0 ||
        (rc = sortby_list_pred(x, sc, s->sort_clause, s->n_sort_clause, out, true)) != 0 ||
        (rc = sortby_list_pred(x, sc, s->distinct_clause, s->n_distinct_clause, out, true)) != 0 ||
        (rc = pred_check(x, sc, s->limit_count)) != 0 ||
        (rc = pred_check(x, sc, s->limit_offset)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < s->n_window_clause; i++) {
        PgQuery__Node *w = s->window_clause[i];
        if (w != NULL && w->node_case == PG_QUERY__NODE__NODE_WINDOW_DEF &&
            (rc = window_pred(x, sc, w->window_def)) != 0) {
            goto out;
        }
    }
    if (s->into_clause != NULL) {
        const char *p;
        if (any_masked(x, out, &p)) {
            rc = refuse(x, "42501", "SELECT INTO would copy masked column %s", p);
        }
    }
out:
    x->depth--;
    return rc;
}

static int
target_rte(ctx *x, scope *sc, PgQuery__RangeVar *rv, rte **out)
{
    const char *schema = rv->schemaname != NULL && rv->schemaname[0] ? rv->schemaname : NULL;
    TRY(rel_rte(x, schema, rv->relname, rv->alias, out));
    return scope_push(x, sc, *out);
}

static int
returning(ctx *x, scope *sc, rte *target, PgQuery__Node ***list, size_t *n, qout *out, leaves *lv)
{
    if (*n == 0) {
        return 0;
    }
    slist sl = {0};
    if (target->opaque && target->ncols == 0) {
        TRY(sl_push(x, &sl, target, SIZE_MAX));
    }
    for (size_t i = 0; i < target->ncols; i++) {
        if (!target->cols[i].nostar) {
            TRY(sl_push(x, &sl, target, i));
        }
    }
    leaf *lf = new_leaf(x, lv);
    if (lv != NULL && lf == NULL) {
        return DBAO_ENOMEM;
    }
    if (lf != NULL) {
        lf->tl = list;
        lf->ntl = n;
    }
    return targets(x, sc, *list, *n, &sl, out, lf);
}

static int
set_list_copies(ctx *x, scope *sc, PgQuery__Node **tl, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (tl[i] == NULL || tl[i]->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
            continue;
        }
        taint t;
        const char *p;
        TRY(expr_taint(x, sc, tl[i]->res_target->val, &t));
        if (taint_masked(x, &t, &p)) {
            return refuse(x, "42501", "%s would copy masked column %s", what, p);
        }
    }
    return 0;
}

static int
analyse_dml(ctx *x, scope *parent, PgQuery__Node *n, qout *out, leaves *lv)
{
    scope *sc = scope_new(x, parent);
    if (sc == NULL) {
        return DBAO_ENOMEM;
    }
    rte *t = NULL;
    const char *p;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_INSERT_STMT: {
        PgQuery__InsertStmt *s = n->insert_stmt;
        TRY(add_ctes(x, sc, s->with_clause));
        if (s->select_stmt != NULL) {
            scope *q = scope_new(x, sc);
            if (q == NULL) {
                return DBAO_ENOMEM;
            }
            qout o = {0};
            TRY(analyse_query(x, q, s->select_stmt, &o, NULL));
            if (any_masked(x, &o, &p)) {
                return refuse(x, "42501", "INSERT ... SELECT would copy masked column %s", p);
            }
        }
        if (s->relation == NULL) {
            return refuse(x, "0A000", "INSERT without a target");
        }
        TRY(target_rte(x, sc, s->relation, &t));
        if (s->on_conflict_clause != NULL) {
            rte *ex = NEW(x, rte);
            if (ex == NULL) {
                return DBAO_ENOMEM;
            }
            *ex = *t;
            ex->refname = "excluded";
            ex->schema = NULL;
            TRY(scope_push(x, sc, ex));
            TRY(pred_check(x, sc, s->on_conflict_clause->where_clause));
            TRY(set_list_copies(x, sc, s->on_conflict_clause->target_list,
                                s->on_conflict_clause->n_target_list, "ON CONFLICT DO UPDATE"));
            ex->hidden = true;
        }
        return returning(x, sc, t, &s->returning_list, &s->n_returning_list, out, lv);
    }
    case PG_QUERY__NODE__NODE_UPDATE_STMT: {
        PgQuery__UpdateStmt *s = n->update_stmt;
        TRY(add_ctes(x, sc, s->with_clause));
        if (s->relation == NULL) {
            return refuse(x, "0A000", "UPDATE without a target");
        }
        TRY(target_rte(x, sc, s->relation, &t));
        slist sl = {0};
        for (size_t i = 0; i < s->n_from_clause; i++) {
            TRY(add_from(x, sc, s->from_clause[i], &sl));
        }
        TRY(pred_check(x, sc, s->where_clause));
        TRY(set_list_copies(x, sc, s->target_list, s->n_target_list, "UPDATE"));
        return returning(x, sc, t, &s->returning_list, &s->n_returning_list, out, lv);
    }
    case PG_QUERY__NODE__NODE_DELETE_STMT: {
        PgQuery__DeleteStmt *s = n->delete_stmt;
        TRY(add_ctes(x, sc, s->with_clause));
        if (s->relation == NULL) {
            return refuse(x, "0A000", "DELETE without a target");
        }
        TRY(target_rte(x, sc, s->relation, &t));
        slist sl = {0};
        for (size_t i = 0; i < s->n_using_clause; i++) {
            TRY(add_from(x, sc, s->using_clause[i], &sl));
        }
        TRY(pred_check(x, sc, s->where_clause));
        return returning(x, sc, t, &s->returning_list, &s->n_returning_list, out, lv);
    }
    case PG_QUERY__NODE__NODE_MERGE_STMT: {
        PgQuery__MergeStmt *s = n->merge_stmt;
        TRY(add_ctes(x, sc, s->with_clause));
        if (s->relation == NULL) {
            return refuse(x, "0A000", "MERGE without a target");
        }
        TRY(target_rte(x, sc, s->relation, &t));
        slist sl = {0};
        TRY(add_from(x, sc, s->source_relation, &sl));
        TRY(pred_check(x, sc, s->join_condition));
        taint acc = {0};
        for (size_t i = 0; i < s->n_merge_when_clauses; i++) {
            taint tt;
            TRY(expr_taint(x, sc, s->merge_when_clauses[i], &tt));
            TRY(t_union(x, &acc, &tt));
        }
        if (taint_masked(x, &acc, &p)) {
            return refuse(x, "42501", "MERGE would copy masked column %s", p);
        }
        return 0;
    }
    default:
        return refuse(x, "0A000", "unsupported statement in a query position");
    }
}

static int
analyse_query(ctx *x, scope *parent, PgQuery__Node *q, qout *out, leaves *lv)
{
    if (q == NULL) {
        return 0;
    }
    if (q->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
        return analyse_select(x, parent, q->select_stmt, out, lv);
    }
    return analyse_dml(x, parent, q, out, lv);
}

/* ---- rewriting ------------------------------------------------------------------------------- */

static char *
mstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

static PgQuery__Node *
mk_node(void)
{
    PgQuery__Node *n = malloc(sizeof(*n));
    if (n != NULL) {
        pg_query__node__init(n);
    }
    return n;
}

static PgQuery__Node *
mk_string(const char *s)
{
    PgQuery__Node *n = mk_node();
    PgQuery__String *v = malloc(sizeof(*v));
    char *d = mstrdup(s);
    if (n == NULL || v == NULL || d == NULL) {
        free(n);
        free(v);
        free(d);
        return NULL;
    }
    pg_query__string__init(v);
    v->sval = d;
    n->node_case = PG_QUERY__NODE__NODE_STRING;
    n->string = v;
    return n;
}

static PgQuery__Node *
mk_const_str(const char *s)
{
    PgQuery__Node *n = mk_node();
    PgQuery__AConst *c = malloc(sizeof(*c));
    PgQuery__String *v = malloc(sizeof(*v));
    char *d = mstrdup(s);
    if (n == NULL || c == NULL || v == NULL || d == NULL) {
        free(n);
        free(c);
        free(v);
        free(d);
        return NULL;
    }
    pg_query__a__const__init(c);
    pg_query__string__init(v);
    v->sval = d;
    c->val_case = PG_QUERY__A__CONST__VAL_SVAL;
    c->sval = v;
    c->location = -1;
    n->node_case = PG_QUERY__NODE__NODE_A_CONST;
    n->a_const = c;
    return n;
}

static void
free_node(PgQuery__Node *n)
{
    if (n != NULL) {
        pg_query__node__free_unpacked(n, NULL);
    }
}

static PgQuery__Node **
mk_list(size_t n)
{
    return calloc(n ? n : 1, sizeof(PgQuery__Node *));
}

/* schema.name(args...): takes the args (freed on failure). */
static PgQuery__Node *
mk_call(const char *schema, const char *name, PgQuery__Node **args, size_t nargs)
{
    PgQuery__Node *n = mk_node();
    PgQuery__FuncCall *f = malloc(sizeof(*f));
    PgQuery__Node **fn = mk_list(2);
    PgQuery__Node **a = mk_list(nargs);
    if (n == NULL || f == NULL || fn == NULL || a == NULL) {
        free(n);
        free(f);
        free(fn);
        free(a);
        for (size_t i = 0; i < nargs; i++) {
            free_node(args[i]);
        }
        return NULL;
    }
    pg_query__func_call__init(f);
    n->node_case = PG_QUERY__NODE__NODE_FUNC_CALL;
    n->func_call = f;
    f->funcformat = PG_QUERY__COERCION_FORM__COERCE_EXPLICIT_CALL;
    f->location = -1;
    f->funcname = fn;
    f->args = a;
    for (size_t i = 0; i < nargs; i++) {
        a[i] = args[i];
        f->n_args++;
    }
    fn[0] = mk_string(schema);
    fn[1] = mk_string(name);
    f->n_funcname = (fn[0] != NULL) + (fn[1] != NULL);
    if (fn[0] == NULL || fn[1] == NULL) {
        if (fn[0] == NULL) {
            fn[0] = fn[1];
        }
        free_node(n);
        return NULL;
    }
    return n;
}

/* ('<prefix>' ||
 * pg_catalog.encode(pg_catalog.convert_to((<hole>)::pg_catalog.text, 'UTF8'),
 * 'hex')); *hole receives the address of the TypeCast's arg (NULL until
 * filled). */
static PgQuery__Node *
mk_wrapper(const char *prefix, PgQuery__Node ***hole)
{
    PgQuery__Node *cast = mk_node();
    PgQuery__TypeCast *tc = malloc(sizeof(*tc));
    PgQuery__TypeName *tn = malloc(sizeof(*tn));
    PgQuery__Node **names = mk_list(2);
    if (cast == NULL || tc == NULL || tn == NULL || names == NULL) {
        free(cast);
        free(tc);
        free(tn);
        free(names);
        return NULL;
    }
    pg_query__type_cast__init(tc);
    pg_query__type_name__init(tn);
    tc->location = -1;
    tn->location = -1;
    tn->typemod = -1;
    tn->names = names;
    tc->type_name = tn;
    cast->node_case = PG_QUERY__NODE__NODE_TYPE_CAST;
    cast->type_cast = tc;
    names[0] = mk_string("pg_catalog");
    names[1] = mk_string("text");
    tn->n_names = (names[0] != NULL) + (names[1] != NULL);
    if (names[0] == NULL || names[1] == NULL) {
        if (names[0] == NULL) {
            names[0] = names[1];
        }
        free_node(cast);
        return NULL;
    }
    PgQuery__Node *a1[2] = {cast, mk_const_str("UTF8")};
    if (a1[1] == NULL) {
        free_node(cast);
        return NULL;
    }
    PgQuery__Node *conv = mk_call("pg_catalog", "convert_to", a1, 2);
    if (conv == NULL) {
        return NULL;
    }
    PgQuery__Node *a2[2] = {conv, mk_const_str("hex")};
    if (a2[1] == NULL) {
        free_node(conv);
        return NULL;
    }
    PgQuery__Node *enc = mk_call("pg_catalog", "encode", a2, 2);
    if (enc == NULL) {
        return NULL;
    }
    PgQuery__Node *pre = mk_const_str(prefix);
    PgQuery__Node *op = mk_node();
    PgQuery__AExpr *e = malloc(sizeof(*e));
    PgQuery__Node **on = mk_list(1);
    PgQuery__Node *ops = mk_string("||");
    if (pre == NULL || op == NULL || e == NULL || on == NULL || ops == NULL) {
        free_node(enc);
        free_node(pre);
        free(op);
        free(e);
        free(on);
        free_node(ops);
        return NULL;
    }
    pg_query__a__expr__init(e);
    e->kind = PG_QUERY__A__EXPR__KIND__AEXPR_OP;
    e->location = -1;
    on[0] = ops;
    e->name = on;
    e->n_name = 1;
    e->lexpr = pre;
    e->rexpr = enc;
    op->node_case = PG_QUERY__NODE__NODE_A_EXPR;
    op->a_expr = e;
    *hole = &tc->arg;
    return op;
}

static int
wrap_slot(ctx *x, PgQuery__Node **slot, int action)
{
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "%s%d:", x->marker, action);
    PgQuery__Node **hole = NULL;
    PgQuery__Node *w = mk_wrapper(prefix, &hole);
    if (w == NULL) {
        return DBAO_ENOMEM;
    }
    *hole = *slot;
    *slot = w;
    x->changed = true;
    return 0;
}

static PgQuery__Node *
mk_colref(const char *rel, const char *col)
{
    PgQuery__Node *n = mk_node();
    PgQuery__ColumnRef *c = malloc(sizeof(*c));
    PgQuery__Node **f = mk_list(2);
    if (n == NULL || c == NULL || f == NULL) {
        free(n);
        free(c);
        free(f);
        return NULL;
    }
    pg_query__column_ref__init(c);
    c->location = -1;
    c->fields = f;
    n->node_case = PG_QUERY__NODE__NODE_COLUMN_REF;
    n->column_ref = c;
    if (rel != NULL) {
        if ((f[c->n_fields] = mk_string(rel)) == NULL) {
            free_node(n);
            return NULL;
        }
        c->n_fields++;
    }
    if ((f[c->n_fields] = mk_string(col)) == NULL) {
        free_node(n);
        return NULL;
    }
    c->n_fields++;
    return n;
}

static PgQuery__Node *
mk_restarget(PgQuery__Node *val)
{
    PgQuery__Node *n = mk_node();
    PgQuery__ResTarget *r = malloc(sizeof(*r));
    if (n == NULL || r == NULL || val == NULL) {
        free(n);
        free(r);
        free_node(val);
        return NULL;
    }
    pg_query__res_target__init(r);
    r->location = -1;
    r->val = val;
    n->node_case = PG_QUERY__NODE__NODE_RES_TARGET;
    n->res_target = r;
    return n;
}

static int
set_label(PgQuery__ResTarget *rt, const char *label)
{
    /* The output labels of a set operation are borrowed from its first branch's targets:
     * relabelling that target with its own name must not free the string the later branches
     * are labelled from (found by fuzz_mask_sql: SELECT ... INTERSECT SELECT ...). */
    if (label == rt->name) {
        return 0;
    }
    char *d = mstrdup(label);
    if (d == NULL) {
        return DBAO_ENOMEM;
    }
    if (rt->name != NULL && rt->name != protobuf_c_empty_string) {
        free(rt->name);
    }
    rt->name = d;
    return 0;
}

/* Expand the `*` targets of a leaf into explicit column references. */
static int
expand_stars(ctx *x, leaf *lf)
{
    size_t n = lf->nents;
    for (size_t p = 0; p < n; p++) {
        if (lf->ents[p].star && lf->ents[p].it.col == SIZE_MAX) {
            return refuse(x, "0A000", "cannot expand * over a function result to mask it");
        }
    }
    PgQuery__Node **old = *lf->tl;
    size_t nold = *lf->ntl;
    PgQuery__Node **nv = mk_list(n + nold);
    if (nv == NULL) {
        return DBAO_ENOMEM;
    }
    size_t k = 0;
    bool *used = xa(x, nold + 1);
    if (used == NULL) {
        free(nv);
        return DBAO_ENOMEM;
    }
    for (size_t p = 0; p < n; p++) {
        oent *e = &lf->ents[p];
        if (!e->star) {
            nv[k++] = old[e->tl];
            used[e->tl] = true;
            e->tl = k - 1;
            continue;
        }
        const rte *r = e->it.r;
        PgQuery__Node *cr = mk_colref(r->refname, r->cols[e->it.col].name);
        PgQuery__Node *rt = cr != NULL ? mk_restarget(cr) : NULL;
        if (rt == NULL) {
            for (size_t j = 0; j < k; j++) {
                bool mine = true;
                for (size_t q = 0; q < nold; q++) {
                    mine &= nv[j] != old[q];
                }
                if (mine) {
                    free_node(nv[j]);
                }
            }
            free(nv);
            return DBAO_ENOMEM;
        }
        nv[k++] = rt;
        e->tl = k - 1;
        e->star = false;
    }
    /* targets that produced no output (an empty `*`) and the `*` nodes themselves
     */
    for (size_t q = 0; q < nold; q++) {
        if (!used[q]) {
            free_node(old[q]);
        }
    }
    free(old);
    *lf->tl = nv;
    *lf->ntl = k;
    x->changed = true;
    return 0;
}

static int
apply_leaf(ctx *x, leaf *lf, const int *act, const qout *o)
{
    if (lf->values != NULL) {
        for (size_t r = 0; r < lf->values->n_values_lists; r++) {
            PgQuery__Node *l = lf->values->values_lists[r];
            if (l == NULL || l->node_case != PG_QUERY__NODE__NODE_LIST) {
                continue;
            }
            for (size_t i = 0; i < l->list->n_items && i < o->n; i++) {
                if (act[i] >= 0) {
                    TRY(wrap_slot(x, &l->list->items[i], act[i]));
                }
            }
        }
        return 0;
    }
    bool need = false;
    for (size_t p = 0; p < lf->nents && p < o->n; p++) {
        need |= act[p] >= 0 && lf->ents[p].star;
    }
    if (need) {
        TRY(expand_stars(x, lf));
    }
    for (size_t p = 0; p < lf->nents && p < o->n; p++) {
        if (act[p] < 0) {
            continue;
        }
        PgQuery__Node *n = (*lf->tl)[lf->ents[p].tl];
        if (n == NULL || n->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
            continue;
        }
        PgQuery__ResTarget *rt = n->res_target;
        TRY(set_label(rt, o->c[p].name != NULL ? o->c[p].name : "?column?"));
        TRY(wrap_slot(x, &rt->val, act[p]));
    }
    return 0;
}

static int
add_decision(ctx *x, const char *col, const char *label, int action, bool derived)
{
    if (x->ndec == x->capdec) {
        size_t nc = x->capdec ? x->capdec * 2 : 8;
        mask_sql_decision *p = dbao_realloc(x->dec, nc * sizeof(*p));
        if (p == NULL) {
            return DBAO_ENOMEM;
        }
        x->dec = p;
        x->capdec = nc;
    }
    mask_sql_decision *d = &x->dec[x->ndec];
    size_t cl = strlen(col) + 1, ll = strlen(label) + 1;
    d->column = dbao_malloc(cl);
    d->label = dbao_malloc(ll);
    if (d->column == NULL || d->label == NULL) {
        dbao_free(d->column);
        dbao_free(d->label);
        return DBAO_ENOMEM;
    }
    memcpy(d->column, col, cl);
    memcpy(d->label, label, ll);
    d->action = action;
    d->derived = derived;
    x->ndec++;
    return 0;
}

/* Decide and apply the masking of a statement's outermost outputs. */
static int
finish_outputs(ctx *x, const qout *o, leaves *lv, int32_t start, int32_t end)
{
    if (o->n == 0) {
        return 0;
    }
    int *act = xa(x, o->n * sizeof(int));
    mask_type *tg = xa(x, o->n * sizeof(mask_type));
    if (act == NULL || tg == NULL) {
        return DBAO_ENOMEM;
    }
    for (size_t t = 0; t < x->ntags; t++) {
        if (x->tags[t].pos < start || x->tags[t].pos >= end) {
            continue;
        }
        bool fwd = x->tags[t].forward;
        int32_t best = fwd ? INT32_MAX : -1;
        size_t bp = SIZE_MAX;
        for (size_t l = 0; l < lv->n; l++) {
            leaf *lf = &lv->v[l];
            if (lf->tl == NULL) {
                continue;
            }
            for (size_t p = 0; p < lf->nents; p++) {
                PgQuery__Node *n = (*lf->tl)[lf->ents[p].tl];
                if (n == NULL || n->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
                    continue;
                }
                int32_t loc = n->res_target->location;
                if (loc < 0) {
                    continue;
                }
                if (fwd ? (loc > x->tags[t].pos && loc < best)
                        : (loc <= x->tags[t].pos && loc > best)) {
                    best = loc;
                    bp = p;
                }
            }
        }
        if (bp < o->n && tg[bp] == MASK_T_NONE) {
            tg[bp] = x->tags[t].type;
        }
    }
    bool any = false;
    for (size_t p = 0; p < o->n; p++) {
        const taint *t = &o->c[p].t;
        act[p] = -1;
        if (t->n == 0 && tg[p] == MASK_T_NONE) {
            continue;
        }
        /* direct: passed through unchanged from columns that all get the same action (one
         * column, or the same-named column of same-named tables, or UNION branches) */
        bool direct = t->n >= 1 && !t->derived;
        for (uint32_t k = 1; direct && k < t->n; k++) {
            direct = x->act[t->ids[k]] == x->act[t->ids[0]];
        }
        if (direct) {
            act[p] = x->act[t->ids[0]];
        } else {
            for (uint32_t k = 0; k < t->n; k++) {
                if (x->act[t->ids[k]] != -1) {
                    act[p] = mask_policy_derived_action(x->pol);
                    break;
                }
            }
        }
        char tagcol[64];
        const char *col = t->n > 0 ? x->cat->sens[t->ids[0]].path : NULL;
        if (tg[p] != MASK_T_NONE) {
            int ta =
                mask_rule_action_for(mask_policy_type_rule(x->pol, tg[p]), x->roles, x->nroles);
            if (ta != -1 && x->masked_role) {
                act[p] = ta;
            }
            x->sensitive = true;
            if (col == NULL) {
                snprintf(tagcol, sizeof(tagcol), "@PII:%s", mask_type_name(tg[p]));
                col = tagcol;
            }
        }
        TRY(add_decision(x, col, o->c[p].name ? o->c[p].name : "?column?", act[p], !direct));
        if (act[p] >= 0) {
            any = true;
        }
    }
    if (!any || !x->masked_role) {
        return 0;
    }
    x->masked = true;
    x->stmt_masked++;
    for (size_t l = 0; l < lv->n; l++) {
        TRY(apply_leaf(x, &lv->v[l], act, o));
    }
    return 0;
}

static int
top_query(ctx *x, PgQuery__Node *q, int32_t start, int32_t end)
{
    leaves lv = {0};
    qout o = {0};
    scope *sc = scope_new(x, NULL);
    if (sc == NULL) {
        return DBAO_ENOMEM;
    }
    TRY(analyse_query(x, sc, q, &o, &lv));
    return finish_outputs(x, &o, &lv, start, end);
}

/* ---- statements ------------------------------------------------------------------------------ */

static bool
defelem_is(PgQuery__Node *n, const char *name, const char **val)
{
    if (n == NULL || n->node_case != PG_QUERY__NODE__NODE_DEF_ELEM ||
        strcmp(n->def_elem->defname, name) != 0) {
        return false;
    }
    *val = NULL;
    PgQuery__Node *a = n->def_elem->arg;
    if (a != NULL && a->node_case == PG_QUERY__NODE__NODE_STRING) {
        *val = a->string->sval;
    } else if (a != NULL && a->node_case == PG_QUERY__NODE__NODE_BOOLEAN) {
        *val = a->boolean->boolval ? "true" : "false";
    }
    return true;
}

static int
copy_stmt(ctx *x, PgQuery__CopyStmt *c, int32_t start, int32_t end)
{
    if (c->is_from) {
        return 0;
    }
    unsigned before = x->stmt_masked;
    PgQuery__Node *sel = NULL;
    if (c->query != NULL) {
        TRY(top_query(x, c->query, start, end));
    } else if (c->relation != NULL) {
        /* COPY t [(cols)] TO: analysed as SELECT cols FROM ONLY t */
        PgQuery__RangeVar *rv = c->relation;
        const char *schema = rv->schemaname && rv->schemaname[0] ? rv->schemaname : NULL;
        rte *r;
        TRY(rel_rte(x, schema, rv->relname, NULL, &r));
        sel = mk_node();
        PgQuery__SelectStmt *s = malloc(sizeof(*s));
        PgQuery__Node *from = mk_node();
        PgQuery__RangeVar *nrv = malloc(sizeof(*nrv));
        size_t ncols = c->n_attlist;
        for (size_t i = 0; c->n_attlist == 0 && i < r->ncols; i++) {
            ncols += !r->cols[i].nostar;
        }
        PgQuery__Node **tl = mk_list(ncols);
        PgQuery__Node **fl = mk_list(1);
        if (sel == NULL || s == NULL || from == NULL || nrv == NULL || tl == NULL || fl == NULL) {
            free(sel);
            free(s);
            free(from);
            free(nrv);
            free(tl);
            free(fl);
            return DBAO_ENOMEM;
        }
        pg_query__select_stmt__init(s);
        s->op = PG_QUERY__SET_OPERATION__SETOP_NONE;
        s->limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_DEFAULT;
        sel->node_case = PG_QUERY__NODE__NODE_SELECT_STMT;
        sel->select_stmt = s;
        pg_query__range_var__init(nrv);
        from->node_case = PG_QUERY__NODE__NODE_RANGE_VAR;
        from->range_var = nrv;
        fl[0] = from;
        s->from_clause = fl;
        s->n_from_clause = 1;
        s->target_list = tl;
        nrv->location = -1;
        nrv->inh = false;
        for (int32_t i = mask__cat_rel_first(x->cat, rv->relname); i >= 0;
             i = x->cat->rels[i].next) {
            if (strcmp(x->cat->rels[i].name, rv->relname) == 0 && x->cat->rels[i].kind == 'p') {
                nrv->inh = true;
            }
        }
        nrv->relname = mstrdup(rv->relname);
        nrv->schemaname = schema ? mstrdup(schema) : NULL;
        nrv->relpersistence = mstrdup("p");
        int rc = (nrv->relname == NULL || (schema && nrv->schemaname == NULL) ||
                  nrv->relpersistence == NULL)
                     ? DBAO_ENOMEM
                     : 0;
        for (size_t i = 0; i < ncols && rc == 0; i++) {
            const char *cn = c->n_attlist > 0 ? str_of(c->attlist[i]) : r->cols[i].name;
            if (c->n_attlist == 0 && r->cols[i].nostar) {
                break; /* nostar columns come after the relation's own */
            }
            PgQuery__Node *t = cn != NULL ? mk_restarget(mk_colref(NULL, cn)) : NULL;
            if (t == NULL) {
                rc = cn != NULL ? DBAO_ENOMEM : refuse(x, "0A000", "bad COPY column list");
                break;
            }
            tl[s->n_target_list++] = t;
        }
        if (rc == 0) {
            rc = top_query(x, sel, start, end);
        }
        if (rc != 0 || x->stmt_masked == before) {
            free_node(sel);
            return rc;
        }
        pg_query__range_var__free_unpacked(c->relation, NULL);
        c->relation = NULL;
        for (size_t i = 0; i < c->n_attlist; i++) {
            free_node(c->attlist[i]);
        }
        free(c->attlist);
        c->attlist = NULL;
        c->n_attlist = 0;
        c->query = sel;
        x->changed = true;
    }
    if (x->stmt_masked == before) {
        return 0;
    }
    /* The statement is deparsed again: an option without a value that PostgreSQL would refuse
     * anyway ("(FORMAT, x)") crashes libpg_query's deparser (found by fuzz_mask_sql), so only
     * the boolean options may come without one. */
    for (size_t i = 0; i < c->n_options; i++) {
        PgQuery__Node *n = c->options[i];
        if (n == NULL || n->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) {
            return refuse(x, "42601", "COPY options cannot be parsed");
        }
        const PgQuery__DefElem *d = n->def_elem;
        if (d->arg == NULL && strcmp(d->defname, "header") != 0 &&
            strcmp(d->defname, "freeze") != 0) {
            return refuse(x, "42601", "a COPY option other than HEADER or FREEZE needs a value");
        }
    }
    const char *fmt = "text";
    for (size_t i = 0; i < c->n_options; i++) {
        const char *v;
        if (defelem_is(c->options[i], "format", &v) && v != NULL) {
            fmt = v;
        }
    }
    if (strcmp(fmt, "binary") == 0) {
        return refuse(x, "0A000", "binary COPY of masked columns is not supported");
    }
    for (size_t i = 0; i < c->n_options; i++) {
        const char *v;
        bool csv = strcmp(fmt, "csv") == 0;
        if ((defelem_is(c->options[i], "delimiter", &v) &&
             (v == NULL || strcmp(v, csv ? "," : "\t") != 0)) ||
            (defelem_is(c->options[i], "quote", &v) && (v == NULL || strcmp(v, "\"") != 0)) ||
            (defelem_is(c->options[i], "escape", &v) && (v == NULL || strcmp(v, "\"") != 0))) {
            return refuse(x, "0A000",
                          "COPY of masked columns needs the default delimiter, "
                          "quote and escape");
        }
    }
    if (c->is_program || (c->filename != NULL && c->filename[0] != '\0')) {
        return refuse(x, "42501", "COPY of masked columns to a server file or program");
    }
    return 0;
}

static bool
harmless_stmt(PgQuery__Node__NodeCase k)
{
    switch (k) {
    case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
    case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
    case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
    case PG_QUERY__NODE__NODE_LISTEN_STMT:
    case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
    case PG_QUERY__NODE__NODE_NOTIFY_STMT:
    case PG_QUERY__NODE__NODE_DISCARD_STMT:
    case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
    case PG_QUERY__NODE__NODE_FETCH_STMT:
    case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
    case PG_QUERY__NODE__NODE_CHECK_POINT_STMT:
    case PG_QUERY__NODE__NODE_LOCK_STMT:
    case PG_QUERY__NODE__NODE_CONSTRAINTS_SET_STMT:
    case PG_QUERY__NODE__NODE_VIEW_STMT:
    case PG_QUERY__NODE__NODE_CREATE_STMT:
    case PG_QUERY__NODE__NODE_DROP_STMT:
    case PG_QUERY__NODE__NODE_TRUNCATE_STMT:
    case PG_QUERY__NODE__NODE_INDEX_STMT:
    case PG_QUERY__NODE__NODE_VACUUM_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SCHEMA_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SEQ_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SEQ_STMT:
    case PG_QUERY__NODE__NODE_GRANT_STMT:
    case PG_QUERY__NODE__NODE_GRANT_ROLE_STMT:
    case PG_QUERY__NODE__NODE_REINDEX_STMT:
    case PG_QUERY__NODE__NODE_CLUSTER_STMT:
        return true;
    default:
        return false;
    }
}

static int
analyse_stmt(ctx *x, PgQuery__Node *n, int32_t start, int32_t end)
{
    if (n == NULL) {
        return 0;
    }
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_SELECT_STMT:
    case PG_QUERY__NODE__NODE_INSERT_STMT:
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
    case PG_QUERY__NODE__NODE_DELETE_STMT:
    case PG_QUERY__NODE__NODE_MERGE_STMT:
        return top_query(x, n, start, end);
    case PG_QUERY__NODE__NODE_COPY_STMT:
        return copy_stmt(x, n->copy_stmt, start, end);
    case PG_QUERY__NODE__NODE_PREPARE_STMT:
        return top_query(x, n->prepare_stmt->query, start, end);
    case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
        return top_query(x, n->declare_cursor_stmt->query, start, end);
    case PG_QUERY__NODE__NODE_EXPLAIN_STMT: {
        PgQuery__ExplainStmt *e = n->explain_stmt;
        bool analyze = false;
        for (size_t i = 0; i < e->n_options; i++) {
            const char *v;
            if (defelem_is(e->options[i], "analyze", &v)) {
                analyze = v == NULL || strcmp(v, "false") != 0;
            }
        }
        if (!analyze || e->query == NULL) {
            return 0;
        }
        if (e->query->node_case == PG_QUERY__NODE__NODE_SELECT_STMT ||
            e->query->node_case == PG_QUERY__NODE__NODE_INSERT_STMT ||
            e->query->node_case == PG_QUERY__NODE__NODE_UPDATE_STMT ||
            e->query->node_case == PG_QUERY__NODE__NODE_DELETE_STMT ||
            e->query->node_case == PG_QUERY__NODE__NODE_MERGE_STMT) {
            qout o = {0};
            scope *sc = scope_new(x, NULL);
            if (sc == NULL) {
                return DBAO_ENOMEM;
            }
            return analyse_query(x, sc, e->query, &o, NULL);
        }
        return analyse_stmt(x, e->query, start, end);
    }
    case PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT: {
        qout o = {0};
        const char *p;
        scope *sc = scope_new(x, NULL);
        if (sc == NULL) {
            return DBAO_ENOMEM;
        }
        TRY(analyse_query(x, sc, n->create_table_as_stmt->query, &o, NULL));
        if (any_masked(x, &o, &p)) {
            return refuse(x, "42501", "CREATE TABLE AS would copy masked column %s", p);
        }
        return 0;
    }
    case PG_QUERY__NODE__NODE_EXECUTE_STMT: {
        PgQuery__ExecuteStmt *e = n->execute_stmt;
        scope *sc = scope_new(x, NULL);
        if (sc == NULL) {
            return DBAO_ENOMEM;
        }
        for (size_t i = 0; i < e->n_params; i++) {
            taint t;
            const char *p;
            TRY(expr_taint(x, sc, e->params[i], &t));
            if (taint_masked(x, &t, &p)) {
                return refuse(x, "42501", "EXECUTE parameter would pass masked column %s", p);
            }
        }
        return 0;
    }
    case PG_QUERY__NODE__NODE_DO_STMT:
        return refuse(x, "42501", "DO blocks are not allowed for masked roles");
    case PG_QUERY__NODE__NODE_CALL_STMT: {
        PgQuery__FuncCall *fc = n->call_stmt->funccall;
        if (fc == NULL) {
            return refuse(x, "0A000", "unsupported CALL");
        }
        TRY(check_func(x, fc->funcname, fc->n_funcname, true));
        scope *sc = scope_new(x, NULL);
        if (sc == NULL) {
            return DBAO_ENOMEM;
        }
        taint t;
        const char *p;
        TRY(expr_taint(x, sc, n, &t));
        if (taint_masked(x, &t, &p)) {
            return refuse(x, "42501", "CALL argument would pass masked column %s", p);
        }
        return 0;
    }
    default:
        if (harmless_stmt(n->node_case)) {
            return 0;
        }
        return refuse(x, "0A000", "statement kind not supported for masked roles");
    }
}

/* ---- entry points ---------------------------------------------------------------------------- */

static int
ctx_init(ctx *x, const mask_catalog *c, const mask_policy *p, const char *const *roles,
         size_t nroles)
{
    memset(x, 0, sizeof(*x));
    x->cat = c;
    x->pol = p;
    x->roles = roles;
    x->nroles = nroles;
    x->act = xa(x, (c->num_sens + 1) * sizeof(int));
    if (x->act == NULL) {
        return DBAO_ENOMEM;
    }
    for (size_t i = 0; i < c->num_sens; i++) {
        x->act[i] = mask_rule_action_for(c->sens[i].rule, roles, nroles);
        if (x->act[i] != -1) {
            x->masked_role = true;
        }
    }
    return 0;
}

static int
scan_tags(ctx *x, const char *sql)
{
    PgQueryScanResult sr = pg_query_scan(sql);
    if (sr.error != NULL) {
        pg_query_free_scan_result(sr);
        return 0; /* the parse will fail too */
    }
    PgQuery__ScanResult *s =
        pg_query__scan_result__unpack(NULL, sr.pbuf.len, (const uint8_t *) sr.pbuf.data);
    if (s == NULL) {
        pg_query_free_scan_result(sr);
        return DBAO_ENOMEM;
    }
    int rc = 0;
    bool forward = false;
    for (size_t i = 0; i < s->n_tokens && rc == 0; i++) {
        PgQuery__ScanToken *t = s->tokens[i];
        if (t->token != PG_QUERY__TOKEN__C_COMMENT && t->token != PG_QUERY__TOKEN__SQL_COMMENT) {
            forward = t->token == PG_QUERY__TOKEN__ASCII_44 ||
                      t->token == PG_QUERY__TOKEN__SELECT ||
                      t->token == PG_QUERY__TOKEN__DISTINCT || t->token == PG_QUERY__TOKEN__ALL;
            continue;
        }
        const char *b = sql + t->start, *e = sql + t->end;
        for (const char *q = b; q + 5 <= e; q++) {
            if (memcmp(q, "@PII:", 5) != 0) {
                continue;
            }
            const char *te = q + 5;
            while (te < e && (isalnum((unsigned char) *te) || *te == '_')) {
                te++;
            }
            mask_type ty;
            if (mask_type_parse(q + 5, (size_t) (te - q - 5), &ty) != 0 || ty == MASK_T_NONE) {
                continue;
            }
            if ((x->ntags & (x->ntags + 1)) == 0 || x->tags == NULL) {
                size_t nc = (x->ntags + 1) * 2;
                tag *nt = xa(x, nc * sizeof(tag));
                if (nt == NULL) {
                    rc = DBAO_ENOMEM;
                    break;
                }
                if (x->ntags) {
                    memcpy(nt, x->tags, x->ntags * sizeof(tag));
                }
                x->tags = nt;
            }
            x->tags[x->ntags].pos = t->start;
            x->tags[x->ntags].type = ty;
            x->tags[x->ntags].forward = forward;
            x->ntags++;
        }
    }
    pg_query__scan_result__free_unpacked(s, NULL);
    pg_query_free_scan_result(sr);
    return rc;
}

/* ---- the pre-check -------------------------------------------------------------------------
 *
 * fast_pass answers true only for texts that provably cannot reach a sensitive value, so that
 * they skip the protobuf parse, unpack and lineage walk (about 4/5 of the cost). The argument:
 *   1. the text parses (pg_query_parse succeeded: the same grammar as the full path);
 *   2. every statement is SELECT, INSERT, UPDATE, DELETE, a transaction statement, SET or
 *      SHOW, without INTO (no CTAS, DO, CALL, COPY, PREPARE, EXECUTE, EXPLAIN, DDL);
 *   3. every relation reference (every RangeVar of the tree, found as "relname" in the JSON
 *      tree, which lists them all: FROM items, DML targets, subqueries, CTE references) names
 *      a catalog relation that is clean: schema-qualified, that exact relation has no
 *      sensitive column; unqualified, every catalog relation of that name is clean. A CTE
 *      reference or an unknown relation fails this, so it takes the full path;
 *   4. every identifier token (unquoted ones folded like PostgreSQL folds them) is the name of
 *      a clean relation, of a column of a clean relation or of a schema, and is not the name
 *      of a sensitive column, a sensitive relation or a user function. So no alias, no CTE, no
 *      function other than the keyword-named builtins (COALESCE, EXTRACT, ...) can appear:
 *      no user function, query_to_xml, dblink, lo_*, pg_read_file, set_config, ...;
 *   5. every non-reserved keyword token is not such a sensitive or user-function name either;
 *   6. no string constant (dollar-quoted ones included) contains, case-insensitively, the name
 *      of a sensitive column or relation or of a user function, and no comment carries a
 *      @PII tag.
 * By 3 every column a statement can reach belongs to a clean relation (or to a subquery over
 * clean relations), so the full analysis would find no sensitive output and no sensitive
 * predicate; by 2 and 4 nothing runs SQL text or copies data elsewhere. The verdicts differ
 * only for texts the server rejects too (an ambiguous or unknown column among clean
 * relations), where the full path refuses and this one passes the error to the server. */

static bool
fold_word(const char *w, size_t n, char *buf, size_t cap, const char **out, size_t *out_len)
{
    if (n >= 2 && w[0] == '"') {
        if (n < 2 || w[n - 1] != '"' || memmem(w + 1, n - 2, "\"\"", 2) != NULL) {
            return false;
        }
        *out = w + 1;
        *out_len = n - 2;
        return true;
    }
    if (n >= cap) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        buf[i] = (char) (w[i] >= 'A' && w[i] <= 'Z' ? w[i] + 32 : w[i]);
    }
    *out = buf;
    *out_len = n;
    return true;
}

static bool
string_mentions_bad(const mask_catalog *c, const char *s, size_t n)
{
    for (size_t i = 0; i < c->num_names; i++) {
        if (!(c->names[i].flags & MCAT_N_BAD)) {
            continue;
        }
        const char *nm = c->names[i].name;
        size_t l = strlen(nm);
        for (size_t k = 0; l > 0 && k + l <= n; k++) {
            if (strncasecmp(s + k, nm, l) == 0) {
                return true;
            }
        }
    }
    return false;
}

static bool
clean_relation(const mask_catalog *c, const char *schema, size_t sl, const char *rel, size_t rl)
{
    if (schema == NULL) {
        uint8_t f = mask__cat_name_flags(c, rel, rl);
        return (f & MCAT_N_REL) && !(f & MCAT_N_BAD);
    }
    char name[256];
    if (rl >= sizeof(name)) {
        return false;
    }
    memcpy(name, rel, rl);
    name[rl] = '\0';
    for (int32_t i = mask__cat_rel_first(c, name); i >= 0; i = c->rels[i].next) {
        const mcat_rel *r = &c->rels[i];
        if (strcmp(r->name, name) == 0 && strlen(r->schema) == sl &&
            memcmp(r->schema, schema, sl) == 0) {
            return !r->sensitive;
        }
    }
    return false;
}

static bool
json_checks(const mask_catalog *c, const char *j, unsigned *nstmts)
{
    static const char *const ok[] = {"SelectStmt\"",      "InsertStmt\"",      "UpdateStmt\"",
                                     "DeleteStmt\"",      "TransactionStmt\"", "VariableSetStmt\"",
                                     "VariableShowStmt\""};
    if (strstr(j, "\"intoClause\"") != NULL || strstr(j, "\"catalogname\"") != NULL) {
        return false;
    }
    *nstmts = 0;
    for (const char *p = strstr(j, "{\"stmt\":{\""); p != NULL;
         p = strstr(p + 1, "{\"stmt\":{\"")) {
        const char *k = p + 10;
        bool good = false;
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]) && !good; i++) {
            good = strncmp(k, ok[i], strlen(ok[i])) == 0;
        }
        if (!good) {
            return false;
        }
        (*nstmts)++;
    }
    for (const char *p = strstr(j, "\"relname\":\""); p != NULL;
         p = strstr(p + 1, "\"relname\":\"")) {
        const char *v = p + 11, *e = strchr(v, '"');
        if (e == NULL || memchr(v, '\\', (size_t) (e - v)) != NULL) {
            return false;
        }
        const char *schema = NULL;
        size_t sl = 0;
        if (p - j >= 16 && p[-1] == ',' && p[-2] == '"') {
            const char *q = p - 3;
            while (q > j && *q != '"') {
                q--;
            }
            if (q - j >= 13 && memcmp(q - 13, "\"schemaname\":", 13) == 0) {
                schema = q + 1;
                sl = (size_t) (p - 2 - schema);
                if (memchr(schema, '\\', sl) != NULL) {
                    return false;
                }
            }
        }
        if (!clean_relation(c, schema, sl, v, (size_t) (e - v))) {
            return false;
        }
    }
    return true;
}

static bool
fast_pass(const mask_catalog *c, const char *text, size_t len, unsigned *nstmts)
{
    if (memmem(text, len, "@PII:", 5) != NULL) {
        return false;
    }
    PgQueryScanResult sr = pg_query_scan(text);
    if (sr.error != NULL) {
        pg_query_free_scan_result(sr);
        return false;
    }
    PgQuery__ScanResult *s =
        pg_query__scan_result__unpack(NULL, sr.pbuf.len, (const uint8_t *) sr.pbuf.data);
    bool good = s != NULL;
    char buf[128];
    for (size_t i = 0; good && i < s->n_tokens; i++) {
        const PgQuery__ScanToken *t = s->tokens[i];
        if (t->start < 0 || t->end < t->start || (size_t) t->end > len) {
            good = false;
            break;
        }
        const char *w = text + t->start;
        size_t n = (size_t) (t->end - t->start);
        const char *f;
        size_t fl;
        switch (t->token) {
        case PG_QUERY__TOKEN__IDENT: {
            if (!fold_word(w, n, buf, sizeof(buf), &f, &fl)) {
                good = false;
                break;
            }
            uint8_t fg = mask__cat_name_flags(c, f, fl);
            good = (fg & (MCAT_N_REL | MCAT_N_COL | MCAT_N_SCHEMA)) && !(fg & MCAT_N_BAD);
            break;
        }
        case PG_QUERY__TOKEN__UIDENT:
            good = false;
            break;
        case PG_QUERY__TOKEN__SCONST:
        case PG_QUERY__TOKEN__USCONST:
        case PG_QUERY__TOKEN__BCONST:
        case PG_QUERY__TOKEN__XCONST:
            good = c->num_bad <= 256 && !string_mentions_bad(c, w, n);
            break;
        default:
            if (t->keyword_kind != PG_QUERY__KEYWORD_KIND__NO_KEYWORD &&
                t->keyword_kind != PG_QUERY__KEYWORD_KIND__RESERVED_KEYWORD) {
                good = fold_word(w, n, buf, sizeof(buf), &f, &fl) &&
                       !(mask__cat_name_flags(c, f, fl) & MCAT_N_BAD);
            }
            break;
        }
    }
    if (s != NULL) {
        pg_query__scan_result__free_unpacked(s, NULL);
    }
    pg_query_free_scan_result(sr);
    if (!good) {
        return false;
    }
    PgQueryParseResult pr = pg_query_parse(text);
    good = pr.error == NULL && pr.parse_tree != NULL && json_checks(c, pr.parse_tree, nstmts);
    pg_query_free_parse_result(pr);
    return good;
}

static char *
dupn(const char *s, size_t n)
{
    char *d = dbao_malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

int
mask_sql_rewrite(const mask_sql_opts *o, const char *sql, size_t len, mask_sql_result *res,
                 dbao_err *err)
{
    if (res == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "sql: bad arguments");
    }
    memset(res, 0, sizeof(*res));
    if (o == NULL || o->catalog == NULL || o->policy == NULL || (sql == NULL && len > 0) ||
        o->marker == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "sql: bad arguments");
    }
    ctx x;
    int rc = ctx_init(&x, o->catalog, o->policy, o->roles, o->num_roles);
    PgQueryProtobufParseResult pr = {0};
    PgQuery__ParseResult *tree = NULL;
    char *text = NULL;
    bool parsed = false, fast = false;
    x.marker = o->marker;
    if (rc != 0) {
        goto out;
    }
    text = dupn(sql != NULL ? sql : "", len);
    if (text == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (memchr(sql, '\0', len) != NULL) {
        refuse(&x, "42601", "statement text contains a NUL byte");
        goto done;
    }
    if (fast_pass(o->catalog, text, len, &res->num_statements) &&
        !(o->extended && res->num_statements > 1)) {
        fast = true;
        goto done;
    }
    pr = pg_query_parse_protobuf(text);
    parsed = true;
    if (pr.error != NULL) {
        refuse(&x, "42601", "statement cannot be parsed");
        goto done;
    }
    tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
                                          (const uint8_t *) pr.parse_tree.data);
    if (tree == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (x.masked_role && memmem(text, len, "@PII:", 5) != NULL && (rc = scan_tags(&x, text)) != 0) {
        goto out;
    }
    res->num_statements = (unsigned) tree->n_stmts;
    if (o->extended && tree->n_stmts > 1) {
        refuse(&x, "42601", "cannot insert multiple commands into a prepared statement");
    }
    for (size_t i = 0; i < tree->n_stmts && !x.refused; i++) {
        PgQuery__RawStmt *st = tree->stmts[i];
        int32_t start = st->stmt_location;
        int32_t end = st->stmt_len > 0 ? start + st->stmt_len : (int32_t) len;
        x.stmt_masked = 0;
        rc = analyse_stmt(&x, st->stmt, start, end);
        if (rc < 0) {
            goto out;
        }
        rc = 0;
    }
    if (!x.refused && x.changed && x.masked_role) {
        size_t plen = pg_query__parse_result__get_packed_size(tree);
        uint8_t *buf = dbao_malloc(plen ? plen : 1);
        if (buf == NULL) {
            rc = DBAO_ENOMEM;
            goto out;
        }
        pg_query__parse_result__pack(tree, buf);
        PgQueryProtobuf pb = {plen, (char *) buf};
        PgQueryDeparseResult dr = pg_query_deparse_protobuf(pb);
        dbao_free(buf);
        PgQueryParseResult vr = {0};
        bool bad = dr.error != NULL;
        if (!bad) {
            /* the deparser is not faithful for every tree (e.g. $0 becomes "?"): the text
             * sent to the server must at least parse again */
            vr = pg_query_parse(dr.query);
            bad = vr.error != NULL;
            pg_query_free_parse_result(vr);
        }
        if (bad) {
            refuse(&x, "0A000", "statement cannot be rewritten");
        } else {
            res->sql_len = strlen(dr.query);
            res->sql = dupn(dr.query, res->sql_len);
            if (res->sql == NULL) {
                pg_query_free_deparse_result(dr);
                rc = DBAO_ENOMEM;
                goto out;
            }
            res->verdict = MASK_SQL_REWRITE;
        }
        pg_query_free_deparse_result(dr);
    }
done:
    if (x.refused) {
        res->verdict = MASK_SQL_REFUSE;
        memcpy(res->sqlstate, x.sqlstate, sizeof(res->sqlstate));
        res->message = dupn(x.msg, strlen(x.msg));
        res->unknown_relation = x.unknown_relation;
        dbao_free(res->sql);
        res->sql = NULL;
        res->sql_len = 0;
        if (res->message == NULL) {
            rc = DBAO_ENOMEM;
            goto out;
        }
    }
    res->sensitive = x.sensitive;
    res->masked = x.masked && res->verdict == MASK_SQL_REWRITE;
    if (fast || (parsed && pr.error == NULL)) {
        PgQueryFingerprintResult fr = pg_query_fingerprint(text);
        if (fr.error == NULL && fr.fingerprint_str != NULL) {
            snprintf(res->fingerprint, sizeof(res->fingerprint), "%s", fr.fingerprint_str);
        }
        pg_query_free_fingerprint_result(fr);
        PgQueryNormalizeResult nr = pg_query_normalize(text);
        if (nr.error == NULL && nr.normalized_query != NULL) {
            res->normalized = dupn(nr.normalized_query, strlen(nr.normalized_query));
            if (res->normalized == NULL) {
                rc = DBAO_ENOMEM;
            }
        }
        pg_query_free_normalize_result(nr);
    }
    res->decisions = x.dec;
    res->num_decisions = x.ndec;
    x.dec = NULL;
    x.ndec = 0;
out:
    if (tree != NULL) {
        pg_query__parse_result__free_unpacked(tree, NULL);
    }
    if (parsed) {
        pg_query_free_protobuf_parse_result(pr);
    }
    for (size_t i = 0; i < x.ndec; i++) {
        dbao_free(x.dec[i].column);
        dbao_free(x.dec[i].label);
    }
    dbao_free(x.dec);
    dbao_free(text);
    ar_free(&x.ar);
    if (rc != 0) {
        return dbao_err_set(err, rc, "sql: %s", dbao_strerror(rc));
    }
    return 0;
}

void
mask_sql_result_cleanup(mask_sql_result *res)
{
    if (res == NULL) {
        return;
    }
    dbao_free(res->sql);
    dbao_free(res->message);
    dbao_free(res->normalized);
    for (size_t i = 0; i < res->num_decisions; i++) {
        dbao_free(res->decisions[i].column);
        dbao_free(res->decisions[i].label);
    }
    dbao_free(res->decisions);
    memset(res, 0, sizeof(*res));
}

/* ---- views (catalog binding) ----------------------------------------------------------------- */

int
mask__sql_view_lineage(mask_catalog *c, size_t vi, bool *pending)
{
    *pending = false;
    mcat_rel *v = &c->rels[vi];
    if (v->view_sql == NULL) {
        return DBAO_EFORMAT;
    }
    ctx x;
    int rc = ctx_init(&x, c, c->policy, NULL, 0);
    x.masked_role = false;
    x.bind_mode = true;
    PgQueryProtobufParseResult pr = {0};
    PgQuery__ParseResult *tree = NULL;
    bool parsed = false;
    if (rc != 0) {
        goto out;
    }
    pr = pg_query_parse_protobuf(v->view_sql);
    parsed = true;
    if (pr.error != NULL) {
        rc = DBAO_EFORMAT;
        goto out;
    }
    tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
                                          (const uint8_t *) pr.parse_tree.data);
    if (tree == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (tree->n_stmts != 1 || tree->stmts[0]->stmt == NULL ||
        tree->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) {
        rc = DBAO_EFORMAT;
        goto out;
    }
    qout o = {0};
    scope *sc = scope_new(&x, NULL);
    if (sc == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    rc = analyse_query(&x, sc, tree->stmts[0]->stmt, &o, NULL);
    if (rc < 0) {
        goto out;
    }
    rc = 0;
    if (x.pending) {
        *pending = true;
        goto out;
    }
    if (x.user_func) {
        rc = MCAT_EUSERFUNC;
        goto out;
    }
    if (o.n != v->num_cols) {
        rc = DBAO_EFORMAT;
        goto out;
    }
    for (size_t i = 0; i < v->num_cols; i++) {
        mcat_col *col = &v->cols[i];
        taint t = t_ref(&o.c[i].t);
        if (col->taint.n > 0) {
            taint own = t_from_cat(&col->taint);
            if ((rc = t_union(&x, &t, &own)) != 0) {
                goto out;
            }
        }
        if (t.n == 0) {
            continue;
        }
        uint32_t *ids = dbao_malloc(t.n * sizeof(uint32_t));
        if (ids == NULL) {
            rc = DBAO_ENOMEM;
            goto out;
        }
        memcpy(ids, t.ids, t.n * sizeof(uint32_t));
        dbao_free(col->taint.ids);
        col->taint.ids = ids;
        col->taint.n = t.n;
        col->taint.derived = t.derived || t.n != 1;
        v->sensitive = true;
    }
    v->view_state = MCAT_VIEW_DONE;
out:
    if (tree != NULL) {
        pg_query__parse_result__free_unpacked(tree, NULL);
    }
    if (parsed) {
        pg_query_free_protobuf_parse_result(pr);
    }
    ar_free(&x.ar);
    return rc;
}
