"""Test certificates for Roles Anywhere, written to DIR as PEM (every
signature SHA-256, as the service wants): a trust anchor CA `ca`, an
intermediate CA `inter` below it, leaves `rsa` (2048, by the CA), `p256`
and `p384` (by the intermediate: sent with `inter` as chain), `expired`,
`future` (not yet valid), `untrusted` (by a CA of its own), `ca-leaf` (a
CA certificate used as a leaf), and `server` (TLS, for 127.0.0.1, by the
CA). Each X has X.pem and X.key (PKCS#8, unencrypted). Prints the leaves'
serial numbers as JSON.

Usage: ra_pki.py DIR"""

import datetime
import ipaddress
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())


def cert(name, subject_key, issuer=None, ca=False, start=NOW - DAY, end=NOW + 30 * DAY, server=False, serial=None):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer if issuer else (None, subject_key)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(subject_key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca and isinstance(subject_key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def write(directory, name, c, k):
    with open(os.path.join(directory, f"{name}.pem"), "wb") as f:
        f.write(c.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, f"{name}.key"), "wb") as f:
        f.write(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def main():
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    ca_key = key("p256")
    ca = cert("imds-agent test trust anchor", ca_key, ca=True, end=NOW + 365 * DAY)
    inter_key = key("p384")
    inter = cert("imds-agent test intermediate", inter_key, (ca, ca_key), ca=True)
    other_key = key("p256")
    other = cert("somebody else's CA", other_key, ca=True)
    made = {"ca": (ca, ca_key), "inter": (inter, inter_key)}
    for name, kind, issuer, extra in [
        ("rsa", "rsa", (ca, ca_key), {}),
        ("p256", "p256", (inter, inter_key), {}),
        ("p384", "p384", (inter, inter_key), {}),
        ("expired", "p256", (ca, ca_key), {"start": NOW - 10 * DAY, "end": NOW - DAY}),
        ("future", "p256", (ca, ca_key), {"start": NOW + DAY, "end": NOW + 10 * DAY}),
        ("untrusted", "p256", (other, other_key), {}),
        ("ca-leaf", "p256", (ca, ca_key), {"ca": True}),
        ("server", "p256", (ca, ca_key), {"server": True}),
    ]:
        k = key(kind)
        made[name] = (cert(f"imds-agent test {name}", k, issuer, **extra), k)
    for name, (c, k) in made.items():
        write(directory, name, c, k)
    print(json.dumps({name: str(c.serial_number) for name, (c, _) in made.items()}), flush=True)


if __name__ == "__main__":
    main()
