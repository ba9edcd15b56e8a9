/* cmd_gateway.c: dengbao gateway, the API gateway (反向代理网关; issue 5).
 *
 *   dengbao gateway --config FILE [--check]
 *   dengbao gateway --listen H:P --upstream H:P[,H:P...] [--workers N]
 *                   [--tls-cert F --tls-key F] [--admin H:P] [--access-log FILE|-]
 *   dengbao gateway --demo [--dir DIR]
 *
 * --config runs from a YAML file (docs/gateway.md); --check only validates it. The quick mode
 * proxies one listener to one cluster (as `caddy reverse-proxy` does). --demo is what `make
 * run` starts: on first run it writes DIR (default ./var/gateway) with a self-signed TLS key
 * and certificate (ECDSA P-256, key file 0600) and gateway.yaml, then starts the built-in demo
 * upstream (fictitious patient records) and the gateway from that file.
 *
 * Zero trust (issue 6). With a `security:` section the gateway opens the audit log of
 * security.audit.dir (created beforehand with `dengbao audit init`; the gateway holds its
 * signing key and is its only writer, as maskproxy does), builds the zero-trust runtime
 * (src/gateway/ztgw.c: tokens, device binding, X-Auth-Identity, RBAC, rate limits, one audit
 * record per decision) and puts its step first in the chain. `--check` then also validates the
 * security files (key files readable and 0600, JWKS, device keys, RBAC policy). The runtime
 * keeps the security section it started with: a reload changes routes and their security
 * keys, while changes to `security:` itself need a restart (a message says so).
 *
 * Signals (blocked in every thread, taken by sigwait here): SIGTERM, SIGINT: graceful stop
 * (in-flight requests finish; exit 0). SIGHUP: reload the configuration file (a bad one is
 * refused with a message; the running one stays), and with `security:` the RBAC policy file,
 * the JWKS file and the device keys (each refused part keeps the running one). SIGUSR1: reopen
 * the access log.
 * Ready lines on stderr: "gateway: listening on http[s]://H:P" per listener.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "../../src/gateway/maskstep.h"
#include "../../src/gateway/ztgw.h"
#include "cli.h"
#include "dengbao/audit.h"
#include "dengbao/gateway.h"
#include "dengbao/mask.h"

static const char gateway_usage[] =
    "usage: dengbao gateway --config FILE [--check]\n"
    "       dengbao gateway --listen H:P --upstream H:P[,H:P...] [--workers N]\n"
    "                       [--tls-cert F --tls-key F] [--admin H:P] [--access-log FILE|-]\n"
    "       dengbao gateway --demo [--dir DIR]\n";

#define DEMO_LISTEN   "127.0.0.1:8080"
#define DEMO_TLS      "127.0.0.1:8443"
#define DEMO_ADMIN    "127.0.0.1:9901"
#define DEMO_UPSTREAM 8081

static const char demo_yaml[] =
    "# dengbao gateway: the demo configuration written by `make run` (dengbao gateway --demo).\n"
    "# Edit it and send SIGHUP to reload; the reference is docs/gateway.md.\n"
    "workers: 2\n"
    "listeners:\n"
    "  - listen: \"" DEMO_LISTEN "\"\n"
    "  - listen: \"" DEMO_TLS "\"\n"
    "    tls: {cert: tls-cert.pem, key: tls-key.pem}\n"
    "admin: \"" DEMO_ADMIN "\"\n"
    "limits: {header_max: 16k, headers_num_max: 100, body_max: 16m}\n"
    "timeouts: {header: 10s, body: 60s, idle: 60s, drain: 10s}\n"
    "trusted_proxies: []\n"
    "access_log: access.log\n"
    "clusters:\n"
    "  - name: demo\n"
    "    endpoints: [\"127.0.0.1:8081\"]\n"
    "    balance: round_robin\n"
    "    keepalive: 64\n"
    "    timeouts: {connect: 2s, read: 30s, idle: 60s}\n"
    "    retries: 1\n"
    "    health: {path: /healthz, interval: 2s, timeout: 1s, healthy: 2, unhealthy: 3}\n"
    "routes:\n"
    "  - name: patients\n"
    "    prefix: /api/\n"
    "    cluster: demo\n"
    "    strip_prefix: true\n"
    "  - name: default\n"
    "    prefix: /\n"
    "    cluster: demo\n";

/* demo_cert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 / localhost. */
static int
demo_cert(const char *cert_path, const char *key_path, dbao_err *err)
{
    int rc = DBAO_ECRYPTO;
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *bio = NULL;
    if (pk == NULL || x == NULL) {
        goto out;
    }
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long) time(NULL));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *) "dengbao demo", -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *) "localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext =
        X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
    if (ext == NULL) {
        goto out;
    }
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (X509_sign(x, pk, EVP_sha256()) == 0) {
        goto out;
    }
    /* the certificate first, the key last: demo_prepare takes an existing key file as "both
     * are there"; dbao_file_write makes each file atomically (the key 0600 from the start) */
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509(bio, x) != 1) {
        goto out;
    }
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    rc = dbao_file_write(cert_path, pem, (size_t) pem_len, 0644, err);
    if (rc != 0) {
        goto out;
    }
    rc = DBAO_ECRYPTO;
    BIO_free(bio);
    bio = BIO_new(BIO_s_secmem());
    if (bio == NULL || PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1) {
        goto out;
    }
    pem_len = BIO_get_mem_data(bio, &pem);
    rc = dbao_file_write(key_path, pem, (size_t) pem_len, 0600, err);
    if (rc != 0) {
        goto out;
    }
    rc = 0;
out:
    if (rc == DBAO_ECRYPTO) {
        dbao_err_set(err, rc, "cannot make the demo TLS certificate");
    }
    BIO_free(bio); /* a secure-heap BIO: cleansed on free */
    EVP_PKEY_free(pk);
    X509_free(x);
    return rc;
}

static int
mkdir_p(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0750) != 0 && errno != EEXIST) {
                return -errno;
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

/* demo_prepare writes DIR/gateway.yaml and the TLS files on first run; returns the yaml path */
static int
demo_prepare(const char *dir, char *yaml_path, size_t cap, dbao_err *err)
{
    int rc = mkdir_p(dir);
    if (rc != 0) {
        dbao_err_set(err, rc, "cannot create %s: %s", dir, strerror(-rc));
        return rc;
    }
    char cert[4096], key[4096];
    snprintf(cert, sizeof cert, "%s/tls-cert.pem", dir);
    snprintf(key, sizeof key, "%s/tls-key.pem", dir);
    snprintf(yaml_path, cap, "%s/gateway.yaml", dir);
    if (access(key, F_OK) != 0) {
        unlink(cert);
        rc = demo_cert(cert, key, err);
        if (rc != 0) {
            return rc;
        }
        fprintf(stderr, "gateway: generated a self-signed TLS certificate in %s\n", dir);
    }
    if (access(yaml_path, F_OK) != 0) {
        rc = dbao_file_write(yaml_path, demo_yaml, sizeof demo_yaml - 1, 0640, err);
        if (rc != 0) {
            return rc;
        }
        fprintf(stderr, "gateway: wrote %s\n", yaml_path);
    }
    return 0;
}

static int
split_list(char *s, const char **out, size_t max, size_t *n)
{
    *n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == max) {
            return DBAO_ERANGE;
        }
        out[(*n)++] = tok;
    }
    return *n ? 0 : DBAO_EINVAL;
}

/* ---- zero trust: the audit log and the runtime ---- */

typedef struct zt_boot {
    gm_sm2_key *key;
    cli_audit_trust trust;
    char *holder;
    audit_note_key nk; /* borrowed by the log for its life */
    audit_log *log;
    gw_zt *zt;
    mask_policy *mask_pol;
    gw_step mask_step; /* chain position 1 (after the zero-trust step) */
    bool has_mask;
} zt_boot;

/* mask_facts hands the masking step's per-request result to the audit (zero-trust) step */
static bool
mask_facts(gw_ctx *ctx, gw_zt_mask_facts *out, void *arg)
{
    (void) arg;
    mask_stats st;
    bool over = false;
    out->error = gw_maskstep_error(ctx, 1);
    if (!gw_maskstep_result(ctx, 1, &st, &over)) {
        out->masked = out->error != NULL;
        return out->masked;
    }
    out->masked = true;
    out->fields = st.fields;
    out->findings = st.findings;
    out->types = st.types;
    out->over_limit = over;
    return true;
}

static void
on_audit_alarm(void *arg, int code, const char *what)
{
    (void) arg;
    fprintf(stderr,
            "gateway: the audit log failed (%s): %s; requests on security routes are refused "
            "with 503\n",
            dbao_strerror(code), what);
}

/* zt_boot_open opens the audit log of security.audit.dir and builds the runtime; on failure
 * it prints the error and returns the exit status (the caller runs zt_boot_close). */
static int
zt_boot_open(zt_boot *b, const gw_config *cfg, dbao_err *err)
{
    const gw_security *sec = cfg->security;
    if (sec->audit_dir == NULL) {
        return cli_error(DBAO_EINVAL, "security.audit.dir is required");
    }
    audit_log_config acfg;
    int rc = cli_audit_keys_load(sec->audit_dir, true, NULL, &b->key, &acfg, &b->holder, err);
    if (rc == 0) {
        rc = cli_audit_trust_load(&b->trust, sec->audit_dir, &acfg, err);
    }
    if (rc == 0) {
        b->nk.name = acfg.origin;
        b->nk.key = b->key;
        audit_log_open_opts oo = {.signers = &b->nk,
                                  .num_signers = 1,
                                  .trusted = b->trust.nk,
                                  .num_trusted = b->trust.n,
                                  .alarm = on_audit_alarm};
        rc = audit_log_open(&b->log, sec->audit_dir, &oo, err);
    }
    if (rc != 0) {
        fprintf(stderr, "dengbao: gateway: cannot open the audit log %s: %s\n", sec->audit_dir,
                err->msg[0] ? err->msg : dbao_strerror(rc));
        return CLI_INTERNAL;
    }
    gw_zt_opts zo = {.log = b->log};
    if (sec->mask_policy != NULL) {
        rc = mask_policy_load(&b->mask_pol, sec->mask_policy, err);
        if (rc == 0) {
            rc = gw_maskstep_new(&b->mask_step, b->mask_pol, 1, err);
        }
        if (rc != 0) {
            return cli_report(rc, err);
        }
        b->has_mask = true;
        zo.mask_facts = mask_facts;
    }
    rc = gw_zt_new(&b->zt, cfg, &zo, err);
    if (rc != 0) {
        return cli_report(rc, err);
    }
    return 0;
}

/* zt_boot_close frees the runtime, then closes the log (its last records are written). */
static int
zt_boot_close(zt_boot *b)
{
    int rc = CLI_OK;
    gw_zt_free(b->zt);
    b->zt = NULL;
    if (b->has_mask) {
        gw_maskstep_free(&b->mask_step);
        b->has_mask = false;
    }
    mask_policy_free(b->mask_pol);
    b->mask_pol = NULL;
    if (b->log != NULL && audit_log_close(b->log) != 0) {
        fprintf(stderr, "dengbao: gateway: the audit log did not close cleanly\n");
        rc = CLI_INTERNAL;
    }
    b->log = NULL;
    cli_audit_trust_free(&b->trust);
    gm_sm2_key_free(b->key);
    b->key = NULL;
    dbao_free(b->holder);
    b->holder = NULL;
    return rc;
}

int
cmd_gateway(int argc, char **argv)
{
    const char *config = NULL, *listen = NULL, *upstream = NULL, *tls_cert = NULL, *tls_key = NULL,
               *admin = NULL, *alog = NULL, *dir = "var/gateway";
    unsigned workers = 0;
    bool check = false, demo = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name, var)                                                                             \
    if (strcmp(a, name) == 0) {                                                                    \
        if (v == NULL)                                                                             \
            return cli_usage_error(gateway_usage, "%s needs a value", name);                       \
        var = v;                                                                                   \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        OPT("--config", config);
        OPT("--listen", listen);
        OPT("--upstream", upstream);
        OPT("--tls-cert", tls_cert);
        OPT("--tls-key", tls_key);
        OPT("--admin", admin);
        OPT("--access-log", alog);
        OPT("--dir", dir);
#undef OPT
        if (strcmp(a, "--workers") == 0 && v) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end || n == 0 || n > 64) {
                return cli_usage_error(gateway_usage, "--workers must be 1..64");
            }
            workers = (unsigned) n;
            i++;
            continue;
        }
        if (strcmp(a, "--check") == 0) {
            check = true;
            continue;
        }
        if (strcmp(a, "--demo") == 0) {
            demo = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(gateway_usage, stdout);
            return CLI_OK;
        }
        return cli_usage_error(gateway_usage, "unknown option '%s'", a);
    }
    int modes = (config != NULL) + (listen != NULL || upstream != NULL) + demo;
    if (modes != 1) {
        return cli_usage_error(gateway_usage, "give exactly one of --config, --listen/--upstream "
                                              "or --demo");
    }
    dbao_err err = {0};
    gw_config *cfg = NULL;
    char yaml_path[4200];
    net_server *demo_srv = NULL;
    int rc;
    if (demo) {
        rc = demo_prepare(dir, yaml_path, sizeof yaml_path, &err);
        if (rc != 0) {
            return cli_report(rc, &err);
        }
        config = yaml_path;
    }
    if (config) {
        rc = gw_config_load(&cfg, config, &err);
        if (rc != 0) {
            return cli_report(rc, &err);
        }
        if (check) {
            rc = gw_zt_check(cfg, &err);
            gw_config_free(cfg);
            if (rc != 0) {
                return cli_report(rc, &err);
            }
            printf("%s: ok\n", config);
            return CLI_OK;
        }
    } else {
        if (listen == NULL || upstream == NULL) {
            return cli_usage_error(gateway_usage, "the quick mode needs --listen and --upstream");
        }
        if ((tls_cert == NULL) != (tls_key == NULL)) {
            return cli_usage_error(gateway_usage, "--tls-cert and --tls-key go together");
        }
        char *ups = strdup(upstream);
        const char *list[64];
        size_t n;
        if (ups == NULL || split_list(ups, list, 64, &n) != 0) {
            free(ups);
            return cli_usage_error(gateway_usage, "bad --upstream list");
        }
        rc = gw_config_quick(&cfg, listen, list, n, workers ? workers : 1, tls_cert, tls_key, &err);
        free(ups);
        if (rc != 0) {
            return cli_report(rc, &err);
        }
        if (admin && gw_parse_addr(admin, &cfg->admin) != 0) {
            gw_config_free(cfg);
            return cli_usage_error(gateway_usage, "bad --admin address '%s'", admin);
        }
        if (alog) {
            cfg->access_log = strdup(alog);
            if (cfg->access_log == NULL) {
                gw_config_free(cfg);
                return cli_report(DBAO_ENOMEM, NULL);
            }
        }
    }
    if (workers && config) {
        cfg->workers = workers;
    }

    /* Signals: blocked here, before any thread exists, so every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    if (demo) {
        rc = gw_demo_start(&demo_srv, "127.0.0.1", DEMO_UPSTREAM, &err);
        if (rc != 0) {
            gw_config_free(cfg);
            return cli_report(rc, &err);
        }
        fprintf(stderr,
                "gateway: demo upstream (fictitious patient records) on "
                "http://127.0.0.1:%d\n",
                DEMO_UPSTREAM);
    }
    gw_server *srv;
    gw_server_opts so = {.config_path = config, .log_ready = true};
    zt_boot zb = {0};
    gw_step steps[2];
    if (cfg->security != NULL) {
        rc = zt_boot_open(&zb, cfg, &err);
        if (rc != 0) {
            gw_config_free(cfg);
            net_server_free(demo_srv);
            zt_boot_close(&zb);
            return rc;
        }
        gw_zt_step(zb.zt, &steps[0], 0);
        so.steps = steps;
        so.num_steps = 1;
        if (zb.has_mask) {
            steps[1] = zb.mask_step;
            so.num_steps = 2;
        }
        so.on_breaker = gw_zt_on_breaker;
        so.breaker_arg = zb.zt;
        so.metrics_extra = gw_zt_metrics;
        so.metrics_arg = zb.zt;
    }
    rc = gw_server_new(&srv, cfg, &so, &err);
    if (rc == 0) {
        rc = gw_server_start(srv, &err);
        if (rc != 0) {
            gw_server_free(srv);
        }
    }
    if (rc != 0) {
        net_server_free(demo_srv);
        zt_boot_close(&zb);
        return cli_report(rc, &err);
    }
    if (demo) {
        fprintf(stderr,
                "gateway: try  curl -s http://%s/api/patients/1\n"
                "              curl -sk https://%s/api/patients | head -c 300\n"
                "              curl -s http://%s/metrics | head\n"
                "gateway: configuration %s (edit, then kill -HUP %d); Ctrl-C stops\n",
                DEMO_LISTEN, DEMO_TLS, DEMO_ADMIN, config, (int) getpid());
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0) {
            continue;
        }
        if (sig == SIGHUP) {
            dbao_err e = {0};
            int r = gw_server_reload_file(srv, &e);
            if (r == 0) {
                fprintf(stderr, "gateway: reloaded %s\n", config ? config : "");
            } else {
                fprintf(stderr, "gateway: reload refused, the running configuration stays: %s\n",
                        e.msg[0] ? e.msg : dbao_strerror(r));
            }
            if (zb.zt != NULL) {
                dbao_err ze = {0};
                if (gw_zt_reload(zb.zt, &ze) == 0) {
                    fprintf(stderr, "gateway: reloaded the security files\n");
                }
            }
            fflush(stderr);
            continue;
        }
        if (sig == SIGUSR1) {
            dbao_err e = {0};
            if (gw_server_reopen_logs(srv, &e) != 0) {
                fprintf(stderr, "gateway: cannot reopen the access log: %s\n", e.msg);
            }
            continue;
        }
        break;
    }
    fprintf(stderr, "gateway: stopping (in-flight requests finish)\n");
    gw_server_stop(srv);
    gw_server_wait(srv);
    gw_server_free(srv);
    net_server_free(demo_srv);
    rc = zt_boot_close(&zb);
    fprintf(stderr, "gateway: stopped\n");
    return rc;
}
