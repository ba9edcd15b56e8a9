/* loadgen.c (the clearing_loadgen tool): open-loop load generator for `dengbao clearing` over
 * loopback TCP (issue 8, "Done means": >= 150,000 events/s with p99 <= 2 ms at 5,000 connections,
 * durable journal on).
 *
 * Protocol: the clearing binary protocol (docs/clearing-protocol.md) through the library's
 * codecs only: clr_wire_encode_event for requests, clr_wire_decode_result for answers, so the
 * loadgen speaks exactly what the daemon speaks. Each request has a unique request id; the
 * answer (RESULT, or ERROR) is matched to it by that id, never by order.
 *
 * Open loop: P processes (fork) each own C / P connections and send R / P events/s. Slot i of
 * a process has the intended send time t0 + i * P / R (t0 is common to every process: the
 * parent hands it out once all are connected and set up); its connection is i mod (C / P), so
 * every connection sends R / C events/s. The request id encodes (process, i), so the intended
 * time is recomputed from the id when the answer arrives, and latency = arrival time -
 * intended send time: a slow server delays every request scheduled behind a stall and each of
 * them counts (coordinated omission corrected). Sending is driven by a timerfd (absolute
 * CLOCK_MONOTONIC) armed for the next due slot but at least --tick-us (default 50 us) ahead,
 * so a process wakes at most 20,000 times a second; a slot sent late by that tick is charged
 * to the measured latency (never hidden). Latency histogram: the hand-written HDR-style
 * log-linear one in bench/clearing/hist.h (2 significant digits, 1 ns..10 s); each child
 * writes its bucket array into a pipe and the parent adds them up.
 *
 * I/O: epoll directly (Linux; builds on x86-64 and aarch64), level-triggered, non-blocking
 * sockets, TCP_NODELAY, one write per connection per tick with everything due on it, reads
 * drained until EAGAIN. No libuv: a bench tool wants the fewest layers between it and the
 * kernel.
 *
 * Workload: a setup phase (closed loop, not measured) opens --accounts-per-conn accounts per
 * connection (ids from --account-base, so successive runs against one daemon never collide),
 * deposits 10^8 yuan and transfers in 10^6 shares of --security into each; then the measured
 * mix on every connection alternates a new limit order (buys and sells in turn, --price fen,
 * --qty shares) and a full fill of the oldest open order of that connection (at the limit,
 * exec id = order id): 50 % orders, 50 % fills. The fill of an order travels on the same
 * connection after it, so it reaches the account's shard after the order.
 *
 * Output (one line, parsed by bench/clearing/run.sh):
 *   loadgen conns=C procs=P offered=R achieved=A sent=S answered=N p50_us= p99_us= p999_us=
 *   max_us= errors=E rejects=J lost=L setup_s=T
 * achieved counts answers arriving inside the measured window (after --warmup) per second;
 * rejects are RESULT frames with a business reject; errors are ERROR frames, decode failures
 * and closed connections; lost are requests unanswered --drain-ms after the last send (they
 * are recorded in the histogram at their age at that moment, a lower bound: losing requests
 * never improves the percentiles).
 * Exit status 0 when errors and lost are 0.
 *
 * --self-test runs an echo server of its own (a forked process answering each EVENT frame with
 * a RESULT frame, reject OK) and loads it: the loadgen is testable without the daemon.
 *
 * RLIMIT_NOFILE is raised to the hard limit (20,000 here) before the children fork.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "dengbao/clearing.h"

#define SETUP_BIT    ((uint64_t) 1 << 63)
#define PROC_SHIFT   40
#define INBUF        8192
#define MAX_PROCS    64
#define OPEN_FIFO    64 /* open orders remembered per connection (power of two) */
#define SETUP_CASH   ((int64_t) 10000000000)
#define SETUP_SHARES ((int64_t) 1000000)

typedef struct opts {
    const char *host;
    int port;
    int conns, procs;
    int64_t rate;    /* total events/s */
    double duration; /* measured seconds */
    double warmup;   /* seconds sent but not recorded */
    int acc_per_conn;
    uint64_t account_base;
    uint32_t security;
    int64_t price, qty;
    int64_t tick_ns;
    int drain_ms;
    bool self_test;
    bool quiet;
} opts;

static opts g_o = {
    .host = "127.0.0.1",
    .conns = 100,
    .procs = 2,
    .rate = 10000,
    .duration = 5,
    .warmup = 1,
    .acc_per_conn = 1,
    .account_base = 1,
    .security = 600000,
    .price = 1000,
    .qty = 100,
    .tick_ns = 50000,
    .drain_ms = 3000,
};

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
fatal(const char *what)
{
    fprintf(stderr, "clearing_loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static bool
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t) w;
    }
    return true;
}
static bool
read_all(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t) r;
    }
    return true;
}

/* ---- connections -------------------------------------------------------------------------- */

typedef struct conn {
    int fd;
    bool dead, want_out;
    uint8_t *out;
    size_t out_len, out_cap;
    uint8_t in[INBUF];
    size_t in_len;
    uint64_t first_acc;
    uint64_t next_oid; /* per connection; accounts take turns */
    uint64_t fifo_acc[OPEN_FIFO], fifo_oid[OPEN_FIFO];
    int64_t fifo_px[OPEN_FIFO];
    unsigned fifo_head, fifo_tail;
    unsigned turn; /* alternates order / fill */
    uint64_t setup_pending;
} conn;

typedef struct stats {
    uint64_t sent, answered, in_window, errors, rejects, lost, setup_rejects;
    int64_t setup_ns;
    hist h;
} stats;

static void
out_put(conn *c, const uint8_t *frame, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
        while (cap < c->out_len + n)
            cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p) {
            fprintf(stderr, "clearing_loadgen: out of memory\n");
            exit(2);
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, frame, n);
    c->out_len += n;
}

static void
conn_kill(conn *c, int ep, stats *st)
{
    if (c->dead)
        return;
    c->dead = true;
    st->errors++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void
conn_flush(conn *c, int ep, stats *st)
{
    if (c->dead)
        return;
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t w = write(c->fd, c->out + off, c->out_len - off);
        if (w > 0) {
            off += (size_t) w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_kill(c, ep, st);
        return;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    bool want = c->out_len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
}

static int
connect_one(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        fatal("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t) g_o.port)};
    if (inet_pton(AF_INET, g_o.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "clearing_loadgen: --host must be an IPv4 address\n");
        exit(2);
    }
    for (int tries = 0;; tries++) {
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0)
            break;
        if (errno == EINTR)
            continue;
        if (tries < 50 && (errno == ECONNREFUSED || errno == EAGAIN)) {
            usleep(20000);
            close(fd);
            fd = socket(AF_INET, SOCK_STREAM, 0);
            continue;
        }
        fatal("connect");
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* ---- the child: connect, set up, wait for t0, run, report -------------------------------------
 */

typedef struct child {
    int idx, nconn;
    int64_t rate; /* this process's events/s */
    conn *c;
    int ep;
    stats st;
    int64_t t0, t_meas0, t_meas1;
    unsigned __int128 step; /* ns per slot, 32.32 fixed point */
    uint64_t outstanding;
    uint8_t *answered; /* bit per slot: duplicate answers are errors, the unanswered are lost */
    uint64_t nslots;
} child;

static void
handle_input(child *ch, conn *c)
{
    for (;;) {
        size_t room = INBUF - c->in_len;
        ssize_t r = read(c->fd, c->in + c->in_len, room);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r <= 0) {
            conn_kill(c, ch->ep, &ch->st);
            return;
        }
        c->in_len += (size_t) r;
        int64_t t = now_ns();
        size_t off = 0;
        for (;;) {
            clr_result res;
            uint64_t rid;
            uint16_t ecode = 0;
            dbao_err err = {0};
            int n = clr_wire_decode_result(c->in + off, c->in_len - off, &res, &rid, &ecode, &err);
            if (n == 0)
                break;
            if (n < 0) {
                if (!g_o.quiet)
                    fprintf(stderr, "clearing_loadgen: bad answer frame: %s\n", err.msg);
                conn_kill(c, ch->ep, &ch->st);
                return;
            }
            off += (size_t) n;
            if (ch->outstanding)
                ch->outstanding--;
            if (rid & SETUP_BIT) {
                if (c->setup_pending)
                    c->setup_pending--;
                if (ecode != 0)
                    ch->st.errors++;
                else if (res.reject != CLR_OK)
                    ch->st.setup_rejects++;
                continue;
            }
            ch->st.answered++;
            if (ecode != 0) {
                ch->st.errors++;
                continue;
            }
            if (res.reject != CLR_OK)
                ch->st.rejects++;
            uint64_t slot = rid & (((uint64_t) 1 << PROC_SHIFT) - 1);
            if ((rid >> PROC_SHIFT) != (uint64_t) ch->idx || slot >= ch->nslots ||
                (ch->answered[slot / 8] & (1u << (slot % 8)))) {
                ch->st.errors++; /* an answer to nothing we sent, or a second answer */
                continue;
            }
            ch->answered[slot / 8] |= (uint8_t) (1u << (slot % 8));
            int64_t intended = ch->t0 + (int64_t) ((slot * ch->step) >> 32);
            if (intended >= ch->t_meas0 && intended < ch->t_meas1)
                hist_record(&ch->st.h, t - intended);
            if (t >= ch->t_meas0 && t < ch->t_meas1)
                ch->st.in_window++;
        }
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
        if (c->in_len == INBUF) { /* cannot happen with frames <= 256 bytes */
            conn_kill(c, ch->ep, &ch->st);
            return;
        }
        /* a short read drained the socket: epoll (level-triggered) reports any later bytes,
           so no second read() just to see EAGAIN (that would double the read syscalls) */
        if ((size_t) r < room)
            break;
    }
}

static void
poll_once(child *ch, int timeout_ms, int tfd, bool *timer)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ch->ep, evs, 512, timeout_ms);
    if (n < 0 && errno != EINTR)
        fatal("epoll_wait");
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL) {
            uint64_t x;
            if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN)
                fatal("timerfd read");
            *timer = true;
            continue;
        }
        conn *c = evs[i].data.ptr;
        if (c->dead)
            continue;
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            handle_input(ch, c);
        if (!c->dead && (evs[i].events & EPOLLOUT))
            conn_flush(c, ch->ep, &ch->st);
    }
}

static void
send_frame(child *ch, conn *c, uint64_t rid, const clr_event *ev)
{
    uint8_t frame[CLR_WIRE_FRAME_MAX];
    size_t n = clr_wire_encode_event(frame, rid, ev);
    out_put(c, frame, n);
    ch->outstanding++;
}

static void
setup_phase(child *ch)
{
    int64_t a = now_ns();
    uint64_t rid = SETUP_BIT;
    for (int k = 0; k < ch->nconn; k++) {
        conn *c = &ch->c[k];
        for (int j = 0; j < g_o.acc_per_conn; j++) {
            uint64_t acc = c->first_acc + (uint64_t) j;
            clr_event ev = {
                .type = CLR_EV_OPEN, .account = acc, .member = 1 + (uint32_t) (acc % 50)};
            send_frame(ch, c, rid++, &ev);
            ev = (clr_event){.type = CLR_EV_DEPOSIT, .account = acc, .amount = SETUP_CASH};
            send_frame(ch, c, rid++, &ev);
            ev = (clr_event){.type = CLR_EV_XFER_IN,
                             .account = acc,
                             .security = g_o.security,
                             .qty = SETUP_SHARES};
            send_frame(ch, c, rid++, &ev);
            c->setup_pending += 3;
        }
        conn_flush(c, ch->ep, &ch->st);
    }
    int64_t deadline = now_ns() + 60 * (int64_t) 1000000000;
    bool timer = false;
    while (ch->outstanding > 0 && now_ns() < deadline) {
        uint64_t before = ch->outstanding;
        poll_once(ch, 100, -1, &timer);
        (void) before;
        bool all_dead = true;
        for (int k = 0; k < ch->nconn; k++)
            all_dead &= ch->c[k].dead;
        if (all_dead)
            break;
    }
    for (int k = 0; k < ch->nconn; k++) {
        if (!ch->c[k].dead && ch->c[k].setup_pending) {
            ch->st.lost += ch->c[k].setup_pending;
        }
    }
    ch->outstanding = 0;
    ch->st.setup_ns = now_ns() - a;
}

static void
make_event(conn *c, clr_event *ev)
{
    memset(ev, 0, sizeof *ev);
    bool fill = (c->turn++ & 1) && c->fifo_head != c->fifo_tail;
    if (!fill && c->fifo_tail - c->fifo_head == OPEN_FIFO)
        fill = true; /* remembered too many: fill one instead */
    if (fill) {
        unsigned h = c->fifo_head++ % OPEN_FIFO;
        *ev = (clr_event){.type = CLR_EV_FILL,
                          .account = c->fifo_acc[h],
                          .order_id = c->fifo_oid[h],
                          .exec_id = c->fifo_oid[h],
                          .price = c->fifo_px[h],
                          .qty = g_o.qty};
        return;
    }
    uint64_t oid = ++c->next_oid;
    uint64_t acc = c->first_acc + (oid % (uint64_t) g_o.acc_per_conn);
    *ev = (clr_event){.type = CLR_EV_ORDER,
                      .side = (oid / 2) & 1 ? CLR_SIDE_SELL : CLR_SIDE_BUY,
                      .account = acc,
                      .order_id = oid,
                      .security = g_o.security,
                      .price = g_o.price,
                      .qty = g_o.qty};
    unsigned t = c->fifo_tail++ % OPEN_FIFO;
    c->fifo_acc[t] = acc;
    c->fifo_oid[t] = oid;
    c->fifo_px[t] = g_o.price;
}

static void
run_phase(child *ch)
{
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0)
        fatal("timerfd_create");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ch->ep, EPOLL_CTL_ADD, tfd, &tev);
    int64_t total_ns = (int64_t) ((g_o.warmup + g_o.duration) * 1e9);
    uint64_t nslots = (uint64_t) ((__int128) total_ns * ch->rate / 1000000000);
    uint64_t next = 0;
    ch->nslots = nslots;
    ch->answered = calloc(nslots / 8 + 1, 1);
    if (!ch->answered)
        fatal("calloc");
    int *dirty = malloc(sizeof(int) * (size_t) ch->nconn);
    char *isdirty = calloc((size_t) ch->nconn, 1);
    uint64_t pid_bits = (uint64_t) ch->idx << PROC_SHIFT;
    while (next < nslots) {
        int64_t t = now_ns();
        int nd = 0;
        while (next < nslots && ch->t0 + (int64_t) ((next * ch->step) >> 32) <= t) {
            int k = (int) (next % (uint64_t) ch->nconn);
            conn *c = &ch->c[k];
            if (!c->dead) {
                clr_event ev;
                make_event(c, &ev);
                send_frame(ch, c, pid_bits | next, &ev);
                ch->st.sent++;
                if (!isdirty[k]) {
                    isdirty[k] = 1;
                    dirty[nd++] = k;
                }
            }
            next++;
        }
        for (int d = 0; d < nd; d++) {
            isdirty[dirty[d]] = 0;
            conn_flush(&ch->c[dirty[d]], ch->ep, &ch->st);
        }
        if (next >= nslots)
            break;
        int64_t due = ch->t0 + (int64_t) ((next * ch->step) >> 32);
        int64_t at = due > t + g_o.tick_ns ? due : t + g_o.tick_ns;
        struct itimerspec its = {
            .it_value = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000}};
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        bool timer = false;
        while (!timer)
            poll_once(ch, 1000, tfd, &timer);
    }
    /* drain */
    int64_t deadline = now_ns() + (int64_t) g_o.drain_ms * 1000000;
    while (ch->outstanding > 0 && now_ns() < deadline) {
        bool timer = false;
        poll_once(ch, 10, tfd, &timer);
    }
    ch->st.lost += ch->outstanding;
    /* Requests never answered still count in the latency: each is recorded with its age when
       the loadgen gave up (a lower bound of its latency), so losing requests cannot make the
       percentiles look better. */
    int64_t t_end = now_ns();
    for (uint64_t k = 0; k < next && ch->outstanding; k++) {
        if (ch->answered[k / 8] & (1u << (k % 8)))
            continue;
        int64_t intended = ch->t0 + (int64_t) ((k * ch->step) >> 32);
        if (intended >= ch->t_meas0 && intended < ch->t_meas1)
            hist_record(&ch->st.h, t_end - intended);
    }
    free(ch->answered);
    close(tfd);
    free(dirty);
    free(isdirty);
}

static void
child_main(int idx, int nconn, int64_t rate, uint64_t first_acc, int ready_w, int go_r, int res_w)
{
    child ch = {.idx = idx, .nconn = nconn, .rate = rate};
    /* the default 50 us timer slack would delay every timerfd wake-up by up to that much */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    hist_init(&ch.st.h);
    ch.c = calloc((size_t) nconn, sizeof *ch.c);
    ch.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!ch.c || ch.ep < 0)
        fatal("child init");
    for (int k = 0; k < nconn; k++) {
        conn *c = &ch.c[k];
        c->fd = connect_one();
        c->first_acc = first_acc + (uint64_t) k * (uint64_t) g_o.acc_per_conn;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ch.ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            fatal("epoll_ctl");
    }
    setup_phase(&ch);
    char ok = 'R';
    write_all(ready_w, &ok, 1);
    int64_t t0;
    if (!read_all(go_r, &t0, sizeof t0))
        _exit(3);
    ch.t0 = t0;
    ch.step = ((unsigned __int128) 1000000000 << 32) / (uint64_t) rate;
    ch.t_meas0 = t0 + (int64_t) (g_o.warmup * 1e9);
    ch.t_meas1 = ch.t_meas0 + (int64_t) (g_o.duration * 1e9);
    while (now_ns() < t0)
        usleep(1000);
    run_phase(&ch);
    write_all(res_w, &ch.st, sizeof ch.st);
    for (int k = 0; k < nconn; k++)
        if (!ch.c[k].dead)
            close(ch.c[k].fd);
    _exit(0);
}

/* ---- the self-test echo server -------------------------------------------------------------- */

typedef struct sconn {
    int fd;
    uint8_t in[INBUF];
    size_t in_len;
    uint8_t *out;
    size_t out_len, out_cap;
} sconn;

static void
server_main(int lfd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    uint64_t seq = 0;
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    sconn *s = calloc(1, sizeof *s);
                    s->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            sconn *s = evs[i].data.ptr;
            ssize_t r = read(s->fd, s->in + s->in_len, INBUF - s->in_len);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                close(s->fd);
                free(s->out);
                free(s);
                continue;
            }
            s->in_len += (size_t) r;
            size_t off = 0;
            s->out_len = 0;
            for (;;) {
                clr_event ev;
                uint64_t rid;
                dbao_err err = {0};
                int m = clr_wire_decode(s->in + off, s->in_len - off, &ev, &rid, &err);
                if (m == 0)
                    break;
                uint8_t frame[CLR_WIRE_FRAME_MAX];
                size_t fl;
                bool bad = m < 0;
                if (bad) {
                    fl = clr_wire_encode_error(frame, 0, 1, "bad frame");
                } else {
                    off += (size_t) m;
                    clr_result res = {.seq = ++seq,
                                      .account = ev.account,
                                      .order_id = ev.order_id,
                                      .type = ev.type};
                    fl = clr_wire_encode_result(frame, rid, &res);
                }
                if (s->out_len + fl > s->out_cap) {
                    s->out_cap = (s->out_cap ? s->out_cap * 2 : 8192) + fl;
                    s->out = realloc(s->out, s->out_cap);
                }
                memcpy(s->out + s->out_len, frame, fl);
                s->out_len += fl;
                if (bad) {
                    off = s->in_len;
                    break;
                }
            }
            memmove(s->in, s->in + off, s->in_len - off);
            s->in_len -= off;
            ssize_t w = write(s->fd, s->out, s->out_len);
            if (w >= 0 && (size_t) w < s->out_len) {
                /* a bench server: blocking until the rest is written is fine here (rare) */
                fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) & ~O_NONBLOCK);
                write_all(s->fd, s->out + w, s->out_len - (size_t) w);
                fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
            }
        }
    }
}

static pid_t
start_self_server(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        fatal("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(lfd, (struct sockaddr *) &sa, sizeof sa) != 0 || listen(lfd, 8192) != 0 ||
        getsockname(lfd, (struct sockaddr *) &sa, &sl) != 0)
        fatal("self-test listen");
    g_o.port = ntohs(sa.sin_port);
    g_o.host = "127.0.0.1";
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork");
    if (pid == 0) {
        server_main(lfd);
        _exit(0);
    }
    close(lfd);
    return pid;
}

/* ---- the parent -------------------------------------------------------------------------------
 */

static void
usage(void)
{
    fprintf(stderr, "usage: clearing_loadgen [--host IPv4] --port N | --self-test\n"
                    "  [--conns C] [--procs P] [--rate R] [--duration S] [--warmup S]\n"
                    "  [--accounts-per-conn A] [--account-base B] [--security CODE] [--price FEN]\n"
                    "  [--qty N] [--tick-us U] [--drain-ms MS] [--quiet]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (strcmp(a, "--self-test") == 0)
            g_o.self_test = true;
        else if (strcmp(a, "--quiet") == 0)
            g_o.quiet = true;
        else if (ARG("--host"))
            g_o.host = v;
        else if (ARG("--port"))
            g_o.port = atoi(v);
        else if (ARG("--conns"))
            g_o.conns = atoi(v);
        else if (ARG("--procs"))
            g_o.procs = atoi(v);
        else if (ARG("--rate"))
            g_o.rate = atoll(v);
        else if (ARG("--duration"))
            g_o.duration = atof(v);
        else if (ARG("--warmup"))
            g_o.warmup = atof(v);
        else if (ARG("--accounts-per-conn"))
            g_o.acc_per_conn = atoi(v);
        else if (ARG("--account-base"))
            g_o.account_base = strtoull(v, NULL, 0);
        else if (ARG("--security"))
            g_o.security = (uint32_t) atol(v);
        else if (ARG("--price"))
            g_o.price = atoll(v);
        else if (ARG("--qty"))
            g_o.qty = atoll(v);
        else if (ARG("--tick-us"))
            g_o.tick_ns = atoll(v) * 1000;
        else if (ARG("--drain-ms"))
            g_o.drain_ms = atoi(v);
        else
            usage();
#undef ARG
    }
    if ((!g_o.self_test && g_o.port <= 0) || g_o.conns < 1 || g_o.procs < 1 ||
        g_o.procs > MAX_PROCS || g_o.procs > g_o.conns || g_o.rate < g_o.procs ||
        g_o.duration <= 0 || g_o.warmup < 0 || g_o.acc_per_conn < 1 || g_o.account_base < 1 ||
        g_o.tick_ns < 1000)
        usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        (rlim_t) g_o.conns / (rlim_t) g_o.procs + 64 > rl.rlim_cur) {
        fprintf(stderr,
                "clearing_loadgen: %d connections per process exceed the open "
                "file limit %llu\n",
                g_o.conns / g_o.procs, (unsigned long long) rl.rlim_cur);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t server = g_o.self_test ? start_self_server() : 0;

    pid_t pids[MAX_PROCS];
    int ready_r[MAX_PROCS], go_w[MAX_PROCS], res_r[MAX_PROCS];
    uint64_t acc = g_o.account_base;
    for (int p = 0; p < g_o.procs; p++) {
        int nconn = g_o.conns / g_o.procs + (p < g_o.conns % g_o.procs);
        int64_t rate = g_o.rate / g_o.procs + (p < g_o.rate % g_o.procs);
        int rp[2], gp[2], sp[2];
        if (pipe(rp) || pipe(gp) || pipe(sp))
            fatal("pipe");
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            fatal("fork");
        if (pid == 0) {
            close(rp[0]);
            close(gp[1]);
            close(sp[0]);
            child_main(p, nconn, rate, acc, rp[1], gp[0], sp[1]);
        }
        close(rp[1]);
        close(gp[0]);
        close(sp[1]);
        pids[p] = pid;
        ready_r[p] = rp[0];
        go_w[p] = gp[1];
        res_r[p] = sp[0];
        acc += (uint64_t) nconn * (uint64_t) g_o.acc_per_conn;
    }
    bool failed = false;
    for (int p = 0; p < g_o.procs; p++) {
        char c;
        if (!read_all(ready_r[p], &c, 1)) {
            fprintf(stderr, "clearing_loadgen: process %d failed during setup\n", p);
            failed = true;
        }
    }
    int64_t t0 = now_ns() + 100000000; /* 100 ms for every child to be waiting */
    for (int p = 0; p < g_o.procs; p++)
        write_all(go_w[p], &t0, sizeof t0);
    stats *tot = calloc(1, sizeof *tot), *one = malloc(sizeof *one);
    hist_init(&tot->h);
    for (int p = 0; p < g_o.procs; p++) {
        if (!read_all(res_r[p], one, sizeof *one)) {
            fprintf(stderr, "clearing_loadgen: process %d did not report\n", p);
            failed = true;
            continue;
        }
        tot->sent += one->sent;
        tot->answered += one->answered;
        tot->in_window += one->in_window;
        tot->errors += one->errors;
        tot->rejects += one->rejects;
        tot->lost += one->lost;
        tot->setup_rejects += one->setup_rejects;
        if (one->setup_ns > tot->setup_ns)
            tot->setup_ns = one->setup_ns;
        hist_merge(&tot->h, &one->h);
    }
    for (int p = 0; p < g_o.procs; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = true;
    }
    if (server) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
    }
    const hist *h = &tot->h;
    printf("loadgen conns=%d procs=%d offered=%" PRId64 " achieved=%.0f sent=%" PRIu64
           " answered=%" PRIu64 " p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%" PRIu64
           " rejects=%" PRIu64 " lost=%" PRIu64 " setup_rejects=%" PRIu64 " setup_s=%.2f%s\n",
           g_o.conns, g_o.procs, g_o.rate, (double) tot->in_window / g_o.duration, tot->sent,
           tot->answered, (double) hist_quantile(h, 0.50) / 1e3,
           (double) hist_quantile(h, 0.99) / 1e3, (double) hist_quantile(h, 0.999) / 1e3,
           (double) h->max / 1e3, tot->errors, tot->rejects, tot->lost, tot->setup_rejects,
           (double) tot->setup_ns / 1e9, g_o.self_test ? " self-test" : "");
    int rc = failed || tot->errors || tot->lost ? 1 : 0;
    free(tot);
    free(one);
    return rc;
}
