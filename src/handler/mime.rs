//! Content-Type for a file name: mime_guess, plus `charset=utf-8` for text types.

/// The Content-Type value for a file named `name` (the last path segment).
pub fn content_type(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    let essence = mime_guess::from_path(name.as_ref())
        .first_raw()
        .unwrap_or("application/octet-stream");
    if is_text(essence) {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

fn is_text(essence: &str) -> bool {
    essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(content_type(b"index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type(b"a.css"), "text/css; charset=utf-8");
        assert!(content_type(b"app.js").ends_with("javascript; charset=utf-8"));
        assert_eq!(content_type(b"p.png"), "image/png");
        assert_eq!(content_type(b"noext"), "application/octet-stream");
    }
}
