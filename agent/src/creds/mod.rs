//! Credentials: what a role's credentials are, where they come from (the
//! `CredentialSource` trait: fixed keys, or the STS engine) and how roles are
//! named.

pub mod engine;
pub mod mfa;
mod role;
pub mod roles_anywhere;
pub mod session_name;
mod source;
mod source_failure;
mod static_source;
pub mod sts;

pub use role::{Role, RoleError, RoleSpec, SessionParams, is_account_id, unique_id};
pub use source::{
    Changed, CredentialSource, Credentials, Holder, KeySuffix, Keys, Lookup, Rendered, Secret,
    Unavailable, User,
};
pub use source_failure::{
    SourceFailure, SourceRefused, SourceUnavailable, source_chain, source_failure,
};
pub use static_source::StaticSource;
