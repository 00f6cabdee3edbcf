"""Large /v1 bodies are parsed, validated and counted in a process pool (inference.bodypool), with
the same results and errors as in-thread; a broken pool is replaced; the child needs no Django."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from conftest import wait_for
from gpucloud.openai_errors import ApiError
from inference import bodypool

BASE_DIR = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "Hello, GPU cloud. " * 50}]

BODIES = [
    ("chat", {"model": "m", "messages": MESSAGES, "max_tokens": 4}),
    ("chat", {"model": "m", "messages": [{"role": "system", "content": "x"}, *MESSAGES], "tools": []}),
    ("chat", {"model": "m", "messages": MESSAGES, "temperature": 9}),
    ("chat", {"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
    ("chat", {"model": "m", "messages": MESSAGES, "surprise": 1}),
    ("chat", {"model": "m", "messages": [{"role": "user", "content": "a\x00b"}]}),
    ("completion", {"model": "m", "prompt": ["one two", "three, four."], "max_tokens": 3}),
    ("completion", {"model": "m", "prompt": 42}),
    ("embedding", {"model": "e", "input": ["a b c", "d"]}),
    ("embedding", {"model": "e", "input": []}),
]
RAW = [("chat", b"{not json"), ("chat", b"[1, 2]"), ("chat", b""), ("chat", b'{"n": 1' + b"0" * 200 + b"}")]


def _outcome(call):
    try:
        return "ok", call()
    except ApiError as error:
        return "error", (error.status, error.as_dict())


@pytest.fixture
def pooled(settings):
    """Every body goes to the pool (a threshold of 1 byte)."""
    settings.LARGE_BODY_BYTES = 1
    settings.BODY_POOL_PROCESSES = 1
    yield
    executor = bodypool._pool
    if executor is not None:
        bodypool._discard(executor)


def _refuse_in_thread(body, **kwargs):
    raise AssertionError("parsed in the web process's thread, not in the pool")


@pytest.mark.parametrize(("kind", "body"), [(k, json.dumps(b).encode()) for k, b in BODIES] + RAW)
def test_the_pool_gives_what_the_thread_gives(pooled, monkeypatch, kind, body):
    expected = _outcome(lambda: bodypool.parse_in_thread(kind, body))
    if body:  # (an empty body is never "large")
        # The web process's own parsers are out of use: what comes back was computed in the pool.
        monkeypatch.setitem(bodypool.PARSERS, kind, _refuse_in_thread)

    assert _outcome(lambda: bodypool.parse_blocking(kind, body)) == expected


def test_a_body_over_the_size_limit_is_refused_in_the_pool_too(pooled, settings, monkeypatch):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    expected = _outcome(lambda: bodypool.parse_in_thread("chat", body))
    monkeypatch.setitem(bodypool.PARSERS, "chat", _refuse_in_thread)

    assert expected[0] == "error" and expected[1][0] == 413
    assert _outcome(lambda: bodypool.parse_blocking("chat", body)) == expected


def test_small_bodies_stay_in_the_thread(settings, monkeypatch):
    settings.LARGE_BODY_BYTES = 10_000
    calls = []
    parse = bodypool.PARSERS["chat"]
    monkeypatch.setitem(bodypool.PARSERS, "chat", lambda body, **kw: calls.append(body) or parse(body, **kw))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    _, prompt, tokens = bodypool.parse_blocking("chat", body)

    assert calls == [body] and prompt == "user: hi" and tokens == 7
    assert bodypool._pool is None


def test_a_broken_pool_is_replaced_and_the_request_parsed_in_its_thread(pooled, monkeypatch):
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    expected = bodypool.parse_in_thread("chat", body)
    broken = bodypool.pool()
    with pytest.raises(BrokenProcessPool):
        broken.submit(os._exit, 1).result()  # its process dies, as when killed
    in_thread = []
    parse = bodypool.PARSERS["chat"]
    monkeypatch.setitem(bodypool.PARSERS, "chat", lambda body, **kw: in_thread.append(1) or parse(body, **kw))

    assert bodypool.parse_blocking("chat", body) == expected
    assert in_thread == [1]  # this request: in its thread

    assert bodypool.parse_blocking("chat", body) == expected
    assert in_thread == [1]  # the next one: in a new pool
    assert bodypool.pool() is not broken


def test_the_pool_process_needs_no_django():
    script = (
        "import json, os; from django.conf import settings; from inference import bodypool\n"
        "body = json.dumps({'model': 'm', 'messages': [{'role': 'user', 'content': 'a b'}]}).encode()\n"
        "ok, (chat, prompt, tokens) = bodypool.work('chat', body, 1000)\n"
        "ok2, error = bodypool.work('chat', b'{}', 1000)\n"
        "print(json.dumps([ok, prompt, tokens, ok2, error.param, settings.configured]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=BASE_DIR, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [True, "user: a b", 8, False, "model", False]


# --- live: a web process answers /health while it takes in large bodies -----------------------


def _niceness(pid) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _send_large_body(url: str, key: str, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _answered(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def _response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_health_answers_while_large_bodies_are_parsed(live, make_key):
    import httpx

    _, key = make_key(live.user)
    text = "word " * (12 * 1024 * 1024 // 5)
    body = json.dumps({"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": text}]}).encode()

    # The pool was started with the web process, not by the first large body.
    def pool_processes() -> list[str]:
        children = Path(f"/proc/{live.daphne.pid}/task/{live.daphne.pid}/children").read_text().split()
        return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def niced(pid: str) -> bool:  # (set once the process has started: wait for it)
        return _niceness(pid) == min(_niceness(live.daphne.pid) + bodypool.NICENESS, 19)

    # …and below the web process's priority (its event loop gets a core first).
    wait_for(lambda: pool_processes() and all(niced(pid) for pid in pool_processes()), timeout=60,
             message="the web process's body pool to start, niced")  # fmt: skip

    senders = [_send_large_body(live.url, key, body) for _ in range(2)]
    health = 0
    with httpx.Client(base_url=live.url, timeout=30) as client:
        # Sent in full: the server is reading, parsing and validating them now.
        while not all(_answered(sock) for sock in senders):
            assert client.get("/health").status_code == 200
            health += 1
    results = [_response(sock) for sock in senders]

    # /health requests issued after the bodies were sent were answered before the bodies were.
    assert health >= 3
    for status, payload in results:
        assert status == 400 and payload["error"]["code"] == "context_length_exceeded"
