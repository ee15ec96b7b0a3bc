#!/usr/bin/env bash
# End-to-end IMAP benchmark (issue 3): N mixed messages drained by `eingang sync` over TLS from a
# private Dovecot, the raw FETCH+MOVE ceiling on the same server, and IDLE latency. Loopback only.
# Needs dovecot-imapd, python3 and the openssl CLI; run as root (Dovecot's mail user is nobody).
# Usage: bench/imap.sh [-n 2000] [--idle-rounds 100] [--repeat 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/require.sh
require dovecot dovecot-imapd
cargo build --release --quiet
exec python3 bench/imap_bench.py --binary target/release/eingang "$@"
