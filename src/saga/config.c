/* config.c: the saga coordinator's YAML configuration (deploy/saga.yaml, docs/saga.md).
 *
 *   store: sqlite:/var/lib/dengbao/saga/saga.db   # or postgresql://... / "host=... dbname=..."
 *   data_dir: /var/lib/dengbao/saga               # default store: sqlite:<data_dir>/saga.db
 *   listen: 127.0.0.1:8470                        # public API (numeric host:port)
 *   admin_listen: 127.0.0.1:8471                  # admin API; default 127.0.0.1:8471
 *   admin_token_file: admin.token                 # optional, mode 0600 or stricter
 *   workers: 2                                    # HTTP worker threads
 *   owner: coord-a                                # lease holder id; default hostname:pid
 *   participants: {allow: ["127.0.0.1:*"]}        # host:port patterns; required
 *   defaults: {timeout: 30s, call_timeout: 3s,
 *              retry: {initial: 100ms, max: 5s, max_attempts: 6}}
 *   max_inflight: 1024                            # participant calls at once
 *   claim_interval: 2s                            # look for unowned work this often
 *   lease: 10s                                    # lease on a transaction
 *   purge_after: 168h                             # final transactions kept this long
 *   drain: 10s                                    # SIGTERM: longest wait for calls in flight
 *   audit: {dir: /var/lib/dengbao/audit}          # required (fail closed)
 *
 * Strict: unknown keys, duplicate keys, aliases and out-of-range values are refused with the
 * file, line and key (yamlcfg.h does the YAML; the checks are here). Relative paths are
 * relative to the configuration file's folder.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "dengbao/yamlcfg.h"

#define CONFIG_MAX (1u << 20)

static int
hostport(dbao_yaml *y, yaml_node_t *n, const char *key, char **host, uint16_t *port)
{
    int rc = dbao_yaml_want_scalar(y, n, key, "host:port");
    if (rc != 0)
        return rc;
    const char *s = dbao_yaml_scalar(n);
    const char *col = strrchr(s, ':');
    if (col == NULL || col == s || col[1] == 0)
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "%s: must be a numeric host:port", key);
    size_t hl = (size_t) (col - s);
    const char *h = s;
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']')
            return dbao_yaml_fail(y, DBAO_EFORMAT, n, "%s: bad IPv6 address", key);
        h = s + 1;
        hl -= 2;
    }
    char *end;
    unsigned long p = strtoul(col + 1, &end, 10);
    if (*end != 0 || p > 65535 || col[1] < '0' || col[1] > '9')
        return dbao_yaml_fail(y, DBAO_EFORMAT, n, "%s: bad port", key);
    char *hs = malloc(hl + 1);
    if (hs == NULL)
        return dbao_yaml_fail(y, DBAO_ENOMEM, n, "out of memory");
    memcpy(hs, h, hl);
    hs[hl] = 0;
    free(*host);
    *host = hs;
    *port = (uint16_t) p;
    return 0;
}

static int
dur32(dbao_yaml *y, yaml_node_t *n, const char *key, uint64_t min, uint64_t max, uint32_t *out)
{
    uint64_t v;
    int rc = dbao_yaml_duration_ms(y, n, key, min, max, &v);
    if (rc == 0)
        *out = (uint32_t) v;
    return rc;
}

static int
parse_root(dbao_yaml *y, yaml_node_t *root, saga_config *c)
{
    enum {
        K_STORE,
        K_DATA,
        K_LISTEN,
        K_ADMIN,
        K_TOKEN,
        K_WORKERS,
        K_OWNER,
        K_PART,
        K_DEF,
        K_INFL,
        K_CLAIM,
        K_LEASE,
        K_PURGE,
        K_DRAIN,
        K_AUDIT,
        K_N
    };
    static const char *const keys[K_N] = {
        "store",          "data_dir", "listen",       "admin_listen", "admin_token_file",
        "workers",        "owner",    "participants", "defaults",     "max_inflight",
        "claim_interval", "lease",    "purge_after",  "drain",        "audit"};
    yaml_node_t *v[K_N];
    int rc = dbao_yaml_fields(y, root, "the configuration", keys, K_N, v);
    if (rc != 0)
        return rc;
    if (v[K_LISTEN] == NULL || v[K_PART] == NULL || v[K_AUDIT] == NULL ||
        (v[K_STORE] == NULL && v[K_DATA] == NULL))
        return dbao_yaml_fail(y, DBAO_EFORMAT, root,
                              "'listen', 'participants', 'audit' and 'store' or 'data_dir' are "
                              "required");
    if (v[K_STORE] != NULL) {
        if ((rc = dbao_yaml_str(y, v[K_STORE], "store", &c->store_url)) != 0)
            return rc;
        if (strncmp(c->store_url, "sqlite:", 7) == 0 && c->store_url[7] != '/' && y->base) {
            /* a relative SQLite path is relative to the configuration's folder */
            size_t need = strlen(y->base) + strlen(c->store_url) + 2;
            char *u = malloc(need);
            if (u == NULL)
                return dbao_yaml_fail(y, DBAO_ENOMEM, v[K_STORE], "out of memory");
            snprintf(u, need, "sqlite:%s/%s", y->base, c->store_url + 7);
            free(c->store_url);
            c->store_url = u;
        }
    } else {
        char *dir = NULL;
        if ((rc = dbao_yaml_path(y, v[K_DATA], "data_dir", &dir)) != 0)
            return rc;
        size_t need = strlen(dir) + 20;
        c->store_url = malloc(need);
        if (c->store_url == NULL) {
            free(dir);
            return dbao_yaml_fail(y, DBAO_ENOMEM, v[K_DATA], "out of memory");
        }
        snprintf(c->store_url, need, "sqlite:%s/saga.db", dir);
        free(dir);
    }
    if ((rc = hostport(y, v[K_LISTEN], "listen", &c->listen_host, &c->listen_port)) != 0)
        return rc;
    if (v[K_ADMIN] != NULL) {
        if ((rc = hostport(y, v[K_ADMIN], "admin_listen", &c->admin_host, &c->admin_port)) != 0)
            return rc;
    } else {
        c->admin_host = strdup("127.0.0.1");
        c->admin_port = 8471;
        if (c->admin_host == NULL)
            return dbao_yaml_fail(y, DBAO_ENOMEM, root, "out of memory");
    }
    if (v[K_TOKEN] != NULL &&
        (rc = dbao_yaml_path(y, v[K_TOKEN], "admin_token_file", &c->admin_token_file)) != 0)
        return rc;
    uint64_t u;
    c->workers = 2;
    if (v[K_WORKERS] != NULL) {
        if ((rc = dbao_yaml_uint(y, v[K_WORKERS], "workers", 1, 64, &u)) != 0)
            return rc;
        c->workers = (unsigned) u;
    }
    if (v[K_OWNER] != NULL) {
        if ((rc = dbao_yaml_str(y, v[K_OWNER], "owner", &c->owner)) != 0)
            return rc;
        if (strlen(c->owner) == 0 || strlen(c->owner) > 64)
            return dbao_yaml_fail(y, DBAO_EFORMAT, v[K_OWNER], "owner: 1..64 bytes");
    }
    /* participants */
    {
        static const char *const pk[] = {"allow"};
        yaml_node_t *pv[1];
        if ((rc = dbao_yaml_fields(y, v[K_PART], "participants", pk, 1, pv)) != 0)
            return rc;
        if (pv[0] == NULL || pv[0]->type != YAML_SEQUENCE_NODE || dbao_yaml_len(pv[0]) == 0 ||
            dbao_yaml_len(pv[0]) > SAGA_ALLOW_MAX)
            return dbao_yaml_fail(y, DBAO_EFORMAT, v[K_PART],
                                  "participants.allow: a list of 1..%d host:port patterns",
                                  SAGA_ALLOW_MAX);
        for (size_t i = 0; i < dbao_yaml_len(pv[0]); i++) {
            yaml_node_t *it;
            if ((rc = dbao_yaml_item(y, pv[0], i, &it)) != 0)
                return rc;
            char *s = NULL;
            if ((rc = dbao_yaml_str(y, it, "participants.allow", &s)) != 0)
                return rc;
            c->allow[c->num_allow++] = s;
            if (strcmp(s, "*") != 0 && (strchr(s, ':') == NULL || strchr(s, '/') != NULL))
                return dbao_yaml_fail(y, DBAO_EFORMAT, it,
                                      "participants.allow: \"host:port\", \"host:*\" or \"*\"");
        }
    }
    c->timeout_ms = 30000;
    c->call_timeout_ms = 3000;
    c->retry_initial_ms = 100;
    c->retry_max_ms = 5000;
    c->max_attempts = 6;
    if (v[K_DEF] != NULL) {
        static const char *const dk[] = {"timeout", "call_timeout", "retry"};
        yaml_node_t *dv[3];
        if ((rc = dbao_yaml_fields(y, v[K_DEF], "defaults", dk, 3, dv)) != 0)
            return rc;
        if (dv[0] && (rc = dur32(y, dv[0], "defaults.timeout", 1, 86400000, &c->timeout_ms)))
            return rc;
        if (dv[1] &&
            (rc = dur32(y, dv[1], "defaults.call_timeout", 1, 3600000, &c->call_timeout_ms)))
            return rc;
        if (dv[2] != NULL) {
            static const char *const rk[] = {"initial", "max", "max_attempts"};
            yaml_node_t *rv[3];
            if ((rc = dbao_yaml_fields(y, dv[2], "defaults.retry", rk, 3, rv)) != 0)
                return rc;
            if (rv[0] &&
                (rc = dur32(y, rv[0], "defaults.retry.initial", 1, 3600000, &c->retry_initial_ms)))
                return rc;
            if (rv[1] &&
                (rc = dur32(y, rv[1], "defaults.retry.max", 1, 86400000, &c->retry_max_ms)))
                return rc;
            if (rv[2]) {
                if ((rc = dbao_yaml_uint(y, rv[2], "defaults.retry.max_attempts", 1, 1000, &u)))
                    return rc;
                c->max_attempts = (uint32_t) u;
            }
            if (c->retry_initial_ms > c->retry_max_ms)
                return dbao_yaml_fail(y, DBAO_EFORMAT, dv[2],
                                      "defaults.retry.initial must not exceed max");
        }
    }
    c->max_inflight = 1024;
    if (v[K_INFL] != NULL) {
        if ((rc = dbao_yaml_uint(y, v[K_INFL], "max_inflight", 1, 1000000, &u)) != 0)
            return rc;
        c->max_inflight = (unsigned) u;
    }
    c->claim_interval_ms = 2000;
    if (v[K_CLAIM] &&
        (rc = dur32(y, v[K_CLAIM], "claim_interval", 10, 3600000, &c->claim_interval_ms)))
        return rc;
    c->lease_ms = 10000;
    if (v[K_LEASE] && (rc = dur32(y, v[K_LEASE], "lease", 300, 3600000, &c->lease_ms)))
        return rc;
    c->purge_after_ms = 7ull * 24 * 3600 * 1000;
    if (v[K_PURGE] != NULL) {
        if ((rc = dbao_yaml_duration_ms(y, v[K_PURGE], "purge_after", 60000,
                                        3650ull * 24 * 3600 * 1000, &c->purge_after_ms)) != 0)
            return rc;
    }
    c->drain_ms = 10000;
    if (v[K_DRAIN] && (rc = dur32(y, v[K_DRAIN], "drain", 1, 600000, &c->drain_ms)))
        return rc;
    {
        static const char *const ak[] = {"dir"};
        yaml_node_t *av[1];
        if ((rc = dbao_yaml_fields(y, v[K_AUDIT], "audit", ak, 1, av)) != 0)
            return rc;
        if (av[0] == NULL)
            return dbao_yaml_fail(y, DBAO_EFORMAT, v[K_AUDIT], "audit.dir is required");
        if ((rc = dbao_yaml_path(y, av[0], "audit.dir", &c->audit_dir)) != 0)
            return rc;
    }
    return 0;
}

void
saga_config_free(saga_config *c)
{
    if (c == NULL)
        return;
    if (c->store_url != NULL) {
        dbao_cleanse(c->store_url, strlen(c->store_url)); /* may hold a password */
        free(c->store_url);
    }
    free(c->listen_host);
    free(c->admin_host);
    free(c->admin_token_file);
    for (size_t i = 0; i < c->num_allow; i++)
        free(c->allow[i]);
    free(c->audit_dir);
    free(c->owner);
    memset(c, 0, sizeof *c);
}

int
saga_config_load(saga_config *c, const char *path, dbao_err *err)
{
    memset(c, 0, sizeof *c);
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = dbao_file_read(&text, &len, path, CONFIG_MAX, err);
    if (rc != 0)
        return rc;
    dbao_yaml y;
    rc = dbao_yaml_load(&y, (const char *) text, len, path, err);
    if (rc == 0 && y.root == NULL)
        rc = dbao_err_set(err, DBAO_EFORMAT, "%s: empty configuration", path);
    if (rc == 0)
        rc = parse_root(&y, y.root, c);
    dbao_yaml_free(&y);
    dbao_free(text);
    if (rc != 0)
        saga_config_free(c);
    return rc;
}
