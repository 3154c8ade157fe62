"""A fault-injecting HTTP reverse proxy for tests: put it in front of an S3 server (moto) on loopback.

``FaultProxy(upstream)`` listens on ``127.0.0.1`` (a free port) and forwards every request — method,
path and query, headers, body — to ``upstream`` (``http://host:port``), streaming the response
back. For a share ``fault_rate`` of requests, drawn with a seeded ``random.Random``, it answers
with a fault instead of forwarding:

``slowdown``
    ``503 Slow Down`` with S3's ``SlowDown`` XML error body (botocore treats it as throttling).
``internal``
    ``500 Internal Server Error`` with S3's ``InternalError`` XML error body.
``reset``
    the request is read but never forwarded; the connection is closed with ``SO_LINGER`` 0, so the
    client gets a TCP RST instead of a response (botocore: ``ConnectionClosedError``).
``reset_after``
    the request IS forwarded and executed upstream, then the connection is reset before the
    response reaches the client (a lost response: the client cannot tell the write happened).
    Not in the default mix; pass it in ``kinds`` to test idempotency.

``set_down(mode)`` makes every request fail until ``set_down(None)``: ``"503"`` answers
``SlowDown``, ``"reset"`` resets every connection, ``"refuse"`` closes the listening socket (new
connections are refused; requests on already-open keep-alive connections are reset) and reopens it
on the same port when the proxy comes back up.

``trip_after(n, mode, match)`` goes down by itself once ``n`` matching requests were forwarded.

Two more behaviours, off by default: ``serialize=True`` forwards one request at a time (a lock
around each upstream exchange), the way a store that executes each request atomically behaves
(``counts["waited"]`` says how many requests had to wait for another); ``strip_headers`` names
request headers that are dropped before forwarding (e.g. ``("If-None-Match", "If-Match")``: a
store that ignores conditional writes).

``counts`` (a ``collections.Counter``) says how many requests were ``forwarded`` and how many got
each fault (``slowdown``, ``internal``, ``reset``, ``reset_after``, ``down``); ``log`` lists
``(method, path, outcome, status)`` per request (status: the upstream's answer for forwarded and
``reset_after`` requests, the injected status for error answers, None for resets) so a test can
check that faults were really injected.

Request bodies: ``Content-Length`` bodies are read exactly; ``Transfer-Encoding: chunked`` bodies
(aws-chunked uploads with checksum trailers) are parsed chunk by chunk and forwarded byte for
byte, trailers included. ``Expect: 100-continue`` is answered here (http.server does) and not
forwarded. Hop-by-hop headers (RFC 9110 7.6.1) are dropped; ``Host`` is kept as the client sent
it, because SigV4 signs it.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

FAULT_KINDS = ("slowdown", "internal", "reset")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "expect"}
_S3_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}


def _s3_error_body(code: str, message: str, resource: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, proxy: FaultProxy):
        self.proxy = proxy
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    server: _Server

    def log_message(self, format, *args):
        pass

    def _read_body(self) -> tuple[bytes, bool]:
        """The request body as raw bytes on the wire, and whether it is chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline(65537)
                raw += line
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = self.rfile.readline(65537)
                        raw += t
                        if t in (b"\r\n", b"\n", b""):
                            return bytes(raw), True
                raw += self.rfile.read(size + 2)  # data + CRLF
        n = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(n) if n else b""), False

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the peer gets a TCP RST, not a response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()  # the RST goes out when http.server closes rfile/wfile

    def _send_error_xml(self, kind: str) -> None:
        status, code, message = _S3_ERRORS[kind]
        body = b"" if self.command == "HEAD" else _s3_error_body(code, message, urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        proxy = self.server.proxy
        body, chunked = self._read_body()
        kind = proxy._choose(self.command, self.path)
        if kind in ("reset", "down-reset"):
            proxy._record(self.command, self.path, kind, None)
            return self._reset()
        if kind in ("slowdown", "internal", "down-503"):
            proxy._record(self.command, self.path, kind, _S3_ERRORS["slowdown" if kind == "down-503" else kind][0])
            return self._send_error_xml("slowdown" if kind == "down-503" else kind)
        status = self._forward(body, chunked, reset_after=kind == "reset_after")
        proxy._record(self.command, self.path, kind or "forwarded", status)

    def _forward(self, body: bytes, chunked: bool, reset_after: bool) -> int:
        """Forward the request (one at a time with ``serialize``); returns the upstream's status
        (502 when it cannot be reached)."""
        proxy = self.server.proxy
        if not proxy.serialize:
            return self._exchange(body, chunked, reset_after)
        if not proxy._serial.acquire(blocking=False):
            with proxy._lock:
                proxy.counts["waited"] += 1
            proxy._serial.acquire()
        try:
            return self._exchange(body, chunked, reset_after)
        finally:
            proxy._serial.release()

    def _exchange(self, body: bytes, chunked: bool, reset_after: bool) -> int:
        proxy = self.server.proxy
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in _HOP_BY_HOP and k.lower() not in proxy.strip_headers:
                    conn.putheader(k, v)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif "Content-Length" not in self.headers and body:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
        except OSError as exc:
            conn.close()
            msg = f"upstream unreachable: {exc}".encode()
            self.send_response(502)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return 502
        try:
            if reset_after:
                resp.read()
                self._reset()
                return resp.status
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in _HOP_BY_HOP:
                    self.send_header(k, v)
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            rechunk = length is None and not no_body
            if rechunk:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if no_body:
                return resp.status
            while True:
                piece = resp.read(65536)
                if not piece:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if rechunk else piece)
            if rechunk:
                self.wfile.write(b"0\r\n\r\n")
            return resp.status
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class FaultProxy:
    """Reverse proxy to ``upstream`` with seeded fault injection; see the module docstring.

    ``fault_rate`` is the share of requests (0..1) that get a fault; ``kinds`` the faults drawn
    from, uniformly; ``seed`` seeds the draw; ``serialize`` and ``strip_headers`` as in the module
    docstring. Usable as a context manager; ``endpoint`` is its URL.
    """

    def __init__(self, upstream: str, fault_rate: float = 0.0, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 0,
                 upstream_timeout: float = 60.0, serialize: bool = False, strip_headers: tuple[str, ...] = ()):
        parts = urlsplit(upstream)
        self.serialize = serialize
        self.strip_headers = {h.lower() for h in strip_headers}
        self._serial = threading.Lock()
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self.upstream_timeout = upstream_timeout
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - {"slowdown", "internal", "reset", "reset_after"}
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str, str, int | None]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._down: str | None = None
        self._trip: tuple[int, str, object] | None = None
        self._closer: threading.Thread | None = None
        self.down_since: float | None = None  # time.monotonic() when the proxy last went down
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def _join_closer(self) -> None:
        if self._closer is not None:
            self._closer.join()
            self._closer = None

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def stop(self) -> None:
        self._join_closer()
        self._close_listener()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_down(self, mode: str | None) -> None:
        """``"503"``, ``"reset"`` or ``"refuse"``: every request fails from now on; ``None``: back up."""
        if mode not in (None, "503", "reset", "refuse"):
            raise ValueError(f"unknown down mode {mode!r}")
        self._join_closer()
        with self._lock:
            previous, self._down = self._down, mode
            self.down_since = time.monotonic() if mode is not None and previous is None else self.down_since
        if mode == "refuse" and previous != "refuse":
            self._close_listener()
        elif previous == "refuse" and mode != "refuse":
            self.start()  # same port (SO_REUSEADDR)

    def trip_after(self, n: int, mode: str, match) -> None:
        """Go down (``mode``, as in :meth:`set_down`) once ``n`` requests for which
        ``match(method, path)`` is true have been forwarded: an outage at an exact point of a run."""
        if mode not in ("503", "reset", "refuse"):
            raise ValueError(f"unknown down mode {mode!r}")
        with self._lock:
            self._trip = (n, mode, match)

    def _choose(self, method: str, path: str) -> str | None:
        close = False
        with self._lock:
            if self._down is not None:
                return "down-503" if self._down == "503" else "down-reset"
            if self._trip is not None and self._trip[0] <= 0:
                self._down, close, self._trip = self._trip[1], self._trip[1] == "refuse", None
                self.down_since = time.monotonic()
        if close:  # from a handler thread: serve_forever runs in another one
            self._closer = threading.Thread(target=self._close_listener, daemon=True)
            self._closer.start()
        with self._lock:
            if self._down is not None:
                return "down-503" if self._down == "503" else "down-reset"
            kind = self._rng.choice(self.kinds) if self.fault_rate and self._rng.random() < self.fault_rate else None
            if kind is None and self._trip is not None and self._trip[2](method, path):
                self._trip = (self._trip[0] - 1, *self._trip[1:])
            return kind

    def _record(self, method: str, path: str, outcome: str, status: int | None) -> None:
        with self._lock:
            key = "down" if outcome.startswith("down-") else outcome
            self.counts[key] += 1
            self.log.append((method, path, key, status))

    def injected(self) -> int:
        """Requests that got a fault (any kind, down included)."""
        with self._lock:
            return sum(v for k, v in self.counts.items() if k not in ("forwarded", "waited"))
