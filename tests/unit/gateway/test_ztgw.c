/* test_ztgw.c: the zero-trust step in an in-process gateway (src/gateway/ztgw.c) in front of
 * an upstream that echoes the request headers it received. Real sockets on 127.0.0.1, a real
 * audit log in a temporary folder. Covers the 401/403/200 matrix, header stripping, the signed
 * X-Auth-Identity (verified as an upstream would), RBAC allow and deny, the route rate limit
 * (429 + Retry-After), device binding in token and request mode (a replayed request refused),
 * one durable gateway.access record per decision (and a gateway.alert for device failures),
 * and 503 once the audit log fails (fail closed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/audit.h"
#include "dengbao/gateway.h"
#include "dengbao/zt.h"
#include "ztgw.h"

/* src/audit/internal.h: fault injection (tests) */
typedef struct audit__faults {
    uint64_t enospc_after;
    uint64_t eio_write_after;
    uint64_t eio_sync;
    bool powercut;
} audit__faults;
void audit__fault_config(const audit__faults *f);

static char dir[128];
static gm_sm2_key *audit_key, *dev_key, *dev_other;
static audit_note_key nk;
static audit_log *alog;
static net_server *up;
static gw_server *srv;
static gw_zt *zt;
static uint16_t port, dead_port;
static const char hs_secret[] = "0123456789abcdef-hs256-secret";
static const char id_secret[] = "identity-key-0123456789";

/* ---- the echo upstream ---- */

static pthread_mutex_t jwks_mu = PTHREAD_MUTEX_INITIALIZER;
static char jwks_doc[4096] = "{\"keys\":[]}";
static int jwks_hits;

static void
echo_handler(net_request *req, void *arg)
{
    (void) arg;
    if (strcmp(net_request_path(req), "/jwks.json") == 0) {
        char doc[sizeof jwks_doc];
        pthread_mutex_lock(&jwks_mu);
        memcpy(doc, jwks_doc, sizeof doc);
        jwks_hits++;
        pthread_mutex_unlock(&jwks_mu);
        net_request_respond(req, 200, "application/json", doc, strlen(doc));
        return;
    }
    dbao_buf b = {0};
    size_t n = net_request_num_headers(req);
    for (size_t i = 0; i < n; i++) {
        const char *hn, *hv;
        net_request_header_at(req, i, &hn, &hv);
        dbao_buf_printf(&b, "%s: %s\n", hn, hv);
    }
    size_t bl = 0;
    net_request_body(req, &bl);
    dbao_buf_printf(&b, "body-length: %zu\n", bl);
    net_request_respond(req, 200, "text/plain", b.data, b.len);
    dbao_buf_free(&b);
}

/* ---- HTTP client ---- */

typedef struct resp {
    int status;
    char head[8192];
    char body[16384];
} resp;

static void
request(const char *raw, resp *r)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *) &a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t n = strlen(raw);
    assert_int_equal(write(fd, raw, n), (ssize_t) n);
    static char buf[65536];
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, buf + len, sizeof buf - 1 - len);
        if (k <= 0) {
            break;
        }
        len += (size_t) k;
    }
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    size_t hl = (size_t) (sep - buf);
    assert_true(hl < sizeof r->head);
    memcpy(r->head, buf, hl);
    r->head[hl] = 0;
    r->status = atoi(buf + 9);
    snprintf(r->body, sizeof r->body, "%s", sep + 4);
}

static void
get(const char *path, const char *extra, resp *r)
{
    char raw[16384];
    snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n", path,
             extra ? extra : "");
    request(raw, r);
}

/* ---- tokens ---- */

static char *
mint(const char *sub, const char *roles_json, const gm_sm2_key *bind, int64_t exp_off)
{
    char payload[1024], cnf[200] = "";
    if (bind) {
        uint8_t th[32];
        char b64[64];
        zt_sm2_thumbprint(th, bind);
        zt_b64url_encode(b64, th, 32);
        snprintf(cnf, sizeof cnf, ",\"cnf\":{\"sm3\":\"%s\"}", b64);
    }
    int64_t now = (int64_t) time(NULL);
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"iss\":\"https://idp.test\",\"aud\":\"api\",\"iat\":%lld,"
             "\"exp\":%lld,\"roles\":%s%s}",
             sub, (long long) now, (long long) (now + exp_off), roles_json, cnf);
    zt_jwt_signkey k = {.alg = ZT_ALG_HS256,
                        .kid = "k1",
                        .secret = (const uint8_t *) hs_secret,
                        .secret_len = strlen(hs_secret)};
    char *tok = NULL;
    size_t tl = 0;
    dbao_err err = {0};
    if (zt_jwt_sign(&tok, &tl, &k, payload, strlen(payload), &err) != 0) {
        fail_msg("sign: %s", err.msg);
    }
    return tok;
}

/* ---- audit helpers ---- */

static void
last_record(audit_record *r, uint64_t back)
{
    static uint8_t buf[AUDIT_RECORD_MAX];
    size_t l = 0;
    uint64_t size = audit_log_size(alog);
    assert_true(size > back);
    assert_int_equal(audit_log_get(alog, size - 1 - back, buf, sizeof buf, &l, NULL), 0);
    audit_record_init(r);
    assert_int_equal(audit_record_decode(r, buf, l, NULL), 0);
}

static void
expect_access(const char *action, int code, const char *sub, const char *reason_part)
{
    audit_record r;
    last_record(&r, 0);
    if (strcmp(r.event_type, "gateway.alert") == 0) { /* written right after its access record */
        audit_record_cleanup(&r);
        last_record(&r, 1);
    }
    assert_string_equal(r.event_type, "gateway.access");
    assert_string_equal(r.action, action);
    assert_int_equal(r.code, code);
    assert_string_equal(r.subject.id, sub);
    assert_string_equal(r.source, "gateway");
    if (reason_part) {
        if (r.details == NULL || strstr(r.details, reason_part) == NULL) {
            fail_msg("details %s lack '%s'", r.details ? r.details : "{}", reason_part);
        }
    }
    /* never a token */
    assert_null(r.details ? strstr(r.details, "eyJ") : NULL);
    audit_record_cleanup(&r);
}

/* ---- setup ---- */

static void
write_file(const char *name, const char *text, unsigned mode)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(dbao_file_write(p, text, strlen(text), mode, NULL), 0);
}

static const char policy[] = "version: 1\n"
                             "roles:\n"
                             "  doctor:\n"
                             "    - {id: read-api, methods: [GET, POST], path: \"/api/**\"}\n"
                             "    - {id: dev, methods: [GET, POST], path: \"/dev/**\"}\n"
                             "    - {id: req, methods: [GET, POST], path: \"/req/**\"}\n"
                             "    - {id: async, methods: [GET], path: \"/async/**\"}\n"
                             "  clerk:\n"
                             "    - {id: clerk-api, methods: [GET], path: /api/list}\n"
                             "  admin:\n"
                             "    - {id: admin, methods: \"*\", path: \"/admin/**\"}\n";

/* make_config: the test configuration; jwks: the second gateway of test_jwks_url (keys from
 * the upstream's /jwks.json, no RBAC) */
static void
make_config(gw_config **out, bool jwks)
{
    dbao_err err = {0};
    char yaml[4096];
    if (jwks) {
        snprintf(yaml, sizeof yaml,
                 "listeners:\n"
                 "  - listen: \"127.0.0.1:0\"\n"
                 "security:\n"
                 "  identity:\n"
                 "    jwt:\n"
                 "      jwks_url: http://127.0.0.1:%u/jwks.json\n"
                 "      jwks_refresh: 1h\n"
                 "      issuer: https://idp.test\n"
                 "  identity_header:\n"
                 "    key_file: %s/identity.key\n"
                 "  audit:\n"
                 "    dir: %s/audit\n"
                 "clusters:\n"
                 "  - name: up\n"
                 "    endpoints: [\"127.0.0.1:%u\"]\n"
                 "routes:\n"
                 "  - {name: api, prefix: /api/, cluster: up, rbac: false}\n",
                 (unsigned) net_server_port(up), dir, dir, (unsigned) net_server_port(up));
        if (gw_config_parse(out, yaml, strlen(yaml), "ztgw2.yaml", &err) != 0) {
            fail_msg("config: %s", err.msg);
        }
        return;
    }
    snprintf(yaml, sizeof yaml,
             "workers: 2\n"
             "listeners:\n"
             "  - listen: \"127.0.0.1:0\"\n"
             "security:\n"
             "  identity:\n"
             "    jwt:\n"
             "      algorithms: [HS256, SM2]\n"
             "      hs256_secret_file: %s/jwt.secret\n"
             "      hs256_kid: k1\n"
             "      issuer: https://idp.test\n"
             "      audience: [api]\n"
             "    devices:\n"
             "      keys_dir: %s/devices\n"
             "  identity_header:\n"
             "    key_file: %s/identity.key\n"
             "  strip_headers: [X-User]\n"
             "  rbac:\n"
             "    file: %s/policy.yaml\n"
             "  audit:\n"
             "    dir: %s/audit\n"
             "clusters:\n"
             "  - name: up\n"
             "    endpoints: [\"127.0.0.1:%u\"]\n"
             "  - name: dead\n"
             "    endpoints: [\"127.0.0.1:%u\"]\n"
             "    retries: 0\n"
             "    breaker: {window: 10s, buckets: 10, min_requests: 2, error_ratio: 50%%}\n"
             "routes:\n"
             "  - {name: open, prefix: /open/, cluster: up, auth: none, rbac: false}\n"
             "  - name: fb\n"
             "    prefix: /fb/\n"
             "    cluster: dead\n"
             "    auth: none\n"
             "    rbac: false\n"
             "    fallback: {mode: static, content_type: application/json, body: "
             "'{\"degraded\":true}'}\n"
             "  - {name: api, prefix: /api/, cluster: up}\n"
             "  - {name: admin, prefix: /admin/, cluster: up}\n"
             "  - {name: dev, prefix: /dev/, cluster: up, device: token}\n"
             "  - {name: req, prefix: /req/, cluster: up, device: request}\n"
             "  - {name: async, prefix: /async/, cluster: up, audit: async}\n"
             "  - name: lim\n"
             "    prefix: /lim/\n"
             "    cluster: up\n"
             "    auth: none\n"
             "    rbac: false\n"
             "    rate_limit: {rate: 2, period: 10s, burst: 2}\n",
             dir, dir, dir, dir, dir, (unsigned) net_server_port(up), (unsigned) dead_port);
    if (gw_config_parse(out, yaml, strlen(yaml), "ztgw.yaml", &err) != 0) {
        fail_msg("config: %s", err.msg);
    }
}

static int
setup(void **state)
{
    (void) state;
    snprintf(dir, sizeof dir, "/tmp/dbao-test-ztgw-%d-XXXXXX", (int) getpid());
    assert_non_null(mkdtemp(dir));
    assert_int_equal(gm_sm2_key_generate(&audit_key, NULL), 0);
    assert_int_equal(gm_sm2_key_generate(&dev_key, NULL), 0);
    assert_int_equal(gm_sm2_key_generate(&dev_other, NULL), 0);
    char p[256];
    snprintf(p, sizeof p, "%s/audit", dir);
    audit_log_config ac = {.origin = "gateway.test/log"};
    dbao_err err = {0};
    if (audit_log_create(p, &ac, &err) != 0) {
        fail_msg("audit create: %s", err.msg);
    }
    nk.name = "gateway.test/log";
    nk.key = audit_key;
    audit_log_open_opts oo = {.signers = &nk, .num_signers = 1};
    if (audit_log_open(&alog, p, &oo, &err) != 0) {
        fail_msg("audit open: %s", err.msg);
    }
    write_file("jwt.secret", hs_secret, 0600);
    write_file("identity.key", id_secret, 0600);
    write_file("policy.yaml", policy, 0644);
    snprintf(p, sizeof p, "%s/devices", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    char *pem = NULL;
    size_t pem_len = 0;
    assert_int_equal(gm_sm2_key_to_pem(dev_key, &pem, &pem_len, false, NULL), 0);
    write_file("devices/phone.pem", pem, 0644);
    dbao_free(pem);

    net_server_opts uo = {.host = "127.0.0.1", .handler = echo_handler};
    assert_int_equal(net_server_new(&up, &uo, NULL), 0);
    assert_int_equal(net_server_start(up, NULL), 0);

    int dfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in da = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &da.sin_addr);
    socklen_t dl = sizeof da;
    assert_int_equal(bind(dfd, (struct sockaddr *) &da, sizeof da), 0);
    assert_int_equal(getsockname(dfd, (struct sockaddr *) &da, &dl), 0);
    dead_port = ntohs(da.sin_port);
    close(dfd); /* nothing listens there: connections are refused */
    gw_config *cfg = NULL;
    make_config(&cfg, false);
    gw_zt_opts zo = {.log = alog, .no_threads = true};
    if (gw_zt_new(&zt, cfg, &zo, &err) != 0) {
        fail_msg("zt: %s", err.msg);
    }
    gw_step st;
    gw_zt_step(zt, &st, 0);
    gw_server_opts so = {
        .steps = &st, .num_steps = 1, .on_breaker = gw_zt_on_breaker, .breaker_arg = zt};
    if (gw_server_new(&srv, cfg, &so, &err) != 0 || gw_server_start(srv, &err) != 0) {
        fail_msg("server: %s", err.msg);
    }
    port = gw_server_listener_port(srv, 0);
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    gw_server_free(srv);
    gw_zt_free(zt);
    net_server_free(up);
    audit_log_close(alog);
    gm_sm2_key_free(audit_key);
    gm_sm2_key_free(dev_key);
    gm_sm2_key_free(dev_other);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* ---- tests ---- */

static void
test_identity_header_format(void **state)
{
    (void) state;
    gm_hmac_sm3_ctx k;
    gm_hmac_sm3_init(&k, id_secret, strlen(id_secret));
    dbao_buf b = {0};
    const char *roles[] = {"doctor", "a,b;c=d"};
    int64_t now = (int64_t) time(NULL);
    assert_int_equal(gw__zt_identity_make(&b, &k, "alice@x;sig=y", roles, 2, NULL, now,
                                          "0af7651916cd43dd8448eb211c80319c"),
                     0);
    assert_non_null(strstr(b.data, "sub=alice%40x%3Bsig%3Dy;roles=doctor,a%2Cb%3Bc%3Dd;device=-"));
    gw_zt_identity id;
    assert_int_equal(gw__zt_identity_verify(&id, (const uint8_t *) id_secret, strlen(id_secret),
                                            b.data, b.len, now, 60, NULL),
                     0);
    assert_string_equal(id.sub, "alice@x;sig=y");
    assert_int_equal(id.num_roles, 2);
    assert_string_equal(id.roles[1], "a,b;c=d");
    assert_string_equal(id.device, "");
    assert_string_equal(id.trace, "0af7651916cd43dd8448eb211c80319c");
    /* wrong key, tampered, too old */
    assert_int_equal(gw__zt_identity_verify(NULL, (const uint8_t *) "another-key-0123456", 19,
                                            b.data, b.len, now, 60, NULL),
                     DBAO_EVERIFY);
    b.data[10] ^= 1;
    assert_int_equal(gw__zt_identity_verify(NULL, (const uint8_t *) id_secret, strlen(id_secret),
                                            b.data, b.len, now, 60, NULL),
                     DBAO_EVERIFY);
    b.data[10] ^= 1;
    assert_int_equal(gw__zt_identity_verify(NULL, (const uint8_t *) id_secret, strlen(id_secret),
                                            b.data, b.len, now + 61, 60, NULL),
                     DBAO_EVERIFY);
    /* no roles, a device */
    assert_int_equal(gw__zt_identity_make(&b, &k, "bob", NULL, 0, "dev-Th_umb", now, "ab"), 0);
    assert_int_equal(gw__zt_identity_verify(&id, (const uint8_t *) id_secret, strlen(id_secret),
                                            b.data, b.len, now, 0, NULL),
                     0);
    assert_int_equal(id.num_roles, 0);
    assert_string_equal(id.device, "dev-Th_umb");
    dbao_buf_free(&b);
}

static void
test_matrix(void **state)
{
    (void) state;
    resp r;
    uint64_t n0 = audit_log_size(alog);

    /* auth none: forwarded, client identity headers stripped, still audited */
    get("/open/x", "X-Auth-Identity: v1;sub=root\r\nX-Auth-Roles: admin\r\nX-User: root\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_null(strcasestr(r.body, "x-auth-"));
    assert_null(strcasestr(r.body, "x-user"));
    expect_access("allow", 0, "-", NULL);

    /* no token */
    get("/api/list", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.head, "WWW-Authenticate: Bearer"));
    expect_access("deny", 401, "-", "token missing");

    /* a tampered token */
    char *tok = mint("alice", "[\"doctor\"]", NULL, 600);
    char hdr[4096];
    size_t tl = strlen(tok);
    tok[tl - 3] = tok[tl - 3] == 'A' ? 'B' : 'A';
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.head, "invalid_token"));
    expect_access("deny", 401, "-", "bad token");
    free(tok);

    /* expired */
    tok = mint("alice", "[\"doctor\"]", NULL, -600);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 401);
    expect_access("deny", 401, "-", "expired");
    free(tok);

    /* two Authorization headers */
    tok = mint("alice", "[\"doctor\"]", NULL, 600);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nAuthorization: Bearer %s\r\n", tok, tok);
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 401);

    /* good: the upstream gets a verifiable identity, no spoofed one */
    snprintf(hdr, sizeof hdr,
             "authorization: bearer %s\r\nX-Auth-Identity: v1;sub=mallory\r\nX-User: root\r\n",
             tok);
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 200);
    assert_null(strcasestr(r.body, "x-user"));
    assert_null(strstr(r.body, "mallory"));
    const char *ih = strcasestr(r.body, "X-Auth-Identity: ");
    assert_non_null(ih);
    ih += strlen("X-Auth-Identity: ");
    size_t il = strcspn(ih, "\n");
    assert_null(strcasestr(ih + il, "X-Auth-Identity"));
    gw_zt_identity id;
    dbao_err err = {0};
    if (gw__zt_identity_verify(&id, (const uint8_t *) id_secret, strlen(id_secret), ih, il, 0, 60,
                               &err) != 0) {
        fail_msg("identity: %s", err.msg);
    }
    assert_string_equal(id.sub, "alice");
    assert_int_equal(id.num_roles, 1);
    assert_string_equal(id.roles[0], "doctor");
    expect_access("allow", 0, "alice", "read-api");

    /* RBAC: doctor on /admin is denied by default; clerk may only GET /api/list */
    get("/admin/users", hdr, &r);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.body, "forbidden"));
    expect_access("deny", 403, "alice", "rbac: default-deny");
    free(tok);
    tok = mint("carol", "[\"clerk\"]", NULL, 600);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 200);
    get("/api/secret", hdr, &r);
    assert_int_equal(r.status, 403);
    /* path tricks: normalised before RBAC */
    get("/api/x/../list", hdr, &r);
    assert_int_equal(r.status, 200);
    get("/api/%6c%69st", hdr, &r);
    assert_int_equal(r.status, 200);
    get("/api/LIST", hdr, &r);
    assert_int_equal(r.status, 403);
    free(tok);

    /* async audit route: allowed, record queued (written soon) */
    tok = mint("alice", "[\"doctor\"]", NULL, 600);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    get("/async/x", hdr, &r);
    assert_int_equal(r.status, 200);
    free(tok);
    for (int i = 0; i < 200 && audit_log_size(alog) < n0 + 13; i++) {
        usleep(10000);
    }
    /* one record per decision */
    assert_int_equal(audit_log_size(alog), n0 + 13);
}

static void
test_device_token(void **state)
{
    (void) state;
    resp r;
    char hdr[4096], sig[ZT_DEVSIG_B64_LEN + 1], other[ZT_DEVSIG_B64_LEN + 1];
    /* a token without cnf on a device route */
    char *tok = mint("dave", "[\"doctor\"]", NULL, 600);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    get("/dev/x", hdr, &r);
    assert_int_equal(r.status, 401);
    free(tok);
    tok = mint("dave", "[\"doctor\"]", dev_key, 600);
    /* missing signature: 403 and an alert */
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    uint64_t n0 = audit_log_size(alog);
    get("/dev/x", hdr, &r);
    assert_int_equal(r.status, 403);
    assert_int_equal(audit_log_size(alog), n0 + 2);
    audit_record a;
    last_record(&a, 0);
    assert_string_equal(a.event_type, "gateway.alert");
    assert_int_equal(a.code, 403);
    audit_record_cleanup(&a);
    last_record(&a, 1);
    assert_string_equal(a.event_type, "gateway.access");
    assert_non_null(strstr(a.details, "device signature missing"));
    assert_true(a.subject.device[0] != 0);
    audit_record_cleanup(&a);
    /* another device's signature */
    assert_int_equal(zt_devsig_sign_token(other, dev_other, tok, strlen(tok)), 0);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nX-SM2-Signature: %s\r\n", tok, other);
    get("/dev/x", hdr, &r);
    assert_int_equal(r.status, 403);
    /* the device's own signature, twice (the second from the cache) */
    assert_int_equal(zt_devsig_sign_token(sig, dev_key, tok, strlen(tok)), 0);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nX-SM2-Signature: %s\r\n", tok, sig);
    get("/dev/x", hdr, &r);
    assert_int_equal(r.status, 200);
    get("/dev/y", hdr, &r);
    assert_int_equal(r.status, 200);
    expect_access("allow", 0, "dave", NULL);
    free(tok);
}

static void
test_device_request(void **state)
{
    (void) state;
    resp r;
    char hdr[4096];
    char *tok = mint("erin", "[\"doctor\"]", dev_key, 600);
    zt_devsig_headers h;
    assert_int_equal(zt_devsig_sign_request(&h, dev_key, "GET", "/req/items", "a=1",
                                            (const uint8_t *) "", 0, 0, NULL),
                     0);
    snprintf(hdr, sizeof hdr,
             "Authorization: Bearer %s\r\nX-SM2-Signature: %s\r\nX-SM2-Timestamp: %s\r\n"
             "X-SM2-Nonce: %s\r\nX-Content-SM3: %s\r\n",
             tok, h.sig, h.timestamp, h.nonce, h.content_sm3);
    get("/req/items?a=1", hdr, &r);
    assert_int_equal(r.status, 200);
    /* replayed */
    get("/req/items?a=1", hdr, &r);
    assert_int_equal(r.status, 403);
    expect_access("deny", 403, "erin", "device signature");
    /* another query with the same signature */
    assert_int_equal(zt_devsig_sign_request(&h, dev_key, "GET", "/req/items", "a=1",
                                            (const uint8_t *) "", 0, 0, NULL),
                     0);
    snprintf(hdr, sizeof hdr,
             "Authorization: Bearer %s\r\nX-SM2-Signature: %s\r\nX-SM2-Timestamp: %s\r\n"
             "X-SM2-Nonce: %s\r\nX-Content-SM3: %s\r\n",
             tok, h.sig, h.timestamp, h.nonce, h.content_sm3);
    get("/req/items?a=2", hdr, &r);
    assert_int_equal(r.status, 403);
    /* a body: hashed before forwarding */
    const char *body = "{\"x\":1}";
    assert_int_equal(zt_devsig_sign_request(&h, dev_key, "POST", "/req/items", "",
                                            (const uint8_t *) body, strlen(body), 0, NULL),
                     0);
    char raw[8192];
    snprintf(raw, sizeof raw,
             "POST /req/items HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Authorization: Bearer %s\r\nX-SM2-Signature: %s\r\nX-SM2-Timestamp: %s\r\n"
             "X-SM2-Nonce: %s\r\nX-Content-SM3: %s\r\nContent-Length: %zu\r\n\r\n%s",
             tok, h.sig, h.timestamp, h.nonce, h.content_sm3, strlen(body), body);
    request(raw, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "body-length: 7"));
    /* the same headers with another body */
    assert_int_equal(zt_devsig_sign_request(&h, dev_key, "POST", "/req/items", "",
                                            (const uint8_t *) body, strlen(body), 0, NULL),
                     0);
    snprintf(raw, sizeof raw,
             "POST /req/items HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Authorization: Bearer %s\r\nX-SM2-Signature: %s\r\nX-SM2-Timestamp: %s\r\n"
             "X-SM2-Nonce: %s\r\nX-Content-SM3: %s\r\nContent-Length: 7\r\n\r\n{\"x\":2}",
             tok, h.sig, h.timestamp, h.nonce, h.content_sm3);
    request(raw, &r);
    assert_int_equal(r.status, 403);
    free(tok);
}

static void
test_rate_limit(void **state)
{
    (void) state;
    resp r;
    get("/lim/a", NULL, &r);
    assert_int_equal(r.status, 200);
    get("/lim/a", NULL, &r);
    assert_int_equal(r.status, 200);
    get("/lim/a", NULL, &r);
    assert_int_equal(r.status, 429);
    const char *ra = strstr(r.head, "Retry-After: ");
    assert_non_null(ra);
    int secs = atoi(ra + 13);
    assert_true(secs >= 1 && secs <= 5);
    expect_access("deny", 429, "-", "rate limit: route");
}

static void
test_reload(void **state)
{
    (void) state;
    resp r;
    char hdr[4096];
    char *tok = mint("carol", "[\"clerk\"]", NULL, 600);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    /* a bad policy is refused: the old one decides, a gateway.policy record says so */
    write_file("policy.yaml", "roles:\n  clerk:\n    - {methods: [GTE], path: /api/list}\n", 0644);
    dbao_err err = {0};
    assert_int_not_equal(gw_zt_reload(zt, &err), 0);
    for (int i = 0; i < 200; i++) {
        audit_record a;
        last_record(&a, 0);
        bool done = strcmp(a.event_type, "gateway.policy") == 0;
        if (done) {
            assert_int_equal(a.result, AUDIT_RESULT_FAILURE);
        }
        audit_record_cleanup(&a);
        if (done) {
            break;
        }
        assert_true(i < 199);
        usleep(10000);
    }
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 200);
    get("/api/secret", hdr, &r);
    assert_int_equal(r.status, 403);
    /* a good one takes effect at once */
    write_file("policy.yaml",
               "roles:\n  clerk:\n    - {id: all, methods: [GET], path: \"/api/**\"}\n", 0644);
    assert_int_equal(gw_zt_reload(zt, &err), 0);
    get("/api/secret", hdr, &r);
    assert_int_equal(r.status, 200);
    expect_access("allow", 0, "carol", "\"rule\":\"all\"");
    /* a key file opened up is refused on reload; the running keys stay */
    char p[256];
    snprintf(p, sizeof p, "%s/jwt.secret", dir);
    assert_int_equal(chmod(p, 0644), 0);
    assert_int_not_equal(gw_zt_reload(zt, &err), 0);
    assert_non_null(strstr(err.msg, "0600"));
    get("/api/secret", hdr, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(chmod(p, 0600), 0);
    write_file("policy.yaml", policy, 0644);
    assert_int_equal(gw_zt_reload(zt, &err), 0);
    free(tok);
}

static void
jwk_of(char *out, size_t cap, const char *kid, const gm_sm2_key *k)
{
    uint8_t pub[65];
    char x[64], y[64];
    gm_sm2_key_get_pub(k, pub);
    zt_b64url_encode(x, pub + 1, 32);
    zt_b64url_encode(y, pub + 33, 32);
    snprintf(out, cap, "{\"kty\":\"EC\",\"crv\":\"SM2\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}",
             kid, x, y);
}

static char *
mint_sm2(const char *kid, const gm_sm2_key *k)
{
    char payload[512];
    int64_t now = (int64_t) time(NULL);
    snprintf(payload, sizeof payload,
             "{\"sub\":\"frank\",\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld}",
             (long long) (now + 600));
    zt_jwt_signkey sk = {.alg = ZT_ALG_SM2, .kid = kid, .sm2 = k};
    char *tok = NULL;
    size_t tl = 0;
    assert_int_equal(zt_jwt_sign(&tok, &tl, &sk, payload, strlen(payload), NULL), 0);
    return tok;
}

/* jwks_url: keys fetched at start; a token with an unknown kid makes the gateway fetch again
 * (at most once per 10 s) and the next such token passes. */
static void
test_jwks_url(void **state)
{
    (void) state;
    gm_sm2_key *ka = NULL, *kb = NULL;
    assert_int_equal(gm_sm2_key_generate(&ka, NULL), 0);
    assert_int_equal(gm_sm2_key_generate(&kb, NULL), 0);
    char ja[512], jb[512];
    jwk_of(ja, sizeof ja, "a", ka);
    jwk_of(jb, sizeof jb, "b", kb);
    pthread_mutex_lock(&jwks_mu);
    snprintf(jwks_doc, sizeof jwks_doc, "{\"keys\":[%s]}", ja);
    jwks_hits = 0;
    pthread_mutex_unlock(&jwks_mu);
    gw_config *cfg = NULL;
    make_config(&cfg, true);
    gw_zt *z2 = NULL;
    gw_server *s2 = NULL;
    dbao_err err = {0};
    gw_zt_opts zo = {.log = alog};
    if (gw_zt_new(&z2, cfg, &zo, &err) != 0) {
        fail_msg("zt: %s", err.msg);
    }
    gw_step st;
    gw_zt_step(z2, &st, 0);
    gw_server_opts so = {.steps = &st, .num_steps = 1};
    if (gw_server_new(&s2, cfg, &so, &err) != 0 || gw_server_start(s2, &err) != 0) {
        fail_msg("server: %s", err.msg);
    }
    uint16_t saved = port;
    port = gw_server_listener_port(s2, 0);
    resp r;
    char hdr[4096];
    char *ta = mint_sm2("a", ka), *tb = mint_sm2("b", kb);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", ta);
    get("/api/x", hdr, &r);
    assert_int_equal(r.status, 200);
    pthread_mutex_lock(&jwks_mu);
    snprintf(jwks_doc, sizeof jwks_doc, "{\"keys\":[%s,%s]}", ja, jb);
    pthread_mutex_unlock(&jwks_mu);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tb);
    get("/api/x", hdr, &r);
    assert_int_equal(r.status, 401);
    int ok = 0;
    for (int i = 0; i < 300 && !ok; i++) {
        usleep(10000);
        get("/api/x", hdr, &r);
        ok = r.status == 200;
    }
    assert_true(ok);
    pthread_mutex_lock(&jwks_mu);
    assert_int_equal(jwks_hits, 2); /* start, then the unknown kid once */
    pthread_mutex_unlock(&jwks_mu);
    port = saved;
    gw_server_free(s2);
    gw_zt_free(z2);
    free(ta);
    free(tb);
    gm_sm2_key_free(ka);
    gm_sm2_key_free(kb);
}

static bool
find_record(uint64_t from, const char *type, const char *details_part)
{
    static uint8_t buf[AUDIT_RECORD_MAX];
    for (uint64_t i = from; i < audit_log_size(alog); i++) {
        size_t l = 0;
        audit_record r;
        audit_record_init(&r);
        assert_int_equal(audit_log_get(alog, i, buf, sizeof buf, &l, NULL), 0);
        assert_int_equal(audit_record_decode(&r, buf, l, NULL), 0);
        bool hit = strcmp(r.event_type, type) == 0 &&
                   (details_part == NULL || (r.details && strstr(r.details, details_part)));
        audit_record_cleanup(&r);
        if (hit) {
            return true;
        }
    }
    return false;
}

/* a breaker that opens writes gateway.breaker; a fallback answer writes gateway.fallback */
static void
test_breaker_fallback_records(void **state)
{
    (void) state;
    resp r;
    uint64_t n0 = audit_log_size(alog);
    bool degraded = false;
    for (int i = 0; i < 20 && !degraded; i++) {
        get("/fb/x", NULL, &r);
        degraded = r.status == 200 && strstr(r.body, "degraded") != NULL;
    }
    assert_true(degraded);
    bool b = false, f = false;
    for (int i = 0; i < 300 && !(b && f); i++) {
        b = find_record(n0, "gateway.breaker", "\"to\":\"open\"");
        f = find_record(n0, "gateway.fallback", "\"mode\":\"static\"");
        if (!(b && f)) {
            usleep(10000);
        }
    }
    assert_true(b);
    assert_true(f);
}

/* requests the gateway refuses before the step (a path it will not normalise, no route) still
 * get their gateway.access record (queued: the answer is already sent) */
static void
test_early_refusal(void **state)
{
    (void) state;
    resp r;
    uint64_t n0 = audit_log_size(alog);
    get("/../etc/passwd?secret=1", NULL, &r);
    assert_int_equal(r.status, 400);
    get("/nowhere", NULL, &r);
    assert_int_equal(r.status, 404);
    bool a = false, b = false;
    for (int i = 0; i < 300 && !(a && b); i++) {
        a = find_record(n0, "gateway.access", "bad path");
        b = find_record(n0, "gateway.access", "no route");
        if (!(a && b)) {
            usleep(10000);
        }
    }
    assert_true(a);
    assert_true(b);
    assert_false(find_record(n0, "gateway.access", "secret"));
}

static void
test_audit_fails_closed(void **state)
{
    (void) state;
    resp r;
    audit__faults f = {.eio_sync = 1};
    audit__fault_config(&f);
    char hdr[4096];
    char *tok = mint("alice", "[\"doctor\"]", NULL, 600);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 503);
    get("/api/list", hdr, &r);
    assert_int_equal(r.status, 503);
    get("/open/x", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_null(strstr(r.body, "body-length")); /* never forwarded */
    audit__fault_config(NULL);
    free(tok);
    gw_zt_stats st;
    gw_zt_get_stats(zt, &st);
    assert_true(st.refused_503 >= 3);
    assert_true(st.audit_failures >= 1);
    /* the same counters as /metrics text */
    dbao_buf m;
    dbao_buf_init(&m);
    assert_int_equal(gw_zt_metrics(zt, &m), 0);
    assert_int_equal(dbao_buf_putc(&m, '\0'), 0);
    char want[96];
    snprintf(want, sizeof want,
             "dengbao_gateway_zt_decisions_total{result=\"refuse_503\"} %" PRIu64 "\n",
             st.refused_503);
    assert_non_null(strstr(m.data, want));
    assert_non_null(strstr(m.data, "# TYPE dengbao_gateway_zt_audit_failures_total counter\n"));
    dbao_buf_free(&m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_header_format),
        cmocka_unit_test(test_matrix),
        cmocka_unit_test(test_device_token),
        cmocka_unit_test(test_device_request),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_jwks_url),
        cmocka_unit_test(test_breaker_fallback_records),
        cmocka_unit_test(test_early_refusal),
        cmocka_unit_test(test_audit_fails_closed), /* last: the log stays failed */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
