/* maskstep.h: the gateway's response-masking step (private to the gateway and the daemon).
 *
 * The step masks the JSON bodies of 2xx answers on routes with `mask: {enabled: true}` with
 * the gateway's masking policy (security.masking.policy), streaming (mask_json_stream: no
 * tree, bounded memory), per the caller's roles (gw_ctx_principal; none: the most masked view).
 * See docs/mask.md, "Streaming JSON masking (gateway)", for what is masked, what passes and
 * what is aborted.
 *
 * Wiring (cmd_gateway.c): the step goes after identity, RBAC and rate limits; its position in
 * the chain (step_index) is given to gw_maskstep_new and to gw_maskstep_result. The audit step
 * reads the per-request result from its own on_log, which must run BEFORE this step's on_log
 * (the gateway runs the on_log hooks in chain order, and this step releases its per-request
 * state in its on_log): so the audit step must come earlier in the chain, as identity does.
 *
 * Threading: the step's hooks run on the worker loops; the per-request state comes from a pool
 * per worker (no lock, no allocation per request in steady state); the policy is shared
 * read-only. gw_maskstep_free after the server is freed.
 */
#ifndef DENGBAO_GW_MASKSTEP_H
#define DENGBAO_GW_MASKSTEP_H

#include <stdbool.h>
#include <stddef.h>

#include "dengbao/gateway.h"
#include "dengbao/mask.h"

/* gw_maskstep_new fills *out (name "mask", hooks, arg = the step's state) for policy p
 * (borrowed: must outlive the server) at chain position step_index (< 8, the gw_ctx_user
 * slots). 0, DBAO_EINVAL, DBAO_ENOMEM. */
int gw_maskstep_new(gw_step *out, const mask_policy *p, size_t step_index, dbao_err *err);

/* gw_maskstep_free releases what gw_maskstep_new made (step->arg) and the pooled per-request
 * states; the step is zeroed. NULL or a zeroed step: no-op. After gw_server_free only. */
void gw_maskstep_free(gw_step *step);

/* gw_maskstep_result: whether this request's response went through the masker (a masked
 * route's 2xx answer with a body), and then its statistics (fields masked by path, detector
 * findings, types) and whether the size limit was hit. From on_log hooks that run before the
 * mask step's own on_log; false (and zeroed outputs) otherwise. st and over_limit may be NULL. */
bool gw_maskstep_result(const gw_ctx *ctx, size_t step_index, mask_stats *st, bool *over_limit);

/* gw_maskstep_error: why the masker stopped the response (a static string for the audit
 * record: "not json", "encoded body", "body over the masking limit", "masking failed"), or
 * NULL when it did not. Same timing as gw_maskstep_result. */
const char *gw_maskstep_error(const gw_ctx *ctx, size_t step_index);

#endif /* DENGBAO_GW_MASKSTEP_H */
