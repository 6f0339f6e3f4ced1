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

impl ConfigError {
    /// The error with every cause after it, on one line.
    pub fn with_causes(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        message
    }
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

    /// Parses the text as TOML into `T`; an error names the key (as
    /// `table.key` or `rule[2].role`), the line and the problem.
    pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let syntax_error = |e: toml::de::Error| ConfigError::Invalid {
            origin: self.origin.clone(),
            key: "(document)".to_owned(),
            line: e.span().map(|s| self.line_at(s.start)),
            message: e.message().to_owned(),
        };
        let de = toml::de::Deserializer::parse(self.text).map_err(syntax_error)?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| self.line_at(s.start))
                .or_else(|| self.line_of(&key));
            ConfigError::Invalid {
                origin: self.origin.clone(),
                key,
                line,
                message: inner.message().to_owned(),
            }
        })
    }

    /// The 1-based line where `key` is set (`server.listen`,
    /// `instance.tags.Name`, `rule[2].role`), if the file sets it.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        let root = DeValue::Table(DeTable::parse(self.text).ok()?.into_inner());
        let mut value: Option<&toml::Spanned<DeValue<'_>>> = None;
        for part in key.split('.') {
            // `rule[2]` is the third element of the array `rule`.
            let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
                Some((name, index)) => (name, index.parse::<usize>().ok()),
                None => (part, None),
            };
            let parent = value.map_or(&root, |v| v.get_ref());
            let mut next = parent.get(name)?;
            if let Some(index) = index {
                next = next.get_ref().get(index)?;
            }
            value = Some(next);
        }
        Some(self.line_at(value?.span().start))
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
