/* spec.c: parse, validate and canonicalize a submitted saga (global transaction) spec.
 *
 * What: the JSON body of POST /v1/sagas (docs/saga.md, "Spec") becomes a saga_spec: the gid,
 * the transaction deadline, the retry policy and the ordered steps (name, group, recovery,
 * action and compensation URLs, payload, per-call timeout). Every default is filled in from
 * the coordinator's configuration, and the result is written back as canonical JSON (sorted
 * keys, compact, durations as "<n>ms", no gid): that text is what the store keeps, what
 * recovery parses again after a crash (saga_spec_from_canonical), and what "same gid, same
 * spec?" compares byte for byte. Canonicalizing twice gives the same bytes.
 *
 * Refusals (DBAO_EFORMAT, the message names the field): not one JSON object, duplicate keys,
 * unknown keys at any level, wrong types, a gid outside [A-Za-z0-9._:-]{1,128}, 0 or more than
 * SAGA_STEPS_MAX steps, URLs that are not http(s)://host[:port]/..., hosts outside the
 * allow-list, groups that go down in step order, durations outside 1 ms .. 30 days, a
 * max_attempts outside 1..1000, a fractional or exponent number anywhere in a payload (money is
 * fixed-point: integers or strings; a double would change the amount on the way through), a
 * trace_id that is not 32 lowercase hex digits.
 *
 * Libraries: jansson parses and writes JSON (JSON_REJECT_DUPLICATES; its integer type is
 * 64-bit); everything else here is hand-written checks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "coord.h"

#define DURATION_MAX_MS (30ull * 24 * 3600 * 1000)

bool
saga_gid_valid(const char *gid)
{
    size_t n = 0;
    for (const char *p = gid; *p; p++, n++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return false;
        if (n >= SAGA_GID_MAX)
            return false;
    }
    return n > 0;
}

void
saga_gid_generate(char out[SAGA_GID_MAX + 1])
{
    uint8_t u[16];
    audit_uuid7_generate(u, audit_now_ns());
    char hex[33];
    dbao_hex_encode(hex, u, 16);
    snprintf(out, SAGA_GID_MAX + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
             hex + 20);
}

int
saga_duration_parse(const char *s, uint64_t *ms)
{
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return DBAO_EFORMAT;
    while (*p >= '0' && *p <= '9') {
        if (v > DURATION_MAX_MS)
            return DBAO_ERANGE;
        v = v * 10 + (uint64_t) (*p - '0');
        p++;
    }
    uint64_t mul;
    if (strcmp(p, "ms") == 0)
        mul = 1;
    else if (strcmp(p, "s") == 0)
        mul = 1000;
    else if (strcmp(p, "m") == 0)
        mul = 60000;
    else if (strcmp(p, "h") == 0)
        mul = 3600000;
    else
        return DBAO_EFORMAT;
    if (v == 0 || v > DURATION_MAX_MS / mul)
        return DBAO_ERANGE;
    *ms = v * mul;
    return 0;
}

/* pattern: "*", "host:*", "host:port", "*:port" against "host:port". */
bool
saga_allow_match(const char *pattern, const char *hostport)
{
    if (strcmp(pattern, "*") == 0)
        return true;
    const char *pc = strrchr(pattern, ':'), *hc = strrchr(hostport, ':');
    if (pc == NULL || hc == NULL)
        return false;
    size_t ph = (size_t) (pc - pattern), hh = (size_t) (hc - hostport);
    bool host_ok =
        (ph == 1 && pattern[0] == '*') || (ph == hh && strncmp(pattern, hostport, ph) == 0);
    bool port_ok = strcmp(pc + 1, "*") == 0 || strcmp(pc + 1, hc + 1) == 0;
    return host_ok && port_ok;
}

/* check_url: http(s)://host[:port][/path]; writes "host:port" for the allow-list. */
static int
check_url(const char *url, const char *field, char *hostport, size_t cap, dbao_err *err)
{
    size_t n = strlen(url);
    if (n == 0 || n > SAGA_URL_MAX)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: length must be 1..%d", field, SAGA_URL_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) url[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return dbao_err_set(err, DBAO_EFORMAT, "%s: a space, control or non-ASCII byte", field);
    }
    const char *rest;
    const char *dport;
    if (strncmp(url, "http://", 7) == 0) {
        rest = url + 7;
        dport = "80";
    } else if (strncmp(url, "https://", 8) == 0) {
        rest = url + 8;
        dport = "443";
    } else {
        return dbao_err_set(err, DBAO_EFORMAT, "%s: must start with http:// or https://", field);
    }
    size_t alen = strcspn(rest, "/?#");
    if (alen == 0 || memchr(rest, '@', alen) != NULL)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: bad host (no user info allowed)", field);
    if (rest[alen] == '#' || strchr(rest, '#') != NULL)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: no fragment allowed", field);
    const char *host = rest;
    size_t hlen = alen;
    const char *port = NULL;
    size_t plen = 0;
    if (host[0] == '[') {
        const char *rb = memchr(host, ']', alen);
        if (rb == NULL)
            return dbao_err_set(err, DBAO_EFORMAT, "%s: bad IPv6 host", field);
        hlen = (size_t) (rb - host) + 1;
        if (hlen < alen) {
            if (host[hlen] != ':')
                return dbao_err_set(err, DBAO_EFORMAT, "%s: bad host", field);
            port = host + hlen + 1;
            plen = alen - hlen - 1;
        }
    } else {
        const char *col = memchr(host, ':', alen);
        if (col != NULL) {
            hlen = (size_t) (col - host);
            port = col + 1;
            plen = alen - hlen - 1;
        }
        for (size_t i = 0; i < hlen; i++) {
            char ch = host[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'))
                return dbao_err_set(err, DBAO_EFORMAT, "%s: bad host", field);
        }
    }
    if (hlen == 0)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: empty host", field);
    if (port != NULL) {
        if (plen == 0 || plen > 5)
            return dbao_err_set(err, DBAO_EFORMAT, "%s: bad port", field);
        unsigned v = 0;
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return dbao_err_set(err, DBAO_EFORMAT, "%s: bad port", field);
            v = v * 10 + (unsigned) (port[i] - '0');
        }
        if (v == 0 || v > 65535)
            return dbao_err_set(err, DBAO_EFORMAT, "%s: bad port", field);
    }
    if (hlen + 1 + (port ? plen : strlen(dport)) + 1 > cap)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: host too long", field);
    snprintf(hostport, cap, "%.*s:%.*s", (int) hlen, host, port ? (int) plen : (int) strlen(dport),
             port ? port : dport);
    return 0;
}

static int
check_url_allowed(const char *url, const char *field, const saga_spec_defaults *d, dbao_err *err)
{
    char hp[300];
    int rc = check_url(url, field, hp, sizeof hp, err);
    if (rc != 0 || d == NULL)
        return rc;
    for (size_t i = 0; i < d->num_allow; i++)
        if (saga_allow_match(d->allow[i], hp))
            return 0;
    return dbao_err_set(err, DBAO_EFORMAT, "%s: host not in participants.allow", field);
}

/* no_reals: payloads carry money; a JSON real is refused anywhere inside. */
static bool
no_reals(const json_t *v, int depth)
{
    if (depth > 64)
        return false;
    if (json_is_real(v))
        return false;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *) v, k, x)
        {
            if (!no_reals(x, depth + 1))
                return false;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (!no_reals(x, depth + 1))
                return false;
        }
    }
    return true;
}

static int
get_duration(json_t *v, const char *field, uint32_t *out, dbao_err *err)
{
    if (!json_is_string(v))
        return dbao_err_set(err, DBAO_EFORMAT, "%s: must be a duration string like \"3s\"", field);
    uint64_t ms;
    if (saga_duration_parse(json_string_value(v), &ms) != 0 || ms > UINT32_MAX)
        return dbao_err_set(err, DBAO_EFORMAT,
                            "%s: bad duration (a positive integer and ms, s, m or h; <= 30 days)",
                            field);
    *out = (uint32_t) ms;
    return 0;
}

static int
check_keys(json_t *obj, const char *ctx, const char *const *keys, dbao_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        for (size_t i = 0; keys[i] != NULL; i++)
            if (strcmp(keys[i], k) == 0)
                ok = true;
        if (!ok) {
            char shown[40];
            size_t j = 0;
            for (; k[j] != 0 && j < sizeof shown - 1; j++)
                shown[j] = (k[j] > 0x20 && k[j] < 0x7f) ? k[j] : '?';
            shown[j] = 0;
            return dbao_err_set(err, DBAO_EFORMAT, "%sunknown key \"%s\"", ctx, shown);
        }
    }
    return 0;
}

void
saga_spec_free(saga_spec *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->num_steps; i++) {
        free(s->steps[i].action);
        free(s->steps[i].compensate);
        free(s->steps[i].payload);
    }
    free(s->steps);
    free(s->canonical);
    memset(s, 0, sizeof *s);
}

static char *
xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p != NULL)
        memcpy(p, s, n + 1);
    return p;
}

static int
parse_obj(saga_spec *out, json_t *root, const saga_spec_defaults *d, bool canonical_in,
          dbao_err *err)
{
    static const char *const top_keys[] = {"gid", "timeout", "retry", "trace_id", "steps", NULL};
    static const char *const retry_keys[] = {"initial", "max", "max_attempts", NULL};
    static const char *const step_keys[] = {"name",       "group",   "recovery", "action",
                                            "compensate", "payload", "timeout",  NULL};
    int rc;
    if (!json_is_object(root))
        return dbao_err_set(err, DBAO_EFORMAT, "spec: must be a JSON object");
    if ((rc = check_keys(root, "spec: ", top_keys, err)) != 0)
        return rc;
    json_t *v = json_object_get(root, "gid");
    if (v != NULL) {
        if (canonical_in)
            return dbao_err_set(err, DBAO_EFORMAT, "spec: gid in a canonical spec");
        if (!json_is_string(v) || !saga_gid_valid(json_string_value(v)))
            return dbao_err_set(err, DBAO_EFORMAT, "gid: must match [A-Za-z0-9._:-]{1,128}");
        snprintf(out->gid, sizeof out->gid, "%s", json_string_value(v));
    }
    out->timeout_ms = d ? d->timeout_ms : 30000;
    out->retry_initial_ms = d ? d->retry_initial_ms : 100;
    out->retry_max_ms = d ? d->retry_max_ms : 5000;
    out->max_attempts = d ? d->max_attempts : 6;
    uint32_t call_timeout = d ? d->call_timeout_ms : 3000;
    if ((v = json_object_get(root, "timeout")) != NULL &&
        (rc = get_duration(v, "timeout", &out->timeout_ms, err)) != 0)
        return rc;
    if ((v = json_object_get(root, "trace_id")) != NULL) {
        const char *t = json_is_string(v) ? json_string_value(v) : NULL;
        bool ok = t != NULL && strlen(t) == 32 && strspn(t, "0123456789abcdef") == 32 &&
                  strspn(t, "0") != 32;
        if (!ok)
            return dbao_err_set(err, DBAO_EFORMAT,
                                "trace_id: must be 32 lowercase hex digits, not all zero");
        snprintf(out->trace_id, sizeof out->trace_id, "%s", t);
    }
    if ((v = json_object_get(root, "retry")) != NULL) {
        if (!json_is_object(v))
            return dbao_err_set(err, DBAO_EFORMAT, "retry: must be an object");
        if ((rc = check_keys(v, "retry: ", retry_keys, err)) != 0)
            return rc;
        json_t *x;
        if ((x = json_object_get(v, "initial")) != NULL &&
            (rc = get_duration(x, "retry.initial", &out->retry_initial_ms, err)) != 0)
            return rc;
        if ((x = json_object_get(v, "max")) != NULL &&
            (rc = get_duration(x, "retry.max", &out->retry_max_ms, err)) != 0)
            return rc;
        if ((x = json_object_get(v, "max_attempts")) != NULL) {
            if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 1000)
                return dbao_err_set(err, DBAO_EFORMAT,
                                    "retry.max_attempts: must be an integer 1..1000");
            out->max_attempts = (uint32_t) json_integer_value(x);
        }
    }
    if (out->retry_initial_ms > out->retry_max_ms)
        return dbao_err_set(err, DBAO_EFORMAT, "retry.initial: must not exceed retry.max");
    json_t *steps = json_object_get(root, "steps");
    if (!json_is_array(steps) || json_array_size(steps) == 0 ||
        json_array_size(steps) > SAGA_STEPS_MAX)
        return dbao_err_set(err, DBAO_EFORMAT, "steps: must be an array of 1..%d steps",
                            SAGA_STEPS_MAX);
    size_t n = json_array_size(steps);
    out->steps = calloc(n, sizeof *out->steps);
    if (out->steps == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "spec: out of memory");
    out->num_steps = n;
    for (size_t i = 0; i < n; i++) {
        saga_spec_step *st = &out->steps[i];
        json_t *s = json_array_get(steps, i);
        char ctx[48];
        if (!json_is_object(s))
            return dbao_err_set(err, DBAO_EFORMAT, "steps[%zu]: must be an object", i);
        snprintf(ctx, sizeof ctx, "steps[%zu]: ", i);
        if ((rc = check_keys(s, ctx, step_keys, err)) != 0)
            return rc;
        json_t *x = json_object_get(s, "name");
        if (x != NULL) {
            const char *nm = json_is_string(x) ? json_string_value(x) : NULL;
            size_t nl = nm ? strlen(nm) : 0;
            bool ok = nl > 0 && nl <= SAGA_NAME_MAX;
            for (size_t j = 0; ok && j < nl; j++) {
                char ch = nm[j];
                ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
            }
            if (!ok)
                return dbao_err_set(err, DBAO_EFORMAT,
                                    "steps[%zu].name: must match [A-Za-z0-9._-]{1,64}", i);
            snprintf(st->name, sizeof st->name, "%s", nm);
        } else {
            snprintf(st->name, sizeof st->name, "step-%zu", i);
        }
        st->group = (uint32_t) i;
        if ((x = json_object_get(s, "group")) != NULL) {
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 1000000)
                return dbao_err_set(err, DBAO_EFORMAT,
                                    "steps[%zu].group: must be an integer 0..1000000", i);
            st->group = (uint32_t) json_integer_value(x);
        }
        if (i > 0 && st->group < out->steps[i - 1].group)
            return dbao_err_set(err, DBAO_EFORMAT,
                                "steps[%zu].group: groups must not decrease in step order", i);
        if ((x = json_object_get(s, "recovery")) != NULL) {
            const char *r = json_is_string(x) ? json_string_value(x) : "";
            if (strcmp(r, "backward") == 0)
                st->recovery = SAGA_BACKWARD;
            else if (strcmp(r, "forward") == 0)
                st->recovery = SAGA_FORWARD;
            else
                return dbao_err_set(err, DBAO_EFORMAT,
                                    "steps[%zu].recovery: must be \"backward\" or \"forward\"", i);
        }
        const char *which[2] = {"action", "compensate"};
        for (int k = 0; k < 2; k++) {
            char field[48];
            snprintf(field, sizeof field, "steps[%zu].%s", i, which[k]);
            x = json_object_get(s, which[k]);
            if (!json_is_string(x))
                return dbao_err_set(err, DBAO_EFORMAT, "%s: a URL string is required", field);
            if ((rc = check_url_allowed(json_string_value(x), field, canonical_in ? NULL : d,
                                        err)) != 0)
                return rc;
            char *u = xstrdup(json_string_value(x));
            if (u == NULL)
                return dbao_err_set(err, DBAO_ENOMEM, "spec: out of memory");
            if (k == 0)
                st->action = u;
            else
                st->compensate = u;
        }
        x = json_object_get(s, "payload");
        if (x != NULL) {
            if (!json_is_object(x))
                return dbao_err_set(err, DBAO_EFORMAT, "steps[%zu].payload: must be an object", i);
            if (!no_reals(x, 0))
                return dbao_err_set(err, DBAO_EFORMAT,
                                    "steps[%zu].payload: fractional numbers are refused (use "
                                    "integers in minor units or strings)",
                                    i);
            st->payload = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS);
        } else {
            st->payload = xstrdup("{}");
        }
        if (st->payload == NULL)
            return dbao_err_set(err, DBAO_ENOMEM, "spec: out of memory");
        st->timeout_ms = call_timeout;
        if ((x = json_object_get(s, "timeout")) != NULL) {
            char field[48];
            snprintf(field, sizeof field, "steps[%zu].timeout", i);
            if ((rc = get_duration(x, field, &st->timeout_ms, err)) != 0)
                return rc;
        }
    }
    return 0;
}

static int
build_canonical(saga_spec *s, dbao_err *err)
{
    dbao_buf b = {0};
    int rc = 0;
    rc |= dbao_buf_printf(&b,
                          "{\"retry\":{\"initial\":\"%ums\",\"max\":\"%ums\",\"max_attempts\":%u},",
                          s->retry_initial_ms, s->retry_max_ms, s->max_attempts);
    rc |= dbao_buf_printf(&b, "\"steps\":[");
    for (size_t i = 0; i < s->num_steps; i++) {
        const saga_spec_step *st = &s->steps[i];
        /* URLs are printable ASCII without '"' or '\\'? They may hold '"' no: bytes <= 0x20
         * are refused but '"' and '\\' are not; escape them through jansson. */
        json_t *a = json_string(st->action), *c = json_string(st->compensate);
        char *as = a ? json_dumps(a, JSON_ENCODE_ANY) : NULL;
        char *cs = c ? json_dumps(c, JSON_ENCODE_ANY) : NULL;
        json_decref(a);
        json_decref(c);
        if (as == NULL || cs == NULL) {
            free(as);
            free(cs);
            dbao_buf_free(&b);
            return dbao_err_set(err, DBAO_ENOMEM, "spec: out of memory");
        }
        rc |=
            dbao_buf_printf(&b,
                            "%s{\"action\":%s,\"compensate\":%s,\"group\":%u,\"name\":\"%s\","
                            "\"payload\":%s,\"recovery\":\"%s\",\"timeout\":\"%ums\"}",
                            i ? "," : "", as, cs, st->group, st->name, st->payload,
                            st->recovery == SAGA_FORWARD ? "forward" : "backward", st->timeout_ms);
        free(as);
        free(cs);
    }
    rc |= dbao_buf_printf(&b, "],\"timeout\":\"%ums\"", s->timeout_ms);
    if (s->trace_id[0])
        rc |= dbao_buf_printf(&b, ",\"trace_id\":\"%s\"", s->trace_id);
    rc |= dbao_buf_putc(&b, '}');
    if (rc != 0) {
        dbao_buf_free(&b);
        return dbao_err_set(err, DBAO_ENOMEM, "spec: out of memory");
    }
    if (b.len > SAGA_SPEC_MAX) {
        dbao_buf_free(&b);
        return dbao_err_set(err, DBAO_ERANGE, "spec: canonical form over %u bytes", SAGA_SPEC_MAX);
    }
    /* the canonical text is dbao_buf memory; copy to malloc to keep one allocator per field */
    s->canonical = malloc(b.len + 1);
    if (s->canonical == NULL) {
        dbao_buf_free(&b);
        return dbao_err_set(err, DBAO_ENOMEM, "spec: out of memory");
    }
    memcpy(s->canonical, b.data, b.len + 1);
    s->canonical_len = b.len;
    dbao_buf_free(&b);
    return 0;
}

static int
parse_common(saga_spec *out, const char *json, size_t len, const saga_spec_defaults *d,
             bool canonical_in, dbao_err *err)
{
    memset(out, 0, sizeof *out);
    if (len > SAGA_SPEC_MAX)
        return dbao_err_set(err, DBAO_ERANGE, "spec: over %u bytes", SAGA_SPEC_MAX);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return dbao_err_set(err, DBAO_EFORMAT, "spec: not valid JSON (line %d column %d)", je.line,
                            je.column);
    int rc = parse_obj(out, root, d, canonical_in, err);
    json_decref(root);
    if (rc == 0)
        rc = build_canonical(out, err);
    if (rc != 0)
        saga_spec_free(out);
    return rc;
}

int
saga_spec_parse(saga_spec *out, const char *json, size_t len, const saga_spec_defaults *d,
                dbao_err *err)
{
    saga_spec_defaults none = {.timeout_ms = 30000,
                               .call_timeout_ms = 3000,
                               .retry_initial_ms = 100,
                               .retry_max_ms = 5000,
                               .max_attempts = 6};
    return parse_common(out, json, len, d != NULL ? d : &none, false, err);
}

int
saga_spec_from_canonical(saga_spec *out, const char *gid, const char *json, size_t len,
                         dbao_err *err)
{
    int rc = parse_common(out, json, len, NULL, true, err);
    if (rc == 0)
        snprintf(out->gid, sizeof out->gid, "%s", gid);
    return rc;
}
