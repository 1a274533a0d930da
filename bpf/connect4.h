/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup/connect4: rewrite an enrolled pod's TCP connect to the node proxy.
 *
 * Runs in the connecting task's context, before the route lookup. ctx->user_ip4 and
 * ctx->user_port are the destination in network order (the port in the low 16 bits).
 * Always returns 1: an IPv4 connect is never refused here; one we leave alone proceeds
 * untouched. The decision itself is weft_redirect_v4 (intercept.h), shared with connect6.
 */
#ifndef WEFT_CONNECT4_H
#define WEFT_CONNECT4_H

#include "intercept.h"

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	struct proxy_v4 *proxy;

	if (ctx->type != WEFT_SOCK_STREAM)
		return 1;
	proxy = weft_redirect_v4(ctx, ctx->user_ip4, (__be16)ctx->user_port);
	if (!proxy)
		return 1;
	ctx->user_ip4 = proxy->addr;
	ctx->user_port = (__u32)proxy->port;
	return 1;
}

#endif /* WEFT_CONNECT4_H */
