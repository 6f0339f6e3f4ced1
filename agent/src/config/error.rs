//! Configuration errors. Every one names the file, the key and what is
//! wrong, and the line when the key is in the file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// The configuration built into the binary (`imds-agent dev`).
    Embedded,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Embedded => f.write_str("<built-in dev config>"),
        }
    }
}

/// A configuration that can't be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read the config file")]
    Read {
        /// The file.
        origin: Origin,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file named by a key could not be read.
    #[error("{origin}{line}: {key}: cannot read {}", .path.display(), line = LineSuffix(*.line))]
    ReadReferenced {
        /// The config file.
        origin: Origin,
        /// The key that names the file.
        key: String,
        /// The line of the key.
        line: Option<usize>,
        /// The file it names.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A key has a value that can't be used, or the file is not valid TOML.
    #[error("{origin}{line}: {key}: {message}", line = LineSuffix(*.line))]
    Invalid {
        /// The config file.
        origin: Origin,
        /// The key (`server.hop_limit`), or `(document)` for syntax errors.
        key: String,
        /// The line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

struct LineSuffix(Option<usize>);

impl fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// The text of a config and where it came from, to turn a key into a line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) origin: &'a Origin,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// An `Invalid` error for `key`, with the line of the key if the file
    /// has it.
    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            key: key.to_owned(),
            line: self.line_of(key),
            message: message.into(),
        }
    }

    /// A `ReadReferenced` error for the file `path` named by `key`.
    pub(crate) fn unreadable(&self, key: &str, path: &Path, source: io::Error) -> ConfigError {
        ConfigError::ReadReferenced {
            origin: self.origin.clone(),
            key: key.to_owned(),
            line: self.line_of(key),
            path: path.to_owned(),
            source,
        }
    }

    /// The 1-based line where the dotted `key` is set (`server.listen`,
    /// `instance.tags.Name`), if the file sets it.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        let root = DeValue::Table(DeTable::parse(self.text).ok()?.into_inner());
        let mut parts = key.split('.');
        let mut value = root.get(parts.next()?)?;
        for part in parts {
            value = value.get_ref().get(part)?;
        }
        Some(self.line_at(value.span().start))
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}
