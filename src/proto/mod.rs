//! Sans-IO HTTP/1.1: request parsing (httparse), body framing, connection state, response heads.
//!
//! Nothing here reads a clock, a socket or a flag: bytes come in, parsed requests and encoded
//! responses go out, and time arrives as a `now` argument.

pub mod conn;
pub mod framing;
pub mod head;
pub mod log;
pub mod parse;

/// Why a request could not be accepted. Each maps to the status code it is answered with,
/// after which the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Request line over `limits.max_request_line`.
    #[error("request line too long")]
    RequestLineTooLong,
    /// Header section over `limits.max_header_bytes`.
    #[error("header section too large")]
    HeadersTooLarge,
    /// More than `limits.max_headers` fields.
    #[error("too many header fields")]
    TooManyHeaders,
    /// A well-formed version other than HTTP/1.0 or HTTP/1.1.
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// Syntax or framing the server refuses (smuggling defences included).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Body over `limits.max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// An `Expect` expectation other than `100-continue` (RFC 9110 §10.1.1).
    #[error("unsupported expectation")]
    ExpectationFailed,
}

impl ProtoError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            ProtoError::RequestLineTooLong => 414,
            ProtoError::HeadersTooLarge | ProtoError::TooManyHeaders => 431,
            ProtoError::VersionNotSupported => 505,
            ProtoError::BadRequest(_) => 400,
            ProtoError::BodyTooLarge => 413,
            ProtoError::ExpectationFailed => 417,
        }
    }
}
