#!/usr/bin/env bash
# Runs weft's benchmark (bench/run.ts): what a hop through the mesh adds and costs, side by side
# with no mesh, the sidecar model, nginx and haproxy. Needs root (it builds a lab).
# First brings the checkout up with scripts/setup.sh, which also installs the Debian packages the
# benchmark uses (nginx-light, haproxy, wrk, util-linux for taskset) without starting their system
# services. Arguments go to the harness: scripts/bench.sh --quick, --help.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for arg in "$@"; do
  if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then exec "$ROOT/.weft/bin/node" bench/run.ts --help; fi
done
bash scripts/setup.sh
exec "$ROOT/.weft/bin/node" bench/run.ts "$@"
