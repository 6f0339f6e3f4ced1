//! STS's rules for the strings of a session: `RoleSessionName` and
//! `SourceIdentity` are 2 to 64 characters of `[A-Za-z0-9+=,.@_-]`. Names
//! derived from workloads (unit names, container names) are made to fit.

/// A valid `RoleSessionName` from `raw`: characters STS refuses become `-`,
/// runs of them collapse, the result is cut to 64 characters and padded to
/// at least 2. `None` if nothing usable is left.
pub fn sanitize(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(64));
    for c in raw.chars() {
        let keep = c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        let c = if keep { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        return None;
    }
    let mut name: String = trimmed.chars().take(64).collect();
    if name.len() < 2 {
        name.push('_');
    }
    Some(name)
}

/// Whether `name` is already valid as a `RoleSessionName` or
/// `SourceIdentity`.
pub fn is_valid(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing() {
        let cases = [
            ("web.service", Some("web.service")),
            ("docker-0123abcd.scope", Some("docker-0123abcd.scope")),
            ("user@1000.service", Some("user@1000.service")),
            ("my app/with spaces", Some("my-app-with-spaces")),
            ("///", None),
            ("", None),
            ("x", Some("x_")),
            ("héllo wörld", Some("h-llo-w-rld")),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize(raw).as_deref(), want, "{raw:?}");
        }
        let long = sanitize(&"a".repeat(100)).unwrap();
        assert_eq!(long.len(), 64);
        for raw in ["web.service", "a b", "x", &"z".repeat(80)] {
            assert!(is_valid(&sanitize(raw).unwrap()), "{raw:?}");
        }
        assert!(!is_valid("a"));
        assert!(!is_valid("has space"));
    }
}
