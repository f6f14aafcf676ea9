//! The gateway side of [`Session`] (a child module of `session.rs`): what the drivers call
//! for a request answered by something other than a file (a proxied upstream, a CGI script, a
//! WSGI app, a cache fill), through the one seam of `../shared/DESIGN.md`: the exchange in
//! flight, its splices both ways, the upstream's bytes, errors and timeouts, and handing a
//! finished exchange's connection back to the pool.

use super::*;

impl Session {
    /// The proxied request in flight (the driver connects, sends and reads for it).
    pub fn gateway(&mut self) -> Option<&mut Exchange> {
        self.gw.as_mut().map(|g| &mut g.x)
    }

    /// A TLS connection's bytes must pass through rustls: never splice to it.
    pub(super) fn no_splice_on_tls(&mut self) {
        if let (Some(g), true) = (self.gw.as_mut(), self.tls.is_some() || self.sniff) {
            g.x.set_splice_min(0);
        }
    }

    /// How many bytes the driver may splice from the upstream into this connection's pipe
    /// now: Some while the body (or tunnel) goes by splice and the bytes would be the next
    /// output (what is queued before them is written first). Never more than the pipe holds.
    pub fn gw_splice_want(&self) -> Option<u64> {
        let g = self.gw.as_ref().filter(|g| g.sink.is_none())?;
        let want = g.x.splice_want()?;
        self.out.pipe_next().then_some(want)
    }

    /// `n` bytes went from the upstream into the pipe (they follow as `Output::Pipe`).
    pub fn gw_spliced(&mut self, svc: &mut Service, n: usize, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        if self.out.is_empty() {
            self.progress_at = now;
        }
        g.x.spliced(n as u64, &mut self.out, &mut ctx, now);
    }

    /// The driver's splice pipe took no more of the upstream's bytes (no room, or out of
    /// slots) while the upstream has some: until the client drains it, the upstream's read
    /// timer does not run (see `Exchange::pipe_full`).
    pub fn gw_pipe_full(&mut self) {
        if let Some(g) = self.gw.as_mut() {
            g.x.pipe_full();
        }
    }

    /// How many client bytes the driver may splice from this connection's socket into its
    /// upstream-bound pipe now (a tunnel's, or the rest of a streamed Content-Length request
    /// body), instead of reading them: Some only while nothing the client sent waits here.
    pub fn client_splice_want(&self) -> Option<u64> {
        let g = self.gw.as_ref()?;
        if self.tls.is_some() || self.sniff || self.eof || self.closing || self.shutdown {
            return None;
        }
        if self.in_pos < self.inp.len() {
            return None;
        }
        if g.x.tunneling() {
            return g.x.splice_up_ok(None).then_some(u64::MAX);
        }
        let left = self.stream.as_ref()?.length_left();
        if g.x.splice_up_ok(left) {
            left
        } else {
            None
        }
    }

    /// `n` client bytes went into the upstream-bound pipe.
    pub fn client_spliced(&mut self, n: usize, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        g.x.spliced_up_in(n as u64, now);
        if let Some(r) = self.stream.as_mut() {
            r.skip(n as u64);
            if r.done() {
                g.x.body_end();
                self.stream = None;
                self.req_start = None;
            }
        }
    }

    /// `n` bytes of the upstream-bound pipe reached the upstream.
    pub fn gw_spliced_up(&mut self, n: usize, now: Instant) {
        if let Some(g) = self.gw.as_mut() {
            g.x.spliced_up_out(n as u64, now);
        }
    }

    /// The driver found no pipe free for the client's bytes: they are read and copied.
    pub fn client_no_splice(&mut self) {
        if let Some(g) = self.gw.as_mut() {
            g.x.set_splice_up(false);
        }
    }

    /// The driver found no pipe free: the body is read and copied instead.
    pub fn gw_no_splice(&mut self) {
        if let Some(g) = self.gw.as_mut() {
            g.x.no_splice();
        }
    }

    /// Whether the driver should read from the upstream now (the client keeps up).
    pub fn gw_wants_read(&self) -> bool {
        self.gw
            .as_ref()
            .is_some_and(|g| g.x.wants_read(self.gw_queued(g)))
    }

    /// Whether the exchange in flight leaves its upstream unread for a slow client.
    pub(super) fn gw_held_back(&self) -> bool {
        self.gw
            .as_ref()
            .is_some_and(|g| g.x.held_back(self.gw_queued(g)))
    }

    /// Response bytes queued for the client that count against the exchange's buffer (none
    /// when the response fills a cache sink instead).
    pub(super) fn gw_queued(&self, g: &Gw) -> usize {
        match &g.sink {
            Some(_) => 0,
            None => self.out.queued_bytes(),
        }
    }

    /// The WSGI app began to read its request body: the `100 Continue` the client may be
    /// waiting for goes out now, unless the response has begun. Returns whether it went out.
    pub fn gw_wants_body(&mut self, svc: &mut Service, now: Instant) -> bool {
        if !std::mem::take(&mut self.cont_owed) {
            return false;
        }
        match &self.gw {
            Some(g) if !g.x.responded && g.x.finished().is_none() => {}
            _ => return false,
        }
        self.out
            .bytes(&mut svc.pool)
            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.progress_at = now;
        true
    }

    pub(super) fn gw_ctx(svc: &mut Service) -> proxy::Ctx<'_> {
        proxy::Ctx {
            pool: &mut svc.pool,
            date: &svc.date,
            server: &svc.config.server_name,
        }
    }

    /// Bytes from the upstream.
    pub fn gw_feed(&mut self, svc: &mut Service, data: &[u8], now: Instant) {
        let held = self.gw_holds_head();
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        let before = self.out.is_empty();
        let res = match &mut g.sink {
            Some(sink) => {
                let r = g.x.feed(data, sink, &mut ctx, now);
                sink.clear(ctx.pool);
                r
            }
            None => g.x.feed(data, &mut self.out, &mut ctx, now),
        };
        if before && !self.out.is_empty() {
            self.progress_at = now;
        }
        if g.x.tunneling() && self.in_pos < self.inp.len() {
            // Bytes the client sent after its upgrade request belong to the tunnel.
            g.x.tunnel_in(&self.inp[self.in_pos..], now);
            self.in_pos = self.inp.len();
        }
        if self.eof {
            g.x.tunnel_client_eof();
        }
        match res {
            Err(f) => self.gw_error(svc, f, now),
            Ok(()) if g.x.from_cache.is_some() => self.gw_from_cache(svc, now),
            Ok(()) => {}
        }
        self.gw_let_go(held, now);
    }

    /// The upstream answered a revalidation with 304 (the stored head is refreshed and
    /// answers, `X-Cache: REVALIDATED`), or failed with 502/503/504 while a stale copy may
    /// answer (`STALE`).
    pub(super) fn gw_from_cache(&mut self, svc: &mut Service, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        let (Some(fc), Some(ci)) = (g.x.from_cache.take(), g.x.start.cache.as_ref()) else {
            return;
        };
        let head = &ci.req_head;
        let detached = g.sink.is_some();
        let Service {
            cache,
            pool,
            config,
            ..
        } = svc;
        let (tag, e) = match (fc, cache.get(&ci.key, &|n| field_value(head, n))) {
            (proxy::FromCache::Refresh { fields, fresh_for }, Some(e)) => {
                e.refresh(&fields, fresh_for, now);
                ("REVALIDATED", e)
            }
            (proxy::FromCache::Stale, Some(e)) if e.usable_on_error(now) => ("STALE", e),
            _ => {
                let mut ctx = Self::gw_ctx(svc);
                let out = g.sink.as_mut().unwrap_or(&mut self.out);
                g.x.fail(Failure::Bad("the cached copy went away"), out, &mut ctx);
                if let Some(s) = &mut g.sink {
                    s.clear(&mut svc.pool);
                }
                return;
            }
        };
        g.x.cache_tag = Some(tag);
        if detached {
            return;
        }
        let (status, n) = render_for_head(
            e,
            tag,
            now,
            head,
            &config.limits,
            g.x.start.head_request,
            g.x.conn,
            &mut self.out,
            pool,
        );
        let st = &cache.stats;
        if tag == "STALE" {
            &st.stale
        } else {
            &st.revalidated
        }
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        g.x.status = status;
        g.x.body_bytes = n;
        g.x.responded = true;
        if self.out.responses() == 1 {
            self.progress_at = now;
        }
    }

    /// Body bytes from a file (a WSGI app's `wsgi.file_wrapper`).
    pub fn gw_file(
        &mut self,
        svc: &mut Service,
        fd: &std::sync::Arc<std::os::fd::OwnedFd>,
        off: u64,
        len: u64,
        now: Instant,
    ) {
        let held = self.gw_holds_head();
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        if let Err(f) = g.x.feed_file(fd, off, len, &mut self.out, &mut ctx) {
            self.gw_error(svc, f, now);
        }
        self.gw_let_go(held, now);
    }

    /// The upstream closed its side.
    pub fn gw_eof(&mut self, svc: &mut Service, now: Instant) {
        let held = self.gw_holds_head();
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        let out = g.sink.as_mut().unwrap_or(&mut self.out);
        let res = g.x.eof(out, &mut ctx);
        if let Some(s) = &mut g.sink {
            s.clear(&mut svc.pool);
        }
        if let Err(f) = res {
            self.gw_error(svc, f, now);
        }
        self.gw_let_go(held, now);
    }

    /// The upstream connection failed (`Failure::Connect`: refused, reset, closed before any
    /// response byte; `Timeout`; `Bad`; `Cut`). Retries on another server where the retry rule
    /// allows; otherwise answers 502/503/504, or cuts a response already begun.
    pub fn gw_error(&mut self, svc: &mut Service, f: Failure, now: Instant) {
        let held = self.gw_holds_head();
        self.gw_fail(svc, f, now);
        self.gw_let_go(held, now);
    }

    pub(super) fn gw_fail(&mut self, svc: &mut Service, f: Failure, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        if g.x.finished().is_some() {
            return;
        }
        if g.x.tunneling() {
            // Idle past read_timeout, or a broken socket: the tunnel ends, both sides close.
            g.x.end_tunnel();
            return;
        }
        let group = g.x.start.group;
        if f == Failure::Connect && g.x.retry_stale(now) {
            // Not the server's fault: an idle pooled connection it had closed.
            return;
        }
        if let Some(s) = g.x.server {
            svc.upstreams.done(group, s, false, now);
        }
        if matches!(f, Failure::Connect | Failure::Timeout) && g.x.may_retry() {
            let key = g.x.start.key;
            let tried = g.x.tried.clone();
            if let Some(s) = svc.upstreams.pick(group, key, tried.as_slice(), now) {
                g.x.retry(s, now);
                return;
            }
        }
        // Counted as failed above: release leaves the balancer alone.
        g.x.server = None;
        // stale-if-error: a stale cached copy answers instead of the error page.
        let lookup =
            g.x.start
                .cache
                .as_ref()
                .filter(|ci| ci.get || g.x.start.head_request);
        if let (false, None, Some(ci)) = (g.x.responded, &g.sink, lookup) {
            let head = &ci.req_head;
            let Service {
                cache,
                pool,
                config,
                ..
            } = &mut *svc;
            if let Some(e) = cache.get(&ci.key, &|n| field_value(head, n)) {
                if e.usable_on_error(now) {
                    let (status, n) = render_for_head(
                        e,
                        "STALE",
                        now,
                        head,
                        &config.limits,
                        g.x.start.head_request,
                        g.x.conn,
                        &mut self.out,
                        pool,
                    );
                    cache
                        .stats
                        .stale
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    g.x.answered(status, n);
                    g.x.cache_tag = Some("STALE");
                    return;
                }
            }
        }
        let mut ctx = Self::gw_ctx(svc);
        let out = g.sink.as_mut().unwrap_or(&mut self.out);
        g.x.fail(f, out, &mut ctx);
        if let Some(s) = &mut g.sink {
            s.clear(&mut svc.pool);
        }
        if self.out.responses() == 1 {
            self.progress_at = now;
        }
    }

    /// A deadline passed (`deadline()`): a proxied request's connect or read timeout turns
    /// into 504 and the connection lives on (returns false); otherwise the connection is to
    /// be closed (returns true).
    pub fn expire(&mut self, svc: &mut Service, now: Instant) -> bool {
        // Waited too long for another request's cache fetch: go to the origin itself.
        let waited = self
            .collapsed
            .as_ref()
            .is_some_and(|(_, t)| now >= *t + crate::cache::COLLAPSE_WAIT);
        if waited {
            self.collapse_poll(svc, now);
            return false;
        }
        if self.gw.is_some() && self.gw_held_back() {
            // The upstream's read timer is stopped while a slow client holds it back (a
            // driver may have waited on a deadline computed before): only the client's own
            // deadline (the send stall) closes the connection.
            return self.deadline().is_none_or(|d| now >= d);
        }
        let gw_due = self
            .gw
            .as_ref()
            .and_then(|g| g.x.deadline)
            .is_some_and(|t| now >= t);
        if gw_due {
            self.gw_error(svc, Failure::Timeout, now);
            return false;
        }
        true
    }

    /// No CGI process may start now (the worker's limit): 503.
    pub fn gw_busy(&mut self, svc: &mut Service, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        g.x.unavailable(&mut self.out, &mut ctx);
        if self.out.responses() == 1 {
            self.progress_at = now;
        }
    }

    /// The connection is closing with a proxied request still in flight (the client went
    /// away): release its server in the balancer's count.
    pub fn gw_abandon(&mut self, svc: &mut Service, now: Instant) {
        if let Some(g) = self.gw.take() {
            if let Some(ci) = g.x.start.cache.as_ref().filter(|ci| ci.leader) {
                // Those waiting for this fetch go on without it (one of them fetches).
                svc.cache.release(&ci.key);
            }
            if let (Some(s), None) = (g.x.server, g.x.failure) {
                svc.upstreams.done(g.x.start.group, s, true, now);
            }
        }
    }

    /// The driver has pooled or closed the upstream connection of a finished exchange: log
    /// it, count it for the balancer, and go on with the requests behind it.
    pub fn gw_release(&mut self, svc: &mut Service, now: Instant) {
        let Some(mut g) = self.gw.take() else { return };
        if g.x.finished().is_none() {
            self.gw = Some(g);
            return;
        }
        if let (Some(s), None) = (g.x.server, g.x.failure) {
            svc.upstreams.done(g.x.start.group, s, true, now);
        }
        if let (Some(path), Some(head)) = (g.x.local_redirect.take(), &g.req_head) {
            // RFC 3875 §6.2.2: answer the request again for the script's path, as a GET, in
            // its place in the pipeline (bounded: a loop of redirects ends in a 500).
            self.local_redirects += 1;
            if self.local_redirects > MAX_LOCAL_REDIRECTS {
                let buf = self.out.bytes(&mut svc.pool);
                let conn = if g.keep {
                    ConnHeader::None
                } else {
                    ConnHeader::Close
                };
                let _ = head::simple(
                    buf,
                    500,
                    &svc.date,
                    &svc.config.server_name,
                    b"",
                    conn,
                    false,
                );
                self.out.end_response();
                self.local_redirects = 0;
            } else {
                let again = redirected_request(head, &path);
                if self.in_pos > 0 {
                    self.inp.drain(..self.in_pos);
                    self.in_pos = 0;
                }
                self.inp.splice(0..0, again);
            }
            if let Some(ci) = g.x.start.cache.as_ref().filter(|ci| ci.leader) {
                svc.cache.resolve(&ci.key, false, now);
            }
            self.closing |= !g.keep || self.shutdown;
            self.req_start = Some(now);
            if !self.closing && self.parked.is_none() {
                self.process(svc, now);
            }
            return;
        }
        self.local_redirects = 0;
        let mut stored = g.x.cache_tag == Some("REVALIDATED");
        if let (Some(st), Some(ci), None) = (g.x.store.take(), &g.x.start.cache, g.x.failure) {
            let vary = st
                .vary
                .iter()
                .map(|n| (n.clone(), field_value(&ci.req_head, n)))
                .collect();
            let e = crate::cache::Entry::new(
                st.status,
                st.reason,
                st.fields,
                st.body,
                vary,
                now,
                st.fresh_for,
                ci.policy,
            );
            stored |= svc.cache.insert(ci.key.clone(), e);
        }
        if let Some(ci) = g.x.start.cache.as_ref().filter(|ci| ci.leader) {
            svc.cache.resolve(&ci.key, stored, now);
        }
        if let Some(line) = &g.log {
            let up = match (
                g.x.server.or(g.x.tried.last()),
                svc.upstreams.spec(g.x.start.group),
            ) {
                (Some(s), Some(spec)) => spec.servers.get(s).map(|a| a.addr.to_string()),
                _ => None,
            };
            let ms = now.saturating_duration_since(g.began).as_secs_f64() * 1000.0;
            let detail = format!(
                "upstream={} upstream_status={} upstream_ms={ms:.1}{}{}{}{}",
                up.as_deref().unwrap_or("-"),
                g.x.status,
                match g.x.failure {
                    Some(f) => format!(" upstream_error={f:?}"),
                    None => String::new(),
                },
                match g.x.cache_tag {
                    Some(t) => format!(" cache={t}"),
                    None => String::new(),
                },
                match g.x.spliced_bytes {
                    0 => String::new(),
                    n => format!(" spliced={n}"),
                },
                match g.x.spliced_up {
                    0 => String::new(),
                    n => format!(" spliced_up={n}"),
                }
            );
            let sent = Sent {
                status: g.x.status,
                body_bytes: g.x.body_bytes,
            };
            line.write(svc, self.peer, sent, Some(detail));
        }
        // A background refresh (`sink`) ends nothing of the client's.
        let detached = g.sink.is_some();
        let owed = std::mem::take(&mut self.cont_owed);
        let drain = g.x.is_app() && g.keep && !owed && !self.eof && !self.shutdown;
        if !detached && drain && self.stream.is_some() && !g.x.closes_client() {
            // An app answered without reading all of its body (the client was not left
            // waiting for a 100): the rest is read and dropped, then the connection serves on.
            self.drained = 0;
            self.req_start = Some(now);
            self.stream_body(svc, now);
            return;
        }
        if !detached {
            if self.stream.take().is_some() {
                // Answered before the client's body was all read (an early response, no
                // server to take it): the rest of it is never read, so nothing after it can
                // be trusted.
                self.in_pos = self.inp.len();
                self.closing = true;
                self.out.close_last();
            }
            if g.x.closes_client() && !g.x.was_tunnel() && !self.closing {
                // Say so on the response, when its head is still queued (not for a tunnel's
                // 101, whose connection only ever closes).
                self.out.close_last();
            }
        }
        self.closing |= (!detached && (!g.keep || g.x.closes_client())) || self.shutdown;
        self.req_start = (self.in_pos < self.inp.len()).then_some(now);
        if !self.closing && self.parked.is_none() {
            self.process(svc, now);
        }
    }
}
