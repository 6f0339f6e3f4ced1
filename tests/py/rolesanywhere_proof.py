"""Proves the test CreateSession server against a client nobody here
wrote (PyPI's iam-rolesanywhere-session): each good leaf gets
credentials; expired, not-yet-valid, untrusted and CA leaves, a wrong
profile and a role the profile does not allow are refused; and a request
the client signed, sent with one byte flipped in any signed header, the
body or the signature, is refused. Prints one JSON line: the outcome of
every case ({"case": "ok" | "refused <status>" | ...}).

Usage: rolesanywhere_proof.py PKI_DIR PORT REGION TRUST_ANCHOR PROFILE ROLE OTHER_ROLE"""

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

from botocore.awsrequest import AWSRequest
from iam_rolesanywhere_session import (
    CredentialsRetrievalError,
    IAMRolesAnywhereSession,
    IAMRolesAnywhereSigner,
)


def main():
    pki, port, region, anchor, profile, role, other_role = sys.argv[1:8]
    endpoint = f"127.0.0.1:{port}"
    ca = os.path.join(pki, "ca.pem")
    out = {}

    def attempt(case, leaf, chain=None, profile_arn=profile, role_arn=role):
        try:
            s = IAMRolesAnywhereSession(
                profile_arn=profile_arn,
                role_arn=role_arn,
                trust_anchor_arn=anchor,
                certificate=os.path.join(pki, f"{leaf}.pem"),
                private_key=os.path.join(pki, f"{leaf}.key"),
                certificate_chain=os.path.join(pki, f"{chain}.pem") if chain else None,
                region=region,
                endpoint=endpoint,
                verify=ca,
                session_duration=900,
            )
            creds = s.get_refreshable_credentials().get_frozen_credentials()
            out[case] = "ok" if creds.access_key.startswith("ASIA") and creds.token else "odd"
        except CredentialsRetrievalError as e:
            out[case] = f"refused {e.args[0] if e.args else '?'}"
        except Exception as e:
            out[case] = f"error {type(e).__name__}: {e}"

    attempt("rsa", "rsa")
    attempt("p256 with chain", "p256", "inter")
    attempt("p384 with chain", "p384", "inter")
    attempt("p256 without its chain", "p256")
    attempt("expired", "expired")
    attempt("not yet valid", "future")
    attempt("untrusted", "untrusted")
    attempt("a CA as leaf", "ca-leaf")
    attempt("wrong profile", "rsa", profile_arn=profile + "x")
    attempt("role not allowed", "rsa", role_arn=other_role)

    # One request signed by the client, then sent with one byte changed.
    signer = IAMRolesAnywhereSigner(
        certificate=os.path.join(pki, "p256.pem"),
        private_key=os.path.join(pki, "p256.key"),
        certificate_chain=os.path.join(pki, "inter.pem"),
        region=region,
    )
    body = json.dumps(
        {"durationSeconds": 900, "profileArn": profile, "roleArn": role, "trustAnchorArn": anchor}
    )
    request = AWSRequest(method="POST", url=f"https://{endpoint}/sessions", data=body)
    signer.add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    context = ssl.create_default_context(cafile=ca)

    def send(case, headers, body):
        req = urllib.request.Request(
            f"https://{endpoint}/sessions", data=body.encode(), method="POST"
        )
        for k, v in headers.items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, context=context, timeout=10) as r:
                out[case] = "ok" if r.status == 201 else f"status {r.status}"
        except urllib.error.HTTPError as e:
            out[case] = f"refused {e.code}"

    def flipped(value, at):
        c = value[at]
        # Another character of the same kind, so the value stays well formed.
        if c.isdigit():
            n = "0" if c != "0" else "1"
        elif c.isalpha():
            n = "a" if c != "a" else "b"
        else:
            n = "x"
        return value[:at] + n + value[at + 1 :]

    send("as signed", headers, body)
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    for name in signed:
        if name == "host":
            continue  # a changed Host is another server's request
        value = headers[name]
        for at in (len(value) // 2, len(value) - 2):
            changed = dict(headers)
            changed[name] = flipped(value, at)
            send(f"{name} byte {at} flipped", changed, body)
    send("body byte flipped", headers, flipped(body, body.index(role) + len(role) - 1))
    auth = headers["authorization"]
    changed = dict(headers)
    changed["authorization"] = flipped(auth, len(auth) - 3)
    send("signature byte flipped", changed, body)
    changed["authorization"] = auth.replace(
        auth.split("Credential=")[1].split("/")[0], "1" + auth.split("Credential=")[1].split("/")[0]
    )
    send("serial changed", changed, body)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
