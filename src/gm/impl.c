/* impl.c (stage 1: sm2 only; replaced by the full dispatcher) */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

static bool sm2_fast = true;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
init(void)
{
    const char *env = getenv("DENGBAO_GM_IMPL");

    if (env != NULL && strstr(env, "sm2=openssl") != NULL) {
        sm2_fast = false;
    }
}

bool
gm__sm2_fast(void)
{
    pthread_once(&once, init);
    return sm2_fast;
}

int
gm_impl_use(const char *alg, const char *path)
{
    pthread_once(&once, init);
    if (strcmp(alg, "sm2") != 0) {
        return DBAO_EINVAL;
    }
    if (strcmp(path, "fast") == 0) {
        sm2_fast = true;
    } else if (strcmp(path, "openssl") == 0) {
        sm2_fast = false;
    } else {
        return DBAO_EINVAL;
    }
    return 0;
}
