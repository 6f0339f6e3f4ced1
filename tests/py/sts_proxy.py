"""A counting, fault-injecting proxy in front of moto's STS.

Usage: sts_proxy.py PORT UPSTREAM_URL

Every STS call is forwarded to UPSTREAM_URL (moto_server) and recorded
(action and parameters, never secrets: moto's answers are passed through
untouched). A control API under /__proxy/ lets a test read the calls and
change what the proxy does:

  GET  /__proxy/calls            -> [{"action": ..., "params": {...}}, ...]
  POST /__proxy/mode  {"mode": "pass" | "error500" | "throttle" | "denied" | "drop",
                       "actions": ["AssumeRole", ...] (default: all),
                       "delay": seconds before answering (default 0)}
  POST /__proxy/totp {"secret": BASE32 | null}
                       GetSessionToken's TokenCode must then be the TOTP
                       code of the moment (or a step either side) for that
                       secret, as AWS checks it: anything else is refused
                       with AWS's AccessDenied (moto checks no code).
  POST /__proxy/offset {"seconds": N, "actions": [...] (default: all)}
                       every <Expiration> moto answers (to those actions)
                       is moved N seconds later (earlier when negative):
                       tests that run the agent on a clock they move keep
                       STS's expirations consistent with it, and tests of
                       expiry get sessions shorter than STS's shortest.
"""

import base64
import datetime
import hashlib
import hmac
import json
import struct
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"mode": "pass", "actions": None, "delay": 0.0, "offset": 0.0, "offset_actions": None, "calls": [],
         "totp": None}


def totp(secret, step):
    """RFC 6238 with SHA-1, 30 s steps and 6 digits: what AWS's virtual MFA devices use."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1000000)


def code_accepted(secret, code):
    step = int(time.time()) // 30
    return any(totp(secret, s) == code for s in (step - 1, step, step + 1))
EXPIRATION = re.compile(rb"<Expiration>([^<]+)</Expiration>")


def shift_expirations(body, seconds):
    def shift(match):
        text = match.group(1).decode()
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        moved = stamp + datetime.timedelta(seconds=seconds)
        return b"<Expiration>" + moved.strftime("%Y-%m-%dT%H:%M:%SZ").encode() + b"</Expiration>"

    return EXPIRATION.sub(shift, body) if seconds else body


def access_key_of(authorization):
    # "AWS4-HMAC-SHA256 Credential=AKIA.../20260101/us-east-1/sts/aws4_request, ..."
    match = re.search(r"Credential=([A-Z0-9]+)/", authorization or "")
    return match.group(1) if match else None
LOCK = threading.Lock()

ERRORS = {
    "error500": (500, "Receiver", "InternalFailure", "The request processing has failed because of an unknown error."),
    "throttle": (400, "Sender", "Throttling", "Rate exceeded"),
    "denied": (403, "Sender", "AccessDenied",
               "User: arn:aws:iam::123456789012:user/agent is not authorized to perform: sts:AssumeRole"),
}


def error_body(kind, code, message):
    return (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="text/xml"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/__proxy/calls":
            with LOCK:
                body = json.dumps(STATE["calls"]).encode()
            return self.reply(200, body, "application/json")
        self.forward(b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/__proxy/offset":
            wanted = json.loads(body or b"{}")
            with LOCK:
                STATE["offset"] = float(wanted.get("seconds", 0))
                STATE["offset_actions"] = wanted.get("actions")
            return self.reply(200, b"{}", "application/json")
        if self.path == "/__proxy/totp":
            wanted = json.loads(body or b"{}")
            with LOCK:
                STATE["totp"] = wanted.get("secret")
            return self.reply(200, b"{}", "application/json")
        if self.path == "/__proxy/mode":
            wanted = json.loads(body or b"{}")
            with LOCK:
                STATE["mode"] = wanted.get("mode", "pass")
                STATE["actions"] = wanted.get("actions")
                STATE["delay"] = float(wanted.get("delay", 0))
            return self.reply(200, b"{}", "application/json")
        self.forward(body)

    def forward(self, body):
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        action = params.pop("Action", "?")
        key = access_key_of(self.headers.get("Authorization"))
        with LOCK:
            STATE["calls"].append({"action": action, "params": params, "key": key, "at": time.time()})
            mode, actions, delay, offset = STATE["mode"], STATE["actions"], STATE["delay"], STATE["offset"]
            if STATE["offset_actions"] is not None and action not in STATE["offset_actions"]:
                offset = 0.0
        applies = actions is None or action in actions
        if delay and applies:
            time.sleep(delay)
        if applies and mode == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if applies and mode in ERRORS:
            status, kind, code, message = ERRORS[mode]
            return self.reply(status, error_body(kind, code, message))
        with LOCK:
            secret = STATE["totp"]
        if secret and action == "GetSessionToken" and not code_accepted(secret, params.get("TokenCode", "")):
            return self.reply(403, error_body(
                "Sender", "AccessDenied",
                "MultiFactorAuthentication failed with invalid MFA one time pass code."))
        request = urllib.request.Request(UPSTREAM + self.path, data=body or None, method=self.command)
        for name in ("Content-Type", "Authorization", "X-Amz-Date", "X-Amz-Security-Token", "User-Agent"):
            if self.headers.get(name):
                request.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                body = shift_expirations(answer.read(), offset)
                self.reply(answer.status, body, answer.headers.get("Content-Type", "text/xml"))
        except urllib.error.HTTPError as e:
            self.reply(e.code, e.read(), e.headers.get("Content-Type", "text/xml"))


def exit_with_parent(parent):
    # The test that started the proxy may die without stopping it.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


if __name__ == "__main__":
    port, UPSTREAM = int(sys.argv[1]), sys.argv[2].rstrip("/")
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # Port 0 picks a free port: the ready line names it.
    print("ready", server.server_address[1], flush=True)
    server.serve_forever()
