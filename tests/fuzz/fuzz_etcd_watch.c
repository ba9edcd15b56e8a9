/* fuzz_etcd_watch: the etcd watch stream parser (src/common/etcd.c) on arbitrary bytes, cut at
 * every position the first byte chooses. Invariants: no crash, no leak, no undefined
 * behaviour; the same bytes give the same result whatever the cut (the parser buffers
 * unfinished lines); every delivered event has a known type, a revision and, for PUT, a value
 * of the announced length. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/etcd.h"

static int
on_event(void *arg, const etcd_event *ev)
{
    (void) arg;
    assert(ev->type == ETCD_EVENT_PUT || ev->type == ETCD_EVENT_DELETE);
    assert(ev->key != NULL);
    if (ev->type == ETCD_EVENT_PUT) {
        assert(ev->value != NULL || ev->value_len == 0);
        if (ev->value_len > 0) {
            volatile uint8_t x = (uint8_t) ev->value[ev->value_len - 1];
            (void) x;
        }
    } else {
        assert(ev->value == NULL && ev->value_len == 0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    size_t cut = data[0] % size;
    etcd_watch_opts o = {.on_event = on_event};
    int whole = etcd__watch_feed(data + 1, size - 1, size - 1, &o);
    int split = etcd__watch_feed(data + 1, size - 1, cut, &o);
    assert(whole == split);
    return 0;
}
