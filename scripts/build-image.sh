#!/usr/bin/env bash
# Builds the weft image with rootful podman, offline but for Debian's archive:
#   1. the base: `mmdebstrap --variant=minbase bookworm` into a tarball, `podman import`ed as
#      localhost/weft-base:bookworm (kept; made again only when missing or with --rebuild-base);
#   2. the context: this checkout's Node binary (.weft/bin/node), bin/, src/, package.json, the
#      production node_modules (a copy of node_modules pruned of dev dependencies, offline), the
#      native addon and the BPF object (run scripts/setup.sh first);
#   3. `podman build --runtime runc --network host` (crun refuses this machine's hybrid cgroup
#      layout; the host network reaches Debian's archive for apt-get) as localhost/weft:<version>.
# Usage: scripts/build-image.sh [--tag NAME] [--base NAME] [--rebuild-base]
# Prints the image name and its size on the last line.
set -euo pipefail
trap 'echo "build-image: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$ROOT/package.json")"
tag="localhost/weft:${version}"
base="localhost/weft-base:bookworm"
rebuild_base=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --rebuild-base) rebuild_base=1; shift ;;
    *) echo "build-image: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
for tool in podman runc mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (Debian: apt-get install podman runc mmdebstrap)" >&2; exit 1; }
done
for file in "$ROOT/.weft/bin/node" "$ROOT/native/build/Release/weft_native.node" "$ROOT/build/bpf/weft.bpf.o" "$ROOT/node_modules"; do
  [[ -e "$file" ]] || { echo "build-image: $file is missing; run bash scripts/setup.sh first" >&2; exit 1; }
done
podman=(podman --runtime runc)
work="$(mktemp -d /tmp/weft-image-XXXXXX)"
trap 'rm -rf "$work"' EXIT

if [[ $rebuild_base == 1 ]] || ! "${podman[@]}" image exists "$base"; then
  echo "build-image: making $base with mmdebstrap (minbase bookworm)" >&2
  mmdebstrap --variant=minbase --quiet bookworm "$work/base.tar"
  "${podman[@]}" import --quiet "$work/base.tar" "$base" >/dev/null
  rm -f "$work/base.tar"
fi

ctx="$work/context"
mkdir -p "$ctx/weft/native/build/Release" "$ctx/weft/build/bpf"
cp -L "$ROOT/.weft/bin/node" "$ctx/node"
cp -a "$ROOT/bin" "$ROOT/src" "$ROOT/package.json" "$ROOT/package-lock.json" "$ctx/weft/"
cp "$ROOT/native/build/Release/weft_native.node" "$ctx/weft/native/build/Release/"
cp "$ROOT/build/bpf/weft.bpf.o" "$ctx/weft/build/bpf/"
# The contents (/.), also when node_modules is a symlink: the prune below must never reach the checkout's.
mkdir "$ctx/weft/node_modules"
cp -a "$ROOT/node_modules/." "$ctx/weft/node_modules/"
(cd "$ctx/weft" && PATH="$ROOT/.weft/bin:$PATH" npm prune --omit=dev --offline --no-audit --no-fund --ignore-scripts --silent)
rm -f "$ctx/weft/package-lock.json"
# What Node never loads at run time: type declarations, source maps, docs (a third of the Kubernetes client).
find "$ctx/weft/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o -name '*.md' \) -delete
# Readable by the control plane's non-root user; done here, not in a RUN layer that would copy it all.
chmod -R a+rX "$ctx"
cp "$ROOT/image/Containerfile" "$ctx/Containerfile"

# nofile/nproc at or below what this machine allows its processes (podman's default is higher).
"${podman[@]}" build --quiet --network host --ulimit nofile=20000:20000 --ulimit nproc=20000:20000 \
  --build-arg "BASE=$base" --tag "$tag" "$ctx" >/dev/null
size="$("${podman[@]}" image inspect --format '{{.Size}}' "$tag")"
echo "$tag $((size / 1024 / 1024)) MiB"
