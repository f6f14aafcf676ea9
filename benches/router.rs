//! Routing cost: a config of 10 sites × 20 routes (exact, prefix, regex, with modifiers and
//! methods), and requests matched by the last site's last route. Issue 11's bar: at most
//! 150 ns per request for the host lookup plus the route match.

use std::path::Path;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringd::config::{file, sites};
use ringd::router::Router;

/// The TOML of `n_sites` sites with 20 routes each; the last route of each site is
/// `path = "/static/*"` with a root.
pub fn config_text(n_sites: usize) -> String {
    let mut t = String::new();
    for s in 0..n_sites {
        t.push_str(&format!(
            "[[sites]]\nhosts = [\"site{s}.test\", \"www.site{s}.test\", \"*.s{s}.test\"]\nroot = \"/tmp\"\n"
        ));
        for r in 0..19 {
            let route = match r % 5 {
                0 => {
                    format!("path = \"/api{r}/*\"\nheaders = {{ set = {{ \"X-R\" = \"{r}\" }} }}\n")
                }
                1 => format!("path = \"/exact{r}\"\nrespond = {{ status = 204 }}\n"),
                2 => format!("regex = '^/user{r}/(\\d+)$'\nrewrite = \"/profile.html?id={{1}}\"\n"),
                3 => format!(
                    "path = \"/old{r}/*\"\nredirect = {{ to = \"/new/{{*}}\", status = 301 }}\n"
                ),
                _ => format!(
                    "path = \"/m{r}\"\nmethods = [\"POST\"]\nrespond = {{ status = 200 }}\n"
                ),
            };
            t.push_str("[[sites.routes]]\n");
            t.push_str(&route);
        }
        t.push_str("[[sites.routes]]\npath = \"/static/*\"\nroot = \"/tmp\"\n");
    }
    t
}

fn router(n_sites: usize) -> Router {
    let text = config_text(n_sites);
    let f = file::parse(Path::new("bench.toml"), &text).expect("parses");
    let loc = file::Locator {
        file: Path::new("bench.toml"),
        text: &text,
    };
    let s = sites::build(f.sites, Path::new("/"), &loc).expect("valid");
    assert_eq!(s.route_count(), n_sites * 20);
    Router::new(Arc::new(s))
}

fn bench(c: &mut Criterion) {
    let mut r = router(10);
    assert_eq!(
        r.decide(Some(b"www.site9.test:8080"), "GET", "/static/css/app.css"),
        Some((9, 19))
    );
    c.bench_function("route 10x20: last site, last route", |b| {
        b.iter(|| {
            r.decide(
                black_box(Some(&b"www.site9.test:8080"[..])),
                black_box("GET"),
                black_box("/static/css/app.css"),
            )
        })
    });
    c.bench_function("route 10x20: wildcard host, regex route", |b| {
        b.iter(|| {
            r.decide(
                black_box(Some(&b"a.s9.test"[..])),
                black_box("GET"),
                black_box("/user17/12345"),
            )
        })
    });
    c.bench_function("route 10x20: unknown host (no default)", |b| {
        b.iter(|| r.decide(black_box(Some(&b"nobody.test"[..])), "GET", "/"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
