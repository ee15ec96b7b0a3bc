#!/usr/bin/env bash
# ERP hand-off benchmark (issue 13): N delivery notes imported into a fresh store, then handed
# to a webhook connector by `eingang sync`, against a Python receiver on loopback that checks
# every signature with the reference implementation (PyPI standardwebhooks) and drops repeats
# by webhook-id. Prints deliveries per second. Loopback only.
# Needs python3 with standardwebhooks (pip install standardwebhooks==1.1.0).
# Usage: bench/handoff.sh [-n 2000] [--no-verify] [--binary PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import standardwebhooks" >/dev/null 2>&1; then
  echo "error: standardwebhooks missing: pip install standardwebhooks==1.1.0" >&2
  exit 1
fi
case " $* " in
  *" --binary "*) ;;
  *) cargo build --release --quiet; set -- --binary target/release/eingang "$@" ;;
esac
exec python3 bench/handoff_bench.py "$@"
