#!/usr/bin/env bash
# Runs weft's benchmark (bench/run.ts): what a hop through the mesh adds and costs, side by side
# with no mesh, the sidecar model, nginx and haproxy. Needs root (it builds a lab).
# First brings the checkout up with scripts/setup.sh, then installs the Debian packages the
# benchmark uses when they are missing (nginx-light, haproxy, wrk, util-linux for taskset) without
# starting their system services. Arguments go to the harness: scripts/bench.sh --quick, --help.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for arg in "$@"; do
  if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then exec "$ROOT/.weft/bin/node" bench/run.ts --help; fi
done
bash scripts/setup.sh
BENCH_PACKAGES=(nginx-light haproxy wrk util-linux)
missing=()
for p in "${BENCH_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bench: installing Debian packages: ${missing[*]}" >&2
  # The benchmark starts nginx and haproxy itself, inside the lab: keep their system services from
  # starting on install (policy-rc.d exit 101 = "not allowed"), unless a policy is already there.
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
exec "$ROOT/.weft/bin/node" bench/run.ts "$@"
