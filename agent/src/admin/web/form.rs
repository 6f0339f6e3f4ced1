//! `application/x-www-form-urlencoded`, as forms and query strings send it.

/// The pairs of `text` (`a=1&b=2`), decoded; a pair that does not decode
/// is skipped.
pub(super) fn pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The first value of `name` in `text`.
pub(super) fn field(text: &str, name: &str) -> Option<String> {
    pairs(text)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// `%XX` and `+` decoded; `None` for a bad escape or bytes that are not
/// UTF-8.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `text` escaped for a query string.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_forms_send() {
        assert_eq!(
            pairs("token=123456&session=other+one&x=%41%2b"),
            vec![
                ("token".into(), "123456".into()),
                ("session".into(), "other one".into()),
                ("x".into(), "A+".into())
            ]
        );
        assert_eq!(field("a=1&k=abc", "k").as_deref(), Some("abc"));
        assert_eq!(field("k=%zz", "k"), None);
        assert_eq!(field("k=%4", "k"), None);
        assert_eq!(field("k=%C3", "k"), None, "not UTF-8");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
