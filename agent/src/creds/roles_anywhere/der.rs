//! The little DER reading the signer needs: a certificate's serial
//! number, which `Credential=` carries in decimal. (Everything else about
//! the certificate is the service's to check.)

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// Not the DER shape of an X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(&'static str),
}

/// One DER element: its tag and contents, and what follows it.
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
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

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xa0;

/// The serial number of DER certificate `cert`, in decimal.
pub fn serial_decimal(cert: &[u8]) -> Result<String, DerError> {
    let (tag, certificate, _) = element(cert)?;
    if tag != SEQUENCE {
        return Err(DerError::Malformed("not a SEQUENCE"));
    }
    let (tag, tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return Err(DerError::Malformed("no tbsCertificate"));
    }
    let (mut tag, mut serial, rest) = element(tbs)?;
    if tag == VERSION {
        (tag, serial, _) = element(rest)?;
    }
    if tag != INTEGER || serial.is_empty() {
        return Err(DerError::Malformed("no serial number"));
    }
    if serial[0] & 0x80 != 0 {
        // RFC 5280 serials are positive; a negative one is a broken CA.
        return Err(DerError::Malformed("negative serial number"));
    }
    Ok(to_decimal(serial))
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
        assert_eq!(
            serial_decimal(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x2a]).unwrap(),
            "42"
        );
        // With the version field first.
        assert_eq!(
            serial_decimal(&[
                0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x07
            ])
            .unwrap(),
            "7"
        );
    }
}
