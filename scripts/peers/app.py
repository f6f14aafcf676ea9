"""WSGI apps gunicorn serves in the ringd benchmark.

`hello` answers the body of the served root's hello.txt (read once at import, so it is the very
bytes ringd and nginx serve from that file); `files` serves a file from the served root through
`environ['wsgi.file_wrapper']`, the way a WSGI app hands a static file to its server (gunicorn
sends it with sendfile); `upstream` is the app behind the proxies in bench.sh's proxy-gunicorn
scenario: `files` for /files/NAME (the slow clients' 1 MiB responses) and `hello` for every
other path, so both come from the same workers. The served root comes from RINGD_BENCH_WWW.
"""

import mimetypes
import os

ROOT = os.environ.get(
    "RINGD_BENCH_WWW",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".peers", "www"),
)

with open(os.path.join(ROOT, "hello.txt"), "rb") as _f:
    HELLO = _f.read()

CHUNK = 64 * 1024


def _not_found(start_response):
    body = b"not found\n"
    start_response(
        "404 Not Found",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def hello(environ, start_response):
    """The hello body, whatever the path."""
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))],
    )
    return [HELLO]


def files(environ, start_response):
    """A file directly inside the served root, e.g. GET /small.bin."""
    name = environ.get("PATH_INFO", "/").lstrip("/")
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        return _not_found(start_response)
    try:
        f = open(os.path.join(ROOT, name), "rb")
    except OSError:
        return _not_found(start_response)
    size = os.fstat(f.fileno()).st_size
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, CHUNK)

    def chunks():
        with f:
            while True:
                block = f.read(CHUNK)
                if not block:
                    return
                yield block

    return chunks()


FILES_PREFIX = "/files/"


def upstream(environ, start_response):
    """`files` for /files/NAME (NAME in the served root), `hello` for any other path."""
    path = environ.get("PATH_INFO", "/")
    if path.startswith(FILES_PREFIX):
        environ["PATH_INFO"] = path[len(FILES_PREFIX) - 1:]
        return files(environ, start_response)
    return hello(environ, start_response)
