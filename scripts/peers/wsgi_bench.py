"""The WSGI app of bench.sh's wsgi-* scenarios, the same for every server (ringd-wsgi, gunicorn
sync and gthread, Granian): / is the lesson's 14-byte hello, /10k a 10 KiB body, /echo echoes
a POST body. Each sets Content-Length and returns one chunk."""

HELLO = b"Hello, World!\n"
TEN_K = b"x" * 10240


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/10k":
        body = TEN_K
    elif path == "/echo":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
    else:
        body = HELLO
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
