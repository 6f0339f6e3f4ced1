"""Many requests from one workload, to check that it only ever sees its own
role. Mixes new connections and keep-alive, IMDSv1 and IMDSv2, role
listings, its own credentials, other roles' credentials and plain metadata.

Usage: hammer.py HOST PORT OWN_ROLE OTHER_ROLES(comma-separated) COUNT

Prints one JSON line: {"requests", "wrong", "errors", "keys", "first_wrong"}.
"wrong" counts answers that name or hold anything but the workload's own
role; "keys" lists the access key ids its own credentials came with."""

import http.client
import json
import random
import sys

ROLES = "/latest/meta-data/iam/security-credentials/"


def main():
    host, port, own, others, count = sys.argv[1:6]
    others = [o for o in others.split(",") if o]
    port, count = int(port), int(count)
    rng = random.Random(own)
    conn = None
    left_on_conn = 0
    token = None
    wrong = errors = 0
    first_wrong = None
    keys = set()
    for _ in range(count):
        if left_on_conn == 0:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=10)
            left_on_conn = rng.choice([1, 1, 5, 20])
            token = None
        left_on_conn -= 1
        headers = {}
        try:
            if rng.random() < 0.5:
                if token is None:
                    conn.request("PUT", "/latest/api/token",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
                    reply = conn.getresponse()
                    token = reply.read().decode()
                    if reply.status != 200:
                        raise RuntimeError(f"token: {reply.status}")
                headers["X-aws-ec2-metadata-token"] = token
            kind = rng.randrange(4)
            if kind == 0:
                path = ROLES
            elif kind == 1:
                path = ROLES + own
            elif kind == 2 and others:
                path = ROLES + rng.choice(others)
            else:
                path = "/latest/meta-data/instance-id"
            conn.request("GET", path, headers=headers)
            reply = conn.getresponse()
            body = reply.read().decode()
            bad = None
            if path == ROLES:
                if reply.status != 200 or body != own:
                    bad = f"listing: {reply.status} {body!r}"
            elif path == ROLES + own:
                doc = json.loads(body) if reply.status == 200 else None
                if doc is None or doc.get("Code") != "Success":
                    bad = f"own role: {reply.status} {body[:200]!r}"
                else:
                    keys.add(doc["AccessKeyId"])
            elif path.startswith(ROLES):
                if reply.status != 404 or "AccessKeyId" in body:
                    bad = f"{path}: {reply.status} {body[:200]!r}"
            elif reply.status != 200:
                bad = f"{path}: {reply.status}"
            if bad is not None:
                wrong += 1
                first_wrong = first_wrong or bad
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors += 1
            first_wrong = first_wrong or f"error: {e!r}"
            conn.close()
            left_on_conn = 0
    if conn is not None:
        conn.close()
    print(json.dumps({"requests": count, "wrong": wrong, "errors": errors,
                      "keys": sorted(keys), "first_wrong": first_wrong}))


if __name__ == "__main__":
    main()
