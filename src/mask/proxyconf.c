/* proxyconf.c: the masking proxy's YAML configuration (docs/mask.md, "Proxy
 * configuration").
 *
 *     listen: 127.0.0.1:6432          # required, numeric host:port
 *     workers: 1                      # event-loop threads, 1..64
 *     server:                         # the real PostgreSQL (required)
 *       address: 127.0.0.1:5432
 *       tls: prefer                   # disable | prefer | require | verify
 *       ca: ca.pem                    # verify: the CA file; name: the expected
 * host name tls: {cert: proxy.pem, key: proxy.key, require: false}   # client
 * side, optional policy: mask-policy.yaml        # required: the masking policy
 *     catalog:                        # how the proxy reads the real catalog
 * (required) conninfo: "host=127.0.0.1 port=5432 user=dengbao_catalog"   #
 * dbname is set per database refresh: 60s users: {dr_wang: [doctor], clerk_li:
 * [clerk]}   # PostgreSQL user -> proxy roles scan_results: true              #
 * second line of defence: detectors on unmarked values audit: {dir: audit,
 * mode: durable}   # durable: the statement waits for its record max_message:
 * 64m
 *
 * The same strictness as the gateway and the policy: unknown or duplicate keys,
 * wrong kinds, aliases, quoted numbers, out-of-range values are refused with
 * "file:line: ...". Relative paths are resolved against the configuration's
 * folder. Users not listed under `users` have no role: every sensitive column
 * is masked for them (deny by default).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/mask.h"
#include "dengbao/yamlcfg.h"
#include "maskproxy.h"

#define MAX_FILE  (1u << 20)
#define MAX_USERS 100000
#define MAX_ROLES 64

typedef dbao_yaml P;
#define fail   dbao_yaml_fail
#define fields dbao_yaml_fields

static int
get_hostport(P *p, const yaml_node_t *n, const char *key, char **host, uint16_t *port)
{
    char *s = NULL;
    int rc = dbao_yaml_str(p, n, key, &s);
    if (rc != 0)
        return rc;
    char *colon = strrchr(s, ':');
    char *h = s;
    if (colon == NULL || colon == s || colon[1] == '\0')
        goto bad;
    *colon = '\0';
    if (h[0] == '[') {
        size_t hl = strlen(h);
        if (hl < 3 || h[hl - 1] != ']')
            goto bad;
        h[hl - 1] = '\0';
        h++;
    }
    unsigned long v = 0;
    for (const char *q = colon + 1; *q; q++) {
        if (*q < '0' || *q > '9' || v > 65535)
            goto bad;
        v = v * 10 + (unsigned long) (*q - '0');
    }
    unsigned char tmp[16];
    if (v == 0 || v > 65535 ||
        (inet_pton(AF_INET, h, tmp) != 1 && inet_pton(AF_INET6, h, tmp) != 1))
        goto bad;
    free(*host);
    *host = strdup(h);
    free(s);
    if (*host == NULL)
        return fail(p, DBAO_ENOMEM, n, "out of memory");
    *port = (uint16_t) v;
    return 0;
bad:
    free(s);
    return fail(p, DBAO_EFORMAT, n, "'%s': want a numeric \"host:port\" or \"[v6]:port\"", key);
}

static int
role_token_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (const char *q = s; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
              *q == '_' || *q == '-' || *q == '.'))
            return 0;
    return 1;
}

static int
parse_users(P *p, const yaml_node_t *m, mask_proxy_config *c)
{
    if (m->type != YAML_MAPPING_NODE)
        return fail(p, DBAO_EFORMAT, m, "'users' must be a mapping of user -> [roles]");
    size_t n = dbao_yaml_len(m);
    if (n > MAX_USERS)
        return fail(p, DBAO_EFORMAT, m, "more than %d users", MAX_USERS);
    c->users = calloc(n ? n : 1, sizeof *c->users);
    if (c->users == NULL)
        return fail(p, DBAO_ENOMEM, m, "out of memory");
    for (size_t pi = 0; pi < n; pi++) {
        yaml_node_t *kn, *vn;
        int rc = dbao_yaml_pair(p, m, pi, &kn, &vn);
        if (rc != 0)
            return rc;
        mp_user *u = &c->users[c->num_users];
        rc = dbao_yaml_str(p, kn, "users", &u->name);
        if (rc != 0)
            return rc;
        c->num_users++;
        for (size_t i = 0; i + 1 < c->num_users; i++)
            if (strcmp(c->users[i].name, u->name) == 0)
                return fail(p, DBAO_EFORMAT, kn, "duplicate user '%.64s'", u->name);
        if (vn->type != YAML_SEQUENCE_NODE)
            return fail(p, DBAO_EFORMAT, vn, "user '%.64s': roles must be a list", u->name);
        size_t nr = dbao_yaml_len(vn);
        if (nr > MAX_ROLES)
            return fail(p, DBAO_EFORMAT, vn, "user '%.64s': more than %d roles", u->name,
                        MAX_ROLES);
        u->roles = calloc(nr + 1, sizeof *u->roles);
        if (u->roles == NULL)
            return fail(p, DBAO_ENOMEM, vn, "out of memory");
        for (size_t ri = 0; ri < nr; ri++) {
            yaml_node_t *rn;
            rc = dbao_yaml_item(p, vn, ri, &rn);
            if (rc != 0)
                return rc;
            char *r = NULL;
            rc = dbao_yaml_str(p, rn, "role", &r);
            if (rc != 0)
                return rc;
            u->roles[u->num_roles++] = r;
            if (!role_token_ok(r))
                return fail(p, DBAO_EFORMAT, rn, "bad role name (want [A-Za-z0-9_.-]{1,64})");
        }
    }
    return 0;
}

static int
parse_root(P *p, const yaml_node_t *root, mask_proxy_config *c)
{
    static const char *const keys[] = {"listen", "workers",    "server", "tls",
                                       "policy", "catalog",    "users",  "scan_results",
                                       "audit",  "max_message"};
    enum {
        K_LISTEN,
        K_WORKERS,
        K_SERVER,
        K_TLS,
        K_POLICY,
        K_CATALOG,
        K_USERS,
        K_SCAN,
        K_AUDIT,
        K_MAXMSG,
        K_N
    };
    yaml_node_t *v[K_N];
    int rc = fields(p, root, "the configuration", keys, K_N, v);
    if (rc != 0)
        return rc;
    if (v[K_LISTEN] == NULL || v[K_SERVER] == NULL || v[K_POLICY] == NULL || v[K_CATALOG] == NULL ||
        v[K_AUDIT] == NULL)
        return fail(p, DBAO_EFORMAT, root,
                    "'listen', 'server', 'policy', 'catalog' and 'audit' are required");
    if ((rc = get_hostport(p, v[K_LISTEN], "listen", &c->listen_host, &c->listen_port)) != 0)
        return rc;
    uint64_t u = 0;
    c->workers = 1;
    if (v[K_WORKERS] != NULL) {
        if ((rc = dbao_yaml_uint(p, v[K_WORKERS], "workers", 1, 64, &u)) != 0)
            return rc;
        c->workers = (unsigned) u;
    }
    /* server */
    {
        static const char *const sk[] = {"address", "tls", "ca", "name"};
        yaml_node_t *s[4];
        if ((rc = fields(p, v[K_SERVER], "'server'", sk, 4, s)) != 0)
            return rc;
        if (s[0] == NULL)
            return fail(p, DBAO_EFORMAT, v[K_SERVER], "'server.address' is required");
        if ((rc = get_hostport(p, s[0], "address", &c->server_host, &c->server_port)) != 0)
            return rc;
        c->server_tls = PGP_TLS_PREFER;
        if (s[1] != NULL) {
            static const char *const modes[] = {"disable", "prefer", "require", "verify"};
            int m = 0;
            if ((rc = dbao_yaml_enum(p, s[1], "server.tls", modes, 4, &m)) != 0)
                return rc;
            c->server_tls = (pgp_upstream_tls) m;
        }
        if (s[2] != NULL && (rc = dbao_yaml_path(p, s[2], "ca", &c->server_ca)) != 0)
            return rc;
        if (s[3] != NULL && (rc = dbao_yaml_str(p, s[3], "name", &c->server_name)) != 0)
            return rc;
        if (c->server_tls == PGP_TLS_VERIFY && c->server_ca == NULL)
            return fail(p, DBAO_EFORMAT, v[K_SERVER], "'server.tls: verify' needs 'server.ca'");
    }
    if (v[K_TLS] != NULL) {
        static const char *const tk[] = {"cert", "key", "require"};
        yaml_node_t *t[3];
        if ((rc = fields(p, v[K_TLS], "'tls'", tk, 3, t)) != 0)
            return rc;
        if (t[0] == NULL || t[1] == NULL)
            return fail(p, DBAO_EFORMAT, v[K_TLS], "'tls' needs both 'cert' and 'key'");
        if ((rc = dbao_yaml_path(p, t[0], "cert", &c->tls_cert)) != 0 ||
            (rc = dbao_yaml_path(p, t[1], "key", &c->tls_key)) != 0)
            return rc;
        if (t[2] != NULL && (rc = dbao_yaml_bool(p, t[2], "require", &c->tls_require)) != 0)
            return rc;
    }
    if ((rc = dbao_yaml_path(p, v[K_POLICY], "policy", &c->policy_path)) != 0)
        return rc;
    {
        static const char *const ck[] = {"conninfo", "refresh"};
        yaml_node_t *s[2];
        if ((rc = fields(p, v[K_CATALOG], "'catalog'", ck, 2, s)) != 0)
            return rc;
        if (s[0] == NULL)
            return fail(p, DBAO_EFORMAT, v[K_CATALOG], "'catalog.conninfo' is required");
        if ((rc = dbao_yaml_str(p, s[0], "conninfo", &c->catalog_conninfo)) != 0)
            return rc;
        c->catalog_refresh_ms = 60000;
        if (s[1] != NULL) {
            if ((rc = dbao_yaml_duration_ms(p, s[1], "refresh", 1000, 86400000, &u)) != 0)
                return rc;
            c->catalog_refresh_ms = (uint32_t) u;
        }
    }
    if (v[K_USERS] != NULL && (rc = parse_users(p, v[K_USERS], c)) != 0)
        return rc;
    c->scan_results = true;
    if (v[K_SCAN] != NULL &&
        (rc = dbao_yaml_bool(p, v[K_SCAN], "scan_results", &c->scan_results)) != 0)
        return rc;
    {
        static const char *const ak[] = {"dir", "mode"};
        yaml_node_t *s[2];
        if ((rc = fields(p, v[K_AUDIT], "'audit'", ak, 2, s)) != 0)
            return rc;
        if (s[0] == NULL)
            return fail(p, DBAO_EFORMAT, v[K_AUDIT], "'audit.dir' is required");
        if ((rc = dbao_yaml_path(p, s[0], "dir", &c->audit_dir)) != 0)
            return rc;
        c->audit_durable = true;
        if (s[1] != NULL) {
            static const char *const modes[] = {"durable", "async"};
            int m = 0;
            if ((rc = dbao_yaml_enum(p, s[1], "audit.mode", modes, 2, &m)) != 0)
                return rc;
            c->audit_durable = m == 0;
        }
    }
    c->max_message = (size_t) 64 << 20;
    if (v[K_MAXMSG] != NULL) {
        if ((rc = dbao_yaml_size(p, v[K_MAXMSG], "max_message", 8192, (uint64_t) 1 << 30, &u)) != 0)
            return rc;
        c->max_message = (size_t) u;
    }
    return 0;
}

static int
parse_text(mask_proxy_config *c, const char *text, size_t len, const char *name, dbao_err *err)
{
    dbao_yaml y;
    int rc = dbao_yaml_load(&y, text, len, name, err);
    if (rc == 0 && y.root == NULL)
        rc = dbao_err_set(err, DBAO_EFORMAT, "%s: empty configuration", name);
    if (rc == 0)
        rc = parse_root(&y, y.root, c);
    dbao_yaml_free(&y);
    return rc;
}

void
mask_proxy_config_free(mask_proxy_config *c)
{
    if (c == NULL)
        return;
    free(c->listen_host);
    free(c->server_host);
    free(c->server_ca);
    free(c->server_name);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->policy_path);
    if (c->catalog_conninfo != NULL) {
        dbao_cleanse(c->catalog_conninfo, strlen(c->catalog_conninfo)); /* may hold a password */
        free(c->catalog_conninfo);
    }
    free(c->audit_dir);
    for (size_t i = 0; i < c->num_users; i++) {
        free(c->users[i].name);
        for (size_t j = 0; j < c->users[i].num_roles; j++)
            free(c->users[i].roles[j]);
        free(c->users[i].roles);
    }
    free(c->users);
    mask_policy_free(c->policy);
    free(c);
}

int
mask_proxy_config_load(mask_proxy_config **out, const char *path, dbao_err *err)
{
    *out = NULL;
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = dbao_file_read(&text, &len, path, MAX_FILE, err);
    if (rc != 0)
        return rc;
    mask_proxy_config *c = calloc(1, sizeof *c);
    if (c == NULL) {
        dbao_free(text);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    rc = parse_text(c, (const char *) text, len, path, err);
    dbao_free(text);
    if (rc == 0)
        rc = mask_policy_load(&c->policy, c->policy_path, err);
    if (rc != 0) {
        mask_proxy_config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

const char *
mask_proxy_config_audit_dir(const mask_proxy_config *c)
{
    return c->audit_dir;
}

const char *
mask_proxy_config_listen_host(const mask_proxy_config *c)
{
    return c->listen_host;
}

const char *const *
mp_config_roles(const mask_proxy_config *c, const char *user, size_t *num)
{
    for (size_t i = 0; i < c->num_users; i++) {
        if (strcmp(c->users[i].name, user) == 0) {
            *num = c->users[i].num_roles;
            return (const char *const *) c->users[i].roles;
        }
    }
    *num = 0;
    return NULL;
}
