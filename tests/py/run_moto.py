"""moto's server (a real STS implementation, among others) for the tests,
on 127.0.0.1:PORT. It exits when the process that started it exits, so a
test binary can share one instance among its tests without leaving it behind.

Usage: run_moto.py PORT"""

import os
import sys
import time

from moto.server import ThreadedMotoServer


def main():
    port = int(sys.argv[1])
    parent = os.getppid()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    while os.getppid() == parent:
        time.sleep(0.5)
    server.stop()


if __name__ == "__main__":
    main()
