//! The Python side of tests and benchmarks (botocore, moto, ectou-metadata)
//! in a virtualenv under target/, so nothing is installed outside the
//! repository.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use crate::util::{root, run, work_dir};

/// The virtualenv's python, created and filled from tests/requirements.txt
/// if it is missing or the requirements changed.
pub(crate) fn venv() -> anyhow::Result<PathBuf> {
    let dir = work_dir().join("venv");
    let python = dir.join("bin").join("python");
    let requirements = root().join("tests").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = dir.join(".requirements");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&base)
        .args(["-m", "venv", "--clear"])
        .arg(&dir))
    .with_context(|| {
        format!("creating a virtualenv with {base} (set PYTHON to another interpreter)")
    })?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))
    .context("installing the test requirements from PyPI")?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// A program installed in the virtualenv (`moto_server`, `ectou_metadata`).
pub(crate) fn venv_bin(name: &str) -> anyhow::Result<PathBuf> {
    let python = venv()?;
    Ok(python.with_file_name(name))
}
