//! The parts of an HTTP request that the IMDS protocol looks at, already
//! taken out of the transport, and the normalised path.

/// The request method, reduced to what the protocol distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: answered like `GET`, without the body.
    Head,
    /// `PUT`: only meaningful on the token path.
    Put,
    /// `OPTIONS`.
    Options,
    /// Anything else.
    Other,
}

/// A header the protocol reads, as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField<'a> {
    /// Not sent.
    Absent,
    /// Sent once, with a value that is visible ASCII.
    One(&'a str),
    /// Sent more than once, or with bytes that are not visible ASCII. No
    /// well-formed client does this, so it is never taken as valid.
    Malformed,
}

/// One IMDS request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path as sent, without the query string.
    pub path: &'a str,
    /// `X-aws-ec2-metadata-token`.
    pub token: HeaderField<'a>,
    /// `X-aws-ec2-metadata-token-ttl-seconds`.
    pub token_ttl: HeaderField<'a>,
    /// Whether `X-Forwarded-For` was present (its value does not matter).
    pub forwarded_for: bool,
    /// `Host`.
    pub host: HeaderField<'a>,
}

/// The deepest path IMDS has is eight segments
/// (`/latest/meta-data/network/interfaces/macs/<mac>/ipv4-associations/<ip>`);
/// anything deeper is a 404 without looking further.
const MAX_SEGMENTS: usize = 10;

/// A path split into segments, with `//` collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Path<'a> {
    segments: [&'a str; MAX_SEGMENTS],
    len: usize,
    /// Whether the path ended in `/` (and was not just `/`).
    pub(crate) trailing_slash: bool,
}

impl<'a> Path<'a> {
    /// Splits `raw` into segments. `None` means the path can name nothing and
    /// is a 404: it is not absolute, it is too deep, or it has a `.` or `..`
    /// segment (EC2 does not resolve them, and resolving them here could let
    /// a crafted path reach a subtree the prefix check did not see).
    pub(crate) fn parse(raw: &'a str) -> Option<Self> {
        let rest = raw.strip_prefix('/')?;
        let mut path = Path {
            segments: [""; MAX_SEGMENTS],
            len: 0,
            trailing_slash: rest.ends_with('/'),
        };
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            if segment == "." || segment == ".." || path.len == MAX_SEGMENTS {
                return None;
            }
            path.segments[path.len] = segment;
            path.len += 1;
        }
        if path.len == 0 {
            path.trailing_slash = false;
        }
        Some(path)
    }

    /// The segments in order.
    pub(crate) fn segments(&self) -> &[&'a str] {
        &self.segments[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segments and trailing slash, or `None` for a path that names nothing.
    type Parts<'a> = Option<(&'a [&'a str], bool)>;

    fn parts(raw: &str) -> Option<(Vec<&str>, bool)> {
        Path::parse(raw).map(|p| (p.segments().to_vec(), p.trailing_slash))
    }

    #[test]
    fn splits_and_collapses() {
        let cases: &[(&str, Parts<'_>)] = &[
            ("/", Some((&[], false))),
            ("//", Some((&[], false))),
            ("/latest", Some((&["latest"], false))),
            ("/latest/", Some((&["latest"], true))),
            (
                "//latest//meta-data///",
                Some((&["latest", "meta-data"], true)),
            ),
            (
                "/latest/api/token",
                Some((&["latest", "api", "token"], false)),
            ),
            ("latest/meta-data", None),
            ("", None),
            ("/latest/../meta-data", None),
            ("/latest/./meta-data", None),
            ("/latest/meta-data/..", None),
            (
                "/a/b/c/d/e/f/g/h/i/j",
                Some((&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], false)),
            ),
            ("/a/b/c/d/e/f/g/h/i/j/k", None),
        ];
        for (raw, want) in cases {
            let want = want.map(|(s, t)| (s.to_vec(), t));
            assert_eq!(parts(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert_eq!(
            parts("/latest/meta-data/a..b/.c"),
            Some((vec!["latest", "meta-data", "a..b", ".c"], false))
        );
    }
}
