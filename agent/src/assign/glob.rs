//! Patterns in role assignment rules: `*` matches any run of characters, `?`
//! one. In a cgroup path pattern `*` and `?` stop at `/` and `**` crosses it,
//! as in shell globs. In a role pattern (`attribution.allowed_env_roles`)
//! they stop at `@`, `:` and `/` too, so `app-*` is a name in the agent's
//! own account, never `app-x@111111111111` or another account's ARN; `**`
//! crosses them.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
    /// What `*` and `?` do not match.
    stops: &'static [char],
}

const PATH_STOPS: &[char] = &['/'];
const ROLE_STOPS: &[char] = &['@', ':', '/'];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Star,
    DoubleStar,
}

impl Glob {
    /// A pattern for names (unit, container name).
    pub fn name(pattern: &str) -> Self {
        Self::compile(pattern, &[])
    }

    /// A pattern for cgroup paths.
    pub fn path(pattern: &str) -> Self {
        Self::compile(pattern, PATH_STOPS)
    }

    /// A pattern for roles as written (`name`, `name@account`, an ARN).
    pub fn role(pattern: &str) -> Self {
        Self::compile(pattern, ROLE_STOPS)
    }

    fn compile(pattern: &str, stops: &'static [char]) -> Self {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' if !stops.is_empty() && chars.peek() == Some(&'*') => {
                    chars.next();
                    Token::DoubleStar
                }
                '*' if !stops.is_empty() => Token::Star,
                '*' => Token::DoubleStar,
                '?' => Token::One,
                c => Token::Literal(c),
            });
        }
        Self {
            pattern: pattern.to_owned(),
            tokens,
            stops,
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
        matches_at(&self.tokens, &chars, self.stops)
    }
}

/// Backtracking match; patterns and names are short.
fn matches_at(tokens: &[Token], text: &[char], stops: &[char]) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((Token::Literal(c), rest)) => {
            text.first() == Some(c) && matches_at(rest, &text[1..], stops)
        }
        Some((Token::One, rest)) => match text.first() {
            Some(c) if stops.contains(c) => false,
            Some(_) => matches_at(rest, &text[1..], stops),
            None => false,
        },
        Some((Token::Star, rest)) => {
            for i in 0..=text.len() {
                if matches_at(rest, &text[i..], stops) {
                    return true;
                }
                if text.get(i).is_some_and(|c| stops.contains(c)) {
                    return false;
                }
            }
            false
        }
        Some((Token::DoubleStar, rest)) => {
            (0..=text.len()).any(|i| matches_at(rest, &text[i..], stops))
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
    fn role_patterns_stay_in_their_account() {
        let cases = [
            ("app-*", "app-x", true),
            ("app-*", "app-x@111111111111", false),
            ("app-*", "arn:aws:iam::111111111111:role/app-x", false),
            ("*", "anything", true),
            ("*", "x@111111111111", false),
            ("*@123456789012", "x@123456789012", true),
            ("*@123456789012", "x@111111111111", false),
            (
                "arn:aws:iam::123456789012:role/**",
                "arn:aws:iam::123456789012:role/team/x",
                true,
            ),
            (
                "arn:aws:iam::123456789012:role/*",
                "arn:aws:iam::123456789012:role/team/x",
                false,
            ),
            ("**", "arn:aws:iam::111111111111:role/x", true),
            ("app-?", "app-@", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob::role(pattern).matches(text),
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
