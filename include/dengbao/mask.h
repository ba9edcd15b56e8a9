/* mask.h: Chinese personal-data detection, masking functions and masking policies
 * (GB/T 22239-2019 8.1.4.11 个人信息保护, 8.1.4.8 数据保密性; GB/T 35273 去标识化).
 *
 * Three layers, each usable alone:
 *
 *   detection  validated detectors for the types of mask_type below (check digits, dates,
 *              region codes, issuer ranges: not loose regexes). A finding is never glued to a
 *              neighbouring ASCII letter or digit (an ID inside a longer digit run is not an
 *              ID); any non-ASCII byte (Chinese text, full-width punctuation) is a boundary.
 *              Offsets are bytes into the caller's text. Throughput matters (the gateway scans
 *              response bodies, the PostgreSQL proxy scans result rows): one pass, no regex.
 *   functions  masking functions (mask_fn): keep first N / last M, mask a range, mask before /
 *              after a character, replace, HMAC-SM3 pseudonym, SM4 encryption with a key id
 *              (reversible by holders of the key), keep the year of a date, round, add noise,
 *              and the type-aware default. Lengths count characters (UTF-8 code points), so
 *              "张三丰" keeps its shape: "张**".
 *   policies   a YAML file (docs/mask.md) mapping columns ("schema.table.column",
 *              "table.column") and JSON fields ("patient.id_no") to a type, a function for
 *              everybody and per-role overrides ("clear" for the roles that see the value),
 *              the keys the functions use, which data types and column comment tags
 *              ("@PII:CN_RID18") mark a column, which types free-text detection looks for, and
 *              what a derived expression (a function of a sensitive column) becomes.
 *
 * Errors: 0 or a negative DBAO_E* code (common.h); messages name fields and line numbers, never
 * the values (they are personal data by definition here).
 *
 * Threading: a mask_detector and a mask_policy are immutable once built and may be shared by
 * any number of threads; the functions taking them are reentrant.
 */
#ifndef DENGBAO_MASK_H
#define DENGBAO_MASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- detection --------------------------------------------------------------------------- */

/* The names (mask_type_name) are part of the contract: CLI output, policies and audit
 * records use them. */
typedef enum mask_type {
    MASK_T_NONE = 0,
    MASK_T_CN_RID18,    /* 18-digit resident ID, GB 11643 check digit, real past birth date */
    MASK_T_CN_RID15,    /* 15-digit first-generation resident ID (birth year 19yy) */
    MASK_T_CN_MOBILE,   /* mainland mobile, +86/0086 prefix, 3-4-4 grouping, current segments */
    MASK_T_BANK_CARD,   /* 15-19 digits, Luhn, issuer range, grouped forms */
    MASK_T_USCC,        /* unified social credit code, GB 32100 + embedded GB 11714 code */
    MASK_T_CN_PASSPORT, /* PRC passport (E/G + 8 digits, E + letter + 7 digits, ...) */
    MASK_T_HKMO_PERMIT, /* 往来港澳通行证 (exit-entry permit to HK and Macao) */
    MASK_T_HRP,         /* 港澳居民来往内地通行证 (home return permit) */
    MASK_T_EMAIL,
    MASK_T_IPV4,
    MASK_T_CN_PLATE, /* GA 36 vehicle plate incl. new-energy plates (UTF-8 province char) */
    MASK_T_CN_NAME,  /* surname dictionary + 1-2 given characters: only when asked */
    MASK_T_COUNT
} mask_type;

#define MASK_TYPE_BIT(t) (1u << (unsigned) (t))
/* Every type except CN_NAME (names are only looked for in tagged columns or fields, or when
 * the caller asks explicitly, because free text is full of words that look like names). */
#define MASK_TYPES_DEFAULT                                                                         \
    (((1u << MASK_T_COUNT) - 1u) & ~MASK_TYPE_BIT(MASK_T_NONE) & ~MASK_TYPE_BIT(MASK_T_CN_NAME))
#define MASK_TYPES_ALL (((1u << MASK_T_COUNT) - 1u) & ~MASK_TYPE_BIT(MASK_T_NONE))

/* mask_type_name: "CN_RID18", ...; "NONE" for MASK_T_NONE, NULL when out of range. */
const char *mask_type_name(mask_type t);

/* mask_type_parse: the exact (case-sensitive) name; DBAO_EFORMAT if unknown. */
int mask_type_parse(const char *name, size_t len, mask_type *out);

/* mask_types_parse: a comma-separated list of names into a bit set; DBAO_EFORMAT naming the
 * unknown entry, or an empty list. */
int mask_types_parse(const char *list, uint32_t *set, dbao_err *err);

typedef struct mask_finding {
    mask_type type;
    uint32_t start; /* byte offset of the first byte */
    uint32_t end;   /* byte offset one past the last byte */
} mask_finding;

typedef struct mask_detect_opts {
    uint32_t types;              /* a MASK_TYPE_BIT set; 0 means MASK_TYPES_DEFAULT */
    const char *mobile_prefixes; /* comma-separated 3-digit segments ("130,131,...,199";
                                    ranges "130-139" too); NULL: the built-in list of current
                                    segments (src/mask/detect.c) */
    int32_t today;               /* yyyymmdd that birth dates must not pass; 0: today (UTC+8) */
} mask_detect_opts;

typedef struct mask_detector mask_detector;

/* mask_detector_new builds an immutable detector; opts may be NULL (defaults). */
int mask_detector_new(mask_detector **out, const mask_detect_opts *opts, dbao_err *err);
void mask_detector_free(mask_detector *d);

/* mask_detect scans text[0..len) (len < 4 GiB) and stores up to `cap` findings in out, in
 * increasing start order, never overlapping (at one position the longest valid match wins;
 * at equal length the lower mask_type). Returns the total number of findings, which may be
 * more than cap (then only the first cap were stored). */
size_t mask_detect(const mask_detector *d, const char *text, size_t len, mask_finding *out,
                   size_t cap);

/* mask_validate: true when all of s[0..len) is one valid value of type t with the detector's
 * rules (grouping separators and prefixes as the detector accepts them). For tagged columns
 * and fields, whose type is known. */
bool mask_validate(const mask_detector *d, mask_type t, const char *s, size_t len);

/* ---- masking functions ------------------------------------------------------------------- */

typedef enum mask_fn_kind {
    MASK_FN_CLEAR = 0, /* "clear": the value unchanged (only as a per-role override) */
    MASK_FN_DEFAULT,   /* "default": the type-aware default below */
    MASK_FN_KEEP,      /* "keep(N,M)": first N and last M characters, the rest mask_char */
    MASK_FN_RANGE,     /* "range(A,B)": characters [A,B) masked (B beyond the end: to the end) */
    MASK_FN_BEFORE,    /* "before(C)": every character before the first C masked */
    MASK_FN_AFTER,     /* "after(C)": every character after the first C masked */
    MASK_FN_REPLACE,   /* "replace('***')": a fixed value */
    MASK_FN_PSEUDONYM, /* "pseudonym(KEYID)": "p_" + first 16 bytes of HMAC-SM3, hex */
    MASK_FN_ENCRYPT,   /* "encrypt(KEYID)": "enc1:KEYID:" + base64url(nonce|SM4-GCM ct|tag) */
    MASK_FN_YEAR,      /* "year": a date's year only ("1985-07-23" -> "1985") */
    MASK_FN_ROUND,     /* "round(STEP)": a number rounded to a multiple of STEP */
    MASK_FN_NOISE,     /* "noise(PCT)": a number moved by up to PCT percent, deterministic
                          per (key, value) when a key is given: "noise(PCT,KEYID)" */
} mask_fn_kind;

#define MASK_KEY_ID_MAX 64

typedef struct mask_fn {
    mask_fn_kind kind;
    uint32_t a, b;                    /* KEEP: N, M; RANGE: A, B; NOISE: PCT; ROUND: unused */
    uint32_t ch;                      /* BEFORE/AFTER: a Unicode code point */
    int64_t step;                     /* ROUND */
    char *value;                      /* REPLACE (owned) */
    char key_id[MASK_KEY_ID_MAX + 1]; /* PSEUDONYM, ENCRYPT, NOISE with a key; "" otherwise */
} mask_fn;

/* The type-aware defaults (MASK_FN_DEFAULT):
 *   CN_RID18/CN_RID15  keep(6,4)   110105********002X
 *   CN_MOBILE          keep(3,4)   138****8000 (a +86 prefix is kept as is)
 *   BANK_CARD          keep(0,4)   ************1234
 *   USCC               keep(2,4)   passports and permits keep(1,3)
 *   EMAIL              before(@) keeping the first character: z***@example.com
 *   IPV4               the last two octets: 10.1.*.*
 *   CN_PLATE           keep(2,1)   CN_NAME keep(1,0): 张**
 *   NONE               replace('***') */

/* mask_fn_parse parses one function spec (the names in quotes above; white space around
 * arguments allowed). Key ids are [A-Za-z0-9_.-]{1,64}. */
int mask_fn_parse(mask_fn *out, const char *spec, size_t len, dbao_err *err);

/* mask_fn_format writes the canonical spec text (for audit records and docs). */
int mask_fn_format(const mask_fn *f, dbao_buf *out);

void mask_fn_cleanup(mask_fn *f);

/* Keys for PSEUDONYM (HMAC-SM3, 32 bytes), ENCRYPT (SM4, 16 bytes) and keyed NOISE. A keyring
 * is immutable once built; keys are wiped when it is freed. */
typedef struct mask_keyring mask_keyring;

int mask_keyring_new(mask_keyring **out);
/* mask_keyring_add copies the key; DBAO_EINVAL for a duplicate id or a bad length (16 or 32). */
int mask_keyring_add(mask_keyring *k, const char *id, const uint8_t *key, size_t len,
                     dbao_err *err);
/* mask_keyring_load_file reads a key file: hex of 16 or 32 bytes (white space ignored); the file
 * must not be readable by group or others (DBAO_EINVAL naming the mode otherwise). */
int mask_keyring_load_file(mask_keyring *k, const char *id, const char *path, dbao_err *err);
void mask_keyring_free(mask_keyring *k);

/* mask_fn_apply appends the masked form of in[0..len) to out. `type` chooses the default for
 * MASK_FN_DEFAULT. Input that is not valid UTF-8 is masked byte by byte (never passed through
 * by accident); a number function given a non-number answers DBAO_EFORMAT (callers then fall
 * back to replace). DBAO_EKEY when the key id is not in `keys`. */
int mask_fn_apply(const mask_fn *f, mask_type type, const mask_keyring *keys, const char *in,
                  size_t len, dbao_buf *out, dbao_err *err);

/* mask_decrypt reverses an "enc1:" value with the keyring (DBAO_EVERIFY if the tag fails,
 * DBAO_EKEY if the key id is unknown, DBAO_EFORMAT if it is not an enc1 value). */
int mask_decrypt(const mask_keyring *keys, const char *in, size_t len, dbao_buf *out,
                 dbao_err *err);

/* ---- policies ---------------------------------------------------------------------------- */

/* What a role may do with a sensitive column in a predicate (WHERE, JOIN ON, HAVING, ORDER BY,
 * GROUP BY, window clauses), where the value leaks by inference. */
typedef enum mask_pred {
    MASK_PRED_EQUALITY = 0, /* default: only col = constant/parameter, col IN (constants) */
    MASK_PRED_ALLOW,
    MASK_PRED_DENY,
} mask_pred;

/* One masking action: a function and the type it applies to. The policy keeps every action
 * in one table; rules and the proxy refer to them by index (stable for the policy's life). */
typedef struct mask_action {
    mask_fn fn;
    mask_type type;
} mask_action;

typedef struct mask_rule {
    char *target;      /* "schema.table.column", "table.column" or a JSON field path */
    mask_type type;    /* MASK_T_NONE when untyped */
    int action;        /* index for everybody not named below; never CLEAR */
    char **roles;      /* roles with an override ... */
    int *role_actions; /* ... their action index, or -1 for clear */
    size_t num_roles;
    mask_pred predicates;
} mask_rule;

typedef struct mask_policy mask_policy;

/* mask_policy_load / _parse: strict YAML (unknown keys, wrong kinds, duplicates, unknown types,
 * functions or key ids, aliases: all refused with "file:line: ..."). Key files named by the
 * policy are loaded relative to the policy's folder. */
int mask_policy_load(mask_policy **out, const char *path, dbao_err *err);
int mask_policy_parse(mask_policy **out, const char *text, size_t len, const char *name,
                      dbao_err *err);
void mask_policy_free(mask_policy *p);

const mask_keyring *mask_policy_keys(const mask_policy *p);
const mask_detector *mask_policy_detector(const mask_policy *p);
size_t mask_policy_num_actions(const mask_policy *p);
const mask_action *mask_policy_action(const mask_policy *p, size_t index);
/* The action for a derived expression (a function, operator, aggregate or row value over a
 * sensitive column): `derived:` in the policy, replace('***') by default. */
int mask_policy_derived_action(const mask_policy *p);
/* The rule of a type (`types:` in the policy): what detector findings, comment tags and data
 * types of type t get, with its role overrides. Never NULL: a type the policy does not name
 * gets a rule with the type's default action. */
const mask_rule *mask_policy_type_rule(const mask_policy *p, mask_type t);
/* Free-text detection types (`detect.types:`), MASK_TYPES_DEFAULT unless set. */
uint32_t mask_policy_detect_types(const mask_policy *p);

/* Rules. Column lookup is case-sensitive on the names PostgreSQL stores (folded to lower case
 * when unquoted); a rule "table.column" matches that table in any schema. */
const mask_rule *mask_policy_column(const mask_policy *p, const char *schema, const char *table,
                                    const char *column);
const mask_rule *mask_policy_field(const mask_policy *p, const char *path, size_t len);
size_t mask_policy_num_rules(const mask_policy *p);
const mask_rule *mask_policy_rule(const mask_policy *p, size_t index);
/* The type named by a data type (`data_types: {cn_rid: CN_RID18}`, e.g. domains), or NONE. */
mask_type mask_policy_data_type(const mask_policy *p, const char *type_name);

/* A user-defined function (outside pg_catalog) that masked roles may call anyway
 * (`allow_functions: [schema.name, name]`): the policy's author vouches that it returns no
 * sensitive value. */
bool mask_policy_function_allowed(const mask_policy *p, const char *schema, const char *name);

/* mask_rule_action_for: the action index for a caller holding `roles`: -1 (clear) if any role
 * has a clear override; else the first role override found in rule order; else rule->action. */
int mask_rule_action_for(const mask_rule *r, const char *const *roles, size_t num_roles);

/* ---- applying a policy to text and JSON --------------------------------------------------- */

typedef struct mask_stats {
    uint64_t fields;   /* JSON fields masked by path */
    uint64_t findings; /* detector findings masked */
    uint32_t types;    /* MASK_TYPE_BIT set of the types masked */
} mask_stats;

/* mask_apply_text: every detector finding (the policy's detect types) replaced by its type's
 * type rule's action for `roles` (mask_policy_type_rule). */
int mask_apply_text(const mask_policy *p, const char *const *roles, size_t num_roles,
                    const char *in, size_t len, dbao_buf *out, mask_stats *st, dbao_err *err);

/* mask_apply_json: one JSON text; fields named by rules masked by their action for `roles`
 * (strings masked as text; numbers by number functions or replaced by a string), then every
 * other string scanned by the detectors. The output keeps key order. DBAO_EFORMAT for input
 * that is not JSON. */
int mask_apply_json(const mask_policy *p, const char *const *roles, size_t num_roles,
                    const char *in, size_t len, dbao_buf *out, mask_stats *st, dbao_err *err);

/* ---- streaming JSON masking (src/mask/jsonstream.c) ---------------------------------------- */

/* A mask_json_stream applies a policy to one JSON document that arrives in pieces (a response
 * body), without building a tree: bounded memory, output written as soon as each token is
 * complete. For the same input and roles its output and statistics are those of
 * mask_apply_json, with these documented exceptions: duplicate object keys are all written
 * (each masked) where jansson keeps one; nesting deeper than MASK_JSON_STREAM_DEPTH, an object
 * key or field path longer than MASK_JSON_STREAM_STR_MAX and a number token longer than 1 KiB
 * are DBAO_EFORMAT; a string value longer than MASK_JSON_STREAM_STR_MAX that would be scanned or
 * masked is replaced whole by "***" and counted in mask_stats.fields (fail closed; strings
 * under a clear override stream through at any length).
 *
 * On DBAO_EFORMAT (not JSON) the output already appended holds the masked tokens before the
 * error: the caller must not deliver the document as if it were whole (the gateway aborts the
 * response). Errors are sticky until mask_json_stream_reset. */
#define MASK_JSON_STREAM_DEPTH   512
#define MASK_JSON_STREAM_STR_MAX 65536

typedef struct mask_json_stream mask_json_stream;

/* mask_json_stream_new: a stream for policy p (borrowed, must outlive the stream) and the
 * caller's roles (borrowed until the next reset or free; NULL/0: no roles, the most masked
 * view). 0, DBAO_EINVAL or DBAO_ENOMEM. */
int mask_json_stream_new(mask_json_stream **out, const mask_policy *p, const char *const *roles,
                         size_t num_roles, dbao_err *err);
/* mask_json_stream_reset: ready for a new document with new roles (borrowed); the buffers are
 * kept (no allocation per document in steady state), the statistics and any error cleared,
 * and the held-back bytes of the last document wiped. */
void mask_json_stream_reset(mask_json_stream *s, const char *const *roles, size_t num_roles);
/* mask_json_stream_feed: the next in[0..len); the masked output is appended to out (it may be
 * shorter than what was fed: an unfinished token is held back). 0, DBAO_EFORMAT (not JSON),
 * DBAO_ENOMEM, DBAO_ECRYPTO (a masking function's key failed). */
int mask_json_stream_feed(mask_json_stream *s, const uint8_t *in, size_t len, dbao_buf *out,
                          dbao_err *err);
/* mask_json_stream_finish: the end of the document (a top-level number ends here);
 * DBAO_EFORMAT if it is incomplete. */
int mask_json_stream_finish(mask_json_stream *s, dbao_buf *out, dbao_err *err);
/* mask_json_stream_release: give up masking the rest of the document (an operator's explicit
 * choice: the gateway's size limit with `over_limit: pass`). Appends the bytes held back for
 * the unfinished token in an equivalent, unmasked JSON form, so that the caller can pass the
 * rest of the input on as it is and the result stays one document (an over-long string value
 * already dropped is written as "***"). The stream then refuses feed and finish (DBAO_EINVAL)
 * until reset. 0 or DBAO_ENOMEM. */
int mask_json_stream_release(mask_json_stream *s, dbao_buf *out);
/* mask_json_stream_stats: what was masked so far in this document. */
void mask_json_stream_stats(const mask_json_stream *s, mask_stats *st);
void mask_json_stream_free(mask_json_stream *s); /* NULL: no-op */

/* ---- the PostgreSQL masking proxy (`dengbao maskproxy`, docs/mask.md) ---------------------- */

struct audit_log;

/* The proxy's configuration: a YAML file (docs/mask.md, "Proxy configuration"), checked as
 * strictly as the policy. It names the policy file, which is loaded with it. */
typedef struct mask_proxy_config mask_proxy_config;

int mask_proxy_config_load(mask_proxy_config **out, const char *path, dbao_err *err);
void mask_proxy_config_free(mask_proxy_config *c);
/* The audit log folder the configuration names (the caller opens the log: it holds the key). */
const char *mask_proxy_config_audit_dir(const mask_proxy_config *c);
/* The listening host as configured ("127.0.0.1"). */
const char *mask_proxy_config_listen_host(const mask_proxy_config *c);

typedef struct mask_proxy mask_proxy;

/* mask_proxy_start listens and serves until mask_proxy_stop. `log` (borrowed, must outlive the
 * proxy) receives one record per decision; the proxy fails closed (refuses statements that
 * touch sensitive data) when it cannot write to it. */
int mask_proxy_start(mask_proxy **out, const mask_proxy_config *cfg, struct audit_log *log,
                     dbao_err *err);
uint16_t mask_proxy_port(const mask_proxy *p);
void mask_proxy_stop(mask_proxy *p);

typedef struct mask_proxy_stats {
    uint64_t sessions;   /* accepted */
    uint64_t statements; /* analysed */
    uint64_t rewritten;  /* with at least one masked output */
    uint64_t refused;
    uint64_t values_masked; /* marked values masked in rows and COPY data */
    uint64_t findings;      /* detector findings masked in unmarked values (second line) */
    uint64_t audit_records;
    uint64_t audit_failures;
    uint64_t shape_hits; /* statements passed by the shape cache without analysis */
} mask_proxy_stats;

void mask_proxy_get_stats(mask_proxy *p, mask_proxy_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_MASK_H */
