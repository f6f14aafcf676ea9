#!/usr/bin/env python3
"""Differential HTTP/1.1 parsing test: the same raw requests against ringd and its peers.

Every case is one write of raw bytes on a fresh loopback connection, then a follow-up
`GET /a.txt` on the same connection if it is still open. Each target's answer is reduced to the
statuses of its responses in order and what followed (the connection stayed usable: `open`; the
server closed it: `closed`; it neither answered nor closed: `hang`), and each status is classed as
accept (2xx/3xx, 404, 405: the message was understood) or reject (any other 4xx/5xx). Python's
`h11` gives an offline verdict on the same bytes. Targets:

  ringd-epoll, ringd-uring  ringd serving a folder (target/release/ringd, one worker)
  nginx, h2o                the Debian packages serving the same folder
  haproxy, ringd-proxy      HAProxy (Debian) and ringd as a reverse proxy, each in front of its own
                            echo origin: an h11 server that answers every request it parses with
                            a 200 whose body is the raw bytes it received for that request

For the two proxies the number of requests the origin parsed must equal the number of origin
responses the front end passed back; any other count is a desync (request smuggling) and makes
the run exit 1. Every run first checks that this check works (`self_test()`: a fake front end
that drops the second of two responses must be caught).

Cases: the conformance cases of tests/it/conformance.rs (the `send` byte strings, read from the
Rust source) and systematic mutations of a few base requests (see `mutations()`). Disagreements
that involve ringd are explained in scripts/differential-explanations.toml, joined into the
table by case id.

Usage:
  scripts/differential.py                 every case, every target found; writes
                                          results/<date>-vm-differential/{report.md,report.json,env.txt}
  scripts/differential.py --smoke         a few seconds: the conformance cases and a sample of the
                                          mutations, against ringd and the peers that are installed;
                                          no files written unless --out; exit 1 on a proxy desync
  scripts/differential.py --list          print the case ids and exit
Options: --out DIR, --targets a,b,c, --only SUBSTRING (case ids), --install (apt-get/pip what is
missing: h2o, nginx, haproxy, h11), --require (a missing peer is an error, for CI), --ringd PATH
(default: $RINGD_BIN, else target/release/ringd, else target/debug/ringd).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE_RS = REPO / "tests" / "it" / "conformance.rs"
EXPLANATIONS = REPO / "scripts" / "differential-explanations.toml"
# The ringd binary: --ringd PATH, else $RINGD_BIN, else the release build, else the debug build.
RINGD = Path(os.environ.get("RINGD_BIN") or REPO / "target" / "release" / "ringd")
if "RINGD_BIN" not in os.environ and not RINGD.exists():
    RINGD = REPO / "target" / "debug" / "ringd"

FILE_BODY = b"hello\n"
FOLLOW_UP = b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n"
PIPELINED_GET = b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n"

# Statuses that say "I understood the message" for a static file server: the file (200), or a
# method the file does not allow (405), or a target that names no file (404).
ACCEPT_STATUSES = {404, 405}


# --------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    id: str
    name: str
    send: bytes
    # Indexes of the responses that answer a HEAD (no body follows their head).
    head_responses: tuple[int, ...] = ()
    rfc: str = ""


_RUST_ESCAPES = {"n": 10, "r": 13, "t": 9, "0": 0, "\\": 92, '"': 34, "'": 39}


def decode_rust_bytes(lit: str) -> bytes:
    """Decodes the inside of a Rust byte-string literal b"..." (escapes \\n \\r \\t \\0 \\\\ \\"
    \\' \\xNN and a backslash-newline continuation)."""
    out = bytearray()
    i = 0
    while i < len(lit):
        c = lit[i]
        if c != "\\":
            out += c.encode("ascii")
            i += 1
            continue
        e = lit[i + 1]
        if e == "x":
            out.append(int(lit[i + 2 : i + 4], 16))
            i += 4
        elif e in _RUST_ESCAPES:
            out.append(_RUST_ESCAPES[e])
            i += 2
        elif e == "\n":  # line continuation: skip the newline and the next line's indentation
            i += 2
            while i < len(lit) and lit[i] in " \t\n":
                i += 1
        else:
            raise ValueError(f"unknown escape \\{e} in Rust byte string")
    return bytes(out)


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:60]


def conformance_cases(path: Path = CONFORMANCE_RS) -> list[Case]:
    """The `case(name, rfc, send, answers, after)` entries of conformance.rs, in table order."""
    src = path.read_text()
    cases = []
    table = None
    str_lit = r'"((?:[^"\\]|\\.)*)"'
    pat = re.compile(
        r"const (\w+): &\[Case\]|case\(\s*" + str_lit + r",\s*" + str_lit + r",\s*b" + str_lit
        + r",\s*&\[(.*?)\],\s*(Open|Closed)\s*,?\s*\)",
        re.S,
    )
    for m in pat.finditer(src):
        if m.group(1):
            table = m.group(1).lower()
            continue
        name, rfc, send, answers = m.group(2), m.group(3), m.group(4), m.group(5)
        # The answers list: constants (OK, HEAD_OK, ...) or tuples; HEAD_OK marks a HEAD answer.
        items = re.findall(r"\(&\[[^\]]*\],\s*\w+\)|\w+", answers)
        heads = tuple(i for i, it in enumerate(items) if it == "HEAD_OK" or it.endswith("true)"))
        cases.append(Case(f"conf/{table}/{slug(name)}", name, decode_rust_bytes(send), heads, rfc))
    if len(cases) < 20:
        raise SystemExit(f"error: found only {len(cases)} cases in {path}; has its format changed?")
    return cases


def mutations() -> list[Case]:
    """Systematic mutations of a few base requests. Each request with a body is followed by a
    pipelined `GET /a.txt` in the same write, so where a server thinks the body ends shows in the
    number of responses it sends."""
    out: list[Case] = []

    def add(cid: str, name: str, data: bytes) -> None:
        out.append(Case("mut/" + cid, name, data))

    chunked_body = b"5\r\nhello\r\n0\r\n\r\n"

    def post(fields: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
        return b"POST /a.txt " + version + b"\r\nHost: a\r\n" + fields + b"\r\n" + body + PIPELINED_GET

    # Obfuscated Transfer-Encoding (a chunked body that a CL-less reading sees as garbage).
    te_values = {
        "te-trailing-space": b"chunked ",
        "te-leading-space": b"  chunked",
        "te-tab": b"\tchunked",
        "te-capitalised": b"Chunked",
        "te-upper": b"CHUNKED",
        "te-xchunked": b"xchunked",
        "te-chunked-x": b"chunkedx",
        "te-chunked-identity": b"chunked, identity",
        "te-identity-chunked": b"identity, chunked",
        "te-gzip-chunked": b"gzip, chunked",
        "te-chunked-comma": b"chunked,",
        "te-comma-chunked": b", chunked",
        "te-quoted": b'"chunked"',
        "te-vtab-before": b"\x0bchunked",
        "te-vtab-after": b"chunked\x0b",
        "te-formfeed-before": b"\x0cchunked",
        "te-formfeed-after": b"chunked\x0c",
        "te-nul-after": b"chunked\x00",
        "te-empty": b"",
        "te-identity": b"identity",
    }
    for cid, v in te_values.items():
        add(cid, f"Transfer-Encoding: {v!r}", post(b"Transfer-Encoding: " + v + b"\r\n", chunked_body))
    add("te-no-space", "Transfer-Encoding:chunked", post(b"Transfer-Encoding:chunked\r\n", chunked_body))
    add("te-two-fields-chunked", "two Transfer-Encoding: chunked fields",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked_body))
    add("te-two-fields-identity-chunked", "Transfer-Encoding: identity, then chunked",
        post(b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", chunked_body))
    add("te-two-fields-chunked-empty", "Transfer-Encoding: chunked, then an empty one",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n", chunked_body))
    add("te-underscore-name", "Transfer_Encoding: chunked",
        post(b"Transfer_Encoding: chunked\r\n", chunked_body))
    add("te-space-before-colon", "Transfer-Encoding : chunked",
        post(b"Transfer-Encoding : chunked\r\n", chunked_body))
    add("te-tab-before-colon", "Transfer-Encoding<TAB>: chunked",
        post(b"Transfer-Encoding\t: chunked\r\n", chunked_body))
    add("te-obs-fold", "Transfer-Encoding: folded onto the next line",
        post(b"Transfer-Encoding:\r\n chunked\r\n", chunked_body))
    add("te-leading-space-line", "a field line starting with a space names Transfer-Encoding",
        post(b"X-A: b\r\n Transfer-Encoding: chunked\r\n", chunked_body))
    add("te-with-cl", "Transfer-Encoding: chunked with Content-Length: 15",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 15\r\n", chunked_body))
    add("te-obfuscated-with-cl", "Transfer-Encoding: xchunked with Content-Length: 15",
        post(b"Transfer-Encoding: xchunked\r\nContent-Length: 15\r\n", chunked_body))
    add("te-vtab-with-cl", "Transfer-Encoding: <VT>chunked with Content-Length: 15",
        post(b"Transfer-Encoding: \x0bchunked\r\nContent-Length: 15\r\n", chunked_body))

    # Content-Length variants, body "hello".
    cl_values = {
        "cl-plus": b"+5", "cl-leading-zero": b"05", "cl-many-zeros": b"0000000005",
        "cl-space-inside": b"5 5", "cl-list-same": b"5,5", "cl-list-same-space": b"5, 5",
        "cl-list-different": b"5, 6", "cl-hex": b"0x5", "cl-huge": b"99999999999999999999999",
        "cl-2to64": b"18446744073709551621", "cl-negative": b"-5", "cl-empty": b"",
        "cl-decimal": b"5.0", "cl-trailing-space": b"5 ", "cl-tab": b"\t5\t",
        "cl-vtab": b"5\x0b", "cl-letters": b"5a", "cl-list-trailing-comma": b"5,",
        "cl-list-leading-comma": b",5",
    }
    for cid, v in cl_values.items():
        add(cid, f"Content-Length: {v!r}", post(b"Content-Length: " + v + b"\r\n", b"hello"))
    add("cl-two-same", "two Content-Length: 5 fields",
        post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"))
    add("cl-two-different", "Content-Length: 5 and Content-Length: 6",
        post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello"))
    add("cl-space-before-colon", "Content-Length : 5",
        post(b"Content-Length : 5\r\n", b"hello"))
    add("cl-on-get", "a GET with Content-Length: 5",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + PIPELINED_GET)
    add("cl-with-te-first", "Content-Length: 5 before Transfer-Encoding: chunked",
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", chunked_body))

    # Line endings.
    lf = b"GET /a.txt HTTP/1.1\nHost: a\n\n"
    add("eol-bare-lf", "bare LF line endings throughout", lf + PIPELINED_GET)
    add("eol-bare-lf-request-line", "bare LF after the request line only",
        b"GET /a.txt HTTP/1.1\nHost: a\r\n\r\n" + PIPELINED_GET)
    add("eol-bare-lf-end", "bare LF for the empty line only",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\n" + PIPELINED_GET)
    add("eol-bare-cr", "bare CR line endings throughout",
        b"GET /a.txt HTTP/1.1\rHost: a\r\r" + PIPELINED_GET)
    add("eol-bare-cr-field", "a bare CR ends a field line",
        b"GET /a.txt HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n" + PIPELINED_GET)
    add("eol-cr-cr-lf", "CR CR LF line endings",
        b"GET /a.txt HTTP/1.1\r\r\nHost: a\r\r\n\r\r\n" + PIPELINED_GET)
    add("eol-lf-post-cl", "bare LF line endings on a POST with Content-Length",
        b"POST /a.txt HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello" + PIPELINED_GET)
    add("eol-lf-te", "bare LF line endings on a chunked POST",
        b"POST /a.txt HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n" + PIPELINED_GET)

    # Control bytes in names, values and targets.
    def get_with(fields: bytes, target: bytes = b"/a.txt") -> bytes:
        return b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n" + PIPELINED_GET

    for byte, bname in [(0x00, "nul"), (0x01, "soh"), (0x0B, "vtab"), (0x0C, "formfeed"),
                        (0x1B, "esc"), (0x7F, "del")]:
        b = bytes([byte])
        add(f"ctl-{bname}-in-name", f"{bname} in a field name", get_with(b"X-" + b + b"A: b\r\n"))
        add(f"ctl-{bname}-in-value", f"{bname} in a field value", get_with(b"X-A: b" + b + b"c\r\n"))
        add(f"ctl-{bname}-in-target", f"{bname} in the target", get_with(b"", b"/a" + b + b".txt"))
    add("ctl-tab-in-value", "a tab inside a field value", get_with(b"X-A: b\tc\r\n"))
    add("ctl-tab-in-target", "a tab inside the target", get_with(b"", b"/a\t.txt"))
    add("ctl-high-in-name", "a byte >= 0x80 in a field name", get_with(b"X-\xe9: b\r\n"))
    add("ctl-nul-in-host", "NUL in the Host value",
        b"GET /a.txt HTTP/1.1\r\nHost: a\x00b\r\n\r\n" + PIPELINED_GET)
    add("ctl-nul-in-method", "NUL in the method", b"GE\x00T /a.txt HTTP/1.1\r\nHost: a\r\n\r\n" + PIPELINED_GET)

    # Whitespace before the colon and around the request line.
    add("ws-host-before-colon", "Host : a", b"GET /a.txt HTTP/1.1\r\nHost : a\r\n\r\n" + PIPELINED_GET)
    add("ws-tab-before-colon", "X-A<TAB>: b", get_with(b"X-A\t: b\r\n"))
    add("ws-leading-space-first-field", "the first field line starts with a space",
        b"GET /a.txt HTTP/1.1\r\n Host: a\r\n\r\n" + PIPELINED_GET)
    add("ws-two-spaces-request-line", "two spaces between method and target",
        b"GET  /a.txt HTTP/1.1\r\nHost: a\r\n\r\n" + PIPELINED_GET)
    add("ws-tab-request-line", "a tab between method and target",
        b"GET\t/a.txt HTTP/1.1\r\nHost: a\r\n\r\n" + PIPELINED_GET)
    add("ws-trailing-space-request-line", "a space after the version",
        b"GET /a.txt HTTP/1.1 \r\nHost: a\r\n\r\n" + PIPELINED_GET)
    add("ws-leading-space-request-line", "a space before the method",
        b" GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n" + PIPELINED_GET)

    # obs-fold.
    add("fold-space", "obs-fold with a space", get_with(b"X-A: b\r\n c\r\n"))
    add("fold-tab", "obs-fold with a tab", get_with(b"X-A: b\r\n\tc\r\n"))
    add("fold-host", "obs-fold in Host", b"GET /a.txt HTTP/1.1\r\nHost:\r\n a\r\n\r\n" + PIPELINED_GET)
    add("fold-cl", "obs-fold in Content-Length", post(b"Content-Length:\r\n 5\r\n", b"hello"))

    # Chunk extensions and chunk sizes.
    def chunked(body: bytes) -> bytes:
        return post(b"Transfer-Encoding: chunked\r\n", body)

    chunk_cases = {
        "chunk-ext": b"5;a=b\r\nhello\r\n0\r\n\r\n",
        "chunk-ext-no-value": b"5;a\r\nhello\r\n0\r\n\r\n",
        "chunk-ext-bws": b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
        "chunk-ext-tab": b"5\t;a=b\r\nhello\r\n0\r\n\r\n",
        "chunk-ext-quoted-semicolon": b'5;a="x;y"\r\nhello\r\n0\r\n\r\n',
        "chunk-ext-quoted-crlf": b'5;a="x\r\ny"\r\nhello\r\n0\r\n\r\n',
        "chunk-ext-bare-lf": b"5;a=b\nhello\r\n0\r\n\r\n",
        "chunk-ext-nul": b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
        "chunk-ext-last": b"5\r\nhello\r\n0;a=b\r\n\r\n",
        "chunk-size-leading-zeros": b"005\r\nhello\r\n000\r\n\r\n",
        "chunk-size-many-zeros": b"00000000000000000005\r\nhello\r\n0\r\n\r\n",
        "chunk-size-0x": b"0x5\r\nhello\r\n0\r\n\r\n",
        "chunk-size-plus": b"+5\r\nhello\r\n0\r\n\r\n",
        "chunk-size-minus": b"-5\r\nhello\r\n0\r\n\r\n",
        "chunk-size-leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
        "chunk-size-trailing-space": b"5 \r\nhello\r\n0\r\n\r\n",
        "chunk-size-upper": b"A\r\n0123456789\r\n0\r\n\r\n",
        "chunk-size-overflow-16": b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        "chunk-size-overflow-ff": b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "chunk-size-2to64-minus1": b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "chunk-size-empty": b"\r\nhello\r\n0\r\n\r\n",
        "chunk-size-bare-lf": b"5\nhello\r\n0\r\n\r\n",
        "chunk-data-bare-lf": b"5\r\nhello\n0\r\n\r\n",
        "chunk-data-no-crlf": b"5\r\nhellox0\r\n\r\n",
        "chunk-data-too-long": b"3\r\nhello\r\n0\r\n\r\n",
        "chunk-data-cr-only": b"5\r\nhello\r0\r\n\r\n",
        "chunk-last-bare-lf": b"5\r\nhello\r\n0\n\n",
        "chunk-trailer": b"5\r\nhello\r\n0\r\nX-T: t\r\n\r\n",
        "chunk-trailer-cl": b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
        "chunk-trailer-te": b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "chunk-trailer-fold": b"5\r\nhello\r\n0\r\nX-T: t\r\n u\r\n\r\n",
        "chunk-trailer-no-colon": b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        "chunk-trailer-space-before-colon": b"5\r\nhello\r\n0\r\nX-T : t\r\n\r\n",
    }
    for cid, body in chunk_cases.items():
        add(cid, f"chunked body {body[:24]!r}", chunked(body))

    # HTTP/1.0 and keep-alive, versions.
    g10ka = b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    add("v10-keepalive-pipelined", "two HTTP/1.0 keep-alive GETs in one write", g10ka + g10ka)
    add("v10-keepalive-case", "HTTP/1.0 with Connection: Keep-Alive",
        b"GET /a.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n" + PIPELINED_GET)
    add("v10-keepalive-post-cl", "HTTP/1.0 keep-alive POST with Content-Length",
        b"POST /a.txt HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello" + PIPELINED_GET)
    add("v10-keepalive-te", "HTTP/1.0 keep-alive POST with Transfer-Encoding: chunked",
        post(b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n", chunked_body, b"HTTP/1.0"))
    add("v10-no-keepalive", "HTTP/1.0 without keep-alive, pipelined",
        b"GET /a.txt HTTP/1.0\r\n\r\n" + PIPELINED_GET)
    add("v11-connection-close-list", "Connection: keep-alive, close",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n" + PIPELINED_GET)
    add("v11-connection-close-upper", "Connection: CLOSE",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n" + PIPELINED_GET)
    for cid, v in {"v12": b"HTTP/1.2", "v19": b"HTTP/1.9", "v10-leading-zero": b"HTTP/01.1",
                   "v1110": b"HTTP/1.10", "v30": b"HTTP/3.0", "vmissing-minor": b"HTTP/1",
                   "vlower": b"Http/1.1"}.items():
        add(f"version-{cid}", f"version {v!r}",
            b"GET /a.txt " + v + b"\r\nHost: a\r\n\r\n" + PIPELINED_GET)

    # Request targets.
    targets = {
        "absolute": b"http://a/a.txt", "absolute-other-host": b"http://b/a.txt",
        "absolute-upper-scheme": b"HTTP://A/a.txt", "absolute-https": b"https://a/a.txt",
        "absolute-port": b"http://a:80/a.txt", "absolute-userinfo": b"http://u@a/a.txt",
        "absolute-no-path": b"http://a", "absolute-ftp": b"ftp://a/a.txt",
        "double-slash": b"//a.txt", "dot-segments": b"/x/../a.txt", "dot-escape": b"/../a.txt",
        "percent-encoded": b"/a%2etxt", "percent-bad": b"/a%zz.txt", "query": b"/a.txt?x=1",
        "backslash": b"/\\a.txt", "asterisk": b"*",
    }
    for cid, t in targets.items():
        add(f"target-{cid}", f"target {t!r}",
            b"GET " + t + b" HTTP/1.1\r\nHost: a\r\n\r\n" + PIPELINED_GET)
    add("target-absolute-no-host", "absolute-form target and no Host field",
        b"GET http://a/a.txt HTTP/1.1\r\n\r\n" + PIPELINED_GET)
    add("target-connect", "CONNECT with an authority target",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" + PIPELINED_GET)
    add("target-options-asterisk", "OPTIONS *",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" + PIPELINED_GET)

    # Expect.
    def expect(value: bytes, version: bytes = b"HTTP/1.1", body: bytes = b"hello") -> bytes:
        host = b"Host: a\r\n" if version == b"HTTP/1.1" else b""
        return (b"POST /a.txt " + version + b"\r\n" + host + b"Expect: " + value
                + b"\r\nContent-Length: 5\r\n\r\n" + body + PIPELINED_GET)

    add("expect-100", "Expect: 100-continue, body sent at once", expect(b"100-continue"))
    add("expect-100-upper", "Expect: 100-Continue", expect(b"100-Continue"))
    add("expect-unknown", "Expect: something-else", expect(b"something-else"))
    add("expect-list", "Expect: 100-continue, x", expect(b"100-continue, x"))
    add("expect-empty", "Expect: (empty)", expect(b""))
    add("expect-http10", "Expect: 100-continue on HTTP/1.0", expect(b"100-continue", b"HTTP/1.0"))
    add("expect-get", "a GET with Expect: 100-continue and no body",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n" + PIPELINED_GET)
    add("expect-chunked", "Expect: 100-continue with a chunked body",
        post(b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n", chunked_body))
    return out


# The mutations --smoke runs beside the conformance cases: the smuggling-shaped ones.
SMOKE_MUTATIONS = (
    "te-trailing-space", "te-capitalised", "te-identity-chunked", "te-vtab-before",
    "te-formfeed-after", "te-two-fields-chunked", "te-underscore-name", "te-space-before-colon",
    "te-obs-fold", "te-with-cl", "te-obfuscated-with-cl", "cl-plus", "cl-leading-zero",
    "cl-list-same", "cl-list-different", "cl-two-same", "cl-space-before-colon", "cl-with-te-first",
    "eol-bare-lf", "eol-bare-cr", "ctl-nul-in-value", "fold-cl", "chunk-ext-bws",
    "chunk-ext-quoted-crlf", "chunk-size-0x", "chunk-size-overflow-16", "chunk-data-no-crlf",
    "chunk-trailer-cl", "v10-keepalive-te", "expect-100",
)


# --------------------------------------------------------------------------------------------
# h11's offline verdict


def h11_verdict(data: bytes) -> dict:
    """What h11 (as a server) makes of the bytes: per request "ok" or the status it hints at for
    an error, and what would follow (open, closed, hang: waiting for more)."""
    import h11

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    statuses: list = []
    after = "open"
    method = b""
    while True:
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            statuses.append(e.error_status_hint)
            after = "closed"
            break
        if ev is h11.NEED_DATA:
            after = "open" if conn.their_state is h11.IDLE else "hang"
            break
        if ev is h11.PAUSED:
            after = "closed"
            break
        if isinstance(ev, h11.Request):
            method = ev.method
        if isinstance(ev, h11.EndOfMessage):
            statuses.append("ok")
            # A 2xx to CONNECT would switch protocols; answer it as a file server would.
            code = 405 if method == b"CONNECT" else 200
            conn.send(h11.Response(status_code=code, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                after = "closed"
                break
            conn.start_next_cycle()
    return {"statuses": statuses, "after": after, "origin": None, "relayed": None}


# --------------------------------------------------------------------------------------------
# The echo origin


class EchoOrigin:
    """An h11 server on loopback that answers each request it parses with 200 and the raw bytes
    it received for that request, and counts the requests it parsed (and the ones it refused)."""

    def __init__(self) -> None:
        import h11

        origin = self
        self.lock = threading.Lock()
        self.parsed = 0
        self.errors = 0

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                sock.settimeout(30)
                conn = h11.Connection(h11.SERVER)
                fed = 0  # bytes fed to h11 on this connection
                start = 0  # offset of the current request's first byte
                raw = bytearray()
                method = b""
                try:
                    while True:
                        ev = conn.next_event()
                        if ev is h11.NEED_DATA:
                            data = sock.recv(65536)
                            raw += data
                            fed += len(data)
                            conn.receive_data(data)
                            if not data:
                                return
                            continue
                        if isinstance(ev, h11.ConnectionClosed):
                            return
                        if isinstance(ev, h11.Request):
                            method = ev.method
                        if isinstance(ev, h11.EndOfMessage):
                            end = fed - len(conn.trailing_data[0])
                            body = bytes(raw[start:end])
                            start = end
                            with origin.lock:
                                origin.parsed += 1
                                n = origin.parsed
                            code = 405 if method == b"CONNECT" else 200
                            sock.sendall(conn.send(h11.Response(status_code=code, headers=[
                                ("Content-Length", str(len(body))), ("X-Echo-Origin", str(n)),
                                ("Content-Type", "application/octet-stream")])))
                            if method != b"HEAD":
                                sock.sendall(conn.send(h11.Data(data=body)))
                            sock.sendall(conn.send(h11.EndOfMessage()))
                            if conn.our_state is h11.MUST_CLOSE:
                                return
                            conn.start_next_cycle()
                except h11.RemoteProtocolError as e:
                    with origin.lock:
                        origin.errors += 1
                    try:
                        sock.sendall(b"HTTP/1.1 %d origin refused\r\nContent-Length: 0\r\n"
                                     b"X-Echo-Refused: 1\r\nConnection: close\r\n\r\n"
                                     % e.error_status_hint)
                    except OSError:
                        pass
                except OSError:
                    return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.parsed, self.errors

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# The client side: one case against one target


@dataclass
class Resp:
    status: int
    headers: dict
    body: bytes


def parse_responses(buf: bytes, head_idx: set[int], first_index: int):
    """Complete responses at the front of buf (1xx ones reported apart); returns
    (finals, interims, rest). A response without framing runs to the end (reads to close)."""
    finals: list[Resp] = []
    interims: list[int] = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            break
        head = buf[:end].decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split(" ")[1])
        except (IndexError, ValueError):
            status = 0
        headers: dict = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k.strip().lower(), v.strip())
        rest = buf[end + 4 :]
        if 100 <= status < 200:
            interims.append(status)
            buf = rest
            continue
        idx = first_index + len(finals)
        if idx in head_idx or status in (204, 304):
            finals.append(Resp(status, headers, b""))
            buf = rest
            continue
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            pos = 0
            done = False
            while True:
                le = rest.find(b"\r\n", pos)
                if le < 0:
                    break
                size = int(rest[pos:le].split(b";")[0] or b"0", 16)
                if size == 0:
                    tend = rest.find(b"\r\n\r\n", le - 2 if le >= 2 else 0)
                    tend2 = rest.find(b"\r\n", le + 2)
                    if rest[le + 2 : le + 4] == b"\r\n":
                        pos, done = le + 4, True
                    elif tend >= 0:
                        pos, done = tend + 4, True
                    del tend2
                    break
                if len(rest) < le + 2 + size + 2:
                    break
                body += rest[le + 2 : le + 2 + size]
                pos = le + 2 + size + 2
            if not done:
                break
            finals.append(Resp(status, headers, bytes(body)))
            buf = rest[pos:]
            continue
        if "content-length" in headers:
            n = int(headers["content-length"])
            if len(rest) < n:
                break
            finals.append(Resp(status, headers, rest[:n]))
            buf = rest[n:]
            continue
        break  # read to close: parsed by the caller once the connection ends
    return finals, interims, buf


def exchange(port: int, case: Case, first_wait: float, idle_wait: float, origin=None) -> dict:
    """Sends the case, reads what comes back, then a follow-up GET if the connection is open.
    With an echo origin behind the target, it then keeps reading (up to 3 s) until the origin
    responses passed back match the requests the origin parsed, so that a slow proxy is not
    taken for a desync; `origin` is the count of requests it parsed before the case."""
    origin_before = origin.counts()[0] if origin is not None else 0
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    finals: list[Resp] = []
    interims: list[int] = []
    closed = False
    head_idx = set(case.head_responses)

    def read_phase(wait_first: float, until_ok: bool = False) -> None:
        nonlocal buf, closed
        wait = wait_first
        start = len(finals)
        while not (until_ok and any(r.status == 200 for r in finals[start:])):
            s.settimeout(wait)
            try:
                chunk = s.recv(65536)
            except (socket.timeout, TimeoutError):
                return
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                return
            if not chunk:
                closed = True
                return
            buf += chunk
            f, i, buf = parse_responses(buf, head_idx, len(finals))
            finals.extend(f)
            interims.extend(i)
            wait = idle_wait

    try:
        s.sendall(case.send)
    except (BrokenPipeError, ConnectionResetError):
        pass
    read_phase(first_wait)
    n_main = len(finals)
    after = "closed"
    if not closed:
        try:
            s.sendall(FOLLOW_UP)
            read_phase(first_wait, until_ok=True)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        follow = finals[n_main:]
        if any(r.status == 200 for r in follow):
            after = "open"
        elif follow:
            after = "follow-up:" + ",".join(str(r.status) for r in follow)
        elif not closed:
            after = "hang"
    if origin is not None:
        # The origin may still be parsing what the proxy forwarded (its thread runs when the
        # GIL lets it), so the counts must agree for 100 ms in a row, not just once.
        deadline = time.time() + 3
        agreed_since = None
        while time.time() < deadline:
            parsed = origin.counts()[0] - origin_before
            relayed = sum(1 for r in finals if "x-echo-origin" in r.headers)
            if parsed != relayed:
                agreed_since = None
            elif agreed_since is None:
                agreed_since = time.time()
            elif time.time() - agreed_since >= min(idle_wait, 0.1):
                break
            if closed:
                time.sleep(0.02)
                continue
            read_phase(0.05)
    if closed and buf.startswith(b"HTTP/"):  # a response framed by the close
        line = buf.split(b"\r\n", 1)[0].split(b" ")
        try:
            finals.append(Resp(int(line[1]), {}, b""))
        except (IndexError, ValueError):
            pass
    s.close()
    main = finals[:n_main]
    relayed = sum(1 for r in finals if "x-echo-origin" in r.headers)
    return {
        "statuses": [r.status for r in main],
        "interim": interims,
        "after": after,
        "relayed": relayed,
        "echo": [r.body.decode("latin-1") for r in finals if "x-echo-origin" in r.headers],
    }


# --------------------------------------------------------------------------------------------
# Targets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, name: str, log: Path) -> None:
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(FOLLOW_UP)
                if s.recv(16).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer on port {port}: {log.read_text()[-2000:]}")


@dataclass
class Target:
    name: str
    port: int = 0
    proc: subprocess.Popen | None = None
    origin: EchoOrigin | None = None
    version: str = ""
    notes: list = field(default_factory=list)


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/nginx-body;
    proxy_temp_path {run}/nginx-proxy;
    fastcgi_temp_path {run}/nginx-fastcgi;
    uwsgi_temp_path {run}/nginx-uwsgi;
    scgi_temp_path {run}/nginx-scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
"""

H2O_CONF = """\
user: nobody
num-threads: 1
listen:
  host: 127.0.0.1
  port: {port}
hosts:
  default:
    paths:
      /:
        file.dir: {www}
"""

HAPROXY_CONF = """\
global
    nbthread 1
    maxconn 1000
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout http-request 10s
frontend fe
    bind 127.0.0.1:{port}
    default_backend echo
backend echo
    http-reuse always
    server echo1 127.0.0.1:{origin}
"""

RINGD_PROXY_CONF = """\
[upstreams.echo]
servers = ["127.0.0.1:{origin}"]

[[sites]]
hosts = ["_"]
  [[sites.routes]]
  path = "/*"
  proxy = {{ upstream = "echo" }}
"""


def version_of(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def start_target(name: str, run: Path, www: Path) -> Target:
    t = Target(name, port=free_port())
    log = run / f"{name}.log"
    logf = open(log, "wb")
    if name.startswith("ringd"):
        if not RINGD.exists():
            raise RuntimeError(f"{RINGD} not found: build it first (cargo build --release)")
        args = [str(RINGD), "--listen", f"127.0.0.1:{t.port}", "--workers", "1", "--no-pin"]
        if name == "ringd-proxy":
            t.origin = EchoOrigin()
            conf = run / "ringd-proxy.toml"
            conf.write_text(RINGD_PROXY_CONF.format(origin=t.origin.port))
            args += ["--config", str(conf), "--backend", "epoll"]
        else:
            args += ["--backend", name.split("-", 1)[1], str(www)]
        t.version = version_of([str(RINGD), "--version"])
        t.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT)
    elif name == "nginx":
        conf = run / "nginx.conf"
        conf.write_text(NGINX_CONF.format(run=run, port=t.port, www=www))
        t.version = version_of(["nginx", "-v"])
        t.proc = subprocess.Popen(["nginx", "-e", str(run / "nginx-error.log"), "-p", str(run),
                                   "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT)
    elif name == "h2o":
        conf = run / "h2o.conf"
        conf.write_text(H2O_CONF.format(run=run, port=t.port, www=www))
        t.version = version_of(["h2o", "--version"])
        t.proc = subprocess.Popen(["h2o", "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT)
    elif name == "haproxy":
        t.origin = EchoOrigin()
        conf = run / "haproxy.cfg"
        conf.write_text(HAPROXY_CONF.format(port=t.port, origin=t.origin.port))
        t.version = version_of(["haproxy", "-v"])
        t.proc = subprocess.Popen(["haproxy", "-db", "-f", str(conf)], stdout=logf,
                                  stderr=subprocess.STDOUT)
    else:
        raise RuntimeError(f"unknown target {name}")
    wait_ready(t.port, t.proc, name, log)
    return t


def stop_target(t: Target) -> None:
    if t.proc and t.proc.poll() is None:
        t.proc.send_signal(signal.SIGTERM)
        try:
            t.proc.wait(10)
        except subprocess.TimeoutExpired:
            t.proc.kill()
            t.proc.wait()
    if t.origin:
        t.origin.stop()


def self_test() -> None:
    """Proves the desync check can fire: a front end that forwards the client's bytes to the echo
    origin unparsed but passes back only the first response (as a proxy that framed a request
    differently from its origin would) must be reported as a desync, and one that passes back
    every response must not."""
    origin = EchoOrigin()
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    port = ls.getsockname()[1]
    relay_all = [False]

    def serve() -> None:
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                with c, socket.create_connection(("127.0.0.1", origin.port)) as u:
                    u.sendall(c.recv(65536))
                    buf = b""
                    u.settimeout(2)
                    while True:
                        f, _, rest = parse_responses(buf, set(), 0)
                        if len(f) >= (2 if relay_all[0] else 1):
                            break
                        buf += u.recv(65536)
                    end = len(buf) - len(rest) if relay_all[0] else buf.index(b"\r\n\r\n") + 4 + len(f[0].body)
                    c.sendall(buf[:end])
            except OSError:
                continue

    threading.Thread(target=serve, daemon=True).start()
    case = Case("self-test", "GET with a body, then a pipelined GET",
                b"GET /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + PIPELINED_GET)
    try:
        for relay, want in ((False, True), (True, False)):
            relay_all[0] = relay
            before = origin.counts()[0]
            r = exchange(port, case, 0.5, 0.1, origin)
            desync = origin.counts()[0] - before != r["relayed"]
            if desync != want:
                raise SystemExit(f"error: self-test: the desync check {'missed' if want else 'invented'} a desync "
                                 f"(origin parsed {origin.counts()[0] - before}, passed back {r['relayed']})")
    finally:
        ls.close()
        origin.stop()


ALL_TARGETS = ["ringd-epoll", "ringd-uring", "nginx", "h2o", "haproxy", "ringd-proxy"]
PEER_BINARIES = {"nginx": "nginx", "h2o": "h2o", "haproxy": "haproxy"}
APT_PACKAGES = {"nginx": "nginx", "h2o": "h2o", "haproxy": "haproxy"}


def install_missing(targets: list[str]) -> None:
    missing = [APT_PACKAGES[t] for t in targets if t in PEER_BINARIES and not shutil.which(PEER_BINARIES[t])]
    if missing:
        print(f"installing {' '.join(missing)} (apt-get)", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env)
    try:
        import h11  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "h11"], check=True)
        importlib.invalidate_caches()  # so that this process finds the new package


# --------------------------------------------------------------------------------------------
# Classification and the report


def klass(status) -> str:
    if status == "ok" or (isinstance(status, int) and (200 <= status < 400 or status in ACCEPT_STATUSES)):
        return "A"
    return "R"


def signature(r: dict) -> str:
    """What is compared between targets: accept/reject per response, then what followed."""
    after = r["after"]
    if after.startswith("follow-up:"):
        after = "follow-up-rejected"
    return " ".join(klass(s) for s in r["statuses"]) + " | " + after


def cell(r: dict) -> str:
    s = " ".join(str(x) for x in r["statuses"]) or "-"
    if r.get("interim"):
        s = "(" + ",".join(map(str, r["interim"])) + ") " + s
    s += " · " + r["after"]
    if r.get("origin") is not None:
        s += f" · origin {r['origin']}/{r['relayed']}"
        if r.get("origin_refused"):
            s += f" (+{r['origin_refused']} refused)"
    return s


def run_target(t: Target, cases: list[Case], first_wait: float, idle_wait: float) -> dict:
    out = {}
    for c in cases:
        before = t.origin.counts() if t.origin else None
        try:
            r = exchange(t.port, c, first_wait, idle_wait, t.origin)
        except OSError as e:
            r = {"statuses": [], "after": f"error:{e}", "relayed": 0, "echo": []}
        if t.origin:
            after = t.origin.counts()
            r["origin"] = after[0] - before[0]
            r["origin_refused"] = after[1] - before[1]
            r["desync"] = r["origin"] != r["relayed"]
        else:
            r.pop("relayed", None)
            r.pop("echo", None)
        out[c.id] = r
        if t.proc and t.proc.poll() is not None:
            raise RuntimeError(f"{t.name} died during case {c.id} (exit {t.proc.returncode})")
    return out


def load_explanations(case_ids: set[str]) -> dict:
    """case id -> {kind, rfc, why} from the `[[explain]]` entries (each with a `cases` list)."""
    if not EXPLANATIONS.exists():
        return {}
    out = {}
    for e in tomllib.loads(EXPLANATIONS.read_text()).get("explain", []):
        for cid in e["cases"]:
            if cid in out:
                raise SystemExit(f"error: {EXPLANATIONS.name}: {cid} is explained twice")
            if cid not in case_ids:
                raise SystemExit(f"error: {EXPLANATIONS.name}: {cid} is not a case id")
            out[cid] = {k: e.get(k, "") for k in ("kind", "rfc", "why")}
    return out


def build_report(cases: list[Case], targets: list[str], results: dict, versions: dict,
                 env: str, explanations: dict) -> tuple[str, dict]:
    cols = ["h11"] + targets
    rows = []
    for c in cases:
        sigs = {col: signature(results[col][c.id]) for col in cols}
        live = {col: sigs[col] for col in targets}
        ringd_cols = [col for col in targets if col.startswith("ringd")]
        disagree_live = len(set(live.values())) > 1
        involves_ringd = any(
            sigs[r] != sigs[o] for r in ringd_cols for o in cols if o != r
        )
        desync = [col for col in targets if results[col][c.id].get("desync")]
        rows.append({
            "id": c.id, "name": c.name, "send": c.send.decode("latin-1"),
            "signatures": sigs, "disagree": disagree_live, "involves_ringd": involves_ringd,
            "desync": desync, "explanation": explanations.get(c.id),
            "results": {col: results[col][c.id] for col in cols},
        })
    summary = {}
    for col in cols:
        rs = [results[col][c.id] for c in cases]
        summary[col] = {
            "version": versions.get(col, ""),
            "cases": len(rs),
            "accepted_all": sum(1 for r in rs if r["statuses"] and all(klass(s) == "A" for s in r["statuses"])),
            "rejected_some": sum(1 for r in rs if any(klass(s) == "R" for s in r["statuses"])),
            "no_response": sum(1 for r in rs if not r["statuses"]),
            "open_after": sum(1 for r in rs if r["after"] == "open"),
            "closed_after": sum(1 for r in rs if r["after"] == "closed"),
            "hang_after": sum(1 for r in rs if r["after"] == "hang"),
            "desyncs": sum(1 for r in rs if r.get("desync")),
            "origin_refused": sum(r.get("origin_refused") or 0 for r in rs),
            "differs_from_ringd_epoll": sum(
                1 for row in rows if row["signatures"][col] != row["signatures"].get("ringd-epoll", row["signatures"][col])
            ),
        }
    unexplained = [r["id"] for r in rows if r["involves_ringd"] and not r["explanation"]]
    data = {"env": env, "targets": cols, "summary": summary, "rows": rows,
            "unexplained_ringd_disagreements": unexplained,
            "desyncs": [(r["id"], r["desync"]) for r in rows if r["desync"]]}

    md = ["# Differential parsing: ringd and its peers", "",
          "Generated by `scripts/differential.py` (do not edit by hand). Each case is one write on "
          "a fresh connection, then a follow-up `GET /a.txt` if the connection is still open. A cell "
          "is the statuses of the responses in order (`(100)`: an interim response), then what "
          "followed: `open` (the follow-up was answered 200), `closed`, `hang` (neither answered "
          "nor closed within the wait) or `follow-up:STATUS`; for the proxies, `origin P/R`: "
          "requests the echo origin parsed / origin responses the proxy passed back (a difference "
          "is a **desync**). `h11` is h11's offline verdict on the same bytes (`ok` per request it "
          "accepts, else the status it hints at). Statuses 2xx, 3xx, 404 and 405 count as "
          "accepting the message; cases differ when the accept/reject pattern or what followed "
          "differs.", "", "```", env.strip(), "```", ""]
    md += ["## Per-target summary", "",
           "| target | version | cases | all accepted | some rejected | no response | open after | closed after | hang | desyncs | origin refused | differs from ringd-epoll |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for col in cols:
        s = summary[col]
        md.append(f"| {col} | {s['version']} | {s['cases']} | {s['accepted_all']} | {s['rejected_some']} | "
                  f"{s['no_response']} | {s['open_after']} | {s['closed_after']} | {s['hang_after']} | "
                  f"{'**' + str(s['desyncs']) + '**' if s['desyncs'] else 0} | {s['origin_refused']} | "
                  f"{s['differs_from_ringd_epoll']} |")
    md.append("")
    if data["desyncs"]:
        md += ["## DESYNCS", ""]
        for cid, cols_ in data["desyncs"]:
            md.append(f"- **{cid}**: {', '.join(cols_)}")
        md.append("")
    dis = [r for r in rows if r["disagree"] or r["involves_ringd"]]
    md += [f"## Disagreements ({len(dis)} of {len(rows)} cases)", "",
           f"Unexplained disagreements involving ringd: {len(unexplained)}"
           + (": " + ", ".join(unexplained) if unexplained else "") + ".", "",
           "| case | request | " + " | ".join(cols) + " | why ringd differs |",
           "|---|---|" + "---|" * len(cols) + "---|"]

    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    for r in dis:
        req = esc(repr(r["send"].encode("latin-1"))[2:-1])
        if len(req) > 140:
            req = req[:140] + "…"
        ex = r["explanation"]
        why = esc(f"{ex.get('kind', '')}: {ex.get('rfc', '')}. {ex.get('why', '')}") if ex else ("" if not r["involves_ringd"] else "**unexplained**")
        cells = []
        base = r["signatures"].get("ringd-epoll")
        for col in cols:
            c = esc(cell(r["results"][col]))
            if r["signatures"][col] != base:
                c = f"*{c}*"
            cells.append(c)
        md.append(f"| `{r['id']}` {esc(r['name'])} | `{req}` | " + " | ".join(cells) + f" | {why} |")
    md += ["", "Cells in *italics* differ from ringd-epoll.", ""]
    fixed: dict = {}
    for r in rows:
        ex = r["explanation"]
        if ex and ex.get("kind") == "fixed":
            fixed.setdefault((ex["rfc"], ex["why"]), []).append(r["id"])
    if fixed:
        md += ["## ringd bugs this comparison found (fixed, each with a case in tests/it/conformance.rs)", ""]
        for (rfc, why), ids_ in fixed.items():
            md.append(f"- {rfc}: {why} ({', '.join(f'`{i}`' for i in ids_)})")
        md.append("")
    kinds: dict = {}
    for r in dis:
        if r["explanation"]:
            k = r["explanation"].get("kind", "")
            kinds[k] = kinds.get(k, 0) + 1
    if kinds:
        md += ["Disagreements by explanation kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
               + " (kinds: scripts/differential-explanations.toml).", ""]
    agree = [r["id"] for r in rows if not (r["disagree"] or r["involves_ringd"])]
    md += [f"## Cases where every target and h11 agree ({len(agree)})", "", ", ".join(f"`{a}`" for a in agree), ""]
    return "\n".join(md), data


def env_text(targets: dict) -> str:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    lines = [
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"commit: {sh('git -C ' + str(REPO) + ' rev-parse --short HEAD')}"
        + (" (dirty)" if sh("git -C " + str(REPO) + " status --porcelain --untracked-files=no") else ""),
        f"kernel: {sh('uname -r')}",
        f"uptime: {sh('uptime')}",
        f"python: {sys.version.split()[0]}, h11 {__import__('h11').__version__}",
    ]
    for name, v in targets.items():
        lines.append(f"{name}: {v}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--targets")
    ap.add_argument("--only")
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--require", action="store_true")
    ap.add_argument("--ringd", help="the ringd binary (default: $RINGD_BIN, target/release/ringd, target/debug/ringd)")
    a = ap.parse_args()
    if a.ringd:
        global RINGD
        RINGD = Path(a.ringd).resolve()

    cases = conformance_cases() + mutations()
    all_ids = {c.id for c in cases}
    if a.smoke:
        cases = [c for c in cases if c.id.startswith("conf/")
                 or c.id[4:] in SMOKE_MUTATIONS]
    if a.only:
        cases = [c for c in cases if a.only in c.id]
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise SystemExit("error: duplicate case ids: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
    if a.list:
        for c in cases:
            print(c.id, repr(c.send))
        return 0
    wanted = a.targets.split(",") if a.targets else list(ALL_TARGETS)
    if a.install:
        install_missing(wanted)
    try:
        import h11  # noqa: F401
    except ImportError:
        raise SystemExit("error: Python's h11 is missing (pip install h11, or --install)")
    # After the install: the self-test's echo origin is an h11 server (on a fresh machine it
    # ran first and died on the import).
    self_test()
    targets = []
    for name in wanted:
        if name in PEER_BINARIES and not shutil.which(PEER_BINARIES[name]):
            if a.require:
                raise SystemExit(f"error: {name} is not installed (apt-get install {APT_PACKAGES[name]}, or --install)")
            print(f"SKIP {name}: not installed", file=sys.stderr)
            continue
        targets.append(name)

    run = Path(tempfile.mkdtemp(prefix="ringd-differential-"))
    os.chmod(run, 0o755)
    www = run / "www"
    www.mkdir()
    (www / "a.txt").write_bytes(FILE_BODY)
    os.chmod(www, 0o755)
    os.chmod(www / "a.txt", 0o644)
    first_wait, idle_wait = (0.5, 0.15) if a.smoke else (1.0, 0.3)
    started: list[Target] = []
    results: dict = {"h11": {c.id: h11_verdict(c.send) for c in cases}}
    versions = {"h11": "h11 " + __import__("h11").__version__}
    t0 = time.time()
    try:
        for name in targets:
            started.append(start_target(name, run, www))
        errors: dict = {}

        def work(t: Target) -> None:
            try:
                results[t.name] = run_target(t, cases, first_wait, idle_wait)
            except Exception as e:  # reported below
                errors[t.name] = e

        threads = [threading.Thread(target=work, args=(t,)) for t in started]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            for n, e in errors.items():
                print(f"error: {n}: {e}", file=sys.stderr)
            return 2
        for t in started:
            versions[t.name] = t.version
    finally:
        for t in started:
            stop_target(t)
    elapsed = time.time() - t0
    env = env_text(versions) + f"cases: {len(cases)}, targets: {', '.join(t.name for t in started)}, took {elapsed:.1f} s\n"
    md, data = build_report(cases, [t.name for t in started], results, versions, env, load_explanations(all_ids))

    out = a.out
    if out is None and not a.smoke:
        out = REPO / "results" / f"{datetime.date.today().isoformat()}-vm-differential"
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(md)
        (out / "report.json").write_text(json.dumps(data, indent=1) + "\n")
        (out / "env.txt").write_text(env)
        print(f"wrote {out}/report.md", file=sys.stderr)
    shutil.rmtree(run, ignore_errors=True)

    dis = sum(1 for r in data["rows"] if r["disagree"] or r["involves_ringd"])
    print(f"{len(cases)} cases × {len(started)} targets + h11 in {elapsed:.1f} s: {dis} disagreements, "
          f"{len(data['unexplained_ringd_disagreements'])} unexplained involving ringd, "
          f"{len(data['desyncs'])} proxy desyncs", file=sys.stderr)
    # ringd's two static backends must agree with each other, always.
    split = [r["id"] for r in data["rows"]
             if "ringd-epoll" in r["signatures"] and "ringd-uring" in r["signatures"]
             and r["signatures"]["ringd-epoll"] != r["signatures"]["ringd-uring"]]
    if split:
        print("FAIL: ringd's epoll and uring backends disagree on: " + ", ".join(split), file=sys.stderr)
    if data["desyncs"]:
        for cid, cols in data["desyncs"]:
            print(f"DESYNC: {cid}: {', '.join(cols)}: the origin parsed a different number of "
                  "requests than the proxy answered", file=sys.stderr)
        return 1
    return 1 if split else 0


if __name__ == "__main__":
    sys.exit(main())
