/* audit.h: the tamper-evident audit trail (GB/T 22239-2019 8.1.3.5 / 8.1.4.3 安全审计).
 *
 * This header is the manual of the audit component: the pure-computation core below, and the
 * log built on it (storage, group commit, recovery, verification, retention, export; section
 * "the log"). The service in front of it is `dengbao auditd` (cmd/dengbao/cmd_auditd.c).
 *
 *   records      audit_record: one decision about a person's access or data. JSON in and out
 *                (the API and CLI face), and the canonical byte encoding of docs/audit-format.md
 *                (the form that is stored and hashed). decode(encode(r)) == r and
 *                encode(decode(b)) == b: the decoder accepts exactly what the encoder produces.
 *   Merkle tree  RFC 9162 section 2.1 over SM3: leaf = SM3(0x00 || record bytes), node =
 *                SM3(0x01 || left || right). Roots, inclusion and consistency proofs for any
 *                (index, size) from a caller's hash source, their verification, and a frontier
 *                ("compact range") that keeps the root of a growing tree in O(log n) memory.
 *   checkpoints  C2SP tlog-checkpoint text inside a C2SP signed note with SM2 signature lines;
 *                several signers (key rotation, witnesses); strict parsing; verification against
 *                a set of trusted keys.
 *
 * Errors: 0 or a negative DBAO_E* code (common.h). DBAO_EFORMAT means malformed input, and the
 * optional dbao_err names the field ("field 'subject.ip': not an IPv4 or IPv6 address"); the
 * caller adds its own context such as an NDJSON line number. DBAO_EVERIFY means well-formed input
 * that does not verify (a proof, a signature). Messages never contain field values, only field
 * names, because values may be personal data.
 *
 * Threading: every function here is reentrant. Objects (an audit_record, an audit_frontier) are
 * used by one thread at a time; const inputs may be shared by many threads. audit_uuid7_generate
 * is thread-safe (a process-wide mutex keeps the identifiers it hands out increasing).
 * Hash-source callbacks are called on the caller's thread, synchronously.
 *
 * Memory: libraries allocate through dbao_malloc; JSON parsing also allocates inside jansson
 * (its own allocator; the process may redirect it with json_set_alloc_funcs).
 */
#ifndef DENGBAO_AUDIT_H
#define DENGBAO_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"
#include "dengbao/gm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- records ----------------------------------------------------------------------------- */

#define AUDIT_RECORD_VERSION 1

/* Field limits in bytes (UTF-8), excluding the terminating NUL of the char arrays below. Every
 * limit is part of format version 1; docs/audit-format.md is the normative list. */
#define AUDIT_SUBJECT_ID_MAX     256
#define AUDIT_SUBJECT_ROLE_MAX   128
#define AUDIT_SUBJECT_DEVICE_MAX 256
#define AUDIT_EVENT_TYPE_MAX     128
#define AUDIT_ACTION_MAX         128
#define AUDIT_OBJECT_MAX         1024
#define AUDIT_TRACE_ID_LEN       55 /* W3C traceparent version 00 */
#define AUDIT_SOURCE_MAX         128
#define AUDIT_DETAILS_MAX        16384 /* canonical JSON text of the details object */
#define AUDIT_DETAILS_DEPTH_MAX  16

/* The largest canonical encoding: the fixed 34-byte head, ten 2-byte length prefixes and every
 * field at its limit (the IP address is at most 16 bytes). */
#define AUDIT_RECORD_MAX                                                                           \
    (34 + 10 * 2 + AUDIT_SUBJECT_ID_MAX + AUDIT_SUBJECT_ROLE_MAX + 16 + AUDIT_SUBJECT_DEVICE_MAX + \
     AUDIT_EVENT_TYPE_MAX + AUDIT_ACTION_MAX + AUDIT_OBJECT_MAX + AUDIT_TRACE_ID_LEN +             \
     AUDIT_SOURCE_MAX + AUDIT_DETAILS_MAX)

/* The largest JSON text audit_record_from_json accepts. */
#define AUDIT_JSON_MAX 65536

typedef enum audit_result {
    AUDIT_RESULT_SUCCESS = 0,
    AUDIT_RESULT_FAILURE = 1,
} audit_result;

/* An audit record. Caller-owned storage: audit_record_init (cannot fail) gives an empty record
 * that is safe to clean up; audit_record_cleanup frees `details`. The string fields are
 * NUL-terminated UTF-8 that callers may fill directly (audit_record_validate, and encode, check
 * them); an empty string means "absent" for the optional ones. */
typedef struct audit_record {
    uint8_t event_id[16]; /* UUIDv7 (RFC 9562): version 7, variant 0b10 */
    int64_t time_ns;      /* nanoseconds since 1970-01-01T00:00:00Z, >= 0 */
    struct {
        char id[AUDIT_SUBJECT_ID_MAX + 1];         /* required: the user or service account */
        char role[AUDIT_SUBJECT_ROLE_MAX + 1];     /* optional */
        uint8_t ip[16];                            /* optional: ip_len 0 (absent), 4 or 16 */
        uint8_t ip_len;                            /* network byte order in ip[] */
        char device[AUDIT_SUBJECT_DEVICE_MAX + 1]; /* optional: terminal or device id */
    } subject;
    char event_type[AUDIT_EVENT_TYPE_MAX + 1]; /* required: token, e.g. "auth.login" */
    char action[AUDIT_ACTION_MAX + 1];         /* required: what was attempted */
    char object[AUDIT_OBJECT_MAX + 1];         /* optional: what it was attempted on */
    audit_result result;
    int32_t code;                          /* outcome detail (HTTP status, errno, ...); 0 default */
    char trace_id[AUDIT_TRACE_ID_LEN + 1]; /* optional: W3C traceparent, lowercase */
    char source[AUDIT_SOURCE_MAX + 1];     /* required: token naming the service, "gateway" */
    char *details;      /* owned: canonical JSON object text (NUL-terminated); NULL means "{}" */
    size_t details_len; /* bytes in details, without the NUL */
} audit_record;

/* audit_record_init makes `r` an empty record (every field absent, details "{}"). */
void audit_record_init(audit_record *r);

/* audit_record_cleanup frees what `r` owns and leaves it as audit_record_init does. */
void audit_record_cleanup(audit_record *r);

/* audit_record_validate checks every field against docs/audit-format.md: required fields
 * present, lengths, UTF-8 without control or bidirectional-override characters, token
 * character sets, the UUIDv7 shape, time >= 0, the traceparent syntax, canonical details.
 * Returns 0 or DBAO_EFORMAT naming the first bad field. */
int audit_record_validate(const audit_record *r, dbao_err *err);

/* audit_record_set_ip parses an IPv4 (dotted quad) or IPv6 (RFC 4291 text, no zone) address
 * into r->subject; NULL or "" clears it. DBAO_EFORMAT for anything else. */
int audit_record_set_ip(audit_record *r, const char *text, dbao_err *err);

/* audit_record_set_details parses `json_len` bytes of JSON that must hold one object, checks
 * the details rules (I-JSON, integers within +-(2^53 - 1), no reals, depth <= 16, canonical
 * size <= AUDIT_DETAILS_MAX) and stores its canonical (RFC 8785 JCS) text in r->details,
 * replacing the old one. DBAO_EFORMAT naming the offending path, or DBAO_ENOMEM; r is
 * unchanged on failure. */
int audit_record_set_details(audit_record *r, const char *json, size_t json_len, dbao_err *err);

/* audit_record_encode validates `r` and writes its canonical encoding (at most
 * AUDIT_RECORD_MAX bytes) to `out`, which has room for `out_cap` bytes, and its length to
 * *out_len. DBAO_EFORMAT (invalid record) or DBAO_ERANGE (out_cap too small). */
int audit_record_encode(const audit_record *r, uint8_t *out, size_t *out_len, size_t out_cap,
                        dbao_err *err);

/* audit_record_decode parses a canonical encoding into `r` (initialised; its old contents are
 * released). Exactly the bytes audit_record_encode can produce are accepted: DBAO_EFORMAT
 * for anything else, DBAO_ENOTSUP for a version this code does not know, DBAO_ENOMEM. On
 * failure `r` is left empty (as after audit_record_init). */
int audit_record_decode(audit_record *r, const uint8_t *in, size_t in_len, dbao_err *err);

/* Flags for audit_record_from_json. */
#define AUDIT_JSON_ASSIGN 0x1u /* fill a missing event_id (new UUIDv7) and time (now) */

/* audit_record_from_json parses one JSON object (at most AUDIT_JSON_MAX bytes; docs/audit-
 * format.md gives the schema) into `r` (initialised; old contents released). Unknown keys,
 * duplicate keys, wrong types and every rule of audit_record_validate give DBAO_EFORMAT with
 * the field named. Without AUDIT_JSON_ASSIGN, event_id and time are required. On failure `r`
 * is left empty. */
int audit_record_from_json(audit_record *r, const char *json, size_t json_len, unsigned flags,
                           dbao_err *err);

/* audit_record_to_json writes `r` as one line of JSON (fixed key order, no newline, optional
 * fields omitted when absent, time as RFC 3339 UTC with nine fraction digits) into a new
 * NUL-terminated buffer in *out (free with dbao_free). DBAO_EFORMAT if `r` is invalid,
 * DBAO_ENOMEM. */
int audit_record_to_json(const audit_record *r, char **out, size_t *out_len, dbao_err *err);

/* audit_uuid7_generate writes a new UUIDv7 for the instant `time_ns` (RFC 9562 section 6.2
 * method 3: 48-bit milliseconds, then 12 bits of sub-millisecond fraction, then 62 random bits
 * from gm_rand_bytes). Within one process the identifiers are strictly increasing even when
 * the clock repeats or steps back. DBAO_ERANGE for a negative time, DBAO_ECRYPTO if the DRBG
 * failed. Thread-safe. */
int audit_uuid7_generate(uint8_t out[16], int64_t time_ns);

/* audit_now_ns returns CLOCK_REALTIME in nanoseconds since the Unix epoch. */
int64_t audit_now_ns(void);

/* ---- Merkle tree (RFC 9162 section 2.1 over SM3) ----------------------------------------- */

#define AUDIT_HASH_LEN 32
/* Tree sizes are limited to 2^63 - 1 leaves so that they fit every signed 64-bit integer. */
#define AUDIT_TREE_SIZE_MAX ((uint64_t) INT64_MAX)
/* No proof for a tree of at most AUDIT_TREE_SIZE_MAX leaves has more hashes than this. */
#define AUDIT_PROOF_MAX 64

/* audit_leaf_hash: out = SM3(0x00 || record). */
void audit_leaf_hash(uint8_t out[AUDIT_HASH_LEN], const uint8_t *record, size_t record_len);

/* audit_node_hash: out = SM3(0x01 || left || right). out may alias left or right. */
void audit_node_hash(uint8_t out[AUDIT_HASH_LEN], const uint8_t left[AUDIT_HASH_LEN],
                     const uint8_t right[AUDIT_HASH_LEN]);

/* audit_empty_root: the root of the empty tree, SM3 of the empty string (RFC 9162 2.1.1). */
void audit_empty_root(uint8_t out[AUDIT_HASH_LEN]);

/* A hash source serves the hashes of *perfect* subtrees: the node at `level` with index
 * `index` is the root of the 2^level leaves [index * 2^level, (index + 1) * 2^level); level 0
 * is a leaf hash. Such a node never changes once its last leaf exists, which is what makes it
 * cacheable (tlog-tiles store exactly these nodes).
 *
 * Contract: the library asks only for nodes whose leaves all lie below the tree size it was
 * given. The callback stores the hash in `out` and returns 0; or returns DBAO_ENOTSUP when it
 * does not keep that level, and the library then asks for the two children at level - 1
 * instead (so a source that stores only leaf hashes is correct, and one that also stores
 * tiles is fast: proof generation then costs O(log^2 n) lookups); or returns another negative
 * code, which aborts the operation and is returned as is. DBAO_ENOTSUP at level 0 is an error
 * (DBAO_EINVAL). The callback must not call back into the same operation. */
typedef int (*audit_hash_fn)(void *arg, uint8_t out[AUDIT_HASH_LEN], unsigned level,
                             uint64_t index);

/* A ready-made source over an array of leaf hashes in memory: pass audit_leaves_source as the
 * callback and a const audit_leaves * as its argument. */
typedef struct audit_leaves {
    const uint8_t *hashes; /* num * AUDIT_HASH_LEN bytes */
    uint64_t num;
} audit_leaves;
int audit_leaves_source(void *arg, uint8_t out[AUDIT_HASH_LEN], unsigned level, uint64_t index);

/* audit_merkle_root computes MTH of the first `size` leaves (size <= AUDIT_TREE_SIZE_MAX, else
 * DBAO_ERANGE); size 0 gives audit_empty_root. Errors of the source are passed through. */
int audit_merkle_root(uint8_t out[AUDIT_HASH_LEN], uint64_t size, audit_hash_fn fn, void *arg);

/* audit_merkle_inclusion_proof writes PATH(index, D[size]) (RFC 9162 2.1.3.1), leaf-side
 * first, as *out_num hashes of AUDIT_HASH_LEN bytes into `out` (room for AUDIT_PROOF_MAX).
 * DBAO_ERANGE unless index < size <= AUDIT_TREE_SIZE_MAX. */
int audit_merkle_inclusion_proof(uint8_t *out, size_t *out_num, uint64_t index, uint64_t size,
                                 audit_hash_fn fn, void *arg);

/* audit_merkle_consistency_proof writes PROOF(size1, D[size2]) (RFC 9162 2.1.4.1) into `out`
 * (room for AUDIT_PROOF_MAX hashes). The proof is empty when size1 is 0 or equals size2.
 * DBAO_ERANGE unless size1 <= size2 <= AUDIT_TREE_SIZE_MAX. */
int audit_merkle_consistency_proof(uint8_t *out, size_t *out_num, uint64_t size1, uint64_t size2,
                                   audit_hash_fn fn, void *arg);

/* audit_merkle_verify_inclusion checks that `leaf` (a leaf hash) is entry `index` of the tree
 * of `size` leaves with root `root`, using the RFC 9162 2.1.3.2 algorithm over the
 * `num_hashes` hashes at `proof` (may be NULL when 0). 0 if it does, DBAO_EVERIFY otherwise
 * (also for index >= size or a proof of the wrong length); err says which check failed. */
int audit_merkle_verify_inclusion(const uint8_t leaf[AUDIT_HASH_LEN], uint64_t index, uint64_t size,
                                  const uint8_t *proof, size_t num_hashes,
                                  const uint8_t root[AUDIT_HASH_LEN], dbao_err *err);

/* audit_merkle_verify_consistency checks that the tree of size2 leaves with root2 extends the
 * tree of size1 leaves with root1 (RFC 9162 2.1.4.2). size1 == size2 requires an empty proof
 * and equal roots; size1 == 0 requires an empty proof. 0 or DBAO_EVERIFY. */
int audit_merkle_verify_consistency(uint64_t size1, uint64_t size2,
                                    const uint8_t root1[AUDIT_HASH_LEN],
                                    const uint8_t root2[AUDIT_HASH_LEN], const uint8_t *proof,
                                    size_t num_hashes, dbao_err *err);

/* A frontier (compact range [0, size)) holds, for each set bit of `size`, the root of one
 * perfect subtree: O(log n) state that yields the root of the whole tree and absorbs appends
 * in amortised O(1) node hashes. Caller-owned storage; the fields are private. 2,056 bytes. */
typedef struct audit_frontier {
    uint64_t size;
    uint8_t nodes[64][AUDIT_HASH_LEN]; /* nodes[l] valid iff bit l of size is set */
} audit_frontier;

/* Called by audit_frontier_append for every perfect subtree the append completes, lowest level
 * first: the new leaf itself (level 0) and each node it closes. A storage layer writes tiles
 * from these. A negative return aborts the append and is returned; the frontier is then
 * unchanged, and nodes reported earlier in that call must be treated as not appended. */
typedef int (*audit_node_fn)(void *arg, unsigned level, uint64_t index,
                             const uint8_t hash[AUDIT_HASH_LEN]);

/* audit_frontier_init makes the empty frontier (size 0). Cannot fail. */
void audit_frontier_init(audit_frontier *f);

/* audit_frontier_append adds one leaf hash. `emit` may be NULL. DBAO_ERANGE when the tree is
 * full (AUDIT_TREE_SIZE_MAX), or the callback's code. */
int audit_frontier_append(audit_frontier *f, const uint8_t leaf[AUDIT_HASH_LEN], audit_node_fn emit,
                          void *arg);

/* audit_frontier_root writes the root of the tree of f->size leaves (the empty root for 0). */
void audit_frontier_root(const audit_frontier *f, uint8_t out[AUDIT_HASH_LEN]);

/* audit_frontier_size returns the number of leaves appended. */
uint64_t audit_frontier_size(const audit_frontier *f);

/* audit_frontier_load rebuilds the frontier of a tree of `size` leaves from a hash source
 * (popcount(size) perfect subtrees; recovery uses this). On failure `f` is left empty. */
int audit_frontier_load(audit_frontier *f, uint64_t size, audit_hash_fn fn, void *arg);

/* ---- checkpoints (C2SP tlog-checkpoint in a C2SP signed note, SM2 signatures) ------------ */

#define AUDIT_ORIGIN_MAX    255   /* bytes */
#define AUDIT_KEY_NAME_MAX  255   /* bytes */
#define AUDIT_NOTE_MAX      65536 /* bytes of a whole signed note */
#define AUDIT_NOTE_SIGS_MAX 100   /* signature lines per note (C2SP requires at least 16) */

/* The signature type of dengbao SM2 note signatures: C2SP signed-note reserves 0xff for types
 * it does not assign, followed by a longer identifier; ours is 0xff || "dengbao/sm2". */
#define AUDIT_NOTE_SIG_TYPE                                                                        \
    "\xff"                                                                                         \
    "dengbao/sm2"
#define AUDIT_NOTE_SIG_TYPE_LEN 12

typedef struct audit_checkpoint {
    char origin[AUDIT_ORIGIN_MAX + 1]; /* log identity, e.g. "bank.example/audit/1" */
    uint64_t size;                     /* tree size */
    uint8_t root[AUDIT_HASH_LEN];      /* MTH of the first `size` leaves */
    size_t num_extensions;             /* extension lines seen when parsing (never written) */
} audit_checkpoint;

/* A named SM2 key for note signatures: borrowed pointers. Signing needs a private key;
 * verification a public one. The key name is 1..AUDIT_KEY_NAME_MAX bytes of UTF-8 without
 * control characters, Unicode spaces or '+'; by convention it equals the log's origin. */
typedef struct audit_note_key {
    const char *name;
    const gm_sm2_key *key;
} audit_note_key;

/* audit_note_key_id computes the 32-bit key ID of a note key:
 * the first 4 bytes, big-endian, of SM3(name || 0x0A || AUDIT_NOTE_SIG_TYPE || 04||x||y).
 * DBAO_EFORMAT for an invalid key name. */
int audit_note_key_id(uint32_t *out, const audit_note_key *key, dbao_err *err);

/* audit_checkpoint_sign writes the checkpoint body "<origin>\n<size>\n<base64 root>\n", a blank
 * line and one signature line per signer ("— <name> <base64(key id || DER SM2 signature)>",
 * SM2 with the default ID over the body) into a new NUL-terminated buffer *out (free with
 * dbao_free). The origin must be 1..AUDIT_ORIGIN_MAX bytes of UTF-8 without control
 * characters, Unicode spaces or '+'. 1..AUDIT_NOTE_SIGS_MAX signers with distinct names or key
 * IDs. DBAO_EFORMAT (origin, name), DBAO_ERANGE (size, signer count), DBAO_EKEY (a signer
 * without a private key), DBAO_EINVAL (duplicate signer), DBAO_ECRYPTO, DBAO_ENOMEM. */
int audit_checkpoint_sign(char **out, size_t *out_len, const audit_checkpoint *cp,
                          const audit_note_key *signers, size_t num_signers, dbao_err *err);

/* audit_checkpoint_open parses a signed checkpoint strictly and verifies it against the
 * trusted keys, following C2SP signed-note: signature lines whose (name, key ID) match no
 * trusted key are ignored; a matching line must verify; at least one must. On success *out
 * holds the checkpoint and, if `out_verified` is not NULL, out_verified[i] tells whether
 * trusted[i] signed it (for k-of-n witness policies). Returns 0; DBAO_EFORMAT for a malformed
 * note or body (the message names the line); DBAO_EVERIFY if a trusted key's signature is bad,
 * a trusted key signed twice, or no trusted key signed; DBAO_EINVAL if two trusted keys share
 * name and key ID. *out is zeroed on failure. */
int audit_checkpoint_open(audit_checkpoint *out, const char *note, size_t note_len,
                          const audit_note_key *trusted, size_t num_trusted, bool *out_verified,
                          dbao_err *err);

/* audit_checkpoint_parse_unverified applies every syntax rule of audit_checkpoint_open but
 * checks no signature. Only for display and diagnostics: C2SP requires the text to be ignored
 * unless a trusted signature verified. */
int audit_checkpoint_parse_unverified(audit_checkpoint *out, const char *note, size_t note_len,
                                      dbao_err *err);

/* ---- the log: segments, group commit, tree, checkpoints (src/audit/log.c) ---------------
 *
 * A log is a directory (docs/audit-format.md section "The log directory" is normative):
 *
 *   log.conf          "dengbao-audit-log 1" and key = value lines: origin, limits, key paths
 *   lock              flock()ed by the one process that may append
 *   seg/<16 hex>.seg  append-only segments named by their first index: a header with magic,
 *                     version and first index, then frames {len, index, record, CRC32C};
 *                     preallocated; a full segment ends with a seal frame and is never written
 *                     again
 *   tree/L<nn>        the Merkle tree's perfect-subtree hashes, one file per level (a cache:
 *                     rebuilt from the segments and checked against the signed checkpoints)
 *   checkpoints       append-only file of signed checkpoints (CRC-framed signed notes)
 *
 * Appends are group-committed: any number of threads submit requests; one writer thread
 * gathers what is queued (up to batch_max records, waiting at most batch_delay_us for more),
 * writes it with one pwrite and makes it durable with one fdatasync, and only then completes
 * the requests. A request is atomic: all its records land in the same batch, in order, with
 * consecutive indices, or none does.
 *
 * Failure is closed: the first write, sync or space error puts the log in a failed state in
 * which every pending and later request completes with that error; the writer first tries to
 * record an "audit.alarm" record in the space it keeps in reserve, and calls the alarm
 * callback. Nothing is ever overwritten.
 *
 * Reading (get, proofs, iteration) is safe from any thread while appends go on; readers see
 * the records whose batch is durable. A log opened AUDIT_LOG_READONLY takes no lock and does
 * no recovery: it serves what is on disk up to the last valid frame and may refresh to see a
 * writer's later appends. */

typedef struct audit_log audit_log;

#define AUDIT_LOG_TRUSTED_MAX 16

/* Creation parameters, written to log.conf by audit_log_create. Zero fields take the
 * defaults. */
typedef struct audit_log_config {
    const char *origin;          /* required: the log identity in checkpoints */
    const char *key_path;        /* signer private key (PEM); default "signer.key" in the dir */
    const char *pub_path;        /* its public key (PEM); default "signer.pub.pem" */
    uint64_t segment_bytes;      /* preallocated segment size; default 64 MiB, min 1 MiB */
    uint32_t batch_max;          /* records per batch; default 8192 */
    uint32_t batch_delay_us;     /* extra wait for a fuller batch; default 0, max 1000 */
    uint32_t checkpoint_ms;      /* cut a checkpoint this often while appending; default 1000 */
    uint64_t checkpoint_records; /* ... or after this many records; default 100000 */
    uint32_t retention_days;     /* nothing younger may be pruned; default 180, min 180 */
    /* public keys of earlier signers (key rotation): their checkpoints stay valid */
    const char *trusted_pubs[AUDIT_LOG_TRUSTED_MAX];
    size_t num_trusted_pubs;
} audit_log_config;

/* audit_log_create makes a new, empty log in `dir` (created if missing, must be empty
 * otherwise) with the configuration above. It does not create keys: see the CLI. DBAO_EINVAL
 * if the directory holds anything, DBAO_EFORMAT for a bad origin, DBAO_EIO. */
int audit_log_create(const char *dir, const audit_log_config *cfg, dbao_err *err);

/* audit_log_write_config replaces log.conf atomically (temporary file, fdatasync, rename) with
 * *cfg, after the same checks as audit_log_create. Used to rotate keys: the new key becomes
 * key/pub and the old public key joins trusted_pubs. */
int audit_log_write_config(const char *dir, const audit_log_config *cfg, dbao_err *err);

/* audit_log_read_config reads log.conf into *cfg. The string fields point into storage owned
 * by `holder` (free with dbao_free). Relative key paths are returned as written. */
int audit_log_read_config(const char *dir, audit_log_config *cfg, char **holder, dbao_err *err);

/* Called on the writer thread when the log enters its failed state. `what` is a message
 * without personal data. */
typedef void (*audit_log_alarm_fn)(void *arg, int code, const char *what);

#define AUDIT_LOG_READONLY 0x1u

typedef struct audit_log_open_opts {
    unsigned flags;                /* AUDIT_LOG_READONLY */
    const audit_note_key *signers; /* read-write: >= 1 key with its private half (borrowed for */
    size_t num_signers;            /* the life of the log) */
    const audit_note_key *trusted; /* keys whose checkpoints recovery accepts; the signers are */
    size_t num_trusted;            /* trusted too */
    audit_log_alarm_fn alarm;      /* optional */
    void *alarm_arg;
} audit_log_open_opts;

/* audit_log_open opens the log in `dir`. A read-write open whose latest checkpoint is signed
 * only by a trusted key that is not a signer (the key was rotated) signs the head again with
 * the signers at once. Read-write: takes the lock (DBAO_EINVAL naming the
 * holder if another process has it), recovers (truncates a torn tail that was never
 * acknowledged, rebuilds the tree cache where needed), and refuses to open with DBAO_EVERIFY
 * if the recovered log disagrees with its last checkpoint signed by a trusted key, saying
 * why; then starts the writer thread. DBAO_EFORMAT for files it does not understand,
 * DBAO_ENOTSUP for a newer version. */
int audit_log_open(audit_log **out, const char *dir, const audit_log_open_opts *opts,
                   dbao_err *err);

/* audit_log_close stops accepting requests, completes those queued, cuts a final checkpoint
 * if records were appended since the last one, and frees the log. Returns 0, or the error
 * that failed the log (also when the final checkpoint failed just now). NULL is a no-op. */
int audit_log_close(audit_log *log);

/* ---- appending ---- */

/* The largest request: records and bytes. */
#define AUDIT_REQ_RECORDS_MAX 65536
#define AUDIT_REQ_BYTES_MAX   ((size_t) 16 << 20)

typedef struct audit_log_req audit_log_req;
typedef void (*audit_log_done_fn)(audit_log_req *req);

/* An append request. The caller owns it and the memory it points to until `done` runs. */
struct audit_log_req {
    /* in */
    const uint8_t *data;    /* num canonical record encodings, back to back */
    const uint32_t *lens;   /* their lengths */
    size_t num;             /* 1..AUDIT_REQ_RECORDS_MAX */
    audit_log_done_fn done; /* called exactly once, on the writer thread; may free req */
    void *arg;
    /* out, valid when done runs */
    int status;           /* 0 (durable) or a negative DBAO_E* code (nothing appended) */
    uint64_t first_index; /* the index of the first record; the others follow */
    /* private */
    uint8_t *leaves_;
    struct audit_log_req *next_;
};

/* audit_log_submit checks the request's shape, computes the leaf hashes on the calling thread
 * (that is where appends are parallel) and queues it. Records are not decoded again: callers
 * pass audit_record_encode output. Returns 0 (then `done` will run), or an error at once
 * (then it will not): DBAO_EINVAL (bad shape, read-only log, closing), DBAO_ERANGE (too big),
 * DBAO_ENOMEM, or the error that failed the log. */
int audit_log_submit(audit_log *log, audit_log_req *req);

/* audit_log_append is the synchronous form: it returns once the records are durable (0, with
 * the first index in *first_index) or failed. */
int audit_log_append(audit_log *log, const uint8_t *data, const uint32_t *lens, size_t num,
                     uint64_t *first_index, dbao_err *err);

/* audit_log_append_record encodes one record and appends it synchronously. */
int audit_log_append_record(audit_log *log, const audit_record *r, uint64_t *index, dbao_err *err);

/* audit_log_recovery_note says what recovery repaired when the log was opened (a torn tail
 * cut off, the tree cache rebuilt), or NULL if nothing. Valid until audit_log_close. */
const char *audit_log_recovery_note(const audit_log *log);

/* audit_log_failed returns 0 while the log accepts appends, else the error that stopped it. */
int audit_log_failed(const audit_log *log);

/* ---- reading ---- */

/* audit_log_size returns the number of durable records (readable indices are below it). */
uint64_t audit_log_size(const audit_log *log);

/* audit_log_refresh (read-only logs) picks up records a writer has appended since. */
int audit_log_refresh(audit_log *log, dbao_err *err);

/* audit_log_get copies the canonical encoding of record `index` into `out` (room for `cap`
 * bytes; AUDIT_RECORD_MAX always suffices) and its length to *len. DBAO_ERANGE if index >=
 * size or cap is too small, DBAO_EVERIFY if the stored frame fails its CRC, DBAO_EIO. */
int audit_log_get(audit_log *log, uint64_t index, uint8_t *out, size_t cap, size_t *len,
                  dbao_err *err);

/* audit_log_hash is an audit_hash_fn over the log's tree (arg: the audit_log *). */
int audit_log_hash(void *log, uint8_t out[AUDIT_HASH_LEN], unsigned level, uint64_t index);

/* Proofs for a tree size up to audit_log_size (a size with a signed checkpoint is what a
 * verifier can use). Same output conventions as audit_merkle_*_proof. */
int audit_log_prove_inclusion(audit_log *log, uint64_t index, uint64_t size, uint8_t *proof,
                              size_t *num, dbao_err *err);
int audit_log_prove_consistency(audit_log *log, uint64_t size1, uint64_t size2, uint8_t *proof,
                                size_t *num, dbao_err *err);

/* audit_log_checkpoint_latest returns the latest signed checkpoint: its note text in a new
 * buffer (*note, free with dbao_free; may be NULL if only cp is wanted) and its contents in
 * *cp. DBAO_ERANGE if the log has no checkpoint yet. */
int audit_log_checkpoint_latest(audit_log *log, char **note, size_t *note_len, audit_checkpoint *cp,
                                dbao_err *err);

/* audit_log_checkpoint_cut signs a checkpoint for the current size now (read-write logs; it
 * waits for the writer), unless the latest one already has that size. */
int audit_log_checkpoint_cut(audit_log *log, dbao_err *err);

/* Sequential reading from `start` up to the size at the time of the call (exporters, get). */
typedef struct audit_log_iter audit_log_iter;
int audit_log_iter_open(audit_log_iter **out, audit_log *log, uint64_t start, dbao_err *err);
/* Returns 1 with the next record (valid until the next call), 0 at the end, or an error. */
int audit_log_iter_next(audit_log_iter *it, uint64_t *index, const uint8_t **rec, size_t *len,
                        dbao_err *err);
void audit_log_iter_close(audit_log_iter *it);

/* Counters for /metrics. */
typedef struct audit_log_stats {
    uint64_t size;              /* durable records */
    uint64_t batches;           /* batches made durable since open */
    uint64_t appended;          /* records appended since open */
    uint64_t bytes;             /* bytes written to segments since open */
    uint64_t checkpoint_size;   /* size of the latest checkpoint */
    int64_t checkpoint_time_ns; /* when it was cut (0 if none) */
    uint64_t fsync_ns_total;    /* time spent in fdatasync */
    int failed;                 /* audit_log_failed */
} audit_log_stats;
void audit_log_get_stats(const audit_log *log, audit_log_stats *st);

/* ---- verification (offline, read-only, no recovery) ---- */

typedef struct audit_verify_report {
    uint64_t records;      /* records read and checked */
    uint64_t checkpoints;  /* checkpoints verified */
    uint64_t signed_size;  /* size of the latest verified checkpoint */
    uint64_t torn_bytes;   /* unacknowledged torn tail found (not tampering) */
    uint64_t pruned_below; /* records below were archived: not re-read (the later signed roots
                              authenticate the tree cache that stands in for them) */
    /* on DBAO_EVERIFY: */
    uint64_t bad_index;  /* first bad record index (UINT64_MAX if not one record) */
    char bad_file[256];  /* file, relative to the log directory */
    uint64_t bad_offset; /* byte offset in bad_file */
    char what[512];      /* what is wrong */
} audit_verify_report;

/* audit_log_verify_dir checks a whole log directory: every segment header and frame (magic,
 * version, CRC, consecutive indices, canonical records), every checkpoint's signature by one
 * of the trusted keys and its root against the tree recomputed from the records, and the tree
 * cache against the records. 0 if intact; DBAO_EVERIFY with `rep` naming the first bad index,
 * file and offset; other codes for errors (unreadable directory, DBAO_ENOTSUP). */
int audit_log_verify_dir(const char *dir, const audit_note_key *trusted, size_t num_trusted,
                         audit_verify_report *rep, dbao_err *err);

/* ---- retention (src/audit/retention.c) ----
 *
 * Segments are sealed when full and never change again. audit_log_archive copies the sealed
 * segments (and log.conf, the public key and the checkpoints) to an archive directory, each
 * through a temporary file, fdatasync and rename, and checks every copy byte for byte.
 * audit_log_prune then removes local sealed segments, oldest first, only when all of this
 * holds: the archive holds an identical copy, every record in the segment is covered by the
 * latest signed checkpoint, and its newest record is older than both `before_ns` and the
 * configured minimum retention (retention_days, at least 180: Cybersecurity Law art. 21). It
 * records the first retained index in the file "pruned" before unlinking anything. The tree
 * cache and the checkpoints are kept whole, so proofs for pruned records still verify; get
 * says where a pruned record went. Prune takes the log's lock: stop the writer first. */
typedef struct audit_retention_report {
    uint64_t segments;    /* segments archived (copied now) or pruned */
    uint64_t skipped;     /* archive: already there and identical */
    uint64_t first_kept;  /* prune: the first index still in the log directory */
    char stopped_at[256]; /* prune: why it stopped (empty when every sealed segment went) */
} audit_retention_report;

int audit_log_archive(const char *dir, const char *archive_dir, audit_retention_report *rep,
                      dbao_err *err);
int audit_log_prune(const char *dir, const char *archive_dir, int64_t before_ns, int64_t now_ns,
                    audit_retention_report *rep, dbao_err *err);

/* ---- proofs as JSON (the API and CLI face; src/audit/proofjson.c) ---- */

typedef enum audit_proof_type {
    AUDIT_PROOF_INCLUSION = 1,
    AUDIT_PROOF_CONSISTENCY = 2,
} audit_proof_type;

/* {"type":"inclusion","index":N,"size":S,"leaf_hash":"<base64>","hashes":["<base64>",...]}
 * {"type":"consistency","from":A,"to":B,"hashes":[...]}
 * Numbers are JSON integers (at most 2^53 - 1 here); hashes standard base64 of 32 bytes. */
typedef struct audit_proof {
    audit_proof_type type;
    uint64_t index, size; /* inclusion */
    uint64_t from, to;    /* consistency */
    bool has_leaf;        /* inclusion: leaf_hash present */
    uint8_t leaf_hash[AUDIT_HASH_LEN];
    size_t num;
    uint8_t hashes[AUDIT_PROOF_MAX][AUDIT_HASH_LEN];
} audit_proof;

/* audit_proof_to_json writes the proof (one line, no newline) into a new NUL-terminated
 * buffer (free with dbao_free). */
int audit_proof_to_json(const audit_proof *p, char **out, size_t *out_len, dbao_err *err);

/* audit_proof_from_json parses strictly (unknown or duplicate keys, wrong types, bad base64,
 * too many hashes: DBAO_EFORMAT naming the field). It checks the shape only; verification is
 * audit_merkle_verify_*. */
int audit_proof_from_json(audit_proof *p, const char *json, size_t len, dbao_err *err);

/* ---- export (src/audit/export*.c) ---- */

typedef struct audit_export_opts {
    const char *url;    /* nats://127.0.0.1:P/STREAM or http://127.0.0.1:P (ClickHouse) */
    bool follow;        /* keep exporting new records until *stop becomes nonzero */
    volatile int *stop; /* may be NULL when !follow */
    uint32_t batch;     /* records per publish/insert batch; default 1000 */
} audit_export_opts;

typedef struct audit_export_stats {
    uint64_t start_index; /* where this run resumed */
    uint64_t exported;    /* records sent by this run */
    uint64_t next_index;  /* the first index not yet exported */
} audit_export_stats;

/* audit_export_run sends the log's checkpointed records (indices below the latest checkpoint's
 * size) to the target, at least once and idempotently by index (a record sent twice is stored
 * once), resuming after the last index the target already holds. */
int audit_export_run(audit_log *log, const audit_export_opts *opts, audit_export_stats *st,
                     dbao_err *err);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_AUDIT_H */
