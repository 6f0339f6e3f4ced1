//! What the protocol answers, before it becomes HTTP, and EC2's error pages.

use bytes::Bytes;
use http::StatusCode;

/// The content types EC2 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// Listings, values, JSON documents and tokens: EC2 serves all of them as
    /// `text/plain`, JSON included.
    TextPlain,
    /// `user-data`.
    OctetStream,
    /// Error pages.
    TextHtml,
}

impl ContentType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::TextPlain => "text/plain",
            ContentType::OctetStream => "application/octet-stream",
            ContentType::TextHtml => "text/html",
        }
    }
}

/// One IMDS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: ContentType,
    /// The body; for `HEAD` the transport sends only its length.
    pub body: Bytes,
    /// `X-aws-ec2-metadata-token-ttl-seconds`: the TTL granted on a token
    /// PUT, or the seconds left on the token that authorised a GET.
    pub token_ttl: Option<u32>,
    /// `Allow`, on 405 answers.
    pub allow: Option<&'static str>,
    /// The IP hop limit (TTL) to send this answer with: set on token PUT
    /// answers only, as EC2's `HttpPutResponseHopLimit` is.
    pub hop_limit: Option<u8>,
    /// What the answer was about, for logs and metrics. Never secret.
    pub class: Class,
    /// The last four characters of the access key id served, if this answer
    /// served credentials: the most a log may show of them.
    pub key_suffix: Option<String>,
}

/// A coarse name for what a request asked for, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `PUT /latest/api/token`.
    Token,
    /// A role's credentials (`security-credentials/<role>` or the extended
    /// form).
    Credentials,
    /// Any other IAM path (`iam/info`, the role listing).
    Iam,
    /// Any other metadata.
    Metadata,
    /// `user-data`.
    UserData,
    /// The request was refused before a path was looked at (bad token,
    /// wrong method, bad path).
    Refused,
}

impl Class {
    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Token => "token",
            Class::Credentials => "credentials",
            Class::Iam => "iam",
            Class::Metadata => "metadata",
            Class::UserData => "user-data",
            Class::Refused => "refused",
        }
    }
}

impl Response {
    /// A 200 with `body`.
    pub(crate) fn ok(content_type: ContentType, body: Bytes, class: Class) -> Self {
        Self {
            status: StatusCode::OK,
            content_type,
            body,
            token_ttl: None,
            allow: None,
            hop_limit: None,
            class,
            key_suffix: None,
        }
    }

    /// 404 with EC2's page. Every path that does not exist for this caller
    /// gets exactly this, so that a role's existence can't be probed.
    pub(crate) fn not_found(class: Class) -> Self {
        Self::error(StatusCode::NOT_FOUND, NOT_FOUND_PAGE, class)
    }

    /// 400: the token PUT has no valid TTL ("Missing or Invalid Parameters").
    pub(crate) fn bad_request() -> Self {
        Self::error(StatusCode::BAD_REQUEST, BAD_REQUEST_PAGE, Class::Token)
    }

    /// 401: the token is missing (in `required` mode), invalid or expired.
    pub(crate) fn unauthorized() -> Self {
        Self::error(StatusCode::UNAUTHORIZED, UNAUTHORIZED_PAGE, Class::Refused)
    }

    /// 403 with an empty `text/plain` body, as EC2 answers a token PUT that
    /// it refuses (`X-Forwarded-For`, or a trailing slash on the path).
    pub(crate) fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            content_type: ContentType::TextPlain,
            body: Bytes::new(),
            token_ttl: None,
            allow: None,
            hop_limit: None,
            class: Class::Token,
            key_suffix: None,
        }
    }

    /// 405 naming the methods that are allowed.
    pub(crate) fn method_not_allowed(allow: &'static str, class: Class) -> Self {
        Self {
            allow: Some(allow),
            ..Self::error(
                StatusCode::METHOD_NOT_ALLOWED,
                METHOD_NOT_ALLOWED_PAGE,
                class,
            )
        }
    }

    fn error(status: StatusCode, page: &'static str, class: Class) -> Self {
        Self {
            status,
            content_type: ContentType::TextHtml,
            body: Bytes::from_static(page.as_bytes()),
            token_ttl: None,
            allow: None,
            hop_limit: None,
            class,
            key_suffix: None,
        }
    }
}

/// EC2's 404 page, byte for byte (note the iso-8859-1 declaration and the
/// tab before the DTD URL).
pub const NOT_FOUND_PAGE: &str = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>
<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"
\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">
<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">
 <head>
  <title>404 - Not Found</title>
 </head>
 <body>
  <h1>404 - Not Found</h1>
 </body>
</html>
";

const BAD_REQUEST_PAGE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">
<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">
   <head>
      <title>400 - Bad Request</title>
   </head>
   <body>
      <h1>400 - Bad Request</h1>
   </body>
</html>
";

const UNAUTHORIZED_PAGE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">
<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">
   <head>
      <title>401 - Unauthorized</title>
   </head>
   <body>
      <h1>401 - Unauthorized</h1>
   </body>
</html>
";

const METHOD_NOT_ALLOWED_PAGE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">
<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">
   <head>
      <title>405 - Method Not Allowed</title>
   </head>
   <body>
      <h1>405 - Method Not Allowed</h1>
   </body>
</html>
";
