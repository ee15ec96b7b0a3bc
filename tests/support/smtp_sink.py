"""SMTP server for eingang's notice tests: aiosmtpd on 127.0.0.1 with STARTTLS (or implicit
TLS, or none), optional AUTH, and recipients refused on request. Every message it accepts is
written to --out as <n>.eml (the bytes as received) and then <n>.json (the envelope), so a
test that sees the .json file can read both. Started and killed by tests/support/smtp.rs.

With --oauth-introspect URL it takes AUTH XOAUTH2 and OAUTHBEARER (RFC 7628) only, checking
each bearer token at that RFC 7662 introspection endpoint (the tests' identity provider) and
that it belongs to the SASL user; a refused token gets the JSON error challenge first, then
535, as Gmail does. The authentications are counted in --out/auth.log (one line each)."""

import argparse
import itertools
import json
import os
import ssl
import threading
import urllib.parse
import urllib.request

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
parser.add_argument("--oauth-introspect", help="take XOAUTH2/OAUTHBEARER, checked at this URL")
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


def introspect(token):
    body = urllib.parse.urlencode({"token": token}).encode()
    with urllib.request.urlopen(args.oauth_introspect, data=body, timeout=10) as answer:
        return json.load(answer)


def log_auth(line):
    with lock:
        with open(os.path.join(args.out, "auth.log"), "a") as f:
            f.write(line + "\n")


class OAuthSink(Sink):
    """XOAUTH2 and OAUTHBEARER against the introspection endpoint."""

    async def check_bearer(self, server, mechanism, args_, parse):
        if len(args_) > 1:
            blob = __import__("base64").b64decode(args_[1])
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        user, token = parse(blob.decode(errors="replace"))
        found = introspect(token) if token else {"active": False}
        if found.get("active") and found.get("username") == user:
            log_auth("%s ok %s" % (mechanism, user))
            return AuthResult(success=True, auth_data=user)
        log_auth("%s refused %s" % (mechanism, user))
        if mechanism == "XOAUTH2":
            error = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        else:
            error = {"status": "invalid_token", "scope": "smtp"}
        # The client's answer to the challenge (empty, or %x01) is read there.
        await server.challenge_auth(json.dumps(error))
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, server, args_):
        def parse(text):
            fields = dict(f.split("=", 1) for f in text.split("\x01") if "=" in f)
            return fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        return await self.check_bearer(server, "XOAUTH2", args_, parse)

    async def auth_OAUTHBEARER(self, server, args_):
        def parse(text):
            head, _, rest = text.partition("\x01")
            user = ""
            for part in head.split(","):
                if part.startswith("a="):
                    user = part[2:].replace("=2C", ",").replace("=3D", "=")
            fields = dict(f.split("=", 1) for f in rest.split("\x01") if "=" in f)
            return user, fields.get("auth", "").removeprefix("Bearer ")
        return await self.check_bearer(server, "OAUTHBEARER", args_, parse)


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
if args.user or args.oauth_introspect:
    # aiosmtpd 1.4 counts only STARTTLS as TLS for AUTH; implicit TLS is TLS from the start.
    options.update(authenticator=authenticator, auth_required=True,
                   auth_require_tls=args.tls != "implicit")
if args.oauth_introspect:
    options.update(auth_exclude_mechanism=["PLAIN", "LOGIN"])
    # Commands stay limited to 512 octets (RFC 5321), so a long token cannot ride on the AUTH
    # line; the line after the 334 may be as long as Microsoft's tokens get.
    import aiosmtpd.smtp
    aiosmtpd.smtp.SMTP.line_length_limit = 16384

controller = Controller(OAuthSink() if args.oauth_introspect else Sink(), **options)
controller.start()
print("ready", flush=True)
threading.Event().wait()
