/* cmd_audit.c: dengbao audit init|append|verify|checkpoint|get|prove|verify-proof|export.
 *
 * The contract scripts depend on (issue 4): exit 0 success / intact, 1 verification failed
 * (tampering, a proof or signature that does not verify), 2 usage or malformed input, 3
 * internal failure (including an audit log that can no longer write). One stderr line per
 * failure; stdout carries only results.
 *
 * append reads NDJSON on stdin: every line is parsed and validated first (event_id and time
 * are assigned when absent), so a batch with any invalid record appends nothing and exits 2
 * naming the line and the field. The records are then submitted in requests of up to 4096 and
 * "<index>" is printed for each record only from the completion of its request, which the log
 * runs after the batch holding it is durable (fdatasync returned).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dengbao/audit.h"

#define APPEND_LINES_MAX 1000000
#define APPEND_REQ_MAX   4096

static const char audit_usage[] =
    "usage: dengbao audit <command> [options]\n"
    "\n"
    "The tamper-evident audit log (GB/T 22239-2019 8.1.3.5 / 8.1.4.3 安全审计): SM3 Merkle tree,\n"
    "SM2-signed checkpoints, proofs verifiable offline.\n"
    "\n"
    "  init --dir D [--key KEY.pem] [--origin O]   create a log (and an SM2 key if KEY.pem is\n"
    "                                              absent; default D/signer.key)\n"
    "  append --dir D                              NDJSON records on stdin; prints <index> per\n"
    "                                              record once it is durable\n"
    "  verify --dir D [--pub PUB.pem[,OLD.pem]]    check everything; exit 1 on tampering\n"
    "  checkpoint --dir D                          the latest signed checkpoint\n"
    "  get --dir D --index N [--count K]           records as JSON, one per line\n"
    "  prove --dir D --index N [--size S]          inclusion proof (JSON)\n"
    "  prove --dir D --from A --to B               consistency proof (JSON)\n"
    "  verify-proof --pub PUB.pem --checkpoint F --record F --proof F\n"
    "  verify-proof --pub PUB.pem --checkpoint F --old-checkpoint F --proof F\n"
    "  export --dir D --to nats://HOST:PORT/STREAM | http://HOST:PORT [--follow]\n"
    "                                              checkpointed records to NATS JetStream or\n"
    "                                              ClickHouse, at least once, resumable\n"
    "  rotate-key --dir D [--key NEW.pem]          sign from now on with a new SM2 key; the old\n"
    "                                              public key stays trusted for old checkpoints\n"
    "  archive --dir D --to PATH                   copy sealed segments to an archive\n"
    "  prune --dir D --archive PATH [--before YYYY-MM-DD]\n"
    "                                              remove archived segments older than the\n"
    "                                              retention minimum (default 180 days)\n"
    "                                              offline; exit 0 proven, 1 not\n"

    "\n"
    "Exit status: 0 success, 1 verification failed, 2 usage or malformed input, 3 internal.\n";

/* ---- options ---- */

typedef struct opts {
    const char *dir, *key, *origin, *pub, *checkpoint, *old_checkpoint, *record, *proof;
    const char *index, *size, *from, *to, *count, *archive, *before, *batch;
} opts;

static int
parse_opts(int argc, char **argv, opts *o, const char *const *allowed)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(audit_usage, stdout);
            return -1;
        }
        bool ok = false;
        for (size_t k = 0; allowed[k] != NULL; k++) {
            if (strcmp(a, allowed[k]) == 0) {
                ok = true;
            }
        }
        if (!ok || i + 1 >= argc) {
            return cli_usage_error("dengbao audit --help",
                                   ok ? "option %s needs a value" : "unknown option '%s'", a);
        }
        const char *v = argv[++i];
        const char **slot = strcmp(a, "--dir") == 0              ? &o->dir
                            : strcmp(a, "--key") == 0            ? &o->key
                            : strcmp(a, "--origin") == 0         ? &o->origin
                            : strcmp(a, "--pub") == 0            ? &o->pub
                            : strcmp(a, "--checkpoint") == 0     ? &o->checkpoint
                            : strcmp(a, "--old-checkpoint") == 0 ? &o->old_checkpoint
                            : strcmp(a, "--record") == 0         ? &o->record
                            : strcmp(a, "--proof") == 0          ? &o->proof
                            : strcmp(a, "--index") == 0          ? &o->index
                            : strcmp(a, "--size") == 0           ? &o->size
                            : strcmp(a, "--from") == 0           ? &o->from
                            : strcmp(a, "--count") == 0          ? &o->count
                            : strcmp(a, "--archive") == 0        ? &o->archive
                            : strcmp(a, "--before") == 0         ? &o->before
                            : strcmp(a, "--batch") == 0          ? &o->batch
                            : strcmp(a, "--to") == 0             ? &o->to
                                                                 : &o->to;
        if (*slot != NULL) {
            return cli_usage_error("dengbao audit --help", "option %s given twice", a);
        }
        *slot = v;
    }
    return 0;
}

static int
parse_index(const char *s, const char *name, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return cli_usage_error("dengbao audit --help", "%s must be a non-negative integer", name);
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > (unsigned long long) INT64_MAX) {
        return cli_usage_error("dengbao audit --help", "%s must be a non-negative integer", name);
    }
    *out = v;
    return 0;
}

/* ---- keys ---- */

static void
join(char *out, size_t cap, const char *dir, const char *path)
{
    int n =
        path[0] == '/' ? snprintf(out, cap, "%s", path) : snprintf(out, cap, "%s/%s", dir, path);
    if (n < 0 || (size_t) n >= cap) {
        out[0] = '\0'; /* too long: opening "" fails with a clear error */
    }
}

int
cli_audit_keys_load(const char *dir, bool need_priv, const char *pub_override, gm_sm2_key **key,
                    audit_log_config *cfg, char **holder, dbao_err *err)
{
    *key = NULL;
    int rc = audit_log_read_config(dir, cfg, holder, err);
    if (rc != 0) {
        return rc;
    }
    char p[PATH_MAX];
    if (need_priv) {
        join(p, sizeof p, dir, cfg->key_path);
    } else if (pub_override != NULL) {
        snprintf(p, sizeof p, "%s", pub_override);
    } else {
        join(p, sizeof p, dir, cfg->pub_path);
    }
    rc = cli_load_key(key, p, NULL, need_priv, err);
    if (rc != 0) {
        dbao_free(*holder);
        *holder = NULL;
    }
    return rc;
}

int
cli_audit_trust_load(cli_audit_trust *t, const char *dir, const audit_log_config *cfg,
                     dbao_err *err)
{
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < cfg->num_trusted_pubs; i++) {
        char p[PATH_MAX];
        join(p, sizeof p, dir, cfg->trusted_pubs[i]);
        int rc = cli_load_key(&t->keys[i], p, NULL, false, err);
        if (rc != 0) {
            cli_audit_trust_free(t);
            return rc;
        }
        t->nk[i].name = cfg->origin;
        t->nk[i].key = t->keys[i];
        t->n++;
    }
    return 0;
}

void
cli_audit_trust_free(cli_audit_trust *t)
{
    for (size_t i = 0; i < t->n; i++) {
        gm_sm2_key_free(t->keys[i]);
    }
    memset(t, 0, sizeof *t);
}

int
cli_audit_writer_open(cli_audit_writer *w, const char *dir, audit_log_alarm_fn alarm,
                      void *alarm_arg, dbao_err *err)
{
    memset(w, 0, sizeof *w);
    int rc = cli_audit_keys_load(dir, true, NULL, &w->key, &w->cfg, &w->holder, err);
    if (rc == 0) {
        rc = cli_audit_trust_load(&w->trust, dir, &w->cfg, err);
    }
    if (rc == 0) {
        w->nk = (audit_note_key){.name = w->cfg.origin, .key = w->key};
        audit_log_open_opts oo = {.signers = &w->nk,
                                  .num_signers = 1,
                                  .trusted = w->trust.nk,
                                  .num_trusted = w->trust.n,
                                  .alarm = alarm,
                                  .alarm_arg = alarm_arg};
        rc = audit_log_open(&w->log, dir, &oo, err);
    }
    if (rc != 0) {
        char why[DBAO_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err != NULL && err->msg[0] ? err->msg : dbao_strerror(rc));
        cli_audit_writer_close(w);
        return dbao_err_set(err, rc, "cannot open the audit log %s: %s", dir, why);
    }
    return 0;
}

int
cli_audit_writer_close(cli_audit_writer *w)
{
    int rc = w->log != NULL ? audit_log_close(w->log) : 0;
    cli_audit_trust_free(&w->trust);
    gm_sm2_key_free(w->key);
    dbao_free(w->holder);
    memset(w, 0, sizeof *w);
    return rc;
}

static int
load_pub(gm_sm2_key **key, const char *path, dbao_err *err)
{
    return cli_load_key(key, path, NULL, false, err);
}

/* ---- init ---- */

static int
audit_init(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", "--key", "--origin", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (o.dir == NULL) {
        return cli_usage_error("dengbao audit init --dir D [--key KEY.pem] [--origin O]",
                               "--dir is required");
    }
    char origin[AUDIT_ORIGIN_MAX + 1];
    if (o.origin != NULL) {
        snprintf(origin, sizeof origin, "%s", o.origin);
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(origin, sizeof origin, "%s/dengbao-audit", host);
    }
    dbao_err err;
    dbao_err_clear(&err);
    char keyabs[PATH_MAX];
    const char *key_path = NULL;
    if (o.key != NULL) {
        if (o.key[0] == '/') {
            snprintf(keyabs, sizeof keyabs, "%s", o.key);
        } else {
            char cwd[PATH_MAX];
            if (getcwd(cwd, sizeof cwd) == NULL) {
                return cli_error(DBAO_EIO, "cannot get the current directory");
            }
            int n = snprintf(keyabs, sizeof keyabs, "%s/%s", cwd, o.key);
            if (n < 0 || (size_t) n >= sizeof keyabs) {
                return cli_error(DBAO_ERANGE, "--key path too long");
            }
        }
        key_path = keyabs;
    }
    audit_log_config cfg = {.origin = origin, .key_path = key_path};
    rc = audit_log_create(o.dir, &cfg, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    /* the signing key: load it if it exists, else create it (0600) */
    char kp[PATH_MAX], pp[PATH_MAX];
    join(kp, sizeof kp, o.dir, key_path ? key_path : "signer.key");
    join(pp, sizeof pp, o.dir, "signer.pub.pem");
    gm_sm2_key *key = NULL;
    if (access(kp, F_OK) == 0) {
        rc = cli_load_key(&key, kp, NULL, true, &err);
    } else {
        rc = gm_sm2_key_generate(&key, &err);
        char *pem = NULL;
        size_t len = 0;
        if (rc == 0) {
            rc = gm_sm2_key_to_pem(key, &pem, &len, true, &err);
        }
        if (rc == 0) {
            rc = dbao_file_write(kp, pem, len, 0600, &err);
            dbao_free_secret(pem, len);
        }
    }
    if (rc == 0) {
        char *pem = NULL;
        size_t len = 0;
        rc = gm_sm2_key_to_pem(key, &pem, &len, false, &err);
        if (rc == 0) {
            rc = dbao_file_write(pp, pem, len, 0644, &err);
            dbao_free_secret(pem, len);
        }
    }
    gm_sm2_key_free(key);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("created audit log %s (origin %s)\nsigning key %s\npublic key %s\n", o.dir, origin, kp,
           pp);
    return CLI_OK;
}

/* ---- append ---- */

typedef struct append_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t outstanding;
    int first_error;
    uint64_t durable;
} append_state;

typedef struct append_req {
    audit_log_req req;
    append_state *st;
    uint8_t *data;
    uint32_t *lens;
} append_req;

static void
append_done(audit_log_req *req)
{
    append_req *a = (append_req *) req;
    append_state *st = a->st;
    if (req->status == 0) {
        /* the records are durable: now, and only now, say so (requests complete in order) */
        for (size_t i = 0; i < req->num; i++) {
            printf("%" PRIu64 "\n", req->first_index + i);
        }
        fflush(stdout);
    }
    pthread_mutex_lock(&st->mu);
    if (req->status == 0) {
        st->durable += req->num;
    } else if (st->first_error == 0) {
        st->first_error = req->status;
    }
    st->outstanding--;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    free(a->data);
    free(a->lens);
    free(a);
}

static int
audit_append(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (o.dir == NULL) {
        return cli_usage_error("dengbao audit append --dir D < records.ndjson",
                               "--dir is required");
    }
    /* 1. read and validate everything */
    size_t n = 0, cap = 0, bytes = 0, bcap = 0;
    uint32_t *lens = NULL;
    uint8_t *data = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t llen;
    long lineno = 0;
    dbao_err err;
    dbao_err_clear(&err);
    audit_record r;
    audit_record_init(&r);
    rc = 0;
    while ((llen = getline(&line, &lcap, stdin)) >= 0) {
        lineno++;
        while (llen > 0 && (line[llen - 1] == '\n' || line[llen - 1] == '\r')) {
            llen--;
        }
        if (llen == 0) {
            continue; /* blank lines separate nothing and are skipped */
        }
        if (n >= APPEND_LINES_MAX) {
            rc = cli_error(DBAO_ERANGE, "more than %d records on stdin: split the input",
                           APPEND_LINES_MAX);
            goto out;
        }
        int e = audit_record_from_json(&r, line, (size_t) llen, AUDIT_JSON_ASSIGN, &err);
        if (e == 0) {
            if (bytes + AUDIT_RECORD_MAX > bcap) {
                size_t nc = (bcap ? bcap * 2 : 1 << 20);
                while (nc < bytes + AUDIT_RECORD_MAX) {
                    nc *= 2;
                }
                uint8_t *nd = realloc(data, nc);
                if (nd == NULL) {
                    rc = cli_error(DBAO_ENOMEM, "out of memory");
                    goto out;
                }
                data = nd;
                bcap = nc;
            }
            size_t rl = 0;
            e = audit_record_encode(&r, data + bytes, &rl, bcap - bytes, &err);
            if (e == 0) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 1024;
                    uint32_t *nl = realloc(lens, cap * sizeof *nl);
                    if (nl == NULL) {
                        rc = cli_error(DBAO_ENOMEM, "out of memory");
                        goto out;
                    }
                    lens = nl;
                }
                lens[n++] = (uint32_t) rl;
                bytes += rl;
            }
        }
        if (e != 0) {
            rc = cli_error(e == DBAO_ENOMEM ? e : DBAO_EFORMAT,
                           "line %ld: %s; nothing was appended", lineno, err.msg);
            goto out;
        }
    }
    if (ferror(stdin)) {
        rc = cli_error(DBAO_EIO, "cannot read stdin");
        goto out;
    }
    if (n == 0) {
        rc = CLI_OK;
        goto out;
    }
    /* 2. open and append */
    gm_sm2_key *key = NULL;
    audit_log_config cfg;
    char *holder = NULL;
    rc = cli_audit_keys_load(o.dir, true, NULL, &key, &cfg, &holder, &err);
    if (rc != 0) {
        rc = cli_report(rc, &err);
        goto out;
    }
    audit_note_key nk = {.name = cfg.origin, .key = key};
    cli_audit_trust trust;
    rc = cli_audit_trust_load(&trust, o.dir, &cfg, &err);
    if (rc != 0) {
        gm_sm2_key_free(key);
        dbao_free(holder);
        rc = cli_report(rc, &err);
        goto out;
    }
    audit_log_open_opts oo = {
        .signers = &nk, .num_signers = 1, .trusted = trust.nk, .num_trusted = trust.n};
    audit_log *log = NULL;
    rc = audit_log_open(&log, o.dir, &oo, &err);
    if (rc != 0) {
        gm_sm2_key_free(key);
        cli_audit_trust_free(&trust);
        dbao_free(holder);
        rc = cli_report(rc, &err);
        goto out;
    }
    const char *note = audit_log_recovery_note(log);
    if (note != NULL) {
        fprintf(stderr, "dengbao: recovery: %s\n", note);
    }
    append_state st = {.outstanding = 0};
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    /* requests fit a quarter of a segment (a request never spans segments) */
    size_t req_bytes_max = (size_t) 4 << 20;
    if (cfg.segment_bytes / 4 < req_bytes_max) {
        req_bytes_max = (size_t) (cfg.segment_bytes / 4);
    }
    size_t i = 0, off = 0;
    int submit_rc = 0;
    while (i < n) {
        size_t k = 0, b = 0;
        while (i + k < n && k < APPEND_REQ_MAX && b + lens[i + k] + 16 * (k + 1) < req_bytes_max) {
            b += lens[i + k];
            k++;
        }
        append_req *a = calloc(1, sizeof *a);
        uint8_t *d = malloc(b);
        uint32_t *l = malloc(k * sizeof *l);
        if (a == NULL || d == NULL || l == NULL) {
            free(a);
            free(d);
            free(l);
            submit_rc = DBAO_ENOMEM;
            break;
        }
        memcpy(d, data + off, b);
        memcpy(l, lens + i, k * sizeof *l);
        a->st = &st;
        a->data = d;
        a->lens = l;
        a->req.data = d;
        a->req.lens = l;
        a->req.num = k;
        a->req.done = append_done;
        pthread_mutex_lock(&st.mu);
        st.outstanding++;
        pthread_mutex_unlock(&st.mu);
        submit_rc = audit_log_submit(log, &a->req);
        if (submit_rc != 0) {
            pthread_mutex_lock(&st.mu);
            st.outstanding--;
            pthread_mutex_unlock(&st.mu);
            free(a);
            free(d);
            free(l);
            break;
        }
        i += k;
        off += b;
    }
    pthread_mutex_lock(&st.mu);
    while (st.outstanding > 0) {
        pthread_cond_wait(&st.cv, &st.mu);
    }
    pthread_mutex_unlock(&st.mu);
    int failed = audit_log_close(log); /* also reports a final checkpoint that failed */
    gm_sm2_key_free(key);
    cli_audit_trust_free(&trust);
    dbao_free(holder);
    int first = st.first_error ? st.first_error : submit_rc;
    if (first == 0 && failed != 0) {
        first = failed;
    }
    if (first != 0) {
        rc = cli_error(DBAO_EIO,
                       "the audit log stopped accepting records after %" PRIu64 " of %zu (%s); "
                       "records without a printed index were not acknowledged",
                       st.durable, n, dbao_strerror(first));
        rc = CLI_INTERNAL;
    } else {
        rc = CLI_OK;
    }
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.cv);
out:
    audit_record_cleanup(&r);
    free(line);
    free(lens);
    free(data);
    return rc;
}

/* ---- verify ---- */

static int
audit_verify(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", "--pub", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (o.dir == NULL) {
        return cli_usage_error("dengbao audit verify --dir D [--pub PUB.pem[,OLD.pem...]]",
                               "--dir is required");
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_log_config cfg;
    char *holder = NULL;
    rc = audit_log_read_config(o.dir, &cfg, &holder, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    /* Trusted keys: those given with --pub (comma-separated: every key the log was signed with
     * since its creation, obtained independently), else the log's own pub and trusted_pub. */
    gm_sm2_key *keys[AUDIT_LOG_TRUSTED_MAX + 1] = {0};
    audit_note_key nks[AUDIT_LOG_TRUSTED_MAX + 1];
    size_t nk = 0;
    char list[PATH_MAX * 2];
    if (o.pub != NULL) {
        snprintf(list, sizeof list, "%s", o.pub);
    } else {
        char p[PATH_MAX];
        join(p, sizeof p, o.dir, cfg.pub_path);
        size_t l = (size_t) snprintf(list, sizeof list, "%s", p);
        for (size_t i = 0; i < cfg.num_trusted_pubs && l < sizeof list; i++) {
            join(p, sizeof p, o.dir, cfg.trusted_pubs[i]);
            l += (size_t) snprintf(list + l, sizeof list - l, ",%s", p);
        }
    }
    char *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t != NULL && rc == 0;
         t = strtok_r(NULL, ",", &save)) {
        if (nk > AUDIT_LOG_TRUSTED_MAX) {
            rc = dbao_err_set(&err, DBAO_ERANGE, "too many public keys");
            break;
        }
        rc = cli_load_key(&keys[nk], t, NULL, false, &err);
        if (rc == 0) {
            nks[nk].name = cfg.origin;
            nks[nk].key = keys[nk];
            nk++;
        }
    }
    audit_verify_report rep;
    if (rc == 0) {
        rc = audit_log_verify_dir(o.dir, nks, nk, &rep, &err);
    }
    for (size_t i = 0; i < nk; i++) {
        gm_sm2_key_free(keys[i]);
    }
    dbao_free(holder);
    if (rc == DBAO_EVERIFY) {
        if (rep.bad_index != UINT64_MAX) {
            fprintf(stderr,
                    "dengbao: audit log damaged: first bad index %" PRIu64
                    " in %s at offset %" PRIu64 ": %s\n",
                    rep.bad_index, rep.bad_file, rep.bad_offset, rep.what);
            printf("FAILED index=%" PRIu64 " file=%s offset=%" PRIu64 "\n", rep.bad_index,
                   rep.bad_file, rep.bad_offset);
        } else {
            fprintf(stderr, "dengbao: audit log damaged in %s at offset %" PRIu64 ": %s\n",
                    rep.bad_file, rep.bad_offset, rep.what);
            printf("FAILED file=%s offset=%" PRIu64 "\n", rep.bad_file, rep.bad_offset);
        }
        return CLI_FAIL;
    }
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("OK records=%" PRIu64 " checkpoints=%" PRIu64 " signed=%" PRIu64 " unsigned=%" PRIu64
           "\n",
           rep.records, rep.checkpoints, rep.signed_size, rep.records - rep.signed_size);
    if (rep.torn_bytes > 0) {
        fprintf(stderr,
                "dengbao: note: %" PRIu64 " bytes of a torn, never acknowledged append at the "
                "end (the next open of the log removes them)\n",
                rep.torn_bytes);
    }
    if (o.pub == NULL) {
        fprintf(stderr, "dengbao: note: verified with the public key stored in the log "
                        "directory; an assessor should pass --pub with a key obtained "
                        "independently\n");
    }
    return CLI_OK;
}

/* ---- read-only commands ---- */

static int
open_ro(audit_log **log, gm_sm2_key **key, char **holder, const char *dir, dbao_err *err)
{
    audit_log_config cfg;
    int rc = cli_audit_keys_load(dir, false, NULL, key, &cfg, holder, err);
    if (rc != 0) {
        return rc;
    }
    audit_note_key nk = {.name = cfg.origin, .key = *key};
    audit_log_open_opts oo = {.flags = AUDIT_LOG_READONLY, .trusted = &nk, .num_trusted = 1};
    rc = audit_log_open(log, dir, &oo, err);
    if (rc != 0) {
        gm_sm2_key_free(*key);
        *key = NULL;
        dbao_free(*holder);
        *holder = NULL;
    }
    return rc;
}

static void
close_ro(audit_log *log, gm_sm2_key *key, char *holder)
{
    audit_log_close(log);
    gm_sm2_key_free(key);
    dbao_free(holder);
}

static int
audit_checkpoint_cmd(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (o.dir == NULL) {
        return cli_usage_error("dengbao audit checkpoint --dir D", "--dir is required");
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_log *log = NULL;
    gm_sm2_key *key = NULL;
    char *holder = NULL;
    rc = open_ro(&log, &key, &holder, o.dir, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    char *note = NULL;
    size_t len = 0;
    rc = audit_log_checkpoint_latest(log, &note, &len, NULL, &err);
    if (rc == 0) {
        fwrite(note, 1, len, stdout);
        dbao_free(note);
    }
    close_ro(log, key, holder);
    return rc == 0 ? CLI_OK : cli_report(rc == DBAO_ERANGE ? DBAO_EFORMAT : rc, &err);
}

static int
audit_get(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", "--index", "--count", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    uint64_t index = 0, count = 1;
    if (o.dir == NULL) {
        return cli_usage_error("dengbao audit get --dir D --index N [--count K]",
                               "--dir is required");
    }
    if ((rc = parse_index(o.index, "--index", &index)) != 0 ||
        (o.count && (rc = parse_index(o.count, "--count", &count)) != 0)) {
        return rc;
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_log *log = NULL;
    gm_sm2_key *key = NULL;
    char *holder = NULL;
    rc = open_ro(&log, &key, &holder, o.dir, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    audit_record r;
    audit_record_init(&r);
    audit_log_iter *it = NULL;
    uint64_t size = audit_log_size(log);
    if (index >= size || count > size - index) {
        rc = dbao_err_set(&err, DBAO_ERANGE,
                          "records %" PRIu64 "..%" PRIu64 " do not exist (log size %" PRIu64 ")",
                          index, index + count - 1, size);
    } else {
        rc = audit_log_iter_open(&it, log, index, &err);
    }
    for (uint64_t k = 0; rc == 0 && k < count; k++) {
        uint64_t at;
        const uint8_t *rec;
        size_t len;
        char *json = NULL;
        size_t jlen = 0;
        rc = audit_log_iter_next(it, &at, &rec, &len, &err);
        if (rc != 1) {
            rc = rc == 0 ? dbao_err_set(&err, DBAO_EIO, "log ended early") : rc;
            break;
        }
        rc = audit_record_decode(&r, rec, len, &err);
        if (rc == 0) {
            rc = audit_record_to_json(&r, &json, &jlen, &err);
        }
        if (rc == 0) {
            json[jlen] = '\n';
            fwrite(json, 1, jlen + 1, stdout);
        }
        dbao_free(json);
    }
    audit_log_iter_close(it);
    audit_record_cleanup(&r);
    close_ro(log, key, holder);
    if (rc == DBAO_ERANGE) {
        return cli_error(DBAO_EFORMAT, "%s", err.msg);
    }
    if (rc == DBAO_EFORMAT) {
        return cli_error(DBAO_EVERIFY, "record %" PRIu64 " is damaged: %s", index, err.msg);
    }
    return rc == 0 ? CLI_OK : cli_report(rc, &err);
}

static int
audit_prove(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", "--index", "--size", "--from", "--to", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    static const char u[] = "dengbao audit prove --dir D (--index N [--size S] | --from A --to B)";
    if (o.dir == NULL) {
        return cli_usage_error(u, "--dir is required");
    }
    bool incl = o.index != NULL;
    if (incl == (o.from != NULL || o.to != NULL) || (incl && (o.from || o.to)) ||
        (!incl && (o.from == NULL || o.to == NULL || o.size != NULL))) {
        return cli_usage_error(u, "give either --index [--size] or --from and --to");
    }
    audit_proof p;
    memset(&p, 0, sizeof p);
    if (incl) {
        p.type = AUDIT_PROOF_INCLUSION;
        if ((rc = parse_index(o.index, "--index", &p.index)) != 0 ||
            (o.size && (rc = parse_index(o.size, "--size", &p.size)) != 0)) {
            return rc;
        }
    } else {
        p.type = AUDIT_PROOF_CONSISTENCY;
        if ((rc = parse_index(o.from, "--from", &p.from)) != 0 ||
            (rc = parse_index(o.to, "--to", &p.to)) != 0) {
            return rc;
        }
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_log *log = NULL;
    gm_sm2_key *key = NULL;
    char *holder = NULL;
    rc = open_ro(&log, &key, &holder, o.dir, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    if (incl && o.size == NULL) {
        audit_checkpoint cp;
        rc = audit_log_checkpoint_latest(log, NULL, NULL, &cp, &err);
        p.size = cp.size;
        if (rc == 0 && p.index >= p.size) {
            rc = dbao_err_set(&err, DBAO_ERANGE,
                              "record %" PRIu64 " is not covered by the latest checkpoint (size "
                              "%" PRIu64 ") yet: wait for the next one or pass --size",
                              p.index, p.size);
        }
    }
    if (rc == 0 && incl) {
        rc = audit_log_prove_inclusion(log, p.index, p.size, &p.hashes[0][0], &p.num, &err);
        if (rc == 0) {
            rc = audit_log_hash(log, p.leaf_hash, 0, p.index);
            p.has_leaf = rc == 0;
        }
    } else if (rc == 0) {
        rc = audit_log_prove_consistency(log, p.from, p.to, &p.hashes[0][0], &p.num, &err);
    }
    char *json = NULL;
    size_t jlen = 0;
    if (rc == 0) {
        rc = audit_proof_to_json(&p, &json, &jlen, &err);
    }
    if (rc == 0) {
        printf("%s\n", json);
    }
    dbao_free(json);
    close_ro(log, key, holder);
    if (rc == DBAO_ERANGE) {
        return cli_error(DBAO_EFORMAT, "%s", err.msg);
    }
    return rc == 0 ? CLI_OK : cli_report(rc, &err);
}

static int
read_text(const char *path, char **out, size_t *len, dbao_err *err)
{
    uint8_t *b = NULL;
    int rc = dbao_file_read(&b, len, path, AUDIT_NOTE_MAX + AUDIT_JSON_MAX, err);
    *out = (char *) b;
    return rc;
}

static int
audit_verify_proof(int argc, char **argv)
{
    static const char *const allowed[] = {"--pub",    "--checkpoint", "--old-checkpoint",
                                          "--record", "--proof",      NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    static const char u[] = "dengbao audit verify-proof --pub PUB.pem --checkpoint F "
                            "(--record F | --old-checkpoint F) --proof F";
    if (o.pub == NULL || o.checkpoint == NULL || o.proof == NULL ||
        (o.record == NULL) == (o.old_checkpoint == NULL)) {
        return cli_usage_error(u, "missing or conflicting options");
    }
    dbao_err err;
    dbao_err_clear(&err);
    gm_sm2_key *key = NULL;
    char *cpt = NULL, *old = NULL, *pj = NULL, *rj = NULL;
    size_t cpl = 0, oldl = 0, pjl = 0, rjl = 0;
    audit_record r;
    audit_record_init(&r);
    audit_checkpoint cp, ocp;
    audit_proof p;
    rc = load_pub(&key, o.pub, &err);
    if (rc == 0) {
        rc = read_text(o.checkpoint, &cpt, &cpl, &err);
    }
    if (rc == 0) {
        rc = read_text(o.proof, &pj, &pjl, &err);
    }
    if (rc == 0 && o.record) {
        rc = read_text(o.record, &rj, &rjl, &err);
    }
    if (rc == 0 && o.old_checkpoint) {
        rc = read_text(o.old_checkpoint, &old, &oldl, &err);
    }
    if (rc != 0) {
        goto out;
    }
    /* The key name is the checkpoint's origin (audit logs sign with name = origin). */
    char origin[AUDIT_ORIGIN_MAX + 1];
    rc = audit_checkpoint_parse_unverified(&cp, cpt, cpl, &err);
    if (rc == 0) {
        snprintf(origin, sizeof origin, "%s", cp.origin);
        audit_note_key nk = {.name = origin, .key = key};
        rc = audit_checkpoint_open(&cp, cpt, cpl, &nk, 1, NULL, &err);
        if (rc == 0 && old) {
            rc = audit_checkpoint_open(&ocp, old, oldl, &nk, 1, NULL, &err);
            if (rc == 0 && strcmp(ocp.origin, cp.origin) != 0) {
                rc = dbao_err_set(&err, DBAO_EVERIFY, "the two checkpoints are of different logs");
            }
        }
    }
    if (rc == 0) {
        rc = audit_proof_from_json(&p, pj, pjl, &err);
    }
    if (rc != 0) {
        goto out;
    }
    if (o.record) {
        if (p.type != AUDIT_PROOF_INCLUSION) {
            rc = dbao_err_set(&err, DBAO_EFORMAT, "--record needs an inclusion proof");
            goto out;
        }
        while (rjl > 0 && (rj[rjl - 1] == '\n' || rj[rjl - 1] == '\r')) {
            rjl--;
        }
        rc = audit_record_from_json(&r, rj, rjl, 0, &err);
        uint8_t *enc = rc == 0 ? dbao_malloc(AUDIT_RECORD_MAX) : NULL;
        size_t el = 0;
        if (rc == 0 && enc == NULL) {
            rc = DBAO_ENOMEM;
        }
        if (rc == 0) {
            rc = audit_record_encode(&r, enc, &el, AUDIT_RECORD_MAX, &err);
        }
        uint8_t leaf[AUDIT_HASH_LEN];
        if (rc == 0) {
            audit_leaf_hash(leaf, enc, el);
        }
        dbao_free(enc);
        if (rc != 0) {
            goto out;
        }
        if (p.size != cp.size) {
            rc = dbao_err_set(&err, DBAO_EVERIFY,
                              "the proof is for a tree of %" PRIu64
                              " records, the checkpoint for %" PRIu64,
                              p.size, cp.size);
        } else if (p.has_leaf && !dbao_ct_memeq(p.leaf_hash, leaf, AUDIT_HASH_LEN)) {
            rc =
                dbao_err_set(&err, DBAO_EVERIFY, "the record does not match the proof's leaf hash");
        } else {
            rc = audit_merkle_verify_inclusion(leaf, p.index, p.size, &p.hashes[0][0], p.num,
                                               cp.root, &err);
        }
    } else {
        if (p.type != AUDIT_PROOF_CONSISTENCY) {
            rc = dbao_err_set(&err, DBAO_EFORMAT, "--old-checkpoint needs a consistency proof");
            goto out;
        }
        if (p.from != ocp.size || p.to != cp.size) {
            rc = dbao_err_set(&err, DBAO_EVERIFY,
                              "the proof is from %" PRIu64 " to %" PRIu64
                              ", the checkpoints are of %" PRIu64 " and %" PRIu64,
                              p.from, p.to, ocp.size, cp.size);
        } else {
            rc = audit_merkle_verify_consistency(ocp.size, cp.size, ocp.root, cp.root,
                                                 &p.hashes[0][0], p.num, &err);
        }
    }
out:
    gm_sm2_key_free(key);
    dbao_free(cpt);
    dbao_free(old);
    dbao_free(pj);
    dbao_free(rj);
    audit_record_cleanup(&r);
    if (rc == 0) {
        printf("OK\n");
        return CLI_OK;
    }
    return cli_report(rc, &err);
}

static int
audit_archive(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", "--to", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (o.dir == NULL || o.to == NULL) {
        return cli_usage_error("dengbao audit archive --dir D --to PATH",
                               "--dir and --to are required");
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_retention_report rep;
    rc = audit_log_archive(o.dir, o.to, &rep, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("archived %" PRIu64 " segments (%" PRIu64 " already there) to %s\n", rep.segments,
           rep.skipped, o.to);
    return CLI_OK;
}

static int
audit_prune(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", "--archive", "--before", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    static const char u[] = "dengbao audit prune --dir D --archive PATH [--before YYYY-MM-DD]";
    if (o.dir == NULL || o.archive == NULL) {
        return cli_usage_error(u, "--dir and --archive are required");
    }
    int64_t now = audit_now_ns();
    int64_t before = now;
    if (o.before != NULL) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        char *end = strptime(o.before, "%Y-%m-%d", &tm);
        if (end == NULL || *end != '\0') {
            return cli_usage_error(u, "--before must be a date YYYY-MM-DD (UTC)");
        }
        before = (int64_t) timegm(&tm) * 1000000000LL;
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_retention_report rep;
    rc = audit_log_prune(o.dir, o.archive, before, now, &rep, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("pruned %" PRIu64 " segments; records from %" PRIu64 " stay in %s\n", rep.segments,
           rep.first_kept, o.dir);
    if (rep.stopped_at[0]) {
        printf("stopped: %s\n", rep.stopped_at);
    }
    return CLI_OK;
}

static int
audit_rotate_key(int argc, char **argv)
{
    static const char *const allowed[] = {"--dir", "--key", NULL};
    opts o;
    int rc = parse_opts(argc, argv, &o, allowed);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    static const char u[] = "dengbao audit rotate-key --dir D [--key NEW.pem]";
    if (o.dir == NULL) {
        return cli_usage_error(u, "--dir is required");
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_log_config cfg;
    char *holder = NULL;
    rc = audit_log_read_config(o.dir, &cfg, &holder, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    if (cfg.num_trusted_pubs >= AUDIT_LOG_TRUSTED_MAX) {
        dbao_free(holder);
        return cli_error(DBAO_ERANGE, "log.conf already trusts %d earlier keys",
                         AUDIT_LOG_TRUSTED_MAX);
    }
    /* 1. the new key (generated unless given), written under names that include its key ID */
    gm_sm2_key *nkey = NULL;
    char kp[PATH_MAX], pp[PATH_MAX], oldpub[PATH_MAX], kname[64], pname[64], oname[64];
    uint32_t id = 0;
    if (o.key != NULL) {
        rc = cli_load_key(&nkey, o.key, NULL, true, &err);
    } else {
        rc = gm_sm2_key_generate(&nkey, &err);
    }
    if (rc == 0) {
        audit_note_key nk = {.name = cfg.origin, .key = nkey};
        rc = audit_note_key_id(&id, &nk, &err);
    }
    if (rc == 0) {
        snprintf(kname, sizeof kname, "signer-%08x.key", id);
        snprintf(pname, sizeof pname, "signer-%08x.pub.pem", id);
        join(kp, sizeof kp, o.dir, kname);
        join(pp, sizeof pp, o.dir, pname);
        char *pem = NULL;
        size_t len = 0;
        rc = gm_sm2_key_to_pem(nkey, &pem, &len, true, &err);
        if (rc == 0) {
            rc = dbao_file_write(kp, pem, len, 0600, &err);
            dbao_free_secret(pem, len);
        }
        if (rc == 0) {
            rc = gm_sm2_key_to_pem(nkey, &pem, &len, false, &err);
        }
        if (rc == 0) {
            rc = dbao_file_write(pp, pem, len, 0644, &err);
            dbao_free_secret(pem, len);
        }
    }
    /* 2. keep the old public key under its own name, trusted from now on */
    gm_sm2_key *old = NULL;
    if (rc == 0) {
        join(oldpub, sizeof oldpub, o.dir, cfg.pub_path);
        rc = cli_load_key(&old, oldpub, NULL, false, &err);
    }
    if (rc == 0) {
        audit_note_key onk = {.name = cfg.origin, .key = old};
        uint32_t oid = 0;
        rc = audit_note_key_id(&oid, &onk, &err);
        snprintf(oname, sizeof oname, "signer-%08x.pub.pem", oid);
        char *pem = NULL;
        size_t len = 0;
        char op[PATH_MAX];
        join(op, sizeof op, o.dir, oname);
        if (rc == 0 && access(op, F_OK) != 0) {
            rc = gm_sm2_key_to_pem(old, &pem, &len, false, &err);
            if (rc == 0) {
                rc = dbao_file_write(op, pem, len, 0644, &err);
                dbao_free_secret(pem, len);
            }
        }
    }
    /* 3. log.conf names the new key and trusts the old one (atomic replace) */
    if (rc == 0) {
        cfg.key_path = kname;
        cfg.pub_path = pname;
        cfg.trusted_pubs[cfg.num_trusted_pubs++] = oname;
        rc = audit_log_write_config(o.dir, &cfg, &err);
    }
    gm_sm2_key_free(old);
    dbao_free(holder);
    /* 4. open with the new key: the head is signed again by it at once */
    if (rc == 0) {
        gm_sm2_key *key = NULL;
        cli_audit_trust trust;
        rc = cli_audit_keys_load(o.dir, true, NULL, &key, &cfg, &holder, &err);
        if (rc == 0) {
            rc = cli_audit_trust_load(&trust, o.dir, &cfg, &err);
            if (rc == 0) {
                audit_note_key nk = {.name = cfg.origin, .key = key};
                audit_log_open_opts oo = {
                    .signers = &nk, .num_signers = 1, .trusted = trust.nk, .num_trusted = trust.n};
                audit_log *log = NULL;
                rc = audit_log_open(&log, o.dir, &oo, &err);
                if (rc == 0) {
                    rc = audit_log_close(log);
                }
                cli_audit_trust_free(&trust);
            }
            gm_sm2_key_free(key);
            dbao_free(holder);
        }
    }
    gm_sm2_key_free(nkey);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    printf("rotated: new signing key %s (key ID %08x); the old public key %s stays trusted\n", kp,
           id, oname);
    return CLI_OK;
}

static volatile int export_stop;

static void
on_export_signal(int sig)
{
    (void) sig;
    export_stop = 1;
}

int
cmd_audit_export(int argc, char **argv)
{
    bool follow = false;
    char **args = calloc((size_t) argc + 1, sizeof *args);
    int n = 0;
    if (args == NULL) {
        return cli_error(DBAO_ENOMEM, "out of memory");
    }
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--follow") == 0) {
            follow = true;
        } else {
            args[n++] = argv[i];
        }
    }
    static const char *const allowed[] = {"--dir", "--to", "--batch", NULL};
    opts o;
    int rc = parse_opts(n, args, &o, allowed);
    free(args);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    static const char u[] = "dengbao audit export --dir D --to nats://HOST:PORT/STREAM | "
                            "http://HOST:PORT [--follow] [--batch N]";
    if (o.dir == NULL || o.to == NULL) {
        return cli_usage_error(u, "--dir and --to are required");
    }
    uint64_t batch = 1000;
    if (o.batch != NULL &&
        ((rc = parse_index(o.batch, "--batch", &batch)) != 0 || batch == 0 || batch > 100000)) {
        return rc ? rc : cli_usage_error(u, "--batch must be 1..100000");
    }
    dbao_err err;
    dbao_err_clear(&err);
    audit_export_opts eo = {
        .url = o.to, .follow = follow, .stop = &export_stop, .batch = (uint32_t) batch};
    if (strncmp(o.to, "nats://", 7) != 0 && strncmp(o.to, "http://", 7) != 0) {
        return cli_usage_error(u, "unsupported target '%s'", o.to);
    }
    audit_log *log = NULL;
    gm_sm2_key *key = NULL;
    char *holder = NULL;
    rc = open_ro(&log, &key, &holder, o.dir, &err);
    if (rc != 0) {
        return cli_report(rc, &err);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_export_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    audit_export_stats st;
    rc = audit_export_run(log, &eo, &st, &err);
    close_ro(log, key, holder);
    fprintf(stderr,
            "dengbao: export to %s: resumed at %" PRIu64 ", exported %" PRIu64
            ", next index %" PRIu64 "\n",
            o.to, st.start_index, st.exported, st.next_index);
    if (rc == DBAO_EINVAL) {
        return cli_usage_error(u, "%s", err.msg);
    }
    if (rc != 0) {
        fprintf(stderr, "dengbao: %s\n", err.msg);
        return rc == DBAO_EVERIFY ? CLI_FAIL : CLI_INTERNAL;
    }
    return CLI_OK;
}

int
cmd_audit(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(audit_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *c = argv[1];
    if (strcmp(c, "init") == 0) {
        return audit_init(argc - 1, argv + 1);
    }
    if (strcmp(c, "append") == 0) {
        return audit_append(argc - 1, argv + 1);
    }
    if (strcmp(c, "verify") == 0) {
        return audit_verify(argc - 1, argv + 1);
    }
    if (strcmp(c, "checkpoint") == 0) {
        return audit_checkpoint_cmd(argc - 1, argv + 1);
    }
    if (strcmp(c, "get") == 0) {
        return audit_get(argc - 1, argv + 1);
    }
    if (strcmp(c, "prove") == 0) {
        return audit_prove(argc - 1, argv + 1);
    }
    if (strcmp(c, "export") == 0) {
        return cmd_audit_export(argc - 1, argv + 1);
    }
    if (strcmp(c, "rotate-key") == 0) {
        return audit_rotate_key(argc - 1, argv + 1);
    }
    if (strcmp(c, "archive") == 0) {
        return audit_archive(argc - 1, argv + 1);
    }
    if (strcmp(c, "prune") == 0) {
        return audit_prune(argc - 1, argv + 1);
    }
    if (strcmp(c, "verify-proof") == 0) {
        return audit_verify_proof(argc - 1, argv + 1);
    }

    return cli_usage_error("dengbao audit --help", "unknown audit command '%s'", c);
}
