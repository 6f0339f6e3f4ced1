"""Proves the test CreateSession server against a client nobody here
wrote (PyPI's iam-rolesanywhere-session).

"sessions": each good leaf gets credentials, and so do the look-alikes
the tampering below swaps in (`twin`, `inter-twin`, 901 seconds), which
shows that each of those swaps is a request the server would grant on
its own; expired, not-yet-valid, untrusted, CA, SHA-1-signed and
keyUsage-less leaves, an intermediate without keyCertSign, a pathLen
exceeded, a wrong profile and a role the profile does not allow are
refused, each with the server's reason.

"tampered": one request the client signed (p256, with inter), sent as
signed and then with one signed part changed to another value the server
would accept if it were not signed: the body (durationSeconds 900 ->
901), X-Amz-Date (a seconds digit: still within the allowed skew),
Host and Content-Type (a byte; the server checks neither but through the
signature), X-Amz-X509 (the twin: same key, serial and issuer),
X-Amz-X509-Chain (the intermediate's twin: same key and subject) and the
signature itself. Every one must be refused as SignatureDoesNotMatch,
and so for no other reason. "serial changed" (the credential's serial,
which is not signed) must be refused by the serial check.

Prints one JSON line:
  {"sessions": {CASE: OUTCOME, ...}, "tampered": {CASE: OUTCOME, ...}}
with OUTCOME {"outcome": "ok" | "refused" | "odd" | "error",
  "status": HTTP status or null (the client reports none on success),
  "type": the error type (X-Amzn-ErrorType) or null (the client's
    CredentialsRetrievalError carries only the status and message),
  "reason": the server's message, or the error, or null}.

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


class Sha256Signer(IAMRolesAnywhereSigner):
    """The client's signer, but naming the algorithm as aws_signing_helper
    does (always SHA-256). The client names it after the hash the
    certificate was signed with, so for a SHA-1-signed leaf it would send
    AWS4-X509-ECDSA-SHA1 and be refused for that, before the server ever
    looked at the certificate's own signature."""

    @property
    def algorithm(self):
        return f"AWS4-X509-{self.private_key_type}-SHA256"


def outcome(outcome, status=None, type=None, reason=None):
    return {"outcome": outcome, "status": status, "type": type, "reason": reason}


def main():
    pki, port, region, anchor, profile, role, other_role = sys.argv[1:8]
    endpoint = f"127.0.0.1:{port}"
    ca = os.path.join(pki, "ca.pem")
    context = ssl.create_default_context(cafile=ca)
    sessions, tampered = {}, {}

    def path(name):
        return os.path.join(pki, name if name.endswith(".pem") else f"{name}.pem")

    def attempt(case, leaf, chain=None, profile_arn=profile, role_arn=role, key=None, seconds=900):
        try:
            s = IAMRolesAnywhereSession(
                profile_arn=profile_arn,
                role_arn=role_arn,
                trust_anchor_arn=anchor,
                certificate=path(leaf),
                private_key=os.path.join(pki, f"{key or leaf}.key"),
                certificate_chain=path(chain) if chain else None,
                region=region,
                endpoint=endpoint,
                verify=ca,
                session_duration=seconds,
            )
            creds = s.get_refreshable_credentials().get_frozen_credentials()
            good = creds.access_key.startswith("ASIA") and creds.token
            sessions[case] = outcome("ok" if good else "odd")
        except CredentialsRetrievalError as e:
            sessions[case] = outcome("refused", e.status_code, None, e.message)
        except Exception as e:
            sessions[case] = outcome("error", reason=f"{type(e).__name__}: {e}")

    def send(headers, body):
        """Sends a request as given: nothing here fills in or fixes a
        header (a Host set here is the Host sent)."""
        req = urllib.request.Request(
            f"https://{endpoint}/sessions", data=body.encode(), method="POST"
        )
        for k, v in headers.items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, context=context, timeout=10) as r:
                answer = json.loads(r.read() or b"{}")
                good = r.status == 201 and "credentialSet" in answer
                return outcome("ok" if good else "odd", r.status)
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("message")
            except ValueError:
                message = None
            return outcome("refused", e.code, e.headers.get("X-Amzn-ErrorType"), message)
        except Exception as e:
            return outcome("error", reason=f"{type(e).__name__}: {e}")

    def signed(leaf, chain=None, signer=IAMRolesAnywhereSigner, seconds=900):
        """The headers and body of a request the client signed."""
        s = signer(
            certificate=path(leaf),
            private_key=os.path.join(pki, f"{leaf}.key"),
            certificate_chain=path(chain) if chain else None,
            region=region,
        )
        body = json.dumps(
            {"durationSeconds": seconds, "profileArn": profile, "roleArn": role, "trustAnchorArn": anchor}
        )
        request = AWSRequest(method="POST", url=f"https://{endpoint}/sessions", data=body)
        s.add_auth(request)
        return {k.lower(): v for k, v in request.headers.items()}, body

    attempt("rsa", "rsa")
    attempt("p256 with chain", "p256", "inter")
    attempt("p384 with chain", "p384", "inter")
    attempt("rotated", "rotated")
    attempt("twin with chain", "twin", "inter")
    attempt("p256 with the intermediate's twin", "p256", "inter-twin")
    attempt("p256 for 901 seconds", "p256", "inter", seconds=901)
    attempt("p256 without its chain", "p256")
    attempt("expired", "expired")
    attempt("not yet valid", "future")
    attempt("untrusted", "untrusted")
    attempt("a CA as leaf", "ca-leaf")
    attempt("no keyUsage", "no-key-usage")
    attempt("intermediate without keyCertSign", "bad-inter-leaf", "bad-inter")
    attempt("pathLen exceeded", "deep-leaf", "deep-chain.pem")
    attempt("wrong profile", "rsa", profile_arn=profile + "x")
    attempt("role not allowed", "rsa", role_arn=other_role)
    sessions["sha1"] = send(*signed("sha1", signer=Sha256Signer))

    # One request signed by the client, then sent with one part changed.
    headers, body = signed("p256", "inter")
    sessions["as signed"] = send(headers, body)

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

    def changed(name, value):
        out = dict(headers)
        out[name] = value
        return out

    names = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert names == ["content-type", "host", "x-amz-date", "x-amz-x509", "x-amz-x509-chain"], names
    for name in ("content-type", "host"):
        value = headers[name]
        for at in (len(value) // 2, len(value) - 2):
            tampered[f"{name} byte {at} flipped"] = send(changed(name, flipped(value, at)), body)
    # YYYYMMDDTHHMMSSZ: a seconds digit, up or down by at most 50 s.
    date = headers["x-amz-date"]
    for at, digits in ((13, "012345"), (14, "0123456789")):
        d = digits[(digits.index(date[at]) + 1) % len(digits)]
        tampered[f"x-amz-date second digit {at - 12} changed"] = send(
            changed("x-amz-date", date[:at] + d + date[at + 1 :]), body
        )
    twin, _ = signed("twin", "inter")
    tampered["x-amz-x509 swapped for its twin"] = send(changed("x-amz-x509", twin["x-amz-x509"]), body)
    other, _ = signed("p256", "inter-twin")
    tampered["x-amz-x509-chain swapped for the intermediate's twin"] = send(
        changed("x-amz-x509-chain", other["x-amz-x509-chain"]), body
    )
    longer = body.replace('"durationSeconds": 900', '"durationSeconds": 901')
    assert longer != body
    tampered["body durationSeconds changed"] = send(headers, longer)
    auth = headers["authorization"]
    tampered["signature byte flipped"] = send(changed("authorization", flipped(auth, len(auth) - 3)), body)
    serial = auth.split("Credential=")[1].split("/")[0]
    tampered["serial changed"] = send(changed("authorization", auth.replace(serial, "1" + serial)), body)
    print(json.dumps({"sessions": sessions, "tampered": tampered}), flush=True)


if __name__ == "__main__":
    main()
