"""A workload asking for its credentials over and over for a while, a new
connection each time, as SDK refreshes do: what every answer was.

Usage: creds_loop.py HOST PORT ROLE SECONDS

Prints one JSON line: {"requests", "codes": {code: count}, "keys": [...],
"failures": [first few answers that were not a credentials document]}."""

import http.client
import json
import sys
import time

PATH = "/latest/meta-data/iam/security-credentials/"


def main():
    host, port, role, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    codes, keys, failures = {}, [], []
    requests = 0
    token = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        requests += 1
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            if token is None or requests % 20 == 0:
                conn.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
                token = conn.getresponse().read().decode()
            conn.request("GET", PATH + role, headers={"X-aws-ec2-metadata-token": token})
            answer = conn.getresponse()
            body = answer.read()
            conn.close()
            doc = json.loads(body) if answer.status == 200 else {"Code": f"HTTP {answer.status}"}
            code = doc.get("Code", "?")
        except Exception as e:  # noqa: BLE001 - the report says what failed
            code, doc = "error", {"error": repr(e)}
        codes[code] = codes.get(code, 0) + 1
        if code == "Success":
            if not keys or keys[-1] != doc["AccessKeyId"]:
                keys.append(doc["AccessKeyId"])
        elif len(failures) < 5:
            failures.append(doc)
    print(json.dumps({"requests": requests, "codes": codes, "keys": keys, "failures": failures}))


if __name__ == "__main__":
    main()
