//! On-the-fly compression of dynamic responses (a route's `compress = ["zstd", "br", "gzip"]`):
//! which coding a request gets (Accept-Encoding q-values, ties to the route's order), which
//! responses may be compressed, and streaming encoders whose output the exchange relays as it
//! comes (chunked), so the cache stores the compressed variant as its own entry.

use std::io::{self, Write};

use crate::handler::encoding::{weights, Coding, CODINGS};

/// Bodies smaller than this (when their length is known) are sent as they are.
pub const MIN_SIZE: u64 = 1024;

/// The route's preference order, from its `compress` list.
pub fn parse(name: &str) -> Option<Coding> {
    CODINGS.into_iter().find(|c| c.token() == name)
}

/// The coding for a request that sent `accept` (Accept-Encoding), among the route's
/// `codings` in its order: the highest q-value wins, ties go to the route's order.
pub fn pick(codings: &[Coding], accept: &[u8]) -> Option<Coding> {
    let w = weights(accept);
    let mut best: Option<(Coding, u16)> = None;
    for &c in codings {
        let i = CODINGS.iter().position(|&x| x == c)?;
        if w[i] > 0 && best.is_none_or(|(_, bw)| w[i] > bw) {
            best = Some((c, w[i]));
        }
    }
    best.map(|(c, _)| c)
}

/// Whether a response with this Content-Type is worth compressing (text and the structured
/// text formats; never images, video, archives or already-compressed data).
pub fn compressible(content_type: &[u8]) -> bool {
    let ct = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    let ct = ct.split(';').next().unwrap_or("").trim();
    ct.starts_with("text/")
        || matches!(
            ct,
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/wasm"
                | "image/svg+xml"
        )
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
}

/// A streaming encoder writing into memory the exchange drains.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Gzip(_) => "Encoder::Gzip",
            Encoder::Zstd(_) => "Encoder::Zstd",
            Encoder::Br(_) => "Encoder::Br",
        })
    }
}

impl Encoder {
    /// Levels chosen for speed on the request path: gzip 5, zstd 3, brotli 4.
    pub fn new(c: Coding) -> io::Result<Encoder> {
        Ok(match c {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(5),
            )),
            Coding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
            Coding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                4,
                22,
            ))),
        })
    }

    /// Compresses `data`; returns what output is ready (possibly nothing yet).
    pub fn write(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let out = match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.get_mut()
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                e.get_mut()
            }
            Encoder::Br(e) => {
                e.write_all(data)?;
                e.get_mut()
            }
        };
        Ok(std::mem::take(out))
    }

    /// The rest of the compressed stream.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Br(mut e) => {
                e.flush()?;
                Ok(e.into_inner())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn q_values_then_route_order() {
        let route = [Coding::Zstd, Coding::Br, Coding::Gzip];
        assert_eq!(pick(&route, b"gzip, br, zstd"), Some(Coding::Zstd));
        assert_eq!(pick(&route, b"gzip, br"), Some(Coding::Br));
        assert_eq!(pick(&route, b"gzip;q=1, br;q=0.5"), Some(Coding::Gzip));
        assert_eq!(pick(&route, b"identity"), None);
        assert_eq!(pick(&[Coding::Gzip], b"br"), None);
        assert_eq!(pick(&route, b"*;q=0.1"), Some(Coding::Zstd));
    }

    #[test]
    fn types() {
        assert!(compressible(b"text/html; charset=utf-8"));
        assert!(compressible(b"application/json"));
        assert!(compressible(b"application/vnd.api+json"));
        assert!(!compressible(b"image/png"));
        assert!(!compressible(b"application/zip"));
    }

    #[test]
    fn every_coding_round_trips_in_pieces() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("line {i} of text\n").into_bytes())
            .collect();
        for c in CODINGS {
            let mut e = Encoder::new(c).unwrap();
            let mut z = Vec::new();
            for piece in text.chunks(777) {
                z.extend(e.write(piece).unwrap());
            }
            z.extend(e.finish().unwrap());
            assert!(z.len() < text.len() / 4, "{c:?}: {} bytes", z.len());
            let mut back = Vec::new();
            match c {
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&z[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Coding::Zstd => back = zstd::stream::decode_all(&z[..]).unwrap(),
                Coding::Br => {
                    brotli::Decompressor::new(&z[..], 4096)
                        .read_to_end(&mut back)
                        .unwrap();
                }
            }
            assert_eq!(back, text, "{c:?}");
        }
    }
}
