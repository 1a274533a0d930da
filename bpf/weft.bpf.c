// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The one BPF object a weft node loads: every map (weft_maps.h) and one program per attach
 * point, each in its own header. The loader (src/bpf/) attaches the cgroup programs at the
 * node's workload cgroup root, and the stream verdict to its sockhash. Thin entry points;
 * shared decisions live in named helpers (intercept.h: the connect decision of connect4 and
 * connect6).
 *
 * Program names (the C function names) are what the loader looks up:
 *   weft_connect4   cgroup/connect4      rewrite enrolled TCP connects to the proxy
 *   weft_connect6   cgroup/connect6      the same for IPv4-mapped AF_INET6 connects; refuse
 *                                        enrolled native IPv6 TCP connects (EPERM)
 *   weft_sockops    sockops              key the original destination by (ip, port)
 *   weft_getpeer4   cgroup/getpeername4  show the app its original peer
 *   weft_getpeer6   cgroup/getpeername6  the same for AF_INET6 sockets (::ffff:<ip>)
 *   weft_strict_in  cgroup_skb/ingress   strict pods: new connections only from the mesh
 *   weft_sk_verdict sk_skb/stream_verdict the L4 fast path: a joined socket's bytes go out of
 *                                        its peer (attached to the splice_socks map, not a cgroup)
 * (kernel object names are cut at 15 characters, so keep them short; a function may not
 * share its name with its section, hence the prefix)
 */
#include "weft_maps.h"
#include "connect4.h"
#include "connect6.h"
#include "sockops.h"
#include "getpeername4.h"
#include "getpeername6.h"
#include "strict_ingress.h"
#include "splice.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
