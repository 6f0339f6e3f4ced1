//! What the protocol answers, before it becomes HTTP, and EC2's error pages.

use std::sync::LazyLock;

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
    pub key_suffix: Option<crate::creds::KeySuffix>,
}

/// What the IMDS makes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The agent's own answer.
    Local(Response),
    /// Proxy mode: the real IMDS's answer, which the HTTP layer fetches.
    Forward(Forwarded),
}

/// A request for the real IMDS, and what the answer to it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// What to ask.
    pub request: Forward,
    /// For logs and metrics.
    pub class: Class,
    /// The seconds left on the token that authorised the request, sent
    /// back with the answer as the agent's own answers send them.
    pub token_ttl: Option<u32>,
}

impl Answer {
    /// What the answer is about.
    pub fn class(&self) -> Class {
        match self {
            Answer::Local(response) => response.class,
            Answer::Forward(forwarded) => forwarded.class,
        }
    }
}

/// A request to pass to the real IMDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The normalised path, with its version (`/latest/meta-data/`).
    pub path: String,
    /// For a listing only partly allowed: the children to keep.
    pub keep: Option<Vec<String>>,
    /// Entries the agent adds to that listing (`iam/`).
    pub extra: Vec<&'static str>,
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
        Self::error(StatusCode::NOT_FOUND, class)
    }

    /// 400: the token PUT has no valid TTL ("Missing or Invalid Parameters").
    pub(crate) fn bad_request() -> Self {
        Self::error(StatusCode::BAD_REQUEST, Class::Token)
    }

    /// 401: the token is missing (in `required` mode), invalid or expired.
    pub(crate) fn unauthorized() -> Self {
        Self::error(StatusCode::UNAUTHORIZED, Class::Refused)
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

    /// 403 for a request whose `Host` does not name the IMDS.
    pub(crate) fn forbidden_host() -> Self {
        Self::error(StatusCode::FORBIDDEN, Class::Refused)
    }

    /// 405 naming the methods that are allowed.
    pub(crate) fn method_not_allowed(allow: &'static str, class: Class) -> Self {
        Self {
            allow: Some(allow),
            ..Self::error(StatusCode::METHOD_NOT_ALLOWED, class)
        }
    }

    /// An error answer with EC2's page for `status`.
    fn error(status: StatusCode, class: Class) -> Self {
        Self {
            status,
            content_type: ContentType::TextHtml,
            body: error_page(status),
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

/// EC2's error page for `status`. The 404 page is EC2's own; the others
/// (400, 401, 405 as AEMM captured them; 403 ours) share one layout and are
/// built once.
fn error_page(status: StatusCode) -> Bytes {
    if status == StatusCode::NOT_FOUND {
        return Bytes::from_static(NOT_FOUND_PAGE.as_bytes());
    }
    static PAGES: LazyLock<[Bytes; 4]> = LazyLock::new(|| {
        [
            page("400 - Bad Request", ""),
            page("401 - Unauthorized", ""),
            page(
                "403 - Forbidden",
                "      <p>The Host header does not name this metadata service. \
                 Add the name to server.host_names to use it.</p>\n",
            ),
            page("405 - Method Not Allowed", ""),
        ]
    });
    let index = match status {
        StatusCode::BAD_REQUEST => 0,
        StatusCode::UNAUTHORIZED => 1,
        StatusCode::FORBIDDEN => 2,
        _ => 3,
    };
    PAGES[index].clone()
}

fn page(title: &str, extra: &str) -> Bytes {
    Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \
         \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n   \
         <head>\n      <title>{title}</title>\n   </head>\n   <body>\n      \
         <h1>{title}</h1>\n{extra}   </body>\n</html>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages() {
        let unauthorized = Response::unauthorized();
        assert_eq!(
            String::from_utf8_lossy(&unauthorized.body),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n   <head>\n      <title>401 - Unauthorized</title>\n   </head>\n   <body>\n      <h1>401 - Unauthorized</h1>\n   </body>\n</html>\n"
        );
        assert!(
            String::from_utf8_lossy(&Response::bad_request().body)
                .contains("<h1>400 - Bad Request</h1>")
        );
        assert!(
            String::from_utf8_lossy(&Response::forbidden_host().body).contains("server.host_names")
        );
        let not_allowed = Response::method_not_allowed("GET, HEAD", Class::Refused);
        assert!(
            String::from_utf8_lossy(&not_allowed.body)
                .contains("<title>405 - Method Not Allowed</title>")
        );
        assert_eq!(
            Response::not_found(Class::Metadata).body.as_ref(),
            NOT_FOUND_PAGE.as_bytes()
        );
    }
}
