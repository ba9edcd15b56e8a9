/* api.c: the saga coordinator's HTTP API (docs/saga.md, "HTTP API"), on net.h.
 *
 * Two listeners: the public API (submit, query, wait) and the admin API (list, retry, resolve,
 * /metrics, /healthz), by default on 127.0.0.1 only and optionally behind a bearer token
 * (compared in constant time). Handlers run on net.h worker threads: they parse and check the
 * request there (the spec is parsed, validated and canonicalized on the worker, so the engine
 * thread only stores it), then hand a saga_req to the coordinator (saga_coord_request); the
 * engine answers through reply(), which calls net_request_respond (allowed from any thread).
 *
 * Refusals: unknown paths 404, wrong methods 405, a body that is not application/json 415, a
 * bad spec 400 with the message naming the field, a bad query parameter 400, a missing or
 * wrong admin token 401.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "coord.h"
#include "dengbao/net.h"

#define WAIT_MAX_MS 60000

struct saga_api {
    saga_coord *c;
    net_server *pub, *adm;
    char *token;
};

static void
respond(net_request *req, int status, const char *body)
{
    net_request_respond(req, status, "application/json", body, strlen(body));
}

static void
respond_err(net_request *req, int status, const char *msg)
{
    json_t *o = json_pack("{s:s}", "error", msg);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (t != NULL)
        respond(req, status, t);
    else
        respond(req, 500, "{\"error\":\"out of memory\"}");
    free(t);
    json_decref(o);
}

static void
on_reply(saga_req *r, int status, const char *body, size_t len)
{
    net_request *req = r->arg;
    net_request_respond(req, status, "application/json", body, len);
    saga_req_free(r);
}

static int
get_wait(net_request *req, int64_t *out)
{
    char v[32];
    *out = 0;
    int rc = net_query_get(net_request_query(req), "wait", v, sizeof v);
    if (rc == DBAO_EINVAL)
        return 0;
    uint64_t ms;
    if (rc != 0 || saga_duration_parse(v, &ms) != 0) {
        respond_err(req, 400, "wait: bad duration (like 5s)");
        return -1;
    }
    *out = (int64_t) (ms > WAIT_MAX_MS ? WAIT_MAX_MS : ms);
    return 0;
}

static bool
is_json(net_request *req)
{
    const char *ct = net_request_header(req, "Content-Type");
    return ct != NULL && strncasecmp(ct, "application/json", 16) == 0 &&
           (ct[16] == 0 || ct[16] == ';' || ct[16] == ' ');
}

static void
handle_submit(saga_api *a, net_request *req)
{
    if (!is_json(req)) {
        respond_err(req, 415, "Content-Type must be application/json");
        return;
    }
    int64_t wait;
    if (get_wait(req, &wait) != 0)
        return;
    size_t len;
    const uint8_t *body = net_request_body(req, &len);
    saga_req *r = saga_req_new(SAGA_REQ_SUBMIT);
    if (r == NULL) {
        respond_err(req, 500, "out of memory");
        return;
    }
    dbao_err err;
    dbao_err_clear(&err);
    int rc = saga_spec_parse(&r->spec, (const char *) body, len, saga_coord_defaults(a->c), &err);
    if (rc != 0) {
        saga_req_free(r);
        respond_err(req,
                    rc == DBAO_ENOMEM   ? 500
                    : rc == DBAO_ERANGE ? 413
                                        : 400,
                    err.msg[0] ? err.msg : "bad spec");
        return;
    }
    if (r->spec.gid[0] == 0)
        saga_gid_generate(r->spec.gid);
    r->wait_ms = wait;
    r->reply = on_reply;
    r->arg = req;
    saga_coord_request(a->c, r);
}

/* gid_from: copies the path segment after prefix up to '/' or the end; suffix is what
 * follows. Returns false if the gid is not valid. */
static bool
gid_from(const char *path, const char *prefix, char *gid, const char **suffix)
{
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0)
        return false;
    const char *g = path + pl;
    size_t n = strcspn(g, "/");
    if (n == 0 || n > SAGA_GID_MAX)
        return false;
    memcpy(gid, g, n);
    gid[n] = 0;
    *suffix = g + n;
    return saga_gid_valid(gid);
}

static void
pub_handler(net_request *req, void *arg)
{
    saga_api *a = arg;
    const char *m = net_request_method(req), *p = net_request_path(req);
    if (strcmp(p, "/v1/sagas") == 0) {
        if (strcmp(m, "POST") != 0) {
            respond_err(req, 405, "method not allowed");
            return;
        }
        handle_submit(a, req);
        return;
    }
    if (strcmp(p, "/healthz") == 0) {
        bool ok = saga_coord_healthy(a->c);
        respond(req, ok ? 200 : 503, ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unhealthy\"}");
        return;
    }
    char gid[SAGA_GID_MAX + 1];
    const char *suffix;
    if (strncmp(p, "/v1/sagas/", 10) == 0) {
        if (!gid_from(p, "/v1/sagas/", gid, &suffix) || *suffix != 0) {
            respond_err(req, 404, "not found");
            return;
        }
        if (strcmp(m, "GET") != 0) {
            respond_err(req, 405, "method not allowed");
            return;
        }
        int64_t wait;
        if (get_wait(req, &wait) != 0)
            return;
        saga_req *r = saga_req_new(SAGA_REQ_GET);
        if (r == NULL) {
            respond_err(req, 500, "out of memory");
            return;
        }
        snprintf(r->gid, sizeof r->gid, "%s", gid);
        r->wait_ms = wait;
        r->reply = on_reply;
        r->arg = req;
        saga_coord_request(a->c, r);
        return;
    }
    respond_err(req, 404, "not found");
}

static bool
admin_authorized(saga_api *a, net_request *req)
{
    if (a->token == NULL)
        return true;
    const char *h = net_request_header(req, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *t = h + 7;
    size_t tl = strlen(t), kl = strlen(a->token);
    return tl == kl && dbao_ct_memeq(t, a->token, kl);
}

static void
handle_admin_action(saga_api *a, net_request *req, const char *gid, const char *suffix)
{
    bool retry = strcmp(suffix, "/retry") == 0, resolve = strcmp(suffix, "/resolve") == 0;
    if (!retry && !resolve) {
        respond_err(req, 404, "not found");
        return;
    }
    if (strcmp(net_request_method(req), "POST") != 0) {
        respond_err(req, 405, "method not allowed");
        return;
    }
    size_t len;
    const uint8_t *body = net_request_body(req, &len);
    json_error_t je;
    json_t *o =
        len ? json_loadb((const char *) body, len, JSON_REJECT_DUPLICATES, &je) : json_object();
    if (!json_is_object(o)) {
        json_decref(o);
        respond_err(req, 400, "body: must be a JSON object");
        return;
    }
    saga_req *r = saga_req_new(retry ? SAGA_REQ_RETRY : SAGA_REQ_RESOLVE);
    if (r == NULL) {
        json_decref(o);
        respond_err(req, 500, "out of memory");
        return;
    }
    const char *k;
    json_t *v;
    const char *bad = NULL;
    bool have_state = false;
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "reason") == 0) {
            if (!json_is_string(v) || strlen(json_string_value(v)) >= sizeof r->reason)
                bad = "reason: must be a string of at most 255 bytes";
            else
                snprintf(r->reason, sizeof r->reason, "%s", json_string_value(v));
        } else if (strcmp(k, "state") == 0 && resolve) {
            const char *s = json_is_string(v) ? json_string_value(v) : "";
            if (strcmp(s, "committed") == 0)
                r->resolve_to = SAGA_COMMITTED;
            else if (strcmp(s, "compensated") == 0)
                r->resolve_to = SAGA_COMPENSATED;
            else
                bad = "state: must be \"committed\" or \"compensated\"";
            have_state = true;
        } else {
            bad = "body: unknown key";
        }
    }
    json_decref(o);
    if (bad == NULL && resolve && !have_state)
        bad = "state: required";
    if (bad == NULL && resolve && r->reason[0] == 0)
        bad = "reason: required";
    if (bad != NULL) {
        saga_req_free(r);
        respond_err(req, 400, bad);
        return;
    }
    snprintf(r->gid, sizeof r->gid, "%s", gid);
    r->reply = on_reply;
    r->arg = req;
    saga_coord_request(a->c, r);
}

static void
adm_handler(net_request *req, void *arg)
{
    saga_api *a = arg;
    const char *m = net_request_method(req), *p = net_request_path(req);
    if (strcmp(p, "/healthz") == 0) {
        bool ok = saga_coord_healthy(a->c);
        respond(req, ok ? 200 : 503, ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unhealthy\"}");
        return;
    }
    if (!admin_authorized(a, req)) {
        respond_err(req, 401, "a valid bearer token is required");
        return;
    }
    if (strcmp(p, "/metrics") == 0) {
        dbao_buf b = {0};
        if (saga_coord_metrics(a->c, &b) == 0)
            net_request_respond(req, 200, "text/plain; version=0.0.4", b.data, b.len);
        else
            respond_err(req, 500, "out of memory");
        dbao_buf_free(&b);
        return;
    }
    if (strcmp(p, "/v1/admin/sagas") == 0) {
        if (strcmp(m, "GET") != 0) {
            respond_err(req, 405, "method not allowed");
            return;
        }
        saga_req *r = saga_req_new(SAGA_REQ_LIST);
        if (r == NULL) {
            respond_err(req, 500, "out of memory");
            return;
        }
        const char *q = net_request_query(req);
        char v[64];
        const char *bad = NULL;
        if (net_query_get(q, "state", v, sizeof v) == 0) {
            saga_state st;
            if (strcmp(v, "stuck") == 0)
                r->list_state = -2;
            else if (saga_state_parse(v, &st) == 0 &&
                     (st == SAGA_PARKED || st == SAGA_RUNNING || st == SAGA_COMPENSATING ||
                      st == SAGA_SUBMITTED))
                r->list_state = (int) st;
            else
                bad = "state: must be parked, running, compensating, submitted or stuck";
        }
        if (bad == NULL && net_query_get(q, "older_than", v, sizeof v) == 0) {
            uint64_t ms;
            if (saga_duration_parse(v, &ms) != 0)
                bad = "older_than: bad duration (like 30s)";
            else
                r->older_than_ms = (int64_t) ms;
        }
        if (bad == NULL && net_query_get(q, "limit", v, sizeof v) == 0) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end != 0 || n == 0 || n > 1000 || v[0] < '0' || v[0] > '9')
                bad = "limit: must be an integer 1..1000";
            else
                r->limit = (uint32_t) n;
        }
        if (bad == NULL && r->list_state == -2 && r->older_than_ms == 0)
            r->older_than_ms = 30000;
        if (bad != NULL) {
            saga_req_free(r);
            respond_err(req, 400, bad);
            return;
        }
        r->reply = on_reply;
        r->arg = req;
        saga_coord_request(a->c, r);
        return;
    }
    char gid[SAGA_GID_MAX + 1];
    const char *suffix;
    if (gid_from(p, "/v1/admin/sagas/", gid, &suffix)) {
        handle_admin_action(a, req, gid, suffix);
        return;
    }
    respond_err(req, 404, "not found");
}

int
saga_api_start(saga_api **out, saga_coord *c, const saga_api_opts *o, dbao_err *err)
{
    *out = NULL;
    saga_api *a = calloc(1, sizeof *a);
    if (a == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "saga api: out of memory");
    a->c = c;
    if (o->admin_token != NULL) {
        a->token = strdup(o->admin_token);
        if (a->token == NULL) {
            free(a);
            return dbao_err_set(err, DBAO_ENOMEM, "saga api: out of memory");
        }
    }
    net_server_opts po = {.host = o->host ? o->host : "127.0.0.1",
                          .port = o->port,
                          .workers = o->workers ? o->workers : 1,
                          .handler = pub_handler,
                          .handler_arg = a,
                          .body_max = SAGA_SPEC_MAX};
    net_server_opts ao = {.host = o->admin_host ? o->admin_host : "127.0.0.1",
                          .port = o->admin_port,
                          .workers = 1,
                          .handler = adm_handler,
                          .handler_arg = a,
                          .body_max = 65536};
    int rc = net_server_new(&a->pub, &po, err);
    if (rc == 0)
        rc = net_server_new(&a->adm, &ao, err);
    if (rc == 0)
        rc = net_server_start(a->pub, err);
    if (rc == 0)
        rc = net_server_start(a->adm, err);
    if (rc != 0) {
        saga_api_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

uint16_t
saga_api_port(const saga_api *a)
{
    return net_server_port(a->pub);
}

uint16_t
saga_api_admin_port(const saga_api *a)
{
    return net_server_port(a->adm);
}

void
saga_api_stop_accepting(saga_api *a)
{
    if (a == NULL)
        return;
    if (a->pub)
        net_server_stop(a->pub);
    if (a->adm)
        net_server_stop(a->adm);
}

void
saga_api_free(saga_api *a)
{
    if (a == NULL)
        return;
    net_server_free(a->pub);
    net_server_free(a->adm);
    if (a->token)
        dbao_free_secret(a->token, strlen(a->token));
    free(a);
}
