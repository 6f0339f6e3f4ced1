//! IAM Roles Anywhere: the agent's own credentials from an X.509
//! certificate, with no long-term keys. `sign` is SigV4-X509 as AWS's
//! `aws_signing_helper` computes it for `CreateSession`; `der` reads what
//! the signature needs from the certificate.

pub mod client;
pub mod der;
pub mod files;
pub mod keys;
mod lock;
pub mod material;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod provider;
pub mod sign;
