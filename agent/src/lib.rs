//! imds-agent: a local EC2 Instance Metadata Service that gives each
//! workload its own IAM role.
//!
//! The protocol (`imds`) is pure; `http` serves it; `attribution` tells
//! which workload asks, `assign` which role it gets and `creds` where the
//! credentials come from; `config` checks the configuration; `app` wires
//! it all and `cli` is the command line.

pub mod admin;
pub mod app;
pub mod assign;
pub mod attribution;
pub mod cli;
pub mod clock;
pub mod config;
pub mod creds;
pub mod http;
pub mod imds;
pub mod logging;
pub mod sys;
pub mod timefmt;
