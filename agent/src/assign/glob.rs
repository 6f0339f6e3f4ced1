//! Patterns in role assignment rules: `*` matches any run of characters, `?`
//! one. In a cgroup path pattern `*` and `?` stop at `/` and `**` crosses it,
//! as in shell globs.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
    path: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Star,
    DoubleStar,
}

impl Glob {
    /// A pattern for names (unit, container name, role).
    pub fn name(pattern: &str) -> Self {
        Self::compile(pattern, false)
    }

    /// A pattern for cgroup paths.
    pub fn path(pattern: &str) -> Self {
        Self::compile(pattern, true)
    }

    fn compile(pattern: &str, path: bool) -> Self {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' if path && chars.peek() == Some(&'*') => {
                    chars.next();
                    Token::DoubleStar
                }
                '*' if path => Token::Star,
                '*' => Token::DoubleStar,
                '?' => Token::One,
                c => Token::Literal(c),
            });
        }
        Self {
            pattern: pattern.to_owned(),
            tokens,
            path,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has no wildcard.
    pub fn is_exact(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// How many literal characters it has: more is more specific.
    pub fn literal_len(&self) -> usize {
        self.tokens
            .iter()
            .filter(|t| matches!(t, Token::Literal(_)))
            .count()
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        matches_at(&self.tokens, &chars, self.path)
    }
}

/// Backtracking match; patterns and names are short.
fn matches_at(tokens: &[Token], text: &[char], path: bool) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((Token::Literal(c), rest)) => {
            text.first() == Some(c) && matches_at(rest, &text[1..], path)
        }
        Some((Token::One, rest)) => match text.first() {
            Some('/') if path => false,
            Some(_) => matches_at(rest, &text[1..], path),
            None => false,
        },
        Some((Token::Star, rest)) => {
            for i in 0..=text.len() {
                if matches_at(rest, &text[i..], path) {
                    return true;
                }
                if text.get(i) == Some(&'/') {
                    return false;
                }
            }
            false
        }
        Some((Token::DoubleStar, rest)) => {
            (0..=text.len()).any(|i| matches_at(rest, &text[i..], path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases = [
            ("web.service", "web.service", true),
            ("web.service", "web2.service", false),
            ("app-*.scope", "app-firefox-12.scope", true),
            ("app-*.scope", "app-.scope", true),
            ("app-*.scope", "app.scope", false),
            ("api-?", "api-1", true),
            ("api-?", "api-12", false),
            ("*", "anything/at all", true),
            (
                "arn:aws:iam::*:role/ci/*",
                "arn:aws:iam::123456789012:role/ci/build",
                true,
            ),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob::name(pattern).matches(text),
                want,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn paths() {
        let cases = [
            ("/system.slice/*.service", "/system.slice/web.service", true),
            (
                "/system.slice/*.service",
                "/system.slice/a/b.service",
                false,
            ),
            ("/system.slice/**", "/system.slice/a/b.service", true),
            ("/ci/**/job", "/ci/x/y/job", true),
            ("/ci/**/job", "/ci/job", false),
            ("/ci/**job", "/ci/job", true),
            ("/a?c", "/a/c", false),
            (
                "/user.slice/user-1000.slice/**",
                "/user.slice/user-1000.slice/session-2.scope",
                true,
            ),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob::path(pattern).matches(text),
                want,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn specificity_inputs() {
        assert!(Glob::name("web.service").is_exact());
        assert!(!Glob::name("web*").is_exact());
        assert_eq!(Glob::name("app-*.scope").literal_len(), 10);
        assert_eq!(Glob::path("/a/**").literal_len(), 3);
    }

    #[test]
    fn pathological_patterns_terminate() {
        let pattern = Glob::name(&"*a".repeat(12));
        assert!(!pattern.matches(&"a".repeat(11)));
    }
}
