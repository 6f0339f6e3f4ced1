//! JSON documents in EC2's layout: two-space indent and `"Key" : value`.
//! SDKs parse any JSON, but people read these with curl and some scripts
//! grep them (`grep -oP '(?<="accountId" : ")'` is a common idiom), so the
//! layout is kept. Field order is the caller's.

/// One value in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// A JSON string, escaped on output.
    Str(&'a str),
    /// JSON `null`.
    Null,
}

/// Writes a flat object of `fields` in order.
pub(crate) fn object(fields: &[(&str, Value<'_>)]) -> String {
    let mut out = String::with_capacity(64 * fields.len() + 4);
    out.push_str("{\n");
    for (i, (key, value)) in fields.iter().enumerate() {
        out.push_str("  ");
        push_string(&mut out, key);
        out.push_str(" : ");
        match value {
            Value::Str(s) => push_string(&mut out, s),
            Value::Null => out.push_str("null"),
        }
        if i + 1 < fields.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push('}');
    out
}

fn push_string(out: &mut String, s: &str) {
    // serde_json's escaping is exact (control characters, quotes,
    // backslashes); a &str always serializes.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_ec2() {
        let doc = object(&[("Code", Value::Str("Success")), ("kernelId", Value::Null)]);
        assert_eq!(
            doc,
            "{\n  \"Code\" : \"Success\",\n  \"kernelId\" : null\n}"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let doc = object(&[("k", Value::Str("a\"b\\c\nd\u{1}"))]);
        assert_eq!(doc, "{\n  \"k\" : \"a\\\"b\\\\c\\nd\\u0001\"\n}");
        let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(parsed["k"], "a\"b\\c\nd\u{1}");
    }

    #[test]
    fn empty_object() {
        assert_eq!(object(&[]), "{\n}");
    }
}
