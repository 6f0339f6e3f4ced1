"""A faithful stand-in for IAM Roles Anywhere's CreateSession (there is
no public mock of it): it checks what the service checks and answers as
the service answers, with credentials from moto's AssumeRole.

For each `POST /sessions` (over TLS, as the service speaks it):
- the SigV4-X509 signature (aws_signing_helper's signer.go): the
  canonical request rebuilt from the headers the client says it signed,
  as sent (Host too: whatever Host the client signed is the one checked,
  and no other check is made of it), which must include host,
  x-amz-date, x-amz-x509 (and x-amz-x509-chain when sent);
  `AWS4-X509-RSA-SHA256` (PKCS#1 v1.5) or `AWS4-X509-ECDSA-SHA256` (DER
  ECDSA), both over SHA-256 of the string to sign, verified with the
  leaf certificate's public key; the credential's serial number
  (decimal) must be the leaf's; the scope's date must be X-Amz-Date's,
  its region this server's, its service `rolesanywhere`; X-Amz-Date
  within 5 minutes of now;
- the certificates (the service's trust model): the trust anchor's CA
  must be valid now, and its pathLen holds too; the leaf must be X.509 v3,
  not a CA, with a keyUsage that has digitalSignature; every
  intermediate in X-Amz-X509-Chain must be X.509 v3, a CA, with a
  keyUsage that has keyCertSign, and no more CAs below it than its
  pathLen allows; the leaf and every intermediate must be valid now and
  signed with SHA-256, SHA-384 or SHA-512 (not SHA-1 or MD5), each
  signature checked up to the anchor;
- the parameters, from the query or the JSON body (both allowed, as the
  docs say; a conflict is refused): the trust anchor and profile must be
  this server's, the role one the profile allows, durationSeconds
  900-43200.
The signature is checked before the certificates and the parameters, so
a request refused for its signature says so, whatever else is wrong.

Answers: 201 `{"credentialSet": [...], "subjectArn": ...}`; errors as
restJson1 does (`X-Amzn-ErrorType`, and `{"__type", "message"}`): 403
SignatureDoesNotMatch (a signature that is not the one over the request
as received: the type the tests tell a signature check by), 403
AccessDeniedException (any other signature or certificate fault, role),
400 ValidationException (parameters), 404 ResourceNotFoundException
(trust anchor, profile).

`GET /_calls` (no auth; not part of the service) answers a JSON list of
every other request received so far, in order: `{"serial": the decimal
serial of the X-Amz-X509 certificate, or null when there is none or it
does not parse, "status": the HTTP status answered, "reason": null when
issued, else "<error type>: <message>"}`, so a test can tell which
certificate the agent used and how often it asked.

Usage: rolesanywhere_server.py PORT --moto URL --anchor-ca PEM
  --tls-cert PEM --tls-key PEM --region R --trust-anchor-arn A
  --profile-arn P --role-arn R [--role-arn R2 ...] [--session-seconds N]
--session-seconds N: every credentialSet issued expires N seconds from
now (moto's credentials otherwise unchanged), so a test can watch an
agent renew a session without waiting for STS's shortest (900 s).
Without it, the expiration is moto's.
Prints `ready PORT` once it listens on 127.0.0.1 (PORT 0: any free one);
logs every decision to stderr."""

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import ssl
import sys
import threading
import urllib.parse

import boto3
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

ALGORITHMS = {
    "AWS4-X509-RSA-SHA256": rsa.RSAPublicKey,
    "AWS4-X509-ECDSA-SHA256": ec.EllipticCurvePublicKey,
}
MAX_SKEW = datetime.timedelta(minutes=5)
MAX_CHAIN = 5
# The hashes a certificate may be signed with (the trust model's "SHA256
# or stronger": SHA-1 and MD5 are refused).
STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


class Refused(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def denied(message):
    return Refused(403, "AccessDeniedException", message)


def invalid(message):
    return Refused(400, "ValidationException", message)


def mismatch():
    """The one refusal that means "the signature is not over this
    request": the tests assert on its type to know a tampered request was
    caught by the signature and not by some other check."""
    return Refused(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided",
    )


def uri_encode(s):
    return urllib.parse.quote(s, safe="-_.~")


def canonical_query(raw):
    pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True)
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def parse_authorization(value):
    algorithm, _, rest = value.partition(" ")
    fields = {}
    for part in rest.split(","):
        key, _, val = part.strip().partition("=")
        fields[key] = val
    try:
        credential = fields["Credential"]
        signed = fields["SignedHeaders"]
        signature = bytes.fromhex(fields["Signature"])
    except (KeyError, ValueError):
        raise denied("malformed Authorization header")
    serial, _, scope = credential.partition("/")
    return algorithm, serial, scope, signed.split(";"), signature


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def check_valid(cert, what):
    t = now()
    if t < cert.not_valid_before_utc:
        raise denied(f"{what} is not yet valid")
    if t > cert.not_valid_after_utc:
        raise denied(f"{what} has expired")


def constraints(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert):
    c = constraints(cert)
    return c is not None and c.ca


def key_usage(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_hash(cert, what):
    """Signed with SHA-256 or stronger (an unknown algorithm too is
    refused)."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if not isinstance(algorithm, STRONG_HASHES):
        name = algorithm.name.upper() if algorithm else "an unsupported algorithm"
        raise denied(f"{what} is signed with {name}, not SHA-256 or stronger")


def check_issuer(issuer, below, what):
    """`issuer` may issue a certificate with `below` CA certificates
    between it and the leaf."""
    c = constraints(issuer)
    if c is not None and c.path_length is not None and below > c.path_length:
        raise denied(f"{what} allows no more than {c.path_length} CAs below it (pathLen)")


def check_chain(leaf, chain, anchor):
    """The leaf chains to the anchor through `chain`, every link checked."""
    check_valid(anchor, "the trust anchor's certificate")
    if leaf.version != x509.Version.v3:
        raise denied("the signing certificate is not X.509 v3")
    if is_ca(leaf):
        raise denied("the signing certificate is a CA")
    usage = key_usage(leaf)
    if usage is None:
        raise denied("the signing certificate has no keyUsage (digitalSignature is required)")
    if not usage.digital_signature:
        raise denied("the signing certificate may not sign (keyUsage lacks digitalSignature)")
    check_hash(leaf, "the signing certificate")
    check_valid(leaf, "the signing certificate")
    current, pool = leaf, list(chain)
    for below in range(MAX_CHAIN + 1):
        if current.issuer == anchor.subject:
            check_issuer(anchor, below, "the trust anchor's certificate")
            try:
                current.verify_directly_issued_by(anchor)
            except (ValueError, TypeError, InvalidSignature):
                raise denied("Untrusted signing certificate")
            return
        issuer = next((c for c in pool if c.subject == current.issuer), None)
        if issuer is None:
            raise denied("Untrusted signing certificate")
        pool.remove(issuer)
        what = "an intermediate certificate"
        if issuer.version != x509.Version.v3:
            raise denied(f"{what} is not X.509 v3")
        if not is_ca(issuer):
            raise denied(f"{what} is not a CA")
        usage = key_usage(issuer)
        if usage is None or not usage.key_cert_sign:
            raise denied(f"{what} may not sign certificates (keyUsage lacks keyCertSign)")
        check_issuer(issuer, below, what)
        check_hash(issuer, what)
        check_valid(issuer, what)
        try:
            current.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise denied("Untrusted signing certificate")
        current = issuer
    raise denied("the certificate chain is too long")


class Service:
    def __init__(self, args):
        with open(args.anchor_ca, "rb") as f:
            self.anchor = x509.load_pem_x509_certificate(f.read())
        self.region = args.region
        self.trust_anchor = args.trust_anchor_arn
        self.profile = args.profile_arn
        self.roles = set(args.role_arn)
        self.session_seconds = args.session_seconds
        self.calls, self.calls_lock = [], threading.Lock()
        self.sts = boto3.client(
            "sts",
            endpoint_url=args.moto,
            region_name=args.region,
            aws_access_key_id="AKIAROLESANYWHERE000",
            aws_secret_access_key="rolesanywhere",
        )

    def verify(self, method, target, headers, body):
        """The leaf certificate of a correctly signed request."""
        path, _, query = target.partition("?")
        if method != "POST" or path != "/sessions":
            raise Refused(404, "ResourceNotFoundException", "no such operation")
        auth = headers.get("authorization")
        if not auth:
            raise denied("missing Authorization header")
        algorithm, serial, scope, signed, signature = parse_authorization(auth)
        if algorithm not in ALGORITHMS:
            raise denied(f"unsupported signing algorithm {algorithm}")
        for needed in ("host", "x-amz-date", "x-amz-x509"):
            if needed not in signed:
                raise denied(f"{needed} must be signed")
        if "x-amz-x509-chain" in headers and "x-amz-x509-chain" not in signed:
            raise denied("x-amz-x509-chain must be signed")
        if signed != sorted(signed):
            raise denied("SignedHeaders must be sorted")
        for name in signed:
            if name not in headers:
                raise denied(f"signed header {name} is missing")
        date = headers["x-amz-date"]
        try:
            at = datetime.datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            raise denied("malformed X-Amz-Date")
        if abs(now() - at) > MAX_SKEW:
            raise denied("Signature expired: X-Amz-Date is too far from now")
        parts = scope.split("/")
        if len(parts) != 4 or parts[0] != date[:8] or parts[2:] != [
            "rolesanywhere",
            "aws4_request",
        ]:
            raise denied("malformed credential scope")
        if parts[1] != self.region:
            raise denied(f"credential scope region {parts[1]} is not {self.region}")
        try:
            leaf = x509.load_der_x509_certificate(
                base64.b64decode(headers["x-amz-x509"], validate=True)
            )
            chain = [
                x509.load_der_x509_certificate(base64.b64decode(c, validate=True))
                for c in headers.get("x-amz-x509-chain", "").split(",")
                if c
            ]
        except ValueError:
            raise denied("malformed certificate header")
        try:
            key = leaf.public_key()
        except ValueError:
            raise denied("malformed certificate header")
        if serial != str(leaf.serial_number):
            raise denied("the credential's serial number is not the certificate's")
        if not isinstance(key, ALGORITHMS[algorithm]):
            raise denied("the algorithm does not fit the certificate's key")
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query(query),
                "".join(
                    f"{n}:{' '.join(headers[n].split())}\n" for n in signed
                ),
                ";".join(signed),
                hashlib.sha256(body).hexdigest(),
            ]
        )
        to_sign = "\n".join(
            [algorithm, date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        ).encode()
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, to_sign, padding.PKCS1v15(), hashes.SHA256())
            else:
                key.verify(signature, to_sign, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise mismatch()
        check_chain(leaf, chain, self.anchor)
        return leaf

    def parameters(self, query, body):
        try:
            fields = json.loads(body) if body else {}
        except ValueError:
            raise invalid("the body is not JSON")
        if not isinstance(fields, dict):
            raise invalid("the body is not a JSON object")
        from_query = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        params = {}
        for name in ("profileArn", "roleArn", "trustAnchorArn"):
            a, b = from_query.get(name), fields.get(name)
            if a is not None and b is not None and a != b:
                raise invalid(f"{name} differs between the query and the body")
            value = a if a is not None else b
            if not isinstance(value, str) or not value:
                raise invalid(f"{name} is required")
            params[name] = value
        duration = fields.get("durationSeconds", 3600)
        if not isinstance(duration, int) or not 900 <= duration <= 43200:
            raise invalid("durationSeconds must be from 900 to 43200")
        params["durationSeconds"] = duration
        return params

    def create_session(self, method, target, headers, body):
        leaf = self.verify(method, target, headers, body)
        params = self.parameters(target.partition("?")[2], body)
        if params["trustAnchorArn"] != self.trust_anchor:
            raise Refused(404, "ResourceNotFoundException", "no such trust anchor")
        if params["profileArn"] != self.profile:
            raise Refused(404, "ResourceNotFoundException", "no such profile")
        if params["roleArn"] not in self.roles:
            raise denied(f"the profile does not allow {params['roleArn']}")
        for arn in (params["trustAnchorArn"], params["profileArn"]):
            if arn.split(":")[3] != self.region:
                raise invalid(f"{arn} is not in {self.region}")
        session = str(leaf.serial_number)[:64]
        got = self.sts.assume_role(
            RoleArn=params["roleArn"],
            RoleSessionName=session,
            DurationSeconds=params["durationSeconds"],
        )
        c = got["Credentials"]
        expiration = c["Expiration"].astimezone(datetime.timezone.utc)
        if self.session_seconds is not None:
            expiration = now() + datetime.timedelta(seconds=self.session_seconds)
        return {
            "credentialSet": [
                {
                    "assumedRoleUser": {
                        "arn": got["AssumedRoleUser"]["Arn"],
                        "assumedRoleId": got["AssumedRoleUser"]["AssumedRoleId"],
                    },
                    "credentials": {
                        "accessKeyId": c["AccessKeyId"],
                        "secretAccessKey": c["SecretAccessKey"],
                        "sessionToken": c["SessionToken"],
                        "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                    "packedPolicySize": 0,
                    "roleArn": params["roleArn"],
                    "sourceIdentity": session,
                }
            ],
            "subjectArn": f"arn:aws:rolesanywhere:{self.region}:{self.profile.split(':')[4]}:subject/{session}",
        }

    def record(self, headers, status, reason):
        """One CreateSession received, for `GET /_calls`. The serial is
        read here, apart from `verify`, so a refused request names its
        certificate too."""
        try:
            leaf = x509.load_der_x509_certificate(
                base64.b64decode(headers.get("x-amz-x509", ""), validate=True)
            )
            serial = str(leaf.serial_number)
        except ValueError:
            serial = None
        with self.calls_lock:
            self.calls.append({"serial": serial, "status": status, "reason": reason})

    def calls_so_far(self):
        with self.calls_lock:
            return list(self.calls)


def handler_for(service):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, payload, error=None):
            if error:
                payload = {"__type": error, **payload}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if error:
                self.send_header("X-Amzn-ErrorType", error)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            # Header names are case-insensitive; a repeated one is joined
            # with commas, as SigV4 canonicalizes it.
            headers = {}
            for name, value in self.headers.items():
                name = name.lower()
                headers[name] = f"{headers[name]},{value}" if name in headers else value
            if self.command == "GET" and self.path == "/_calls":
                self.answer(200, service.calls_so_far())
                return
            try:
                out = service.create_session(self.command, self.path, headers, body)
            except Refused as e:
                print(f"refused {e.status} {e.kind}: {e.message}", file=sys.stderr, flush=True)
                service.record(headers, e.status, f"{e.kind}: {e.message}")
                self.answer(e.status, {"message": e.message}, e.kind)
                return
            except Exception as e:  # moto or a bug: the service's 500
                print(f"failed: {e!r}", file=sys.stderr, flush=True)
                service.record(headers, 500, "InternalServerException: internal error")
                self.answer(500, {"message": "internal error"}, "InternalServerException")
                return
            print(f"issued {out['credentialSet'][0]['credentials']['accessKeyId'][-4:]}", file=sys.stderr, flush=True)
            service.record(headers, 201, None)
            self.answer(201, out)

        do_POST = handle_any
        do_GET = handle_any
        do_PUT = handle_any

        def log_message(self, *args):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--moto", required=True)
    p.add_argument("--anchor-ca", required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--trust-anchor-arn", required=True)
    p.add_argument("--profile-arn", required=True)
    p.add_argument("--role-arn", action="append", required=True)
    p.add_argument("--session-seconds", type=int)
    args = p.parse_args()
    service = Service(args)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(service))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
