"""The web process's read deadlines (gpucloud.daphne): idle and half-sent requests cannot pin it."""

from __future__ import annotations

import selectors
import socket
import subprocess
import threading
import time

import httpx
import pytest

from conftest import BASE_DIR, _free_port, long_seeds, wait_for
from gpucloud import daphne

pytestmark = pytest.mark.live

IDLE, HALF_HEADERS, HALF_BODY, TRICKLE = 200, 30, 20, 10
DEADLINE = 1  # seconds, for headers and for the body


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


@pytest.fixture
def web(live):
    """A web process launched as everywhere else, with short deadlines, next to the live platform."""
    port = _free_port()
    env = {**live.env, "HTTP_HEADER_TIMEOUT": str(DEADLINE), "HTTP_BODY_TIMEOUT": str(DEADLINE)}
    process = subprocess.Popen(daphne.command("127.0.0.1", port), env=env, cwd=BASE_DIR)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, timeout=30, message="the web process")
        assert process.poll() is None, "the web process exited"
        yield url, port
    finally:
        live.stop(process)


def _read_until_closed(sockets: dict[socket.socket, str], timeout: float) -> dict[str, list[bytes | None]]:
    """What each socket received until the server closed it; None for the sockets still open at ``timeout``."""
    received: dict[socket.socket, bytes] = dict.fromkeys(sockets, b"")
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + timeout
    while len(closed) < len(sockets) and (remaining := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(timeout=remaining):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                received[sock] += data
            else:
                closed.add(sock)
                selector.unregister(sock)
    selector.close()
    outcome: dict[str, list[bytes | None]] = {}
    for sock, kind in sockets.items():
        outcome.setdefault(kind, []).append(received[sock] if sock in closed else None)
    return outcome


def test_idle_and_half_sent_requests_are_closed_while_the_server_answers(web, live):
    url, port = web
    sockets: dict[socket.socket, str] = {}
    try:
        for _ in range(IDLE):
            sockets[socket.create_connection(("127.0.0.1", port), timeout=5)] = "idle"
        for _ in range(HALF_HEADERS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sockets[sock] = "half headers"
        for _ in range(HALF_BODY):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            headers = b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b'\r\n{"mo')
            sockets[sock] = "half body"
        trickling = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(TRICKLE)]
        for sock in trickling:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets[sock] = "trickle"
        stop = threading.Event()

        def trickle() -> None:
            # A header byte every 0.2 s: Twisted's idle timeout never fires, the deadline does.
            while not stop.wait(0.2):
                for sock in trickling:
                    try:
                        sock.send(b"X")
                    except OSError:
                        pass

        threading.Thread(target=trickle, daemon=True).start()

        # The server answers meanwhile, on new connections.
        response = httpx.get(f"{url}/health", timeout=5)
        assert response.status_code in (200, 503) and "checks" in response.json()

        outcome = _read_until_closed(sockets, timeout=DEADLINE + 15)
        stop.set()
        for kind, results in outcome.items():
            still_open = sum(result is None for result in results)
            assert still_open == 0, f"{still_open} of {len(results)} {kind} connections still open"
        # Nothing of a request: closed without a word; part of one: 408 (unless the close cut it).
        assert outcome["idle"] == [b""] * IDLE
        assert all(r.startswith(b"HTTP/1.1 408 ") for r in outcome["half headers"]), outcome["half headers"]
        for result in outcome["half body"] + outcome["trickle"]:
            assert result == b"" or result.startswith(b"HTTP/1.1 408 "), result
    finally:
        for sock in sockets:
            sock.close()

    # Still serving, and a kept-alive connection is reused within the deadline.
    with httpx.Client(base_url=url, timeout=5) as client:
        assert client.get("/health").status_code in (200, 503)
        assert client.get("/health").status_code in (200, 503)


def test_no_deadline_runs_while_the_application_answers(web, live, make_key):
    """A stream that outlasts the read deadlines is not cut: they cover reading the request only."""
    url, _ = web
    wait_for(lambda: httpx.get(f"{live.url}/health", timeout=2).status_code == 200, timeout=30)
    _, key = make_key(live.user, rpm=1000)
    model = "mistral-7b-instruct-v0.3"
    messages = [{"role": "user", "content": "Talk for a while."}]
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": 200}
    body["seed"] = long_seeds(model, messages, 1, min_tokens=90)[0]
    lines = []
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line]
    assert lines and lines[-1] == "data: [DONE]", lines[-3:]
    assert not any('"error"' in line for line in lines), lines[-3:]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=x", "multipart/form-data", "application/x-www-form-urlencoded"]
)
def test_form_bodies_reach_the_application(web, live, make_key, content_type):
    """Twisted no longer answers a malformed multipart body with a bare 400: the API does, in its shape."""
    url, _ = web
    _, key = make_key(live.user)
    response = httpx.post(
        f"{url}/v1/chat/completions",
        content=b'{"model": "x"}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 415, response.content
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_the_command_line_and_its_settings():
    command = daphne.command("0.0.0.0", 8000, "-v", "0")
    assert command[1:] == ["-m", "gpucloud.daphne", "-b", "0.0.0.0", "-p", "8000", "-v", "0", daphne.APPLICATION]


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_timeout_stops_the_process_before_it_listens(value, monkeypatch):
    monkeypatch.setenv("HTTP_HEADER_TIMEOUT", value)
    with pytest.raises(SystemExit, match="HTTP_HEADER_TIMEOUT"):
        daphne.timeout_from_env("HTTP_HEADER_TIMEOUT", 15)


def test_zero_turns_a_deadline_off(monkeypatch):
    monkeypatch.setenv("HTTP_BODY_TIMEOUT", "0")
    assert daphne.timeout_from_env("HTTP_BODY_TIMEOUT", 30) is None
    monkeypatch.delenv("HTTP_BODY_TIMEOUT")
    assert daphne.timeout_from_env("HTTP_BODY_TIMEOUT", 30) == 30


def test_the_web_process_listens_with_a_deep_backlog(web):
    """A burst of hundreds of connections waits in the kernel's queue for the server to accept them
    (Twisted's default of 50 dropped the overflow's handshakes while the event loop was busy)."""
    _, port = web
    # For a listening socket, ss shows the backlog as Send-Q.
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    assert [int(line.split()[2]) for line in listening.splitlines()] == [daphne.LISTEN_BACKLOG]


def test_a_named_backlog_is_kept_and_only_tcp_gets_one():
    assert (
        daphne.with_backlog("tcp:port=80:interface=0.0.0.0")
        == f"tcp:port=80:interface=0.0.0.0:backlog={daphne.LISTEN_BACKLOG}"
    )
    assert daphne.with_backlog("tcp:port=80:backlog=10") == "tcp:port=80:backlog=10"
    assert daphne.with_backlog("unix:/tmp/web.sock") == "unix:/tmp/web.sock"
