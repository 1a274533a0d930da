/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * weft interception maps: every map the programs share, in one place.
 *
 * Byte order conventions (checked by test/bpf-layout.test.ts against src/bpf/layout.ts):
 *   - IPv4 addresses are stored as the kernel hands them over: network order (__be32),
 *     i.e. the 4 bytes in memory are the dotted quad in order.
 *   - Ports stored in values and tuple keys are network order (__be16), because that is
 *     what cgroup/connect4 (ctx->user_port) and getpeername4 deal in. The one exception is
 *     excluded_ports, whose key is a host-order __u16 so the daemon can write it plainly.
 *   - Cgroup ids and cookies are host-order __u64.
 *
 * The names must stay <= 15 characters (BPF_OBJ_NAME_LEN - 1).
 */
#ifndef WEFT_MAPS_H
#define WEFT_MAPS_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define WEFT_MAX_ENROLLED   65536
#define WEFT_MAX_RULES      4096
#define WEFT_MAX_PORTS      1024
#define WEFT_MAX_INFLIGHT   262144
#define WEFT_MAX_SOURCES    1024
#define WEFT_MAX_SPLICED    65536

/* How many cgroup ancestry levels connect4/6 and strict ingress check (level 0 is the cgroup v2 root). */
#ifndef WEFT_MAX_CGROUP_LEVELS
#define WEFT_MAX_CGROUP_LEVELS 16
#endif

/* intercept_rules values */
#define WEFT_ACTION_INTERCEPT 1
#define WEFT_ACTION_BYPASS    2

/* LPM trie key for IPv4: prefix length, then the address in network order. */
struct lpm_v4_key {
	__u32 prefixlen; /* host order; 0..32 */
	__be32 addr;     /* network order */
};

/* The proxy every intercepted connect is rewritten to. */
struct proxy_v4 {
	__be32 addr;     /* network order; 0 = not configured (connect4 does nothing) */
	__be16 port;     /* network order */
	__u16 _pad;
};

/* A connection's original destination, plus the cgroup the connecting task ran in. */
struct orig_dst_v4 {
	__be32 addr;       /* network order */
	__be16 port;       /* network order */
	__u16 _pad;
	__u64 cgroup_id;   /* cgroup v2 id (inode number) of the connecting task's cgroup */
};

/* A socket seen from the proxy: the pod side's (local) address of a redirected connection. */
struct tuple_v4_key {
	__be32 addr;     /* network order; the pod's source ip */
	__be16 port;     /* network order; the pod's source port */
	__u16 _pad;      /* always 0 */
};

/* counters indexes (PERCPU_ARRAY of __u64) */
enum weft_counter {
	WEFT_CNT_REDIRECTED = 0,     /* connect4 rewrote a connect to the proxy */
	WEFT_CNT_BYPASSED = 1,       /* enrolled, intercepted range, but bypass CIDR or excluded port */
	WEFT_CNT_NOT_ENROLLED = 2,   /* intercepted range, but no enrolled cgroup in the ancestry */
	WEFT_CNT_TUPLE_RECORDED = 3, /* sockops keyed an original destination by (ip, port) */
	WEFT_CNT_PEER_RESTORED = 4,  /* getpeername4 showed the app its original peer */
	WEFT_CNT_PROXY_SELF = 5,     /* a connect to the proxy itself, left alone */
	WEFT_CNT_REFUSED_IPV6 = 6,   /* connect6 refused an enrolled pod's native IPv6 TCP connect (EPERM) */
	WEFT_CNT_STRICT_DROPPED = 7, /* strict ingress dropped a new connection from outside the mesh */
	WEFT_CNT_MAX = 16,           /* room to grow without changing the map */
};

/*
 * enrolled_cgrps: cgroup id (host-order __u64, the inode number of the cgroup v2
 * directory) -> flags (__u32, 0 for now).
 * Written by the daemon (src/bpf NodeInterception.setEnrolledCgroups).
 * Read by connect4 and connect6, for every level of the connecting task's cgroup ancestry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_MAX_ENROLLED);
	__type(key, __u64);
	__type(value, __u32);
} enrolled_cgrps SEC(".maps");

/*
 * intercept_rules: {prefixlen, IPv4 network order} -> action (__u32: 1 intercept, 2 bypass).
 * Longest prefix wins, so a bypass /24 inside an intercept /16 carves a hole.
 * Written by the daemon from config (applySettings). Read by connect4, and by connect6 for
 * IPv4-mapped destinations.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, WEFT_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
} intercept_rules SEC(".maps");

/*
 * excluded_ports: destination port (HOST order __u16) -> __u32 (1).
 * Written by the daemon from config. Read by connect4 and connect6: destinations on these
 * ports are never redirected.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u32);
} excluded_ports SEC(".maps");

/*
 * proxy_config: key 0 (__u32) -> struct proxy_v4, the node proxy's outbound listener.
 * Written by the daemon. Read by connect4 and connect6 (redirect target, and to skip the
 * proxy's own destination; connect6 rewrites to ::ffff:<addr>).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proxy_v4);
} proxy_config SEC(".maps");

/*
 * dst_by_cookie: socket cookie (__u64) -> struct orig_dst_v4.
 * Written by connect4 and connect6 (the IPv4 inside the mapped address) when they redirect.
 * Read by sockops (to key it by tuple) and by getpeername4/getpeername6 (to show the app its
 * original peer; getpeername6 as ::ffff:<addr>). Deleted by sockops when the socket
 * reaches TCP_CLOSE; LRU evicts what is left behind (e.g. a connect that never completed).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_MAX_INFLIGHT);
	__type(key, __u64);
	__type(value, struct orig_dst_v4);
} dst_by_cookie SEC(".maps");

/*
 * dst_by_tuple: struct tuple_v4_key (the pod socket's local ip/port, i.e. the peer address
 * the proxy sees on accept; for an AF_INET6 pod socket, the IPv4 inside its mapped address,
 * since the proxy accepts it as plain IPv4) -> struct orig_dst_v4.
 * Written by sockops at BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB (before the final ACK, so
 * before the proxy can accept). Read AND deleted by the daemon's proxy on accept
 * (takeOriginalDestination); LRU evicts entries nobody took.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_MAX_INFLIGHT);
	__type(key, struct tuple_v4_key);
	__type(value, struct orig_dst_v4);
} dst_by_tuple SEC(".maps");

/*
 * strict_cgrps: cgroup id (host-order __u64) -> flags (__u32, 0 for now): pods in STRICT mode.
 * Written by the daemon (NodeInterception.setStrictCgroups, the set of this node's strict pods).
 * Read by strict ingress (cgroup_skb/ingress), for every level of the receiving socket's
 * cgroup ancestry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_MAX_ENROLLED);
	__type(key, __u64);
	__type(value, __u32);
} strict_cgrps SEC(".maps");

/*
 * mesh_sources: IPv4 address (__be32, network order) -> __u32 (1): the sources a strict pod
 * accepts new connections from, besides loopback and itself: the node's proxy ip (where the
 * proxy connects to pods from) and node ip (the kubelet's probes).
 * Written by the daemon (NodeInterception.setMeshSources). Read by strict ingress.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_MAX_SOURCES);
	__type(key, __be32);
	__type(value, __u32);
} mesh_sources SEC(".maps");

/*
 * counters: enum weft_counter (__u32) -> __u64, per CPU.
 * Written (incremented) by all programs. Read by the daemon (summed over CPUs) for metrics.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEFT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/*
 * splice_peers: socket cookie (host-order __u64) of a proxy-side socket -> the socket its
 * received bytes are sent out of (the other proxy-side socket of the same connection).
 * A SOCKHASH: the daemon writes the peer's fd, the kernel keeps the socket (a lookup from user
 * space gives its cookie). No program is attached to this map; a socket leaves it when it closes.
 * Written by the daemon (NodeInterception.joinSockets, the L4 fast path). Read by the stream
 * verdict (bpf_sk_redirect_hash).
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, WEFT_MAX_SPLICED);
	__type(key, __u64);
	__type(value, __u64);
} splice_peers SEC(".maps");

/*
 * splice_socks: socket cookie (host-order __u64) -> the socket itself. The stream verdict
 * (sk_skb/stream_verdict) is attached to this map: it runs for every skb a socket in it receives.
 * A separate map from splice_peers so that a socket's verdict only starts once its peer can be
 * found (a socket here always has its peer in splice_peers already).
 * Written by the daemon (joinSockets, after splice_peers). Read by the kernel (the attachment).
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, WEFT_MAX_SPLICED);
	__type(key, __u64);
	__type(value, __u64);
} splice_socks SEC(".maps");

/*
 * splice_bytes: socket cookie (host-order __u64) -> payload bytes the stream verdict sent on
 * to the peer (__u64). Created at 0 by the daemon before the socket joins splice_socks; added to
 * by the stream verdict; read (and deleted) by the daemon when the connection ends, so the proxy
 * counts the bytes it never saw. LRU: entries of a daemon that died go by themselves.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_MAX_SPLICED);
	__type(key, __u64);
	__type(value, __u64);
} splice_bytes SEC(".maps");

static __always_inline void weft_count(enum weft_counter which)
{
	__u32 key = which;
	__u64 *value = bpf_map_lookup_elem(&counters, &key);

	if (value)
		*value += 1; /* per-CPU slot: no atomics needed */
}

#endif /* WEFT_MAPS_H */
