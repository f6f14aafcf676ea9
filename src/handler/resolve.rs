//! URL path → relative file path: percent-decode, then reject (never repair) anything that
//! could leave the root or reach a hidden file. Pure; the open itself is in `fs`.

/// Why a path was refused, and the status it is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Malformed or escaping path (`%zz`, NUL, `..`, `.` segments): 400.
    #[error("malformed or escaping path")]
    Bad,
    /// Encoded separator, backslash or dotfile: 404, as if it did not exist.
    #[error("path not served")]
    Hidden,
}

impl PathError {
    pub fn status(self) -> u16 {
        match self {
            PathError::Bad => 400,
            PathError::Hidden => 404,
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the URL path `path` (starting with `/`) into `out` as a path relative to the root
/// (no leading slash; a trailing slash is kept). `out` is cleared first.
pub fn decode(path: &str, serve_dotfiles: bool, out: &mut Vec<u8>) -> Result<(), PathError> {
    out.clear();
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::Bad);
    }
    let mut i = 1;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::Bad);
            };
            let d = h << 4 | l;
            match d {
                0 => return Err(PathError::Bad),
                b'/' | b'\\' => return Err(PathError::Hidden),
                _ => out.push(d),
            }
            i += 3;
        } else {
            if c == b'\\' {
                return Err(PathError::Hidden);
            }
            out.push(c);
            i += 1;
        }
    }
    for seg in out.split(|&c| c == b'/') {
        match seg {
            b"." | b".." => return Err(PathError::Bad),
            [b'.', ..] if !serve_dotfiles => return Err(PathError::Hidden),
            _ => {}
        }
    }
    Ok(())
}

/// Writes `rel` + `suffix` + NUL into `buf` ("." for the root) and returns it as a C string.
pub fn c_path<'b>(buf: &'b mut Vec<u8>, rel: &[u8], suffix: &[u8]) -> &'b std::ffi::CStr {
    buf.clear();
    if rel.is_empty() && suffix.is_empty() {
        buf.push(b'.');
    }
    buf.extend_from_slice(rel);
    buf.extend_from_slice(suffix);
    buf.push(0);
    // `decode` refuses NUL and `suffix` is ours, so the only NUL is the last byte.
    std::ffi::CStr::from_bytes_with_nul(buf).unwrap_or(c".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(p: &str) -> Result<Vec<u8>, PathError> {
        let mut out = Vec::new();
        decode(p, false, &mut out).map(|()| out)
    }

    #[test]
    fn decodes() {
        assert_eq!(dec("/").unwrap(), b"");
        assert_eq!(dec("/a/b.txt").unwrap(), b"a/b.txt");
        assert_eq!(dec("/a%20b/").unwrap(), b"a b/");
        assert_eq!(dec("/%C3%A9").unwrap(), "é".as_bytes());
    }

    #[test]
    fn rejects_never_repairs() {
        for p in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/a/%2E%2e",
            "/./a",
            "/a%00b",
            "/%zz",
            "/a%2",
        ] {
            assert_eq!(dec(p), Err(PathError::Bad), "{p}");
        }
        for p in [
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/.git/config",
            "/a/.env",
            "/%2ehidden",
        ] {
            assert_eq!(dec(p), Err(PathError::Hidden), "{p}");
        }
        assert!(dec("x").is_err());
    }

    #[test]
    fn dotfiles_when_enabled() {
        let mut out = Vec::new();
        assert!(decode("/.well-known/x", true, &mut out).is_ok());
        assert_eq!(decode("/../x", true, &mut out), Err(PathError::Bad));
    }

    #[test]
    fn c_paths() {
        let mut b = Vec::new();
        assert_eq!(c_path(&mut b, b"", b""), c".");
        assert_eq!(c_path(&mut b, b"a/", b"index.html"), c"a/index.html");
        assert_eq!(c_path(&mut b, b"x.js", b".br"), c"x.js.br");
    }
}
