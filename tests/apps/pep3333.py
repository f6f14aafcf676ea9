"""One WSGI app with a path per PEP 3333 rule that tests/it/wsgi.rs checks on ringd-wsgi.

The folder it runs in (the test's temp folder) receives `NAME.closed` files when a result's
close() runs.
"""

import json
import os
import sys
import time
from wsgiref.validate import validator

MARK = os.getcwd()


class Closing:
    """An iterable result with close(), which leaves NAME.closed in MARK_DIR."""

    def __init__(self, name, chunks, fail_at=None):
        self.name, self.chunks, self.fail_at = name, chunks, fail_at

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("secret-in-iteration")
            yield c

    def close(self):
        open(os.path.join(MARK, self.name + ".closed"), "w").close()


def _validated(environ, start_response):
    # The validator holds the app to PEP 3333's letter: read(size) with a size.
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n)
    out = b"validated:" + body

    def gen():
        yield out[:5]
        yield out[5:]

    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return gen()


validated = validator(_validated)


def app(environ, start_response):
    p = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if p == "/hello":
        start_response("200 OK", text)
        return [b"Hello, World!\n"]
    if p.startswith("/environ"):
        e = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}
        e["wsgi.version"] = list(environ["wsgi.version"])
        e["input_read"] = environ["wsgi.input"].read().decode("latin-1")
        body = json.dumps(e).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if p == "/echo":
        inp, q = environ["wsgi.input"], environ["QUERY_STRING"]
        if q == "lines":
            data = b"|".join(line for line in inp)
        elif q == "readline":
            data = inp.readline(3) + b"|" + inp.readline() + b"|" + inp.read()
        elif q == "chunks":
            parts = []
            while True:
                c = inp.read(4)
                if not c:
                    break
                parts.append(c)
            data = b",".join(parts)
        else:
            data = inp.read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [data]
    if p == "/validated":
        return validated(environ, start_response)
    if p == "/late":
        def gen():
            start_response("200 OK", text)
            yield b""
            yield b"late "
            yield b"start"
        return gen()
    if p == "/write":
        write = start_response("200 OK", text)
        write(b"written ")
        return [b"and returned"]
    if p == "/exc_info_before":
        start_response("200 OK", text)
        try:
            raise ValueError("replaced before the head went out")
        except ValueError:
            start_response("503 Replaced", text, sys.exc_info())
        return [b"replaced"]
    if p == "/exc_info_after":
        def gen():
            start_response("200 OK", text)
            yield b"part one;"
            try:
                raise ValueError("secret-late-failure")
            except ValueError:
                start_response("500 Oops", text, sys.exc_info())
            yield b"never"
        return gen()
    if p == "/cl_short":
        start_response("200 OK", [("Content-Length", "10")])
        return Closing("cl_short", [b"abc", b"de"])
    if p == "/cl_long":
        start_response("200 OK", [("Content-Length", "5")])
        return [b"abcdefghij", b"klm"]
    if p == "/cl_long_endless":
        # The response is complete after 5 bytes; the app would go on for 6 GiB.
        start_response("200 OK", [("Content-Length", "5")])
        return Closing("cl_long_endless", (b"y" * 65536 for _ in range(100000)))
    if p == "/chunked":
        start_response("200 OK", text)
        return Closing("chunked", [b"one ", b"two"])
    if p == "/raise_before":
        raise RuntimeError("secret-before")
    if p == "/raise_after_sr":
        start_response("200 OK", text)
        raise RuntimeError("secret-after")
    if p == "/gen_raises":
        start_response("200 OK", text)
        return Closing("gen_raises", [b"first ", b"second"], fail_at=1)
    if p == "/gen_raises_first":
        start_response("200 OK", text)
        return Closing("gen_raises_first", [b"first"], fail_at=0)
    if p == "/endless":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Closing("endless", (b"x" * 65536 for _ in range(100000)))
    if p == "/file":
        f = open(os.path.join(MARK, "data.bin"), "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 4096)
    if p == "/file_offset":
        f = open(os.path.join(MARK, "data.bin"), "rb")
        f.seek(1000)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", "5000")])
        return environ["wsgi.file_wrapper"](f)
    if p == "/big":
        start_response("200 OK", text)
        return [b"all work and no play " * 200]
    if p == "/no_start_response":
        return [b"x"]
    if p == "/hop":
        start_response("200 OK", [("Connection", "close")])
        return [b"x"]
    if p == "/forever":
        time.sleep(3600)
    start_response("404 Not Found", text)
    return [b"no such path\n"]
