//! imds-agent: a local EC2 Instance Metadata Service that gives each
//! workload its own IAM role.
//!
//! The protocol (`imds`) is pure; `http` serves it; `attribution` tells
//! which workload asks (with `docker` keeping the container registry), `assign`
//! which role it gets and `creds` where the credentials come from; `sys`
//! holds the kernel interfaces (rtnetlink, nftables, sock_diag, pidfd) and
//! `privs` the privilege drop; `config` checks the configuration; `app`
//! wires it all and `cli` is the command line.

pub mod admin;
pub mod app;
pub mod assign;
pub mod attribution;
pub mod cli;
pub mod clock;
pub mod config;
pub mod creds;
pub mod desktop;
pub mod docker;
pub mod fdstore;
pub mod http;
pub mod imds;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod privs;
pub mod reload;
pub mod sys;
pub mod timefmt;
