#!/usr/bin/env python3
"""Builds the raw seed inputs for ringd's fuzz targets into fuzz/seeds/raw/<target>/ (not
committed): requests decoded from llhttp's request corpus (../shared/corpus/llhttp/*.md, the
decoding its README gives), plus hand-written requests, chunked bodies, header values and
config files. `scripts/fuzz-ci.sh --seed` (or docs/fuzzing.md) then minimises them with
`cargo fuzz cmin` into the committed fuzz/corpus/<target>/.

Usage: make_seeds.py LLHTTP_DIR OUT_DIR
"""
import hashlib
import json
import os
import re
import sys


def decode(block: str) -> bytes:
    # 1. drop one trailing newline; 2. join backslash-continued lines; 3. LF -> CRLF;
    # 4. expand \r \n \t \f \xHH \OOO.
    if block.endswith("\n"):
        block = block[:-1]
    block = re.sub(r"\\\n", "", block)
    block = block.replace("\n", "\r\n")
    out = bytearray()
    i = 0
    while i < len(block):
        c = block[i]
        if c == "\\" and i + 1 < len(block):
            n = block[i + 1]
            simple = {"r": 13, "n": 10, "t": 9, "f": 12}
            if n in simple:
                out.append(simple[n]); i += 2; continue
            if n == "x" and re.match(r"[0-9a-fA-F]{2}", block[i + 2:i + 4]):
                out.append(int(block[i + 2:i + 4], 16)); i += 4; continue
            m = re.match(r"[0-7]{1,3}", block[i + 1:i + 4])
            if m:
                out.append(int(m.group(0), 8) & 0xFF); i += 1 + len(m.group(0)); continue
        out.extend(c.encode("utf-8"))
        i += 1
    return bytes(out)


def llhttp_cases(d):
    for name in sorted(os.listdir(d)):
        if not name.endswith(".md") or name == "README.md":
            continue
        text = open(os.path.join(d, name), encoding="utf-8").read()
        for m in re.finditer(r"<!-- meta=(\{.*?\}) -->\s*```http\n(.*?)```", text, re.S):
            meta = json.loads(m.group(1))
            if not str(meta.get("type", "")).startswith("request"):
                continue
            yield decode(m.group(2))


HAND = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /a.txt HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=0-3,5-\r\nIf-None-Match: \"x\"\r\n\r\n",
    b"GET /a.txt HTTP/1.1\r\nHost: h\r\nAccept-Encoding: br;q=0.5, gzip\r\n\r\n",
    b"GET /big.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=-100\r\n\r\n",
    b"GET /list/ HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n\r\n",
    b"GET /old/x?y=1 HTTP/1.1\r\nHost: h\r\n\r\nGET /teapot HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /r/a HTTP/1.1\r\nHost: www.example.org\r\n\r\nGET /spa/z HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /a.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;e=\"q\"\r\nhello\r\n0\r\nT: x\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\n\r\nGET /%2e%2e/etc HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET http://h/a.txt#f HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
]

BODIES = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1;x=\"q;\\\"v\"\r\nhello\r\n000\r\n\r\n",
    b"3\r\nabc\r\n0\r\nTrailer: x\r\nOther: y\r\n\r\n",
    b"2 ; a = b ;c=\"d\"\r\naa\r\n0\r\n\r\n",
    b"ffffffffffffffff\r\n",
]

HEADERS = [
    b"\x00" + b"\x00" * 8 + b"bytes=0-99",
    b"\x00" + b"\xe8\x07" + b"\x00" * 6 + b"bytes=0-9, 20-29,-5",
    b"\x00" + b"\x10" + b"\x00" * 7 + b"bytes=900-",
    b"\x01" + b"\x00" * 8 + b"\"5f3a-1c8e\"\x00W/\"a\", \"5f3a-1c8e\"\x00Sun, 06 Nov 1994 08:49:37 GMT\x00Sunday, 06-Nov-94 08:49:37 GMT\x00Sun Nov  6 08:49:37 1994",
    b"\x81" + b"\x00" * 8 + b"*\x00\x00\x00\x00W/\"x\"",
    b"\x02\x07" + b"\x00" * 7 + b"br;q=0.5, gzip;q=0.8, zstd, *;q=0.1, x-gzip;q=0",
]

CONFIGS = [
    b"workers = 2\nmax_body = \"1M\"\nheader_timeout = \"10s\"\n\n[[sites]]\nhosts = [\"_\"]\nroot = \"www\"\n",
    b"[[sites]]\nhosts = [\"a\", \"*.b.org\"]\nroot = \"www\"\nindex = [\"index.html\"]\nbrowse = true\nerrors = { 404 = \"/404.html\" }\nheaders = { set = { \"X\" = \"1\" }, remove = [\"Server\"] }\n\n[[sites.routes]]\npath = \"/old/*\"\nredirect = { to = \"/new/{*}\", status = 308 }\n\n[[sites.routes]]\nregex = '^/u/(?P<id>\\d+)$'\nrewrite = \"/p?id={id}&n={1}&h={host}\"\nmethods = [\"GET\"]\n\n[[sites.routes]]\npath = \"/t\"\nrespond = { status = 418, body = \"x\", headers = { \"A\" = \"b\" } }\n\n[[sites.routes]]\npath = \"/spa/*\"\ntry_files = [\"{path}\", \"/index.html\"]\n",
    b"listen = [\"127.0.0.1:8080\"]\nbackend = \"epoll\"\npin = false\nrooot = 1\n[[sites]\n",
    b"cache_valid = \"12parsecs\"\nsmall_file_max = \"64KiB\"\n[[sites]]\nhosts = []\n",
]


def write(out, target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    src, out = sys.argv[1], sys.argv[2]
    reqs = list(llhttp_cases(src)) + HAND
    for r in reqs:
        write(out, "diff_httparse", r)
        write(out, "parse_request", b"\x00\x00" + r)
        write(out, "parse_request", b"\x01\x05" + r)
        for cfg in range(3):
            write(out, "session", bytes([cfg, 7, 1, 2, 3, 4, 5, 6]) + r)
    for b in BODIES:
        write(out, "parse_request", b"\x02\x03" + b)
        write(out, "diff_httparse", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b)
    # Several requests pipelined on one connection.
    write(out, "session", b"\x00\x01\x02\x03\x04\x05\x06\x07" + b"".join(HAND[:10]))
    write(out, "session", b"\x01\x09\x08\x07\x06\x05\x04\x03" + b"".join(HAND[:10]))
    write(out, "session", b"\x02\x11\x22\x33\x44\x55\x66\x77" + b"".join(HAND[:10]))
    for h in HEADERS:
        write(out, "headers", h)
    for c in CONFIGS:
        write(out, "config", c)
    print(f"{len(reqs)} requests; seeds in {out}")


if __name__ == "__main__":
    main()
