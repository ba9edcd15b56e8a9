/* internal.h: private helpers shared by the gateway's own sources (src/gateway/). Not part of
 * the public API; fuzz_gw_* targets may include it.
 */
#ifndef DENGBAO_GATEWAY_INTERNAL_H
#define DENGBAO_GATEWAY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dengbao/gateway.h"

/* gw_parse_ip parses a numeric IPv4 or IPv6 address (no brackets, no port) into its 16-byte
 * IPv4-mapped form. Returns 0 or DBAO_EFORMAT. */
int gw_parse_ip(const char *s, size_t len, uint8_t out[16]);

/* gw_parse_duration_ms / gw_parse_size parse the configuration's units ("500ms", "2s", "1m",
 * "1h"; "16k", "1m", "1g"), without sign or spaces. Returns 0 or DBAO_EFORMAT (also on
 * overflow). */
int gw_parse_duration_ms(const char *s, uint64_t *out);
int gw_parse_size(const char *s, uint64_t *out);

#endif /* DENGBAO_GATEWAY_INTERNAL_H */
