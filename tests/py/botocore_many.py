"""Many real botocore clients at once, each in a cgroup of its own: the
first call of that many new workloads. botocore's session and credential
chain are set up once, before the children fork (a hundred Python
processes each loading botocore's data would take every core of a test
machine for seconds); each client is a forked child that moves itself
into its cgroup (made then, as systemd makes a unit's when it starts
it), then resolves credentials through
that chain exactly as on EC2 (IMDSv2, a one-second timeout, one attempt).

Usage: botocore_many.py ENDPOINT_URL SPREAD_SECONDS CGROUP_DIR...

The clients start SPREAD_SECONDS apart in all (0: all at once), as units
of a host that boots or scales do.

Prints one JSON list, a report per cgroup in order:
{"cgroup", "method", "access_key", "error", "ms"} ("ms": how long the
credentials took, from the client's start)."""

import io
import json
import logging
import os
import sys
import time

import botocore.session


def client(resolver, cgroup, delay, start, out):
    os.read(start, 1)
    time.sleep(delay)
    began = time.monotonic()
    # As systemd starts a unit: its cgroup is made, its process put in it.
    os.makedirs(cgroup, exist_ok=True)
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
        procs.write(str(os.getpid()))
    report = {"cgroup": cgroup, "method": None, "access_key": None, "error": None}
    # What botocore says about IMDS, for the report of a client that got
    # nothing.
    said = io.StringIO()
    handler = logging.StreamHandler(said)
    handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
    for name in ("botocore.utils", "botocore.credentials"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        creds = resolver.load_credentials()
        if creds is not None:
            report["method"] = creds.method
            report["access_key"] = creds.get_frozen_credentials().access_key
    except Exception as e:  # noqa: BLE001 - the report says what failed
        report["error"] = repr(e)
    report["ms"] = round((time.monotonic() - began) * 1000, 1)
    if report["access_key"] is None:
        lines = [l for l in said.getvalue().splitlines() if l[:1].isdigit()]
        report["botocore"] = lines[-12:]
    os.write(out, (json.dumps(report) + "\n").encode())


def main():
    endpoint, spread, cgroups = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = endpoint
    session = botocore.session.get_session()
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    resolver = session.get_component("credential_provider")
    start_r, start_w = os.pipe()
    out_r, out_w = os.pipe()
    children = []
    for i, cgroup in enumerate(cgroups):
        delay = spread * i / max(len(cgroups), 1)
        pid = os.fork()
        if pid == 0:
            os.close(start_w)
            os.close(out_r)
            try:
                client(resolver, cgroup, delay, start_r, out_w)
            finally:
                os._exit(0)
        children.append(pid)
    os.close(start_r)
    os.close(out_w)
    # Give the last child a moment to block on the start pipe.
    time.sleep(0.5)
    os.close(start_w)
    lines = b""
    while True:
        chunk = os.read(out_r, 65536)
        if not chunk:
            break
        lines += chunk
    for pid in children:
        os.waitpid(pid, 0)
    reports = {r["cgroup"]: r for r in map(json.loads, lines.decode().splitlines())}
    print(json.dumps([reports.get(c, {"cgroup": c, "error": "no report"}) for c in cgroups]))


if __name__ == "__main__":
    main()
