/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The connect decision shared by cgroup/connect4 and cgroup/connect6: whether an IPv4
 * destination (a plain AF_INET connect, or the IPv4 inside an IPv4-mapped AF_INET6 one) goes
 * to the node proxy. The entry points (connect4.h, connect6.h) only read and rewrite their
 * context; everything they decide is decided here, once.
 */
#ifndef WEFT_INTERCEPT_H
#define WEFT_INTERCEPT_H

#include "weft_maps.h"
#include <bpf/bpf_endian.h>

#define WEFT_SOCK_STREAM 1

/* Is any cgroup in the current task's ancestry (itself included) enrolled? */
static __always_inline bool weft_task_enrolled(void)
{
	for (int level = 0; level < WEFT_MAX_CGROUP_LEVELS; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (id == 0) /* deeper than the task's own cgroup */
			break;
		if (bpf_map_lookup_elem(&enrolled_cgrps, &id))
			return true;
	}
	return false;
}

/*
 * Decides for a TCP connect to dst_addr:dst_port (network order) and, when it is to be
 * redirected, remembers the original destination under the socket's cookie in dst_by_cookie.
 * Returns the proxy to rewrite the destination to, or NULL to leave the connect alone.
 * ctx is the program's struct bpf_sock_addr (for the socket cookie).
 */
static __always_inline struct proxy_v4 *weft_redirect_v4(struct bpf_sock_addr *ctx, __be32 dst_addr, __be16 dst_port)
{
	__u32 zero = 0;
	struct proxy_v4 *proxy;
	struct lpm_v4_key rule_key;
	__u32 *action;
	__u16 dst_port_host;

	proxy = bpf_map_lookup_elem(&proxy_config, &zero);
	if (!proxy || proxy->addr == 0)
		return NULL;
	if (dst_addr == proxy->addr && dst_port == proxy->port) {
		weft_count(WEFT_CNT_PROXY_SELF);
		return NULL;
	}

	rule_key.prefixlen = 32;
	rule_key.addr = dst_addr;
	action = bpf_map_lookup_elem(&intercept_rules, &rule_key);
	if (!action) /* not a mesh destination: the common case, not counted */
		return NULL;

	if (!weft_task_enrolled()) {
		weft_count(WEFT_CNT_NOT_ENROLLED);
		return NULL;
	}

	dst_port_host = bpf_ntohs(dst_port);
	if (*action != WEFT_ACTION_INTERCEPT ||
	    bpf_map_lookup_elem(&excluded_ports, &dst_port_host)) {
		weft_count(WEFT_CNT_BYPASSED);
		return NULL;
	}

	struct orig_dst_v4 original = {
		.addr = dst_addr,
		.port = dst_port,
		.cgroup_id = bpf_get_current_cgroup_id(),
	};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (bpf_map_update_elem(&dst_by_cookie, &cookie, &original, BPF_ANY) != 0)
		return NULL; /* cannot remember the destination: do not redirect blind */

	weft_count(WEFT_CNT_REDIRECTED);
	return proxy;
}

#endif /* WEFT_INTERCEPT_H */
