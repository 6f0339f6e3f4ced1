//! The IMDS protocol, free of I/O: requests in, responses out. This module
//! must not use tokio, axum, libc or the file system; the HTTP layer turns
//! HTTP into `Request` and `Response` into HTTP.

mod catalog;
pub mod headers;
mod iam;
mod instance;
mod json;
mod request;
mod respond;
mod response;
mod token;
pub mod upstream;

pub use catalog::identity_document;
pub use instance::{InstanceData, NetworkInterface};
pub use request::{HeaderField, Method, Request};
pub use respond::{Caller, DEFAULT_HOST_NAMES, HttpTokens, Imds, Settings};
pub use response::{Answer, Class, ContentType, Forward, Forwarded, NOT_FOUND_PAGE, Response};
pub use token::{InvalidTtl, TokenAuthority, TokenError, parse_ttl};

#[cfg(test)]
mod tests;
