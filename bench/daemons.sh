#!/usr/bin/env bash
# Several daemons on one PostgreSQL store (issue 17): the corpus of
# ../shared/bench/gen_corpus.py --n N --seed 42 over six IMAP mailboxes of a private Dovecot
# (implicit TLS), drained by 1, 2 and 3 `eingang run` sharing one config and a fresh database
# of a private PostgreSQL each run; messages/s, CPU of the daemons, each one's peak RSS; then,
# with two or more, the takeover time after `kill -9` of the daemon owning the most sources and
# after SIGSTOP of one (resumed, it must own nothing). Runs interleaved, medians, a table.
# Loopback only.
# Needs dovecot-imapd, dnsmasq-base, postgresql-15, python3 and the openssl CLI; run as root
# (Dovecot's mail user and the PostgreSQL server are nobody).
# Usage: bench/daemons.sh [-n 2000 6000] [--daemons 1 2 3] [--repeat 2] [--binary PATH]
#                         [--durable] [--json results.json] [--logs DIR] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/require.sh
require dovecot dovecot-imapd
require dnsmasq dnsmasq-base
require initdb postgresql-15
case " $* " in
  *" --binary "*) ;;
  *)
    cargo build --release --quiet
    set -- --binary "${CARGO_TARGET_DIR:-target}/release/eingang" "$@"
    ;;
esac
exec python3 bench/daemons_bench.py "$@"
