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

/// Whether `tokens` match all of `text`. Dynamic programming over
/// (token, position), one row at a time: time proportional to pattern
/// length times text length, whatever the pattern (a backtracking matcher
/// is exponential in the number of stars, and the text, a unit name or an
/// executable's path, is the workload's to choose).
fn matches_at(tokens: &[Token], text: &[char], stops: &[char]) -> bool {
    let n = text.len();
    // `next[j]`: tokens after the current one match `text[j..]`.
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut row = vec![false; n + 1];
    for token in tokens.iter().rev() {
        for j in (0..=n).rev() {
            let here = text.get(j);
            row[j] = match token {
                Token::Literal(c) => here == Some(c) && next[j + 1],
                Token::One => here.is_some_and(|c| !stops.contains(c)) && next[j + 1],
                Token::Star => next[j] || (here.is_some_and(|c| !stops.contains(c)) && row[j + 1]),
                Token::DoubleStar => next[j] || (here.is_some() && row[j + 1]),
            };
        }
        std::mem::swap(&mut next, &mut row);
    }
    next[0]
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
        // Many stars against a long name a workload chose: at once.
        let started = std::time::Instant::now();
        let pattern = Glob::path(&format!("/{}b", "*a".repeat(30)));
        assert!(!pattern.matches(&format!("/{}", "a".repeat(4000))));
        let pattern = Glob::role(&"**x".repeat(20));
        assert!(!pattern.matches(&"x".repeat(19)));
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }
}
