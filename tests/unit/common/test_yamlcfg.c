/* test_yamlcfg.c: the strict YAML configuration reader (yamlcfg.h) and dbao_buf (common.h).
 *
 * Each refusal class is checked with the exact "name:line: ..." message the operator sees.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dengbao/common.h"
#include "dengbao/yamlcfg.h"

typedef struct conf {
    char *name;
    char *file;
    uint64_t port, timeout, size;
    bool on;
    int mode;
} conf;

static int
parse(const char *text, conf *c, dbao_err *err)
{
    dbao_yaml y;
    memset(c, 0, sizeof *c);
    int rc = dbao_yaml_load(&y, text, strlen(text), "etc/test.yaml", err);
    if (rc == 0 && y.root == NULL)
        rc = dbao_err_set(err, DBAO_EFORMAT, "empty");
    static const char *const keys[] = {"name", "file", "port", "timeout",
                                       "size", "on",   "mode", "list"};
    yaml_node_t *v[8];
    if (rc == 0)
        rc = dbao_yaml_fields(&y, y.root, "the configuration", keys, 8, v);
    if (rc == 0 && v[0])
        rc = dbao_yaml_str(&y, v[0], "name", &c->name);
    if (rc == 0 && v[1])
        rc = dbao_yaml_path(&y, v[1], "file", &c->file);
    if (rc == 0 && v[2])
        rc = dbao_yaml_uint(&y, v[2], "port", 1, 65535, &c->port);
    if (rc == 0 && v[3])
        rc = dbao_yaml_duration_ms(&y, v[3], "timeout", 1, 60000, &c->timeout);
    if (rc == 0 && v[4])
        rc = dbao_yaml_size(&y, v[4], "size", 1, 1u << 30, &c->size);
    if (rc == 0 && v[5])
        rc = dbao_yaml_bool(&y, v[5], "on", &c->on);
    static const char *const modes[] = {"fast", "safe", "off"};
    if (rc == 0 && v[6])
        rc = dbao_yaml_enum(&y, v[6], "mode", modes, 3, &c->mode);
    if (rc == 0 && v[7]) {
        for (size_t i = 0; rc == 0 && i < dbao_yaml_len(v[7]); i++) {
            yaml_node_t *it;
            rc = dbao_yaml_item(&y, v[7], i, &it);
        }
    }
    dbao_yaml_free(&y);
    return rc;
}

static void
conf_free(conf *c)
{
    free(c->name);
    free(c->file);
}

static void
test_good(void **state)
{
    (void) state;
    conf c;
    dbao_err err;
    assert_int_equal(parse("name: gw\nfile: keys/a.pem\nport: 8080\ntimeout: 2s\nsize: 16k\n"
                           "on: true\nmode: safe\nlist: [a, b]\n",
                           &c, &err),
                     0);
    assert_string_equal(c.name, "gw");
    assert_string_equal(c.file, "etc/keys/a.pem");
    assert_int_equal(c.port, 8080);
    assert_int_equal(c.timeout, 2000);
    assert_int_equal(c.size, 16384);
    assert_true(c.on);
    assert_int_equal(c.mode, 1);
    conf_free(&c);
    assert_int_equal(parse("file: /abs/x\ntimeout: 500\n", &c, &err), 0);
    assert_string_equal(c.file, "/abs/x");
    assert_int_equal(c.timeout, 500);
    conf_free(&c);
}

static void
expect_fail(const char *text, const char *msg)
{
    conf c;
    dbao_err err;
    dbao_err_clear(&err);
    assert_int_not_equal(parse(text, &c, &err), 0);
    conf_free(&c);
    if (strstr(err.msg, msg) == NULL) {
        fprintf(stderr, "want '%s', got '%s'\n", msg, err.msg);
        fail();
    }
}

static void
test_refusals(void **state)
{
    (void) state;
    expect_fail("name: a\nnmae: b\n", "etc/test.yaml:2: unknown key 'nmae' in the configuration");
    expect_fail("name: a\nname: b\n", "etc/test.yaml:2: duplicate key 'name'");
    expect_fail("port: \"80\"\n", "etc/test.yaml:1: 'port' must be an integer");
    expect_fail("port: 0\n", "'port' must be between 1 and 65535");
    expect_fail("port: -1\n", "'port' must be an integer");
    expect_fail("port: 10x\n", "'port' must be an integer");
    expect_fail("timeout: 2 s\n", "'timeout' must be a duration");
    expect_fail("size: 1t\n", "'size' must be a size");
    expect_fail("on: yes\n", "'on' must be true or false");
    expect_fail("mode: quick\n", "'mode' must be fast, safe or off");
    expect_fail("name: ~\n", "'name' must be a string");
    expect_fail("name: ''\n", "'name' must not be empty");
    expect_fail("name: &a x\nfile: *a\n", "yaml aliases are not supported");
    expect_fail("name: a\n---\nname: b\n", "more than one yaml document");
    expect_fail("name: [\n", "etc/test.yaml:");
    expect_fail("- a\n- b\n", "the configuration must be a mapping");
    expect_fail("list: [&x a, *x]\n", "yaml aliases are not supported");
}

static void
test_buf(void **state)
{
    (void) state;
    dbao_buf b = {0};
    assert_int_equal(dbao_buf_put(&b, "ab", 2), 0);
    assert_int_equal(dbao_buf_putc(&b, 'c'), 0);
    assert_int_equal(dbao_buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_string_equal(b.data, "abc42-x");
    assert_int_equal(b.len, 7);
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(dbao_buf_printf(&b, "%s", big), 0);
    assert_int_equal(b.len, 7 + 999);
    assert_int_equal(b.data[b.len], '\0');
    dbao_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(dbao_buf_put(&b, "q", 1), 0);
    size_t n;
    char *p = dbao_buf_take(&b, &n);
    assert_int_equal(n, 1);
    assert_string_equal(p, "q");
    assert_null(b.data);
    dbao_free(p);
    dbao_alloc_fail_after(0, false);
    int rc = dbao_buf_put(&b, "x", 1);
    dbao_alloc_fail_after(-1, false);
    assert_int_equal(rc, DBAO_ENOMEM);
    assert_int_equal(b.len, 0);
    dbao_buf_free_secret(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
