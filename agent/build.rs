//! With the `ebpf` feature, the agent embeds the eBPF programs that
//! `cargo xtask build-ebpf` builds. Their absence fails the build with the
//! command that makes them.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=IMDS_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_EBPF");
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let object = std::env::var_os("IMDS_EBPF_OBJECT").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/ebpf/bpfel-unknown-none/release/agent-ebpf")
        },
        PathBuf::from,
    );
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.is_file() {
        panic!(
            "the eBPF programs are missing ({}): run `cargo xtask build-ebpf` first (it installs its toolchain on a fresh machine)",
            object.display()
        );
    }
    let object = object.canonicalize().expect("the eBPF object's path");
    println!("cargo:rustc-env=IMDS_EBPF_OBJECT={}", object.display());
}
