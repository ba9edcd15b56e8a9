/* fold.h: the obs-fold scan shared by the request parser (parser.c) and the response parser
 * (client.c). Private to src/net.
 *
 * Obs-fold (a header line continued on the next line starting with SP or HT, RFC 9112 5.2) is
 * refused in both directions: llhttp 8 accepts it even in strict mode, and a folded
 * "Transfer-Encoding:\r\n chunked" is read as chunked by some parsers and not by others
 * (request smuggling, response splitting). The caller feeds the head bytes llhttp consumed, in
 * order, from the first byte of a message (state NET__FS_START) until the scan reports the end
 * of the head (NET__FS_DONE): a LF followed by SP or HT before the empty line that ends the head
 * is a fold. Leading empty lines before a start line are skipped.
 */
#ifndef DENGBAO_NET_FOLD_H
#define DENGBAO_NET_FOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { NET__FS_START = 0, NET__FS_LINE, NET__FS_LF, NET__FS_LFCR, NET__FS_DONE };

/* net__fold_scan scans n bytes and updates *state; returns true at a fold. */
static inline bool
net__fold_scan(uint8_t *state, const char *p, size_t n)
{
    uint8_t st = *state;
    for (size_t i = 0; i < n && st != NET__FS_DONE; i++) {
        char c = p[i];
        switch (st) {
        case NET__FS_START:
            if (c != '\r' && c != '\n') {
                st = NET__FS_LINE;
            }
            break;
        case NET__FS_LINE:
            if (c == '\n') {
                st = NET__FS_LF;
            }
            break;
        case NET__FS_LF:
            if (c == ' ' || c == '\t') {
                *state = st;
                return true;
            }
            st = c == '\r' ? NET__FS_LFCR : c == '\n' ? NET__FS_DONE : NET__FS_LINE;
            break;
        case NET__FS_LFCR:
            st = c == '\n' ? NET__FS_DONE : NET__FS_LINE;
            break;
        default:
            break;
        }
    }
    *state = st;
    return false;
}

#endif /* DENGBAO_NET_FOLD_H */
