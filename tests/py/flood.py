"""Opens COUNT TCP connections to HOST:PORT and sends nothing on them: what
a workload that wants to starve the others does. Prints one JSON line
({"opened": n, "failed": m}) once every connect has finished, then holds
the connections until its parent exits.

Usage: flood.py HOST PORT COUNT"""

import json
import os
import resource
import selectors
import socket
import sys
import time


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        selector.register(s, selectors.EVENT_WRITE)
        sockets.append(s)
    opened = failed = 0
    pending = len(sockets)
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            s = key.fileobj
            selector.unregister(s)
            pending -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                opened += 1
            else:
                failed += 1
    print(json.dumps({"opened": opened, "failed": failed, "pending": pending}), flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
