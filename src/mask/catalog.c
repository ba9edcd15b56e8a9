/* catalog.c: what the masking proxy knows about the real database: user relations with their
 * columns (data type, comment), view definitions and user functions, and which columns are
 * sensitive under a policy.
 *
 * Loading (mask_catalog_load_pg) is three catalog queries through libpq: relations x columns
 * (format_type gives the type name, which is the domain's name for a domain column), view and
 * materialized view definitions (pg_get_viewdef), and functions outside pg_catalog and
 * information_schema. System schemas are not loaded: sql.c treats them separately.
 *
 * Binding (mask_catalog_bind) gives each column its rule: the policy's column rule, else the rule
 * of the type its data type names (`data_types`), else the rule of a "@PII:TYPE" tag in the column
 * comment. Every column with a rule gets an index in `sens` and the taint {itself}. Views are then
 * analysed by sql.c (the same lineage analysis as queries) in dependency order: a pass analyses
 * every view whose referenced views are done, until a pass makes no progress. A view left over (a
 * cycle) or one whose definition cannot be analysed fails closed: if its text names any sensitive
 * relation or unfinished view, each of its columns becomes derived over every sensitive column of
 * the catalog.
 *
 * Written by hand because it is small: an array of relations with a chained hash on the name
 * (names are compared exactly: PostgreSQL stores them folded already). */
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sql_internal.h"

uint32_t
mask__cat_hash(const char *name)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *) name; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h % MCAT_HASH_SIZE;
}

int32_t
mask__cat_rel_first(const mask_catalog *c, const char *name)
{
    for (int32_t i = c->rel_hash[mask__cat_hash(name)]; i >= 0; i = c->rels[i].next) {
        if (strcmp(c->rels[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

int32_t
mask__cat_func_first(const mask_catalog *c, const char *name)
{
    for (int32_t i = c->func_hash[mask__cat_hash(name)]; i >= 0; i = c->funcs[i].next) {
        if (strcmp(c->funcs[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

static char *
xstrdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *d = dbao_malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

static int
grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return 0;
    }
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) {
        nc *= 2;
    }
    void *p = dbao_realloc(*arr, nc * elem);
    if (p == NULL) {
        return DBAO_ENOMEM;
    }
    *arr = p;
    *cap = nc;
    return 0;
}

int
mask_catalog_new(mask_catalog **out)
{
    mask_catalog *c = dbao_calloc(1, sizeof(*c));
    if (c == NULL) {
        return DBAO_ENOMEM;
    }
    for (size_t i = 0; i < MCAT_HASH_SIZE; i++) {
        c->rel_hash[i] = -1;
        c->func_hash[i] = -1;
        c->name_hash[i] = -1;
    }
    *out = c;
    return 0;
}

void
mask_catalog_free(mask_catalog *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->num_rels; i++) {
        mcat_rel *r = &c->rels[i];
        for (size_t j = 0; j < r->num_cols; j++) {
            dbao_free(r->cols[j].name);
            dbao_free(r->cols[j].type_name);
            dbao_free(r->cols[j].comment);
            dbao_free(r->cols[j].taint.ids);
        }
        dbao_free(r->cols);
        dbao_free(r->schema);
        dbao_free(r->name);
        dbao_free(r->view_sql);
    }
    dbao_free(c->rels);
    for (size_t i = 0; i < c->num_funcs; i++) {
        dbao_free(c->funcs[i].schema);
        dbao_free(c->funcs[i].name);
    }
    dbao_free(c->funcs);
    for (size_t i = 0; i < c->num_sens; i++) {
        dbao_free(c->sens[i].path);
    }
    dbao_free(c->sens);
    for (size_t i = 0; i < c->num_names; i++) {
        dbao_free(c->names[i].name);
    }
    dbao_free(c->names);
    dbao_free(c);
}

static int32_t
find_rel(const mask_catalog *c, const char *schema, const char *name)
{
    for (int32_t i = mask__cat_rel_first(c, name); i >= 0; i = c->rels[i].next) {
        if (strcmp(c->rels[i].name, name) == 0 && strcmp(c->rels[i].schema, schema) == 0) {
            return i;
        }
    }
    return -1;
}

int
mask_catalog_add_relation(mask_catalog *c, const char *schema, const char *name, char kind,
                          const char *view_sql)
{
    if (c == NULL || schema == NULL || name == NULL || c->bound) {
        return DBAO_EINVAL;
    }
    if (find_rel(c, schema, name) >= 0) {
        return DBAO_EINVAL;
    }
    if (grow((void **) &c->rels, &c->cap_rels, c->num_rels + 1, sizeof(mcat_rel)) != 0) {
        return DBAO_ENOMEM;
    }
    mcat_rel *r = &c->rels[c->num_rels];
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->schema = xstrdup(schema);
    r->name = xstrdup(name);
    r->view_sql = xstrdup(view_sql);
    if (r->schema == NULL || r->name == NULL || (view_sql != NULL && r->view_sql == NULL)) {
        dbao_free(r->schema);
        dbao_free(r->name);
        dbao_free(r->view_sql);
        return DBAO_ENOMEM;
    }
    r->view_state = (kind == 'v' || kind == 'm') ? MCAT_VIEW_PENDING : MCAT_VIEW_DONE;
    uint32_t h = mask__cat_hash(name);
    r->next = c->rel_hash[h];
    c->rel_hash[h] = (int32_t) c->num_rels;
    c->num_rels++;
    return 0;
}

int
mask_catalog_add_column(mask_catalog *c, const char *schema, const char *rel, const char *column,
                        const char *type_name, const char *comment)
{
    if (c == NULL || schema == NULL || rel == NULL || column == NULL || c->bound) {
        return DBAO_EINVAL;
    }
    int32_t i = find_rel(c, schema, rel);
    if (i < 0) {
        return DBAO_EINVAL;
    }
    mcat_rel *r = &c->rels[i];
    if (grow((void **) &r->cols, &r->cap_cols, r->num_cols + 1, sizeof(mcat_col)) != 0) {
        return DBAO_ENOMEM;
    }
    mcat_col *col = &r->cols[r->num_cols];
    memset(col, 0, sizeof(*col));
    col->name = xstrdup(column);
    col->type_name = xstrdup(type_name != NULL ? type_name : "");
    col->comment = xstrdup(comment);
    if (col->name == NULL || col->type_name == NULL || (comment != NULL && col->comment == NULL)) {
        dbao_free(col->name);
        dbao_free(col->type_name);
        dbao_free(col->comment);
        return DBAO_ENOMEM;
    }
    r->num_cols++;
    return 0;
}

int
mask_catalog_add_function(mask_catalog *c, const char *schema, const char *name)
{
    if (c == NULL || schema == NULL || name == NULL || c->bound) {
        return DBAO_EINVAL;
    }
    for (int32_t i = mask__cat_func_first(c, name); i >= 0; i = c->funcs[i].next) {
        if (strcmp(c->funcs[i].name, name) == 0 && strcmp(c->funcs[i].schema, schema) == 0) {
            return 0; /* overloads: one entry */
        }
    }
    if (grow((void **) &c->funcs, &c->cap_funcs, c->num_funcs + 1, sizeof(mcat_func)) != 0) {
        return DBAO_ENOMEM;
    }
    mcat_func *f = &c->funcs[c->num_funcs];
    f->schema = xstrdup(schema);
    f->name = xstrdup(name);
    if (f->schema == NULL || f->name == NULL) {
        dbao_free(f->schema);
        dbao_free(f->name);
        return DBAO_ENOMEM;
    }
    uint32_t h = mask__cat_hash(name);
    f->next = c->func_hash[h];
    c->func_hash[h] = (int32_t) c->num_funcs;
    c->num_funcs++;
    return 0;
}

/* ---- loading through libpq ------------------------------------------------------------------- */

static const char SQL_COLUMNS[] =
    "SELECT n.nspname, c.relname, c.relkind::text, a.attname, "
    "pg_catalog.format_type(a.atttypid, a.atttypmod), "
    "pg_catalog.col_description(c.oid, a.attnum), "
    "CASE WHEN c.relkind IN ('v','m') THEN pg_catalog.pg_get_viewdef(c.oid) "
    "END "
    "FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > "
    "0 "
    "AND NOT a.attisdropped "
    "WHERE c.relkind IN ('r','p','v','m','f') "
    "AND n.nspname NOT IN ('pg_catalog','information_schema') "
    "AND n.nspname !~ '^pg_(toast|temp_)' "
    "ORDER BY n.nspname, c.relname, a.attnum";

static const char SQL_FUNCS[] = "SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p "
                                "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
                                "WHERE n.nspname NOT IN ('pg_catalog','information_schema')";

int
mask_catalog_load_pg(mask_catalog *c, const char *conninfo, dbao_err *err)
{
    if (c == NULL || conninfo == NULL || c->bound) {
        return dbao_err_set(err, DBAO_EINVAL, "catalog: bad arguments");
    }
    int rc = 0;
    PGresult *res = NULL;
    PGconn *conn = PQconnectdb(conninfo);
    if (conn == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "catalog: out of memory");
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        rc = dbao_err_set(err, DBAO_EIO, "catalog: cannot connect: %s", PQerrorMessage(conn));
        goto out;
    }
    /* an empty search_path makes pg_get_viewdef and format_type qualify every name that is
     * not in pg_catalog, so view definitions name exactly the relations they read */
    res = PQexec(conn, "SELECT pg_catalog.set_config('search_path', '', false)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = dbao_err_set(err, DBAO_EIO, "catalog: setting search_path failed: %s",
                          PQerrorMessage(conn));
        goto out;
    }
    PQclear(res);
    res = PQexecParams(conn, SQL_COLUMNS, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = dbao_err_set(err, DBAO_EIO, "catalog: reading relations failed: %s",
                          PQerrorMessage(conn));
        goto out;
    }
    int n = PQntuples(res);
    for (int i = 0; i < n && rc == 0; i++) {
        const char *schema = PQgetvalue(res, i, 0);
        const char *rel = PQgetvalue(res, i, 1);
        char kind = PQgetvalue(res, i, 2)[0];
        if (find_rel(c, schema, rel) < 0) {
            rc = mask_catalog_add_relation(c, schema, rel, kind,
                                           PQgetisnull(res, i, 6) ? NULL : PQgetvalue(res, i, 6));
            if (rc != 0) {
                break;
            }
        }
        if (!PQgetisnull(res, i, 3)) {
            rc = mask_catalog_add_column(c, schema, rel, PQgetvalue(res, i, 3),
                                         PQgetvalue(res, i, 4),
                                         PQgetisnull(res, i, 5) ? NULL : PQgetvalue(res, i, 5));
        }
    }
    if (rc != 0) {
        rc = dbao_err_set(err, rc, "catalog: %s", dbao_strerror(rc));
        goto out;
    }
    PQclear(res);
    res = PQexecParams(conn, SQL_FUNCS, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = dbao_err_set(err, DBAO_EIO, "catalog: reading functions failed: %s",
                          PQerrorMessage(conn));
        goto out;
    }
    n = PQntuples(res);
    for (int i = 0; i < n && rc == 0; i++) {
        rc = mask_catalog_add_function(c, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    }
    if (rc != 0) {
        rc = dbao_err_set(err, rc, "catalog: %s", dbao_strerror(rc));
    }
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* ---- the name table of the pre-check ------------------------------------------------------- */

static uint32_t
hash_n(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) s[i];
        h *= 16777619u;
    }
    return h % MCAT_HASH_SIZE;
}

uint8_t
mask__cat_name_flags(const mask_catalog *c, const char *name, size_t len)
{
    for (int32_t i = c->name_hash[hash_n(name, len)]; i >= 0; i = c->names[i].next) {
        if (strncmp(c->names[i].name, name, len) == 0 && c->names[i].name[len] == '\0') {
            return c->names[i].flags;
        }
    }
    return 0;
}

static int
name_add(mask_catalog *c, const char *name, uint8_t flags)
{
    size_t len = strlen(name);
    uint32_t h = hash_n(name, len);
    for (int32_t i = c->name_hash[h]; i >= 0; i = c->names[i].next) {
        if (strcmp(c->names[i].name, name) == 0) {
            if ((flags & MCAT_N_BAD) && !(c->names[i].flags & MCAT_N_BAD)) {
                c->num_bad++;
            }
            c->names[i].flags |= flags;
            return 0;
        }
    }
    if (grow((void **) &c->names, &c->cap_names, c->num_names + 1, sizeof(mcat_name)) != 0) {
        return DBAO_ENOMEM;
    }
    mcat_name *e = &c->names[c->num_names];
    if ((e->name = xstrdup(name)) == NULL) {
        return DBAO_ENOMEM;
    }
    e->flags = flags;
    e->next = c->name_hash[h];
    c->name_hash[h] = (int32_t) c->num_names;
    c->num_names++;
    if (flags & MCAT_N_BAD) {
        c->num_bad++;
    }
    return 0;
}

static int
build_names(mask_catalog *c)
{
    for (size_t i = 0; i < c->num_rels; i++) {
        mcat_rel *r = &c->rels[i];
        if (name_add(c, r->schema, MCAT_N_SCHEMA) != 0) {
            return DBAO_ENOMEM;
        }
        if (r->sensitive && name_add(c, r->name, MCAT_N_BAD) != 0) {
            return DBAO_ENOMEM;
        }
        for (size_t j = 0; j < r->num_cols; j++) {
            if (name_add(c, r->cols[j].name, r->cols[j].taint.n > 0 ? MCAT_N_BAD : 0) != 0) {
                return DBAO_ENOMEM;
            }
        }
    }
    for (size_t i = 0; i < c->num_funcs; i++) {
        if (name_add(c, c->funcs[i].name, MCAT_N_BAD) != 0) {
            return DBAO_ENOMEM;
        }
    }
    /* clean relations (every relation of that name clean) and their columns */
    for (size_t i = 0; i < c->num_rels; i++) {
        mcat_rel *r = &c->rels[i];
        bool clean = true;
        for (int32_t k = mask__cat_rel_first(c, r->name); k >= 0; k = c->rels[k].next) {
            clean &= strcmp(c->rels[k].name, r->name) != 0 || !c->rels[k].sensitive;
        }
        if (!clean) {
            continue;
        }
        if (name_add(c, r->name, MCAT_N_REL) != 0) {
            return DBAO_ENOMEM;
        }
        for (size_t j = 0; j < r->num_cols; j++) {
            if (name_add(c, r->cols[j].name, MCAT_N_COL) != 0) {
                return DBAO_ENOMEM;
            }
        }
    }
    return 0;
}

/* ---- binding --------------------------------------------------------------------------------- */

/* The type named by a data type: the full format_type text, then without a
 * typmod "(...)", then without a schema prefix. */
static mask_type
data_type_of(const mask_policy *p, const char *tn)
{
    if (tn == NULL || tn[0] == '\0') {
        return MASK_T_NONE;
    }
    mask_type t = mask_policy_data_type(p, tn);
    if (t != MASK_T_NONE) {
        return t;
    }
    char buf[256];
    size_t n = strlen(tn);
    if (n >= sizeof(buf)) {
        return MASK_T_NONE;
    }
    memcpy(buf, tn, n + 1);
    char *paren = strchr(buf, '(');
    if (paren != NULL) {
        *paren = '\0';
        t = mask_policy_data_type(p, buf);
        if (t != MASK_T_NONE) {
            return t;
        }
    }
    char *dot = strrchr(buf, '.');
    if (dot != NULL) {
        char *base = dot + 1;
        size_t bl = strlen(base);
        if (bl >= 2 && base[0] == '"' && base[bl - 1] == '"') {
            base[bl - 1] = '\0';
            base++;
        }
        t = mask_policy_data_type(p, base);
    }
    return t;
}

/* "@PII:TYPE" anywhere in a comment (the first tag that names a known type). */
static mask_type
comment_type(const char *comment)
{
    if (comment == NULL) {
        return MASK_T_NONE;
    }
    for (const char *s = strstr(comment, "@PII:"); s != NULL; s = strstr(s + 1, "@PII:")) {
        const char *b = s + 5, *e = b;
        while (isalnum((unsigned char) *e) || *e == '_') {
            e++;
        }
        mask_type t;
        if (e > b && mask_type_parse(b, (size_t) (e - b), &t) == 0 && t != MASK_T_NONE) {
            return t;
        }
    }
    return MASK_T_NONE;
}

static int
set_single_taint(mcat_col *col, uint32_t id)
{
    dbao_free(col->taint.ids);
    col->taint.ids = dbao_malloc(sizeof(uint32_t));
    if (col->taint.ids == NULL) {
        col->taint.n = 0;
        return DBAO_ENOMEM;
    }
    col->taint.ids[0] = id;
    col->taint.n = 1;
    col->taint.derived = false;
    return 0;
}

static bool
mentions(const char *text, const char *name)
{
    size_t nl = strlen(name);
    if (nl == 0) {
        return false;
    }
    for (const char *s = text; *s; s++) {
        if (strncasecmp(s, name, nl) == 0) {
            return true;
        }
    }
    return false;
}

/* Fail closed for a view that could not be analysed. */
static int
view_fail_closed(mask_catalog *c, size_t vi, bool always)
{
    mcat_rel *v = &c->rels[vi];
    v->view_state = MCAT_VIEW_FAILED;
    bool touches = always;
    for (size_t i = 0; i < c->num_rels && !touches; i++) {
        mcat_rel *r = &c->rels[i];
        if (i == vi || !(r->sensitive || r->view_state != MCAT_VIEW_DONE)) {
            continue;
        }
        touches = v->view_sql == NULL || mentions(v->view_sql, r->name);
    }
    if (!touches || c->num_sens == 0) {
        return 0;
    }
    for (size_t j = 0; j < v->num_cols; j++) {
        mcat_col *col = &v->cols[j];
        uint32_t *ids = dbao_malloc(c->num_sens * sizeof(uint32_t));
        if (ids == NULL) {
            return DBAO_ENOMEM;
        }
        for (size_t k = 0; k < c->num_sens; k++) {
            ids[k] = (uint32_t) k;
        }
        dbao_free(col->taint.ids);
        col->taint.ids = ids;
        col->taint.n = (uint32_t) c->num_sens;
        col->taint.derived = true;
    }
    v->sensitive = true;
    return 0;
}

int
mask_catalog_bind(mask_catalog *c, const mask_policy *p, dbao_err *err)
{
    if (c == NULL || p == NULL || c->bound) {
        return dbao_err_set(err, DBAO_EINVAL, "catalog: bad arguments to bind");
    }
    c->policy = p;
    for (size_t i = 0; i < c->num_rels; i++) {
        mcat_rel *r = &c->rels[i];
        for (size_t j = 0; j < r->num_cols; j++) {
            mcat_col *col = &r->cols[j];
            const mask_rule *rule = mask_policy_column(p, r->schema, r->name, col->name);
            if (rule == NULL) {
                mask_type t = data_type_of(p, col->type_name);
                if (t == MASK_T_NONE) {
                    t = comment_type(col->comment);
                }
                if (t != MASK_T_NONE) {
                    rule = mask_policy_type_rule(p, t);
                }
            }
            col->rule = rule;
            if (rule == NULL) {
                continue;
            }
            if (grow((void **) &c->sens, &c->cap_sens, c->num_sens + 1, sizeof(mcat_sens)) != 0) {
                return dbao_err_set(err, DBAO_ENOMEM, "catalog: out of memory");
            }
            mcat_sens *s = &c->sens[c->num_sens];
            size_t pl = strlen(r->schema) + strlen(r->name) + strlen(col->name) + 3;
            s->path = dbao_malloc(pl);
            if (s->path == NULL || set_single_taint(col, (uint32_t) c->num_sens) != 0) {
                dbao_free(s->path);
                return dbao_err_set(err, DBAO_ENOMEM, "catalog: out of memory");
            }
            snprintf(s->path, pl, "%s.%s.%s", r->schema, r->name, col->name);
            s->rel = (uint32_t) i;
            s->col = (uint32_t) j;
            s->rule = rule;
            c->num_sens++;
            r->sensitive = true;
        }
    }
    /* Views in dependency order, to a fixed point. */
    for (;;) {
        bool progress = false, left = false;
        for (size_t i = 0; i < c->num_rels; i++) {
            if (c->rels[i].view_state != MCAT_VIEW_PENDING) {
                continue;
            }
            bool pending = false;
            int rc = mask__sql_view_lineage(c, i, &pending);
            if (rc == DBAO_ENOMEM) {
                return dbao_err_set(err, rc, "catalog: out of memory");
            }
            if (rc != 0) {
                if (view_fail_closed(c, i, rc == MCAT_EUSERFUNC) != 0) {
                    return dbao_err_set(err, DBAO_ENOMEM, "catalog: out of memory");
                }
                progress = true;
            } else if (pending) {
                left = true;
            } else {
                progress = true;
            }
        }
        if (!left) {
            break;
        }
        if (!progress) {
            for (size_t i = 0; i < c->num_rels; i++) {
                if (c->rels[i].view_state == MCAT_VIEW_PENDING &&
                    view_fail_closed(c, i, false) != 0) {
                    return dbao_err_set(err, DBAO_ENOMEM, "catalog: out of memory");
                }
            }
            break;
        }
    }
    if (build_names(c) != 0) {
        return dbao_err_set(err, DBAO_ENOMEM, "catalog: out of memory");
    }
    c->bound = true;
    return 0;
}
