/* pgproxy.c: the PostgreSQL protocol v3 proxy engine (contract in pgproxy.h).
 *
 * Shape: `workers` threads, each with its own uv_loop and its own SO_REUSEPORT listener. A session
 * owns two connections (client, server), each a uv_tcp_t plus an optional SSL object driven through
 * two memory BIOs, and two timers (connect, startup; the connect timer doubles as the linger timer
 * once the session closes). Everything of a session happens on its loop; nothing is shared between
 * workers except the read-only pgp_server.
 *
 * Data path: each connection has one growable input buffer holding plaintext. A read (after TLS
 * decryption) appends to it; then the buffer is framed in place (pgwire.c) and the messages are
 * relayed to the other side. Unchanged messages are not copied: consecutive ones form a span of the
 * input buffer that is written with uv_try_write directly; only a rewritten message, a TLS side, or
 * a write the kernel does not take at once copies bytes (into one write request per batch). So the
 * unfiltered fast path costs one frame-header look per message and no allocation: one read and one
 * write system call per hop. Bytes consumed are removed from the front of the input buffer (memmove
 * of the partial tail, usually nothing). A large message (>= 256 KiB) that no hook needs to see is
 * relayed as it arrives (`pass` counts its remaining bytes) instead of being buffered whole; one a
 * hook inspects is buffered up to max_message.
 *
 * Session states: STARTUP (reading the client's first packets: SSLRequest/GSSENCRequest may precede
 * the StartupMessage), CONNECT (server connection and upstream TLS: SSLRequest, then the
 * handshake), RELAY. A cancel request uses the same machinery with `cancel` set: the server
 * connection sends the 16 bytes and closes, the client is closed at once. Invariants: a client
 * message is handed to on_query at most once (`pending` keeps the head message until
 * pgp_session_resume); the client is not read while the session is not in RELAY (data sent early
 * stays buffered), nor while the server's write queue is above 1 MiB, nor while a pending decision
 * holds more than 1 MiB; likewise the server is not read while the client's queue is above 1 MiB
 * (reading resumes under 256 KiB). AuthenticationSASL is rewritten without -PLUS mechanisms until
 * the first ReadyForQuery.
 *
 * Closing: session_close stops reading, calls on_close once, and closes both sockets; a graceful
 * close (an error message or a server goodbye still queued) first shuts the socket down so queued
 * writes are flushed, for at most LINGER_MS. The session is freed in the last close callback.
 * pgp_server_stop closes every session and every handle left on the loops.
 *
 * Written by hand: the glue between libuv and OpenSSL memory BIOs and the protocol state machine
 * (no library does a PostgreSQL-protocol proxy); pgwire.c does the byte formats.
 */
#include "pgproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "pgwire.h"

#define READ_CHUNK  65536u
#define BP_HIGH     (1u << 20) /* stop reading the other side above this queue size */
#define BP_LOW      (256u << 10)
#define PENDING_MAX (1u << 20)
#define SCRATCH_LEN 65536u
#define LINGER_MS   5000u        /* how long a graceful close may take to flush */
#define STREAM_MIN  (256u << 10) /* larger unfiltered messages are relayed as they arrive */

typedef struct worker worker;
typedef struct conn conn;

struct conn {
    union {
        uv_tcp_t tcp;   /* the client; the server over TCP */
        uv_pipe_t pipe; /* the server over a unix socket */
    };
    pgp_session *s;
    bool open, reading, eof, shut;
    SSL *ssl; /* NULL: plaintext */
    bool hs_done;
    uint8_t *in; /* plaintext input */
    size_t in_len, in_cap;
    dbao_buf out; /* output batch being built (plaintext) */
    size_t wq;    /* bytes queued in write requests not yet completed */
    size_t pass;  /* bytes of a large unfiltered message still to relay as they come */
};

enum { ST_STARTUP, ST_CONNECT, ST_SSLRESP, ST_RELAY };

struct pgp_session {
    worker *w;
    pgp_session *prev, *next;
    conn cli, srv;
    uv_timer_t t_connect, t_startup;
    uv_connect_t creq;
    int state;
    int handles; /* open uv handles */
    bool closing, cancel, ready, pending, in_process, srv_started;
    bool resume_early; /* resume called from inside on_query */
    int resume_how;
    dbao_buf resume_text;
    uint8_t cancel_pkt[16];
    uint8_t *startup_pkt; /* the StartupMessage as received */
    size_t startup_len;
    pgw_startup su;
    uint8_t filter[32];
    char peer[64];
    void *data;
};

struct worker {
    pgp_server *srv;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    uv_thread_t thr;
    bool loop_ok, listener_ok, stop_ok, thr_ok;
    pgp_session *sessions;
    uint8_t scratch[SCRATCH_LEN];
};

struct pgp_server {
    pgp_opts o;
    char *listen_host, *server_host, *server_ca_file, *server_name;
    char *unix_path; /* server_host is a directory: its .s.PGSQL.<port> socket */
    struct sockaddr_storage up_addr;
    SSL_CTX *up_ctx;
    uint16_t port;
    unsigned nworkers;
    worker *w;
};

static void session_close(pgp_session *s, bool graceful);
static void process_client(pgp_session *s);
static void process_server(pgp_session *s);
static void conn_update_reading(conn *c);
static void server_send_startup(pgp_session *s);

static conn *
peer_of(conn *c)
{
    return c == &c->s->cli ? &c->s->srv : &c->s->cli;
}

/* ---- writes ------------------------------------------------------------------------------ */

typedef struct wreq {
    uv_write_t req;
    conn *c;
    size_t len;
    uint8_t data[];
} wreq;

static void
on_write(uv_write_t *req, int status)
{
    wreq *r = (wreq *) req;
    conn *c = r->c;
    pgp_session *s = c->s;
    c->wq -= r->len;
    dbao_free(r);
    if (status < 0) {
        if (!s->closing) {
            session_close(s, false);
        }
        return;
    }
    if (!s->closing && c->wq < BP_LOW) {
        conn_update_reading(peer_of(c));
    }
}

/* raw_write sends bytes on the socket: at once when nothing is queued, the rest queued. */
static int
raw_write(conn *c, const uint8_t *p, size_t n)
{
    if (n == 0 || !c->open || c->shut) {
        return 0;
    }
    if (c->wq == 0) {
        uv_buf_t b = uv_buf_init((char *) p, (unsigned) n);
        int r = uv_try_write((uv_stream_t *) &c->tcp, &b, 1);
        if (r > 0) {
            p += r;
            n -= (size_t) r;
            if (n == 0) {
                return 0;
            }
        } else if (r != UV_EAGAIN) {
            return r;
        }
    }
    wreq *w = dbao_malloc(sizeof *w + n);
    if (w == NULL) {
        return DBAO_ENOMEM;
    }
    w->c = c;
    w->len = n;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init((char *) w->data, (unsigned) n);
    int rc = uv_write(&w->req, (uv_stream_t *) &c->tcp, &b, 1, on_write);
    if (rc != 0) {
        dbao_free(w);
        return rc;
    }
    c->wq += n;
    return 0;
}

/* tls_flush sends what OpenSSL wrote into the write BIO. */
static int
tls_flush(conn *c)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    uint8_t *scratch = c->s->w->scratch;
    for (;;) {
        int n = BIO_read(wb, scratch, SCRATCH_LEN);
        if (n <= 0) {
            return 0;
        }
        int rc = raw_write(c, scratch, (size_t) n);
        if (rc != 0) {
            return rc;
        }
    }
}

/* conn_write sends plaintext bytes (encrypting them on a TLS connection). */
static int
conn_write(conn *c, const uint8_t *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (c->ssl == NULL) {
        return raw_write(c, p, n);
    }
    while (n > 0) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        if (SSL_write(c->ssl, p, (int) k) <= 0) {
            return DBAO_EIO;
        }
        p += k;
        n -= k;
    }
    return tls_flush(c);
}

static int
conn_flush_out(conn *c)
{
    int rc = conn_write(c, (const uint8_t *) c->out.data, c->out.len);
    dbao_buf_reset(&c->out);
    return rc;
}

/* ---- reads ------------------------------------------------------------------------------- */

static int
in_reserve(conn *c, size_t more)
{
    if (c->in_cap - c->in_len >= more) {
        return 0;
    }
    size_t cap = c->in_len + more;
    if (cap < 2 * c->in_cap) {
        cap = 2 * c->in_cap; /* geometric growth: a large message arrives in many reads */
    }
    uint8_t *p = dbao_realloc(c->in, cap);
    if (p == NULL) {
        return DBAO_ENOMEM;
    }
    c->in = p;
    c->in_cap = cap;
    return 0;
}

static void
in_consume(conn *c, size_t n)
{
    if (n == 0) {
        return;
    }
    if (n < c->in_len) {
        memmove(c->in, c->in + n, c->in_len - n);
    }
    c->in_len -= n;
    if (c->in_len == 0 && c->in_cap > 4 * READ_CHUNK) {
        dbao_free(c->in); /* a large message passed: give the memory back */
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void) suggested;
    conn *c = h->data;
    if (c->ssl != NULL) {
        *buf = uv_buf_init((char *) c->s->w->scratch, SCRATCH_LEN);
        return;
    }
    if (in_reserve(c, READ_CHUNK) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *) c->in + c->in_len, (unsigned) (c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static bool
conn_should_read(conn *c)
{
    pgp_session *s = c->s;
    if (s->closing || !c->open || c->eof) {
        return false;
    }
    conn *p = peer_of(c);
    if (c == &s->cli) {
        if (s->state == ST_STARTUP) {
            return true;
        }
        if (s->state != ST_RELAY) {
            return false;
        }
        if (s->pending && c->in_len > PENDING_MAX) {
            return false;
        }
    }
    return !(p->open && p->wq > BP_HIGH);
}

static void
conn_update_reading(conn *c)
{
    bool want = conn_should_read(c);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read) == 0) {
            c->reading = true;
        }
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->reading = false;
    }
}

/* send_fatal queues a FATAL ErrorResponse to the client and closes gracefully.
 */
static void
send_fatal(pgp_session *s, const char *sqlstate, const char *msg)
{
    conn *c = &s->cli;
    if (c->open && (c->ssl == NULL || c->hs_done)) {
        dbao_buf_reset(&c->out);
        if (pgw_error_build(&c->out, 'E', "FATAL", sqlstate, msg) == 0) {
            (void) conn_flush_out(c);
        }
    }
    session_close(s, true);
}

static void handle_input(conn *c);

/* tls_input feeds ciphertext to OpenSSL and collects the plaintext into c->in. Returns 0 or a
 * negative code (the session is to be closed). */
static int
tls_input(conn *c, const uint8_t *p, size_t n)
{
    BIO *rb = SSL_get_rbio(c->ssl);
    if (BIO_write(rb, p, (int) n) != (int) n) {
        return DBAO_ENOMEM;
    }
    if (!c->hs_done) {
        int r = SSL_do_handshake(c->ssl);
        int rc = tls_flush(c);
        if (rc != 0) {
            return rc;
        }
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                return 0;
            }
            ERR_clear_error();
            return DBAO_ECRYPTO;
        }
        c->hs_done = true;
        if (c == &c->s->srv) {
            server_send_startup(c->s);
            if (c->s->closing) {
                return 0;
            }
        }
    }
    for (;;) {
        if (in_reserve(c, 16384) != 0) {
            return DBAO_ENOMEM;
        }
        size_t room = c->in_cap - c->in_len;
        int k = SSL_read(c->ssl, c->in + c->in_len, room > INT32_MAX ? INT32_MAX : (int) room);
        if (k > 0) {
            c->in_len += (size_t) k;
            continue;
        }
        int e = SSL_get_error(c->ssl, k);
        (void) tls_flush(c); /* post-handshake messages, key updates */
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            return 0;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->eof = true;
            return 0;
        }
        ERR_clear_error();
        return DBAO_EIO;
    }
}

static void
on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    conn *c = st->data;
    pgp_session *s = c->s;
    if (s->closing) {
        return;
    }
    if (n < 0) {
        if (n == UV_EOF) {
            c->eof = true;
            /* The server's last words (an ErrorResponse) are already relayed. */
            session_close(s, c == &s->srv);
        } else {
            session_close(s, false);
        }
        return;
    }
    if (n == 0) {
        return;
    }
    if (c->ssl != NULL) {
        if (tls_input(c, (const uint8_t *) buf->base, (size_t) n) != 0) {
            if (c == &s->srv) {
                send_fatal(s, "08006", "TLS to the database server failed");
            } else {
                session_close(s, false);
            }
            return;
        }
        if (s->closing) {
            return;
        }
    } else {
        c->in_len += (size_t) n;
    }
    handle_input(c);
    if (!s->closing && c->eof) {
        session_close(s, c == &s->srv);
    }
}

/* ---- session lifetime -------------------------------------------------------------------- */

static void
session_free(pgp_session *s)
{
    worker *w = s->w;
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else if (w->sessions == s) {
        w->sessions = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    conn *cs[2] = {&s->cli, &s->srv};
    for (int i = 0; i < 2; i++) {
        if (cs[i]->ssl != NULL) {
            SSL_free(cs[i]->ssl);
        }
        dbao_free(cs[i]->in);
        dbao_buf_free(&cs[i]->out);
    }
    dbao_buf_free(&s->resume_text);
    dbao_free(s->startup_pkt);
    pgw_startup_free(&s->su);
    dbao_free(s);
}

static void
on_handle_closed(uv_handle_t *h)
{
    pgp_session *s = h->data;
    if (h->type == UV_TCP || h->type == UV_NAMED_PIPE) {
        s = ((conn *) h->data)->s;
    }
    if (--s->handles == 0) {
        session_free(s);
    }
}

/* shutting: a graceful close of c still flushing its queued writes */
static bool
shutting(conn *c)
{
    return c->shut && !uv_is_closing((uv_handle_t *) &c->tcp);
}

/* on_linger gives up on graceful closes that did not finish in time (a peer that does not read), or
 * at server stop. t_connect serves as the linger timer once the session closes. */
static void
on_linger(uv_timer_t *t)
{
    pgp_session *s = t->data;
    conn *cs[2] = {&s->cli, &s->srv};
    for (int i = 0; i < 2; i++) {
        if (shutting(cs[i])) {
            uv_close((uv_handle_t *) &cs[i]->tcp, on_handle_closed);
        }
    }
    if (!uv_is_closing((uv_handle_t *) t)) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *) t, on_handle_closed);
    }
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
    (void) status;
    conn *c = req->data;
    pgp_session *s = c->s;
    dbao_free(req);
    if (!uv_is_closing((uv_handle_t *) &c->tcp)) {
        uv_close((uv_handle_t *) &c->tcp, on_handle_closed);
    }
    if (!shutting(&s->cli) && !shutting(&s->srv) && !uv_is_closing((uv_handle_t *) &s->t_connect)) {
        uv_timer_stop(&s->t_connect);
        uv_close((uv_handle_t *) &s->t_connect, on_handle_closed);
    }
}

static void
conn_close(conn *c, bool graceful)
{
    if (!c->open) {
        return;
    }
    c->open = false;
    if (c->reading) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->reading = false;
    }
    if (graceful && c->wq > 0 && !c->shut) {
        uv_shutdown_t *req = dbao_malloc(sizeof *req);
        if (req != NULL) {
            req->data = c;
            if (uv_shutdown(req, (uv_stream_t *) &c->tcp, on_shutdown) == 0) {
                c->shut = true;
                return;
            }
            dbao_free(req);
        }
    }
    uv_close((uv_handle_t *) &c->tcp, on_handle_closed);
}

static void
session_close(pgp_session *s, bool graceful)
{
    if (s->closing) {
        return;
    }
    s->closing = true;
    const pgp_hooks *h = s->w->srv->o.hooks;
    if (h != NULL && h->on_close != NULL && !s->cancel) {
        h->on_close(s, s->w->srv->o.hook_arg);
    }
    uv_timer_stop(&s->t_connect);
    uv_timer_stop(&s->t_startup);
    uv_close((uv_handle_t *) &s->t_startup, on_handle_closed);
    conn_close(&s->cli, graceful);
    conn_close(&s->srv, graceful);
    if (shutting(&s->cli) || shutting(&s->srv)) {
        uv_timer_start(&s->t_connect, on_linger, LINGER_MS, 0);
    } else {
        uv_close((uv_handle_t *) &s->t_connect, on_handle_closed);
    }
}

/* ---- server side: connect, TLS, startup -------------------------------------------------- */

static void
on_timeout(uv_timer_t *t)
{
    pgp_session *s = t->data;
    if (t == &s->t_connect) {
        send_fatal(s, "08006", "could not connect to the database server: timeout");
    } else {
        send_fatal(s, "08006", "startup timeout");
    }
}

static void
server_send_startup(pgp_session *s)
{
    uv_timer_stop(&s->t_connect);
    conn *c = &s->srv;
    int rc;
    if (s->cancel) {
        rc = conn_write(c, s->cancel_pkt, sizeof s->cancel_pkt);
        session_close(s, true);
        (void) rc;
        return;
    }
    rc = conn_write(c, s->startup_pkt, s->startup_len);
    dbao_free(s->startup_pkt);
    s->startup_pkt = NULL;
    if (rc != 0) {
        session_close(s, false);
        return;
    }
    s->state = ST_RELAY;
    conn_update_reading(&s->cli);
    if (s->cli.in_len > 0) {
        process_client(s);
    }
}

static int
server_start_tls(pgp_session *s)
{
    pgp_server *srv = s->w->srv;
    conn *c = &s->srv;
    c->ssl = SSL_new(srv->up_ctx);
    if (c->ssl == NULL) {
        return DBAO_ECRYPTO;
    }
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        return DBAO_ENOMEM;
    }
    SSL_set_bio(c->ssl, rb, wb);
    SSL_set_connect_state(c->ssl);
    const char *name = srv->server_name != NULL ? srv->server_name : srv->server_host;
    struct in6_addr a6;
    bool is_ip = inet_pton(AF_INET, name, &a6) == 1 || inet_pton(AF_INET6, name, &a6) == 1;
    if (!is_ip) {
        SSL_set_tlsext_host_name(c->ssl, name);
    }
    if (srv->o.server_tls == PGP_TLS_VERIFY) {
        if (is_ip) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
        } else {
            SSL_set1_host(c->ssl, name);
        }
    }
    int r = SSL_do_handshake(c->ssl);
    (void) r;
    ERR_clear_error();
    return tls_flush(c);
}

static void
on_connect(uv_connect_t *req, int status)
{
    pgp_session *s = req->data;
    if (s->closing) {
        return;
    }
    if (status < 0) {
        send_fatal(s, "08006", "could not connect to the database server");
        return;
    }
    conn *c = &s->srv;
    if (s->w->srv->unix_path == NULL) {
        uv_tcp_nodelay(&c->tcp, 1);
    }
    if (s->w->srv->o.server_tls != PGP_TLS_DISABLE) {
        uint8_t req8[8];
        pgw_put32(req8, 8);
        pgw_put32(req8 + 4, PGW_SSL_REQUEST);
        if (raw_write(c, req8, 8) != 0) {
            session_close(s, false);
            return;
        }
        s->state = ST_SSLRESP;
        conn_update_reading(c);
        return;
    }
    conn_update_reading(c);
    server_send_startup(s);
}

static void
server_connect(pgp_session *s)
{
    pgp_server *srv = s->w->srv;
    s->state = ST_CONNECT;
    conn_update_reading(&s->cli);
    int rc = srv->unix_path != NULL ? uv_pipe_init(&s->w->loop, &s->srv.pipe, 0)
                                    : uv_tcp_init(&s->w->loop, &s->srv.tcp);
    if (rc != 0) {
        send_fatal(s, "08006", "could not connect to the database server");
        return;
    }
    s->srv.tcp.data = &s->srv;
    s->srv.open = true;
    s->handles++;
    s->srv_started = true;
    s->creq.data = s;
    if (srv->unix_path != NULL) {
        uv_pipe_connect(&s->creq, &s->srv.pipe, srv->unix_path, on_connect);
    } else if (uv_tcp_connect(&s->creq, &s->srv.tcp, (const struct sockaddr *) &srv->up_addr,
                              on_connect) != 0) {
        send_fatal(s, "08006", "could not connect to the database server");
        return;
    }
    uv_timer_start(&s->t_connect, on_timeout, srv->o.connect_timeout_ms, 0);
}

/* server_sslresp handles the one-byte answer to our SSLRequest. */
static void
server_sslresp(pgp_session *s)
{
    conn *c = &s->srv;
    if (c->in_len == 0) {
        return;
    }
    uint8_t a = c->in[0];
    if (c->in_len > 1) {
        send_fatal(s, "08P01", "unexpected data from the database server after its TLS answer");
        return;
    }
    c->in_len = 0;
    if (a == 'S') {
        if (server_start_tls(s) != 0) {
            send_fatal(s, "08006", "cannot start TLS to the database server");
        }
        return;
    }
    if (a == 'N' && s->w->srv->o.server_tls == PGP_TLS_PREFER) {
        s->state = ST_CONNECT;
        server_send_startup(s);
        return;
    }
    send_fatal(s, "08006", "the database server refused TLS");
}

/* ---- client startup ---------------------------------------------------------------------- */

static int
client_start_tls(pgp_session *s)
{
    conn *c = &s->cli;
    c->ssl = SSL_new(s->w->srv->o.client_tls);
    if (c->ssl == NULL) {
        return DBAO_ECRYPTO;
    }
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        return DBAO_ENOMEM;
    }
    SSL_set_bio(c->ssl, rb, wb);
    SSL_set_accept_state(c->ssl);
    return 0;
}

static void
client_startup(pgp_session *s)
{
    conn *c = &s->cli;
    pgp_server *srv = s->w->srv;
    size_t total;
    int r = pgw_startup_frame(c->in, c->in_len, &total);
    if (r == 0) {
        return;
    }
    if (r < 0) {
        session_close(s, false);
        return;
    }
    pgw_startup su;
    dbao_err err;
    dbao_err_clear(&err);
    r = pgw_startup_parse(&su, c->in, total, &err);
    if (r == DBAO_ENOTSUP) {
        send_fatal(s, "0A000", "unsupported frontend protocol");
        return;
    }
    if (r != 0) {
        send_fatal(s, "08P01", "invalid startup packet");
        return;
    }
    switch (su.kind) {
    case PGW_SSL:
    case PGW_GSSENC: {
        /* Bytes pipelined behind an encryption request would bypass it (CVE-2021-23214). */
        if (total != c->in_len || c->ssl != NULL) {
            session_close(s, false);
            return;
        }
        in_consume(c, total);
        bool tls = su.kind == PGW_SSL && srv->o.client_tls != NULL && c->ssl == NULL;
        uint8_t a = tls ? 'S' : 'N';
        if (raw_write(c, &a, 1) != 0 || (tls && client_start_tls(s) != 0)) {
            session_close(s, false);
        }
        return;
    }
    case PGW_CANCEL:
        memcpy(s->cancel_pkt, c->in, 16);
        s->cancel = true;
        conn_close(c, false);
        server_connect(s);
        return;
    case PGW_STARTUP:
        break;
    }
    if (srv->o.require_client_tls && c->ssl == NULL) {
        pgw_startup_free(&su);
        send_fatal(s, "28000", "TLS is required");
        return;
    }
    s->su = su;
    s->startup_pkt = dbao_malloc(total);
    if (s->startup_pkt == NULL) {
        session_close(s, false);
        return;
    }
    memcpy(s->startup_pkt, c->in, total);
    s->startup_len = total;
    in_consume(c, total);
    const pgp_hooks *h = srv->o.hooks;
    if (h != NULL && h->on_startup != NULL) {
        char state[6] = "28000";
        dbao_buf msg = {0};
        int hr = h->on_startup(s, srv->o.hook_arg, s->su.params, state, &msg);
        if (hr < 0) {
            state[5] = 0;
            send_fatal(s, state, msg.len > 0 ? msg.data : "connection refused");
            dbao_buf_free(&msg);
            return;
        }
        dbao_buf_free(&msg);
    }
    server_connect(s);
}

/* ---- relay ------------------------------------------------------------------------------- */

/* emit appends the span [*start, end) of src's input to the batch of dst. */
static int
emit_span(conn *src, conn *dst, size_t *start, size_t end)
{
    int rc = 0;
    if (end > *start) {
        rc = dbao_buf_put(&dst->out, src->in + *start, end - *start);
    }
    *start = end;
    return rc;
}

/* finish_batch writes dst's batch; when nothing was rewritten the span goes out directly from the
 * input buffer. */
static int
finish_batch(conn *src, conn *dst, size_t start, size_t end)
{
    int rc;
    if (dst->out.len == 0) {
        rc = conn_write(dst, src->in + start, end - start);
    } else {
        rc = emit_span(src, dst, &start, end);
        if (rc == 0) {
            rc = conn_flush_out(dst);
        } else {
            dbao_buf_reset(&dst->out);
        }
    }
    return rc;
}

/* apply_query puts the rewritten form of the client message at `msg` (a Q or P) into the server
 * batch. */
static int
apply_replacement(conn *srv, const uint8_t *msg, size_t total, const char *text, size_t len)
{
    if (msg[0] == 'Q') {
        return pgw_query_encode(&srv->out, text, len);
    }
    pgw_parse p;
    int rc = pgw_parse_decode(&p, msg + 5, total - 5);
    return rc != 0 ? rc : pgw_parse_encode(&srv->out, &p, text, len);
}

/* stream_start: at `pos` starts an incomplete message whose header is in; when it is large and
 * needs no inspection (`inspect` false), relay what is there now and the rest as it comes
 * (c->pass), instead of buffering it whole. Returns true when streaming started. */
static bool
stream_start(conn *c, size_t pos, bool inspect)
{
    size_t have = c->in_len - pos;
    if (inspect || have < 5) {
        return false;
    }
    size_t total = (size_t) pgw_get32(c->in + pos + 1) + 1; /* header checked by pgw_frame */
    if (total < STREAM_MIN) {
        return false;
    }
    c->pass = total - have;
    return true;
}

static void
process_client(pgp_session *s)
{
    conn *c = &s->cli, *d = &s->srv;
    pgp_server *srv = s->w->srv;
    const pgp_hooks *h = srv->o.hooks;
    size_t pos = 0, start = 0;
    bool terminate = false;
    int rc = 0;
    if (s->in_process) {
        return;
    }
    s->in_process = true;
    bool hooked = h != NULL && h->on_query != NULL;
    while (!s->pending && !s->closing) {
        uint8_t type;
        size_t total;
        if (c->pass > 0) {
            size_t k = c->in_len - pos < c->pass ? c->in_len - pos : c->pass;
            pos += k;
            c->pass -= k;
            if (c->pass > 0) {
                break;
            }
        }
        int r = pgw_frame(c->in + pos, c->in_len - pos, srv->o.max_message, &type, &total);
        if (r == 0) {
            if (stream_start(c, pos, hooked && (c->in[pos] == 'Q' || c->in[pos] == 'P'))) {
                pos = c->in_len;
            }
            break;
        }
        if (r < 0) {
            (void) finish_batch(c, d, start, pos);
            s->in_process = false;
            send_fatal(s, r == DBAO_ERANGE ? "54000" : "08P01",
                       r == DBAO_ERANGE ? "message too large" : "invalid message length");
            return;
        }
        if (type == 'X') {
            pos += total;
            terminate = true;
            break;
        }
        if ((type == 'Q' || type == 'P') && h != NULL && h->on_query != NULL) {
            const uint8_t *pl = c->in + pos + 5;
            const char *sql;
            size_t sql_len;
            pgw_parse p;
            if (type == 'Q') {
                rc = pgw_query_decode(pl, total - 5, &sql, &sql_len);
            } else {
                rc = pgw_parse_decode(&p, pl, total - 5);
                sql = p.sql;
                sql_len = p.sql_len;
            }
            if (rc != 0) {
                (void) finish_batch(c, d, start, pos);
                s->in_process = false;
                send_fatal(s, "08P01", "malformed message");
                return;
            }
            dbao_buf repl = {0};
            s->resume_early = false;
            int hr = h->on_query(s, srv->o.hook_arg, type == 'P', sql, sql_len, &repl);
            if (hr == PGP_PENDING && s->resume_early) {
                hr = s->resume_how;
                dbao_buf_free(&repl);
                repl = s->resume_text;
                memset(&s->resume_text, 0, sizeof s->resume_text);
            }
            if (hr == PGP_REPLACE) {
                rc = emit_span(c, d, &start, pos);
                if (rc == 0) {
                    rc = apply_replacement(d, c->in + pos, total, repl.data ? repl.data : "",
                                           repl.len);
                }
                start = pos + total;
            } else if (hr == PGP_PENDING) {
                s->pending = true;
            } else if (hr != PGP_FORWARD) {
                rc = hr < 0 ? hr : DBAO_EINVAL;
            }
            dbao_buf_free(&repl);
            if (rc != 0) {
                s->in_process = false;
                session_close(s, false);
                return;
            }
            if (s->pending) {
                break;
            }
        }
        pos += total;
    }
    rc = finish_batch(c, d, start, pos);
    in_consume(c, pos);
    s->in_process = false;
    if (rc != 0) {
        session_close(s, false);
        return;
    }
    if (terminate) {
        uint8_t x[5] = {'X', 0, 0, 0, 4};
        (void) conn_write(d, x, 5);
        session_close(s, true);
        return;
    }
    if (!s->closing) {
        conn_update_reading(c);
    }
}

static bool
filtered(const pgp_session *s, uint8_t type)
{
    return (s->filter[type >> 3] >> (type & 7)) & 1;
}

static void
process_server(pgp_session *s)
{
    conn *c = &s->srv, *d = &s->cli;
    pgp_server *srv = s->w->srv;
    const pgp_hooks *h = srv->o.hooks;
    size_t pos = 0, start = 0;
    int rc = 0;
    bool hook = h != NULL && h->on_server_msg != NULL;
    while (!s->closing) {
        uint8_t type;
        size_t total;
        if (c->pass > 0) {
            size_t k = c->in_len - pos < c->pass ? c->in_len - pos : c->pass;
            pos += k;
            c->pass -= k;
            if (c->pass > 0) {
                break;
            }
        }
        int r = pgw_frame(c->in + pos, c->in_len - pos, srv->o.max_message, &type, &total);
        if (r == 0) {
            if (stream_start(c, pos,
                             (hook && filtered(s, c->in[pos])) ||
                                 (!s->ready && c->in[pos] == 'R'))) {
                pos = c->in_len;
            }
            break;
        }
        if (r < 0) {
            (void) finish_batch(c, d, start, pos);
            send_fatal(s, "08P01", "invalid message from the database server");
            return;
        }
        const uint8_t *pl = c->in + pos + 5;
        if (!s->ready) {
            if (type == 'R' && total - 5 >= 4 && pgw_get32(pl) == 10) {
                dbao_buf tmp = {0};
                int fr = pgw_sasl_filter(pl, total - 5, &tmp);
                if (fr == 1) {
                    rc = emit_span(c, d, &start, pos);
                    if (rc == 0) {
                        rc = pgw_msg_put(&d->out, 'R', tmp.data, tmp.len);
                    }
                    start = pos + total;
                } else if (fr < 0) {
                    rc = fr;
                }
                dbao_buf_free(&tmp);
            } else if (type == 'Z') {
                s->ready = true;
                uv_timer_stop(&s->t_startup);
            }
        }
        if (rc == 0 && hook && filtered(s, type)) {
            dbao_buf out = {0};
            int hr = h->on_server_msg(s, srv->o.hook_arg, type, pl, total - 5, &out);
            if (hr == 1 || hr == 2) {
                rc = emit_span(c, d, &start, pos);
                if (rc == 0 && hr == 1) {
                    rc = pgw_msg_put(&d->out, type, out.data, out.len);
                }
                start = pos + total;
            } else if (hr != 0) {
                rc = hr < 0 ? hr : DBAO_EINVAL;
            }
            dbao_buf_free(&out);
        }
        if (rc != 0) {
            break;
        }
        pos += total;
    }
    if (rc == 0) {
        rc = finish_batch(c, d, start, pos);
    } else {
        dbao_buf_reset(&d->out);
    }
    in_consume(c, pos);
    if (rc != 0) {
        session_close(s, false);
        return;
    }
    if (!s->closing && d->wq > BP_HIGH) {
        conn_update_reading(c);
    }
}

static void
handle_input(conn *c)
{
    pgp_session *s = c->s;
    if (c == &s->cli) {
        if (s->state == ST_STARTUP) {
            /* Several startup packets may be in the buffer (GSSENC then SSL, say), but a TLS switch
             * consumes everything, and after the StartupMessage the state changes. */
            while (!s->closing && s->state == ST_STARTUP && c->in_len > 0) {
                size_t before = c->in_len;
                client_startup(s);
                if (c->in_len == before) {
                    break;
                }
            }
            return;
        }
        if (s->state == ST_RELAY && !s->pending) {
            process_client(s);
        } else {
            conn_update_reading(c);
        }
        return;
    }
    if (s->state == ST_SSLRESP && c->ssl == NULL) {
        server_sslresp(s);
        return;
    }
    if (s->cancel) {
        c->in_len = 0;
        return;
    }
    process_server(s);
}

/* ---- accept ------------------------------------------------------------------------------ */

static void
on_connection(uv_stream_t *ls, int status)
{
    worker *w = ls->data;
    if (status < 0) {
        return;
    }
    pgp_session *s = dbao_calloc(1, sizeof *s);
    if (s == NULL) {
        return;
    }
    s->w = w;
    s->cli.s = s;
    s->srv.s = s;
    if (uv_tcp_init(&w->loop, &s->cli.tcp) != 0) {
        dbao_free(s);
        return;
    }
    s->cli.tcp.data = &s->cli;
    s->cli.open = true;
    s->handles = 3;
    uv_timer_init(&w->loop, &s->t_connect);
    uv_timer_init(&w->loop, &s->t_startup);
    s->t_connect.data = s;
    s->t_startup.data = s;
    s->next = w->sessions;
    if (w->sessions != NULL) {
        w->sessions->prev = s;
    }
    w->sessions = s;
    if (uv_accept(ls, (uv_stream_t *) &s->cli.tcp) != 0) {
        session_close(s, false);
        return;
    }
    uv_tcp_nodelay(&s->cli.tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&s->cli.tcp, (struct sockaddr *) &ss, &sl) == 0) {
        char ip[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *) &ss;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
        }
        snprintf(s->peer, sizeof s->peer, "%s:%u", ip, port);
    }
    uv_timer_start(&s->t_startup, on_timeout, w->srv->o.startup_timeout_ms, 0);
    conn_update_reading(&s->cli);
}

/* ---- workers ----------------------------------------------------------------------------- */

static void
on_walk_close(uv_handle_t *h, void *arg)
{
    (void) arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void
on_stop(uv_async_t *a)
{
    worker *w = a->data;
    while (w->sessions != NULL) {
        pgp_session *s = w->sessions;
        if (!s->closing) {
            session_close(s, false);
        }
        /* a graceful close still flushing: give up on it (the shutdown is cancelled) */
        if (!uv_is_closing((uv_handle_t *) &s->t_connect)) {
            on_linger(&s->t_connect);
        }
        /* unlink now: it is freed in its close callbacks */
        w->sessions = s->next;
        if (s->next != NULL) {
            s->next->prev = NULL;
        }
        s->next = s->prev = NULL;
    }
    if (w->listener_ok) {
        uv_close((uv_handle_t *) &w->listener, NULL);
    }
    uv_close((uv_handle_t *) &w->stop, NULL);
    /* Handles that hooks opened on this loop (pgp_session_loop) and left open would keep it running
     * forever: close them too, without a callback. */
    uv_walk(&w->loop, on_walk_close, NULL);
}

static void
worker_main(void *arg)
{
    worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* handles started by hooks and never closed: close them so the loop can end
     */
    uv_walk(&w->loop, on_walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static int
worker_listen(pgp_server *srv, worker *w, const struct sockaddr *addr, dbao_err *err)
{
    int rc;
    if ((rc = uv_tcp_init_ex(&w->loop, &w->listener, addr->sa_family)) != 0) {
        return dbao_err_set(err, rc, "cannot create a socket: %s", uv_strerror(rc));
    }
    w->listener.data = w;
    w->listener_ok = true;
    if (srv->nworkers > 1) {
        uv_os_fd_t fd;
        int one = 1;
        if ((rc = uv_fileno((uv_handle_t *) &w->listener, &fd)) != 0) {
            return dbao_err_set(err, rc, "cannot get the listening socket: %s", uv_strerror(rc));
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            rc = -errno;
            return dbao_err_set(err, rc, "cannot set SO_REUSEPORT: %s", strerror(-rc));
        }
    }
    if ((rc = uv_tcp_bind(&w->listener, addr, 0)) != 0) {
        return dbao_err_set(err, rc, "cannot bind %s:%u: %s", srv->listen_host, srv->port,
                            uv_strerror(rc));
    }
    if ((rc = uv_listen((uv_stream_t *) &w->listener, 1024, on_connection)) != 0) {
        return dbao_err_set(err, rc, "cannot listen on %s:%u: %s", srv->listen_host, srv->port,
                            uv_strerror(rc));
    }
    return 0;
}

static char *
dup_str(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *d = dbao_malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

static int
make_addr(struct sockaddr_storage *ss, const char *host, uint16_t port, dbao_err *err)
{
    memset(ss, 0, sizeof *ss);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *) ss) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *) ss) == 0) {
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int r = getaddrinfo(host, NULL, &hints, &res);
    if (r != 0 || res == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "cannot resolve %s", host);
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (ss->ss_family == AF_INET) {
        ((struct sockaddr_in *) ss)->sin_port = htons(port);
    } else {
        ((struct sockaddr_in6 *) ss)->sin6_port = htons(port);
    }
    freeaddrinfo(res);
    return 0;
}

static void
server_free(pgp_server *srv)
{
    if (srv->w != NULL) {
        for (unsigned i = 0; i < srv->nworkers; i++) {
            worker *w = &srv->w[i];
            if (w->loop_ok) {
                uv_loop_close(&w->loop);
            }
        }
        dbao_free(srv->w);
    }
    SSL_CTX_free(srv->up_ctx);
    dbao_free(srv->listen_host);
    dbao_free(srv->server_host);
    dbao_free(srv->server_ca_file);
    dbao_free(srv->server_name);
    dbao_free(srv->unix_path);
    dbao_free(srv);
}

/* worker_abort closes what a worker that never started has opened. */
static void
worker_abort(worker *w)
{
    if (!w->loop_ok) {
        return;
    }
    uv_walk(&w->loop, on_walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

int
pgp_server_start(pgp_server **out, const pgp_opts *opts, dbao_err *err)
{
    *out = NULL;
    if (opts == NULL || opts->server_host == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "pgproxy: server_host is required");
    }
    if (opts->workers > 256) {
        return dbao_err_set(err, DBAO_EINVAL, "pgproxy: at most 256 workers");
    }
    /* A write to a socket the peer has closed must fail with EPIPE, not kill the process
     * (uv_try_write cannot pass MSG_NOSIGNAL); the net layer does the same. */
    signal(SIGPIPE, SIG_IGN);
    pgp_server *srv = dbao_calloc(1, sizeof *srv);
    if (srv == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    srv->o = *opts;
    int rc = 0;
    srv->listen_host = dup_str(opts->listen_host != NULL ? opts->listen_host : "127.0.0.1");
    srv->server_host = dup_str(opts->server_host);
    srv->server_ca_file = dup_str(opts->server_ca_file);
    srv->server_name = dup_str(opts->server_name);
    if (srv->listen_host == NULL || srv->server_host == NULL ||
        (opts->server_ca_file != NULL && srv->server_ca_file == NULL) ||
        (opts->server_name != NULL && srv->server_name == NULL)) {
        server_free(srv);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    srv->o.listen_host = srv->listen_host;
    srv->o.server_host = srv->server_host;
    srv->o.server_ca_file = srv->server_ca_file;
    srv->o.server_name = srv->server_name;
    if (srv->o.workers == 0) {
        srv->o.workers = 1;
    }
    if (srv->o.connect_timeout_ms == 0) {
        srv->o.connect_timeout_ms = 5000;
    }
    if (srv->o.startup_timeout_ms == 0) {
        srv->o.startup_timeout_ms = 30000;
    }
    if (srv->o.max_message == 0) {
        srv->o.max_message = 64u << 20;
    }
    if (srv->o.max_message < 5) {
        srv->o.max_message = 5;
    }
    if (srv->server_host[0] == '/') {
        size_t n = strlen(srv->server_host) + 32;
        srv->unix_path = dbao_malloc(n);
        if (srv->unix_path == NULL) {
            server_free(srv);
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        }
        snprintf(srv->unix_path, n, "%s/.s.PGSQL.%u", srv->server_host, opts->server_port);
    } else if ((rc = make_addr(&srv->up_addr, srv->server_host, opts->server_port, err)) != 0) {
        server_free(srv);
        return rc;
    }
    if (srv->o.server_tls != PGP_TLS_DISABLE) {
        srv->up_ctx = SSL_CTX_new(TLS_client_method());
        if (srv->up_ctx == NULL ||
            SSL_CTX_set_min_proto_version(srv->up_ctx, TLS1_2_VERSION) != 1) {
            server_free(srv);
            return dbao_err_set(err, DBAO_ECRYPTO, "pgproxy: cannot create the TLS context");
        }
        if (srv->o.server_tls == PGP_TLS_VERIFY) {
            if (srv->server_ca_file == NULL ||
                SSL_CTX_load_verify_locations(srv->up_ctx, srv->server_ca_file, NULL) != 1) {
                ERR_clear_error();
                server_free(srv);
                return dbao_err_set(err, DBAO_EINVAL, "pgproxy: cannot load server_ca_file");
            }
            SSL_CTX_set_verify(srv->up_ctx, SSL_VERIFY_PEER, NULL);
        } else {
            SSL_CTX_set_verify(srv->up_ctx, SSL_VERIFY_NONE, NULL);
        }
    }
    struct sockaddr_storage la;
    if ((rc = make_addr(&la, srv->listen_host, opts->listen_port, err)) != 0) {
        server_free(srv);
        return rc;
    }
    srv->nworkers = srv->o.workers;
    srv->w = dbao_calloc(srv->nworkers, sizeof *srv->w);
    if (srv->w == NULL) {
        server_free(srv);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    srv->port = opts->listen_port;
    for (unsigned i = 0; i < srv->nworkers && rc == 0; i++) {
        worker *w = &srv->w[i];
        w->srv = srv;
        if ((rc = uv_loop_init(&w->loop)) != 0) {
            rc = dbao_err_set(err, rc, "cannot create an event loop: %s", uv_strerror(rc));
            break;
        }
        w->loop_ok = true;
        if ((rc = uv_async_init(&w->loop, &w->stop, on_stop)) != 0) {
            rc = dbao_err_set(err, rc, "cannot create an async handle: %s", uv_strerror(rc));
            break;
        }
        w->stop.data = w;
        w->stop_ok = true;
        if (srv->port != 0) {
            if (la.ss_family == AF_INET) {
                ((struct sockaddr_in *) &la)->sin_port = htons(srv->port);
            } else {
                ((struct sockaddr_in6 *) &la)->sin6_port = htons(srv->port);
            }
        }
        if ((rc = worker_listen(srv, w, (const struct sockaddr *) &la, err)) != 0) {
            break;
        }
        if (srv->port == 0) {
            struct sockaddr_storage b;
            int bl = sizeof b;
            uv_tcp_getsockname(&w->listener, (struct sockaddr *) &b, &bl);
            srv->port = ntohs(b.ss_family == AF_INET ? ((struct sockaddr_in *) &b)->sin_port
                                                     : ((struct sockaddr_in6 *) &b)->sin6_port);
        }
    }
    if (rc != 0) {
        for (unsigned i = 0; i < srv->nworkers; i++) {
            worker_abort(&srv->w[i]);
        }
        server_free(srv);
        return rc;
    }
    for (unsigned i = 0; i < srv->nworkers; i++) {
        worker *w = &srv->w[i];
        if ((rc = uv_thread_create(&w->thr, worker_main, w)) != 0) {
            rc = dbao_err_set(err, rc, "cannot start a worker thread: %s", uv_strerror(rc));
            srv->nworkers = i; /* stop what started; abort the rest */
            for (unsigned j = i; j < srv->o.workers; j++) {
                worker_abort(&srv->w[j]);
                uv_loop_close(&srv->w[j].loop);
                srv->w[j].loop_ok = false;
            }
            pgp_server_stop(srv);
            return rc;
        }
        w->thr_ok = true;
    }
    *out = srv;
    return 0;
}

uint16_t
pgp_server_port(const pgp_server *srv)
{
    return srv->port;
}

void
pgp_server_stop(pgp_server *srv)
{
    if (srv == NULL) {
        return;
    }
    for (unsigned i = 0; i < srv->nworkers; i++) {
        if (srv->w[i].thr_ok) {
            uv_async_send(&srv->w[i].stop);
        }
    }
    for (unsigned i = 0; i < srv->nworkers; i++) {
        if (srv->w[i].thr_ok) {
            uv_thread_join(&srv->w[i].thr);
        }
    }
    server_free(srv);
}

/* ---- session accessors ------------------------------------------------------------------- */

const char *
pgp_session_param(const pgp_session *s, const char *key)
{
    return pgw_startup_get(&s->su, key);
}

const char *
pgp_session_peer(const pgp_session *s)
{
    return s->peer;
}

bool
pgp_session_client_tls(const pgp_session *s)
{
    return s->cli.ssl != NULL;
}

void
pgp_session_set_data(pgp_session *s, void *data)
{
    s->data = data;
}

void *
pgp_session_data(const pgp_session *s)
{
    return s->data;
}

void
pgp_session_filter(pgp_session *s, uint8_t type, bool on)
{
    if (on) {
        s->filter[type >> 3] |= (uint8_t) (1u << (type & 7));
    } else {
        s->filter[type >> 3] &= (uint8_t) ~(1u << (type & 7));
    }
}

struct uv_loop_s *
pgp_session_loop(pgp_session *s)
{
    return &s->w->loop;
}

void
pgp_session_resume(pgp_session *s, int how, const char *text, size_t len)
{
    if (s->closing) {
        return;
    }
    if (s->in_process && !s->pending) {
        /* called from inside on_query, before it returned PGP_PENDING */
        s->resume_early = true;
        s->resume_how = how;
        dbao_buf_reset(&s->resume_text);
        if (how == PGP_REPLACE && dbao_buf_put(&s->resume_text, text, len) != 0) {
            s->resume_how = DBAO_ENOMEM;
        }
        return;
    }
    if (!s->pending) {
        return;
    }
    s->pending = false;
    conn *c = &s->cli, *d = &s->srv;
    uint8_t type;
    size_t total;
    if (pgw_frame(c->in, c->in_len, s->w->srv->o.max_message, &type, &total) != 1) {
        session_close(s, false);
        return;
    }
    int rc;
    if (how == PGP_FORWARD) {
        rc = conn_write(d, c->in, total);
    } else if (how == PGP_REPLACE) {
        rc = apply_replacement(d, c->in, total, text != NULL ? text : "", len);
        if (rc == 0) {
            rc = conn_flush_out(d);
        } else {
            dbao_buf_reset(&d->out);
        }
    } else {
        rc = how < 0 ? how : DBAO_EINVAL;
    }
    if (rc != 0) {
        session_close(s, false);
        return;
    }
    in_consume(c, total);
    process_client(s);
}
