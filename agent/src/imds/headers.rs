//! Header names and fixed values of the IMDS protocol, in one place. Header
//! names are matched case-insensitively by `http::HeaderName`, which stores
//! them in lower case.

/// The token a client sends with metadata requests (IMDSv2).
pub const TOKEN: &str = "x-aws-ec2-metadata-token";

/// The TTL a client asks for on `PUT /latest/api/token`; echoed on the
/// response, and on metadata responses as the token's remaining lifetime.
pub const TOKEN_TTL_SECONDS: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// A PUT carrying this header came through a proxy: EC2 refuses it so that a
/// token can't be minted on behalf of a remote client.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// What EC2 puts in `Server`. Some clients detect IMDS by it.
pub const SERVER_VALUE: &str = "EC2ws";

/// The shortest token lifetime a client may ask for, in seconds.
pub const MIN_TOKEN_TTL: u32 = 1;

/// The longest token lifetime a client may ask for, in seconds (six hours).
pub const MAX_TOKEN_TTL: u32 = 21_600;
