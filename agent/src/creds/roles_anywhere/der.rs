//! The little DER reading the agent needs: a certificate's serial number
//! (`Credential=` carries it in decimal), its validity (to warn before it
//! expires) and its public key (to check the private key is its). Whether
//! the certificate is trusted is the service's to check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// Not the DER shape of an X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(&'static str),
}

/// One DER element: its tag and contents, and what follows it.
pub(crate) fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or(DerError::Malformed("truncated"))?;
    let (&first, rest) = rest.split_first().ok_or(DerError::Malformed("truncated"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        // Certificates are far below 2^32 bytes; indefinite lengths are BER.
        if count == 0 || count > 4 || rest.len() < count {
            return Err(DerError::Malformed("bad length"));
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return Err(DerError::Malformed("truncated"));
    }
    let (contents, after) = rest.split_at(len);
    Ok((tag, contents, after))
}

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xa0;

/// What the agent reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number, in decimal.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The subjectPublicKey bits: an RSAPublicKey (DER) or an EC point.
    pub public_key: Vec<u8>,
    /// The key's algorithm OID (contents).
    pub key_algorithm: Vec<u8>,
    /// The curve's OID (contents), for EC keys.
    pub key_curve: Option<Vec<u8>>,
}

/// Expects an element with `tag`.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DerError> {
    let (got, contents, rest) = element(input)?;
    if got != tag {
        return Err(DerError::Malformed(what));
    }
    Ok((contents, rest))
}

/// Reads DER certificate `cert`.
pub fn cert_info(cert: &[u8]) -> Result<CertInfo, DerError> {
    let (certificate, _) = expect(cert, SEQUENCE, "not a SEQUENCE")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "no tbsCertificate")?;
    let (mut tag, mut serial, mut rest) = element(tbs)?;
    if tag == VERSION {
        (tag, serial, rest) = element(rest)?;
    }
    if tag != INTEGER || serial.is_empty() {
        return Err(DerError::Malformed("no serial number"));
    }
    // RFC 5280 allows 20 octets; turning a huge one into decimal would
    // take minutes.
    if serial.len() > 64 {
        return Err(DerError::Malformed("a serial number over 64 octets"));
    }
    if serial[0] & 0x80 != 0 {
        // RFC 5280 serials are positive; a negative one is a broken CA.
        return Err(DerError::Malformed("negative serial number"));
    }
    let (_, rest) = expect(rest, SEQUENCE, "no signature algorithm")?;
    let (_, rest) = expect(rest, SEQUENCE, "no issuer")?;
    let (validity, rest) = expect(rest, SEQUENCE, "no validity")?;
    let (not_before, after) = time(validity)?;
    let (not_after, _) = time(after)?;
    let (_, rest) = expect(rest, SEQUENCE, "no subject")?;
    let (spki, _) = expect(rest, SEQUENCE, "no subjectPublicKeyInfo")?;
    let (algorithm, bits) = expect(spki, SEQUENCE, "no key algorithm")?;
    let (key_algorithm, params) = expect(algorithm, OID, "no key algorithm")?;
    let key_curve = match element(params) {
        Ok((OID, curve, _)) => Some(curve.to_vec()),
        _ => None,
    };
    let (bits, _) = expect(bits, BIT_STRING, "no public key")?;
    let public_key = match bits.split_first() {
        Some((0, key)) => key.to_vec(),
        _ => return Err(DerError::Malformed("public key not whole bytes")),
    };
    Ok(CertInfo {
        serial: to_decimal(serial),
        not_before,
        not_after,
        public_key,
        key_algorithm: key_algorithm.to_vec(),
        key_curve,
    })
}

/// The serial number of DER certificate `cert`, in decimal.
pub fn serial_decimal(cert: &[u8]) -> Result<String, DerError> {
    cert_info(cert).map(|c| c.serial)
}

/// A UTCTime or GeneralizedTime (`…Z`, whole seconds, as RFC 5280 wants).
fn time(input: &[u8]) -> Result<(SystemTime, &[u8]), DerError> {
    let (tag, text, rest) = element(input)?;
    let bad = DerError::Malformed("bad validity time");
    // Digits and a final Z only: anything else is refused before it is
    // sliced (a multibyte character would split a slice).
    let (digits, zulu) = text.split_at(text.len().saturating_sub(1));
    if zulu != b"Z" || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let text = std::str::from_utf8(text).map_err(|_| bad.clone())?;
    let (year, rest_text) = match tag {
        UTC_TIME if text.len() == 13 => {
            let yy: i64 = text[..2].parse().map_err(|_| bad.clone())?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 15 => {
            (text[..4].parse().map_err(|_| bad.clone())?, &text[4..])
        }
        _ => return Err(bad),
    };
    if !rest_text.ends_with('Z') || !rest_text[..10].bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let n = |i: usize| -> i64 { rest_text[i..i + 2].parse().unwrap_or(-1) };
    let (month, day, hour, minute, second) = (n(0), n(2), n(4), n(6), n(8));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad);
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let at = u64::try_from(secs).map_err(|_| bad)?;
    Ok((UNIX_EPOCH + Duration::from_secs(at), rest))
}

/// A big-endian unsigned integer in decimal.
fn to_decimal(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = vec![0]; // little-endian base 10
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for digit in &mut digits {
            let v = u32::from(*digit) * 256 + carry;
            *digit = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_of_big_integers() {
        assert_eq!(to_decimal(&[0]), "0");
        assert_eq!(to_decimal(&[0x01, 0x00]), "256");
        assert_eq!(to_decimal(&[0x00, 0xff]), "255");
        assert_eq!(
            to_decimal(&[0xff; 16]),
            u128::MAX.to_string(),
            "beyond 64 bits"
        );
        // 20 bytes, the most RFC 5280 allows.
        assert_eq!(
            to_decimal(&[0x12; 20]),
            "103164821458651970696730694074090566093359944210"
        );
    }

    #[test]
    fn a_real_certificate() {
        let info = cert_info(include_bytes!("testdata/rsa.crt.der")).unwrap();
        assert_eq!(info.serial, "4242");
        assert!(info.not_after > info.not_before);
        assert_eq!(
            info.key_algorithm,
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            "rsaEncryption"
        );
        let ec = cert_info(include_bytes!("testdata/ec-p256.crt.der")).unwrap();
        assert_eq!(ec.public_key.len(), 65, "an uncompressed P-256 point");
        assert_eq!(
            ec.key_curve.as_deref(),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07][..]),
            "prime256v1"
        );
    }

    #[test]
    fn validity_times() {
        let utc = [
            0x17, 13, b'2', b'4', b'0', b'2', b'2', b'9', b'1', b'2', b'3', b'4', b'5', b'6', b'Z',
        ];
        let (t, _) = time(&utc).unwrap();
        assert_eq!(crate::timefmt::iso8601(t), "2024-02-29T12:34:56Z");
        let mut generalized = vec![0x18, 15];
        generalized.extend_from_slice(b"20991231235959Z");
        assert_eq!(
            crate::timefmt::iso8601(time(&generalized).unwrap().0),
            "2099-12-31T23:59:59Z"
        );
        let mut local = vec![0x18, 15];
        local.extend_from_slice(b"20991231235959+");
        assert!(time(&local).is_err());
        // A multibyte character, a sign: refused, no panic.
        for bad in [
            &b"\xc3\xa92031231235959Z"[..],
            b"-1231231235959Z",
            b"2\xe2\x82\xac1231235959Z",
        ] {
            let mut t = vec![0x18, bad.len() as u8];
            t.extend_from_slice(bad);
            assert!(time(&t).is_err(), "{bad:?}");
            let mut u = vec![0x17, bad.len() as u8];
            u.extend_from_slice(bad);
            assert!(time(&u).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_certificates_are_refused() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x30],
            &[0x30, 0x80, 0x00, 0x00],
            &[0x31, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x81],
            &[0x30, 0x04, 0x30, 0x02, 0x02, 0x00],
        ] {
            assert!(serial_decimal(bad).is_err(), "{bad:?}");
        }
        // A serial alone is not a certificate.
        assert!(serial_decimal(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x2a]).is_err());
    }
}
