"""Test certificates for Roles Anywhere, written to DIR as PEM (every
signature SHA-256, as the service wants, but `sha1`'s):
- a trust anchor CA `ca`, and an intermediate CA `inter` below it;
- leaves `rsa` (2048, by the CA), `p256` and `p384` (by the
  intermediate: sent with `inter` as chain), `rotated` (P-256, by the
  CA: a new key and serial, for a renewal);
- look-alikes, so the proof can swap a header for another certificate
  the service would take on its own and only the request's signature
  tells them apart: `twin` (p256's key, serial and issuer, another
  subject) and `inter-twin` (inter's key and subject, another serial
  and validity: p256 chains through either);
- leaves the service refuses: `expired`, `future` (not yet valid),
  `untrusted` (by a CA of its own), `ca-leaf` (a CA certificate used as
  a leaf), `sha1` (by the CA, signed with SHA-1), `no-key-usage` (no
  keyUsage at all), `bad-inter-leaf` (by `bad-inter`, an intermediate
  without keyCertSign: sent with `bad-inter` as chain), and `deep-leaf`
  (by `sub-inter`, a CA below `short-inter`, whose pathLen 0 allows no CA
  below it: sent with `deep-chain.pem`, sub-inter then short-inter);
- `server` (TLS, for 127.0.0.1, by the CA).
Each X has X.pem and X.key (PKCS#8, unencrypted). Prints every
certificate's serial number (decimal) as JSON, by name.

Usage: ra_pki.py DIR
       ra_pki.py DIR leaf NAME PUBLIC_KEY.der
The second form issues DIR/NAME.pem, by the CA in DIR, for a public key
whose private half is elsewhere (a token's: SubjectPublicKeyInfo DER), and
prints its serial."""

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
# AlgorithmIdentifier DER of ecdsa-with-SHA256 and of ecdsa-with-SHA1.
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
ECDSA_SHA1 = bytes.fromhex("300906072a8648ce3d0401")


def key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())


def der(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def der_content(data):
    """The content of the DER element that `data` is."""
    n = data[1]
    if n < 0x80:
        return data[2 : 2 + n]
    size = n & 0x7F
    n = int.from_bytes(data[2 : 2 + size], "big")
    return data[2 + size : 2 + size + n]


def resigned_sha1(c, issuer_key):
    """`c` signed again by `issuer_key` with ECDSA over SHA-1.
    cryptography no longer signs certificates with SHA-1, so the TBS
    certificate is edited by hand: its signature field (before the key,
    so the first AlgorithmIdentifier in it) becomes ecdsa-with-SHA1."""
    tbs = der_content(c.tbs_certificate_bytes)
    assert ECDSA_SHA256 in tbs, "an ECDSA-SHA256 certificate"
    tbs = der(0x30, tbs.replace(ECDSA_SHA256, ECDSA_SHA1, 1))
    signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA1()))
    return x509.load_der_x509_certificate(
        der(0x30, tbs + ECDSA_SHA1 + der(0x03, b"\x00" + signature))
    )


def public_of(key):
    """A private key's public half; a public key as it is."""
    return key.public_key() if hasattr(key, "public_key") else key


def cert(
    name,
    subject_key,
    issuer=None,
    ca=False,
    start=NOW - DAY,
    end=NOW + 30 * DAY,
    server=False,
    serial=None,
    key_usage=True,
    key_cert_sign=None,
    path_length=None,
    sha1=False,
):
    """`key_usage` False leaves keyUsage out; `key_cert_sign` (default:
    `ca`) says whether it is granted; `sha1` signs with SHA-1."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer if issuer else (None, subject_key)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(public_of(subject_key))
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
            critical=True,
        )
    )
    if key_usage:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca and isinstance(public_of(subject_key), rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca if key_cert_sign is None else key_cert_sign,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    c = b.sign(issuer_key, hashes.SHA256())
    return resigned_sha1(c, issuer_key) if sha1 else c


def pem(c):
    return c.public_bytes(serialization.Encoding.PEM)


def write(directory, name, c, k):
    with open(os.path.join(directory, f"{name}.pem"), "wb") as f:
        f.write(pem(c))
    with open(os.path.join(directory, f"{name}.key"), "wb") as f:
        f.write(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def leaf_for(directory, name, public_der):
    """`name`.pem for the public key in `public_der`, by the CA in
    `directory`."""
    with open(os.path.join(directory, "ca.pem"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(directory, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(public_der, "rb") as f:
        public = serialization.load_der_public_key(f.read())
    c = cert(f"imds-agent test {name}", public, (ca, ca_key))
    with open(os.path.join(directory, f"{name}.pem"), "wb") as f:
        f.write(c.public_bytes(serialization.Encoding.PEM))
    print(json.dumps({name: str(c.serial_number)}), flush=True)


def main():
    directory = sys.argv[1]
    if sys.argv[2:3] == ["leaf"]:
        leaf_for(directory, sys.argv[3], sys.argv[4])
        return
    os.makedirs(directory, exist_ok=True)
    ca_key = key("p256")
    ca = cert("imds-agent test trust anchor", ca_key, ca=True, end=NOW + 365 * DAY)
    inter_key = key("p384")
    inter = cert("imds-agent test intermediate", inter_key, (ca, ca_key), ca=True)
    other_key = key("p256")
    other = cert("somebody else's CA", other_key, ca=True)
    made = {"ca": (ca, ca_key), "inter": (inter, inter_key)}
    # The same key and subject as inter: what inter signed, this verifies.
    made["inter-twin"] = (
        cert(
            "imds-agent test intermediate",
            inter_key,
            (ca, ca_key),
            ca=True,
            start=NOW - 2 * DAY,
            end=NOW + 60 * DAY,
        ),
        inter_key,
    )
    bad_inter_key = key("p256")
    made["bad-inter"] = (
        cert("imds-agent test bad-inter", bad_inter_key, (ca, ca_key), ca=True, key_cert_sign=False),
        bad_inter_key,
    )
    short_key, sub_key = key("p256"), key("p256")
    made["short-inter"] = (
        cert("imds-agent test short-inter", short_key, (ca, ca_key), ca=True, path_length=0),
        short_key,
    )
    made["sub-inter"] = (
        cert("imds-agent test sub-inter", sub_key, made["short-inter"], ca=True),
        sub_key,
    )
    for name, kind, issuer, extra in [
        ("rsa", "rsa", (ca, ca_key), {}),
        ("p256", "p256", (inter, inter_key), {}),
        ("p384", "p384", (inter, inter_key), {}),
        ("rotated", "p256", (ca, ca_key), {}),
        ("expired", "p256", (ca, ca_key), {"start": NOW - 10 * DAY, "end": NOW - DAY}),
        ("future", "p256", (ca, ca_key), {"start": NOW + DAY, "end": NOW + 10 * DAY}),
        ("untrusted", "p256", (other, other_key), {}),
        ("ca-leaf", "p256", (ca, ca_key), {"ca": True}),
        ("sha1", "p256", (ca, ca_key), {"sha1": True}),
        ("no-key-usage", "p256", (ca, ca_key), {"key_usage": False}),
        ("bad-inter-leaf", "p256", made["bad-inter"], {}),
        ("deep-leaf", "p256", made["sub-inter"], {}),
        ("server", "p256", (ca, ca_key), {"server": True}),
    ]:
        k = key(kind)
        made[name] = (cert(f"imds-agent test {name}", k, issuer, **extra), k)
    # p256's key, serial and issuer under another subject.
    p256, p256_key = made["p256"]
    made["twin"] = (
        cert("imds-agent test twin", p256_key, (inter, inter_key), serial=p256.serial_number),
        p256_key,
    )
    for name, (c, k) in made.items():
        write(directory, name, c, k)
    with open(os.path.join(directory, "deep-chain.pem"), "wb") as f:
        f.write(pem(made["sub-inter"][0]) + pem(made["short-inter"][0]))
    print(json.dumps({name: str(c.serial_number) for name, (c, _) in made.items()}), flush=True)


if __name__ == "__main__":
    main()
