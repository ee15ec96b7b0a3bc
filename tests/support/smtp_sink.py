"""SMTP server for eingang's notice tests: aiosmtpd on 127.0.0.1 with STARTTLS (or implicit
TLS, or none), optional AUTH, and recipients refused on request. Every message it accepts is
written to --out as <n>.eml (the bytes as received) and then <n>.json (the envelope), so a
test that sees the .json file can read both. Started and killed by tests/support/smtp.rs."""

import argparse
import itertools
import json
import os
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--tls", choices=["starttls", "implicit", "none"], default="starttls")
parser.add_argument("--user")
parser.add_argument("--password")
parser.add_argument("--refuse", help="refuse recipients containing this text (550)")
args = parser.parse_args()

counter = itertools.count(1)
lock = threading.Lock()


class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if args.refuse and args.refuse in address:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with lock:
            n = next(counter)
        base = os.path.join(args.out, "%05d" % n)
        raw = envelope.original_content or envelope.content
        with open(base + ".eml.tmp", "wb") as f:
            f.write(raw)
        os.replace(base + ".eml.tmp", base + ".eml")
        record = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}
        with open(base + ".json.tmp", "w") as f:
            json.dump(record, f)
        os.replace(base + ".json.tmp", base + ".json")
        return "250 OK queued as %d" % n


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == args.user
        and auth_data.password.decode() == args.password
    )
    return AuthResult(success=ok, handled=False)


context = None
if args.tls != "none":
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)

options = dict(hostname="127.0.0.1", port=args.port, server_hostname="sink.test")
if args.tls == "starttls":
    options.update(tls_context=context, require_starttls=True)
elif args.tls == "implicit":
    options.update(ssl_context=context)
if args.user:
    # aiosmtpd 1.4 counts only STARTTLS as TLS for AUTH; implicit TLS is TLS from the start.
    options.update(authenticator=authenticator, auth_required=True,
                   auth_require_tls=args.tls != "implicit")

controller = Controller(Sink(), **options)
controller.start()
print("ready", flush=True)
threading.Event().wait()
