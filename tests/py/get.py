"""One HTTP GET, reported as JSON: {"status", "body"} or {"error"}, with
the client's pid and uid and the peer its socket reports ("peer").
Usage: get.py URL [TIMEOUT_SECONDS]"""

import http.client
import json
import os
import sys
import urllib.parse


def main():
    url = urllib.parse.urlsplit(sys.argv[1])
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 5
    try:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
        conn.connect()
        peer = "%s:%d" % conn.sock.getpeername()[:2]
        conn.request("GET", url.path or "/")
        reply = conn.getresponse()
        report = {"status": reply.status, "body": reply.read().decode(errors="replace"), "peer": peer}
    except Exception as e:  # noqa: BLE001 - the report says what failed
        report = {"error": repr(e)}
    report.update(pid=os.getpid(), uid=os.getuid())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
