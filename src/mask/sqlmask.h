/* sqlmask.h: the SQL side of the masking proxy (private to src/mask): the catalog of the real
 * database and the analyser/rewriter built on libpg_query.
 *
 * The contract with the proxy (maskproxy.c) is the marker. For a role that may not see a
 * sensitive value, every OUTPUT expression (select list at the outermost level of what is
 * returned to the client: SELECT, each UNION branch's result, RETURNING, COPY (query) TO, the
 * query of PREPARE and DECLARE CURSOR) that references a sensitive column at any depth is
 * rewritten to
 *
 *     ('<marker>' || '<k>:' || pg_catalog.encode(pg_catalog.convert_to((<expr>)::pg_catalog.text,
 *      'UTF8'), 'hex')) AS "<label>"
 *
 * where <marker> is the proxy's secret per-process prefix (ASCII letters/digits after a 0x1f
 * byte, no quote), <k> the decimal index of the mask_action to apply (mask_policy_action), and
 * <label> the column name PostgreSQL would have given the original expression (so clients see
 * the same column names). The server thus returns marker + index + hex of the clear value; the
 * proxy decodes the hex, applies action k and sends only the masked value. Because the marker
 * is made on the server, it survives prepared statements, cursors (FETCH), PREPARE/EXECUTE and
 * COPY; NULL stays NULL. A direct reference (a column passed through aliases, subqueries, CTEs,
 * views, UNION branches unchanged) gets its column's action for the roles; anything computed
 * from a sensitive column (function, operator, CASE, cast, aggregate, JSON builder, whole-row
 * reference, sublink) gets the policy's derived action.
 */
#ifndef DENGBAO_MASK_SQLMASK_H
#define DENGBAO_MASK_SQLMASK_H

#include <stdbool.h>
#include <stddef.h>

#include "dengbao/mask.h"

/* ---- catalog ----------------------------------------------------------------------------- */

typedef struct mask_catalog mask_catalog;

int mask_catalog_new(mask_catalog **out);
void mask_catalog_free(mask_catalog *c);

/* Building by hand (tests, fuzzing) or from the database. kind: 'r' table, 'p' partitioned
 * table, 'v' view, 'm' materialized view, 'f' foreign table. view_sql: the view's defining
 * SELECT (pg_get_viewdef) for 'v' and 'm', else NULL. Columns in attnum order. */
int mask_catalog_add_relation(mask_catalog *c, const char *schema, const char *name, char kind,
                              const char *view_sql);
int mask_catalog_add_column(mask_catalog *c, const char *schema, const char *rel,
                            const char *column, const char *type_name, const char *comment);
/* A function or procedure outside pg_catalog and information_schema: a masked role may not call
 * it (it may read sensitive data inside) unless the policy allows it by name. */
int mask_catalog_add_function(mask_catalog *c, const char *schema, const char *name);

/* mask_catalog_load_pg reads every user relation, column (type, comment), view definition and
 * user function through libpq (`conninfo`, blocking; call it off the event loop). */
int mask_catalog_load_pg(mask_catalog *c, const char *conninfo, dbao_err *err);

/* mask_catalog_bind resolves the rule of each column (policy column rules, then `data_types`,
 * then a "@PII:TYPE" tag in the column comment) and analyses views in dependency order so that
 * each view column knows which sensitive columns it exposes and whether directly. Call once
 * after loading and before mask_sql_rewrite; the catalog is then read-only and shareable. */
int mask_catalog_bind(mask_catalog *c, const mask_policy *p, dbao_err *err);

/* ---- analysis and rewriting --------------------------------------------------------------- */

typedef enum mask_sql_verdict {
    MASK_SQL_PASS = 0, /* forward the original text unchanged */
    MASK_SQL_REWRITE,  /* forward res->sql instead */
    MASK_SQL_REFUSE,   /* do not run it: res->sqlstate and res->message say why */
} mask_sql_verdict;

typedef struct mask_sql_decision {
    char *column; /* "schema.table.column" of the sensitive source (the first, if several) */
    char *label;  /* the output column label */
    int action;   /* the mask_action index applied, -1 when the role sees it clear */
    bool derived; /* computed from the column rather than passed through */
} mask_sql_decision;

typedef struct mask_sql_result {
    mask_sql_verdict verdict;
    char *sql; /* REWRITE: the new text, NUL-terminated (owned) */
    size_t sql_len;
    char sqlstate[6];      /* REFUSE: "42501" (policy), "42601" (cannot parse), "42P01"
                              (relation not in the catalog), "0A000" (unsupported) */
    char *message;         /* REFUSE: names objects, never values (owned) */
    bool unknown_relation; /* REFUSE because of a relation missing from the catalog: the caller
                              may reload the catalog and try again */
    bool sensitive;        /* a sensitive column is referenced (output or predicate) */
    bool masked;           /* at least one output is masked (rows will carry markers) */
    char fingerprint[17];  /* pg_query_fingerprint, hex; "" if the text did not parse */
    char *normalized;      /* pg_query_normalize: literals replaced by $n (owned; NULL if the
                              text did not parse) */
    mask_sql_decision *decisions; /* one per sensitive output (owned) */
    size_t num_decisions;
    unsigned num_statements;
} mask_sql_result;

typedef struct mask_sql_opts {
    const mask_catalog *catalog; /* bound */
    const mask_policy *policy;
    const char *const *roles; /* the proxy roles of the session's user */
    size_t num_roles;
    const char *marker; /* see above */
    bool extended;      /* text of a Parse message: one statement, $n parameters */
} mask_sql_opts;

/* mask_sql_rewrite analyses `sql` (len bytes, need not be NUL-terminated) for the roles. For
 * roles that see every column clear the verdict is PASS (res->sensitive still tells whether
 * sensitive columns were touched, for the audit record). For a masked role anything that
 * cannot be parsed or fully resolved, or that could move sensitive data out of reach of the
 * masking (DO blocks, user functions not allowed by the policy, query_to_xml and kin, CREATE
 * TABLE AS / SELECT INTO / INSERT ... SELECT / UPDATE ... FROM copying sensitive values,
 * predicates the policy does not allow, binary COPY of masked columns, ...), is REFUSE.
 * Returns 0 (the verdict is in res) or DBAO_ENOMEM; res must be cleaned up either way. */
int mask_sql_rewrite(const mask_sql_opts *o, const char *sql, size_t len, mask_sql_result *res,
                     dbao_err *err);
void mask_sql_result_cleanup(mask_sql_result *res);

#endif /* DENGBAO_MASK_SQLMASK_H */
