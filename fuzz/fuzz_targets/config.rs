//! Fuzz target: the config loader. `ringd::config::file::parse` (TOML → the file's shape,
//! errors with the closest known key) and `ringd::config::sites::build` (sites, routes,
//! templates, regexes, roots resolved against the fixture folder), then `Router::new` over
//! the result, and the size/duration unit parsers.
//!
//! Input: the config text (invalid UTF-8 is replaced, as a lossy read would). Asserts, beyond
//! "no panic": every error either has no place (line 0, col 0) or a real one: line in
//! 1..=lines of the text, col in 1..=chars of that line + 1; the message is not empty.

#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringd::config::{file, sites, units, ConfigError};
use ringd_fuzz::Fixture;

fn check(e: &ConfigError, text: &str) {
    assert!(!e.message.is_empty(), "empty message");
    if e.line == 0 || e.col == 0 {
        assert_eq!((e.line, e.col), (0, 0), "half a place: {e}");
        return;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        e.line <= lines.len(),
        "line {} of {}: {e}",
        e.line,
        lines.len()
    );
    let width = lines[e.line - 1].chars().count();
    assert!(
        e.col <= width + 1,
        "col {} of a {width}-char line: {e}",
        e.col
    );
    // Display must not panic either.
    let _ = e.to_string();
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = units::parse_size(&text);
    let _ = units::parse_duration(&text);
    let fx = Fixture::get();
    let path = fx.dir.join("fuzz.toml");
    let parsed = match file::parse(&path, &text) {
        Ok(p) => p,
        Err(e) => {
            check(&e, &text);
            return;
        }
    };
    let loc = file::Locator {
        file: &path,
        text: &text,
    };
    match sites::build(parsed.sites, Path::new(&fx.dir), &loc) {
        Ok(s) => {
            for site in &s.sites {
                assert!(!site.hosts.is_empty(), "a site without hosts was accepted");
                if let Some(r) = site.root {
                    assert!(r < s.roots.len(), "root index out of range");
                }
            }
            let _ = ringd::router::Router::new(Arc::new(s));
        }
        Err(errs) => {
            assert!(!errs.is_empty(), "Err without errors");
            for e in &errs {
                check(e, &text);
            }
        }
    }
});
