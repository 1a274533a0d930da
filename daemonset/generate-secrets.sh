#!/usr/bin/env bash
# Makes what daemonset/kustomization.yaml's secretGenerator reads, in daemonset/secrets/ (or the
# directory given): the NATS passwords (nats-credentials.env) and the workload CA's root
# (ca-cert.pem, ca-key.pem: EC P-256, 10 years). Keeps files that exist: run it again and nothing
# changes; delete a file to make it anew (new passwords or a new root roll the pods using them).
# Needs openssl.
set -euo pipefail
dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets}"
trust_domain="${WEFT_TRUST_DOMAIN:-cluster.local}"
mkdir -p "$dir"
umask 077
if [[ ! -e "$dir/nats-credentials.env" ]]; then
  {
    echo "operator-password=$(openssl rand -hex 24)"
    echo "control-password=$(openssl rand -hex 24)"
    echo "node-password=$(openssl rand -hex 24)"
  } >"$dir/nats-credentials.env"
  echo "wrote $dir/nats-credentials.env"
fi
if [[ ! -e "$dir/ca-key.pem" || ! -e "$dir/ca-cert.pem" ]]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/ca-key.pem" -out "$dir/ca-cert.pem" -days 3650 \
    -subj "/O=weft/CN=weft root ${trust_domain}" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "wrote $dir/ca-cert.pem and $dir/ca-key.pem"
fi
