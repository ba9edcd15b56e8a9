/* zt.h: zero-trust building blocks for the gateway (issue 6) and other services:
 * bearer tokens (JWT: HS256, ES256, RS256, SM2) bound to a device's SM2 key, device signatures
 * (over the token, or over each request with a replay window), role-based access control,
 * rate limits and circuit breakers. Pure libraries: no I/O except loading files; the gateway
 * plugs them into its step chain (gateway.h, gw_step).
 *
 * Errors: 0 or a negative DBAO_E* code (common.h); messages name the claim, header or rule,
 * never a token, a signature or a secret.
 *
 * Threading: key sets, policies and limiter/breaker tables are documented per section.
 *
 * Sections (each owned by one engineer while issue 6 is built): "tokens" and "device
 * signatures" (H5), "access control", "rate limits", "circuit breakers" (H6).
 */
#ifndef DENGBAO_ZT_H
#define DENGBAO_ZT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"
#include "dengbao/gm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tokens ------------------------------------------------------------------------------ */

/* ---- device signatures ------------------------------------------------------------------- */

/* ---- access control ---------------------------------------------------------------------- */

/* ---- rate limits ------------------------------------------------------------------------- */

/* ---- circuit breakers -------------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_ZT_H */
