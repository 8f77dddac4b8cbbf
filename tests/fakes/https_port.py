"""A reverse proxy's https port (nginx, Caddy, Traefik, Apache) reached with a plain http:// URL.

Each of them answers such a request with a 400 of its own instead of dropping it, as a media
server's own https port does: nginx its "plain HTTP request was sent to HTTPS port" page, Go's
net/http (Caddy, Traefik) one bare line, Apache mod_ssl's page. This fake answers every
request as `server` does, byte for byte in what matters, and closes the connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from email.utils import formatdate
from typing import Self

NGINX_PAGE = (
    b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>The plain HTTP request was sent to HTTPS port</center>\r\n"
    b"<hr><center>nginx/1.27.4</center>\r\n</body>\r\n</html>\r\n"
)
APACHE_PAGE = (
    b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
    b"<title>400 Bad Request</title>\n</head><body>\n<h1>Bad Request</h1>\n"
    b"<p>Your browser sent a request that this server could not understand.<br />\n"
    b"Reason: You're speaking plain HTTP to an SSL-enabled server port.<br />\n"
    b" Instead use the HTTPS scheme to access this URL, please.<br />\n</p>\n<hr>\n"
    b"<address>Apache/2.4.62 (Debian) Server at localhost Port 443</address>\n</body></html>\n"
)
# Go's net/http writes this line and closes: no headers, the body read to the connection's end.
GO_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


def _answer(server: str) -> bytes:
    if server in ("caddy", "traefik"):
        return GO_ANSWER
    date = formatdate(usegmt=True).encode()
    if server == "nginx":
        head = b"Server: nginx/1.27.4\r\nContent-Type: text/html\r\n"
        page = NGINX_PAGE
    elif server == "apache":
        head = b"Server: Apache/2.4.62 (Debian)\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
        page = APACHE_PAGE
    else:
        raise ValueError(f"no such server: {server}")
    return (
        b"HTTP/1.1 400 Bad Request\r\nDate: %s\r\n%sContent-Length: %d\r\nConnection: close\r\n"
        b"\r\n%s" % (date, head, len(page), page)
    )


class PlainAtHttpsPort:
    """`server`'s https port, as a plain request to it is answered; counts the requests."""

    def __init__(self, server: str) -> None:
        self.answer = _answer(server)
        self.requests = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Its address as a user writes it wrongly: http:// at the https port."""
        if self._listener is None:
            raise RuntimeError("not running")
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> Self:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, args=(self._listener,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        listener, thread, self._listener, self._thread = self._listener, self._thread, None, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept below (close does not)
            listener.close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                if head:
                    self.requests += 1
                    conn.sendall(self.answer)
