/* test_config.c: the clearing daemon's YAML configuration (src/clearing/config.c).
 *
 * A full example parses to the expected values (money as integer fen, instruments sorted,
 * defaults where keys are absent); an instruments file is read relative to the configuration;
 * every negative case fails with DBAO_EFORMAT and a message naming the file, line and key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

static const char FULL[] =
    "data_dir: /var/lib/clearing\n"
    "shards: 4\n"
    "listen: {host: 0.0.0.0, port: 7400}\n"
    "http: {host: \"::1\", port: 7401, workers: 2}\n"
    "io_threads: 2\n"
    "max_connections: 6000\n"
    "wait: spin\n"
    "ring: {capacity: 1024, batch: 128}\n"
    "journal: {segment_size: 8m, snapshot_every: 5000, keep: 3, sync: false}\n"
    "audit: {dir: /var/lib/audit}\n"
    "fees: {commission_ppm: 300, commission_min: \"5.50\", stamp_ppm: 1000, transfer_ppm: 20}\n"
    "instruments:\n"
    "  - {security: \"600519\", tick: \"0.01\", lot: 100}\n"
    "  - {security: \"000001\", tick: 0.05, lot: 100, band: [\"9.00\", \"11.05\"]}\n"
    "  - {security: \"830799\"}\n";

static void
test_full(void **state)
{
    (void) state;
    clr_config *c = NULL;
    dbao_err err;
    dbao_err_clear(&err);
    assert_int_equal(clr_config_parse(&c, FULL, strlen(FULL), "c.yaml", &err), 0);
    assert_string_equal(c->data_dir, "/var/lib/clearing");
    assert_int_equal(c->shards, 4);
    assert_true(c->tcp_enabled);
    assert_string_equal(c->tcp_host, "0.0.0.0");
    assert_int_equal(c->tcp_port, 7400);
    assert_true(c->http_enabled);
    assert_string_equal(c->http_host, "::1");
    assert_int_equal(c->http_port, 7401);
    assert_int_equal(c->http_workers, 2);
    assert_int_equal(c->io_threads, 2);
    assert_int_equal(c->max_connections, 6000);
    assert_int_equal(c->wait, RING_WAIT_SPIN);
    assert_int_equal(c->ring_capacity, 1024);
    assert_int_equal(c->batch_max, 128);
    assert_int_equal(c->segment_bytes, 8 << 20);
    assert_int_equal(c->snapshot_every, 5000);
    assert_int_equal(c->snapshot_keep, 3);
    assert_false(c->journal_sync);
    assert_string_equal(c->audit_dir, "/var/lib/audit");
    assert_int_equal(c->fees.commission_ppm, 300);
    assert_int_equal(c->fees.commission_min, 550);
    assert_int_equal(c->fees.stamp_ppm, 1000);
    assert_int_equal(c->fees.transfer_ppm, 20);
    assert_int_equal(c->num_instruments, 3);
    /* sorted by security */
    assert_int_equal(c->instruments[0].security, 1);
    assert_int_equal(c->instruments[0].tick, 5);
    assert_int_equal(c->instruments[0].price_lo, 900);
    assert_int_equal(c->instruments[0].price_hi, 1105);
    assert_int_equal(c->instruments[1].security, 600519);
    assert_int_equal(c->instruments[1].tick, 1);
    assert_int_equal(c->instruments[1].lot, 100);
    assert_int_equal(c->instruments[2].security, 830799);
    assert_int_equal(c->instruments[2].tick, 1);  /* default one fen */
    assert_int_equal(c->instruments[2].lot, 100); /* default */
    assert_int_equal(c->instruments[2].price_lo, 0);
    clr_refdata ref;
    clr_config_refdata(c, &ref);
    assert_ptr_equal(ref.instruments, c->instruments);
    assert_int_equal(ref.num_instruments, 3);
    assert_int_equal(ref.fees.commission_min, 550);
    clr_config_free(c);
}

static void
test_defaults(void **state)
{
    (void) state;
    static const char Y[] = "data_dir: d\nhttp: {port: 0}\ninstruments: [{security: \"600000\"}]\n";
    clr_config *c = NULL;
    assert_int_equal(clr_config_parse(&c, Y, strlen(Y), "/etc/x/c.yaml", NULL), 0);
    assert_string_equal(c->data_dir, "/etc/x/d"); /* relative to the file */
    assert_int_equal(c->shards, 1);
    assert_false(c->tcp_enabled);
    assert_true(c->http_enabled);
    assert_string_equal(c->http_host, "127.0.0.1");
    assert_int_equal(c->io_threads, 1);
    assert_int_equal(c->wait, RING_WAIT_BLOCK);
    assert_int_equal(c->ring_capacity, 65536);
    assert_int_equal(c->batch_max, 4096);
    assert_int_equal(c->segment_bytes, 64 << 20);
    assert_int_equal(c->snapshot_every, 100000);
    assert_int_equal(c->snapshot_keep, 2);
    assert_true(c->journal_sync);
    assert_null(c->audit_dir);
    assert_false(c->audit_required);
    assert_int_equal(c->fees.commission_ppm, 250);
    assert_int_equal(c->fees.commission_min, 500);
    clr_config_free(c);
}

static void
test_instruments_file(void **state)
{
    (void) state;
    char dir[] = "/tmp/dbao-clrcfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], ipath[256];
    snprintf(path, sizeof path, "%s/c.yaml", dir);
    snprintf(ipath, sizeof ipath, "%s/inst.yaml", dir);
    FILE *f = fopen(ipath, "w");
    assert_non_null(f);
    fputs("- {security: \"300750\", tick: \"0.01\", lot: 100}\n"
          "- {security: \"600000\", tick: \"0.01\", lot: 100}\n",
          f);
    fclose(f);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("data_dir: data\nlisten: {port: 0}\ninstruments: inst.yaml\n", f);
    fclose(f);
    clr_config *c = NULL;
    dbao_err err;
    dbao_err_clear(&err);
    assert_int_equal(clr_config_load(&c, path, &err), 0);
    assert_int_equal(c->num_instruments, 2);
    assert_int_equal(c->instruments[0].security, 300750);
    clr_config_free(c);
    /* a bad instruments file names itself */
    f = fopen(ipath, "w");
    assert_non_null(f);
    fputs("- {security: \"600000\", tick: \"0.01\", lott: 100}\n", f);
    fclose(f);
    assert_int_equal(clr_config_load(&c, path, &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "inst.yaml:1"));
    assert_non_null(strstr(err.msg, "lott"));
    unlink(ipath);
    assert_int_equal(clr_config_load(&c, path, &err) < 0, 1);
    assert_non_null(strstr(err.msg, "instruments file"));
    unlink(path);
    assert_int_equal(clr_config_load(&c, path, &err) < 0, 1);
    rmdir(dir);
}

typedef struct bad_case {
    const char *yaml;
    const char *want; /* substring of the message */
} bad_case;

#define BASE "data_dir: d\nhttp: {port: 0}\n"
#define INST "instruments: [{security: \"600000\"}]\n"

static const bad_case BAD[] = {
    {"", "empty"},
    {"http: {port: 0}\n" INST, "data_dir"},
    {"data_dir: d\n" INST, "'listen' and 'http'"},
    {BASE, "'instruments' is required"},
    {BASE INST "shardz: 2\n", "shardz"},
    {BASE INST "shards: 0\n", "shards"},
    {BASE INST "shards: 65\n", "shards"},
    {BASE INST "shards: \"2\"\n", "shards"},
    {BASE INST "io_threads: 17\n", "io_threads"},
    {BASE INST "wait: busy\n", "wait"},
    {BASE INST "ring: {capacity: 1000}\n", "power of two"},
    {BASE INST "ring: {capacity: 1024, size: 3}\n", "size"},
    {BASE INST "ring: {batch: 0}\n", "batch"},
    {BASE INST "journal: {segment_size: 1k}\n", "segment_size"},
    {BASE INST "journal: {keep: 0}\n", "keep"},
    {BASE INST "journal: {sync: maybe}\n", "sync"},
    {BASE INST "journal: {fsync: true}\n", "fsync"},
    {BASE INST "audit: {}\n", "'dir' is required"},
    {BASE INST "audit: {dir: a, key: k}\n", "key"},
    {BASE INST "fees: {commission_min: \"5.001\"}\n", "commission_min"},
    {BASE INST "fees: {commission_min: \"-1.00\"}\n", "commission_min"},
    {BASE INST "fees: {commission_min: 5e2}\n", "commission_min"},
    {BASE INST "fees: {stamp_ppm: 100001}\n", "stamp_ppm"},
    {BASE INST "fees: {vat_ppm: 1}\n", "vat_ppm"},
    {"data_dir: d\nhttp: {port: 65536}\n" INST, "port"},
    {"data_dir: d\nhttp: {host: h}\n" INST, "'port' is required"},
    {"data_dir: d\nlisten: {port: 1, workers: 2}\n" INST, "workers"},
    {BASE "instruments: []\n", "empty"},
    {BASE "instruments: {security: \"600000\"}\n", "instruments"},
    {BASE "instruments: [{tick: \"0.01\"}]\n", "'security' is required"},
    {BASE "instruments: [{security: \"60000\"}]\n", "6-digit"},
    {BASE "instruments: [{security: \"60000a\"}]\n", "6-digit"},
    {BASE "instruments: [{security: \"100000\"}]\n", "no venue"},
    {BASE "instruments: [{security: \"500000\"}]\n", "no venue"},
    {BASE "instruments: [{security: \"600000\", tick: \"0.001\"}]\n", "tick"},
    {BASE "instruments: [{security: \"600000\", tick: \"0\"}]\n", "tick"},
    {BASE "instruments: [{security: \"600000\", tick: 1.5e1}]\n", "tick"},
    {BASE "instruments: [{security: \"600000\", lot: 0}]\n", "lot"},
    {BASE "instruments: [{security: \"600000\", band: [\"9.00\"]}]\n", "band"},
    {BASE "instruments: [{security: \"600000\", band: [\"11.00\", \"9.00\"]}]\n", "above"},
    {BASE "instruments: [{security: \"600000\", tick: \"0.05\", band: [\"9.01\", \"11.00\"]}]\n",
     "multiples"},
    {BASE "instruments: [{security: \"600000\"}, {security: \"600000\"}]\n", "twice"},
    {BASE "instruments: [{security: \"600000\", color: red}]\n", "color"},
    {BASE INST "shards: 2\nshards: 3\n", "shards"},
    {BASE INST "---\nshards: 2\n", ""},
    {BASE "a: &x 1\nb: *x\n" INST, ""},
};

static void
test_bad(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        clr_config *c = (clr_config *) 1;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = clr_config_parse(&c, BAD[i].yaml, strlen(BAD[i].yaml), "bad.yaml", &err);
        if (rc != DBAO_EFORMAT || c != NULL || strstr(err.msg, BAD[i].want) == NULL ||
            strstr(err.msg, "bad.yaml") == NULL) {
            fprintf(stderr, "case %zu: rc %d msg '%s' want '%s'\n", i, rc, err.msg, BAD[i].want);
            fail();
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_instruments_file),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
