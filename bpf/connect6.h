/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup/connect6: the same interception for AF_INET6 sockets, so that no socket family is a
 * way around the mesh. Java, .NET and gRPC's C core open AF_INET6 sockets and connect them to
 * IPv4-mapped addresses (::ffff:a.b.c.d), which the kernel sends as plain IPv4.
 *
 * ctx->user_ip6[0..3] is the destination in network order, 32 bits at a time; ctx->user_port
 * as in connect4. For a TCP connect:
 *   - IPv4-mapped: exactly connect4's decision (weft_redirect_v4); a redirect becomes
 *     ::ffff:<proxy ip>:<proxy port>, and the original (IPv4) destination is remembered by
 *     socket cookie in dst_by_cookie like connect4's. The proxy accepts it as plain IPv4.
 *   - loopback (::1) and the unspecified address (::, which Linux connects to loopback):
 *     left alone.
 *   - any other (native) IPv6 destination from an enrolled cgroup: REFUSED (return 0, the
 *     app gets EPERM) and counted as refused_ipv6. The mesh has no IPv6 path; a connect it
 *     cannot see must not leave the pod silently. Unenrolled cgroups are left alone.
 * UDP and other socket types are left alone, as in connect4 (the mesh carries TCP only).
 */
#ifndef WEFT_CONNECT6_H
#define WEFT_CONNECT6_H

#include "intercept.h"

static __always_inline bool weft_ip6_is_v4_mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

/* ::1 or :: */
static __always_inline bool weft_ip6_is_local(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && (ip6[3] == 0 || ip6[3] == bpf_htonl(1));
}

SEC("cgroup/connect6")
int weft_connect6(struct bpf_sock_addr *ctx)
{
	struct proxy_v4 *proxy;
	__u32 dst[4];

	if (ctx->type != WEFT_SOCK_STREAM)
		return 1;
	/* user_ip6 takes 4-byte loads only */
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];

	if (weft_ip6_is_v4_mapped(dst)) {
		proxy = weft_redirect_v4(ctx, dst[3], (__be16)ctx->user_port);
		if (!proxy)
			return 1;
		ctx->user_ip6[3] = proxy->addr; /* words 0..2 already say ::ffff: */
		ctx->user_port = (__u32)proxy->port;
		return 1;
	}
	if (weft_ip6_is_local(dst))
		return 1;
	if (!weft_task_enrolled())
		return 1;
	weft_count(WEFT_CNT_REFUSED_IPV6);
	return 0; /* EPERM: the mesh has no IPv6 path, and nothing goes around it */
}

#endif /* WEFT_CONNECT6_H */
