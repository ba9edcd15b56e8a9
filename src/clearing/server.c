/* server.c: the clearing daemon (`dengbao clearing --config clearing.yaml`).
 *
 * What: intake over two faces (the binary protocol of docs/clearing-protocol.md on TCP, and
 * HTTP/JSON through net.h), routing of each event to the shard that owns its account, one
 * writer thread per shard that journals, applies and audits, and the answers back to the
 * clients strictly after the journal and the audit records are durable. docs/clearing-ops.md
 * is the operator's view of the same.
 *
 * Threads and queues (libraries: libuv for the binary protocol's sockets and cross-thread
 * wake-ups, net.h for HTTP, ring.h for the queues; the glue is written here because it is the
 * daemon's own logic):
 *   IO threads (io_threads, each its own uv_loop and its own SO_REUSEPORT listener) read
 *     frames, decode them with clr_wire_decode, and push each event to its shard's inbound
 *     ring_mpsc (several producers: every IO thread and every HTTP worker). The element carries
 *     where the answer goes: (connection, per-connection sequence number, IO thread).
 *   HTTP workers (net.h) decode POST /v1/events with clr_json_decode and push the same way,
 *     with the net_request as the destination; queries (accounts, positions, totals) travel
 *     through the same ring so that only the shard thread ever touches its engine.
 *   Shard threads pop a batch (ring_mpsc_pop_wait), clr_journal_append + clr_journal_sync the
 *     events (group commit: one fdatasync per batch), clr_engine_apply each, encode one audit
 *     record per fund movement and submit them in one audit_log_submit, wait for the audit
 *     log's `done` (durable), and only then answer: binary answers through a ring_spsc per
 *     (shard, IO thread) and uv_async_send (which coalesces), HTTP answers with
 *     net_request_respond (thread-safe).
 *   EOD (account 0) goes to every shard; a small broadcast record counts the shard answers
 *   down (atomic, acq_rel) and the last shard delivers the combined answer.
 *
 * Order: answers on one binary connection leave in request order. Each frame gets the next
 * per-connection sequence number; answers land in a window indexed by it and are written out
 * only from the oldest unanswered one on (frames of one connection may go to different
 * shards). The window grows up to CONN_WIN_MAX; a full window, or a full inbound ring, stops
 * reading from that socket (uv_read_stop) until answers drain or a 1 ms retry timer finds
 * room: nothing is buffered without bound.
 *
 * Failure, fail closed: if the journal cannot be written or synced, or the audit log fails,
 * the shard stops: the events of that batch and every later one are answered with an error
 * (binary: ERROR frame code 5 then close; HTTP: 503), /healthz says 503, and the daemon keeps
 * refusing until restarted. An event journaled in a batch whose audit failed is in the journal
 * (replay applies it) but was never acknowledged.
 *
 * Invariants: an engine and a journal are touched only by their shard thread (after start);
 * a connection only by its IO thread; a connection is freed only once it is closed and no
 * event of it is in flight in any shard (so an answer never points at freed memory).
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "dengbao/net.h"
#include "server.h"

enum {
    MSG_TCP = 1,       /* an event from a binary connection */
    MSG_HTTP = 2,      /* an event from POST /v1/events */
    MSG_Q_ACCOUNT = 3, /* GET /v1/accounts/{id} */
    MSG_Q_POSITION = 4,
    MSG_Q_TOTALS = 5,
};

/* ERROR frame codes (docs/clearing-protocol.md: the negated DBAO code): a bad frame carries
 * the decoder's (1001 malformed, 1005 unsupported version); a shard that failed closed answers
 * 5 (EIO: the journal or the audit log cannot be written; the event is not acknowledged). */
enum { WERR_UNAVAILABLE = 5 };

typedef struct bcast bcast;

typedef struct inmsg {
    clr_event ev;  /* the event (seq, ts set by the journal) or the query's account/security */
    void *dest;    /* conn * (MSG_TCP) or net_request * (others) */
    bcast *bc;     /* EOD broadcast and totals: shared answer */
    uint64_t cseq; /* per-connection sequence (MSG_TCP) */
    uint32_t io;   /* IO thread of the connection */
    uint8_t kind;
} inmsg;

typedef struct outmsg {
    void *conn;
    uint64_t cseq;
    clr_result res;
    uint16_t ecode; /* 0: res is the answer; else a wire error code */
} outmsg;

struct bcast {
    atomic_uint left; /* shards still to answer; the one that brings it to 0 delivers */
    unsigned n;
    uint8_t kind;
    void *dest;
    uint64_t cseq;
    uint32_t io;
    clr_result res[CLR_SHARDS_MAX];
    clr_totals tot[CLR_SHARDS_MAX];
    uint16_t ecode[CLR_SHARDS_MAX];
};

typedef struct io_thread io_thread;
typedef struct shard shard;

struct shard {
    clr_server *s;
    unsigned idx;
    ring_mpsc *in;
    ring_spsc *out[CLR_IO_THREADS_MAX];
    bool dirty[CLR_IO_THREADS_MAX];
    clr_engine *eng;
    clr_journal *jnl;
    pthread_t th;
    bool started;
    inmsg *batch;
    clr_event *evs;
    size_t *evidx;
    clr_result *res;
    /* audit batch */
    dbao_buf adata;
    uint32_t *alens;
    size_t an, acap;
    int abuild_rc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool adone;
    audit_log_req areq;
    uint64_t last_snap;
    uint64_t audited;   /* recovery: the last seq with a movement record in the audit log */
    uint64_t audited_n; /* recovery: how many records of that seq it holds */
    bool recovering;    /* recovery: movements re-written are marked "recovered" */
    uint64_t recovered; /* recovery: how many */
    /* failed (fail closed): written by the shard thread, read by any (relaxed is enough: it
       is a flag with no data published through it; the answers carry their own errors) */
    atomic_int failed;
    atomic_uint_fast64_t m_events, m_rejects, m_batches, m_moves, m_seq, m_snaps;
};

typedef struct conn conn;

struct io_thread {
    clr_server *s;
    unsigned idx;
    uv_loop_t loop;
    uv_tcp_t listener;
    int fd;
    uv_async_t wake;
    uv_timer_t retry;
    pthread_t th;
    bool started;
    conn *conns;   /* all open connections (for the stop) */
    conn *blocked; /* connections waiting for ring or window room */
    conn *dirty;   /* connections with new answers to write (on_wake) */
    outmsg *obuf;
    uint8_t rbuf[65536];
    bool rbuf_busy;
    bool listening;
    /* control: 0 run, 1 stop reading and accepting, 2 close everything and end the loop.
       Written by the controlling thread, read by the loop after the uv_async wake-up
       (release/acquire: the loop then sees everything written before the store) */
    atomic_int ctl;
};

struct clr_server {
    const clr_config *cfg;
    audit_log *log;
    unsigned nshards, nio;
    shard sh[CLR_SHARDS_MAX];
    io_thread *io[CLR_IO_THREADS_MAX];
    net_server *http;
    uint16_t tcp_port, http_port;
    atomic_uint nconns;
    atomic_int failed;
    atomic_uint_fast64_t m_bad_frames, m_http_bad;
};

/* ---- connections ------------------------------------------------------------------------ */

typedef struct slot {
    uint64_t req_id;
    clr_result res;
    uint16_t ecode;
    uint8_t ready;
} slot;

#define CONN_WIN_MIN  8
#define CONN_WIN_MAX  1024
#define CONN_WBUF_MAX ((size_t) 1 << 20) /* stop reading while more is queued for writing */

struct conn {
    uv_tcp_t h;
    io_thread *io;
    conn *next, *prev; /* io->conns */
    conn *bnext;       /* io->blocked */
    bool in_blocked;
    conn *dnext; /* io->dirty */
    bool in_dirty;
    slot *win;
    size_t wcap;       /* power of two */
    uint64_t next_seq; /* next sequence to assign */
    uint64_t next_out; /* oldest not yet written */
    uint64_t inflight; /* dispatched to shards, not answered */
    dbao_buf pend;     /* bytes received and not yet dispatched */
    bool reading, closing, closed, fatal, done;
    bool eof; /* the client half-closed: answer what is in flight, then close */
    uint16_t fatal_code;
    char fatal_msg[DBAO_ERR_MSG_MAX];
};

typedef struct wreq {
    uv_write_t w;
    uv_buf_t b;
    conn *c;
} wreq;

static void on_retry(uv_timer_t *t);
static void conn_process(conn *c);

static void
conn_free_if_done(conn *c)
{
    if (c->closed && c->inflight == 0) {
        dbao_buf_free(&c->pend);
        free(c->win);
        free(c);
    }
}

static void
on_close(uv_handle_t *h)
{
    conn *c = h->data;
    io_thread *io = c->io;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        io->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->in_blocked) {
        conn **pp = &io->blocked;
        while (*pp != NULL && *pp != c)
            pp = &(*pp)->bnext;
        if (*pp == c)
            *pp = c->bnext;
        c->in_blocked = false;
    }
    atomic_fetch_sub_explicit(&io->s->nconns, 1, memory_order_relaxed);
    c->closed = true;
    conn_free_if_done(c);
}

static void
conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->reading)
        uv_read_stop((uv_stream_t *) &c->h);
    c->reading = false;
    uv_close((uv_handle_t *) &c->h, on_close);
}

static void
on_write(uv_write_t *w, int status)
{
    wreq *r = (wreq *) w;
    (void) status;
    free(r->b.base);
    free(r);
}

static void
conn_after_write_close(uv_write_t *w, int status)
{
    wreq *r = (wreq *) w;
    conn *c = r->c;
    on_write(w, status);
    conn_close(c);
}

/* Writes every answer that is ready from the oldest unanswered one on, in order; after a bad
 * frame (c->fatal) the ERROR frame follows the answers of every frame before it, then close. */
static void
conn_flush(conn *c)
{
    if (c->closing || c->done)
        return;
    size_t n = 0;
    uint64_t s = c->next_out;
    while (s < c->next_seq && c->win[s & (c->wcap - 1)].ready)
        s++, n++;
    bool fatal_now = c->fatal && s == c->next_seq;
    if (n == 0 && !fatal_now)
        return;
    /* The answers are encoded on the stack when they fit (the common case: a few per wake-up)
       and written with uv_try_write; only what the socket does not take at once is copied to
       the heap and queued with uv_write (this saved two malloc/free and a deferred callback
       per flush). uv_try_write writes nothing while earlier writes are queued, so the order of
       the bytes on the connection is kept. */
    uint8_t sbuf[16 * CLR_WIRE_FRAME_MAX];
    size_t need = (n + 1) * CLR_WIRE_FRAME_MAX;
    uint8_t *buf = need <= sizeof sbuf ? sbuf : malloc(need);
    if (buf == NULL) {
        conn_close(c);
        return;
    }
    size_t len = 0;
    bool close_after = false;
    for (; c->next_out < s; c->next_out++) {
        slot *sl = &c->win[c->next_out & (c->wcap - 1)];
        sl->ready = 0;
        if (sl->ecode == 0) {
            len += clr_wire_encode_result(buf + len, sl->req_id, &sl->res);
            continue;
        }
        len += clr_wire_encode_error(buf + len, sl->req_id, sl->ecode,
                                     "the clearing shard has failed closed (journal or audit "
                                     "log); the event is not acknowledged");
        close_after = true;
        c->next_out++;
        break;
    }
    if (!close_after && c->eof && c->next_out == c->next_seq)
        close_after = true;
    if (!close_after && fatal_now) {
        len += clr_wire_encode_error(buf + len, 0, c->fatal_code, c->fatal_msg);
        close_after = true;
    }
    if (close_after) {
        c->done = true; /* nothing more is written; answers still in flight are dropped */
        if (c->reading) {
            uv_read_stop((uv_stream_t *) &c->h);
            c->reading = false;
        }
    }
    size_t off = 0;
    if (!close_after && uv_stream_get_write_queue_size((uv_stream_t *) &c->h) == 0) {
        uv_buf_t b = uv_buf_init((char *) buf, (unsigned) len);
        int w = uv_try_write((uv_stream_t *) &c->h, &b, 1);
        if (w > 0)
            off = (size_t) w;
        /* an error (not UV_EAGAIN) is left to uv_write below, which reports it as before */
        if (off == len) {
            if (buf != sbuf)
                free(buf);
            return;
        }
    }
    if (buf == sbuf || off != 0) {
        uint8_t *h = malloc(len - off);
        if (h == NULL) {
            if (buf != sbuf)
                free(buf);
            conn_close(c);
            return;
        }
        memcpy(h, buf + off, len - off);
        if (buf != sbuf)
            free(buf);
        buf = h;
        len -= off;
    }
    wreq *r = malloc(sizeof *r);
    if (r == NULL) {
        free(buf);
        conn_close(c);
        return;
    }
    r->b = uv_buf_init((char *) buf, (unsigned) len);
    r->c = c;
    if (uv_write(&r->w, (uv_stream_t *) &c->h, &r->b, 1,
                 close_after ? conn_after_write_close : on_write) != 0) {
        free(buf);
        free(r);
        conn_close(c);
    }
}

static void
on_shutdown(uv_shutdown_t *sd, int status)
{
    conn *c = sd->data;
    (void) status;
    free(sd);
    conn_close(c);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    conn *c = h->data;
    (void) suggested;
    if (c->io->rbuf_busy) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    c->io->rbuf_busy = true;
    *b = uv_buf_init((char *) c->io->rbuf, sizeof c->io->rbuf);
}

static void
conn_block(conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *) &c->h);
        c->reading = false;
    }
    if (!c->in_blocked) {
        c->in_blocked = true;
        c->bnext = c->io->blocked;
        c->io->blocked = c;
        if (!uv_is_active((uv_handle_t *) &c->io->retry))
            uv_timer_start(&c->io->retry, on_retry, 1, 1);
    }
}

static int
conn_grow(conn *c)
{
    size_t ncap = c->wcap * 2;
    slot *nw = calloc(ncap, sizeof *nw);
    if (nw == NULL)
        return DBAO_ENOMEM;
    for (uint64_t s = c->next_out; s < c->next_seq; s++)
        nw[s & (ncap - 1)] = c->win[s & (c->wcap - 1)];
    free(c->win);
    c->win = nw;
    c->wcap = ncap;
    return 0;
}

/* Dispatches every complete frame of data[0..len); returns the bytes consumed. Sets
 * *stalled when the ring or the window is full. */
static size_t
conn_dispatch(conn *c, const uint8_t *data, size_t len, bool *stalled)
{
    clr_server *s = c->io->s;
    size_t off = 0;
    *stalled = false;
    while (off < len && !c->fatal && !c->closing) {
        if (atomic_load_explicit(&c->io->ctl, memory_order_acquire) != 0) {
            *stalled = true; /* stopping: no new intake */
            break;
        }
        inmsg m;
        memset(&m, 0, sizeof m);
        uint64_t rid = 0;
        dbao_err err;
        dbao_err_clear(&err);
        int n = clr_wire_decode(data + off, len - off, &m.ev, &rid, &err);
        if (n == 0)
            break;
        if (n < 0) {
            atomic_fetch_add_explicit(&s->m_bad_frames, 1, memory_order_relaxed);
            c->fatal = true;
            c->fatal_code = (uint16_t) -n;
            snprintf(c->fatal_msg, sizeof c->fatal_msg, "%s", err.msg[0] ? err.msg : "bad frame");
            off = len;
            break;
        }
        if (c->next_seq - c->next_out >= c->wcap) {
            if (c->wcap >= CONN_WIN_MAX || conn_grow(c) != 0) {
                *stalled = true;
                break;
            }
        }
        m.kind = MSG_TCP;
        m.dest = c;
        m.cseq = c->next_seq;
        m.io = c->io->idx;
        bool ok;
        if (m.ev.type == CLR_EV_EOD) {
            bcast *bc = calloc(1, sizeof *bc);
            if (bc == NULL) {
                *stalled = true;
                break;
            }
            bc->n = s->nshards;
            bc->kind = MSG_TCP;
            bc->dest = c;
            bc->cseq = c->next_seq;
            bc->io = c->io->idx;
            atomic_init(&bc->left, s->nshards);
            m.bc = bc;
            /* an EOD must reach every shard: wait for room (briefly blocks this loop). A
               ring closed meanwhile (stop) answers for its shard with an error; if every
               shard that got it has already answered, this thread completes the answer. */
            unsigned missing = 0;
            for (unsigned i = 0; i < s->nshards; i++) {
                if (ring_mpsc_push_wait(s->sh[i].in, &m, 1, -1) != 1) {
                    bc->ecode[i] = WERR_UNAVAILABLE;
                    missing++;
                }
            }
            ok = true;
            /* acq_rel: pairs with the shards' updates of bc (see bcast_part) */
            if (missing > 0 &&
                atomic_fetch_sub_explicit(&bc->left, missing, memory_order_acq_rel) == missing) {
                slot *sl = &c->win[c->next_seq & (c->wcap - 1)];
                sl->req_id = rid;
                sl->ecode = WERR_UNAVAILABLE;
                sl->ready = 1;
                free(bc);
                c->next_seq++;
                off += (size_t) n;
                continue;
            }
        } else {
            unsigned k = clr_route_shard(m.ev.account, s->nshards);
            ok = ring_mpsc_push(s->sh[k].in, &m, 1) == 1;
        }
        if (!ok) {
            *stalled = true;
            break;
        }
        slot *sl = &c->win[c->next_seq & (c->wcap - 1)];
        sl->req_id = rid;
        sl->ready = 0;
        c->next_seq++;
        c->inflight++;
        off += (size_t) n;
    }
    return off;
}

static void
conn_process(conn *c)
{
    bool stalled = false;
    if (c->pend.len > 0) {
        size_t used = conn_dispatch(c, (const uint8_t *) c->pend.data, c->pend.len, &stalled);
        memmove(c->pend.data, c->pend.data + used, c->pend.len - used);
        c->pend.len -= used;
    }
    if (c->fatal) {
        c->pend.len = 0;
        conn_flush(c);
        return;
    }
    bool backlog = uv_stream_get_write_queue_size((uv_stream_t *) &c->h) > CONN_WBUF_MAX;
    if (stalled || backlog || c->pend.len >= CLR_WIRE_FRAME_MAX) {
        conn_block(c);
    } else if (!c->reading && !c->closing && !c->eof &&
               atomic_load_explicit(&c->io->ctl, memory_order_acquire) == 0) {
        if (uv_read_start((uv_stream_t *) &c->h, on_alloc, NULL) == 0)
            c->reading = true;
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void
on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    conn *c = st->data;
    io_thread *io = c->io;
    if (b->base == (char *) io->rbuf)
        io->rbuf_busy = false;
    if (nread < 0) {
        if (nread == UV_EOF && !c->closing && !c->done && c->next_out < c->next_seq) {
            /* half-close: the answers in flight are still written, then the connection
               closes (conn_flush) */
            c->eof = true;
            uv_read_stop(st);
            c->reading = false;
            c->pend.len = 0;
        } else if (nread != UV_ENOBUFS) {
            /* EOF or error: answers still in flight are dropped when they arrive */
            conn_close(c);
        }
        return;
    }
    if (nread == 0 || c->done || c->closing)
        return;
    bool stalled = false;
    size_t used = 0;
    if (c->pend.len == 0) {
        used = conn_dispatch(c, (const uint8_t *) b->base, (size_t) nread, &stalled);
        if (!c->fatal && used < (size_t) nread &&
            dbao_buf_put(&c->pend, b->base + used, (size_t) nread - used) != 0) {
            conn_close(c);
            return;
        }
    } else {
        if (dbao_buf_put(&c->pend, b->base, (size_t) nread) != 0) {
            conn_close(c);
            return;
        }
    }
    conn_process(c);
}

static void
on_retry(uv_timer_t *t)
{
    io_thread *io = t->data;
    conn *list = io->blocked;
    io->blocked = NULL;
    while (list != NULL) {
        conn *c = list;
        list = c->bnext;
        c->in_blocked = false;
        if (!c->closing)
            conn_process(c);
    }
    if (io->blocked == NULL)
        uv_timer_stop(&io->retry);
}

static void
on_connection(uv_stream_t *srv, int status)
{
    io_thread *io = srv->data;
    if (status < 0)
        return;
    conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->io = io;
    c->wcap = CONN_WIN_MIN;
    c->win = calloc(c->wcap, sizeof *c->win);
    uv_tcp_init(&io->loop, &c->h);
    c->h.data = c;
    c->next = io->conns;
    if (io->conns != NULL)
        io->conns->prev = c;
    io->conns = c;
    atomic_fetch_add_explicit(&io->s->nconns, 1, memory_order_relaxed);
    if (c->win == NULL || uv_accept(srv, (uv_stream_t *) &c->h) != 0) {
        conn_close(c);
        return;
    }
    if (atomic_load_explicit(&io->s->nconns, memory_order_relaxed) > io->s->cfg->max_connections) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->h, 1);
    if (uv_read_start((uv_stream_t *) &c->h, on_alloc, on_read) == 0)
        c->reading = true;
    else
        conn_close(c);
}

/* Answers from the shards: drain every (shard, this IO) ring, fill the windows, flush. */
static void
on_wake(uv_async_t *a)
{
    io_thread *io = a->data;
    clr_server *s = io->s;
    for (unsigned k = 0; k < s->nshards; k++) {
        size_t n;
        while ((n = ring_spsc_pop(s->sh[k].out[io->idx], io->obuf, 1024)) > 0) {
            for (size_t i = 0; i < n; i++) {
                outmsg *o = &io->obuf[i];
                conn *c = o->conn;
                c->inflight--;
                /* the connection is freed only at its last answer in flight: later entries of
                   this batch cannot point at it */
                if (c->closing || c->done || o->cseq < c->next_out || o->cseq >= c->next_seq) {
                    conn_free_if_done(c);
                    continue;
                }
                slot *sl = &c->win[o->cseq & (c->wcap - 1)];
                sl->res = o->res;
                sl->ecode = o->ecode;
                sl->ready = 1;
                if (!c->in_dirty) {
                    c->in_dirty = true;
                    c->dnext = io->dirty;
                    io->dirty = c;
                }
            }
        }
    }
    /* flush the connections that got answers; a connection on the dirty list is not freed
       (its answers were counted in flight until just now, and close callbacks run later) */
    conn *list = io->dirty;
    io->dirty = NULL;
    while (list != NULL) {
        conn *c = list;
        list = c->dnext;
        c->in_dirty = false;
        if (c->closing || c->done)
            continue;
        if (c->next_out < c->next_seq || c->fatal)
            conn_flush(c);
        if (!c->closing && !c->done && !c->reading && !c->in_blocked && !c->fatal && !c->eof &&
            atomic_load_explicit(&io->ctl, memory_order_acquire) == 0)
            conn_process(c);
    }
    int ctl = atomic_load_explicit(&io->ctl, memory_order_acquire);
    if (ctl >= 1 && io->listening) {
        uv_close((uv_handle_t *) &io->listener, NULL);
        io->listening = false;
        for (conn *c = io->conns; c != NULL; c = c->next)
            if (c->reading) {
                uv_read_stop((uv_stream_t *) &c->h);
                c->reading = false;
            }
        uv_timer_stop(&io->retry);
    }
    if (ctl >= 2) {
        for (conn *c = io->conns; c != NULL; c = c->next) {
            if (c->closing)
                continue;
            /* let queued answers reach the client: shut the write side down after them */
            uv_shutdown_t *sd = malloc(sizeof *sd);
            if (sd != NULL)
                sd->data = c;
            if (sd == NULL || uv_shutdown(sd, (uv_stream_t *) &c->h, on_shutdown) != 0) {
                free(sd);
                conn_close(c);
            } else {
                c->done = true;
            }
        }
        uv_close((uv_handle_t *) &io->retry, NULL);
        uv_close((uv_handle_t *) &io->wake, NULL);
    }
}

static void *
io_main(void *arg)
{
    io_thread *io = arg;
    uv_run(&io->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- HTTP face ---------------------------------------------------------------------------- */

static void respond_json(net_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
respond_json(net_request *req, int status, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t) n >= sizeof buf)
        n = (int) sizeof buf - 1;
    net_request_respond(req, status, "application/json", buf, (size_t) n);
}

/* JSON string content: the error messages of the codecs are ASCII; escape what JSON needs. */
static void
json_escape(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (; *in != '\0' && o + 7 < cap; in++) {
        unsigned char ch = (unsigned char) *in;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char) ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            out[o++] = '?';
        } else {
            out[o++] = (char) ch;
        }
    }
    out[o] = '\0';
}

static void
respond_result(net_request *req, const clr_result *res)
{
    char *body = NULL;
    size_t len = 0;
    if (clr_json_result(res, &body, &len, NULL) != 0) {
        respond_json(req, 500, "{\"error\":\"out of memory\"}");
        return;
    }
    net_request_respond(req, 200, "application/json", body, len);
    dbao_free(body);
}

static bool
push_http(clr_server *s, unsigned k, inmsg *m)
{
    return ring_mpsc_push_wait(s->sh[k].in, m, 1, (int64_t) 2000000000) == 1;
}

static bool
parse_u64(const char *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t) (p[i] - '0');
    }
    *out = v;
    return true;
}

static void
metrics(clr_server *s, net_request *req)
{
    dbao_buf b = {0};
    int rc = 0;
    static const char *const names[] = {"events", "rejects", "batches", "movements", "snapshots"};
    for (size_t n = 0; n < 5 && rc == 0; n++) {
        rc = dbao_buf_printf(&b, "# TYPE dengbao_clearing_%s_total counter\n", names[n]);
        for (unsigned k = 0; k < s->nshards && rc == 0; k++) {
            shard *sh = &s->sh[k];
            atomic_uint_fast64_t *v[] = {&sh->m_events, &sh->m_rejects, &sh->m_batches,
                                         &sh->m_moves, &sh->m_snaps};
            rc = dbao_buf_printf(&b, "dengbao_clearing_%s_total{shard=\"%u\"} %" PRIu64 "\n",
                                 names[n], k,
                                 (uint64_t) atomic_load_explicit(v[n], memory_order_relaxed));
        }
    }
    for (unsigned k = 0; k < s->nshards && rc == 0; k++)
        rc = dbao_buf_printf(&b,
                             "dengbao_clearing_seq{shard=\"%u\"} %" PRIu64
                             "\ndengbao_clearing_failed{shard=\"%u\"} %d\n",
                             k,
                             (uint64_t) atomic_load_explicit(&s->sh[k].m_seq, memory_order_relaxed),
                             k, atomic_load_explicit(&s->sh[k].failed, memory_order_relaxed) != 0);
    if (rc == 0)
        rc =
            dbao_buf_printf(&b,
                            "dengbao_clearing_connections %u\n"
                            "dengbao_clearing_bad_frames_total %" PRIu64 "\n"
                            "dengbao_clearing_http_bad_requests_total %" PRIu64 "\n",
                            atomic_load_explicit(&s->nconns, memory_order_relaxed),
                            (uint64_t) atomic_load_explicit(&s->m_bad_frames, memory_order_relaxed),
                            (uint64_t) atomic_load_explicit(&s->m_http_bad, memory_order_relaxed));
    if (rc != 0)
        net_request_respond(req, 500, NULL, NULL, 0);
    else
        net_request_respond(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    dbao_buf_free(&b);
}

static void
http_handler(net_request *req, void *arg)
{
    clr_server *s = arg;
    const char *m = net_request_method(req);
    const char *path = net_request_path(req);
    bool get = strcmp(m, "GET") == 0;
    if (strcmp(path, "/healthz") == 0) {
        if (!get)
            return respond_json(req, 405, "{\"error\":\"method not allowed\"}");
        if (clr_server_failed(s) != 0)
            return respond_json(req, 503, "{\"status\":\"failed\"}");
        return respond_json(req, 200, "{\"status\":\"ok\"}");
    }
    if (strcmp(path, "/metrics") == 0) {
        if (!get)
            return respond_json(req, 405, "{\"error\":\"method not allowed\"}");
        return metrics(s, req);
    }
    inmsg im;
    memset(&im, 0, sizeof im);
    im.dest = req;
    if (strcmp(path, "/v1/events") == 0) {
        if (strcmp(m, "POST") != 0)
            return respond_json(req, 405, "{\"error\":\"method not allowed\"}");
        size_t len;
        const uint8_t *body = net_request_body(req, &len);
        dbao_err err;
        dbao_err_clear(&err);
        if (clr_json_decode((const char *) body, len, &im.ev, &err) != 0) {
            atomic_fetch_add_explicit(&s->m_http_bad, 1, memory_order_relaxed);
            char esc[300];
            json_escape(esc, sizeof esc, err.msg[0] ? err.msg : "bad event");
            return respond_json(req, 400, "{\"error\":\"%s\"}", esc);
        }
        im.kind = MSG_HTTP;
        if (im.ev.type == CLR_EV_EOD) {
            bcast *bc = calloc(1, sizeof *bc);
            if (bc == NULL)
                return respond_json(req, 500, "{\"error\":\"out of memory\"}");
            bc->n = s->nshards;
            bc->kind = MSG_HTTP;
            bc->dest = req;
            atomic_init(&bc->left, s->nshards);
            im.bc = bc;
            for (unsigned k = 0; k < s->nshards; k++)
                ring_mpsc_push_wait(s->sh[k].in, &im, 1, -1);
            return;
        }
        unsigned k = clr_route_shard(im.ev.account, s->nshards);
        if (!push_http(s, k, &im))
            return respond_json(req, 503, "{\"error\":\"the shard is busy or stopping\"}");
        return;
    }
    if (!get)
        return respond_json(req, strncmp(path, "/v1/", 4) == 0 ? 405 : 404,
                            "{\"error\":\"not found or method not allowed\"}");
    if (strncmp(path, "/v1/accounts/", 13) == 0) {
        const char *p = path + 13;
        if (!parse_u64(p, strlen(p), &im.ev.account) || im.ev.account == 0)
            return respond_json(req, 400, "{\"error\":\"account must be a positive integer\"}");
        im.kind = MSG_Q_ACCOUNT;
    } else if (strncmp(path, "/v1/positions/", 14) == 0) {
        const char *p = path + 14;
        const char *sl = strchr(p, '/');
        uint64_t sec;
        if (sl == NULL || !parse_u64(p, (size_t) (sl - p), &im.ev.account) || im.ev.account == 0 ||
            strlen(sl + 1) != 6 || !parse_u64(sl + 1, 6, &sec))
            return respond_json(req, 400,
                                "{\"error\":\"the path is /v1/positions/{account}/{6-digit "
                                "security}\"}");
        im.ev.security = (uint32_t) sec;
        im.kind = MSG_Q_POSITION;
    } else if (strcmp(path, "/v1/totals") == 0) {
        bcast *bc = calloc(1, sizeof *bc);
        if (bc == NULL)
            return respond_json(req, 500, "{\"error\":\"out of memory\"}");
        bc->n = s->nshards;
        bc->kind = MSG_Q_TOTALS;
        bc->dest = req;
        atomic_init(&bc->left, s->nshards);
        im.bc = bc;
        im.kind = MSG_Q_TOTALS;
        for (unsigned k = 0; k < s->nshards; k++)
            ring_mpsc_push_wait(s->sh[k].in, &im, 1, -1);
        return;
    } else {
        return respond_json(req, 404, "{\"error\":\"not found\"}");
    }
    if (im.ev.account > CLR_ACCOUNT_MAX)
        return respond_json(req, 404, "{\"error\":\"unknown account\"}");
    if (!push_http(s, clr_route_shard(im.ev.account, s->nshards), &im))
        return respond_json(req, 503, "{\"error\":\"the shard is busy or stopping\"}");
}

/* ---- shards --------------------------------------------------------------------------------- */

static void
shard_fail(shard *sh, int code, const char *what)
{
    if (atomic_load_explicit(&sh->failed, memory_order_relaxed) == 0) {
        fprintf(stderr,
                "dengbao: clearing: shard %u failed closed (%s: %s); every later event is "
                "refused\n",
                sh->idx, what, dbao_strerror(code));
        atomic_store_explicit(&sh->failed, code != 0 ? code : DBAO_EIO, memory_order_relaxed);
        atomic_store_explicit(&sh->s->failed, code != 0 ? code : DBAO_EIO, memory_order_relaxed);
    }
}

static const char *
move_name(uint8_t k)
{
    switch (k) {
    case CLR_MOVE_DEPOSIT:
        return "deposit";
    case CLR_MOVE_WITHDRAW:
        return "withdraw";
    case CLR_MOVE_BUY:
        return "buy";
    case CLR_MOVE_SELL:
        return "sell";
    case CLR_MOVE_FEE:
        return "fee";
    default:
        return "unknown";
    }
}

#define JSON_SAFE_MAX ((int64_t) 9007199254740991) /* 2^53 - 1: audit details integers */

static void
put_money(dbao_buf *b, const char *key, int64_t fen, int *rc)
{
    char y[32];
    clr_money_format(fen, y);
    if (*rc != 0)
        return;
    if (fen >= -JSON_SAFE_MAX && fen <= JSON_SAFE_MAX)
        *rc = dbao_buf_printf(b, ",\"%s\":%" PRId64 ",\"%s_yuan\":\"%s\"", key, fen, key, y);
    else
        *rc = dbao_buf_printf(b, ",\"%s\":\"%" PRId64 "\",\"%s_yuan\":\"%s\"", key, fen, key, y);
}

static void
put_id(dbao_buf *b, const char *key, uint64_t v, int *rc)
{
    if (*rc != 0)
        return;
    if (v <= (uint64_t) JSON_SAFE_MAX)
        *rc = dbao_buf_printf(b, ",\"%s\":%" PRIu64, key, v);
    else
        *rc = dbao_buf_printf(b, ",\"%s\":\"%" PRIu64 "\"", key, v);
}

static bool
zero16(const uint8_t *t)
{
    for (int i = 0; i < 16; i++)
        if (t[i] != 0)
            return false;
    return true;
}

/* ---- audit details written by hand ------------------------------------------------------
 *
 * A movement's details object is written here directly in the canonical form of RFC 8785 as
 * the audit log restricts it (see src/audit/jcscheck.c): keys in increasing byte order (all
 * ASCII, so the same as UTF-16 order), no white space, integers as -?(0|[1-9][0-9]*) within
 * +-(2^53 - 1), larger ones as strings of digits, and every string made only of digits, '-',
 * '.', lowercase hex and the fixed ASCII names of move_name (nothing to escape). It replaced
 * printf into a growing buffer with keys in another order, which audit_record_set_details then
 * re-parsed with jansson and sorted (~8 % of the daemon, plus printf and malloc ~11 %). The
 * bytes stored are the same as before (the canonical form is unique). audit_record_encode
 * still checks the details on the bytes (check_details), so a slip here cannot store a
 * non-canonical record: audit_add then falls back to audit_record_set_details, which
 * canonicalises with jansson. */

/* a movement's details are < 600 bytes by construction (15 keys, at most 22 chars a value) */
#define DET_MAX 1024

static char *
put_u64(char *p, uint64_t v)
{
    char t[20];
    int n = 0;
    do {
        t[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = t[--n];
    return p;
}

static char *
put_lit(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/* key (its leading separator, the quoted name and the colon) then the integer, as a string of
   digits beyond +-(2^53 - 1) */
static char *
det_i64(char *p, const char *key, int64_t v)
{
    p = put_lit(p, key);
    bool safe = v >= -JSON_SAFE_MAX && v <= JSON_SAFE_MAX;
    if (!safe)
        *p++ = '"';
    uint64_t mag = v < 0 ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;
    if (v < 0)
        *p++ = '-';
    p = put_u64(p, mag);
    if (!safe)
        *p++ = '"';
    return p;
}

static char *
det_u64(char *p, const char *key, uint64_t v)
{
    p = put_lit(p, key);
    bool safe = v <= (uint64_t) JSON_SAFE_MAX;
    if (!safe)
        *p++ = '"';
    p = put_u64(p, v);
    if (!safe)
        *p++ = '"';
    return p;
}

/* "key":fen,"key_yuan":"y.yy" (the same text as clr_money_format) */
static char *
det_money(char *p, const char *key, const char *ykey, int64_t fen)
{
    p = det_i64(p, key, fen);
    p = put_lit(p, ykey);
    *p++ = '"';
    uint64_t mag = fen < 0 ? (uint64_t) 0 - (uint64_t) fen : (uint64_t) fen;
    if (fen < 0)
        *p++ = '-';
    p = put_u64(p, mag / 100);
    *p++ = '.';
    *p++ = (char) ('0' + (mag % 100) / 10);
    *p++ = (char) ('0' + mag % 10);
    *p++ = '"';
    return p;
}

/* Encodes one audit record into the shard's batch. `details` must be canonical when
   `canonical` is set (written by hand above); otherwise it is canonicalised. */
static void
audit_add(shard *sh, const char *event_type, const char *action, uint64_t object,
          const uint8_t trace[16], uint64_t seq, const char *details, size_t dlen, bool canonical)
{
    if (sh->abuild_rc != 0 || sh->s->log == NULL)
        return;
    audit_record r;
    audit_record_init(&r);
    int64_t now = audit_now_ns();
    int rc = audit_uuid7_generate(r.event_id, now);
    r.time_ns = now;
    /* the fixed fields without printf: every one is far below its field's size */
    char *e = put_lit(r.subject.id, "clearing-shard-");
    *put_u64(e, sh->idx) = 0;
    snprintf(r.event_type, sizeof r.event_type, "%s", event_type);
    snprintf(r.action, sizeof r.action, "%s", action);
    if (object != 0)
        *put_u64(r.object, object) = 0;
    r.result = AUDIT_RESULT_SUCCESS;
    memcpy(r.source, "clearing", sizeof "clearing");
    if (trace != NULL && !zero16(trace)) {
        /* 00-<32 hex>-<16 hex>-01 */
        static const char hx[] = "0123456789abcdef";
        char *t = r.trace_id;
        uint64_t sv = seq != 0 ? seq : 1;
        memcpy(t, "00-", 3);
        dbao_hex_encode(t + 3, trace, 16);
        t[35] = '-';
        for (int i = 0; i < 16; i++)
            t[36 + i] = hx[(sv >> (60 - 4 * i)) & 0xf];
        memcpy(t + 52, "-01", 4);
    }
    bool borrowed = false;
    if (rc == 0 && canonical) {
        /* borrowed for the encode only; set back to NULL before audit_record_cleanup */
        r.details = (char *) details;
        r.details_len = dlen;
        borrowed = true;
    } else if (rc == 0) {
        rc = audit_record_set_details(&r, details, dlen, NULL);
    }
    if (rc == 0 && sh->an == sh->acap) {
        size_t ncap = sh->acap ? sh->acap * 2 : 256;
        uint32_t *nl = realloc(sh->alens, ncap * sizeof *nl);
        if (nl == NULL)
            rc = DBAO_ENOMEM;
        else
            sh->alens = nl, sh->acap = ncap;
    }
    if (rc == 0)
        rc = dbao_buf_reserve(&sh->adata, AUDIT_RECORD_MAX);
    size_t len = 0;
    if (rc == 0) {
        uint8_t *dst = (uint8_t *) sh->adata.data + sh->adata.len;
        rc = audit_record_encode(&r, dst, &len, AUDIT_RECORD_MAX, NULL);
        if (rc != 0 && borrowed) {
            /* not expected: the hand-written text was refused; canonicalise it instead */
            r.details = NULL;
            borrowed = false;
            rc = audit_record_set_details(&r, details, dlen, NULL);
            if (rc == 0)
                rc = audit_record_encode(&r, dst, &len, AUDIT_RECORD_MAX, NULL);
        }
    }
    if (borrowed)
        r.details = NULL;
    if (rc == 0) {
        sh->adata.len += len;
        sh->alens[sh->an++] = (uint32_t) len;
    } else {
        sh->abuild_rc = rc;
    }
    audit_record_cleanup(&r);
}

static void
on_move(void *arg, const clr_movement *m)
{
    shard *sh = arg;
    atomic_fetch_add_explicit(&sh->m_moves, 1, memory_order_relaxed);
    if (sh->s->log == NULL)
        return;
    /* keys in canonical (sorted) order; see the comment above put_u64 */
    char d[DET_MAX];
    const char *kind = move_name(m->kind);
    char *p = det_u64(d, "{\"account\":", m->account);
    p = det_money(p, ",\"amount\":", ",\"amount_yuan\":", m->amount);
    p = det_u64(p, ",\"exec_id\":", m->exec_id);
    p = put_lit(p, ",\"kind\":\"");
    p = put_lit(p, kind);
    p = det_u64(p, "\",\"order_id\":", m->order_id);
    p = det_money(p, ",\"post_balance\":", ",\"post_balance_yuan\":", m->post_balance);
    p = det_money(p, ",\"pre_balance\":", ",\"pre_balance_yuan\":", m->pre_balance);
    if (sh->recovering)
        p = put_lit(p, ",\"recovered\":true");
    /* security: at least 6 digits, zero-padded (as "%06u") */
    p = put_lit(p, ",\"security\":\"");
    char sec[16];
    char *se = put_u64(sec, m->security);
    for (ptrdiff_t k = se - sec; k < 6; k++)
        *p++ = '0';
    memcpy(p, sec, (size_t) (se - sec));
    p += se - sec;
    p = det_u64(p, "\",\"seq\":", m->seq);
    p = det_u64(p, ",\"shard\":", sh->idx);
    p = put_lit(p, ",\"trace_id\":\"");
    if (!zero16(m->trace_id)) {
        dbao_hex_encode(p, m->trace_id, 16);
        p += 32;
    }
    *p++ = '"';
    *p++ = '}';
    *p = 0;
    audit_add(sh, "clearing.movement", kind, m->account, m->trace_id, m->seq, d, (size_t) (p - d),
              true);
}

static void
audit_eod(shard *sh, const clr_event *ev)
{
    if (sh->s->log == NULL)
        return;
    uint32_t date = 0;
    clr_net_row *rows = NULL;
    size_t n = 0;
    int rc = clr_engine_settlement(sh->eng, &date, &rows, &n, NULL);
    if (rc != 0) {
        sh->abuild_rc = rc;
        return;
    }
    int64_t buy = 0, sell = 0, fees = 0, net = 0, bq = 0, sq = 0;
    for (size_t i = 0; i < n; i++) {
        buy += rows[i].buy_amount;
        sell += rows[i].sell_amount;
        fees += rows[i].fees;
        net += rows[i].net_cash;
        bq += rows[i].buy_qty;
        sq += rows[i].sell_qty;
    }
    free(rows);
    dbao_buf b = {0};
    rc = dbao_buf_printf(&b, "{\"trade_date\":%u", (unsigned) date);
    put_id(&b, "shard", sh->idx, &rc);
    put_id(&b, "seq", ev->seq, &rc);
    put_id(&b, "rows", n, &rc);
    put_money(&b, "buy_amount", buy, &rc);
    put_money(&b, "sell_amount", sell, &rc);
    put_money(&b, "fees", fees, &rc);
    put_money(&b, "net_cash", net, &rc);
    put_id(&b, "buy_qty", (uint64_t) bq, &rc);
    put_id(&b, "sell_qty", (uint64_t) sq, &rc);
    if (rc == 0)
        rc = dbao_buf_putc(&b, '}');
    if (rc == 0)
        audit_add(sh, "clearing.eod", "eod", 0, ev->trace_id, ev->seq, b.data, b.len, false);
    else
        sh->abuild_rc = rc;
    dbao_buf_free(&b);
}

static void
audit_done(audit_log_req *req)
{
    shard *sh = req->arg;
    pthread_mutex_lock(&sh->mu);
    sh->adone = true;
    pthread_cond_signal(&sh->cv);
    pthread_mutex_unlock(&sh->mu);
}

/* Submits the batch's audit records and waits until they are durable. */
static int
audit_flush(shard *sh)
{
    if (sh->an == 0)
        return 0;
    if (sh->abuild_rc != 0)
        return sh->abuild_rc;
    memset(&sh->areq, 0, sizeof sh->areq);
    sh->areq.data = (const uint8_t *) sh->adata.data;
    sh->areq.lens = sh->alens;
    sh->areq.num = sh->an;
    sh->areq.done = audit_done;
    sh->areq.arg = sh;
    sh->adone = false;
    int rc = audit_log_submit(sh->s->log, &sh->areq);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&sh->mu);
    while (!sh->adone)
        pthread_cond_wait(&sh->cv, &sh->mu);
    pthread_mutex_unlock(&sh->mu);
    return sh->areq.status;
}

static void
deliver_tcp(shard *sh, uint32_t io, void *conn_, uint64_t cseq, const clr_result *res,
            uint16_t ecode)
{
    clr_server *s = sh->s;
    outmsg o;
    memset(&o, 0, sizeof o);
    o.conn = conn_;
    o.cseq = cseq;
    if (res != NULL)
        o.res = *res;
    o.ecode = ecode;
    if (ring_spsc_push(sh->out[io], &o, 1) != 1) {
        uv_async_send(&s->io[io]->wake);
        ring_spsc_push_wait(sh->out[io], &o, 1, -1);
    }
    sh->dirty[io] = true;
}

static void
answer_account(shard *sh, inmsg *m)
{
    net_request *req = m->dest;
    clr_account_view v;
    if (clr_engine_account(sh->eng, m->ev.account, &v) != 0)
        return respond_json(req, 404, "{\"error\":\"unknown account\"}");
    char a[32], f[32], c[32];
    clr_money_format(v.cash_available, a);
    clr_money_format(v.cash_frozen, f);
    clr_money_format(v.credit_limit, c);
    respond_json(req, 200,
                 "{\"account\":%" PRIu64 ",\"member\":%u,\"cash_available\":\"%s\","
                 "\"cash_frozen\":\"%s\",\"credit_limit\":\"%s\",\"cash_available_fen\":%" PRId64
                 ",\"cash_frozen_fen\":%" PRId64 ",\"seq\":%" PRIu64 "}",
                 m->ev.account, (unsigned) v.member, a, f, c, v.cash_available, v.cash_frozen,
                 clr_engine_seq(sh->eng));
}

static void
answer_position(shard *sh, inmsg *m)
{
    net_request *req = m->dest;
    clr_position_view v;
    if (clr_engine_position(sh->eng, m->ev.account, m->ev.security, &v) != 0)
        return respond_json(req, 404, "{\"error\":\"unknown account or position\"}");
    respond_json(req, 200,
                 "{\"account\":%" PRIu64 ",\"security\":\"%06u\",\"available\":%" PRId64
                 ",\"frozen\":%" PRId64 ",\"pending\":%" PRId64 "}",
                 m->ev.account, (unsigned) m->ev.security, v.available, v.frozen, v.pending);
}

static void
answer_totals(clr_server *s, bcast *bc)
{
    net_request *req = bc->dest;
    dbao_buf b = {0};
    clr_totals sum;
    memset(&sum, 0, sizeof sum);
    bool balanced = true;
    int rc = dbao_buf_printf(&b, "%s", "{\"shards\":[");
    for (unsigned k = 0; k < s->nshards && rc == 0; k++) {
        const clr_totals *t = &bc->tot[k];
        bool ok = t->cash_total == t->deposits - t->withdrawals && t->shares_imbalance == 0;
        balanced = balanced && ok;
        char c[32], d[32], w[32], f[32];
        clr_money_format(t->cash_total, c);
        clr_money_format(t->deposits, d);
        clr_money_format(t->withdrawals, w);
        clr_money_format(t->fees, f);
        rc = dbao_buf_printf(&b,
                             "%s{\"shard\":%u,\"cash_total\":\"%s\",\"deposits\":\"%s\","
                             "\"withdrawals\":\"%s\",\"fees\":\"%s\",\"accounts\":%" PRIu64
                             ",\"orders_open\":%" PRIu64 ",\"fills\":%" PRIu64
                             ",\"negative_accounts\":%" PRIu64 ",\"shares_imbalance\":%" PRId64
                             ",\"balanced\":%s}",
                             k ? "," : "", k, c, d, w, f, t->accounts, t->orders_open, t->fills,
                             t->negative_accounts, t->shares_imbalance, ok ? "true" : "false");
        sum.cash_total += t->cash_total;
        sum.deposits += t->deposits;
        sum.withdrawals += t->withdrawals;
        sum.fees += t->fees;
        sum.accounts += t->accounts;
        sum.fills += t->fills;
    }
    if (rc == 0) {
        char c[32], d[32], w[32], f[32];
        clr_money_format(sum.cash_total, c);
        clr_money_format(sum.deposits, d);
        clr_money_format(sum.withdrawals, w);
        clr_money_format(sum.fees, f);
        rc = dbao_buf_printf(&b,
                             "],\"cash_total\":\"%s\",\"deposits\":\"%s\",\"withdrawals\":\"%s\","
                             "\"fees\":\"%s\",\"accounts\":%" PRIu64 ",\"fills\":%" PRIu64
                             ",\"balanced\":%s}",
                             c, d, w, f, sum.accounts, sum.fills, balanced ? "true" : "false");
    }
    if (rc != 0)
        net_request_respond(req, 500, NULL, NULL, 0);
    else
        net_request_respond(req, 200, "application/json", b.data, b.len);
    dbao_buf_free(&b);
}

/* One shard's part of a broadcast is in; the last shard delivers the whole. */
static void
bcast_part(shard *sh, bcast *bc)
{
    /* acq_rel: each shard's release publishes its res/tot/ecode entry; the last one's acquire
       sees all of them before reading */
    if (atomic_fetch_sub_explicit(&bc->left, 1, memory_order_acq_rel) != 1)
        return;
    if (bc->kind == MSG_Q_TOTALS) {
        answer_totals(sh->s, bc);
        free(bc);
        return;
    }
    clr_result res = bc->res[0];
    uint16_t ecode = 0;
    for (unsigned k = 0; k < bc->n; k++) {
        if (ecode == 0 && bc->ecode[k] != 0)
            ecode = bc->ecode[k];
        if (res.reject == CLR_OK && bc->res[k].reject != CLR_OK)
            res = bc->res[k];
    }
    if (bc->kind == MSG_TCP) {
        deliver_tcp(sh, bc->io, bc->dest, bc->cseq, ecode ? NULL : &res, ecode);
    } else if (ecode != 0) {
        respond_json(bc->dest, 503, "{\"error\":\"a clearing shard has failed closed\"}");
    } else {
        respond_result(bc->dest, &res);
    }
    free(bc);
}

static void
maybe_snapshot(shard *sh, bool force)
{
    const clr_config *cfg = sh->s->cfg;
    uint64_t seq = clr_engine_seq(sh->eng);
    if (atomic_load_explicit(&sh->failed, memory_order_relaxed) != 0 || seq == sh->last_snap)
        return;
    if (!force && (cfg->snapshot_every == 0 || seq - sh->last_snap < cfg->snapshot_every))
        return;
    dbao_err err;
    dbao_err_clear(&err);
    if (clr_journal_snapshot(sh->jnl, sh->eng, cfg->snapshot_keep, &err) != 0) {
        /* not fatal: the journal still holds everything; the next try may succeed */
        fprintf(stderr, "dengbao: clearing: shard %u: snapshot at seq %" PRIu64 " failed: %s\n",
                sh->idx, seq, err.msg);
        return;
    }
    sh->last_snap = seq;
    atomic_fetch_add_explicit(&sh->m_snaps, 1, memory_order_relaxed);
}

static void *
shard_main(void *arg)
{
    shard *sh = arg;
    clr_server *s = sh->s;
    size_t bmax = s->cfg->batch_max;
    for (;;) {
        size_t n = ring_mpsc_pop_wait(sh->in, sh->batch, bmax, -1);
        if (n == 0)
            break;
        size_t ne = 0;
        for (size_t i = 0; i < n; i++) {
            if (sh->batch[i].kind == MSG_TCP || sh->batch[i].kind == MSG_HTTP) {
                sh->evs[ne] = sh->batch[i].ev;
                sh->evidx[ne++] = i;
            }
        }
        if (ne > 0 && atomic_load_explicit(&sh->failed, memory_order_relaxed) == 0) {
            dbao_err err;
            dbao_err_clear(&err);
            int rc = clr_journal_append(sh->jnl, sh->evs, ne, &err);
            if (rc == 0)
                rc = clr_journal_sync(sh->jnl, &err);
            if (rc != 0) {
                fprintf(stderr, "dengbao: clearing: shard %u: journal: %s\n", sh->idx, err.msg);
                shard_fail(sh, rc, "the journal cannot be written");
            } else {
                sh->adata.len = 0;
                sh->an = 0;
                sh->abuild_rc = 0;
                uint64_t rejects = 0;
                for (size_t k = 0; k < ne && rc == 0; k++) {
                    rc = clr_engine_apply(sh->eng, &sh->evs[k], &sh->res[k], on_move, sh);
                    if (rc == 0 && sh->res[k].reject != CLR_OK)
                        rejects++;
                    if (rc == 0 && sh->evs[k].type == CLR_EV_EOD && sh->res[k].reject == CLR_OK)
                        audit_eod(sh, &sh->evs[k]);
                }
                if (rc != 0) {
                    shard_fail(sh, rc, "the engine refused a journaled event");
                } else if (s->log != NULL && (rc = audit_flush(sh)) != 0) {
                    shard_fail(sh, rc, "the audit log cannot be written");
                }
                atomic_fetch_add_explicit(&sh->m_events, ne, memory_order_relaxed);
                atomic_fetch_add_explicit(&sh->m_rejects, rejects, memory_order_relaxed);
                atomic_fetch_add_explicit(&sh->m_batches, 1, memory_order_relaxed);
                atomic_store_explicit(&sh->m_seq, clr_engine_seq(sh->eng), memory_order_relaxed);
            }
        }
        bool failed = atomic_load_explicit(&sh->failed, memory_order_relaxed) != 0;
        size_t e = 0;
        for (size_t i = 0; i < n; i++) {
            inmsg *m = &sh->batch[i];
            if (m->kind == MSG_TCP || m->kind == MSG_HTTP) {
                const clr_result *res = &sh->res[e++];
                uint16_t ecode = failed ? WERR_UNAVAILABLE : 0;
                if (m->bc != NULL) {
                    m->bc->res[sh->idx] = *res;
                    m->bc->ecode[sh->idx] = ecode;
                    bcast_part(sh, m->bc);
                } else if (m->kind == MSG_TCP) {
                    deliver_tcp(sh, m->io, m->dest, m->cseq, failed ? NULL : res, ecode);
                } else if (failed) {
                    respond_json(m->dest, 503,
                                 "{\"error\":\"the clearing shard has failed closed (journal or "
                                 "audit log); the event is not acknowledged\"}");
                } else {
                    respond_result(m->dest, res);
                }
            } else if (m->kind == MSG_Q_ACCOUNT) {
                answer_account(sh, m);
            } else if (m->kind == MSG_Q_POSITION) {
                answer_position(sh, m);
            } else if (m->kind == MSG_Q_TOTALS) {
                clr_engine_totals(sh->eng, &m->bc->tot[sh->idx]);
                bcast_part(sh, m->bc);
            }
        }
        for (unsigned i = 0; i < s->nio; i++) {
            if (sh->dirty[i]) {
                sh->dirty[i] = false;
                uv_async_send(&s->io[i]->wake);
            }
        }
        maybe_snapshot(sh, false);
    }
    return NULL;
}

/* ---- start and stop --------------------------------------------------------------------- */

static int
listen_socket(const char *host, uint16_t port, bool reuseport, int *fd_out, uint16_t *bound,
              dbao_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc;
    if (strchr(host, ':') != NULL)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *) &ss);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *) &ss);
    if (rc != 0)
        return dbao_err_set(err, DBAO_EINVAL, "listen.host '%s' is not a numeric address", host);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return dbao_err_set(err, -errno, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    socklen_t sl =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *) &ss, sl) != 0 || listen(fd, 4096) != 0) {
        rc = -errno;
        close(fd);
        return dbao_err_set(err, rc, "cannot listen on %s:%u: %s", host, (unsigned) port,
                            strerror(-rc));
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    getsockname(fd, (struct sockaddr *) &got, &gl);
    *bound = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &got)->sin6_port
                                             : ((struct sockaddr_in *) &got)->sin_port);
    *fd_out = fd;
    return 0;
}

static void
server_free(clr_server *s)
{
    for (unsigned i = 0; i < s->nio; i++) {
        io_thread *io = s->io[i];
        if (io == NULL)
            continue;
        if (io->loop.data == io) {
            uv_run(&io->loop, UV_RUN_NOWAIT);
            uv_loop_close(&io->loop);
        }
        if (io->fd >= 0)
            close(io->fd);
        free(io->obuf);
        free(io);
    }
    for (unsigned k = 0; k < s->nshards; k++) {
        shard *sh = &s->sh[k];
        ring_mpsc_free(sh->in);
        for (unsigned i = 0; i < CLR_IO_THREADS_MAX; i++)
            ring_spsc_free(sh->out[i]);
        clr_journal_close(sh->jnl);
        clr_engine_free(sh->eng);
        free(sh->batch);
        free(sh->evs);
        free(sh->evidx);
        free(sh->res);
        free(sh->alens);
        dbao_buf_free(&sh->adata);
        pthread_mutex_destroy(&sh->mu);
        pthread_cond_destroy(&sh->cv);
    }
    net_server_free(s->http);
    free(s);
}

/* ---- audit recovery ----------------------------------------------------------------------
 * A crash between a batch's journal sync and the durability of its audit records leaves
 * journaled (never acknowledged) events without their movement records. At start each shard
 * finds the seq of its last movement record in the audit log (records of one shard are in seq
 * order, and a shard submits a batch only after the previous one is durable, so the gap is at
 * most the last batch; if only a prefix of that batch's records survived, the records of the
 * last seq present are counted and skipped in order), and while the engine is rebuilt every
 * movement after that seq is written again, marked "recovered":true. Movements before the snapshot
 * the load starts from were audited before the snapshot was taken (a snapshot follows the batch's
 * audit flush). */

static uint64_t
details_u64(const char *d, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = d != NULL ? strstr(d, pat) : NULL;
    if (p == NULL)
        return UINT64_MAX;
    p += strlen(pat);
    if (*p == '"')
        p++;
    uint64_t v = 0;
    if (*p < '0' || *p > '9')
        return UINT64_MAX;
    for (; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (uint64_t) (*p - '0');
    return v;
}

/* Fills audited[k] for every shard (0 when the log holds none of the shard's records). */
static int
find_audited(clr_server *s, dbao_err *err)
{
    uint64_t size = audit_log_size(s->log);
    bool found[CLR_SHARDS_MAX] = {false};
    unsigned nfound = 0;
    uint64_t end = size, win = 65536;
    while (end > 0 && nfound < s->nshards) {
        uint64_t start = end > win ? end - win : 0;
        audit_log_iter *it = NULL;
        int rc = audit_log_iter_open(&it, s->log, start, err);
        if (rc != 0)
            return rc;
        uint64_t idx;
        const uint8_t *rec;
        size_t len;
        uint64_t best[CLR_SHARDS_MAX] = {0}, cnt[CLR_SHARDS_MAX] = {0};
        bool seen[CLR_SHARDS_MAX] = {false};
        audit_record r;
        audit_record_init(&r);
        while ((rc = audit_log_iter_next(it, &idx, &rec, &len, err)) == 1 && idx < end) {
            if (audit_record_decode(&r, rec, len, NULL) != 0)
                continue;
            if (strcmp(r.source, "clearing") != 0 || strcmp(r.event_type, "clearing.movement") != 0)
                continue;
            uint64_t k = details_u64(r.details, "shard"), q = details_u64(r.details, "seq");
            if (k >= s->nshards || q == UINT64_MAX || found[k])
                continue;
            seen[k] = true;
            if (q > best[k]) {
                best[k] = q;
                cnt[k] = 1;
            } else if (q == best[k]) {
                cnt[k]++;
            }
        }
        audit_record_cleanup(&r);
        audit_log_iter_close(it);
        if (rc < 0)
            return rc;
        for (unsigned k = 0; k < s->nshards; k++) {
            if (seen[k] && !found[k]) {
                found[k] = true;
                nfound++;
                s->sh[k].audited = best[k];
                s->sh[k].audited_n = cnt[k];
            }
        }
        end = start;
        win *= 2;
    }
    return 0;
}

static void
on_recover_move(void *arg, const clr_movement *m)
{
    shard *sh = arg;
    if (m->seq < sh->audited || sh->abuild_rc != 0)
        return;
    /* the movements of one event are reported and audited in the same order: the records of
       the last audited seq that are present are a prefix of its movements */
    if (m->seq == sh->audited && sh->audited_n > 0) {
        sh->audited_n--;
        return;
    }
    on_move(sh, m);
    sh->recovered++;
    if (sh->an >= 16384 && sh->abuild_rc == 0) {
        sh->abuild_rc = audit_flush(sh);
        sh->an = 0;
        sh->adata.len = 0;
    }
}

static int
shard_init(clr_server *s, unsigned k, const clr_refdata *ref, dbao_err *err)
{
    const clr_config *cfg = s->cfg;
    shard *sh = &s->sh[k];
    sh->s = s;
    sh->idx = k;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->cv, NULL);
    int rc = ring_mpsc_new(&sh->in, cfg->ring_capacity, sizeof(inmsg), cfg->wait, err);
    for (unsigned i = 0; i < s->nio && rc == 0; i++)
        rc = ring_spsc_new(&sh->out[i], 16384, sizeof(outmsg), RING_WAIT_BLOCK, err);
    if (rc != 0)
        return rc;
    sh->batch = calloc(cfg->batch_max, sizeof *sh->batch);
    sh->evs = calloc(cfg->batch_max, sizeof *sh->evs);
    sh->evidx = calloc(cfg->batch_max, sizeof *sh->evidx);
    sh->res = calloc(cfg->batch_max, sizeof *sh->res);
    if (!sh->batch || !sh->evs || !sh->evidx || !sh->res)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    clr_journal_opts jo = {.segment_bytes = cfg->segment_bytes, .no_sync = !cfg->journal_sync};
    rc = clr_journal_open(&sh->jnl, cfg->data_dir, k, &jo, err);
    if (rc != 0)
        return rc;
    const char *note = clr_journal_recovery_note(sh->jnl);
    if (note != NULL && note[0] != '\0')
        fprintf(stderr, "clearing: shard %u: journal recovery: %s\n", k, note);
    sh->recovering = true;
    rc = clr_journal_load(&sh->eng, cfg->data_dir, k, s->nshards, ref, false,
                          s->log != NULL ? on_recover_move : NULL, sh, err);
    if (rc == 0 && sh->abuild_rc == 0 && s->log != NULL)
        sh->abuild_rc = audit_flush(sh);
    sh->recovering = false;
    atomic_store_explicit(&sh->m_moves, 0, memory_order_relaxed);
    if (rc != 0)
        return rc;
    if (sh->abuild_rc != 0)
        return dbao_err_set(err, sh->abuild_rc,
                            "shard %u: cannot write the audit records of recovered movements: %s",
                            k, dbao_strerror(sh->abuild_rc));
    if (sh->recovered > 0)
        fprintf(stderr,
                "clearing: shard %u: audit recovery: %" PRIu64
                " movement records written again (journaled after seq %" PRIu64
                ", not audited before the crash)\n",
                k, sh->recovered, sh->audited);
    sh->an = 0;
    sh->adata.len = 0;
    if (clr_engine_seq(sh->eng) != clr_journal_last_seq(sh->jnl))
        return dbao_err_set(err, DBAO_EVERIFY,
                            "shard %u: the rebuilt engine is at seq %" PRIu64
                            " but the journal ends at %" PRIu64,
                            k, clr_engine_seq(sh->eng), clr_journal_last_seq(sh->jnl));
    sh->last_snap = clr_engine_seq(sh->eng);
    atomic_store_explicit(&sh->m_seq, sh->last_snap, memory_order_relaxed);
    fprintf(stderr, "clearing: shard %u recovered at seq %" PRIu64 "\n", k, sh->last_snap);
    return 0;
}

int
clr_server_start(clr_server **out, const clr_config *cfg, audit_log *log, dbao_err *err)
{
    *out = NULL;
    if (cfg->audit_required && log == NULL)
        return dbao_err_set(err, DBAO_EINVAL,
                            "the configuration names an audit log: it must be open");
    clr_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    s->cfg = cfg;
    s->log = log;
    s->nshards = cfg->shards;
    s->nio = cfg->tcp_enabled ? cfg->io_threads : 0;
    clr_refdata ref;
    clr_config_refdata(cfg, &ref);
    int rc = 0;
    for (unsigned i = 0; i < s->nio && rc == 0; i++) {
        io_thread *io = calloc(1, sizeof *io);
        if (io == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            break;
        }
        io->fd = -1;
        s->io[i] = io;
        io->s = s;
        io->idx = i;
        io->obuf = calloc(1024, sizeof *io->obuf);
        if (io->obuf == NULL)
            rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    if (rc == 0 && log != NULL)
        rc = find_audited(s, err);
    for (unsigned k = 0; k < s->nshards && rc == 0; k++)
        rc = shard_init(s, k, &ref, err);
    for (unsigned i = 0; i < s->nio && rc == 0; i++) {
        io_thread *io = s->io[i];
        uint16_t port = i == 0 ? cfg->tcp_port : s->tcp_port;
        rc = listen_socket(cfg->tcp_host, port, s->nio > 1, &io->fd, &s->tcp_port, err);
        if (rc != 0)
            break;
        if ((rc = uv_loop_init(&io->loop)) != 0) {
            rc = dbao_err_set(err, DBAO_EIO, "uv_loop_init: %s", uv_strerror(rc));
            break;
        }
        io->loop.data = io;
        uv_async_init(&io->loop, &io->wake, on_wake);
        io->wake.data = io;
        uv_timer_init(&io->loop, &io->retry);
        io->retry.data = io;
        uv_tcp_init(&io->loop, &io->listener);
        io->listener.data = io;
        int fd = io->fd;
        io->fd = -1; /* the handle owns it from here on (closed by uv_close) */
        if ((rc = uv_tcp_open(&io->listener, fd)) != 0 ||
            (rc = uv_listen((uv_stream_t *) &io->listener, 4096, on_connection)) != 0) {
            rc = dbao_err_set(err, DBAO_EIO, "listen: %s", uv_strerror(rc));
            break;
        }
        io->listening = true;
    }
    if (rc == 0 && cfg->http_enabled) {
        net_server_opts no = {.host = cfg->http_host,
                              .port = cfg->http_port,
                              .workers = cfg->http_workers,
                              .handler = http_handler,
                              .handler_arg = s,
                              .body_max = 4096};
        rc = net_server_new(&s->http, &no, err);
        if (rc == 0)
            s->http_port = net_server_port(s->http);
    }
    for (unsigned k = 0; k < s->nshards && rc == 0; k++) {
        if ((rc = pthread_create(&s->sh[k].th, NULL, shard_main, &s->sh[k])) != 0)
            rc = dbao_err_set(err, -rc, "cannot start a shard thread");
        else
            s->sh[k].started = true;
    }
    for (unsigned i = 0; i < s->nio && rc == 0; i++) {
        if ((rc = pthread_create(&s->io[i]->th, NULL, io_main, s->io[i])) != 0)
            rc = dbao_err_set(err, -rc, "cannot start an IO thread");
        else
            s->io[i]->started = true;
    }
    if (rc == 0 && s->http != NULL)
        rc = net_server_start(s->http, err);
    if (rc != 0) {
        *out = s;
        clr_server_stop(s);
        *out = NULL;
        return rc;
    }
    *out = s;
    return 0;
}

uint16_t
clr_server_tcp_port(const clr_server *s)
{
    return s->tcp_port;
}

uint16_t
clr_server_http_port(const clr_server *s)
{
    return s->http_port;
}

int
clr_server_failed(const clr_server *s)
{
    return atomic_load_explicit(&((clr_server *) s)->failed, memory_order_relaxed);
}

int
clr_server_stop(clr_server *s)
{
    if (s == NULL)
        return 0;
    /* 1. no new intake: listeners closed and reading stopped on every IO loop */
    for (unsigned i = 0; i < s->nio; i++) {
        if (s->io[i]->started) {
            /* release: the loop's acquire load after the wake-up sees the new state */
            atomic_store_explicit(&s->io[i]->ctl, 1, memory_order_release);
            uv_async_send(&s->io[i]->wake);
        }
    }
    /* 2. the HTTP face drains: its in-flight requests are answered by the running shards */
    if (s->http != NULL) {
        net_server_stop(s->http);
        net_server_wait(s->http);
    }
    /* 3. IO threads may still be inside a dispatch: give them a moment to see ctl (they
       push nothing once it is set; a short sleep is enough, pushes are non-blocking except an
       EOD broadcast which waits for room that the shards free) */
    usleep(20000);
    for (unsigned k = 0; k < s->nshards; k++)
        if (s->sh[k].in != NULL)
            ring_mpsc_close(s->sh[k].in);
    for (unsigned k = 0; k < s->nshards; k++)
        if (s->sh[k].started)
            pthread_join(s->sh[k].th, NULL);
    /* 4. last answers out, connections closed, loops end */
    for (unsigned i = 0; i < s->nio; i++) {
        if (s->io[i]->started) {
            atomic_store_explicit(&s->io[i]->ctl, 2, memory_order_release);
            uv_async_send(&s->io[i]->wake);
            pthread_join(s->io[i]->th, NULL);
        }
    }
    /* 5. a final snapshot per shard, then the journals are closed (synced) */
    int rc = atomic_load_explicit(&s->failed, memory_order_relaxed);
    for (unsigned k = 0; k < s->nshards; k++)
        if (s->sh[k].eng != NULL && s->sh[k].jnl != NULL)
            maybe_snapshot(&s->sh[k], true);
    server_free(s);
    return rc;
}
