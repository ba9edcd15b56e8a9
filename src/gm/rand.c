/* rand.c: the one source of randomness for gm: OpenSSL's DRBG, seeded from getrandom(). */
#include "internal.h"

#include <limits.h>
#include <openssl/rand.h>

int
gm_rand_bytes(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        int n = len > INT_MAX ? INT_MAX : (int) len;

        if (RAND_bytes(p, n) != 1) {
            return DBAO_ECRYPTO;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}
