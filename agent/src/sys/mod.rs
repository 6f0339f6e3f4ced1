//! Thin wrappers over Linux calls that have no safe crate API. The only
//! module with `unsafe`.

pub mod btf;
pub mod diag;
#[cfg(feature = "ebpf")]
pub mod ebpf;
pub mod hangup;
pub mod inherited;
pub mod memfd;
#[cfg(feature = "nftables")]
pub mod nft;
pub mod pidfd;
pub mod proc;
pub mod rtnl;
pub mod socket;
pub mod xattr;
