//! IMDSv2 session tokens.
//!
//! Tokens are stateless: a token carries its own expiry and a MAC over that
//! expiry and the identity of the workload it was minted for, under a key the
//! agent draws at start. Nothing is stored per token, so minting and checking
//! cost one HMAC each, and a restart of the agent invalidates every token
//! (clients answer the resulting 401 by fetching a new one).
//!
//! Layout before base64: `version (1) | expiry ms (8, BE) | nonce (8) | tag (16)`,
//! 33 bytes, 44 characters: close to the length of EC2's own tokens, well
//! under the 70 characters Firecracker's MMDS accepts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

use super::headers::{MAX_TOKEN_TTL, MIN_TOKEN_TTL};

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 8 + 8;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = BODY_LEN + TAG_LEN;
/// Base64 of `TOKEN_LEN` bytes. A longer header is refused before decoding.
const ENCODED_LEN: usize = TOKEN_LEN.div_ceil(3) * 4;

/// Why a token was refused. All of them answer 401; the kind is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not something this agent could have minted.
    #[error("token is malformed")]
    Malformed,
    /// Minted by another agent (or before a restart), tampered with, or
    /// minted for another workload.
    #[error("token is not valid for this caller")]
    BadSignature,
    /// Past its expiry.
    #[error("token has expired")]
    Expired,
}

/// Why a TTL header was refused: always a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token TTL must be a whole number of seconds from {MIN_TOKEN_TTL} to {MAX_TOKEN_TTL}")]
pub struct InvalidTtl;

/// Parses `X-aws-ec2-metadata-token-ttl-seconds`: decimal digits only (no
/// sign, no spaces, no exponent), within 1..=21600.
pub fn parse_ttl(value: &str) -> Result<u32, InvalidTtl> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidTtl);
    }
    let ttl: u64 = value.parse().map_err(|_| InvalidTtl)?;
    match u32::try_from(ttl) {
        Ok(ttl) if (MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) => Ok(ttl),
        _ => Err(InvalidTtl),
    }
}

/// Mints and checks tokens under one key.
pub struct TokenAuthority {
    key: hmac::Key,
    nonce: AtomicU64,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never print it.
        f.debug_struct("TokenAuthority").finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// A token authority keyed with `key` (32 random bytes drawn at start).
    /// `first_nonce` seeds the per-token counter; it only has to make tokens
    /// differ, so a random start is enough.
    pub fn new(key: [u8; 32], first_nonce: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            nonce: AtomicU64::new(first_nonce),
        }
    }

    /// Mints a token for `binding` (the caller's identity) that expires `ttl`
    /// seconds after `now` on the agent's monotonic clock.
    pub fn mint(&self, binding: &[u8], ttl: u32, now: Duration) -> String {
        let expiry = now.as_millis() as u64 + u64::from(ttl) * 1000;
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0u8; TOKEN_LEN];
        raw[0] = VERSION;
        raw[1..9].copy_from_slice(&expiry.to_be_bytes());
        raw[9..17].copy_from_slice(&nonce.to_be_bytes());
        let tag = self.tag(&raw[..BODY_LEN], binding);
        raw[BODY_LEN..].copy_from_slice(&tag.as_ref()[..TAG_LEN]);
        BASE64.encode(raw)
    }

    /// Checks `token` for `binding` at `now` and returns the seconds it has
    /// left, rounded up (what EC2 echoes in the TTL header of a GET).
    pub fn verify(&self, token: &str, binding: &[u8], now: Duration) -> Result<u32, TokenError> {
        if token.len() != ENCODED_LEN {
            return Err(TokenError::Malformed);
        }
        let mut raw = [0u8; TOKEN_LEN + 2];
        let n = BASE64
            .decode_slice(token, &mut raw)
            .map_err(|_| TokenError::Malformed)?;
        if n != TOKEN_LEN || raw[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        // `verify` on the truncated tag is not offered by ring, so compare in
        // constant time by hand.
        let tag = self.tag(&raw[..BODY_LEN], binding);
        if !constant_time_eq(&tag.as_ref()[..TAG_LEN], &raw[BODY_LEN..TOKEN_LEN]) {
            return Err(TokenError::BadSignature);
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&raw[1..9]);
        let expiry = u64::from_be_bytes(expiry);
        let now = now.as_millis() as u64;
        if expiry <= now {
            return Err(TokenError::Expired);
        }
        let left = (expiry - now).div_ceil(1000);
        Ok(u32::try_from(left)
            .unwrap_or(MAX_TOKEN_TTL)
            .min(MAX_TOKEN_TTL))
    }

    fn tag(&self, body: &[u8], binding: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(body);
        ctx.update(binding);
        ctx.sign()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> TokenAuthority {
        TokenAuthority::new([7; 32], 1)
    }

    const T0: Duration = Duration::from_secs(1000);

    #[test]
    fn ttl_parsing() {
        let good = [
            ("1", 1),
            ("21600", 21_600),
            ("300", 300),
            ("0021600", 21_600),
        ];
        for (raw, want) in good {
            assert_eq!(parse_ttl(raw), Ok(want), "{raw:?}");
        }
        let bad = [
            "",
            "0",
            "21601",
            "-1",
            "+5",
            " 5",
            "5 ",
            "1e3",
            "5.0",
            "abc",
            "99999999999",
            "18446744073709551617",
            "0x10",
        ];
        for raw in bad {
            assert_eq!(parse_ttl(raw), Err(InvalidTtl), "{raw:?}");
        }
    }

    #[test]
    fn minted_token_verifies_for_its_caller() {
        let a = authority();
        let token = a.mint(b"ip:10.0.0.1", 21_600, T0);
        assert_eq!(token.len(), 44);
        assert_eq!(a.verify(&token, b"ip:10.0.0.1", T0), Ok(21_600));
        assert_eq!(
            a.verify(&token, b"ip:10.0.0.1", T0 + Duration::from_millis(1500)),
            Ok(21_599)
        );
    }

    #[test]
    fn token_is_bound_to_the_caller() {
        let a = authority();
        let token = a.mint(b"ip:10.0.0.1", 60, T0);
        assert_eq!(
            a.verify(&token, b"ip:10.0.0.2", T0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(a.verify(&token, b"", T0), Err(TokenError::BadSignature));
    }

    #[test]
    fn token_expires() {
        let a = authority();
        let token = a.mint(b"x", 1, T0);
        assert_eq!(
            a.verify(&token, b"x", T0 + Duration::from_millis(999)),
            Ok(1)
        );
        assert_eq!(
            a.verify(&token, b"x", T0 + Duration::from_secs(1)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            a.verify(&token, b"x", T0 + Duration::from_secs(99_999)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tokens_differ_and_other_keys_refuse_them() {
        let a = authority();
        let t1 = a.mint(b"x", 60, T0);
        let t2 = a.mint(b"x", 60, T0);
        assert_ne!(t1, t2);
        let other = TokenAuthority::new([8; 32], 1);
        assert_eq!(other.verify(&t1, b"x", T0), Err(TokenError::BadSignature));
    }

    #[test]
    fn forged_and_garbage_tokens() {
        let a = authority();
        let good = a.mint(b"x", 60, T0);
        // Flip one bit in each byte position of the decoded token: every
        // change must be caught, including a forged longer expiry.
        let raw = BASE64.decode(&good).unwrap();
        for i in 0..raw.len() {
            let mut forged = raw.clone();
            forged[i] ^= 1;
            let forged = BASE64.encode(&forged);
            assert!(a.verify(&forged, b"x", T0).is_err(), "byte {i}");
        }
        let garbage = [
            "",
            "x",
            "AQAAA==",
            &"A".repeat(44),
            &"A".repeat(45),
            &"A".repeat(10_000),
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ];
        for g in garbage {
            assert!(a.verify(g, b"x", T0).is_err(), "{g:?}");
        }
    }
}
