"""moto's server (a real STS implementation, among others) for the tests,
on 127.0.0.1:PORT (0: a free port, which the ready line names). It exits when the process that started it exits, so a
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
    print("ready", server.get_host_and_port()[1], flush=True)
    while os.getppid() == parent:
        time.sleep(0.5)
    server.stop()


if __name__ == "__main__":
    main()
