#!/usr/bin/env python3
"""End-to-end IMAP benchmark for eingang (issue 3), driven by bench/imap.sh.

Starts a private Dovecot on free loopback ports (own config, temp maildir, a test CA made with
the openssl CLI), then:

1. loads N mixed messages (supplier CSV, cXML ship notices and orders, a few broken) into an
   inbox and drains it with `eingang sync` over implicit TLS: messages/s, CPU seconds of eingang
   and of Dovecot, eingang's peak RSS;
2. loads the same N into another user's inbox and drains it with a raw client that only does
   `UID FETCH 1:* BODY.PEEK[]` + `UID MOVE 1:*` over TLS (the ceiling): the same figures;
3. runs `eingang run` (schedule idle) and appends 100 messages one at a time: latency from the
   APPEND until the message is in the archive folder, p50 and p99.

Only loopback traffic; every wait has a deadline.
"""

import argparse
import imaplib
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "bench-secret"
INBOX, ARCHIVE, ERROR = "Lieferscheine.Eingang", "Lieferscheine.Archiv", "Lieferscheine.Fehler"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, seconds, what):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"bench: timed out waiting for {what}")


# Runs "$@" in the background and sends it signal $1 once stdin reaches its end (this process
# gone); exits when the server does. The reader gets stdin as fd 3: an asynchronous list in a
# non-interactive shell otherwise reads /dev/null. As in tests/support/dns.rs.
WATCHER = """exec 3<&0
sig=$1
shift
"$@" &
pid=$!
( read -r _ <&3; kill -s "$sig" "$pid" 2>/dev/null ) &
wait "$pid"
"""


def watched(argv, stop_signal="TERM"):
    """Starts a server under the watcher shell; `stop_watched` ends it with `stop_signal`."""
    return subprocess.Popen(["sh", "-c", WATCHER, "watcher", stop_signal] + argv,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop_watched(proc):
    proc.stdin.close()  # the watcher kills the server; its `wait` returns and it exits
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Dovecot:
    def __init__(self, base):
        self.base = base
        self.imap_port, self.imaps_port = free_port(), free_port()
        os.chmod(base, 0o755)
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        shutil.chown(os.path.join(base, "home"), "nobody", "nogroup")
        self.make_certificates()
        with open(os.path.join(base, "dovecot.conf"), "w") as f:
            f.write(f"""protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = yes
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={base}/home/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = .
}}
mail_max_userip_connections = 100
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""")
        # Under a watcher shell that stops Dovecot once this process is gone, however it ends
        # (its stdin, a pipe from here, reaches its end): no server outlives the benchmark.
        self.proc = watched([shutil.which("dovecot") or "/usr/sbin/dovecot", "-F", "-c",
                             os.path.join(base, "dovecot.conf")])

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.imaps_port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, 20, "dovecot")

    def make_certificates(self):
        b = self.base
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=eingang bench CA", "-keyout", f"{b}/ca.key", "-out", f"{b}/ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", f"{b}/key.pem", "-out", f"{b}/leaf.csr")
        with open(f"{b}/leaf.ext", "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                    "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        run("openssl", "x509", "-req", "-in", f"{b}/leaf.csr", "-CA", f"{b}/ca.pem",
            "-CAkey", f"{b}/ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", f"{b}/leaf.ext", "-out", f"{b}/cert.pem")

    def cpu_seconds(self):
        """CPU of the master, its reaped children (the per-session imap processes) and its
        live children, from /proc."""
        with open(os.path.join(self.base, "run", "master.pid")) as f:
            return cpu_seconds_of_tree(int(f.read().split()[0]))

    def stop(self):
        stop_watched(self.proc)


def cpu_seconds_of_tree(master):
    """CPU seconds of a server's master process, of its children that it reaped and of its
    live children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        if int(pid) == master:
            total += utime + stime + cutime + cstime
        elif ppid == master:
            total += utime + stime
    return total / tick


def measured(argv, cwd, log_path):
    """Runs argv to its end; returns (exit status, wall s, CPU s, peak RSS MiB). The peak is
    the child's own VmHWM, sampled while it runs: the rusage of a child forked from this
    Python would count Python's pages too."""
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=log)
        status, usage, peak_mib = reap_sampling_peak(proc, t0 + 600, 0.002)
    wall = time.monotonic() - t0
    return status, wall, usage.ru_utime + usage.ru_stime, peak_mib


def reap_sampling_peak(proc, deadline, every):
    """Waits for proc (killed after `deadline`, a monotonic time), sampling its own VmHWM
    every `every` seconds; returns (exit status, rusage, peak RSS MiB). Reaped here, not by
    Popen."""
    peak = 0
    while True:
        peak = max(peak, peak_rss_mib(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(every)
    proc.returncode = status
    return status, usage, peak


def peak_rss_mib(pid):
    """The process's own peak RSS so far (VmHWM) in MiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0


def imap(dovecot, user):
    c = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    c.login(user, PASSWORD)
    return c


def acme_csv(number, rows):
    lines = ["Lieferschein-Nr.;Lieferdatum;Ihre Bestellung;Pos.;Artikel-Nr.;Ihre Art.-Nr.;EAN;"
             "Bezeichnung;Menge;ME;Einzelpreis;Gesamt netto"]
    for r in range(1, rows + 1):
        lines.append(f"{number};20.11.2026;PO-2026-{r:04};{r};A-{100 + r};;;"
                     f"Schraube M{r} verzinkt, 100 Stück;1.2{r}0,5;Stk;0,06;7,5{r}")
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


def messages(n, tag):
    """n mixed messages: 45 % Acme CSV, 30 % cXML ship notices, 23 % cXML orders, 2 % broken."""
    ship = open(os.path.join(ROOT, "fixtures/standard/cxml/ship-notice.xml"), encoding="utf-8").read()
    order = open(os.path.join(ROOT, "fixtures/standard/cxml/order-request.xml"), encoding="utf-8").read()
    out = []
    for i in range(n):
        m = EmailMessage()
        m["Date"] = "Fri, 20 Nov 2026 10:00:00 +0100"
        m["Message-ID"] = make_msgid(f"bench{i}", "example.com")
        m["To"] = "lager@example.com"
        m.set_content("Anbei der Lieferschein.\n")
        kind = i % 100
        if kind < 45:
            number = f"LS-{tag}-{i:05}"
            m["From"] = "Acme <lieferschein@acme-grosshandel.de>"
            m["Subject"] = f"Lieferschein {number}"
            m.add_attachment(acme_csv(number, 1 + i % 3), maintype="text", subtype="csv",
                             filename=f"lieferschein-{i:05}.csv")
        elif kind < 75:
            m["From"] = "ASN <asn@lieferant.example>"
            m["Subject"] = f"Ship notice {i}"
            body = (ship.replace("asn-2026-5531@lieferant.example", f"asn-{tag}-{i}@lieferant.example")
                        .replace('shipmentID="LS-2026-5531"', f'shipmentID="ASN-{tag}-{i:05}"'))
            m.add_attachment(body.encode(), maintype="application", subtype="xml",
                             filename=f"asn-{i}.xml")
        elif kind < 98:
            m["From"] = "Einkauf <einkauf@einkauf.example.de>"
            m["Subject"] = f"Order {i}"
            body = (order.replace("20261120.0815.4711@einkauf.example.de", f"po-{tag}-{i}@einkauf.example.de")
                         .replace('orderID="PO-2026-1001"', f'orderID="PO-{tag}-{i:05}"'))
            m.add_attachment(body.encode(), maintype="application", subtype="xml",
                             filename=f"order-{i}.xml")
        else:
            m["From"] = "ASN <asn@lieferant.example>"
            m["Subject"] = f"Broken {i}"
            m.add_attachment(b"<cXML><Request><ShipNoticeRequest><oops></cXML>",
                             maintype="application", subtype="xml", filename=f"broken-{i}.xml")
        out.append(m.as_bytes().replace(b"\n", b"\r\n"))
    return out


def load(dovecot, user, batch):
    c = imap(dovecot, user)
    for folder in (INBOX, ARCHIVE, ERROR):
        c.create(folder)
    for m in batch:
        typ, _ = c.append(INBOX, None, None, m)
        assert typ == "OK"
    c.logout()


def count(dovecot, user, folder):
    c = imap(dovecot, user)
    typ, data = c.status(folder, "(MESSAGES)")
    c.logout()
    return int(data[0].decode().rsplit("MESSAGES", 1)[1].strip(" )"))


def nxdomain_server():
    """A DNS server on loopback answering every query NXDOMAIN, for eingang's sender checks:
    the benchmark measures eingang, not the machine's resolver. Returns "IP:PORT"."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve():
        while True:
            query, peer = sock.recvfrom(1500)
            end = 12
            while end < len(query) and query[end] != 0:
                end += 1 + query[end]
            end += 5  # the root label, QTYPE, QCLASS
            if end > len(query):
                continue
            reply = bytearray(query[:end])
            reply[2] = 0x80 | (reply[2] & 0x01)  # QR, keep RD
            reply[3] = 0x80 | 3  # RA, NXDOMAIN
            reply[4:12] = b"\x00\x01" + b"\x00" * 6
            sock.sendto(bytes(reply), peer)

    threading.Thread(target=serve, daemon=True).start()
    return "%s:%d" % sock.getsockname()


DNS_SERVER = None


def workspace(dovecot, user, schedule):
    global DNS_SERVER
    if DNS_SERVER is None:
        DNS_SERVER = nxdomain_server()
    ws = tempfile.mkdtemp(prefix="eingang-bench-")
    os.makedirs(os.path.join(ws, "formats"))
    shutil.copy(os.path.join(ROOT, "formats/acme.toml"), os.path.join(ws, "formats"))
    shutil.copy(os.path.join(dovecot.base, "ca.pem"), ws)
    with open(os.path.join(ws, "eingang.toml"), "w") as f:
        f.write(f"""formats = "formats"
[store]
path = "eingang.db"
[dns]
server = "{DNS_SERVER}"
[[source]]
name = "lieferscheine"
kind = "imap"
host = "127.0.0.1"
port = {dovecot.imaps_port}
tls = "implicit"
ca_file = "ca.pem"
user = "{user}"
password = "{PASSWORD}"
inbox = "Lieferscheine/Eingang"
archive = "Lieferscheine/Archiv"
error = "Lieferscheine/Fehler"
schedule = "{schedule}"
""")
    return ws


def eingang_sync(binary, dovecot, user, n):
    ws = workspace(dovecot, user, "idle")
    cpu0 = dovecot.cpu_seconds()
    status, wall, cpu, peak = measured([binary, "sync"], ws, os.path.join(ws, "sync.log"))
    time.sleep(1)  # let Dovecot reap the session's imap process
    dcpu = dovecot.cpu_seconds() - cpu0
    if status != 0:
        sys.exit(f"bench: eingang sync failed: {open(os.path.join(ws, 'sync.log')).read()}")
    left = count(dovecot, user, INBOX)
    archived, failed = count(dovecot, user, ARCHIVE), count(dovecot, user, ERROR)
    assert left == 0 and archived + failed == n, (left, archived, failed)
    print(f"eingang sync : {n} messages in {wall:.2f} s = {n / wall:.0f} messages/s; "
          f"CPU eingang {cpu:.2f} s, Dovecot {dcpu:.2f} s; peak RSS {peak:.1f} MiB; "
          f"archived {archived}, error {failed}")
    shutil.rmtree(ws)
    return n / wall


def raw_drain(port, user, ca, folder_from, folder_to):
    """The ceiling client, run as its own process: one UID FETCH of every body, one UID MOVE."""
    ctx = ssl.create_default_context(cafile=ca)
    c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
    c.login(user, PASSWORD)
    c.select(folder_from)
    typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
    fetched = sum(1 for part in data if isinstance(part, tuple))
    typ, _ = c.uid("MOVE", "1:*", folder_to)
    assert typ == "OK"
    c.logout()
    print(fetched)


def raw_ceiling(dovecot, user, n):
    cpu0 = dovecot.cpu_seconds()
    log = os.path.join(dovecot.base, "raw.log")
    argv = [sys.executable, os.path.abspath(__file__), "--raw-drain", str(dovecot.imaps_port), user,
            os.path.join(dovecot.base, "ca.pem")]
    status, wall, cpu, peak = measured(argv, ROOT, log)
    time.sleep(1)
    dcpu = dovecot.cpu_seconds() - cpu0
    output = open(log).read()
    if status != 0 or output.strip() != str(n):
        sys.exit(f"bench: raw client failed: {output}")
    print(f"raw ceiling  : {n} messages in {wall:.2f} s = {n / wall:.0f} messages/s; "
          f"CPU client {cpu:.2f} s, Dovecot {dcpu:.2f} s; peak RSS {peak:.1f} MiB "
          f"(Python imaplib, interpreter included)")
    return n / wall


def idle_latency(binary, dovecot, user, rounds):
    ws = workspace(dovecot, user, "idle")
    load(dovecot, user, [])
    daemon = subprocess.Popen([binary, "run"], cwd=ws, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)  # connected and in IDLE
        appender = imap(dovecot, user)
        watcher = imap(dovecot, user)
        latencies = []
        for i, m in enumerate(messages(rounds, "IDLE")):
            t0 = time.monotonic()
            typ, _ = appender.append(INBOX, None, None, m)
            assert typ == "OK"
            end = t0 + 30
            while True:
                typ, data = watcher.status(ARCHIVE, "(MESSAGES)")
                done = int(data[0].decode().rsplit("MESSAGES", 1)[1].strip(" )"))
                typ, data = watcher.status(ERROR, "(MESSAGES)")
                done += int(data[0].decode().rsplit("MESSAGES", 1)[1].strip(" )"))
                if done >= i + 1:
                    break
                if time.monotonic() > end:
                    sys.exit(f"bench: message {i} not handled within 30 s")
                time.sleep(0.002)
            latencies.append(time.monotonic() - t0)
        appender.logout()
        watcher.logout()
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"IDLE latency : {rounds} messages, append -> archived p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")
    shutil.rmtree(ws)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--raw-drain":
        raw_drain(int(sys.argv[2]), sys.argv[3], sys.argv[4], INBOX, ARCHIVE)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--idle-rounds", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3,
                    help="drains of each kind; the median is reported (the machine is shared)")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    base = tempfile.mkdtemp(prefix="eingang-bench-dovecot-")
    dovecot = Dovecot(base)
    try:
        batch = messages(args.n, "S")
        size = sum(len(m) for m in batch)
        print(f"load         : {args.n} messages, {size / args.n:.0f} bytes on average")
        ours, ceiling = [], []
        for r in range(args.repeat):
            load(dovecot, f"sync{r}", batch)
            ours.append(eingang_sync(args.binary, dovecot, f"sync{r}", args.n))
            load(dovecot, f"raw{r}", batch)
            ceiling.append(raw_ceiling(dovecot, f"raw{r}", args.n))
        mine, best = statistics.median(ours), statistics.median(ceiling)
        print(f"median       : eingang {mine:.0f} messages/s, raw ceiling {best:.0f} messages/s, "
              f"{100 * mine / best:.0f} % of the ceiling")
        idle_latency(args.binary, dovecot, "idle", args.idle_rounds)
    finally:
        dovecot.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
