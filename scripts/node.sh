#!/usr/bin/env bash
# Runs the Node.js that weft uses (the one scripts/setup.sh chose) with the given arguments.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$ROOT/.weft/bin/node" "$@"
