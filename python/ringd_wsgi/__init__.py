"""ringd-wsgi: serve a WSGI app with ringd's HTTP/1.1 core (see `ringd-wsgi --help`)."""

from ._ringd import FileWrapper, Input, StartResponse, prepare

__all__ = ["FileWrapper", "Input", "StartResponse", "prepare"]
