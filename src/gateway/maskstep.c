/* maskstep.c: the gateway step that masks JSON response bodies (maskstep.h).
 *
 * Per request, on a route with sec.mask on:
 *   on_request        the client's Accept-Encoding is removed from the upstream request, so
 *                     that the upstream answers with an identity (readable) body;
 *   on_response_head  for a 2xx answer that may have a body (not HEAD, 204, 304), the step
 *                     takes a per-request state from its worker's pool, resets its
 *                     mask_json_stream with the principal's roles (no principal: no roles, the
 *                     most masked view) and asks for the body (gw_ctx_filter_body: the proxy
 *                     then drops the upstream Content-Length and sends the answer chunked);
 *   on_response_body  the first non-blank byte decides:
 *                       '{' or '['  JSON: fed to the stream, the masked output emitted as it
 *                                   comes; invalid JSON aborts the response;
 *                       a byte that no text starts with (a NUL or other control byte, the
 *                       gzip or zstd magic): an encoded or binary body on a masked route
 *                                   cannot be inspected: aborted (fail closed);
 *                       anything else (text, HTML, CSV, a bare JSON scalar): passed unmasked
 *                                   (a documented limitation: only JSON containers are masked;
 *                                   text bodies are not scanned);
 *                     over sec.mask_body_max input bytes: with mask_over_pass (an explicit
 *                     operator choice) the stream is released and the rest passes unmasked;
 *                     otherwise the response is aborted;
 *   on_log            the state goes back to the pool.
 *
 * "Aborted" means the step returns an error to the proxy, which closes the client connection
 * without the final chunk: the status line and headers (2xx) have already been sent when the
 * body arrives, so the client sees a truncated, unterminated chunked body, never unmasked
 * bytes of a document the masker could not follow. The audit step learns why through
 * gw_maskstep_error.
 *
 * A Content-Encoding other than identity aborts the response at its first body byte (the
 * upstream was asked for identity; brotli has no magic number to sniff). The content type is
 * not consulted: deciding by the body's first byte is stricter for JSON (a JSON body labelled
 * text/plain is masked too). Text bodies are not scanned (a limitation: mask_apply_text could
 * do it line by line).
 *
 * Pool: one free list per worker (gw_ctx_worker, up to POOL_WORKERS; beyond that states are
 * allocated per request), touched only by that worker's thread; at most POOL_MAX idle states
 * are kept per worker. A state holds a stream (its buffers grow to the largest token seen, at
 * most 64 KiB for a string) and an output scratch buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "maskstep.h"

#define POOL_WORKERS 256
#define POOL_MAX     256
#define SNIFF_MAX    4096
#define DEFAULT_MAX  ((size_t) 1 << 20)

enum { M_SNIFF = 0, M_JSON, M_PASS, M_FAILED, M_DONE };

typedef struct mreq {
    struct mreq *next; /* free list */
    mask_json_stream *js;
    dbao_buf out;   /* the stream's output for one piece, reused */
    dbao_buf blank; /* leading white space while sniffing */
    size_t seen;    /* input bytes fed to the stream */
    size_t limit;
    bool over_pass;
    bool over;
    bool used; /* a masked route's 2xx answer: the body was filtered */
    bool json; /* the body was taken for JSON and fed to the stream */
    uint8_t mode;
    const char *error;
    mask_stats st;
} mreq;

typedef struct pool {
    mreq *free;
    unsigned num_free;
} pool;

typedef struct mstep {
    const mask_policy *p;
    size_t index;
    pool pools[POOL_WORKERS]; /* pools[w]: worker w's thread only */
} mstep;

static void
mreq_free(mreq *r)
{
    if (r == NULL)
        return;
    mask_json_stream_free(r->js);
    dbao_buf_free_secret(&r->out);
    dbao_buf_free_secret(&r->blank);
    dbao_free(r);
}

static mreq *
mreq_get(mstep *m, unsigned worker)
{
    mreq *r = NULL;
    if (worker < POOL_WORKERS && m->pools[worker].free != NULL) {
        r = m->pools[worker].free;
        m->pools[worker].free = r->next;
        m->pools[worker].num_free--;
    } else {
        r = dbao_calloc(1, sizeof(*r));
        if (r == NULL)
            return NULL;
        if (mask_json_stream_new(&r->js, m->p, NULL, 0, NULL) != 0) {
            dbao_free(r);
            return NULL;
        }
    }
    r->next = NULL;
    return r;
}

static void
mreq_put(mstep *m, unsigned worker, mreq *r)
{
    /* the output scratch held masked bytes only, the blank buffer white space; the stream
     * wipes what it held back at its next reset: clear the sizes here */
    dbao_buf_reset(&r->out);
    dbao_buf_reset(&r->blank);
    mask_json_stream_reset(r->js, NULL, 0);
    if (worker < POOL_WORKERS && m->pools[worker].num_free < POOL_MAX) {
        r->next = m->pools[worker].free;
        m->pools[worker].free = r;
        m->pools[worker].num_free++;
        return;
    }
    mreq_free(r);
}

static int
on_request(gw_ctx *ctx, void *arg)
{
    (void) arg;
    const gw_route *rt = gw_ctx_route(ctx);
    if (rt != NULL && rt->sec.mask) {
        /* an encoded body cannot be inspected: ask for identity (a failure here only means
         * the header list is full; an encoded answer is then aborted by the body check) */
        (void) gw_ctx_remove_upstream_header(ctx, "Accept-Encoding", false);
    }
    return GW_NEXT;
}

static void
on_response_head(gw_ctx *ctx, int status, void *arg)
{
    mstep *m = arg;
    const gw_route *rt = gw_ctx_route(ctx);
    if (rt == NULL || !rt->sec.mask || status < 200 || status > 299 || status == 204)
        return;
    const char *method = gw_ctx_method(ctx);
    if (method != NULL && strcmp(method, "HEAD") == 0)
        return;
    mreq *r = gw_ctx_user(ctx, m->index);
    if (r == NULL) {
        r = mreq_get(m, gw_ctx_worker(ctx));
        if (r == NULL) {
            /* no memory for the masker: the body must not pass unmasked. Filter it with no
             * state: on_response_body aborts. */
            gw_ctx_filter_body(ctx);
            return;
        }
        gw_ctx_set_user(ctx, m->index, r);
    }
    const gw_principal *pr = gw_ctx_principal(ctx);
    mask_json_stream_reset(r->js, pr ? pr->roles : NULL, pr ? pr->num_roles : 0);
    dbao_buf_reset(&r->out);
    dbao_buf_reset(&r->blank);
    r->seen = 0;
    r->limit = rt->sec.mask_body_max ? rt->sec.mask_body_max : DEFAULT_MAX;
    r->over_pass = rt->sec.mask_over_pass;
    r->over = false;
    r->used = true;
    r->json = false;
    r->mode = M_SNIFF;
    r->error = NULL;
    memset(&r->st, 0, sizeof(r->st));
    /* a coded body (gzip, br, ...) cannot be inspected: refused by name, whatever its first
     * bytes look like (brotli has no magic number) */
    const char *ce = gw_ctx_response_header(ctx, "content-encoding");
    if (ce != NULL && strcasecmp(ce, "identity") != 0) {
        r->mode = M_FAILED;
        r->error = "encoded body";
    }
    gw_ctx_filter_body(ctx);
}

static int
emit_out(gw_ctx *ctx, mreq *r)
{
    int rc = 0;
    if (r->out.len > 0)
        rc = gw_ctx_emit(ctx, r->out.data, r->out.len);
    dbao_buf_reset(&r->out);
    return rc;
}

static int
fail(mreq *r, const char *why, int rc)
{
    r->mode = M_FAILED;
    r->error = why;
    mask_json_stream_stats(r->js, &r->st);
    return rc != 0 ? rc : DBAO_EFORMAT;
}

/* json_piece: data[0..len) to the stream under the size limit */
static int
json_piece(gw_ctx *ctx, mreq *r, const uint8_t *data, size_t len)
{
    size_t room = r->limit - r->seen;
    size_t n = len < room ? len : room;
    int rc = mask_json_stream_feed(r->js, data, n, &r->out, NULL);
    r->seen += n;
    if (rc != 0)
        return fail(r, rc == DBAO_EFORMAT ? "not json" : "masking failed", rc);
    if (n < len) {
        r->over = true;
        if (!r->over_pass) {
            /* what was masked so far may go; the rest may not */
            (void) emit_out(ctx, r);
            return fail(r, "body over the masking limit", DBAO_ERANGE);
        }
        mask_json_stream_stats(r->js, &r->st);
        if (mask_json_stream_release(r->js, &r->out) != 0)
            return fail(r, "masking failed", DBAO_ENOMEM);
        r->mode = M_PASS;
        if ((rc = emit_out(ctx, r)) != 0)
            return rc;
        return gw_ctx_emit(ctx, data + n, len - n);
    }
    return emit_out(ctx, r);
}

static bool
is_blank(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* binary_start: data[i] starts no text body: a control byte (gzip's 1f 8b among them) or
 * zstd's magic 28 b5 2f fd */
static bool
binary_start(const uint8_t *data, size_t len, size_t i)
{
    uint8_t c = data[i];
    return c < 0x20 || c == 0x7f || (c == 0x28 && i + 1 < len && data[i + 1] == 0xb5);
}

static int
on_response_body(gw_ctx *ctx, const uint8_t *data, size_t len, bool last, void *arg)
{
    mstep *m = arg;
    mreq *r = gw_ctx_user(ctx, m->index);
    int rc = 0;
    if (r == NULL)
        return DBAO_ENOMEM; /* see on_response_head: fail closed */
    switch (r->mode) {
    case M_SNIFF: {
        size_t i = 0;
        while (i < len && is_blank(data[i]))
            i++;
        if (i == len && !last) {
            if (r->blank.len + len > SNIFF_MAX) {
                r->mode = M_PASS; /* a body of blanks: text */
                rc = gw_ctx_emit(ctx, r->blank.data, r->blank.len);
                dbao_buf_reset(&r->blank);
                return rc != 0 ? rc : gw_ctx_emit(ctx, data, len);
            }
            return dbao_buf_put(&r->blank, data, len) == 0 ? 0
                                                           : fail(r, "masking failed", DBAO_ENOMEM);
        }
        if (i == len) { /* last, and blank (or empty): nothing to mask */
            r->mode = M_DONE;
            rc = gw_ctx_emit(ctx, r->blank.data, r->blank.len);
            return rc != 0 ? rc : gw_ctx_emit(ctx, data, len);
        }
        uint8_t c = data[i];
        if (c == '{' || c == '[') {
            r->mode = M_JSON;
            r->json = true;
            dbao_buf_reset(&r->blank); /* white space: the compact output drops it anyway */
            if ((rc = json_piece(ctx, r, data, len)) != 0 || r->mode != M_JSON)
                return rc;
            break;
        }
        if (binary_start(data, len, i))
            return fail(r, "encoded body", DBAO_EFORMAT);
        r->mode = M_PASS;
        rc = gw_ctx_emit(ctx, r->blank.data, r->blank.len);
        dbao_buf_reset(&r->blank);
        return rc != 0 ? rc : gw_ctx_emit(ctx, data, len);
    }
    case M_JSON:
        if ((rc = json_piece(ctx, r, data, len)) != 0 || r->mode != M_JSON)
            return rc;
        break;
    case M_PASS:
        return gw_ctx_emit(ctx, data, len);
    case M_DONE:
        return len == 0 ? 0 : gw_ctx_emit(ctx, data, len);
    default:
        return DBAO_EFORMAT; /* failed before: nothing more goes out */
    }
    if (last) {
        rc = mask_json_stream_finish(r->js, &r->out, NULL);
        mask_json_stream_stats(r->js, &r->st);
        if (rc != 0)
            return fail(r, rc == DBAO_EFORMAT ? "not json" : "masking failed", rc);
        r->mode = M_DONE;
        return emit_out(ctx, r);
    }
    return 0;
}

static void
on_log(gw_ctx *ctx, void *arg)
{
    mstep *m = arg;
    mreq *r = gw_ctx_user(ctx, m->index);
    if (r == NULL)
        return;
    gw_ctx_set_user(ctx, m->index, NULL);
    mreq_put(m, gw_ctx_worker(ctx), r);
}

int
gw_maskstep_new(gw_step *out, const mask_policy *p, size_t step_index, dbao_err *err)
{
    if (out == NULL || p == NULL || step_index >= 8)
        return dbao_err_set(err, DBAO_EINVAL, "mask step: bad argument (step index %zu)",
                            step_index);
    memset(out, 0, sizeof(*out));
    mstep *m = dbao_calloc(1, sizeof(*m));
    if (m == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    m->p = p;
    m->index = step_index;
    out->name = "mask";
    out->on_request = on_request;
    out->on_response_head = on_response_head;
    out->on_response_body = on_response_body;
    out->on_log = on_log;
    out->arg = m;
    return 0;
}

void
gw_maskstep_free(gw_step *step)
{
    if (step == NULL || step->arg == NULL)
        return;
    mstep *m = step->arg;
    for (size_t w = 0; w < POOL_WORKERS; w++) {
        mreq *r = m->pools[w].free;
        while (r != NULL) {
            mreq *next = r->next;
            mreq_free(r);
            r = next;
        }
    }
    dbao_free(m);
    memset(step, 0, sizeof(*step));
}

bool
gw_maskstep_result(const gw_ctx *ctx, size_t step_index, mask_stats *st, bool *over_limit)
{
    const mreq *r = ctx ? gw_ctx_user(ctx, step_index) : NULL;
    if (st != NULL)
        memset(st, 0, sizeof(*st));
    if (over_limit != NULL)
        *over_limit = false;
    if (r == NULL || !r->used || (!r->json && r->error == NULL))
        return false;
    if (st != NULL) {
        if (r->mode == M_JSON || r->mode == M_DONE)
            mask_json_stream_stats(r->js, st);
        else
            *st = r->st;
    }
    if (over_limit != NULL)
        *over_limit = r->over;
    return true;
}

const char *
gw_maskstep_error(const gw_ctx *ctx, size_t step_index)
{
    const mreq *r = ctx ? gw_ctx_user(ctx, step_index) : NULL;
    return r != NULL && r->used ? r->error : NULL;
}
