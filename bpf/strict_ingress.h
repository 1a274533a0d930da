/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup_skb/ingress: strict mode, the kernel half. A pod whose cgroup (or an ancestor) is in
 * strict_cgrps accepts new TCP connections only from the mesh: from an address in
 * mesh_sources (the node's proxy ip and node ip: the mesh's own connections and the
 * kubelet's), from loopback, or from itself (source == destination). Everything else to a
 * listening socket is dropped and counted (strict_dropped). Established connections,
 * non-TCP traffic and pods that are not strict pass untouched.
 *
 * What the kernel hands us (checked on kernel 6.18): the program runs for a packet once it
 * has found the socket it goes to, with skb->sk that socket. A SYN (and the ACK that would
 * complete a handshake) goes to the LISTENING socket, so bpf_skb_cgroup_id() is the
 * listener's cgroup (the pod's, where the server created it) and
 * bpf_skb_ancestor_cgroup_id(skb, level) walks its ancestry (0 past its depth), whichever
 * netns the pod lives in. skb data starts at the network header; skb->protocol says IPv4 or
 * IPv6. An IPv4 connection to a dual-stack (AF_INET6) listener is IPv4 on the wire: the
 * packet is parsed as IPv4 and the socket is an AF_INET6 listener; nothing differs for us.
 *
 * "A new connection" is "a TCP packet to a listening socket": the SYN, and also a bare ACK
 * that would complete a handshake (with SYN cookies an ACK alone can open a connection), so
 * dropping at the listener covers both without parsing TCP options or IPv6 extension
 * headers. Packets to established sockets never reach a listener.
 */
#ifndef WEFT_STRICT_INGRESS_H
#define WEFT_STRICT_INGRESS_H

#include "weft_maps.h"
#include <bpf/bpf_endian.h>

#define WEFT_IPPROTO_TCP 6
#define WEFT_ETH_P_IP    0x0800
#define WEFT_ETH_P_IPV6  0x86DD

/* Is the receiving socket's cgroup, or one of its ancestors, strict? */
static __always_inline bool weft_skb_strict(struct __sk_buff *skb)
{
	for (int level = 0; level < WEFT_MAX_CGROUP_LEVELS; level++) {
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, level);

		if (id == 0) /* deeper than the socket's own cgroup */
			break;
		if (bpf_map_lookup_elem(&strict_cgrps, &id))
			return true;
	}
	return false;
}

static __always_inline bool weft_mesh_source_v4(__be32 source)
{
	if ((bpf_ntohl(source) >> 24) == 127) /* loopback */
		return true;
	return bpf_map_lookup_elem(&mesh_sources, &source) != NULL;
}

/* May the packet's source open a connection to a strict pod? Parses the IP header. */
static __always_inline bool weft_skb_from_mesh(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(WEFT_ETH_P_IP)) {
		__be32 addrs[2]; /* iphdr saddr, daddr: bytes 12..19 */

		if (bpf_skb_load_bytes(skb, 12, addrs, sizeof(addrs)) != 0)
			return false;
		return addrs[0] == addrs[1] || weft_mesh_source_v4(addrs[0]);
	}
	if (skb->protocol == bpf_htons(WEFT_ETH_P_IPV6)) {
		__u32 addrs[8]; /* ipv6hdr saddr, daddr: bytes 8..39 */

		if (bpf_skb_load_bytes(skb, 8, addrs, sizeof(addrs)) != 0)
			return false;
		if (addrs[0] == addrs[4] && addrs[1] == addrs[5] && addrs[2] == addrs[6] && addrs[3] == addrs[7])
			return true; /* the pod calling itself */
		if (addrs[0] != 0 || addrs[1] != 0)
			return false;
		if (addrs[2] == 0 && addrs[3] == bpf_htonl(1))
			return true; /* ::1 */
		/* The mesh has no IPv6 path; a mapped source is never on the wire, but judge it as IPv4. */
		return addrs[2] == bpf_htonl(0x0000ffff) && weft_mesh_source_v4(addrs[3]);
	}
	return true; /* not IP: not ours to judge */
}

SEC("cgroup_skb/ingress")
int weft_strict_in(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	/* Cheap checks first: every packet to every socket below the node root comes here. */
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != WEFT_IPPROTO_TCP || sk->state != BPF_TCP_LISTEN)
		return 1;
	if (!weft_skb_strict(skb) || weft_skb_from_mesh(skb))
		return 1;
	weft_count(WEFT_CNT_STRICT_DROPPED);
	return 0; /* dropped: no SYN-ACK, the caller times out */
}

#endif /* WEFT_STRICT_INGRESS_H */
