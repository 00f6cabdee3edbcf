"""The fuzz run's totals: thousands of generated and malformed requests against a live platform.

Starts a private platform (Daphne launched as everywhere, ``python -m gpucloud.daphne``, and one GPU
node on the instant simulated engine; its data in ``var/bench-fuzz/``) and sends, over real HTTP:

- to every POST/PATCH API endpoint (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
  ``/api/workers/register``, ``/api/keys``, ``/api/deployments`` and ``PATCH /api/deployments/{name}``
  on a deployment made for the run), bodies from the generators of gpucloud/tests/test_fuzz_api.py:
  any JSON, a valid request with one field changed, hostile JSON text (nesting to 20,000 levels,
  integers to 6,000 digits, lone surrogates, NUL, NaN/Infinity, truncation, BOMs) and raw bytes,
  under JSON and other content types;
- to every GET API endpoint (``/api/usage`` and the others, ``/v1/models/{id}``), generated query
  strings and path ids: odd dates (year 1 with an offset, year 9999, month 13), huge integers,
  ``%00``, invalid UTF-8, lone surrogates, repeated and unknown parameters;
- odd headers through the HTTP client (a wrong Host, odd or huge Authorization, odd content types,
  Transfer-Encoding: chunked, gzip bodies), and raw requests over a socket that the client would
  refuse to send (NUL and non-ASCII in headers, conflicting Content-Length, bad chunk sizes, a
  request line of 20 KB, 600 headers).

It prints the requests sent, the status histogram per endpoint and overall, the 5xx a client caused
(must be 0), the 503 that are not the client's doing (``no_worker_available``, ``model_not_ready``)
listed apart, errors under /v1 and /api that are not in the OpenAI shape, and transport errors.

    .venv/bin/python bench/fuzz.py [--per-endpoint 300] [--concurrency 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import socket
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import harness

NOT_CLIENT_CAUSED_503 = {"no_worker_available", "model_not_ready"}
TARGET_DEPLOYMENT = "fuzz-target"


@dataclass
class Totals:
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    client_5xx: list[str] = field(default_factory=list)
    not_client_503: Counter = field(default_factory=Counter)
    not_openai_shaped: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    streams_without_done: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # each raw request and its answer

    def sent(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())


@dataclass
class Case:
    group: str
    method: str
    path: str  # with its query string, already encoded
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


# --- generation -----------------------------------------------------------------------------


def collect(strategy, count: int, seed: int) -> list:
    """``count`` examples of a hypothesis strategy, reproducibly (generation only, no shrinking)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    examples: list = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def gather(example):
        examples.append(example)

    gather()
    return examples


def body_cases(per_endpoint: int, seed: int) -> list[Case]:
    from hypothesis import strategies as st

    from gpucloud.tests import test_fuzz_api as fuzz

    endpoints = dict(fuzz.ENDPOINTS)
    endpoints["deployment"] = ("patch", f"/api/deployments/{TARGET_DEPLOYMENT}")
    cases = []
    for index, (name, (method, path)) in enumerate(endpoints.items()):
        pairs = collect(st.tuples(fuzz.bodies(name), fuzz.content_types), per_endpoint, seed + index)
        for body, content_type in pairs:
            cases.append(Case(name, method.upper(), path, body, {"Content-Type": content_type}))
    return cases


ODD_VALUES = [
    "",
    "0",
    "-1",
    "1e999",
    "9" * 400,
    "null",
    "[]",
    "{}",
    "\x00",
    "\ud800",
    "a\udfffb",
    "😀",
    "\u2028",
    "' OR 1=1 --",
    "../../etc/passwd",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999-23:59",
    "2026-13-45",
    "2026-02-30T25:61:61",
    "2026-01-01T00:00:00+99:99",
    "1" * 30,
    "-" + "9" * 30,
    "1700000000",
    "now",
    "x" * 5000,
]
QUERY_PARAMS = ["start", "end", "key", "model", "kind", "page", "limit", "cursor", "order", "status", "x"]
GET_PATHS = [
    "/api/usage",
    "/api/usage",
    "/api/usage",
    "/api/workers",
    "/api/queues",
    "/api/deployments",
    "/api/balance",
    "/api/ledger",
    "/api/keys",
    "/v1/models",
]


def encode(value: str) -> str:
    """Percent-encode any string, lone surrogates included (as invalid UTF-8)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def query_cases(count: int, rng: random.Random) -> list[Case]:
    cases = []
    for _ in range(count):
        pairs = []
        for _ in range(rng.randint(1, 4)):
            value = (
                rng.choice(ODD_VALUES) if rng.random() < 0.8 else "".join(rng.choice("%&=+;#?\\ab") for _ in range(8))
            )
            pairs.append(f"{rng.choice(QUERY_PARAMS)}={encode(value)}")
        raw = "&".join(pairs)
        if rng.random() < 0.15:
            raw = rng.choice(["%ff%fe", "start", "=", "&&&", "%", "%zz", "a=%", "start=%00"])
        cases.append(Case("GET query", "GET", f"{rng.choice(GET_PATHS)}?{raw}"))
    for value in [*ODD_VALUES, "llama-3.1-8b-instruct/..", "%2e%2e", "a/b/c", "llama-3.1-8b"]:
        cases.append(Case("GET /v1/models/{id}", "GET", f"/v1/models/{encode(value)}"))
        cases.append(Case("GET /api/deployments/{name}", "GET", f"/api/deployments/{encode(value)}"))
        cases.append(Case("GET /api/keys/{id}", "GET", f"/api/keys/{encode(value)}"))
    return cases


def header_cases(rng: random.Random) -> list[Case]:
    from gpucloud.tests.test_fuzz_api import VALID

    chat = json.dumps(VALID["chat"]).encode()
    cases = []
    authorizations = [
        "",
        "Bearer",
        "bearer {key}",
        "Basic {key}",
        "Bearer {key} extra",
        "Bearer " + "x" * 8000,
        "Bearer gpc_" + "0" * 60,
        "Bearer {key}{key}",
        "Token {key}",
    ]
    for auth in authorizations:
        for path in ("/v1/chat/completions", "/api/usage"):
            method = "POST" if path.startswith("/v1/chat") else "GET"
            cases.append(
                Case(
                    "headers: Authorization", method, path, chat if method == "POST" else None, {"Authorization": auth}
                )
            )
    content_types = [
        "application/json; charset=utf-16",
        "application/json; charset=bogus",
        "application/JSON",
        "application/json+x",
        "text/json",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "application/octet-stream",
        "",
        ";",
        "application/json; " + "a=b; " * 200 + "c=d",
    ]
    for content_type in content_types:
        for path in ("/v1/chat/completions", "/v1/embeddings", "/api/workers/register", "/api/deployments"):
            cases.append(Case("headers: Content-Type", "POST", path, chat, {"Content-Type": content_type}))
    for host in ("evil.example", "127.0.0.1:1", "[::1", "a" * 300, "127.0.0.1, evil.example"):
        cases.append(Case("headers: Host", "POST", "/v1/chat/completions", chat, {"Host": host}))
    for encoding in ("gzip", "br", "identity", "x"):
        cases.append(
            Case(
                "headers: Content-Encoding",
                "POST",
                "/v1/chat/completions",
                gzip.compress(chat) if encoding == "gzip" else chat,
                {"Content-Encoding": encoding, "Content-Type": "application/json"},
            )
        )
    for accept in ("text/event-stream", "*/*;q=x", "application/xml", ""):
        cases.append(Case("headers: Accept", "POST", "/v1/chat/completions", chat, {"Accept": accept}))
    for _ in range(20):
        # (httpx refuses values with whitespace at either end: the raw requests send those.)
        extra = {
            f"X-Fuzz-{i}": "x" + "".join(rng.choice("abc;,= \t") for _ in range(20)) + "x"
            for i in range(rng.randint(1, 50))
        }
        cases.append(Case("headers: many", "POST", "/v1/chat/completions", chat, extra))
    return cases


def raw_requests(host: str, key: str) -> list[tuple[str, bytes]]:
    """Requests an HTTP client would refuse to send, written byte for byte over a socket."""
    chat = json.dumps({"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "Hi"}]}).encode()
    start = b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
    auth = b"Authorization: Bearer " + key.encode() + b"\r\nContent-Type: application/json\r\n"
    length = b"Content-Length: %d\r\n" % len(chat)
    return [
        ("NUL in a header", start + auth + b"X-A: a\x00b\r\n" + length + b"\r\n" + chat),
        ("non-ASCII header value", start + auth + "X-A: é😀\r\n".encode() + length + b"\r\n" + chat),
        ("non-ASCII header name", start + auth + "Ä: 1\r\n".encode() + length + b"\r\n" + chat),
        ("conflicting Content-Length", start + auth + length + b"Content-Length: 3\r\n\r\n" + chat),
        ("negative Content-Length", start + auth + b"Content-Length: -1\r\n\r\n"),
        ("huge Content-Length", start + auth + b"Content-Length: 99999999999999999999\r\n\r\n" + chat),
        ("Content-Length and chunked", start + auth + length + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("bad chunk size", start + auth + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + chat + b"\r\n0\r\n\r\n"),
        (
            "chunked body",
            start + auth + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(chat) + chat + b"\r\n0\r\n\r\n",
        ),
        (
            "request line of 20 KB",
            b"GET /v1/models?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n",
        ),
        ("600 headers", start + auth + b"".join(b"X-%d: 1\r\n" % i for i in range(600)) + length + b"\r\n" + chat),
        ("non-ASCII path", "GET /v1/mödels HTTP/1.1\r\nHost: ".encode() + host.encode() + b"\r\n\r\n"),
        (
            "invalid UTF-8 query",
            b"GET /api/usage?model=\xff\xfe HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + auth + b"\r\n",
        ),
        ("HTTP/0.9", b"GET /health\r\n\r\n"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("unknown method", b"BREW /v1/models HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"),
        ("absolute URI", b"GET http://evil.example/v1/models HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"),
        ("no Host", b"GET /v1/models HTTP/1.1\r\n\r\n"),
        ("obsolete line folding", start + auth + b"X-A: a\r\n b\r\n" + length + b"\r\n" + chat),
        (
            "empty bearer",
            start.replace(b"POST", b"GET").replace(b"/v1/chat/completions", b"/api/usage")
            + b"Authorization: Bearer \r\n\r\n",
        ),
        ("trailing whitespace in a value", start + auth + b"X-A: a \t\r\n" + length + b"\r\n" + chat),
        ("non-ASCII Accept", start + auth + "Accept: é\r\n".encode() + length + b"\r\n" + chat),
    ]


# --- sending --------------------------------------------------------------------------------


def record(totals: Totals, group: str, path: str, status: int, headers, content: bytes, what: str) -> None:
    totals.statuses[group][status] += 1
    api = path.startswith(("/v1/", "/api/"))
    error = None
    if status >= 400 and api:
        try:
            error = json.loads(content)["error"]
            assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            error = None
            if len(totals.not_openai_shaped) < 1000:
                snippet = content[:80].decode("utf-8", "replace")
                totals.not_openai_shaped.append(f"{status} {group} {what}: {headers.get('content-type')} {snippet!r}")
    if status >= 500:
        if status == 503 and error and error.get("code") in NOT_CLIENT_CAUSED_503:
            totals.not_client_503[f"{group}: {error['code']}"] += 1
        else:
            totals.client_5xx.append(f"{status} {group} {what}: {content[:200]!r}")


async def send(client: httpx.AsyncClient, case: Case, totals: Totals) -> None:
    what = f"{case.method} {case.path[:120]} body={(case.body or b'')[:100]!r} headers={str(case.headers)[:120]}"
    try:
        request = client.build_request(case.method, case.path, content=case.body, headers=case.headers)
        response = await client.send(request, stream=True)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
    except httpx.HTTPError as error:
        totals.transport_errors.append(f"{case.group} {what}: {error!r}")
        return
    record(totals, case.group, case.path, response.status_code, response.headers, content, what)
    stream = response.headers.get("content-type", "").startswith("text/event-stream")
    if response.status_code == 200 and stream and not content.rstrip().endswith(b"data: [DONE]"):
        totals.streams_without_done.append(f"{case.group} {what}: ...{content[-200:]!r}")


async def send_all(url: str, key: str, cases: list[Case], totals: Totals, concurrency: int) -> None:
    queue: asyncio.Queue[Case] = asyncio.Queue()
    for case in cases:
        queue.put_nowait(case)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=limits, trust_env=False, headers={"Authorization": f"Bearer {key}"}
    ) as client:

        async def worker() -> None:
            while True:
                try:
                    case = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                headers = dict(case.headers)
                if "Authorization" in headers:
                    headers["Authorization"] = headers["Authorization"].replace("{key}", key)
                await send(client, Case(case.group, case.method, case.path, case.body, headers), totals)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def read_reply(host: str, port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send ``data`` and read one response (Content-Length or chunked), or until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
            head, separator, body = reply.partition(b"\r\n\r\n")
            if not separator:
                continue
            lines = [line.lower() for line in head.split(b"\r\n")[1:]]
            lengths = [int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")]
            if lengths and len(body) >= lengths[0]:
                break
            if b"transfer-encoding: chunked" in lines and body.endswith(b"0\r\n\r\n"):
                break
        return reply


def send_raw(url: str, key: str, totals: Totals) -> None:
    host, port = url.removeprefix("http://").split(":")
    for name, data in raw_requests(f"{host}:{port}", key):
        group = "raw socket"
        try:
            reply = read_reply(host, int(port), data)
        except OSError as error:
            totals.transport_errors.append(f"{group} {name}: {error!r}")
            continue
        if not reply:
            totals.statuses[group]["closed"] += 1
            totals.raw.append(f"{name}: closed without an answer")
            continue
        try:
            status = int(reply.split(b" ", 2)[1])
        except (IndexError, ValueError):
            totals.statuses[group][f"unparsed: {reply[:30]!r}"] += 1
            continue
        head, _, body = reply.partition(b"\r\n\r\n")
        content_type = next(
            (
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-type:")
            ),
            "",
        )
        # Answered by Twisted or Daphne before Django: not under the OpenAI-shape rule (recorded apart).
        path = "/v1/" if b"json" in content_type.encode() else "raw"
        record(totals, group, path, status, {"content-type": content_type}, body, name)
        if "json" in content_type:
            answered_by = "from the application"
        elif not content_type:
            answered_by = "(bare: from Twisted)"
        elif status == 408:
            answered_by = "(gpucloud.daphne's read deadline)"
        else:
            answered_by = "(HTML: Daphne, or the application outside /v1 and /api)"
        totals.raw.append(f"{name}: {status} {content_type} {answered_by}")


# --- the run --------------------------------------------------------------------------------


def report(totals: Totals, elapsed: float) -> bool:
    print(f"\nFuzz run: {totals.sent():,} requests in {elapsed:.0f}s\n")
    overall: Counter = Counter()
    width = max(len(group) for group in totals.statuses)
    print("Status histogram per endpoint")
    for group, statuses in totals.statuses.items():
        overall.update(statuses)
        histogram = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=lambda kv: str(kv[0])))
        print(f"  {group:<{width}}  {sum(statuses.values()):>5}  {histogram}")
    print("\nOverall: " + ", ".join(f"{s}: {n}" for s, n in sorted(overall.items(), key=lambda kv: str(kv[0]))))
    print("\nRaw requests (a bare or HTML answer comes from before the application: not OpenAI-shaped)")
    for line in totals.raw:
        print(f"  {line}")
    print(f"\n5xx caused by client input: {len(totals.client_5xx)}")
    for line in totals.client_5xx[:20]:
        print(f"  {line}")
    print(f"503 not caused by the client: {sum(totals.not_client_503.values())}")
    for what, n in sorted(totals.not_client_503.items()):
        print(f"  {what}: {n}")
    print(f"Errors under /v1 and /api not in the OpenAI shape: {len(totals.not_openai_shaped)}")
    for line in Counter(totals.not_openai_shaped).most_common(10):
        print(f"  {line[1]} x {line[0]}")
    print(f"Transport errors (no HTTP answer): {len(totals.transport_errors)}")
    for line in totals.transport_errors[:10]:
        print(f"  {line[:300]}")
    print(f"200 streams without [DONE]: {len(totals.streams_without_done)}")
    for line in totals.streams_without_done[:5]:
        print(f"  {line[:300]}")
    return not totals.client_5xx and not totals.transport_errors and not totals.streams_without_done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-endpoint", type=int, default=300, help="generated bodies per POST/PATCH endpoint")
    parser.add_argument("--queries", type=int, default=600, help="generated GET query strings")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()

    harness.VAR_DIR = harness.BASE_DIR / "var" / "bench-fuzz"
    harness.LOG_DIR = harness.VAR_DIR / "logs"
    harness.exit_on_sigterm()
    harness.setup_django()

    rng = random.Random(options.seed)
    totals = Totals()
    with harness.embedded_redis_running():
        # The queue timeout is short: a request that passes validation and finds no slot answers 503
        # no_worker_available soon, which is listed apart.
        platform = harness.Platform(workers=1, slots=16, label="fuzz", env={"INFERENCE_QUEUE_TIMEOUT": "10"})
        with platform:
            from accounts.models import ApiKey
            from billing import services
            from deployments.models import CatalogModel
            from deployments.services import deployment_create

            # Thousands of requests: the key has no limits (the harness's), its account the credit.
            key = ApiKey.objects.get(name=platform.label)
            services.credit_grant(user=key.user, amount=Decimal("1000000"))
            # PATCH goes to a deployment of its own, so that the inference requests keep their model.
            model = CatalogModel.objects.get(model_id="mistral-7b-instruct-v0.3")
            deployment_create(name=TARGET_DEPLOYMENT, model=model, precision="int4")
            platform.warm_up()

            print("Generating requests ...", flush=True)
            bodies = body_cases(options.per_endpoint, options.seed)
            # The deployment endpoints last: what they create or change cannot touch the rest.
            last = {"deployments", "deployment"}
            first = [c for c in bodies if c.group not in last]
            cases = first + query_cases(options.queries, rng) + header_cases(rng)
            cases += [c for c in bodies if c.group in last]
            print(
                f"Sending {len(cases):,} requests ({options.concurrency} at a time) to {platform.url} ...", flush=True
            )
            started = time.monotonic()
            asyncio.run(send_all(platform.url, platform.key, cases[: len(first)], totals, options.concurrency))
            send_raw(platform.url, platform.key, totals)
            asyncio.run(send_all(platform.url, platform.key, cases[len(first) :], totals, options.concurrency))
            elapsed = time.monotonic() - started
            status, _ = platform.health()
            print(f"/health after the run: {status}")
    ok = report(totals, elapsed)
    print("OK" if ok and status == 200 else "NOT OK")
    return 0 if ok and status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
