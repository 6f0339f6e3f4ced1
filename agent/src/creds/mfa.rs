//! MFA codes: checking a code handed in by a person, and computing one from
//! a stored TOTP secret (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits,
//! the parameters of every AWS virtual MFA device).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;

/// A six-digit MFA code.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaCode(String);

impl fmt::Debug for MfaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A code is a short-lived secret: never print it.
        f.write_str("MfaCode(..)")
    }
}

/// Why an MFA code or secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MfaError {
    /// Not six digits.
    #[error("an MFA code is exactly six digits")]
    BadCode,
    /// Not a base32 TOTP secret.
    #[error("the TOTP secret is not base32 (letters A-Z and digits 2-7, at least 16 of them)")]
    BadSecret,
}

impl MfaCode {
    /// Checks a code a person typed: exactly six ASCII digits.
    pub fn parse(code: &str) -> Result<Self, MfaError> {
        let code = code.trim();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(code.to_owned()))
        } else {
            Err(MfaError::BadCode)
        }
    }

    /// The digits, for the one STS call that uses them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A TOTP secret, as AWS shows it when a virtual MFA device is created.
#[derive(Clone)]
pub struct TotpSecret {
    key: hmac::Key,
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// The length of a TOTP step.
pub const STEP_SECONDS: u64 = 30;

impl TotpSecret {
    /// Decodes a base32 secret (case and spaces ignored, `=` padding
    /// optional).
    pub fn parse(base32: &str) -> Result<Self, MfaError> {
        let bytes = decode_base32(base32).ok_or(MfaError::BadSecret)?;
        if bytes.len() < 10 {
            return Err(MfaError::BadSecret);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &bytes),
        })
    }

    /// The TOTP step `at` falls in.
    pub fn step(at: SystemTime) -> u64 {
        at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / STEP_SECONDS
    }

    /// The code for step `step`.
    pub fn code_for_step(&self, step: u64) -> MfaCode {
        let tag = hmac::sign(&self.key, &step.to_be_bytes());
        let mac = tag.as_ref();
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let binary = u32::from_be_bytes([
            mac[offset],
            mac[offset + 1],
            mac[offset + 2],
            mac[offset + 3],
        ]) & 0x7fff_ffff;
        MfaCode(format!("{:06}", binary % 1_000_000))
    }
}

fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut bits: u64 = 0;
    let mut count = 0u32;
    let mut out = Vec::new();
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let value = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// RFC 6238 appendix B, SHA-1 column, last six digits.
    #[test]
    fn rfc6238_vectors() {
        // "12345678901234567890" in base32.
        let secret = TotpSecret::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        let cases = [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ];
        for (t, want) in cases {
            let step = TotpSecret::step(UNIX_EPOCH + Duration::from_secs(t));
            assert_eq!(secret.code_for_step(step).expose(), want, "t={t}");
        }
    }

    #[test]
    fn secrets_are_forgiving_about_case_spaces_and_padding() {
        let a = TotpSecret::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        let b = TotpSecret::parse("gezd gnbv gy3t qojq gezd gnbv gy3t qojq===").unwrap();
        assert_eq!(a.code_for_step(1).expose(), b.code_for_step(1).expose());
        for bad in ["", "GEZD", "GEZDGNBVGY3TQOJQ1!", "not base32 at all 0189"] {
            assert_eq!(
                TotpSecret::parse(bad).err(),
                Some(MfaError::BadSecret),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn codes_are_six_digits() {
        assert_eq!(MfaCode::parse(" 123456 ").unwrap().expose(), "123456");
        for bad in ["12345", "1234567", "12345a", "", "12 456", "１２３４５６"] {
            assert_eq!(MfaCode::parse(bad), Err(MfaError::BadCode), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", MfaCode::parse("123456").unwrap()),
            "MfaCode(..)"
        );
    }
}
