/* pgproxy.h: a PostgreSQL protocol v3 proxy engine on libuv + OpenSSL (private to src/mask).
 *
 * It knows the protocol, not the policy: one server connection per client connection,
 * startup and authentication relayed byte for byte (cleartext, md5, SCRAM-SHA-256; the
 * "-PLUS" channel-binding mechanism is removed from AuthenticationSASL because channel binding
 * cannot survive a TLS-terminating proxy), TLS on either side (SSLRequest answered 'S' or 'N';
 * GSSENCRequest always 'N'), CancelRequest forwarded to the server on a new connection, every
 * other message framed (type + length, limits enforced) and relayed in order. The policy plugs
 * in through the hooks: the text of Query ('Q') and Parse ('P') messages may be replaced before
 * the server sees it, and server messages may be rewritten before the client sees them.
 *
 * Threading: `workers` event-loop threads, each with its own SO_REUSEPORT listener; a session
 * lives on one thread and its hooks run there.
 *
 * SCRAM through a proxy with TLS on both sides: a TLS client that is offered no -PLUS mechanism
 * sends the gs2 flag "y" ("I could bind, I think you cannot"), and a TLS-enabled server rejects
 * that as a downgrade. The flag is covered by the client's proof, so no pass-through proxy can
 * change it: such clients must connect with channel_binding=disable (libpq), or the upstream
 * must be plain. md5, and SCRAM with either side plain, are unaffected.
 */
#ifndef DENGBAO_MASK_PGPROXY_H
#define DENGBAO_MASK_PGPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "dengbao/common.h"

typedef struct pgp_server pgp_server;
typedef struct pgp_session pgp_session;

/* Hook return values of on_query. */
#define PGP_FORWARD 0 /* send the message unchanged */
#define PGP_REPLACE 1 /* send the text left in `replacement` instead */
#define PGP_PENDING 2 /* decide later with pgp_session_resume (client input waits meanwhile) */

typedef struct pgp_hooks {
    /* After the client's StartupMessage (params: key, value, ..., NULL). Return 0 to go on;
     * to refuse, return a negative code and fill sqlstate and msg: the client gets a FATAL
     * ErrorResponse and the connection closes (the server is never contacted). */
    int (*on_startup)(pgp_session *s, void *arg, const char *const *params, char sqlstate[6],
                      dbao_buf *msg);
    /* A client Query (parse = false) or Parse (parse = true) message; sql is NUL-terminated.
     * Return PGP_FORWARD, PGP_REPLACE (the new text in *replacement; for Parse the statement
     * name and parameter types are kept) or PGP_PENDING; a negative code closes the session. */
    int (*on_query)(pgp_session *s, void *arg, bool parse, const char *sql, size_t len,
                    dbao_buf *replacement);
    /* A server message whose type is in the session's filter set (pgp_session_filter): the
     * payload (after type and length). Return 0 to relay it unchanged, 1 to relay `out`
     * instead (the proxy frames it with the same type), 2 to drop it, negative to close. */
    int (*on_server_msg)(pgp_session *s, void *arg, uint8_t type, const uint8_t *payload,
                         size_t len, dbao_buf *out);
    /* The session ended (either side closed, a protocol error, a hook failure). The session is
     * freed after on_close returns: cancel any work that would call pgp_session_resume. */
    void (*on_close)(pgp_session *s, void *arg);
} pgp_hooks;

typedef enum pgp_upstream_tls {
    PGP_TLS_DISABLE = 0,
    PGP_TLS_PREFER,  /* SSLRequest; plain if the server answers 'N' */
    PGP_TLS_REQUIRE, /* SSLRequest; refuse a server that answers 'N'; no certificate check */
    PGP_TLS_VERIFY,  /* require + certificate chain against ca_file + host name */
} pgp_upstream_tls;

typedef struct pgp_opts {
    const char *listen_host; /* "127.0.0.1" */
    uint16_t listen_port;    /* 0: an ephemeral port (pgp_server_port tells) */
    const char *server_host; /* a name or address; "/dir": the unix socket dir/.s.PGSQL.<port> */
    uint16_t server_port;
    unsigned workers;        /* event-loop threads, default 1 */
    SSL_CTX *client_tls;     /* NULL: SSLRequest answered 'N' (referenced, not owned) */
    bool require_client_tls; /* refuse a client that does not ask for TLS */
    pgp_upstream_tls server_tls;
    const char *server_ca_file;  /* PGP_TLS_VERIFY */
    const char *server_name;     /* SNI and name check, default server_host */
    uint32_t connect_timeout_ms; /* default 5000 */
    uint32_t startup_timeout_ms; /* client must finish startup + auth within; default 30000 */
    size_t max_message;          /* largest message either way; default 64 MiB */
    const pgp_hooks *hooks;
    void *hook_arg;
} pgp_opts;

/* pgp_server_start binds and starts the worker threads; returns when listening. */
int pgp_server_start(pgp_server **out, const pgp_opts *opts, dbao_err *err);
uint16_t pgp_server_port(const pgp_server *srv);
/* pgp_server_stop closes the listeners and every session, joins the workers, frees. */
void pgp_server_stop(pgp_server *srv);

/* Session accessors (on the session's thread only). */
const char *pgp_session_param(const pgp_session *s, const char *key); /* startup parameter */
const char *pgp_session_peer(const pgp_session *s);                   /* "ip:port" */
bool pgp_session_client_tls(const pgp_session *s);
void pgp_session_set_data(pgp_session *s, void *data);
void *pgp_session_data(const pgp_session *s);
/* Which server message types reach on_server_msg: a 256-bit set; types not in it are relayed
 * without a call (the fast path). */
void pgp_session_filter(pgp_session *s, uint8_t type, bool on);
/* pgp_session_resume answers a PGP_PENDING on_query: how = PGP_FORWARD or PGP_REPLACE with
 * text/len, or negative to close the session. It may also be called from inside on_query (which
 * then returns PGP_PENDING). Client messages after the pending one wait, in order. */
void pgp_session_resume(pgp_session *s, int how, const char *text, size_t len);
/* The event loop of the session's worker (to start work from a hook). Handles opened on it
 * and still open at pgp_server_stop are closed by the engine (no close callback, so do not
 * close them again after the stop; free their memory after pgp_server_stop returns). */
struct uv_loop_s *pgp_session_loop(pgp_session *s);

#endif /* DENGBAO_MASK_PGPROXY_H */
