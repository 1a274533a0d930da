/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The L4 fast path: the node proxy joins the two sockets of a same-node opaque TCP connection
 * (the pod's connection it accepted, and its own connection to the destination pod) in the
 * kernel. Each skb a joined socket receives is sent out of its peer (an egress redirect), so the
 * payload never reaches user space. The proxy still reads both sockets: it sees FIN (EOF) and
 * RST (an error) there, and forwards them itself (src/datapath/fast-splice.ts).
 *
 * Attached as BPF_SK_SKB_STREAM_VERDICT to splice_socks, without a stream parser (whole skbs,
 * read by tcp_read_skb; 5.10+).
 */
#ifndef WEFT_SPLICE_H
#define WEFT_SPLICE_H

#include "weft_maps.h"

SEC("sk_skb/stream_verdict")
int weft_sk_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 len = skb->len;
	__u64 *bytes;

	/* A FIN arrives as an skb without payload (tcp_read_skb hands it over too). Redirected, the
	 * peer's send worker would take "0 bytes sent" for a broken pipe and fail the peer with EPIPE
	 * (checked on 6.18). The FIN itself was already seen by TCP: user space reads EOF and forwards
	 * it once the bytes before it are out. */
	if (len == 0)
		return SK_DROP;
	/* SK_PASS only when the peer was found: then the skb goes out of the peer. Without one (it
	 * closed), the bytes have nowhere to go: dropped, as a closed peer would have. */
	if (bpf_sk_redirect_hash(skb, &splice_peers, &cookie, 0) != SK_PASS)
		return SK_DROP;
	bytes = bpf_map_lookup_elem(&splice_bytes, &cookie);
	if (bytes)
		__sync_fetch_and_add(bytes, len);
	return SK_PASS;
}

#endif /* WEFT_SPLICE_H */
