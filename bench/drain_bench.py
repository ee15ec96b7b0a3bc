#!/usr/bin/env python3
"""The drain benchmark of issue 16, driven by bench/drain.sh: realistic documents, side by side.

For each N: the corpus of `../shared/bench/gen_corpus.py --n N --seed 42` (70 % Windows-1252 CSV
delivery notes of 40-60 lines, 25 % cXML orders of 15-25 items, 5 % broken), then, --repeat
times, interleaved so that the machine's load falls on all of them alike:

1. `eingang sync` over implicit TLS from a private Dovecot (one fresh user per run): messages/s
   from the start to the end of the pass (the line "lieferscheine: imported …"), CPU of eingang
   (the whole process) and of Dovecot, eingang's peak RSS (VmHWM, sampled), store bytes per
   document; what follows the pass (the hand-off to the connector, notices) is reported apart;
2. the raw ceiling on the same Dovecot: `UID FETCH 1:* (BODY.PEEK[])` + `UID MOVE 1:*` over TLS
   from Python's imaplib (bench/imap_bench.py);
3. `eingang import` of the same .eml files into a fresh store;
4. the Python standard-library reference (bench/stdlib_import.py) on the same files, with
   `email.policy.default` and with `compat32`.

eingang gets what a site has: the twelve supplier formats of `../shared/bench/formats/`, a
`dir` connector taking every document (its hand-off rows are written with each document), and
a DNS server of its own: a dnsmasq on loopback that answers every name at once with NXDOMAIN
(no DKIM key, no DMARC policy: every verdict is `none`), so that the sender checks cost a real
round trip each and no DNS timeout is measured. The messages are put into the Dovecot maildir
as files and the folder is selected once before the clock starts (the same for eingang and the
raw client; APPENDing 20000 messages per run would take longer than the drains).

Every store is checked: the inbox empty, archive + error = N. Medians are printed per N, and a
JSON file with every run if --json is given. Loopback only; every wait has a deadline; Dovecot
and dnsmasq run under watcher shells that stop them when this process ends, however it ends.
"""

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imap_bench  # noqa: E402  the Dovecot, its certificates, the raw client
from imap_bench import ARCHIVE, ERROR, INBOX, PASSWORD, Dovecot  # noqa: E402

ROOT = imap_bench.ROOT
HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE = 900  # seconds for any one run


def free_port_tcp_udp():
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    sys.exit("bench: no port free for both TCP and UDP")


class Dnsmasq:
    """A private dnsmasq on loopback: no upstream, every name NXDOMAIN, no query log."""

    def __init__(self, base):
        self.port = free_port_tcp_udp()
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.path.exists(binary):
            sys.exit("bench: dnsmasq not found: apt-get install -y --no-install-recommends dnsmasq-base")
        argv = [binary, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--local=/#/", f"--pid-file={base}/dnsmasq.pid",
                f"--log-facility={base}/dnsmasq.log"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        self.proc = imap_bench.watched(argv)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        imap_bench.wait_for(up, 10, "dnsmasq")

    def stop(self):
        imap_bench.stop_watched(self.proc)


def cpu_of(pid):
    """User + system CPU seconds of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_measured(argv, cwd, log_path, marker=None):
    """Runs argv to its end: (status, wall s, CPU s, peak RSS MiB, (seconds, CPU seconds) at
    the first stderr line starting with `marker`, or None). The peak is the child's own
    VmHWM, sampled every 10 ms (a high-water mark: only the last 10 ms can be missed)."""
    t0 = time.monotonic()
    marked = [None]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.PIPE)

        def read_stderr():
            for line in proc.stderr:
                text = line.decode(errors="replace")
                if marker and marked[0] is None and text.startswith(marker):
                    marked[0] = (time.monotonic() - t0, cpu_of(proc.pid))
                log.write(text)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        status, usage, peak_mib = imap_bench.reap_sampling_peak(proc, t0 + DEADLINE, 0.01)
        wall = time.monotonic() - t0
        reader.join(10)
    return status, wall, usage.ru_utime + usage.ru_stime, peak_mib, marked[0]


def store_figures(path):
    """Bytes of the store file, documents in it, and bytes per table or index (dbstat)."""
    size = os.path.getsize(path)
    for extra in ("-wal",):
        if os.path.exists(path + extra):
            size += os.path.getsize(path + extra)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        tables = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    finally:
        db.close()
    return size, documents, tables


def imap_source(name, dovecot, user):
    """A `[[source]]` for `user`'s inbox on `dovecot`, over implicit TLS with the bench CA."""
    return f"""[[source]]
name = "{name}"
kind = "imap"
host = "127.0.0.1"
port = {dovecot.imaps_port}
tls = "implicit"
ca_file = "{dovecot.base}/ca.pem"
user = "{user}"
password = "{PASSWORD}"
inbox = "Lieferscheine/Eingang"
archive = "Lieferscheine/Archiv"
error = "Lieferscheine/Fehler"
schedule = "idle"
"""


def workspace(shared, dns_port, base, source=None, store='path = "eingang.db"'):
    """A workspace with the supplier formats, a `dir` connector taking every document, the
    private DNS server and `source`; `store` is the body of `[store]`."""
    ws = tempfile.mkdtemp(prefix="ws-", dir=base)
    shutil.copytree(os.path.join(shared, "bench", "formats"), os.path.join(ws, "formats"))
    os.makedirs(os.path.join(ws, "erp"))
    text = f"""formats = "formats"
[store]
{store}
[dns]
server = "127.0.0.1:{dns_port}"
[[connector]]
name = "erp"
kind = "dir"
path = "erp"
"""
    if source:
        text += source
    with open(os.path.join(ws, "eingang.toml"), "w") as f:
        f.write(text)
    return ws


class Bench:
    def __init__(self, args):
        self.args = args
        self.base = tempfile.mkdtemp(prefix="eingang-drain-", dir=args.work)
        self.dovecot = None
        self.dns = None
        self.users = 0

    def start(self):
        os.chmod(self.base, 0o755)  # Dovecot's mail user (nobody) reaches its homes below
        os.makedirs(os.path.join(self.base, "dovecot"))
        self.dovecot = Dovecot(os.path.join(self.base, "dovecot"))
        os.makedirs(os.path.join(self.base, "dns"))
        self.dns = Dnsmasq(os.path.join(self.base, "dns"))

    def stop(self):
        for server in (self.dovecot, self.dns):
            if server is not None:
                try:
                    server.stop()
                except Exception as e:  # the other one is stopped all the same
                    print(f"bench: stopping a server: {e}", file=sys.stderr)
        shutil.rmtree(self.base, ignore_errors=True)

    def corpus(self, n):
        out = os.path.join(self.base, f"corpus-{n}")
        subprocess.run([sys.executable, os.path.join(self.args.shared, "bench", "gen_corpus.py"),
                        "--n", str(n), "--seed", "42", "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
        print(f"corpus N={n}: {meta['avg_bytes']:.0f} bytes/message on average, "
              f"{meta['counts']}", flush=True)
        msgs = os.path.join(out, "msgs")
        return msgs, sorted(os.listdir(msgs)), meta

    def mailbox(self, msgs, names):
        """A fresh Dovecot user whose inbox holds the corpus, selected once (indexed)."""
        self.users += 1
        user = f"u{self.users}"
        c = imap_bench.imap(self.dovecot, user)
        for folder in (INBOX, ARCHIVE, ERROR):
            c.create(folder)
        c.logout()
        cur = os.path.join(self.dovecot.base, "home", user, "Maildir", "." + INBOX, "cur")
        for i, name in enumerate(names):
            src = os.path.join(msgs, name)
            size = os.path.getsize(src)
            dst = os.path.join(cur, f"{1700000000 + i}.M{i}P1.bench,S={size}:2,")
            shutil.copyfile(src, dst)
            os.chown(dst, 65534, 65534)
        c = imap_bench.imap(self.dovecot, user)
        typ, data = c.select(INBOX)
        assert typ == "OK" and int(data[0]) == len(names), (typ, data)
        c.logout()
        return user

    def count(self, user, folder):
        return imap_bench.count(self.dovecot, user, folder)

    def sync(self, binary, msgs, names):
        n = len(names)
        user = self.mailbox(msgs, names)
        source = imap_source("lieferscheine", self.dovecot, user)
        ws = workspace(self.args.shared, self.dns.port, self.base, source)
        cpu0 = self.dovecot.cpu_seconds()
        log = os.path.join(ws, "sync.log")
        status, wall, cpu, peak, drained = run_measured(
            [binary, "sync"], ws, log, marker="lieferscheine: imported")
        time.sleep(1)  # let Dovecot reap the session's imap process
        dcpu = self.dovecot.cpu_seconds() - cpu0
        text = open(log).read()
        # 1: some items were rejected (expected: 5 % broken, duplicates by design)
        if os.WEXITSTATUS(status) not in (0, 1) or drained is None:
            sys.exit(f"bench: eingang sync failed: {text[-3000:]}")
        drained, drain_cpu = drained
        left = self.count(user, INBOX)
        archived, failed = self.count(user, ARCHIVE), self.count(user, ERROR)
        assert left == 0 and archived + failed == n, (left, archived, failed)
        size, documents, tables = store_figures(os.path.join(ws, "eingang.db"))
        shutil.rmtree(ws)
        return dict(msgs_s=n / drained, drain_s=drained, wall_s=wall, cpu_s=cpu,
                    drain_cpu_s=drain_cpu,
                    dovecot_cpu_s=dcpu, rss_mib=peak, archived=archived, error=failed,
                    store_bytes=size, documents=documents, tables=tables,
                    after_pass=[line for line in text.splitlines()
                                if line.startswith(("hand-off", "notices"))])

    def raw(self, msgs, names):
        n = len(names)
        user = self.mailbox(msgs, names)
        cpu0 = self.dovecot.cpu_seconds()
        log = os.path.join(self.base, "raw.log")
        argv = [sys.executable, os.path.join(HERE, "imap_bench.py"), "--raw-drain",
                str(self.dovecot.imaps_port), user, os.path.join(self.dovecot.base, "ca.pem")]
        status, wall, cpu, peak, _ = run_measured(argv, ROOT, log)
        time.sleep(1)
        dcpu = self.dovecot.cpu_seconds() - cpu0
        output = open(log).read()
        if status != 0 or output.strip() != str(n):
            sys.exit(f"bench: raw client failed: {output}")
        return dict(msgs_s=n / wall, wall_s=wall, cpu_s=cpu, dovecot_cpu_s=dcpu, rss_mib=peak)

    def import_(self, binary, msgs, n):
        ws = workspace(self.args.shared, self.dns.port, self.base)
        log = os.path.join(ws, "import.log")
        status, wall, cpu, peak, _ = run_measured([binary, "import", msgs], ws, log)
        text = open(log).read()
        if os.WEXITSTATUS(status) not in (0, 1) or "imported" not in text:
            sys.exit(f"bench: eingang import failed: {text[-3000:]}")
        summary = [line for line in text.splitlines() if line.startswith("imported")][-1]
        size, documents, tables = store_figures(os.path.join(ws, "eingang.db"))
        shutil.rmtree(ws)
        return dict(msgs_s=n / wall, wall_s=wall, cpu_s=cpu, rss_mib=peak, summary=summary,
                    store_bytes=size, documents=documents, tables=tables)

    def python(self, policy, msgs, n):
        ws = tempfile.mkdtemp(prefix="py-", dir=self.base)
        log = os.path.join(ws, "py.log")
        argv = [sys.executable, os.path.join(HERE, "stdlib_import.py"), "--policy", policy,
                "--suppliers", os.path.join(self.args.shared, "bench", "suppliers.txt"),
                "--store", os.path.join(ws, "py.db"), msgs]
        status, wall, cpu, peak, _ = run_measured(argv, ws, log)
        text = open(log).read()
        if status != 0:
            sys.exit(f"bench: the Python reference failed: {text[-3000:]}")
        size, documents, _ = store_figures(os.path.join(ws, "py.db"))
        shutil.rmtree(ws)
        return dict(msgs_s=n / wall, wall_s=wall, cpu_s=cpu, rss_mib=peak, summary=text.strip(),
                    store_bytes=size, documents=documents)


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def originals(tables):
    return tables.get("item_original", 0) + tables.get("outbox_original", 0)


def report(n, results, labels, policies):
    raw = results["raw"]
    print(f"\n== N = {n}: medians of {len(raw)} runs ==")
    for label in labels:
        s, i = results[f"sync:{label}"], results[f"import:{label}"]
        docs = med(s, "documents")
        bpd = med(s, "store_bytes") / max(docs, 1)
        bpd_no_orig = statistics.median(
            (r["store_bytes"] - originals(r["tables"])) / max(r["documents"], 1) for r in s)
        print(f"[{label}] eingang sync  : {med(s, 'msgs_s'):6.0f} msg/s "
              f"({100 * med(s, 'msgs_s') / med(raw, 'msgs_s'):3.0f} % of the raw ceiling); "
              f"drain {med(s, 'drain_s'):.2f} s, process {med(s, 'wall_s'):.2f} s; "
              f"CPU eingang {med(s, 'drain_cpu_s'):.2f} s in the pass "
              f"({1000 * med(s, 'drain_cpu_s') / n:.3f} ms/msg), {med(s, 'cpu_s'):.2f} s in all, "
              f"Dovecot {med(s, 'dovecot_cpu_s'):.2f} s; peak RSS {med(s, 'rss_mib'):.1f} MiB; "
              f"archived {s[0]['archived']}, error {s[0]['error']}")
        print(f"[{label}] store         : {bpd:,.0f} bytes/document ({docs} documents), "
              f"{bpd_no_orig:,.0f} without the kept originals")
        print(f"[{label}] after the pass: {'; '.join(s[0]['after_pass']) or '-'}")
        ratios = ", ".join(
            f"{med(i, 'msgs_s') / med(results[f'python:{p}'], 'msgs_s'):.1f}x Python {p}"
            for p in policies)
        print(f"[{label}] eingang import: {med(i, 'msgs_s'):6.0f} msg/s ({ratios}); "
              f"CPU {med(i, 'cpu_s'):.2f} s ({1000 * med(i, 'cpu_s') / n:.3f} ms/msg); "
              f"peak RSS {med(i, 'rss_mib'):.1f} MiB; "
              f"{med(i, 'store_bytes') / max(med(i, 'documents'), 1):,.0f} bytes/document; "
              f"{i[0]['summary']}")
    print(f"raw ceiling         : {med(raw, 'msgs_s'):6.0f} msg/s; CPU client "
          f"{med(raw, 'cpu_s'):.2f} s, Dovecot {med(raw, 'dovecot_cpu_s'):.2f} s")
    for p in policies:
        r = results[f"python:{p}"]
        print(f"Python {p:9}: {med(r, 'msgs_s'):6.0f} msg/s; CPU {med(r, 'cpu_s'):.2f} s; "
              f"peak RSS {med(r, 'rss_mib'):.1f} MiB; "
              f"{med(r, 'store_bytes') / max(med(r, 'documents'), 1):,.0f} bytes/document")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, nargs="+", default=[2000], help="corpus sizes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--binary", action="append", required=True,
                    help="PATH or LABEL=PATH; several are run interleaved")
    ap.add_argument("--python", nargs="+", default=["default", "compat32"],
                    choices=["default", "compat32"], help="policies of the Python reference")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--work", default=None, help="where corpora and stores go (default: TMPDIR)")
    ap.add_argument("--json", help="write every run here")
    args = ap.parse_args()
    binaries = []
    for spec in args.binary:
        label, _, path = spec.rpartition("=")
        binaries.append((label or "eingang", os.path.abspath(path)))
    labels = [label for label, _ in binaries]
    bench = Bench(args)
    everything = {}
    try:
        bench.start()
        for n in args.n:
            msgs, names, _ = bench.corpus(n)
            results = {}
            for r in range(args.repeat):
                for label, path in binaries:
                    results.setdefault(f"sync:{label}", []).append(bench.sync(path, msgs, names))
                    results.setdefault(f"import:{label}", []).append(
                        bench.import_(path, msgs, n))
                results.setdefault("raw", []).append(bench.raw(msgs, names))
                for p in args.python:
                    results.setdefault(f"python:{p}", []).append(bench.python(p, msgs, n))
                print(f"  run {r + 1}: " + ", ".join(
                    f"{k} {v[-1]['msgs_s']:.0f}" for k, v in results.items()), flush=True)
            report(n, results, labels, args.python)
            everything[n] = results
            shutil.rmtree(os.path.dirname(msgs), ignore_errors=True)
    finally:
        bench.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
