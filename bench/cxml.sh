#!/usr/bin/env bash
# cXML receiver benchmark (issue 12): `eingang run` with [cxml] over TLS on loopback (a test CA
# made with the openssl CLI); N OrderRequests POSTed by C keep-alive connections, then the same
# N again (repeated payloadIDs), then 100 one at a time. Prints orders per second and latency
# p50/p99, and checks that every order is stored once. Loopback only.
# Needs python3 and the openssl CLI.
# Usage: bench/cxml.sh [-n 2000] [--clients 16] [--binary PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { echo "error: the openssl CLI is missing: apt-get install -y openssl" >&2; exit 1; }
case " $* " in
  *" --binary "*) ;;
  *) cargo build --release --quiet; set -- --binary target/release/eingang "$@" ;;
esac
exec python3 bench/cxml_bench.py "$@"
