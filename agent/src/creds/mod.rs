//! Credentials: what a role's credentials are, where they come from (the
//! `CredentialSource` trait) and how roles are named.

mod role;
mod source;
mod static_source;

pub use role::{Role, RoleError, RoleSpec, unique_id};
pub use source::{CredentialSource, Credentials, Keys, Lookup, Secret, Unavailable};
pub use static_source::StaticSource;
