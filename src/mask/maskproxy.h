/* maskproxy.h: private declarations of the masking proxy (proxyconf.c,
 * maskproxy.c). */
#ifndef DENGBAO_MASK_MASKPROXY_H
#define DENGBAO_MASK_MASKPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/mask.h"
#include "pgproxy.h"

typedef struct mp_user {
    char *name;
    char **roles;
    size_t num_roles;
} mp_user;

struct mask_proxy_config {
    char *listen_host;
    uint16_t listen_port;
    unsigned workers;
    char *server_host;
    uint16_t server_port;
    pgp_upstream_tls server_tls;
    char *server_ca;
    char *server_name;
    char *tls_cert;
    char *tls_key;
    bool tls_require;
    char *policy_path;
    mask_policy *policy;
    char *catalog_conninfo;
    uint32_t catalog_refresh_ms;
    mp_user *users;
    size_t num_users;
    bool scan_results;
    char *audit_dir;
    bool audit_durable;
    size_t max_message;
};

/* The roles of a PostgreSQL user (none when the user is not listed). */
const char *const *mp_config_roles(const mask_proxy_config *c, const char *user, size_t *num);

#endif /* DENGBAO_MASK_MASKPROXY_H */
