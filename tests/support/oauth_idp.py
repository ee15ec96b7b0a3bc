"""A small OAuth2 identity provider for eingang's OAuth2 tests, on 127.0.0.1 (stdlib only).

Endpoints the client under test uses:
  POST /token       client_credentials, refresh_token (rotating; a rotated token sent again is
                    reuse: its whole family is revoked), and the device_code grant (RFC 8628:
                    authorization_pending, slow_down, access_denied, expired_token)
  POST /device      device authorization (RFC 8628 section 3.1)
  POST /introspect  RFC 7662 style, for Dovecot's oauth2 passdb (introspection_mode = post)
The test drives it through:
  POST /admin/client  register a client: secret, user, expected scope, token lifetime, delay,
                      device interval / expiry / slow_down, long tokens, a 503 switch ("down")
  POST /admin/seed    a refresh token for (client, user, scope)
  POST /admin/revoke  revoke every refresh token of a client
  POST /admin/expire  make every access token of a client inactive
  POST /activate      the person at the browser: approve or deny a user code
  GET  /admin/stats?client_id=X   counters and every token issued (for the leak tests)
Each test registers its own client id, so tests share one server. Prints "ready <port>".
"""

import json
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
clients = {}  # client_id -> settings
refresh_tokens = {}  # token -> {client, user, scope, family, state}
access_tokens = {}  # token -> {client, user, exp, active}
devices = {}  # device_code -> {...}
stats = {}  # client_id -> counters


def counters(client_id):
    return stats.setdefault(
        client_id,
        {
            "client_credentials": 0,
            "refresh": 0,
            "refresh_refused": 0,
            "reuse": 0,
            "device_started": [],
            "device_polls": [],
            "device_answers": [],
            "introspect_active": 0,
            "introspect_inactive": 0,
            "access_tokens": [],
            "refresh_tokens": [],
            "refresh_used": [],
        },
    )


def new_access_token(client_id, user):
    c = clients[client_id]
    token = "at-" + secrets.token_urlsafe(1500 if c.get("long_tokens") else 24)
    access_tokens[token] = {
        "client": client_id,
        "user": user,
        "exp": time.time() + c.get("ttl", 3600),
        "active": True,
    }
    counters(client_id)["access_tokens"].append(token)
    return token


def new_refresh_token(client_id, user, scope, family=None):
    token = "rt-" + secrets.token_urlsafe(24)
    refresh_tokens[token] = {
        "client": client_id,
        "user": user,
        "scope": scope,
        "family": family or secrets.token_hex(8),
        "state": "active",
    }
    counters(client_id)["refresh_tokens"].append(token)
    return token


def token_answer(client_id, user, scope, refresh=None):
    answer = {
        "access_token": new_access_token(client_id, user),
        "token_type": "Bearer",
        "expires_in": clients[client_id].get("ttl", 3600),
        "scope": scope,
    }
    if refresh:
        answer["refresh_token"] = refresh
    return answer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, description):
        self.answer(status, {"error": code, "error_description": description})

    def params(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(raw or "{}")
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}

    def client_auth(self, p):
        client_id, secret = p.get("client_id"), p.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            import base64

            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            client_id, secret = urllib.parse.unquote(user), urllib.parse.unquote(pw)
        return client_id, secret

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/admin/stats":
            client_id = urllib.parse.parse_qs(url.query).get("client_id", [""])[0]
            with lock:
                self.answer(200, counters(client_id))
            return
        self.error(404, "not_found", url.path)

    def do_POST(self):
        path = urllib.parse.urlparse(self.path).path
        p = self.params()
        handler = {
            "/token": self.token,
            "/device": self.device,
            "/introspect": self.introspect,
            "/activate": self.activate,
            "/admin/client": self.admin_client,
            "/admin/seed": self.admin_seed,
            "/admin/revoke": self.admin_revoke,
            "/admin/expire": self.admin_expire,
        }.get(path)
        if handler is None:
            self.error(404, "not_found", path)
            return
        handler(p)

    # --- admin ---------------------------------------------------------------------------
    def admin_client(self, p):
        with lock:
            clients[p["client_id"]] = p
            counters(p["client_id"])
        self.answer(200, {"ok": True})

    def admin_seed(self, p):
        with lock:
            token = new_refresh_token(p["client_id"], p["user"], p.get("scope", ""))
        self.answer(200, {"refresh_token": token})

    def admin_revoke(self, p):
        with lock:
            for t in refresh_tokens.values():
                if t["client"] == p["client_id"]:
                    t["state"] = "revoked"
        self.answer(200, {"ok": True})

    def admin_expire(self, p):
        with lock:
            for t in access_tokens.values():
                if t["client"] == p["client_id"]:
                    t["active"] = False
        self.answer(200, {"ok": True})

    def activate(self, p):
        with lock:
            for d in devices.values():
                if d["user_code"] == p.get("user_code"):
                    d["state"] = "approved" if p.get("decision", "approve") == "approve" else "denied"
                    d["user"] = p.get("user", "")
                    self.answer(200, {"ok": True})
                    return
        self.error(404, "unknown_code", "no such user code")

    # --- OAuth2 --------------------------------------------------------------------------
    def introspect(self, p):
        with lock:
            t = access_tokens.get(p.get("token", ""))
            live = t is not None and t["active"] and t["exp"] > time.time()
            if t is not None:
                counters(t["client"])["introspect_active" if live else "introspect_inactive"] += 1
            if live:
                self.answer(200, {"active": True, "username": t["user"], "exp": int(t["exp"])})
            else:
                self.answer(200, {"active": False})

    def device(self, p):
        client_id = p.get("client_id", "")
        with lock:
            c = clients.get(client_id)
            if c is None:
                self.error(400, "invalid_client", "unknown client")
                return
            counters(client_id)["device_started"].append(time.time())
            code = secrets.token_urlsafe(16)
            user_code = "%04d-%04d" % (secrets.randbelow(10000), secrets.randbelow(10000))
            devices[code] = {
                "client": client_id,
                "scope": p.get("scope", ""),
                "user_code": user_code,
                "state": "pending",
                "user": None,
                "expires_at": time.time() + c.get("device_expires_in", 60),
                "slowed": False,
            }
            host, port = self.server.server_address[:2]
            self.answer(
                200,
                {
                    "device_code": code,
                    "user_code": user_code,
                    "verification_uri": "http://%s:%d/activate" % (host, port),
                    "expires_in": c.get("device_expires_in", 60),
                    "interval": c.get("interval", 1),
                },
            )

    def token(self, p):
        client_id, secret = self.client_auth(p)
        with lock:
            c = clients.get(client_id)
            delay = c.get("delay", 0) if c else 0
        if delay:
            time.sleep(delay)
        with lock:
            if c is None:
                self.error(401, "invalid_client", "AADSTS700016: Application not found in the directory.")
                return
            if c.get("down"):
                self.send_response(503)
                body = b"the identity provider is down for maintenance"
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if c.get("secret") and c["secret"] != secret:
                self.error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
                return
            grant = p.get("grant_type")
            n = counters(client_id)
            if grant == "client_credentials":
                if c.get("scope") is not None and p.get("scope") != c["scope"]:
                    self.error(400, "invalid_scope", "AADSTS70011: The provided value for the input parameter 'scope' is not valid.")
                    return
                n["client_credentials"] += 1
                self.answer(200, token_answer(client_id, c.get("user", ""), p.get("scope", "")))
            elif grant == "refresh_token":
                rt = p.get("refresh_token", "")
                n["refresh_used"].append(rt)
                t = refresh_tokens.get(rt)
                if t is None or t["client"] != client_id:
                    n["refresh_refused"] += 1
                    self.error(400, "invalid_grant", "unknown refresh token")
                elif t["state"] == "rotated":
                    n["refresh_refused"] += 1
                    n["reuse"] += 1
                    for other in refresh_tokens.values():
                        if other["family"] == t["family"]:
                            other["state"] = "revoked"
                    self.error(400, "invalid_grant", "refresh token reuse detected; the token family is revoked")
                elif t["state"] == "revoked":
                    n["refresh_refused"] += 1
                    self.error(400, "invalid_grant", "AADSTS700082: The refresh token has expired or was revoked.")
                else:
                    t["state"] = "rotated"
                    n["refresh"] += 1
                    new = new_refresh_token(client_id, t["user"], t["scope"], t["family"])
                    self.answer(200, token_answer(client_id, t["user"], t["scope"], new))
            elif grant == "urn:ietf:params:oauth:grant-type:device_code":
                d = devices.get(p.get("device_code", ""))
                if d is None or d["client"] != client_id:
                    self.error(400, "invalid_grant", "unknown device code")
                    return
                n["device_polls"].append(time.time())
                def say(code, description):
                    n["device_answers"].append(code)
                    self.error(400, code, description)
                if time.time() > d["expires_at"]:
                    say("expired_token", "the device code expired")
                elif d["state"] == "denied":
                    say("access_denied", "the user declined")
                elif c.get("slow_down_first") and not d["slowed"]:
                    d["slowed"] = True
                    say("slow_down", "polling too fast")
                elif d["state"] == "pending":
                    say("authorization_pending", "waiting for the user")
                elif d["state"] == "approved":
                    d["state"] = "done"
                    n["device_answers"].append("token")
                    rt = new_refresh_token(client_id, d["user"], d["scope"])
                    self.answer(200, token_answer(client_id, d["user"], d["scope"], rt))
                else:
                    say("invalid_grant", "the device code was used already")
            else:
                self.error(400, "unsupported_grant_type", str(grant))


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
server.daemon_threads = True
print("ready %d" % server.server_address[1], flush=True)
server.serve_forever()
