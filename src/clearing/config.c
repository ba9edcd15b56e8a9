/* config.c: the clearing daemon's configuration (clearing.yaml), read strictly.
 *
 * What: clr_config_load / clr_config_parse turn one YAML document into a clr_config. Every key
 * is documented in docs/clearing-ops.md and deploy/clearing.yaml is a complete example:
 *
 *   data_dir: data                 # journals: <data_dir>/shard-<N>/
 *   shards: 2
 *   listen: {host: 127.0.0.1, port: 7400}          # binary protocol (docs/clearing-protocol.md)
 *   http: {host: 127.0.0.1, port: 7401, workers: 1} # JSON face, /metrics, /healthz
 *   io_threads: 1
 *   max_connections: 20000
 *   wait: block                    # block | yield | spin
 *   ring: {capacity: 65536, batch: 4096}
 *   journal: {segment_size: 64m, snapshot_every: 100000, keep: 2, sync: true}
 *   audit: {dir: audit}
 *   fees: {commission_ppm: 250, commission_min: "5.00", stamp_ppm: 500, transfer_ppm: 10}
 *   instruments:                   # or a file name holding such a list
 *     - {security: "600000", tick: "0.01", lot: 100, band: ["9.00", "11.00"]}
 *
 * Why strict: a typo in a clearing configuration silently changes money handling, so unknown
 * and duplicate keys are refused, and every error names the file and line (yamlcfg.h does the
 * YAML side: libyaml's document API, no aliases). Money (tick, band, commission_min) is a yuan
 * string with at most two decimals parsed by clr_money_parse into integer fen: no floating
 * point is involved anywhere. Instruments are sorted here by security (duplicates refused) so
 * that clr_engine_new gets them as it requires.
 */
#include <stdlib.h>
#include <string.h>

#include "dengbao/yamlcfg.h"
#include "server.h"

typedef struct P {
    dbao_yaml y;
} P;

static int
oom(P *p)
{
    return dbao_err_set(p->y.err, DBAO_ENOMEM, "%s: out of memory", p->y.name);
}

static int
get_unsigned(P *p, const yaml_node_t *n, const char *key, unsigned min, unsigned max, unsigned *out)
{
    uint64_t v;
    int rc = dbao_yaml_uint(&p->y, n, key, min, max, &v);
    if (rc == 0)
        *out = (unsigned) v;
    return rc;
}

static int
get_port(P *p, const yaml_node_t *n, const char *key, uint16_t *out)
{
    uint64_t v;
    int rc = dbao_yaml_uint(&p->y, n, key, 0, 65535, &v);
    if (rc == 0)
        *out = (uint16_t) v;
    return rc;
}

/* A money scalar in yuan ("0.01", 0.01 or "5") into fen, range-checked. */
static int
get_money(P *p, const yaml_node_t *n, const char *key, int64_t min, int64_t max, int64_t *out)
{
    int rc = dbao_yaml_want_scalar(&p->y, n, key, "an amount in yuan such as \"0.01\"");
    if (rc != 0)
        return rc;
    const char *s = dbao_yaml_scalar(n);
    int64_t v;
    if (clr_money_parse(s, strlen(s), &v, NULL) != 0)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, n,
                              "'%s' must be an amount in yuan with at most 2 decimals", key);
    if (v < min || v > max)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, n, "'%s' is out of range", key);
    *out = v;
    return 0;
}

static int
get_listen(P *p, const yaml_node_t *n, const char *ctx, char **host, uint16_t *port,
           unsigned *workers)
{
    static const char *const keys[] = {"host", "port", "workers"};
    yaml_node_t *v[3];
    size_t nk = workers != NULL ? 3 : 2;
    int rc = dbao_yaml_fields(&p->y, n, ctx, keys, nk, v);
    if (rc != 0)
        return rc;
    if (v[0] != NULL) {
        free(*host);
        *host = NULL;
        if ((rc = dbao_yaml_str(&p->y, v[0], "host", host)) != 0)
            return rc;
    }
    if (v[1] == NULL)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, n, "'port' is required in %s", ctx);
    if ((rc = get_port(p, v[1], "port", port)) != 0)
        return rc;
    if (workers != NULL && v[2] != NULL)
        rc = get_unsigned(p, v[2], "workers", 1, 64, workers);
    return rc;
}

static int
cmp_inst(const void *a, const void *b)
{
    const clr_instrument *x = a, *y = b;
    return x->security < y->security ? -1 : x->security > y->security;
}

static int
get_instrument(P *p, const yaml_node_t *n, clr_instrument *in)
{
    static const char *const keys[] = {"security", "tick", "lot", "band"};
    yaml_node_t *v[4];
    int rc = dbao_yaml_fields(&p->y, n, "an instrument", keys, 4, v);
    if (rc != 0)
        return rc;
    memset(in, 0, sizeof *in);
    if (v[0] == NULL)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, n, "'security' is required in an instrument");
    if ((rc = dbao_yaml_want_scalar(&p->y, v[0], "security", "a 6-digit code")) != 0)
        return rc;
    const char *s = dbao_yaml_scalar(v[0]);
    if (strlen(s) != 6 || strspn(s, "0123456789") != 6)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, v[0], "'security' must be a 6-digit code");
    in->security = (uint32_t) strtoul(s, NULL, 10);
    if (clr_route_venue(in->security) == CLR_VENUE_NONE)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, v[0],
                              "'security' %s is routed to no venue (SH 6/9, SZ 0/2/3, BJ 4/8)", s);
    in->tick = 1;
    if (v[1] != NULL && (rc = get_money(p, v[1], "tick", 1, CLR_PRICE_MAX, &in->tick)) != 0)
        return rc;
    uint64_t lot = 100;
    if (v[2] != NULL && (rc = dbao_yaml_uint(&p->y, v[2], "lot", 1, 1000000, &lot)) != 0)
        return rc;
    in->lot = (int64_t) lot;
    if (v[3] != NULL) {
        if (v[3]->type != YAML_SEQUENCE_NODE || dbao_yaml_len(v[3]) != 2)
            return dbao_yaml_fail(&p->y, DBAO_EFORMAT, v[3],
                                  "'band' must be a list [low, high] of amounts in yuan");
        yaml_node_t *lo, *hi;
        if ((rc = dbao_yaml_item(&p->y, v[3], 0, &lo)) != 0 ||
            (rc = dbao_yaml_item(&p->y, v[3], 1, &hi)) != 0)
            return rc;
        if ((rc = get_money(p, lo, "band", 1, CLR_PRICE_MAX, &in->price_lo)) != 0 ||
            (rc = get_money(p, hi, "band", 1, CLR_PRICE_MAX, &in->price_hi)) != 0)
            return rc;
        if (in->price_lo > in->price_hi)
            return dbao_yaml_fail(&p->y, DBAO_EFORMAT, v[3], "'band' low is above high");
        if (in->price_lo % in->tick != 0 || in->price_hi % in->tick != 0)
            return dbao_yaml_fail(&p->y, DBAO_EFORMAT, v[3],
                                  "'band' limits must be multiples of the tick");
    }
    return 0;
}

static int
get_instrument_list(P *p, const yaml_node_t *seq, clr_config *c)
{
    if (seq->type != YAML_SEQUENCE_NODE)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, seq,
                              "'instruments' must be a list or a file name");
    size_t n = dbao_yaml_len(seq);
    if (n == 0)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, seq, "'instruments' is empty");
    if (n > 1000000)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, seq, "'instruments' has too many entries");
    c->instruments = calloc(n, sizeof *c->instruments);
    if (c->instruments == NULL)
        return oom(p);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it;
        int rc = dbao_yaml_item(&p->y, seq, i, &it);
        if (rc == 0)
            rc = get_instrument(p, it, &c->instruments[i]);
        if (rc != 0)
            return rc;
        c->num_instruments++;
    }
    qsort(c->instruments, n, sizeof *c->instruments, cmp_inst);
    for (size_t i = 1; i < n; i++)
        if (c->instruments[i].security == c->instruments[i - 1].security)
            return dbao_yaml_fail(&p->y, DBAO_EFORMAT, seq, "'instruments': security %06u twice",
                                  (unsigned) c->instruments[i].security);
    return 0;
}

static int
get_instruments(P *p, const yaml_node_t *n, clr_config *c)
{
    if (n->type == YAML_SEQUENCE_NODE)
        return get_instrument_list(p, n, c);
    char *path = NULL;
    int rc = dbao_yaml_path(&p->y, n, "instruments", &path);
    if (rc != 0)
        return rc;
    uint8_t *text = NULL;
    size_t len = 0;
    rc = dbao_file_read(&text, &len, path, (size_t) 64 << 20, p->y.err);
    if (rc != 0) {
        dbao_err_set(p->y.err, rc, "%s: cannot read the instruments file %s", p->y.name, path);
        free(path);
        return rc;
    }
    P q;
    memset(&q, 0, sizeof q);
    rc = dbao_yaml_load(&q.y, (const char *) text, len, path, p->y.err);
    if (rc == 0 && q.y.root == NULL)
        rc = dbao_err_set(p->y.err, DBAO_EFORMAT, "%s: the instruments file is empty", path);
    if (rc == 0)
        rc = get_instrument_list(&q, q.y.root, c);
    dbao_yaml_free(&q.y);
    dbao_free(text);
    free(path);
    return rc;
}

static int
parse_root(P *p, clr_config *c)
{
    static const char *const keys[] = {"data_dir",   "shards", "listen",      "http",
                                       "io_threads", "wait",   "ring",        "journal",
                                       "audit",      "fees",   "instruments", "max_connections"};
    enum {
        K_DATA,
        K_SHARDS,
        K_LISTEN,
        K_HTTP,
        K_IO,
        K_WAIT,
        K_RING,
        K_JNL,
        K_AUDIT,
        K_FEES,
        K_INST,
        K_MAXC,
        K_N
    };
    yaml_node_t *v[K_N];
    if (p->y.root == NULL)
        return dbao_err_set(p->y.err, DBAO_EFORMAT, "%s: the configuration is empty", p->y.name);
    int rc = dbao_yaml_fields(&p->y, p->y.root, "the configuration", keys, K_N, v);
    if (rc != 0)
        return rc;
    if (v[K_DATA] == NULL)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, p->y.root, "'data_dir' is required");
    if ((rc = dbao_yaml_path(&p->y, v[K_DATA], "data_dir", &c->data_dir)) != 0)
        return rc;
    if (v[K_SHARDS] != NULL &&
        (rc = get_unsigned(p, v[K_SHARDS], "shards", 1, CLR_SHARDS_MAX, &c->shards)) != 0)
        return rc;
    if (v[K_LISTEN] != NULL) {
        c->tcp_enabled = true;
        if ((rc = get_listen(p, v[K_LISTEN], "'listen'", &c->tcp_host, &c->tcp_port, NULL)) != 0)
            return rc;
    }
    if (v[K_HTTP] != NULL) {
        c->http_enabled = true;
        if ((rc = get_listen(p, v[K_HTTP], "'http'", &c->http_host, &c->http_port,
                             &c->http_workers)) != 0)
            return rc;
    }
    if (!c->tcp_enabled && !c->http_enabled)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, p->y.root,
                              "at least one of 'listen' and 'http' is required");
    if (v[K_IO] != NULL &&
        (rc = get_unsigned(p, v[K_IO], "io_threads", 1, CLR_IO_THREADS_MAX, &c->io_threads)) != 0)
        return rc;
    if (v[K_MAXC] != NULL) {
        uint64_t m;
        if ((rc = dbao_yaml_uint(&p->y, v[K_MAXC], "max_connections", 1, 1000000, &m)) != 0)
            return rc;
        c->max_connections = (uint32_t) m;
    }
    if (v[K_WAIT] != NULL) {
        static const char *const names[] = {"block", "yield", "spin"};
        int w;
        if ((rc = dbao_yaml_enum(&p->y, v[K_WAIT], "wait", names, 3, &w)) != 0)
            return rc;
        c->wait = w == 0 ? RING_WAIT_BLOCK : w == 1 ? RING_WAIT_YIELD : RING_WAIT_SPIN;
    }
    if (v[K_RING] != NULL) {
        static const char *const rk[] = {"capacity", "batch"};
        yaml_node_t *r[2];
        if ((rc = dbao_yaml_fields(&p->y, v[K_RING], "'ring'", rk, 2, r)) != 0)
            return rc;
        uint64_t x;
        if (r[0] != NULL) {
            if ((rc = dbao_yaml_uint(&p->y, r[0], "capacity", 64, 1u << 24, &x)) != 0)
                return rc;
            if ((x & (x - 1)) != 0)
                return dbao_yaml_fail(&p->y, DBAO_EFORMAT, r[0],
                                      "'capacity' must be a power of two");
            c->ring_capacity = (size_t) x;
        }
        if (r[1] != NULL) {
            if ((rc = dbao_yaml_uint(&p->y, r[1], "batch", 1, 65536, &x)) != 0)
                return rc;
            c->batch_max = (size_t) x;
        }
    }
    if (v[K_JNL] != NULL) {
        static const char *const jk[] = {"segment_size", "snapshot_every", "keep", "sync"};
        yaml_node_t *j[4];
        if ((rc = dbao_yaml_fields(&p->y, v[K_JNL], "'journal'", jk, 4, j)) != 0)
            return rc;
        uint64_t x;
        if (j[0] != NULL) {
            if ((rc = dbao_yaml_size(&p->y, j[0], "segment_size", 4096, (uint64_t) 1 << 34, &x)) !=
                0)
                return rc;
            c->segment_bytes = (size_t) x;
        }
        if (j[1] != NULL && (rc = dbao_yaml_uint(&p->y, j[1], "snapshot_every", 0,
                                                 (uint64_t) 1 << 40, &c->snapshot_every)) != 0)
            return rc;
        if (j[2] != NULL && (rc = get_unsigned(p, j[2], "keep", 1, 1000, &c->snapshot_keep)) != 0)
            return rc;
        if (j[3] != NULL && (rc = dbao_yaml_bool(&p->y, j[3], "sync", &c->journal_sync)) != 0)
            return rc;
    }
    if (v[K_AUDIT] != NULL) {
        static const char *const ak[] = {"dir"};
        yaml_node_t *a[1];
        if ((rc = dbao_yaml_fields(&p->y, v[K_AUDIT], "'audit'", ak, 1, a)) != 0)
            return rc;
        if (a[0] == NULL)
            return dbao_yaml_fail(&p->y, DBAO_EFORMAT, v[K_AUDIT], "'dir' is required in 'audit'");
        if ((rc = dbao_yaml_path(&p->y, a[0], "dir", &c->audit_dir)) != 0)
            return rc;
        c->audit_required = true;
    }
    if (v[K_FEES] != NULL) {
        static const char *const fk[] = {"commission_ppm", "commission_min", "stamp_ppm",
                                         "transfer_ppm"};
        yaml_node_t *f[4];
        if ((rc = dbao_yaml_fields(&p->y, v[K_FEES], "'fees'", fk, 4, f)) != 0)
            return rc;
        uint64_t x;
        memset(&c->fees, 0, sizeof c->fees);
        if (f[0] != NULL) {
            if ((rc = dbao_yaml_uint(&p->y, f[0], "commission_ppm", 0, 100000, &x)) != 0)
                return rc;
            c->fees.commission_ppm = (int64_t) x;
        }
        if (f[1] != NULL &&
            (rc = get_money(p, f[1], "commission_min", 0, 100000000, &c->fees.commission_min)) != 0)
            return rc;
        if (f[2] != NULL) {
            if ((rc = dbao_yaml_uint(&p->y, f[2], "stamp_ppm", 0, 100000, &x)) != 0)
                return rc;
            c->fees.stamp_ppm = (int64_t) x;
        }
        if (f[3] != NULL) {
            if ((rc = dbao_yaml_uint(&p->y, f[3], "transfer_ppm", 0, 100000, &x)) != 0)
                return rc;
            c->fees.transfer_ppm = (int64_t) x;
        }
    }
    if (v[K_INST] == NULL)
        return dbao_yaml_fail(&p->y, DBAO_EFORMAT, p->y.root, "'instruments' is required");
    return get_instruments(p, v[K_INST], c);
}

static int
set_defaults(clr_config *c)
{
    c->shards = 1;
    c->http_workers = 1;
    c->io_threads = 1;
    c->max_connections = 20000;
    c->wait = RING_WAIT_BLOCK;
    c->ring_capacity = 65536;
    c->batch_max = 4096;
    c->segment_bytes = (size_t) 64 << 20;
    c->snapshot_every = 100000;
    c->snapshot_keep = 2;
    c->journal_sync = true;
    /* the default commission of an A-share broker: 0.025%, 5 yuan minimum; stamp 0.05% on
       sells; transfer 0.001% */
    c->fees.commission_ppm = 250;
    c->fees.commission_min = 500;
    c->fees.stamp_ppm = 500;
    c->fees.transfer_ppm = 10;
    c->tcp_host = strdup("127.0.0.1");
    c->http_host = strdup("127.0.0.1");
    return c->tcp_host != NULL && c->http_host != NULL ? 0 : DBAO_ENOMEM;
}

int
clr_config_parse(clr_config **out, const char *text, size_t len, const char *name, dbao_err *err)
{
    *out = NULL;
    clr_config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    int rc = set_defaults(c);
    if (rc != 0) {
        clr_config_free(c);
        return dbao_err_set(err, rc, "out of memory");
    }
    P p;
    memset(&p, 0, sizeof p);
    rc = dbao_yaml_load(&p.y, text, len, name, err);
    if (rc == 0)
        rc = parse_root(&p, c);
    dbao_yaml_free(&p.y);
    if (rc != 0) {
        clr_config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int
clr_config_load(clr_config **out, const char *path, dbao_err *err)
{
    uint8_t *text = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = dbao_file_read(&text, &len, path, (size_t) 16 << 20, err);
    if (rc != 0)
        return dbao_err_set(err, rc, "cannot read the configuration %s: %s", path,
                            dbao_strerror(rc));
    rc = clr_config_parse(out, (const char *) text, len, path, err);
    dbao_free(text);
    return rc;
}

void
clr_config_free(clr_config *c)
{
    if (c == NULL)
        return;
    free(c->data_dir);
    free(c->tcp_host);
    free(c->http_host);
    free(c->audit_dir);
    free(c->instruments);
    free(c);
}

void
clr_config_refdata(const clr_config *c, clr_refdata *ref)
{
    memset(ref, 0, sizeof *ref);
    ref->instruments = c->instruments;
    ref->num_instruments = c->num_instruments;
    ref->fees = c->fees;
}
