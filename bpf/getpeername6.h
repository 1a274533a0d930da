/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup/getpeername6: getpeername4's twin for AF_INET6 sockets that connect6 redirected
 * (always to an IPv4-mapped destination): the app sees ::ffff:<original ip>:<original port>
 * instead of the proxy. ctx->user_ip6 words and ctx->user_port are network order.
 */
#ifndef WEFT_GETPEERNAME6_H
#define WEFT_GETPEERNAME6_H

#include "weft_maps.h"
#include <bpf/bpf_endian.h>

SEC("cgroup/getpeername6")
int weft_getpeer6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst_v4 *original = bpf_map_lookup_elem(&dst_by_cookie, &cookie);

	if (!original)
		return 1;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
	ctx->user_ip6[3] = original->addr;
	ctx->user_port = (__u32)original->port;
	weft_count(WEFT_CNT_PEER_RESTORED);
	return 1;
}

#endif /* WEFT_GETPEERNAME6_H */
