//! The rule files: `roles.d/*.toml`, read as one set. A set with a bad file
//! is refused whole, so a typo never leaves the other files' rules half
//! applied; the caller keeps the last good set.

use std::path::{Path, PathBuf};

use super::rules::{RuleSet, parse_file};
use crate::config::{ConfigError, Origin};

/// The rule files of a directory as read: names and texts, in name order.
/// Two equal snapshots give the same rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    files: Vec<(PathBuf, Result<String, String>)>,
    missing: bool,
}

impl Snapshot {
    /// Reads every `*.toml` file in `dir`. A missing directory is an empty
    /// snapshot.
    pub fn read(dir: &Path) -> Result<Self, ConfigError> {
        let paths = match rule_files(dir) {
            Ok(paths) => paths,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    files: Vec::new(),
                    missing: true,
                });
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    origin: Origin::File(dir.to_owned()),
                    source,
                });
            }
        };
        let files = paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string());
                (path, text)
            })
            .collect();
        Ok(Self {
            files,
            missing: false,
        })
    }

    /// Whether the directory was missing.
    pub fn missing(&self) -> bool {
        self.missing
    }

    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The rules, or every file's error.
    pub fn parse(&self) -> Result<RuleSet, Vec<ConfigError>> {
        let mut parsed = Vec::new();
        let mut errors = Vec::new();
        for (path, text) in &self.files {
            let origin = Origin::File(path.clone());
            match text {
                Ok(text) => match parse_file(text, &origin) {
                    Ok(rules) => parsed.push(rules),
                    Err(e) => errors.push(e),
                },
                Err(reason) => errors.push(ConfigError::Read {
                    origin,
                    source: std::io::Error::other(reason.clone()),
                }),
            }
        }
        if errors.is_empty() {
            Ok(RuleSet::from_files(parsed))
        } else {
            Err(errors)
        }
    }
}

/// Reads and parses every `*.toml` file in `dir`, in name order. A missing
/// directory is an empty set. Every bad file is reported.
pub fn load(dir: &Path) -> Result<RuleSet, Vec<ConfigError>> {
    Snapshot::read(dir).map_err(|e| vec![e])?.parse()
}

fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        // Editors' temporary files (`.web.toml.swp`, `web.toml~`) are not
        // rule files.
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_files_in_name_order_and_refuses_a_bad_set() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(
            dir.path().join("20-b.toml"),
            "[[rule]]\nuid = 1\nrole = \"from-b\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.toml"),
            "[[rule]]\nuid = 1\nrole = \"from-a\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".10-a.toml.swp"), "garbage").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a rule file").unwrap();
        let set = load(dir.path()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.rules()[0].role.name, "from-a", "same rank: file order");
        std::fs::write(
            dir.path().join("30-bad.toml"),
            "[[rule]]\nuid = 1\nrole = \"bad role\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("40-bad.toml"), "[[rule]]\nrole = \"x\"\n").unwrap();
        let errors = load(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0]
                .to_string()
                .contains("30-bad.toml:3: rule[0].role"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1]
                .to_string()
                .contains("40-bad.toml:2: rule[0].role: the rule has no condition"),
            "{}",
            errors[1]
        );
    }
}
