//! Request body framing (RFC 9112 §6): which framing a head declares, and a streaming reader
//! that discards a Content-Length or chunked body while checking its syntax and size.

use super::ProtoError;

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes (never 0: a zero length is `None`).
    Length(u64),
    /// Chunked transfer coding, final.
    Chunked,
}

/// Elements of a comma-separated header list, trimmed of spaces and tabs, empty ones skipped.
pub fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// `v` without leading and trailing spaces and tabs.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// RFC 9112 §6.1–6.3 for a request, refusing everything a smuggler could exploit: TE with CL,
/// TE on HTTP/1.0, TE whose final coding is not a single `chunked`, and any CL that is not one
/// plain decimal number on one line.
pub fn request_framing(
    minor: u8,
    te: Option<&[u8]>,
    cl: Option<&[u8]>,
    cl_count: u32,
) -> Result<Framing, ProtoError> {
    if let Some(te) = te {
        if cl.is_some() {
            return Err(ProtoError::BadRequest(
                "Transfer-Encoding with Content-Length",
            ));
        }
        if minor == 0 {
            return Err(ProtoError::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
        // ringd decodes no transfer coding but chunked, so `gzip, chunked` (or the retired
        // `identity`) is refused too (RFC 9112 §6.1): accepting it would hand a file handler,
        // an app or an upstream a body still in a coding that nothing downstream is told about.
        let mut chunked = false;
        for coding in list(te) {
            if chunked {
                return Err(ProtoError::BadRequest("chunked is not the final coding"));
            }
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return Err(ProtoError::BadRequest("transfer coding other than chunked"));
            }
            chunked = true;
        }
        if !chunked {
            return Err(ProtoError::BadRequest(
                "Transfer-Encoding without final chunked",
            ));
        }
        return Ok(Framing::Chunked);
    }
    match cl {
        None => Ok(Framing::None),
        Some(_) if cl_count > 1 => Err(ProtoError::BadRequest("duplicate Content-Length")),
        Some(v) => match parse_decimal(v) {
            Some(0) => Ok(Framing::None),
            Some(n) => Ok(Framing::Length(n)),
            None => Err(ProtoError::BadRequest("invalid Content-Length")),
        },
    }
}

/// 1*DIGIT without overflow.
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// RFC 9110 token character.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where a chunked body decoder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size, in BWS that must lead to `;`.
    SizeWs,
    /// In a chunk extension (RFC 9112 §7.1.1), see [`Ext`].
    Ext(Ext),
    /// Saw CR after the size line; expect LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After chunk data; expect CR then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    /// Inside a trailer field line: in its name, or (`value`) after its colon.
    Trailer {
        value: bool,
    },
    /// Saw CR in a trailer line; expect LF.
    TrailerLf {
        blank: bool,
    },
    Done,
}

/// Where a chunk-extension scanner stands, per RFC 9112 §7.1.1:
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`,
/// name a token, value a token or a quoted-string. Anything else is a 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// After `;`, in BWS: a name must follow.
    PreName,
    /// In the name.
    Name,
    /// BWS after the name: `=` or `;` must follow.
    AfterName,
    /// After `=`, in BWS: a value must follow.
    PreValue,
    /// In a token value.
    Token,
    /// In a quoted-string value; `escaped` after a backslash.
    Quoted { escaped: bool },
    /// Just after the closing quote: `;`, BWS or the line end.
    Closed,
    /// BWS after a value: `;` must follow.
    AfterValue,
}

/// The next state of the chunk-extension scanner after byte `b`; `SizeLf` at the line's CR.
fn ext_byte(st: Ext, b: u8) -> Result<Chunk, ProtoError> {
    let ws = b == b' ' || b == b'\t';
    let next = match st {
        Ext::PreName if ws => Ext::PreName,
        Ext::PreName if is_tchar(b) => Ext::Name,
        Ext::Name if is_tchar(b) => Ext::Name,
        Ext::Name | Ext::AfterName if ws => Ext::AfterName,
        Ext::Name | Ext::AfterName if b == b'=' => Ext::PreValue,
        Ext::PreValue if ws => Ext::PreValue,
        Ext::PreValue if b == b'"' => Ext::Quoted { escaped: false },
        Ext::PreValue if is_tchar(b) => Ext::Token,
        Ext::Token if is_tchar(b) => Ext::Token,
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        Ext::Quoted { escaped: true } if b == b'\t' || (b >= 0x20 && b != 0x7f) => {
            Ext::Quoted { escaped: false }
        }
        Ext::Quoted { escaped: false } if b == b'"' => Ext::Closed,
        Ext::Quoted { escaped: false } if b == b'\\' => Ext::Quoted { escaped: true },
        // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
        Ext::Quoted { escaped: false } if b == b'\t' || (b >= 0x20 && b != 0x7f) => {
            Ext::Quoted { escaped: false }
        }
        Ext::Token | Ext::Closed | Ext::AfterValue if ws => Ext::AfterValue,
        Ext::Name | Ext::AfterName | Ext::Token | Ext::Closed | Ext::AfterValue if b == b';' => {
            Ext::PreName
        }
        // The line may end right after a name or a value (not after BWS: the grammar puts
        // BWS only before `;` and `=`).
        Ext::Name | Ext::Token | Ext::Closed if b == b'\r' => return Ok(Chunk::SizeLf),
        _ => return Err(ProtoError::BadRequest("invalid chunk extension")),
    };
    Ok(Chunk::Ext(next))
}

/// Discards a request body, validating its framing. Feed it bytes; it says how many it used.
#[derive(Debug)]
pub struct BodyReader {
    /// Bytes of data still expected (Content-Length, or the current chunk).
    remaining: u64,
    /// Body bytes seen so far (the total checked against `max_body`).
    total: u64,
    max_body: u64,
    /// Bytes of trailer section so far (bounded by `max_trailer`).
    trailer: usize,
    /// Bytes of chunk extensions so far, all chunks together (also bounded by `max_trailer`:
    /// they are discarded unread, but must not let a peer stream forever outside `max_body`).
    ext: usize,
    max_trailer: usize,
    chunk: Option<Chunk>,
}

impl BodyReader {
    /// A reader for `framing`, or the 413 error when a declared length is over `max_body`.
    pub fn new(framing: Framing, max_body: u64, max_trailer: usize) -> Result<Self, ProtoError> {
        let (remaining, chunk) = match framing {
            Framing::None => (0, None),
            Framing::Length(n) if n > max_body => return Err(ProtoError::BodyTooLarge),
            Framing::Length(n) => (n, None),
            Framing::Chunked => (0, Some(Chunk::Size { digits: 0 })),
        };
        Ok(BodyReader {
            remaining,
            total: 0,
            max_body,
            trailer: 0,
            ext: 0,
            max_trailer,
            chunk,
        })
    }

    /// Bytes of a Content-Length body still expected (None for a chunked body).
    pub fn length_left(&self) -> Option<u64> {
        match self.chunk {
            None => Some(self.remaining),
            Some(_) => None,
        }
    }

    /// `n` bytes of a Content-Length body went past without being fed (a driver spliced
    /// them on); at most what is left.
    pub fn skip(&mut self, n: u64) {
        if self.chunk.is_none() {
            let n = n.min(self.remaining);
            self.remaining -= n;
            self.total += n;
        }
    }

    /// True once the whole body (and any trailer) has been read.
    pub fn done(&self) -> bool {
        match self.chunk {
            None => self.remaining == 0,
            Some(c) => c == Chunk::Done,
        }
    }

    /// Consumes body bytes from the start of `buf`; returns how many belonged to the body.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ProtoError> {
        self.feed_into(buf, None)
    }

    /// As [`BodyReader::feed`], appending the body's data (chunked framing removed) to `data`
    /// when given: what a proxy forwards.
    pub fn feed_into(
        &mut self,
        buf: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<usize, ProtoError> {
        let Some(mut st) = self.chunk else {
            let n = self.remaining.min(buf.len() as u64);
            self.remaining -= n;
            if let Some(d) = data {
                d.extend_from_slice(&buf[..n as usize]);
            }
            return Ok(n as usize);
        };
        let mut i = 0;
        while i < buf.len() && st != Chunk::Done {
            let b = buf[i];
            st = match st {
                Chunk::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 16 {
                            return Err(ProtoError::BadRequest("chunk size too long"));
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.remaining = self.remaining * 16 + u64::from(d);
                        Chunk::Size { digits: digits + 1 }
                    }
                    b';' if digits > 0 => Chunk::Ext(Ext::PreName),
                    b' ' | b'\t' if digits > 0 => Chunk::SizeWs,
                    b'\r' if digits > 0 => Chunk::SizeLf,
                    _ => return Err(ProtoError::BadRequest("invalid chunk size")),
                },
                Chunk::SizeWs => match b {
                    b' ' | b'\t' => Chunk::SizeWs,
                    b';' => Chunk::Ext(Ext::PreName),
                    _ => return Err(ProtoError::BadRequest("invalid chunk size")),
                },
                Chunk::Ext(e) => {
                    self.ext += 1;
                    if self.ext > self.max_trailer {
                        return Err(ProtoError::BadRequest("chunk extensions too long"));
                    }
                    ext_byte(e, b)?
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(ProtoError::BadRequest("chunk size line not ended by CRLF"));
                    }
                    self.total = self.total.saturating_add(self.remaining);
                    if self.total > self.max_body {
                        return Err(ProtoError::BodyTooLarge);
                    }
                    if self.remaining == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    }
                }
                Chunk::Data => {
                    let n = self.remaining.min((buf.len() - i) as u64);
                    self.remaining -= n;
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&buf[i..i + n as usize]);
                    }
                    i += n as usize;
                    st = if self.remaining == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data
                    };
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size { digits: 0 },
                Chunk::DataCr | Chunk::DataLf => {
                    return Err(ProtoError::BadRequest("chunk data not ended by CRLF"))
                }
                Chunk::TrailerStart => match b {
                    b'\r' => Chunk::TrailerLf { blank: true },
                    b' ' | b'\t' => return Err(ProtoError::BadRequest("obs-fold in trailer")),
                    _ => self.trailer_byte(b, false)?,
                },
                Chunk::Trailer { value: false } if b == b':' => {
                    self.trailer_byte(b, true)?;
                    Chunk::Trailer { value: true }
                }
                Chunk::Trailer { value: true } if b == b'\r' => Chunk::TrailerLf { blank: false },
                Chunk::Trailer { value } => self.trailer_byte(b, value)?,
                Chunk::TrailerLf { blank } => {
                    if b != b'\n' {
                        return Err(ProtoError::BadRequest("trailer line not ended by CRLF"));
                    }
                    if blank {
                        Chunk::Done
                    } else {
                        Chunk::TrailerStart
                    }
                }
                Chunk::Done => Chunk::Done,
            };
            i += 1;
        }
        self.chunk = Some(st);
        Ok(i)
    }

    /// One byte of a trailer field line, held to the header section's rules (RFC 9112 §7.1.2,
    /// §5; RFC 9110 §5.1, §5.5): a token name, then `:`, then a value without controls other
    /// than HTAB, so no whitespace before the colon, no line without one, no NUL or bare CR.
    fn trailer_byte(&mut self, b: u8, value: bool) -> Result<Chunk, ProtoError> {
        self.trailer += 1;
        if self.trailer > self.max_trailer {
            return Err(ProtoError::HeadersTooLarge);
        }
        let ok = if value {
            b == b'\t' || (b >= 0x20 && b != 0x7f)
        } else {
            is_tchar(b)
        };
        if !ok {
            return Err(ProtoError::BadRequest("invalid trailer field line"));
        }
        Ok(Chunk::Trailer { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(max: u64) -> BodyReader {
        BodyReader::new(Framing::Chunked, max, 1024).unwrap()
    }

    /// Feeds `body` in pieces of `step` bytes; returns bytes used and whether it finished.
    fn run(mut r: BodyReader, body: &[u8], step: usize) -> Result<(usize, bool), ProtoError> {
        let mut off = 0;
        while !r.done() && off < body.len() {
            let end = (off + step).min(body.len());
            let n = r.feed(&body[off..end])?;
            off += n;
            if off < end {
                break; // the reader stops early only once the body is complete
            }
        }
        Ok((off, r.done()))
    }

    #[test]
    fn chunked_bodies_any_split() {
        let cases: &[&[u8]] = &[
            b"5\r\nhello\r\n0\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"5;ext=1;x=\"q;\\\"v\"\r\nhello\r\n000\r\n\r\n",
            b"3\r\nabc\r\n0\r\nTrailer: x\r\nOther: y\r\n\r\n",
            b"3\r\nabc\r\n0\r\nT:\r\nX-Y:\t caf\xe9 \t\r\n\r\n",
        ];
        for body in cases {
            for step in 1..=body.len() {
                let mut full = body.to_vec();
                full.extend_from_slice(b"GET /next");
                assert_eq!(
                    run(chunked(1000), &full, step).unwrap(),
                    (body.len(), true),
                    "{:?} step {step}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn chunked_errors() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"1;\x01\r\n",
            b"1;\"open\r\n",
            b"11111111111111111\r\n",
            b"0\r\n bad\r\n\r\n",
            b"a \r\n0123456789\r\n0\r\n\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\nX : a\r\n\r\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            assert!(run(chunked(1000), body, body.len()).is_err(), "{:?}", body);
        }
    }

    #[test]
    fn chunk_extensions_follow_the_grammar() {
        // RFC 9112 §7.1.1: BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ].
        for ext in [
            &b";a"[..],
            b";a=b",
            b";a=b;c",
            b" ;a",
            b"\t; a = b ;c=\"d\"",
            b";a=\"\"",
            b";a=\"x\\\"y;z\\\\\"",
            b";a=\"tab\there\x80\"",
            b";ilovew3;somuchlove=aretheseparametersfor;another=withvalue",
        ] {
            let mut body = b"2".to_vec();
            body.extend_from_slice(ext);
            body.extend_from_slice(b"\r\naa\r\n0\r\n\r\n");
            for step in 1..=body.len() {
                assert_eq!(
                    run(chunked(1000), &body, step),
                    Ok((body.len(), true)),
                    "{:?} step {step}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        for ext in [
            &b";"[..],    // empty name: llhttp's "No extension after semicolon"
            b";;a",       // empty name between semicolons
            b"; ",        // only BWS after ;
            b";a;",       // trailing ; without a name
            b";=b",       // value without a name
            b";a=",       // = without a value
            b";a= ",      // = then only BWS
            b";a ",       // BWS before the line end
            b";a=b ",     // BWS after a value before the line end
            b";a=\"b\" ", // same after a quoted value
            b";a=b c",    // two tokens
            b";a=\"b\"c", // text after the closing quote
            b";a=b=c",    // = in a token value
            b";a@b",      // non-token in a name
            b";a=\"b",    // unbalanced quote (reaches CR inside it: CR is not qdtext)
            b";a=\"\x7f\"",
            b";a=\"\\\x01\"",
            b" a",        // BWS after the size not followed by ;
            b";\xc3\xa9", // non-ASCII name
        ] {
            let mut body = b"2".to_vec();
            body.extend_from_slice(ext);
            body.extend_from_slice(b"\r\naa\r\n0\r\n\r\n");
            assert!(
                matches!(run(chunked(1000), &body, 1), Err(ProtoError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn chunk_extensions_are_bounded() {
        let mut body = b"2;a=".to_vec();
        body.extend(std::iter::repeat_n(b'x', 1100));
        body.extend_from_slice(b"\r\naa\r\n0\r\n\r\n");
        assert_eq!(
            run(chunked(1000), &body, 64),
            Err(ProtoError::BadRequest("chunk extensions too long"))
        );
    }

    #[test]
    fn chunked_over_max_body() {
        let r = run(chunked(4), b"5\r\nhello\r\n0\r\n\r\n", 3);
        assert_eq!(r, Err(ProtoError::BodyTooLarge));
        assert_eq!(
            run(chunked(5), b"5\r\nhello\r\n0\r\n\r\n", 3),
            Ok((15, true))
        );
    }

    #[test]
    fn content_length_bodies() {
        let mut r = BodyReader::new(Framing::Length(5), 10, 0).unwrap();
        assert_eq!(r.feed(b"he").unwrap(), 2);
        assert!(!r.done());
        assert_eq!(r.feed(b"lloGET").unwrap(), 3);
        assert!(r.done());
        assert!(matches!(
            BodyReader::new(Framing::Length(11), 10, 0),
            Err(ProtoError::BodyTooLarge)
        ));
    }

    #[test]
    fn framing_rules() {
        assert_eq!(request_framing(1, None, Some(b"0"), 1), Ok(Framing::None));
        assert_eq!(
            request_framing(1, None, Some(b"007"), 1),
            Ok(Framing::Length(7))
        );
        assert!(request_framing(1, None, Some(b"+7"), 1).is_err());
        assert!(request_framing(1, None, Some(b"7,7"), 1).is_err());
        assert!(request_framing(1, Some(b"identity"), None, 0).is_err());
        assert!(request_framing(1, Some(b"chunked"), Some(b"1"), 1).is_err());
        assert_eq!(
            request_framing(1, Some(b"Chunked"), None, 0),
            Ok(Framing::Chunked)
        );
        assert!(request_framing(1, Some(b"chunked,"), None, 0).is_ok());
        assert!(request_framing(1, Some(b"chunked, chunked"), None, 0).is_err());
        assert!(request_framing(1, Some(b"pigeons"), None, 0).is_err());
        assert!(request_framing(1, Some(b""), None, 0).is_err());
    }

    #[test]
    fn list_and_trim() {
        let v: Vec<&[u8]> = list(b" a ,, b\t,c").collect();
        assert_eq!(v, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(trim(b"  "), b"");
    }
}
