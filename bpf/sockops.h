/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sockops: key a redirected connection's original destination by the pod socket's local
 * (ip, port), which is the peer address the proxy sees when it accepts.
 *
 * Byte orders in struct bpf_sock_ops: local_ip4 and local_ip6 are network order, local_port
 * is HOST order (a plain __u32), remote_port is network order (shifted into the upper 16 bits
 * on little-endian). We only use the local side.
 *
 * AF_INET6 sockets that connect6 redirected are always IPv4-mapped: the proxy accepts them as
 * plain IPv4, so the key stays the IPv4 (ip, port). Checked on kernel 6.18: for such a socket
 * skops->family is AF_INET6, local_ip6 is ::ffff:<pod ip> and local_ip4 also holds <pod ip>
 * (the kernel keeps sk_rcv_saddr and sk_v6_rcv_saddr in step); we check the ::ffff: prefix
 * of local_ip6 and read local_ip4 for both families.
 */
#ifndef WEFT_SOCKOPS_H
#define WEFT_SOCKOPS_H

#include "weft_maps.h"
#include <bpf/bpf_endian.h>

#define WEFT_AF_INET 2
#define WEFT_AF_INET6 10

/*
 * The local IPv4 address of an AF_INET socket, or of an AF_INET6 socket bound to an
 * IPv4-mapped address. false for anything else (native IPv6: never redirected).
 */
static __always_inline bool weft_local_ip4(struct bpf_sock_ops *skops, __be32 *addr)
{
	if (skops->family == WEFT_AF_INET6 &&
	    (skops->local_ip6[0] != 0 || skops->local_ip6[1] != 0 ||
	     skops->local_ip6[2] != bpf_htonl(0x0000ffff)))
		return false;
	else if (skops->family != WEFT_AF_INET && skops->family != WEFT_AF_INET6)
		return false;
	*addr = skops->local_ip4; /* also set for a mapped AF_INET6 socket, see above */
	return true;
}

/* Ask for TCP state changes on this socket, so its dst_by_cookie entry goes with it. */
static __always_inline void weft_watch_state(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

SEC("sockops")
int weft_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct orig_dst_v4 *original;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* The SYN is about to leave. Watching from here (not only once established) also
		 * cleans up connects that never complete, e.g. refused while no proxy listens. */
		if (skops->family != WEFT_AF_INET && skops->family != WEFT_AF_INET6)
			return 1;
		cookie = bpf_get_socket_cookie(skops);
		if (bpf_map_lookup_elem(&dst_by_cookie, &cookie))
			weft_watch_state(skops);
		return 1;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		/* SYN-ACK received, final ACK not yet sent: the proxy cannot have accepted yet. */
		__be32 local_addr;

		if (!weft_local_ip4(skops, &local_addr))
			return 1;
		cookie = bpf_get_socket_cookie(skops);
		original = bpf_map_lookup_elem(&dst_by_cookie, &cookie);
		if (!original)
			return 1;

		struct tuple_v4_key key = {
			.addr = local_addr,
			.port = bpf_htons((__u16)skops->local_port),
		};
		struct orig_dst_v4 value = *original;

		if (bpf_map_update_elem(&dst_by_tuple, &key, &value, BPF_ANY) == 0)
			weft_count(WEFT_CNT_TUPLE_RECORDED);
		weft_watch_state(skops); /* in case TCP_CONNECT_CB ran before we were attached */
		return 1;
	}
	case BPF_SOCK_OPS_STATE_CB:
		/* args[0] = old state, args[1] = new state */
		if (skops->args[1] == BPF_TCP_CLOSE) {
			cookie = bpf_get_socket_cookie(skops);
			bpf_map_delete_elem(&dst_by_cookie, &cookie);
		}
		return 1;
	default:
		return 1;
	}
}

#endif /* WEFT_SOCKOPS_H */
