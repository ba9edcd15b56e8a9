/* sql_internal.h: the catalog's representation, shared by catalog.c and sql.c only.
 *
 * Lineage is expressed as a "taint": the set of sensitive source columns an expression or a column
 * depends on (indices into mask_catalog.sens) and whether it is derived (computed) or a direct
 * pass-through of exactly one column. A base column with a rule has the taint {itself}, direct; a
 * view column gets the taint of its defining output expression (sql.c analyses the view definition
 * at bind time). */
#ifndef DENGBAO_MASK_SQL_INTERNAL_H
#define DENGBAO_MASK_SQL_INTERNAL_H

#include <stdint.h>

#include "sqlmask.h"

typedef struct mcat_taint {
    uint32_t *ids; /* sorted, distinct */
    uint32_t n;
    bool derived;
} mcat_taint;

typedef struct mcat_col {
    char *name;
    char *type_name;
    char *comment;
    const mask_rule *rule; /* the column's own rule, NULL if none */
    mcat_taint taint;      /* malloc'd ids (catalog-owned) */
} mcat_col;

enum { MCAT_VIEW_PENDING = 0, MCAT_VIEW_DONE = 1, MCAT_VIEW_FAILED = 2 };

typedef struct mcat_rel {
    char *schema, *name, *view_sql;
    char kind;
    mcat_col *cols;
    size_t num_cols, cap_cols;
    int view_state;
    bool sensitive; /* some column has a non-empty taint */
    int32_t next;   /* hash chain by name, -1 ends */
} mcat_rel;

typedef struct mcat_sens {
    uint32_t rel, col;
    const mask_rule *rule;
    char *path; /* "schema.table.column" */
} mcat_sens;

typedef struct mcat_func {
    char *schema, *name;
    int32_t next;
} mcat_func;

#define MCAT_HASH_SIZE 1024u

struct mask_catalog {
    mcat_rel *rels;
    size_t num_rels, cap_rels;
    mcat_func *funcs;
    size_t num_funcs, cap_funcs;
    mcat_sens *sens;
    size_t num_sens, cap_sens;
    int32_t rel_hash[MCAT_HASH_SIZE];
    int32_t func_hash[MCAT_HASH_SIZE];
    struct mcat_name *names;
    size_t num_names, cap_names, num_bad;
    int32_t name_hash[MCAT_HASH_SIZE];
    const mask_policy *policy;
    bool bound;
};

uint32_t mask__cat_hash(const char *name);
/* First relation named `name` (follow .next for others with the same name), -1
 * if none. */
int32_t mask__cat_rel_first(const mask_catalog *c, const char *name);
int32_t mask__cat_func_first(const mask_catalog *c, const char *name);

/* sql.c: analyse the definition of view c->rels[i] and set its columns' taints. *pending is
 * set when it reads a view not yet analysed (retry later). Returns 0, DBAO_EFORMAT (cannot be
 * analysed: the caller fails closed), MCAT_EUSERFUNC (it calls a user function the policy
 * does not allow: every column fails closed) or DBAO_ENOMEM. */
#define MCAT_EUSERFUNC (-1900)
int mask__sql_view_lineage(mask_catalog *c, size_t i, bool *pending);

/* Names for the conservative pre-check of sql.c: built at bind. */
enum {
    MCAT_N_REL = 1,    /* a relation name whose every relation of that name is clean */
    MCAT_N_COL = 2,    /* a column name of a clean relation */
    MCAT_N_SCHEMA = 4, /* a schema name */
    MCAT_N_BAD = 8,    /* a sensitive relation or column, or a user function */
};

typedef struct mcat_name {
    char *name;
    uint8_t flags;
    int32_t next;
} mcat_name;

/* The flags of name[0..len), 0 if unknown. */
uint8_t mask__cat_name_flags(const mask_catalog *c, const char *name, size_t len);

#endif /* DENGBAO_MASK_SQL_INTERNAL_H */
