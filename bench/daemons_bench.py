#!/usr/bin/env python3
"""Several daemons on one PostgreSQL store (issue 17), driven by bench/daemons.sh.

For each N, the corpus of `../shared/bench/gen_corpus.py --n N --seed 42` is dealt round-robin
over six IMAP mailboxes (six fresh Dovecot users per run, N/6 messages each, put into the
maildirs as files as bench/drain_bench.py does). The config has one `[[source]]` per mailbox
(implicit TLS, the bench CA as `ca_file`), the twelve supplier formats, a `dir` connector and
the private dnsmasq of drain_bench.py; its store is a fresh database of a private PostgreSQL.
Then, for each k of --daemons, --repeat times, interleaved:

1. drain: `eingang check` makes the schema and proves every mailbox; then k `eingang run`
   with that one config start together; messages/s = N / the time from their start until
   `SELECT count(*) FROM items WHERE disposed_at IS NOT NULL` = N (polled every 100 ms from
   one psql session); CPU seconds of all daemons together and each one's peak RSS
   (VmHWM) at that moment; which daemon owned how many sources. Every run is checked: each
   inbox empty, archive + error = the mailbox's share, one ledger row per message, archive =
   imported and error = rejected, documents = imported items (nothing stored twice).
2. takeover by kill (k >= 2): the daemon owning the most sources gets SIGKILL; seconds until
   `eingang status --json` names a live daemon as the owner of every source.
3. takeover by freeze (k >= 2): the killed daemon is started again (it takes nothing: the
   others hold every lease), so that k daemons run; the one owning the most gets SIGSTOP;
   seconds until every source is owned by one of the others. After SIGCONT it must own
   nothing while the others run (watched for `OBSERVE` seconds); then the others stop, and
   it must take every source (a check, not a figure).

Medians per (N, k) go into one table; --json writes every run. The server runs like the one of
tests/support/postgres.rs (fsync, synchronous_commit and full_page_writes off) unless
--durable. Loopback only; every wait has a deadline; Dovecot, dnsmasq and PostgreSQL run under
watcher shells, the daemons with a parent-death signal, so nothing outlives the benchmark.
"""

import argparse
import ctypes
import glob
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import drain_bench  # noqa: E402  the dnsmasq, the corpus, mailboxes filled as files
import imap_bench  # noqa: E402  the Dovecot, watcher shells, waits
from imap_bench import ARCHIVE, ERROR, INBOX  # noqa: E402

MAILBOXES = 6
DRAIN_DEADLINE = 900  # seconds for one drain
TAKEOVER_DEADLINE = 90  # the issue promises 30 s; slower is reported, not waited for forever
OBSERVE = 12  # seconds a resumed daemon is watched: two of the daemons' 5 s lease tries and more
STOP_DEADLINE = 75  # a daemon's own shutdown grace is 60 s
HANDBACK_DEADLINE = 30  # a free source is tried every 5 s by each daemon that wants it
POLL = 0.1


class Postgres:
    """A private PostgreSQL: initdb and postgres from Debian's packages in `base`, on a free
    loopback port, run as nobody when we are root (initdb refuses root)."""

    def __init__(self, base, durable):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                       key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
        if not found:
            sys.exit("bench: PostgreSQL not found: apt-get install -y --no-install-recommends "
                     "postgresql-15")
        self.bin = os.path.dirname(found[-1])
        self.base = base
        self.port = imap_bench.free_port()
        data = os.path.join(base, "data")
        as_server = []
        if os.geteuid() == 0:
            shutil.chown(base, "nobody", "nogroup")
            as_server = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        subprocess.run(as_server + [os.path.join(self.bin, "initdb"), "-D", data, "-U", "postgres",
                                    "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                       cwd=base, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=120)
        argv = as_server + [
            os.path.join(self.bin, "postgres"), "-D", data, "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={base}",
            "-c", "max_connections=300",
            "-c", "logging_collector=on", "-c", f"log_directory={base}",
            "-c", "log_filename=server.log"]
        if not durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        # SIGINT: fast shutdown, whatever sessions are still open.
        self.proc = imap_bench.watched(argv, stop_signal="INT")

        def up():
            try:
                self.sql("postgres", "SELECT 1")
                return True
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                return False

        imap_bench.wait_for(up, 60, "postgres")

    def sql(self, database, query):
        """Runs one statement with psql; its rows as text, one line each."""
        out = subprocess.run(
            [os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-c", query],
            check=True, capture_output=True, text=True, timeout=30,
            env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        return out.stdout.strip()

    def count(self, database, query):
        return int(self.sql(database, query))

    def session(self, database):
        """One psql kept open for polling: a query every 100 ms costs the machine no new
        process and no new backend each time."""
        return Session([os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t",
                        "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", "-d", database])

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def cpu_seconds(self):
        with open(os.path.join(self.base, "data", "postmaster.pid")) as f:
            return imap_bench.cpu_seconds_of_tree(int(f.readline()))

    def stop(self):
        imap_bench.stop_watched(self.proc)


class Session:
    """A psql reading statements from a pipe; each answers one line."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1,
                                     preexec_fn=die_with_parent)

    def count(self, query, deadline=30):
        self.proc.stdin.write(query.rstrip(";") + ";\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], deadline)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(f"psql gave no answer to {query!r}: {self.proc.stderr.read()}")
        return int(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the daemon dies with this process


class Daemons:
    """The `eingang run` processes of one run, each logging to a file of its own."""

    def __init__(self, binary, ws):
        self.binary, self.ws = binary, ws
        self.procs = []

    def start(self):
        i = len(self.procs)
        with open(os.path.join(self.ws, f"daemon-{i}.log"), "w") as log:
            proc = subprocess.Popen([self.binary, "run"], cwd=self.ws, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log,
                                    preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    def log(self, proc):
        i = self.procs.index(proc)
        with open(os.path.join(self.ws, f"daemon-{i}.log"), errors="replace") as f:
            return f.read()

    def status(self):
        """`eingang status --json`: ({source: owner pid or None}, [pids of the daemons])."""
        out = subprocess.run([self.binary, "status", "--json"], cwd=self.ws, capture_output=True,
                             timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"eingang status: {out.stderr.decode(errors='replace')}")
        status = json.loads(out.stdout)
        owners = {s["name"]: (s["owner"] or {}).get("pid") for s in status["sources"]}
        return owners, [d["pid"] for d in status.get("daemons", [])]

    def owned(self, owners):
        """How many sources each of our daemons owns, in start order."""
        return [sum(1 for pid in owners.values() if pid == p.pid) for p in self.procs]

    def stop(self, procs=None):
        """SIGTERM to `procs` (default: all) together, then waits for each; kills the ones
        that outlast `STOP_DEADLINE`."""
        procs = self.procs if procs is None else procs
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_owned(daemons, live, deadline, t0=None):
    """Polls status until every source is owned by one of `live` (pids); seconds since t0
    (a monotonic time, default now), or None after `deadline` seconds."""
    t0 = time.monotonic() if t0 is None else t0
    while time.monotonic() - t0 < deadline:
        owners, _ = daemons.status()
        if owners and all(pid in live for pid in owners.values()):
            return time.monotonic() - t0
        time.sleep(POLL)
    return None


def most_owning(daemons, among):
    owners, _ = daemons.status()
    return max(among, key=lambda p: sum(1 for pid in owners.values() if pid == p.pid))


class Bench(drain_bench.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.postgres = None
        self.daemons = None
        self.odd = []
        self.tag = None  # the run under way, for what `note` says

    def start(self):
        super().start()
        os.makedirs(os.path.join(self.base, "pg"))
        self.postgres = Postgres(os.path.join(self.base, "pg"), self.args.durable)

    def stop(self):
        if self.daemons is not None:
            self.daemons.stop()
        if self.postgres is not None:
            try:
                self.postgres.stop()
            except Exception as e:  # the others are stopped all the same
                print(f"bench: stopping postgres: {e}", file=sys.stderr)
        super().stop()

    def note(self, what):
        what = f"{self.tag}: {what}"
        self.odd.append(what)
        print(f"  odd: {what}", flush=True)

    def keep_logs(self, daemons, tag):
        """Copies the daemons' logs of a run with something odd to --logs."""
        os.makedirs(self.args.logs, exist_ok=True)
        for i, _ in enumerate(daemons.procs):
            shutil.copy(os.path.join(daemons.ws, f"daemon-{i}.log"),
                        os.path.join(self.args.logs, f"{tag}-daemon-{i}.log"))
        self.odd.append(f"{tag}: the daemons' logs are in {self.args.logs}")

    def run(self, binary, msgs, names, k, tag):
        n = len(names)
        self.tag = tag
        database = f"bench_{tag}"
        pg = self.postgres
        pg.sql("postgres", f"CREATE DATABASE {database}")
        shares = [names[i::MAILBOXES] for i in range(MAILBOXES)]
        users = [self.mailbox(msgs, share) for share in shares]
        sources = "".join(drain_bench.imap_source(f"mail-{i}", self.dovecot, user)
                          for i, user in enumerate(users))
        ws = drain_bench.workspace(self.args.shared, self.dns.port, self.base, sources,
                                   store=f'url = "{pg.url(database)}"')
        # The schema is made (and every mailbox, the TLS and the CA proved) before the clock
        # starts: a site migrates its store once, not per drain.
        check = subprocess.run([binary, "check"], cwd=ws, capture_output=True, text=True,
                               timeout=120)
        if check.returncode != 0:
            sys.exit(f"bench: eingang check failed: {check.stdout}{check.stderr}")
        daemons = self.daemons = Daemons(binary, ws)
        odd_before = list(self.odd)
        poll = pg.session(database)
        try:
            result = self.drain(daemons, poll, n, k)
        finally:
            poll.close()
        result.update(self.verify(database, users, shares, n))
        if k >= 2:
            result.update(self.takeovers(daemons))
        daemons.stop()
        codes = [p.returncode for p in daemons.procs]
        result["exit"] = codes
        if any(c not in (0, -signal.SIGKILL) for c in codes):
            self.note(f"daemons exited {codes}")
        if self.odd != odd_before:
            self.keep_logs(daemons, tag)
        self.daemons = None
        pg.sql("postgres", f"DROP DATABASE {database}")
        shutil.rmtree(ws)
        return result

    def drain(self, daemons, poll, n, k):
        """Starts k daemons and waits until every item is disposed: the drain's figures."""
        pg = self.postgres
        dovecot_cpu0, pg_cpu0 = self.dovecot.cpu_seconds(), pg.cpu_seconds()
        t0 = time.monotonic()
        for _ in range(k):
            daemons.start()
        first = None
        while True:
            done = poll.count("SELECT count(*) FROM items WHERE disposed_at IS NOT NULL")
            now = time.monotonic() - t0
            if first is None and done > 0:
                first = now
            if done >= n:
                break
            for proc in daemons.procs:
                if proc.poll() is not None:
                    sys.exit(f"bench: a daemon ended during the drain ({proc.returncode}): "
                             f"{daemons.log(proc)[-3000:]}")
            if now > DRAIN_DEADLINE:
                sys.exit(f"bench: {done} of {n} disposed after {DRAIN_DEADLINE} s")
            time.sleep(POLL)
        drain = time.monotonic() - t0
        cpu = [drain_bench.cpu_of(p.pid) for p in daemons.procs]
        rss = [imap_bench.peak_rss_mib(p.pid) for p in daemons.procs]
        dovecot_cpu = self.dovecot.cpu_seconds() - dovecot_cpu0
        pg_cpu = pg.cpu_seconds() - pg_cpu0
        owners, _ = daemons.status()
        owned = daemons.owned(owners)
        return dict(n=n, daemons=k, msgs_s=n / drain, drain_s=drain, first_s=first,
                    cpu_s=sum(cpu), cpu_each_s=cpu, rss_mib=rss, owned=owned,
                    dovecot_cpu_s=dovecot_cpu, postgres_cpu_s=pg_cpu)

    def verify(self, database, users, shares, n):
        """Every mailbox drained and every message stored once; raises on a difference."""
        archived = failed = 0
        for user, share in zip(users, shares):
            left = self.count(user, INBOX)
            a, e = self.count(user, ARCHIVE), self.count(user, ERROR)
            assert left == 0 and a + e == len(share), (user, left, a, e, len(share))
            archived, failed = archived + a, failed + e
        q = lambda sql: self.postgres.count(database, sql)
        items = q("SELECT count(*) FROM items")
        imported = q("SELECT count(*) FROM items WHERE outcome = 'imported'")
        rejected = q("SELECT count(*) FROM items WHERE outcome = 'rejected'")
        documents = q("SELECT count(*) FROM documents")
        figures = dict(archived=archived, error=failed, items=items, imported=imported,
                       rejected=rejected, documents=documents)
        assert items == n, figures
        assert imported == archived and rejected == failed, figures
        assert documents == imported, figures
        return figures

    def takeovers(self, daemons):
        out = {}
        # A daemon that owns the most sources dies.
        victim = most_owning(daemons, daemons.procs)
        t0 = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        live = {p.pid for p in daemons.procs if p.poll() is None}
        out["takeover_kill_s"] = took = wait_owned(daemons, live, TAKEOVER_DEADLINE, t0)
        if took is None or took > 30:
            self.note(f"takeover after kill -9: {took} s (owners {daemons.status()[0]})")
        # k daemons again: the killed one's replacement joins (and takes nothing).
        fresh = daemons.start()
        imap_bench.wait_for(lambda: fresh.pid in daemons.status()[1], 30,
                            "the replacement daemon to join")
        owners, _ = daemons.status()
        if daemons.owned(owners)[-1] != 0:
            self.note(f"the replacement daemon took sources that were owned: {owners}")
        # A daemon that owns the most freezes.
        alive = [p for p in daemons.procs if p.poll() is None]
        frozen = most_owning(daemons, alive)
        t0 = time.monotonic()
        frozen.send_signal(signal.SIGSTOP)
        others = [p for p in alive if p is not frozen]
        out["takeover_freeze_s"] = took = wait_owned(daemons, {p.pid for p in others},
                                                     TAKEOVER_DEADLINE, t0)
        if took is None or took > 30:
            self.note(f"takeover after SIGSTOP: {took} s (owners {daemons.status()[0]})")
        frozen.send_signal(signal.SIGCONT)
        # Resumed, it owns nothing while the others run.
        end = time.monotonic() + OBSERVE
        while time.monotonic() < end:
            owners, _ = daemons.status()
            if frozen.pid in owners.values():
                self.note(f"the resumed daemon owns sources again: {owners}")
                break
            time.sleep(0.5)
        out["resumed_owned_nothing"] = frozen.pid not in daemons.status()[0].values()
        # Once the others stop, it takes every source.
        daemons.stop(others)
        out["handback_s"] = took = wait_owned(daemons, {frozen.pid}, HANDBACK_DEADLINE)
        if took is None:
            owners, _ = daemons.status()
            self.note(f"the resumed daemon did not take every source within "
                      f"{HANDBACK_DEADLINE} s after the others stopped; without an owner: "
                      f"{sorted(s for s, pid in owners.items() if pid is None)}")
        return out


def med(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def table(results):
    """One row per (N, k): medians over the runs."""
    head = (f"{'N':>6} {'daemons':>7} {'msg/s':>7} {'CPU s':>7} {'peak RSS MiB each':>19} "
            f"{'takeover kill s':>15} {'takeover freeze s':>17}  sources each, per run")
    lines = [head, "-" * len(head)]
    for (n, k), runs in results.items():
        # Each daemon's peak, largest first, median over the runs place by place.
        ranked = [sorted(r["rss_mib"], reverse=True) for r in runs]
        rss = "/".join(f"{statistics.median(place):.0f}" for place in zip(*ranked))
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        lines.append(f"{n:>6} {k:>7} {med(runs, 'msgs_s'):>7.0f} {med(runs, 'cpu_s'):>7.2f} "
                     f"{rss:>19} {fmt(med(runs, 'takeover_kill_s')):>15} "
                     f"{fmt(med(runs, 'takeover_freeze_s')):>17}  "
                     f"{', '.join('+'.join(map(str, r['owned'])) for r in runs)}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, nargs="+", default=[2000], help="corpus sizes")
    ap.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--durable", action="store_true",
                    help="PostgreSQL with fsync, synchronous_commit and full_page_writes on")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(imap_bench.ROOT), "shared"))
    ap.add_argument("--work", default=None, help="where corpora and stores go (default: TMPDIR)")
    ap.add_argument("--json", help="write every run here")
    ap.add_argument("--logs", default=os.path.join(tempfile.gettempdir(), "eingang-daemons-logs"),
                    help="where the daemons' logs of a run with something odd are kept")
    args = ap.parse_args()
    args.logs = os.path.abspath(args.logs)
    if any(k < 1 for k in args.daemons):
        ap.error("--daemons: at least one")
    binary = os.path.abspath(args.binary)
    # A TERM or HUP ends the benchmark through its `finally`, which stops every server.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))
    bench = Bench(args)
    results, runs = {}, []
    try:
        bench.start()
        for n in args.n:
            msgs, names, _ = bench.corpus(n)
            for r in range(args.repeat):
                for k in args.daemons:
                    res = bench.run(binary, msgs, names, k, f"n{n}_k{k}_r{r}")
                    res["repeat"] = r
                    runs.append(res)
                    results.setdefault((n, k), []).append(res)
                    fmt = lambda v: "-" if v is None else f"{v:.1f} s"
                    print(f"  N={n} k={k} run {r + 1}: {res['msgs_s']:.0f} msg/s "
                          f"(drain {res['drain_s']:.2f} s, first disposed {res['first_s']:.2f} s), "
                          f"CPU {res['cpu_s']:.2f} s "
                          f"({'/'.join(f'{c:.2f}' for c in res['cpu_each_s'])}), "
                          f"Dovecot {res['dovecot_cpu_s']:.2f} s, "
                          f"PostgreSQL {res['postgres_cpu_s']:.2f} s; "
                          f"RSS {'/'.join(f'{m:.0f}' for m in res['rss_mib'])} MiB; "
                          f"sources {'+'.join(map(str, res['owned']))}; "
                          f"archived {res['archived']}, error {res['error']}, "
                          f"documents {res['documents']}; "
                          f"takeover kill {fmt(res.get('takeover_kill_s'))}, "
                          f"freeze {fmt(res.get('takeover_freeze_s'))}, "
                          f"hand-back {fmt(res.get('handback_s'))}", flush=True)
            shutil.rmtree(os.path.dirname(msgs), ignore_errors=True)
            documents = {r["documents"] for r in runs if r["n"] == n}
            if len(documents) > 1:
                bench.tag = f"N={n}"
                bench.note(f"the runs stored different numbers of documents {documents}")
    finally:
        bench.stop()
    print()
    print(table(results))
    if bench.odd:
        print("\nodd:\n" + "\n".join(f"- {o}" for o in bench.odd))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
