"""Daphne as the platform runs it: ``python -m gpucloud.daphne -b HOST -p PORT [daphne options]``.

Every place that starts a web process (``runplatform``, the tests' live platform, the benchmarks)
builds its command line with :func:`command`, so they all run the same server with the same limits.
It is Daphne's own command line (any ``daphne`` option may follow; the application defaults to
``gpucloud.asgi:application``), with read deadlines on HTTP connections that Daphne lacks.

Daphne (4.x) bounds what the application does (``--http-timeout``) and WebSockets (an unanswered
keepalive ping closes one after ``--ping-timeout``; a handshake the application has not accepted
closes after ``--websocket_connect_timeout``), but a connection still reading its request is bounded
only by Twisted's *idle* timeout (``HTTPFactory.timeOut``, 60 s, restarted by every byte received):
a client that sends nothing for 59 s, or one header byte every few seconds, holds its socket and file
descriptor for as long as it likes, and thousands of them pin a web process. Here each HTTP
connection has two deadlines that no trickle of bytes extends:

- ``HTTP_HEADER_TIMEOUT`` (default 15 s): from the connection's opening, or the end of its previous
  response on a kept-alive connection, to the end of the request's headers;
- ``HTTP_BODY_TIMEOUT`` (default 30 s): from the end of the headers to the end of the body.

A connection that misses one is closed: silently if it sent nothing of a request (an idle
kept-alive connection), after a ``408 Request Timeout`` otherwise. ``0`` turns a deadline off. No
deadline runs while the application answers (a stream may last minutes) or on a WebSocket once it
is upgraded. The soft limit on open files is raised to the hard limit, so idle sockets exhaust it
later than the default 1,024. And Twisted no longer parses form and multipart bodies itself (work on
the event loop that Daphne throws away): a malformed multipart body reaches the application, which
answers it in the OpenAI shape, instead of getting Twisted's bare ``400``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import resource
import sys

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.web import http

logger = logging.getLogger(__name__)

APPLICATION = "gpucloud.asgi:application"
DEFAULT_HEADER_TIMEOUT = 15.0
DEFAULT_BODY_TIMEOUT = 30.0
REQUEST_BODY_CHUNK_BYTES = 1024 * 1024
# Connections the kernel holds for the server to accept (Twisted's default is 50). A burst of
# hundreds of clients (streams opening at once) overflowed 50 while the event loop was busy: the
# kernel dropped the overflow's handshakes, their requests reached the server only after TCP's
# retransmission backoff, past the header deadline, and were closed unanswered.
LISTEN_BACKLOG = 4096
REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n"
    b"Request Timeout\n"
)


def command(host: str, port: int | str, *options: str, python: str = sys.executable) -> list[str]:
    """The command line of a web process on ``host:port``; ``options`` are more Daphne options."""
    return [python, "-m", "gpucloud.daphne", "-b", host, "-p", str(port), *options, APPLICATION]


def timeout_from_env(name: str, default: float) -> float | None:
    """Seconds from the environment variable ``name``; None (no deadline) for 0."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be a number of seconds, not {raw!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise SystemExit(f"{name} must be a number of seconds (0 for none), not {raw!r}")
    return value or None


@functools.cache
def _without_form_parsing(request_class):
    """``request_class`` that leaves the body alone: Twisted would parse a form or multipart body
    itself (on the event loop, for nothing: Daphne hands the application the raw body) and answer a
    malformed multipart body with a bare ``400`` that no application sees."""

    class Request(request_class):
        _parsePOSTFormSubmission = False  # Twisted before 25: a class attribute

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._parsePOSTFormSubmission = False  # since: set by __init__

    Request.__name__ = Request.__qualname__ = request_class.__name__
    return Request


class DeadlineHTTPChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel with a deadline for each request's headers and one for its body."""

    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT
    _deadline = None  # the pending DelayedCall, if any
    _request_begun = False  # a byte of the current request has arrived
    _request_factory = http.Request

    @property
    def requestFactory(self):
        return self._request_factory

    @requestFactory.setter
    def requestFactory(self, factory) -> None:
        self._request_factory = _without_form_parsing(factory)

    def _start_deadline(self, seconds: float | None, phase: str) -> None:
        self._cancel_deadline()
        if seconds:
            self._deadline = self.callLater(seconds, self._deadline_missed, phase)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _connected(self) -> bool:
        transport = self.transport
        return not (transport is None or transport.disconnecting or getattr(transport, "disconnected", False))

    def _deadline_missed(self, phase: str) -> None:
        self._deadline = None
        if not self._connected():
            return
        logger.debug("Closing %s: no complete request %s in time", self.transport.getPeer(), phase)
        if self._request_begun:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        # Twisted's own idle-timeout path: close now, abort if the peer does not let the close finish.
        self.timeoutConnection()

    def connectionMade(self):
        super().connectionMade()
        self._request_begun = False
        self._start_deadline(self.header_timeout, "headers")

    def dataReceived(self, data):
        if data and not self._handlingRequest:
            self._request_begun = True
        super().dataReceived(data)

    def allHeadersReceived(self):
        super().allHeadersReceived()
        self._start_deadline(self.body_timeout, "body")

    def allContentReceived(self):
        # The request is complete: the application answers in its own time.
        self._cancel_deadline()
        super().allContentReceived()

    def requestDone(self, request):
        if self.persistent and self._connected():
            # The next request's headers have their deadline from the end of this response (set
            # before the channel parses what the client already pipelined).
            self._request_begun = bool(self._dataBuffer)
            self._start_deadline(self.header_timeout, "headers")
        super().requestDone(request)

    def connectionLost(self, reason):
        self._cancel_deadline()
        super().connectionLost(reason)


def with_backlog(endpoint: str) -> str:
    """A Twisted TCP endpoint description with the LISTEN_BACKLOG (unless it names one)."""
    if endpoint.startswith(("tcp:", "tcp6:")) and ":backlog=" not in endpoint:
        return f"{endpoint}:backlog={LISTEN_BACKLOG}"
    return endpoint


class DeadlineServer(Server):
    """Daphne's server whose HTTP connections are :class:`DeadlineHTTPChannel`.

    ``Server.run`` builds its HTTP factory as ``self.http_factory``; the setter gives the factory
    our channel (inside Twisted's HTTP/2-negotiating wrapper, as its own factory does).
    """

    def __init__(self, *args, **kwargs):
        # Event loop stays free: Daphne hands a body to the application in chunks of this size, all
        # at once on the event loop; 8 KB chunks made a 30 MB body 3,840 reads, queue puts and (in
        # Django) writes in Python, ~0.1 s of the loop per body. 1 MB chunks are a memcpy each.
        kwargs.setdefault("request_buffer_size", REQUEST_BODY_CHUNK_BYTES)
        super().__init__(*args, **kwargs)
        self.endpoints = [with_backlog(endpoint) for endpoint in self.endpoints]
        self.header_timeout = timeout_from_env("HTTP_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT)
        self.body_timeout = timeout_from_env("HTTP_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT)

    @property
    def http_factory(self):
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory) -> None:
        header_timeout, body_timeout = self.header_timeout, self.body_timeout

        def protocol():
            channel = DeadlineHTTPChannel()
            channel.header_timeout, channel.body_timeout = header_timeout, body_timeout
            return http._GenericHTTPChannelProtocol(channel)

        factory.protocol = protocol
        self._http_factory = factory


class DeadlineCommandLineInterface(CommandLineInterface):
    server_class = DeadlineServer


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 16 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", argv[-1]):
        argv.append(APPLICATION)
    # Read now, so that a bad value stops the process before it listens.
    timeout_from_env("HTTP_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT)
    timeout_from_env("HTTP_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT)
    raise_open_files_limit()
    DeadlineCommandLineInterface().run(argv)


if __name__ == "__main__":
    main()
