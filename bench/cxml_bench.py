#!/usr/bin/env python3
"""cXML receiver benchmark for eingang (issue 12), driven by bench/cxml.sh.

Starts `eingang run` with `[cxml]` on a free loopback port, TLS on a test CA made with the
openssl CLI, one partner; then:

1. C client threads, each on its own keep-alive HTTPS connection, POST N distinct
   OrderRequests (10 lines each) as fast as they are answered: orders/s over the whole run,
   latency p50 and p99 of one request (send to answer read);
2. the same N again (every payloadID repeated): the answers rebuilt from the ledger;
3. one client, one order at a time (100 orders): the latency of a lone order, which pays a
   full commit (fsync) of its own.

Every answer is checked (HTTP 200, cXML 200) and the store must hold exactly N orders.
Only loopback traffic; every wait has a deadline.
"""

import argparse
import http.client
import os
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SECRET = "bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificates(base):
    def run(*args):
        subprocess.run(args, check=True, cwd=base, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=eingang bench CA", "-keyout", "ca-key.pem", "-out", "ca.pem")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "leaf-key.pem", "-out", "leaf.csr")
    with open(os.path.join(base, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "leaf.pem")


def order(n, lines=10):
    items = "".join(
        f'<ItemOut quantity="{i + 1}" lineNumber="{i + 1}"><ItemID><SupplierPartID>ART-{i:04}'
        f'</SupplierPartID></ItemID><ItemDetail><UnitPrice><Money currency="EUR">{i + 1}.50'
        f'</Money></UnitPrice><Description xml:lang="de">Artikel {i} für Lager Süd</Description>'
        f'<UnitOfMeasure>EA</UnitOfMeasure></ItemDetail></ItemOut>'
        for i in range(lines)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.063/cXML.dtd">
<cXML payloadID="bench-{n}@buyer.example" timestamp="2026-12-01T09:00:00+01:00">
<Header><From><Credential domain="NetworkID"><Identity>AN0100</Identity></Credential></From>
<To><Credential domain="NetworkID"><Identity>LIEFERANT</Identity></Credential></To>
<Sender><Credential domain="NetworkID"><Identity>AN0100</Identity><SharedSecret>{SECRET}</SharedSecret>
</Credential><UserAgent>bench</UserAgent></Sender></Header>
<Request><OrderRequest><OrderRequestHeader orderID="PO-{n}" orderDate="2026-12-01" type="new">
<Total><Money currency="EUR">100.00</Money></Total></OrderRequestHeader>{items}</OrderRequest></Request>
</cXML>
""".encode()


def post_all(port, context, bodies, clients):
    """POSTs every body once, `clients` connections at a time; returns the latencies (s)."""
    latencies, failures, lock = [], [], threading.Lock()
    queue = list(enumerate(bodies))

    def worker():
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                _, body = queue.pop()
            started = time.perf_counter()
            try:
                conn.request("POST", "/cxml", body, {"Content-Type": "text/xml"})
                answer = conn.getresponse()
                text = answer.read().decode()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPSConnection("localhost", port, context=context,
                                                   timeout=60)
                with lock:
                    queue.append((None, body))
                continue
            took = time.perf_counter() - started
            ok = answer.status == 200 and 'code="200"' in text
            with lock:
                latencies.append(took)
                if not ok:
                    failures.append(text[:300])
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if failures:
        sys.exit(f"bench: {len(failures)} requests failed, e.g. {failures[0]}")
    return latencies


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(what, n, seconds, latencies):
    print(f"{what}: {n} orders in {seconds:.2f} s = {n / seconds:.0f} orders/s; "
          f"latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.1f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--binary", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        make_certificates(base)
        port = free_port()
        for d in ("in", "archiv", "fehler", "formats"):
            os.makedirs(os.path.join(base, d))
        with open(os.path.join(base, "eingang.toml"), "w") as f:
            f.write(f"""formats = "formats"
[store]
path = "eingang.db"
[[source]]
name = "drop"
kind = "dir"
path = "in"
archive = "archiv"
error = "fehler"
[cxml]
listen = "127.0.0.1:{port}"
tls_cert = "leaf.pem"
tls_key = "leaf-key.pem"
[[cxml.partner]]
name = "bench"
domain = "NetworkID"
identity = "AN0100"
shared_secret = "{SECRET}"
""")
        log = open(os.path.join(base, "run.log"), "w")
        daemon = subprocess.Popen([os.path.abspath(args.binary), "run"], cwd=base,
                                  stdout=subprocess.DEVNULL, stderr=log)
        try:
            end = time.monotonic() + 20
            while "cxml receiver listening" not in open(os.path.join(base, "run.log")).read():
                if time.monotonic() > end or daemon.poll() is not None:
                    sys.exit("bench: the receiver did not start:\n"
                             + open(os.path.join(base, "run.log")).read())
                time.sleep(0.05)
            context = ssl.create_default_context(cafile=os.path.join(base, "ca.pem"))
            bodies = [order(n) for n in range(args.n)]
            started = time.perf_counter()
            latencies = post_all(port, context, bodies, args.clients)
            report(f"new orders, {args.clients} connections", args.n,
                   time.perf_counter() - started, latencies)
            started = time.perf_counter()
            latencies = post_all(port, context, bodies, args.clients)
            report(f"repeated payloadIDs, {args.clients} connections", args.n,
                   time.perf_counter() - started, latencies)
            lone = [order(args.n + n) for n in range(100)]
            started = time.perf_counter()
            latencies = post_all(port, context, lone, 1)
            report("one at a time, 1 connection", len(lone), time.perf_counter() - started,
                   latencies)
            db = sqlite3.connect(os.path.join(base, "eingang.db"))
            stored = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            if stored != args.n + len(lone):
                sys.exit(f"bench: {stored} documents stored, expected {args.n + len(lone)}")
            print(f"stored: {stored} orders, each once")
        finally:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()


if __name__ == "__main__":
    main()
