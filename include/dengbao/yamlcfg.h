/* yamlcfg.h: strict reading of YAML configuration files (libyaml's document API), shared by
 * every dengbao configuration: the gateway's, the masking policy and proxy configuration, the
 * access-control policies.
 *
 * A configuration is a contract, and a typo in one silently changes what a security product
 * does, so reading is strict: one document only; no aliases (each node may be visited once,
 * which also defeats "billion laughs"); unknown and duplicate keys refused; integers and
 * booleans must be plain (unquoted) scalars; a plain null (~, null, empty) is never a string;
 * numbers without signs or suffixes other than the units a getter accepts; every error names
 * the file and line: "mask.yaml:12: unknown key 'polcy' in the configuration".
 *
 * Scalars: durations are integers (milliseconds) or a number with ms, s, m, h ("500ms", "2s");
 * sizes are integers (bytes) or a number with k, m, g (KiB, MiB, GiB; either case). Relative paths
 * are resolved against the folder of the file (the `name` given to dbao_yaml_load).
 *
 * Ownership: strings returned by the getters are malloc'd (free()); the caller frees what it
 * was given even when a later step fails. dbao_yaml_free releases the document.
 */
#ifndef DENGBAO_YAMLCFG_H
#define DENGBAO_YAMLCFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DBAO_YAML_STR_MAX 4096 /* longest scalar a getter accepts */

typedef struct dbao_yaml {
    const char *name; /* for messages (borrowed) */
    char *base;       /* folder of `name`, or NULL */
    yaml_document_t doc;
    yaml_node_t *root; /* NULL for an empty document */
    uint8_t *seen;     /* one byte per node */
    size_t num_nodes;
    dbao_err *err; /* where messages go (borrowed) */
    bool loaded;
} dbao_yaml;

/* dbao_yaml_load parses text[0..len) as exactly one YAML document. DBAO_EFORMAT with
 * "name:line: reason" for malformed YAML or a second document; an empty text gives root NULL.
 * dbao_yaml_free is needed after any return (it is safe on a failed load). */
int dbao_yaml_load(dbao_yaml *y, const char *text, size_t len, const char *name, dbao_err *err);
void dbao_yaml_free(dbao_yaml *y);

/* dbao_yaml_fail stores "name:line: <message>" (line of node n, 0 if NULL) and returns code. */
int dbao_yaml_fail(dbao_yaml *y, int code, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Visiting nodes: each marks the node seen; a node reached twice is an alias (refused). */
int dbao_yaml_node(dbao_yaml *y, int id, const yaml_node_t *parent, yaml_node_t **out);
/* The number of pairs of a mapping or items of a sequence (0 for a scalar). */
size_t dbao_yaml_len(const yaml_node_t *n);
/* The i-th pair of a mapping: key (must be a scalar) and value. */
int dbao_yaml_pair(dbao_yaml *y, const yaml_node_t *map, size_t i, yaml_node_t **key,
                   yaml_node_t **val);
/* The i-th item of a sequence. */
int dbao_yaml_item(dbao_yaml *y, const yaml_node_t *seq, size_t i, yaml_node_t **out);

/* dbao_yaml_fields matches a mapping's keys against `keys` (nk <= 32) and stores the value
 * nodes in vals (NULL for absent keys). Not a mapping, unknown keys and duplicate keys are
 * errors naming `ctx` ("the configuration", "route 'api'"; "" names nothing). */
int dbao_yaml_fields(dbao_yaml *y, const yaml_node_t *map, const char *ctx, const char *const *keys,
                     size_t nk, yaml_node_t **vals);

/* Scalars. `key` names the value in messages. */
const char *dbao_yaml_scalar(const yaml_node_t *n); /* NULL unless a scalar */
bool dbao_yaml_is_null(const yaml_node_t *n);
/* dbao_yaml_want_scalar: a non-null scalar without NUL bytes and not too long, else
 * "'key' must be <what>". */
int dbao_yaml_want_scalar(dbao_yaml *y, const yaml_node_t *n, const char *key, const char *what);
int dbao_yaml_str(dbao_yaml *y, const yaml_node_t *n, const char *key, char **out);
int dbao_yaml_path(dbao_yaml *y, const yaml_node_t *n, const char *key, char **out);
int dbao_yaml_uint(dbao_yaml *y, const yaml_node_t *n, const char *key, uint64_t min, uint64_t max,
                   uint64_t *out);
int dbao_yaml_bool(dbao_yaml *y, const yaml_node_t *n, const char *key, bool *out);
int dbao_yaml_duration_ms(dbao_yaml *y, const yaml_node_t *n, const char *key, uint64_t min,
                          uint64_t max, uint64_t *out);
int dbao_yaml_size(dbao_yaml *y, const yaml_node_t *n, const char *key, uint64_t min, uint64_t max,
                   uint64_t *out);
/* dbao_yaml_enum: the index of the scalar in `names` (n names), naming them in the error. */
int dbao_yaml_enum(dbao_yaml *y, const yaml_node_t *n, const char *key, const char *const *names,
                   size_t num, int *out);

/* The number parsers behind the getters, for callers with their own scalars. */
int dbao_parse_duration_ms(const char *s, uint64_t *out);
int dbao_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_YAMLCFG_H */
