"""A tiny misbehaving OpenAI-compatible server, for the openai engine's failure tests.

    python inference/tests/upstream_server.py MODE

Listens on a free port of 127.0.0.1 and prints that port on the first line of stdout. MODE:

* ``cut`` -- ``/models`` works; a completion streams a few SSE chunks, then the connection is
  dropped in the middle of the chunked body;
* ``cut-plain`` -- the same, but the body is delimited by the connection's close (HTTP/1.0 style),
  so the stream just ends early, without ``[DONE]``;
* ``error500`` -- every request (``/models`` too) gets HTTP 500 with an OpenAI-shaped error;
* ``reject`` -- ``/models`` works; completions get HTTP 400 with an OpenAI-shaped error;
* ``error-event`` -- a completion streams a chunk, then an error event, then ``[DONE]``;
* ``garbage`` -- a completion streams a chunk, then a line that is not JSON.

Standard library only: it runs with any Python, and stops when its stdin closes or on SIGTERM.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _chunk(text: str, index: int = 0, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "upstream-model",
        "choices": [{"index": index, "delta": {"content": text}, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    mode = "cut"

    def log_message(self, format, *args):  # quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "type": "server_error", "param": None, "code": None}})

    def do_GET(self):
        if self.mode == "error500":
            return self._error(500, "upstream exploded while listing models")
        if self.path.endswith("/models"):
            return self._json(200, {"object": "list", "data": [{"id": "upstream-model", "object": "model"}]})
        return self._error(404, "not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.mode == "error500":
            return self._error(500, "CUDA out of memory (simulated)")
        if self.mode == "reject":
            return self._error(400, "This model's maximum context length is 4096 tokens (simulated)")
        if self.mode == "cut-plain":
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for word in ("Hello", " from", " upstream"):
                self.wfile.write(_chunk(word))
                self.wfile.flush()
            self.close_connection = True
            return None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for word in ("Hello", " from", " upstream"):
            write(_chunk(word))
        if self.mode == "error-event":
            write(b'data: {"error": {"message": "the GPU fell off the bus (simulated)", "type": "server_error"}}\n\n')
            write(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        if self.mode == "garbage":
            write(b"data: {this is not json\n\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        # "cut": drop the connection mid-body, with no terminating chunk.
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
        return None


def main() -> None:
    Handler.mode = sys.argv[1] if len(sys.argv) > 1 else "cut"
    Handler.protocol_version = "HTTP/1.1"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sys.stdin.read()  # until the test closes our stdin (or kills us)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
