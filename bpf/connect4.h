/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup/connect4: rewrite an enrolled pod's TCP connect to the node proxy.
 *
 * Runs in the connecting task's context, before the route lookup. ctx->user_ip4 and
 * ctx->user_port are the destination in network order (the port in the low 16 bits).
 * Always returns 1: interception never refuses a connect; a connect we leave alone
 * proceeds untouched.
 */
#ifndef WEFT_CONNECT4_H
#define WEFT_CONNECT4_H

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

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct proxy_v4 *proxy;
	struct lpm_v4_key rule_key;
	__u32 *action;
	__be32 dst_addr = ctx->user_ip4;
	__be16 dst_port = (__be16)ctx->user_port;
	__u16 dst_port_host;

	if (ctx->type != WEFT_SOCK_STREAM)
		return 1;

	proxy = bpf_map_lookup_elem(&proxy_config, &zero);
	if (!proxy || proxy->addr == 0)
		return 1;
	if (dst_addr == proxy->addr && dst_port == proxy->port) {
		weft_count(WEFT_CNT_PROXY_SELF);
		return 1;
	}

	rule_key.prefixlen = 32;
	rule_key.addr = dst_addr;
	action = bpf_map_lookup_elem(&intercept_rules, &rule_key);
	if (!action) /* not a mesh destination: the common case, not counted */
		return 1;

	if (!weft_task_enrolled()) {
		weft_count(WEFT_CNT_NOT_ENROLLED);
		return 1;
	}

	dst_port_host = bpf_ntohs(dst_port);
	if (*action != WEFT_ACTION_INTERCEPT ||
	    bpf_map_lookup_elem(&excluded_ports, &dst_port_host)) {
		weft_count(WEFT_CNT_BYPASSED);
		return 1;
	}

	struct orig_dst_v4 original = {
		.addr = dst_addr,
		.port = dst_port,
		.cgroup_id = bpf_get_current_cgroup_id(),
	};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (bpf_map_update_elem(&dst_by_cookie, &cookie, &original, BPF_ANY) != 0)
		return 1; /* cannot remember the destination: do not redirect blind */

	ctx->user_ip4 = proxy->addr;
	ctx->user_port = (__u32)proxy->port;
	weft_count(WEFT_CNT_REDIRECTED);
	return 1;
}

#endif /* WEFT_CONNECT4_H */
