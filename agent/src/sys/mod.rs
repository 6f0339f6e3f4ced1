//! Thin wrappers over Linux calls that have no safe crate API. The only
//! module with `unsafe`.

pub mod socket;
