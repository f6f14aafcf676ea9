"""Apps for the streamed `wsgi.input` and leaked-file tests (tests/it/wsgi_stream.rs).

Markers are files named by the `X-Mark` request header: the test waits for them to know what
the app has seen (its first body bytes) or done (raised, closed) at that moment.
"""
import hashlib
import os
import time


def _mark(environ, what):
    path = environ.get("HTTP_X_MARK")
    if path:
        with open(path, "a") as f:
            f.write(what + "\n")


def _digest(inp, first=b""):
    n, h = len(first), hashlib.sha256(first)
    while True:
        b = inp.read(65536)
        if not b:
            return n, h.hexdigest()
        n += len(b)
        h.update(b)


class _ReadInIteration:
    """Reads the body only when iterated; its close() leaves a marker."""

    def __init__(self, environ):
        self.environ = environ

    def __iter__(self):
        try:
            n, _ = _digest(self.environ["wsgi.input"])
        except OSError as e:
            _mark(self.environ, "raised " + type(e).__name__)
            raise
        yield str(n).encode()

    def close(self):
        _mark(self.environ, "closed")


# The leaky apps keep every file object they open alive here, so only the server calling
# the result's close() gives the descriptor back (reference counting never does).
KEEP = []


class _HoldsFile:
    """An iterable over an open file that never closes it itself; close() does."""

    def __init__(self, f):
        self.f = f

    def __iter__(self):
        while True:
            b = self.f.read(8192)
            if not b:
                return
            yield b

    def close(self):
        self.f.close()


def _leak(environ, start_response, kind):
    f = open(environ["HTTP_X_FILE"], "rb")
    KEEP.append(f)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    if kind == "file":
        return f  # a file object is an iterable with close()
    if kind == "holder":
        return _HoldsFile(f)
    return environ["wsgi.file_wrapper"](f, 8192)


def app(environ, start_response):
    path, inp = environ["PATH_INFO"], environ["wsgi.input"]
    ok = lambda: start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/first":
        # The first bytes, reported before the rest is read.
        first = inp.read(1000)
        _mark(environ, "first %d" % len(first))
        if environ.get("HTTP_X_WAIT"):
            # Hold the rest unread until the test says go (backpressure).
            while not os.path.exists(environ["HTTP_X_WAIT"]):
                time.sleep(0.02)
        n, h = _digest(inp, first)
        ok()
        return [("%d %s" % (n, h)).encode()]
    if path == "/ignore":
        ok()
        return [b"ignored"]
    if path == "/some":
        ok()
        return [inp.read(10)]
    if path == "/lines":
        ok()
        return [b"|".join(line.rstrip(b"\n") for line in inp)]
    if path == "/iterate":
        ok()
        return _ReadInIteration(environ)
    if path == "/pid":
        ok()
        return [str(os.getpid()).encode()]
    if path.startswith("/leak/"):
        return _leak(environ, start_response, path[6:])
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such path"]
