#!/usr/bin/env bash
# Drain benchmark on realistic documents (issue 16): for each N, the corpus of
# ../shared/bench/gen_corpus.py --n N --seed 42; `eingang sync` over TLS and the raw
# FETCH+MOVE ceiling against the same private Dovecot; `eingang import` and the Python
# standard-library reference on the same files; three runs each, interleaved; medians, ratios,
# messages/s, CPU, peak RSS, store bytes per document. A private dnsmasq on loopback answers
# eingang's DNS (sender checks) at once. Loopback only.
# Needs dovecot-imapd, dnsmasq-base, python3 and the openssl CLI; run as root (Dovecot's mail
# user is nobody). Several binaries (LABEL=PATH) run interleaved, e.g. before and after.
# Usage: bench/drain.sh [-n 500 2000 5000 20000] [--repeat 3] [--binary [LABEL=]PATH]...
#                       [--python default compat32] [--json results.json] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/require.sh
require dovecot dovecot-imapd
require dnsmasq dnsmasq-base
case " $* " in
  *" --binary "*) ;;
  *) cargo build --release --quiet; set -- --binary target/release/eingang "$@" ;;
esac
exec python3 bench/drain_bench.py "$@"
