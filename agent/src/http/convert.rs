//! HTTP to the protocol's `Request`, and the protocol's `Response` to HTTP.

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method as HttpMethod, Uri};

use crate::imds::headers::{FORWARDED_FOR, SERVER_VALUE, TOKEN, TOKEN_TTL_SECONDS};
use crate::imds::{HeaderField, Method, Request, Response};

static TOKEN_HEADER: HeaderName = HeaderName::from_static(TOKEN);
static TTL_HEADER: HeaderName = HeaderName::from_static(TOKEN_TTL_SECONDS);
static FORWARDED_FOR_HEADER: HeaderName = HeaderName::from_static(FORWARDED_FOR);

/// The protocol's view of a request.
pub(crate) fn imds_request<'a>(
    method: &HttpMethod,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Request<'a> {
    let method = match *method {
        HttpMethod::GET => Method::Get,
        HttpMethod::HEAD => Method::Head,
        HttpMethod::PUT => Method::Put,
        HttpMethod::OPTIONS => Method::Options,
        _ => Method::Other,
    };
    Request {
        method,
        path: uri.path(),
        token: field(headers, &TOKEN_HEADER),
        token_ttl: field(headers, &TTL_HEADER),
        forwarded_for: headers.contains_key(&FORWARDED_FOR_HEADER),
        host: field(headers, &header::HOST),
    }
}

/// A header the protocol reads: absent, once with a visible-ASCII value,
/// or anything else (sent twice, or with other bytes).
fn field<'a>(headers: &'a HeaderMap, name: &HeaderName) -> HeaderField<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => HeaderField::Absent,
        (Some(value), None) => value
            .to_str()
            .map_or(HeaderField::Malformed, HeaderField::One),
        (Some(_), Some(_)) => HeaderField::Malformed,
    }
}

/// Whether a request carries a body. IMDS requests never do; a request that
/// does (or claims to, with a `Content-Length` it never sends) is answered
/// and its connection closed, so that nothing waits to drain the body.
pub(crate) fn has_body(headers: &HeaderMap) -> bool {
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    declared_length || headers.contains_key(header::TRANSFER_ENCODING)
}

/// The HTTP response for `response`. `last_modified` is the metadata's
/// `Last-Modified`; `close` ends the connection after this response.
pub(crate) fn http_response(
    response: Response,
    last_modified: &HeaderValue,
    close: bool,
) -> http::Response<Body> {
    let mut out = http::Response::new(Body::from(response.body));
    *out.status_mut() = response.status;
    let headers = out.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_VALUE));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(response.content_type.as_str()),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    if response.status.is_success() {
        headers.insert(header::LAST_MODIFIED, last_modified.clone());
    }
    if let Some(ttl) = response.token_ttl {
        headers.insert(TTL_HEADER.clone(), HeaderValue::from(ttl));
    }
    if let Some(allow) = response.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let uri: Uri = "/latest/api/token".parse().unwrap();
        let h = headers(&[
            ("X-AWS-EC2-Metadata-Token-TTL-Seconds", b"60"),
            ("X-Forwarded-For", b"1.2.3.4"),
        ]);
        let req = imds_request(&HttpMethod::PUT, &uri, &h);
        assert_eq!(req.token_ttl, HeaderField::One("60"));
        assert!(req.forwarded_for);
        assert_eq!(req.method, Method::Put);
    }

    #[test]
    fn repeated_or_binary_headers_are_malformed() {
        let uri: Uri = "/latest/meta-data/".parse().unwrap();
        let twice = headers(&[
            ("x-aws-ec2-metadata-token", b"a"),
            ("x-aws-ec2-metadata-token", b"b"),
        ]);
        assert_eq!(
            imds_request(&HttpMethod::GET, &uri, &twice).token,
            HeaderField::Malformed
        );
        let binary = headers(&[("x-aws-ec2-metadata-token", b"\xff\xfe")]);
        assert_eq!(
            imds_request(&HttpMethod::GET, &uri, &binary).token,
            HeaderField::Malformed
        );
    }

    #[test]
    fn query_is_not_part_of_the_path() {
        let uri: Uri = "/latest/meta-data/instance-id?x=1".parse().unwrap();
        let headers = HeaderMap::new();
        let req = imds_request(&HttpMethod::GET, &uri, &headers);
        assert_eq!(req.path, "/latest/meta-data/instance-id");
    }

    #[test]
    fn bodies() {
        assert!(!has_body(&headers(&[])));
        assert!(!has_body(&headers(&[("content-length", b"0")])));
        assert!(has_body(&headers(&[("content-length", b"10")])));
        assert!(has_body(&headers(&[("transfer-encoding", b"chunked")])));
    }
}
