/* server.h: the clearing daemon's configuration and server (private to src/clearing, the CLI in
 * cmd/dengbao/cmd_clearing.c and tests/unit/clearing). docs/clearing-ops.md documents every
 * configuration key and the daemon's threads, durability and failure behaviour.
 *
 * clr_config is the parsed clearing.yaml (src/clearing/config.c, strict: libyaml through
 * include/dengbao/yamlcfg.h; unknown keys refused). clr_server is the daemon (server.c).
 */
#ifndef DENGBAO_CLEARING_SERVER_H
#define DENGBAO_CLEARING_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/audit.h"
#include "dengbao/clearing.h"
#include "dengbao/common.h"
#include "dengbao/ring.h"

#define CLR_SHARDS_MAX     64
#define CLR_IO_THREADS_MAX 16

typedef struct clr_config {
    char *data_dir;              /* journal root: <data_dir>/shard-<N>/ */
    unsigned shards;             /* 1..CLR_SHARDS_MAX, default 1 */
    char *tcp_host;              /* binary protocol listener; default 127.0.0.1 */
    uint16_t tcp_port;           /* 0: ephemeral (printed) */
    bool tcp_enabled;            /* the `listen` section is present */
    char *http_host;             /* JSON face; default 127.0.0.1 */
    uint16_t http_port;          /* 0: ephemeral (printed) */
    bool http_enabled;           /* the `http` section is present */
    unsigned http_workers;       /* net.h workers; default 1 */
    unsigned io_threads;         /* binary protocol loops; default 1 */
    uint32_t max_connections;    /* binary connections over all IO threads; default 20000 */
    ring_wait wait;              /* shard rings' wait strategy; default block */
    size_t ring_capacity;        /* inbound ring slots per shard (power of two); default 65536 */
    size_t batch_max;            /* events per shard batch (one journal sync); default 4096 */
    size_t segment_bytes;        /* journal segment size; default 64 MiB */
    uint64_t snapshot_every;     /* events between snapshots (0: only at shutdown); 100000 */
    unsigned snapshot_keep;      /* snapshots kept; default 2 */
    bool journal_sync;           /* fdatasync per batch; default true (false: benches only) */
    char *audit_dir;             /* audit log created with `dengbao audit init`; NULL: none */
    bool audit_required;         /* audit.dir given (always true when audit is configured) */
    clr_instrument *instruments; /* sorted by security */
    size_t num_instruments;
    clr_fees fees;
} clr_config;

/* clr_config_load reads and checks a configuration file; clr_config_parse does so from text
 * (`name` for messages, relative paths resolved against its folder). DBAO_EFORMAT with
 * "file:line: ..." for anything wrong; DBAO_ENOMEM; -errno when the file cannot be read. */
int clr_config_load(clr_config **out, const char *path, dbao_err *err);
int clr_config_parse(clr_config **out, const char *text, size_t len, const char *name,
                     dbao_err *err);
void clr_config_free(clr_config *c);
/* The engine's reference data, borrowing the configuration's instruments. */
void clr_config_refdata(const clr_config *c, clr_refdata *ref);

/* ---- the daemon ---- */

typedef struct clr_server clr_server;

/* clr_server_start recovers every shard (clr_journal_open + clr_journal_load), prints the
 * recovery notes on stderr, binds the listeners and starts the threads. `log` may be NULL
 * only when the configuration has no audit section (tests); the server borrows it. */
int clr_server_start(clr_server **out, const clr_config *cfg, audit_log *log, dbao_err *err);
uint16_t clr_server_tcp_port(const clr_server *s);
uint16_t clr_server_http_port(const clr_server *s);
/* clr_server_stop: stop accepting, drain in-flight events, answer them, snapshot every shard,
 * close the journals; then free. Returns 0, or the first error (a failed shard). */
int clr_server_stop(clr_server *s);
/* The server has failed closed (audit or journal failure): non-zero error code. */
int clr_server_failed(const clr_server *s);

#endif
