"""What one user can do in its own cgroup subtree: make COUNT cgroups
(PARENT/flood-N.service) and ask for credentials from each, as a new
workload would, so that each is a session of its own. Run as that user,
in a cgroup below PARENT's parent it owns. A socket belongs to the cgroup
it was made in, so the script moves itself through BATCH cgroups making
one connection in each, then sends all their requests at once and reads
the answers (each request waits for its own fetch: one at a time would
take COUNT waits). Prints one JSON line:
{"asked": n, "statuses": {status: count}}.

Usage: many_cgroups.py PARENT COUNT URL [BATCH]"""

import json
import os
import socket
import sys
import urllib.parse


def status_of(sock):
    """The status code of the answer on `sock`, or why there is none."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed"
            data += chunk
    except OSError as e:
        return type(e).__name__
    finally:
        sock.close()
    parts = data.split(b"\r\n", 1)[0].split()
    return parts[1].decode() if len(parts) > 1 else "malformed"


def main():
    parent, count, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    target = urllib.parse.urlsplit(url)
    address = (target.hostname, target.port or 80)
    request = (
        f"GET {target.path} HTTP/1.1\r\nHost: {target.hostname}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    os.makedirs(parent, exist_ok=True)
    statuses = {}
    cgroups = [os.path.join(parent, f"flood-{i}.service") for i in range(count)]
    for cgroup in cgroups:
        os.mkdir(cgroup)
    for start in range(0, count, batch):
        socks = []
        for cgroup in cgroups[start : start + batch]:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
            try:
                sock = socket.create_connection(address, timeout=10)
                socks.append(sock)
            except OSError as e:
                socks.append(type(e).__name__)
        for sock in socks:
            if isinstance(sock, socket.socket):
                try:
                    sock.sendall(request)
                except OSError:
                    pass
        for sock in socks:
            status = status_of(sock) if isinstance(sock, socket.socket) else sock
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    print(json.dumps({"asked": count, "statuses": statuses}), flush=True)


if __name__ == "__main__":
    main()
