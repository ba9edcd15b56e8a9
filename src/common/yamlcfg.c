/* yamlcfg.c: strict reading of YAML configuration files (the contract is in yamlcfg.h).
 *
 * Written here rather than taken from a library: libyaml gives a document tree but no schema
 * checking, and what is needed (every node visited at most once, file:line messages, plain
 * scalars for numbers) is a few hundred lines that every dengbao configuration shares.
 */
#include "dengbao/yamlcfg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long
line_of(const yaml_node_t *n)
{
    return n ? (unsigned long) n->start_mark.line + 1 : 0;
}

int
dbao_yaml_fail(dbao_yaml *y, int code, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[DBAO_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dbao_err_set(y->err, code, "%s:%lu: %s", y->name, line_of(n), msg);
}

int
dbao_yaml_load(dbao_yaml *y, const char *text, size_t len, const char *name, dbao_err *err)
{
    memset(y, 0, sizeof *y);
    y->name = name;
    y->err = err;
    const char *slash = strrchr(name, '/');
    if (slash != NULL) {
        y->base = strndup(name, (size_t) (slash - name));
        if (y->base == NULL)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *) text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, &y->doc)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "%s:%lu: yaml: %s", name,
                          (unsigned long) parser.problem_mark.line + 1,
                          parser.problem ? parser.problem : "malformed yaml");
        yaml_parser_delete(&parser);
        return rc;
    }
    y->loaded = true;
    y->root = yaml_document_get_root_node(&y->doc);
    if (y->root != NULL) {
        yaml_document_t doc2;
        if (!yaml_parser_load(&parser, &doc2)) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "%s:%lu: yaml: %s", name,
                              (unsigned long) parser.problem_mark.line + 1,
                              parser.problem ? parser.problem : "malformed yaml");
        } else {
            yaml_node_t *root2 = yaml_document_get_root_node(&doc2);
            unsigned long line2 = root2 ? (unsigned long) root2->start_mark.line + 1 : 0;
            yaml_document_delete(&doc2);
            if (root2 != NULL)
                rc = dbao_err_set(err, DBAO_EFORMAT, "%s:%lu: more than one yaml document", name,
                                  line2);
        }
    }
    yaml_parser_delete(&parser);
    if (rc != 0)
        return rc;
    y->num_nodes = (size_t) (y->doc.nodes.top - y->doc.nodes.start);
    y->seen = calloc(y->num_nodes ? y->num_nodes : 1, 1);
    if (y->seen == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    if (y->root != NULL)
        y->seen[y->root - y->doc.nodes.start] = 1;
    return 0;
}

void
dbao_yaml_free(dbao_yaml *y)
{
    if (y->loaded)
        yaml_document_delete(&y->doc);
    free(y->seen);
    free(y->base);
    y->loaded = false;
    y->seen = NULL;
    y->base = NULL;
    y->root = NULL;
}

int
dbao_yaml_node(dbao_yaml *y, int id, const yaml_node_t *parent, yaml_node_t **out)
{
    yaml_node_t *n = yaml_document_get_node(&y->doc, id);
    if (n == NULL)
        return dbao_yaml_fail(y, DBAO_EFORMAT, parent, "bad node");
    size_t i = (size_t) (n - y->doc.nodes.start);
    if (i >= y->num_nodes)
        return dbao_yaml_fail(y, DBAO_EFORMAT, parent, "bad node");
    if (y->seen[i])
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "yaml aliases are not supported");
    y->seen[i] = 1;
    *out = n;
    return 0;
}

size_t
dbao_yaml_len(const yaml_node_t *n)
{
    if (n == NULL)
        return 0;
    if (n->type == YAML_MAPPING_NODE)
        return (size_t) (n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (n->type == YAML_SEQUENCE_NODE)
        return (size_t) (n->data.sequence.items.top - n->data.sequence.items.start);
    return 0;
}

int
dbao_yaml_pair(dbao_yaml *y, const yaml_node_t *map, size_t i, yaml_node_t **key, yaml_node_t **val)
{
    if (map->type != YAML_MAPPING_NODE || i >= dbao_yaml_len(map))
        return dbao_yaml_fail(y, DBAO_EINVAL, map, "not a mapping");
    const yaml_node_pair_t *pr = map->data.mapping.pairs.start + i;
    int rc = dbao_yaml_node(y, pr->key, map, key);
    if (rc != 0)
        return rc;
    if ((*key)->type != YAML_SCALAR_NODE)
        return dbao_yaml_fail(y, DBAO_EFORMAT, *key, "keys must be strings");
    return dbao_yaml_node(y, pr->value, map, val);
}

int
dbao_yaml_item(dbao_yaml *y, const yaml_node_t *seq, size_t i, yaml_node_t **out)
{
    if (seq->type != YAML_SEQUENCE_NODE || i >= dbao_yaml_len(seq))
        return dbao_yaml_fail(y, DBAO_EINVAL, seq, "not a list");
    return dbao_yaml_node(y, seq->data.sequence.items.start[i], seq, out);
}

int
dbao_yaml_fields(dbao_yaml *y, const yaml_node_t *map, const char *ctx, const char *const *keys,
                 size_t nk, yaml_node_t **vals)
{
    for (size_t k = 0; k < nk; k++)
        vals[k] = NULL;
    if (map->type != YAML_MAPPING_NODE)
        return dbao_yaml_fail(y, DBAO_EFORMAT, map, "%s must be a mapping", ctx);
    size_t n = dbao_yaml_len(map);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *kn, *vn;
        int rc = dbao_yaml_pair(y, map, i, &kn, &vn);
        if (rc != 0)
            return rc;
        const char *name = dbao_yaml_scalar(kn);
        size_t k = 0;
        while (k < nk && strcmp(keys[k], name) != 0)
            k++;
        const char *in = ctx[0] != '\0' ? " in " : "";
        if (k == nk)
            return dbao_yaml_fail(y, DBAO_EFORMAT, kn, "unknown key '%.64s'%s%s", name, in, ctx);
        if (vals[k] != NULL)
            return dbao_yaml_fail(y, DBAO_EFORMAT, kn, "duplicate key '%s'%s%s", keys[k], in, ctx);
        vals[k] = vn;
    }
    return 0;
}

const char *
dbao_yaml_scalar(const yaml_node_t *n)
{
    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *) n->data.scalar.value : NULL;
}

static bool
plain(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

bool
dbao_yaml_is_null(const yaml_node_t *n)
{
    if (n == NULL || n->type != YAML_SCALAR_NODE || !plain(n))
        return false;
    const char *v = dbao_yaml_scalar(n);
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

int
dbao_yaml_want_scalar(dbao_yaml *y, const yaml_node_t *n, const char *key, const char *what)
{
    if (n->type != YAML_SCALAR_NODE || dbao_yaml_is_null(n))
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "'%s' must be %s", key, what);
    if (strlen(dbao_yaml_scalar(n)) != n->data.scalar.length ||
        n->data.scalar.length > DBAO_YAML_STR_MAX)
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "'%s': bad or too long value", key);
    return 0;
}

int
dbao_yaml_str(dbao_yaml *y, const yaml_node_t *n, const char *key, char **out)
{
    int rc = dbao_yaml_want_scalar(y, n, key, "a string");
    if (rc != 0)
        return rc;
    if (dbao_yaml_scalar(n)[0] == '\0')
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "'%s' must not be empty", key);
    char *s = strdup(dbao_yaml_scalar(n));
    if (s == NULL)
        return dbao_yaml_fail(y, DBAO_ENOMEM, n, "out of memory");
    free(*out);
    *out = s;
    return 0;
}

int
dbao_yaml_path(dbao_yaml *y, const yaml_node_t *n, const char *key, char **out)
{
    char *s = NULL;
    int rc = dbao_yaml_str(y, n, key, &s);
    if (rc != 0)
        return rc;
    free(*out);
    *out = s;
    if (s[0] == '/' || y->base == NULL || strcmp(s, "-") == 0)
        return 0;
    size_t bl = strlen(y->base), sl = strlen(s);
    char *r = malloc(bl + 1 + sl + 1);
    if (r == NULL)
        return dbao_yaml_fail(y, DBAO_ENOMEM, n, "out of memory");
    memcpy(r, y->base, bl);
    r[bl] = '/';
    memcpy(r + bl + 1, s, sl + 1);
    free(s);
    *out = r;
    return 0;
}

static int
parse_num_unit(const char *s, uint64_t *num, const char **unit)
{
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return DBAO_EFORMAT;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return DBAO_EFORMAT;
        v = v * 10 + (uint64_t) (*p - '0');
    }
    *num = v;
    *unit = p;
    return 0;
}

static int
scaled(uint64_t v, uint64_t m, uint64_t *out)
{
    if (m != 0 && v > UINT64_MAX / m)
        return DBAO_EFORMAT;
    *out = v * m;
    return 0;
}

int
dbao_parse_duration_ms(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *u;
    if (s == NULL || parse_num_unit(s, &v, &u) != 0)
        return DBAO_EFORMAT;
    if (*u == '\0' || strcmp(u, "ms") == 0)
        return scaled(v, 1, out);
    if (strcmp(u, "s") == 0)
        return scaled(v, 1000, out);
    if (strcmp(u, "m") == 0)
        return scaled(v, 60000, out);
    if (strcmp(u, "h") == 0)
        return scaled(v, 3600000, out);
    return DBAO_EFORMAT;
}

int
dbao_parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *u;
    if (s == NULL || parse_num_unit(s, &v, &u) != 0)
        return DBAO_EFORMAT;
    if (*u == '\0')
        return scaled(v, 1, out);
    if (u[1] != '\0')
        return DBAO_EFORMAT;
    switch (*u) {
    case 'k':
    case 'K':
        return scaled(v, 1ull << 10, out);
    case 'm':
    case 'M':
        return scaled(v, 1ull << 20, out);
    case 'g':
    case 'G':
        return scaled(v, 1ull << 30, out);
    default:
        return DBAO_EFORMAT;
    }
}

static int
ranged(dbao_yaml *y, const yaml_node_t *n, const char *key, uint64_t v, uint64_t min, uint64_t max,
       uint64_t *out)
{
    if (v < min || v > max)
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "'%s' must be between %llu and %llu", key,
                              (unsigned long long) min, (unsigned long long) max);
    *out = v;
    return 0;
}

int
dbao_yaml_uint(dbao_yaml *y, const yaml_node_t *n, const char *key, uint64_t min, uint64_t max,
               uint64_t *out)
{
    uint64_t v = 0;
    const char *u = NULL;
    int rc = dbao_yaml_want_scalar(y, n, key, "an integer");
    if (rc != 0)
        return rc;
    if (!plain(n) || parse_num_unit(dbao_yaml_scalar(n), &v, &u) != 0 || *u != '\0')
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "'%s' must be an integer, not '%.64s'", key,
                              dbao_yaml_scalar(n));
    return ranged(y, n, key, v, min, max, out);
}

int
dbao_yaml_bool(dbao_yaml *y, const yaml_node_t *n, const char *key, bool *out)
{
    if (n->type == YAML_SCALAR_NODE && plain(n)) {
        if (strcmp(dbao_yaml_scalar(n), "true") == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(dbao_yaml_scalar(n), "false") == 0) {
            *out = false;
            return 0;
        }
    }
    return dbao_yaml_fail(y, DBAO_EFORMAT, n, "'%s' must be true or false", key);
}

int
dbao_yaml_duration_ms(dbao_yaml *y, const yaml_node_t *n, const char *key, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    uint64_t v;
    int rc = dbao_yaml_want_scalar(y, n, key, "a duration");
    if (rc != 0)
        return rc;
    if (dbao_parse_duration_ms(dbao_yaml_scalar(n), &v) != 0)
        return dbao_yaml_fail(y, DBAO_EFORMAT, n,
                              "'%s' must be a duration (milliseconds or \"500ms\", \"2s\", "
                              "\"1m\"), not '%.64s'",
                              key, dbao_yaml_scalar(n));
    return ranged(y, n, key, v, min, max, out);
}

int
dbao_yaml_size(dbao_yaml *y, const yaml_node_t *n, const char *key, uint64_t min, uint64_t max,
               uint64_t *out)
{
    uint64_t v;
    int rc = dbao_yaml_want_scalar(y, n, key, "a size");
    if (rc != 0)
        return rc;
    if (dbao_parse_size(dbao_yaml_scalar(n), &v) != 0)
        return dbao_yaml_fail(y, DBAO_EFORMAT, n,
                              "'%s' must be a size (bytes or \"16k\", \"1m\"), not '%.64s'", key,
                              dbao_yaml_scalar(n));
    return ranged(y, n, key, v, min, max, out);
}

int
dbao_yaml_enum(dbao_yaml *y, const yaml_node_t *n, const char *key, const char *const *names,
               size_t num, int *out)
{
    int rc = dbao_yaml_want_scalar(y, n, key, "a name");
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < num; i++) {
        if (strcmp(dbao_yaml_scalar(n), names[i]) == 0) {
            *out = (int) i;
            return 0;
        }
    }
    char list[256];
    size_t off = 0;
    for (size_t i = 0; i < num && off < sizeof list; i++) {
        int k = snprintf(list + off, sizeof list - off, "%s%s",
                         i ? (i + 1 == num ? " or " : ", ") : "", names[i]);
        if (k < 0)
            break;
        off += (size_t) k;
    }
    return dbao_yaml_fail(y, DBAO_EFORMAT, n, "'%s' must be %s", key, list);
}
