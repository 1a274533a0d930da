// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The one BPF object a weft node loads: every map (weft_maps.h) and one program per attach
 * point, each in its own header. The loader (src/bpf/) attaches all of them at the node's
 * workload cgroup root. IPv6 (connect6.h, getpeername6.h, v6 keys) slots in beside these.
 *
 * Program names (the C function names) are what the loader looks up:
 *   weft_connect4   cgroup/connect4      rewrite enrolled TCP connects to the proxy
 *   weft_sockops    sockops              key the original destination by (ip, port)
 *   weft_getpeer4   cgroup/getpeername4  show the app its original peer
 * (kernel object names are cut at 15 characters, so keep them short; a function may not
 * share its name with its section, hence the prefix)
 */
#include "weft_maps.h"
#include "connect4.h"
#include "sockops.h"
#include "getpeername4.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
