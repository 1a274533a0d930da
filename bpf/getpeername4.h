/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup/getpeername4: show a redirected app its original peer instead of the proxy.
 * ctx->user_ip4 / ctx->user_port are network order, as in connect4.
 */
#ifndef WEFT_GETPEERNAME4_H
#define WEFT_GETPEERNAME4_H

#include "weft_maps.h"

SEC("cgroup/getpeername4")
int weft_getpeer4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst_v4 *original = bpf_map_lookup_elem(&dst_by_cookie, &cookie);

	if (!original)
		return 1;
	ctx->user_ip4 = original->addr;
	ctx->user_port = (__u32)original->port;
	weft_count(WEFT_CNT_PEER_RESTORED);
	return 1;
}

#endif /* WEFT_GETPEERNAME4_H */
