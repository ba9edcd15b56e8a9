/* impl.c: runtime choice of the implementation path of each gm algorithm.
 *
 * Every path is compiled on every machine (x86 SIMD code sits behind __attribute__((target))
 * and #if defined(__x86_64__)), and each path module says through its *_impl_get() whether the
 * CPU can run it (cpuid via __builtin_cpu_supports). The table below is filled once, under
 * pthread_once, with the fastest supported path of each algorithm, then adjusted by the
 * environment variable DENGBAO_GM_IMPL ("portable", or "alg=path,alg=path"), so that every
 * path can be tested on any machine that has it. gm_impl_use changes it later, for tests and
 * `dengbao gm speed` only (not thread-safe, documented in gm.h).
 *
 * Contexts remember the path they were keyed with (gm_sm4_ctx holds its impl pointers), so a
 * change never mixes two paths inside one context.
 */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "sm2p256.h"
#include "sm3_impl.h"
#include "sm4_impl.h"

static struct {
    const gm__sm4_impl *sm4;
    const char *ghash;
    const gm__sm3_impl *sm3;
    const gm__sm3_mb_impl *sm3_mb;
    int sm2_core; /* GM__SM2P_IMPL_*, or -1 for the openssl path */
} active;

static pthread_once_t active_once = PTHREAD_ONCE_INIT;

/* Every (alg, path) pair known to this build, in order of preference for listing. */
static const struct {
    const char *alg, *path;
} known[] = {
    {"sm2", "x86-adx"},    {"sm2", "portable"},         {"sm2", "openssl"},
    {"sm3", "portable"},   {"sm3", "x86-avx-bmi2"},     {"sm3-mb", "portable"},
    {"sm3-mb", "avx2x8"},  {"sm3-mb", "avx512x16"},     {"sm4", "portable"},
    {"sm4", "aesni-avx2"}, {"sm4", "gfni-avx512"},      {"ghash", "portable"},
    {"ghash", "pclmul"},   {"ghash", "vpclmul-avx512"},
};

static bool
ghash_supported(const char *path)
{
    return gm__ghash_impl_available(path);
}

static bool
supported(const char *alg, const char *path)
{
    if (strcmp(alg, "sm2") == 0) {
        return strcmp(path, "openssl") == 0 || strcmp(path, "portable") == 0 ||
               (strcmp(path, "x86-adx") == 0 && gm__sm2p_impl_available(GM__SM2P_IMPL_X86_ADX));
    }
    if (strcmp(alg, "sm3") == 0) {
        return gm__sm3_impl_get(path) != NULL;
    }
    if (strcmp(alg, "sm3-mb") == 0) {
        return gm__sm3_mb_impl_get(path) != NULL;
    }
    if (strcmp(alg, "sm4") == 0) {
        return gm__sm4_impl_get(path) != NULL;
    }
    if (strcmp(alg, "ghash") == 0) {
        return ghash_supported(path);
    }
    return false;
}

static int
use(const char *alg, const char *path)
{
    size_t i;
    bool found = false;

    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(known[i].alg, alg) == 0 && strcmp(known[i].path, path) == 0) {
            found = true;
            path = known[i].path; /* keep a static string */
            break;
        }
    }
    if (!found) {
        return DBAO_EINVAL;
    }
    if (!supported(alg, path)) {
        return DBAO_ENOTSUP;
    }
    if (strcmp(alg, "sm2") == 0) {
        active.sm2_core = strcmp(path, "openssl") == 0    ? -1
                          : strcmp(path, "portable") == 0 ? GM__SM2P_IMPL_PORTABLE
                                                          : GM__SM2P_IMPL_X86_ADX;
    } else if (strcmp(alg, "sm3") == 0) {
        active.sm3 = gm__sm3_impl_get(path);
    } else if (strcmp(alg, "sm3-mb") == 0) {
        active.sm3_mb = gm__sm3_mb_impl_get(path);
    } else if (strcmp(alg, "sm4") == 0) {
        active.sm4 = gm__sm4_impl_get(path);
    } else {
        active.ghash = path;
    }
    return 0;
}

static const char *active_name(const char *alg);

static void
apply_env(const char *spec)
{
    char buf[512], *item, *save = NULL;

    if (strcmp(spec, "portable") == 0) {
        spec = "sm2=portable,sm3=portable,sm3-mb=portable,sm4=portable,ghash=portable";
    }
    if (strlen(spec) >= sizeof(buf)) {
        fprintf(stderr, "dengbao: DENGBAO_GM_IMPL is too long; ignored\n");
        return;
    }
    memcpy(buf, spec, strlen(spec) + 1);
    for (item = strtok_r(buf, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        int rc;

        if (eq == NULL) {
            fprintf(stderr, "dengbao: DENGBAO_GM_IMPL: '%s' is not alg=path; ignored\n", item);
            continue;
        }
        *eq = '\0';
        rc = use(item, eq + 1);
        if (rc != 0) {
            fprintf(stderr, "dengbao: DENGBAO_GM_IMPL: %s path '%s' %s; keeping %s\n", item, eq + 1,
                    rc == DBAO_ENOTSUP ? "is not supported by this cpu" : "is unknown",
                    active_name(item) != NULL ? active_name(item) : "the default");
        }
    }
}

static void
active_init(void)
{
    const char *env = getenv("DENGBAO_GM_IMPL");
    gm__ghash_key k;
    static const uint8_t one[16] = {1};

    active.sm4 = gm__sm4_impl_best();
    active.sm3 = gm__sm3_impl_best();
    active.sm3_mb = gm__sm3_mb_impl_best();
    active.sm2_core = gm__sm2p_impl_available(GM__SM2P_IMPL_X86_ADX) ? GM__SM2P_IMPL_X86_ADX
                                                                     : GM__SM2P_IMPL_PORTABLE;
    gm__ghash_init(&k, one, NULL); /* NULL: the best path */
    active.ghash = gm__ghash_impl_name(&k);
    gm__ghash_key_wipe(&k);
    if (env != NULL && env[0] != '\0') {
        apply_env(env);
    }
}

static void
ensure(void)
{
    pthread_once(&active_once, active_init);
}

const gm__sm4_impl *
gm__active_sm4(void)
{
    ensure();
    return active.sm4;
}

const char *
gm__active_ghash(void)
{
    ensure();
    return active.ghash;
}

const gm__sm3_impl *
gm__active_sm3(void)
{
    ensure();
    return active.sm3;
}

const gm__sm3_mb_impl *
gm__active_sm3_mb(void)
{
    ensure();
    return active.sm3_mb;
}

bool
gm__sm2_fast(void)
{
    ensure();
    return active.sm2_core >= 0;
}

int
gm__sm2_core(void)
{
    ensure();
    return active.sm2_core;
}

size_t
gm_impl_list(gm_impl_info *out, size_t max)
{
    size_t i, n = sizeof(known) / sizeof(known[0]);

    ensure();
    for (i = 0; i < n && i < max; i++) {
        const char *act = gm_impl_active(known[i].alg);

        out[i].alg = known[i].alg;
        out[i].path = known[i].path;
        out[i].supported = supported(known[i].alg, known[i].path);
        out[i].active = act != NULL && strcmp(act, known[i].path) == 0;
    }
    return n;
}

/* The active path of alg without ensure(): apply_env runs inside the pthread_once of
 * active_init, where calling ensure() again would deadlock. */
static const char *
active_name(const char *alg)
{
    if (strcmp(alg, "sm2") == 0) {
        return active.sm2_core < 0                         ? "openssl"
               : active.sm2_core == GM__SM2P_IMPL_PORTABLE ? "portable"
                                                           : "x86-adx";
    }
    if (strcmp(alg, "sm3") == 0) {
        return active.sm3->name;
    }
    if (strcmp(alg, "sm3-mb") == 0) {
        return active.sm3_mb->name;
    }
    if (strcmp(alg, "sm4") == 0) {
        return active.sm4->name;
    }
    if (strcmp(alg, "ghash") == 0) {
        return active.ghash;
    }
    return NULL;
}

const char *
gm_impl_active(const char *alg)
{
    ensure();
    return active_name(alg);
}

int
gm_impl_use(const char *alg, const char *path)
{
    ensure();
    return use(alg, path);
}

#if defined(__x86_64__)
static char cpu_buf[256];
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void
cpu_add(const char *name, int has)
{
    size_t len = strlen(cpu_buf);

    if (has && len + strlen(name) + 2 < sizeof(cpu_buf)) {
        snprintf(cpu_buf + len, sizeof(cpu_buf) - len, "%s%s", len > 0 ? " " : "", name);
    }
}

static void
cpu_init(void)
{
    /* __builtin_cpu_supports takes string literals only, hence one call per feature. */
    __builtin_cpu_init();
    cpu_add("aes", __builtin_cpu_supports("aes"));
    cpu_add("pclmul", __builtin_cpu_supports("pclmul"));
    cpu_add("avx", __builtin_cpu_supports("avx"));
    cpu_add("avx2", __builtin_cpu_supports("avx2"));
    cpu_add("bmi2", __builtin_cpu_supports("bmi2"));
    cpu_add("gfni", __builtin_cpu_supports("gfni"));
    cpu_add("vpclmulqdq", __builtin_cpu_supports("vpclmulqdq"));
    cpu_add("avx512f", __builtin_cpu_supports("avx512f"));
    cpu_add("avx512bw", __builtin_cpu_supports("avx512bw"));
    cpu_add("avx512vl", __builtin_cpu_supports("avx512vl"));
    if (cpu_buf[0] == '\0') {
        snprintf(cpu_buf, sizeof(cpu_buf), "none of the x86-64 extensions gm uses");
    }
}
#endif

const char *
gm_cpu_features(void)
{
#if defined(__x86_64__)
    pthread_once(&cpu_once, cpu_init);
    return cpu_buf;
#else
    return "portable only (no x86-64 extensions on this architecture)";
#endif
}
