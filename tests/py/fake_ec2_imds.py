"""A stand-in for EC2's own IMDS, for the proxy-mode tests: IMDSv2 only,
a small tree that includes what must never be passed on (the instance
role's credentials, the instance's identity credentials, user data), and a
record of every request it got (GET /__requests).

Usage: fake_ec2_imds.py ADDRESS PORT. Prints "ready" once it listens, and
exits when the process that started it does."""

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-ec2-upstream-token"
CREDS = json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAINSTANCEROLE0000",
                    "SecretAccessKey": "instance-secret", "Token": "instance-token",
                    "Expiration": "2099-01-01T00:00:00Z"})
IDENTITY = json.dumps({"Code": "Success", "AccessKeyId": "ASIAIDENTITYCRED0000",
                       "SecretAccessKey": "identity-secret", "Token": "identity-token"})
TREE = {
    "/latest/": "dynamic\nmeta-data\nuser-data",
    "/latest/meta-data/": "ami-id\nhostname\niam/\nidentity-credentials/\ninstance-id\ninstance-type\nplacement/",
    "/latest/meta-data/ami-id": "ami-0fakeec2upstream",
    "/latest/meta-data/hostname": "ip-10-99-0-1.us-west-2.compute.internal",
    "/latest/meta-data/instance-id": "i-0fakeec2upstream1",
    "/latest/meta-data/instance-type": "c7g.large",
    "/latest/meta-data/placement/": "availability-zone\nregion",
    "/latest/meta-data/placement/availability-zone": "us-west-2b",
    "/latest/meta-data/placement/region": "us-west-2",
    "/latest/meta-data/iam/": "info\nsecurity-credentials/",
    "/latest/meta-data/iam/security-credentials/": "instance-role",
    "/latest/meta-data/iam/security-credentials/instance-role": CREDS,
    "/latest/meta-data/identity-credentials/": "ec2/",
    "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance": IDENTITY,
    "/latest/user-data": "#!/bin/sh\nexport SECRET=hunter2\n",
    "/latest/dynamic/": "instance-identity/",
    "/latest/dynamic/instance-identity/": "document",
    "/latest/dynamic/instance-identity/document": json.dumps(
        {"instanceId": "i-0fakeec2upstream1", "region": "us-west-2", "accountId": "123456789012"}),
}

requests = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "EC2ws"
    sys_version = ""

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", "Mon, 02 Nov 2026 10:00:00 GMT")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_PUT(self):
        with lock:
            requests.append(["PUT", self.path])
        if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.answer(400)
        self.answer(200, TOKEN.encode())

    def do_GET(self):
        if self.path == "/__requests":
            with lock:
                return self.answer(200, json.dumps(requests).encode(), "application/json")
        with lock:
            requests.append(["GET", self.path])
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.answer(401)
        # EC2 names a node with or without a trailing slash.
        body = TREE.get(self.path)
        if body is None:
            other = self.path[:-1] if self.path.endswith("/") else self.path + "/"
            body = TREE.get(other)
        if body is None:
            return self.answer(404, b"not found", "text/html")
        self.answer(200, body.encode())

    do_HEAD = do_GET


class ThreadingHTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def main():
    address, port = sys.argv[1], int(sys.argv[2])
    server_class = ThreadingHTTPServerV6 if ":" in address else ThreadingHTTPServer
    server = server_class((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    server.shutdown()


if __name__ == "__main__":
    main()
