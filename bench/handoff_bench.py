"""The hand-off benchmark behind bench/handoff.sh: see there."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

NOTE = """<?xml version="1.0" encoding="UTF-8"?>
<DISPATCHNOTIFICATION xmlns="http://www.opentrans.org/XMLSchema/2.1" xmlns:bmecat="http://www.bmecat.org/bmecat/2005" version="2.1">
  <DISPATCHNOTIFICATION_HEADER><DISPATCHNOTIFICATION_INFO>
    <DISPATCHNOTIFICATION_ID>{number}</DISPATCHNOTIFICATION_ID>
    <DISPATCHNOTIFICATION_DATE>2026-11-20</DISPATCHNOTIFICATION_DATE>
  </DISPATCHNOTIFICATION_INFO></DISPATCHNOTIFICATION_HEADER>
  <DISPATCHNOTIFICATION_ITEM_LIST><DISPATCHNOTIFICATION_ITEM>
    <LINE_ITEM_ID>1</LINE_ITEM_ID>
    <PRODUCT_ID><bmecat:SUPPLIER_PID>A-100</bmecat:SUPPLIER_PID></PRODUCT_ID>
    <QUANTITY>3</QUANTITY><bmecat:ORDER_UNIT>C62</bmecat:ORDER_UNIT>
  </DISPATCHNOTIFICATION_ITEM></DISPATCHNOTIFICATION_ITEM_LIST>
</DISPATCHNOTIFICATION>
"""


class State:
    lock = threading.Lock()
    seen = set()
    requests = 0
    bad = 0
    verify = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; without this, Nagle and delayed ACKs add 40 ms
    # to every answer.
    disable_nagle_algorithm = True
    hook = Webhook(SECRET)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        ok = True
        if State.verify:
            try:
                self.hook.verify(body, {k.lower(): v for k, v in self.headers.items()})
            except Exception:
                ok = False
        with State.lock:
            State.requests += 1
            if ok:
                State.seen.add(self.headers.get("webhook-id"))
            else:
                State.bad += 1
        answer = b"ok" if ok else b"bad signature"
        self.send_response(200 if ok else 401)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    State.verify = not args.no_verify
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    binary = os.path.abspath(args.binary)
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "notes"))
        for i in range(args.n):
            with open(os.path.join(d, "notes", f"LS-{i:06}.xml"), "w", encoding="utf-8") as f:
                f.write(NOTE.format(number=f"LS-{i:06}"))
        with open(os.path.join(d, "eingang.toml"), "w", encoding="utf-8") as f:
            f.write(
                "[store]\npath = \"eingang.db\"\n"
                "[[connector]]\nname = \"erp\"\nkind = \"webhook\"\n"
                f"url = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\n"
                "[connector.defaults]\nwarehouse = \"HAUPT\"\n"
            )
        run = lambda *a: subprocess.run([binary, *a], cwd=d, capture_output=True, text=True)
        started = time.monotonic()
        out = run("import", "notes")
        imported = time.monotonic() - started
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        started = time.monotonic()
        rounds = 0
        while True:
            rounds += 1
            out = run("sync")
            status = json.loads(run("status", "--json").stdout)
            pending = status["connectors"][0]["pending"]
            if pending == 0 or rounds > 50:
                break
        elapsed = time.monotonic() - started
    server.shutdown()
    delivered = len(State.seen)
    print(f"imported {args.n} notes in {imported:.2f} s")
    print(
        f"handed off {delivered} of {args.n} in {elapsed:.2f} s over {rounds} sync run(s): "
        f"{delivered / elapsed:.0f} deliveries/s "
        f"({'signatures verified by standardwebhooks' if State.verify else 'not verified'}; "
        f"{State.requests} requests, {State.bad} refused)"
    )
    return 0 if delivered == args.n and State.bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
