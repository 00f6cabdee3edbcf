"""Large ``/v1`` bodies are parsed, validated and counted in a process of their own.

A worker thread keeps that work off the event loop, but not off the GIL: ``json.loads`` of a 30 MB
body and its pydantic validation each hold the GIL for a few hundred milliseconds at a time, and
with a few such bodies in flight every other request of the web process (``/health`` included)
waited behind them for a second or more. A body of ``LARGE_BODY_BYTES`` or more therefore goes to a
small pool of processes (``BODY_POOL_PROCESSES``, spawned, created on first use or by :func:`warm_up`
at web process start), which sends back only what the view needs: the typed request, its prompt
and token counts, or the :class:`~gpucloud.openai_errors.ApiError` a client gets, with the same
message and ``param`` as in-thread. Smaller bodies stay in the calling thread (no round trip).

The child never sets Django up: :mod:`inference.validation` and what it uses (the pydantic models,
``gpucloud.jsonbody``, ``nodeprotocol.tokens``) import without settings, and the size limit the
parent reads from ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is passed along with each body.

A pool whose process died (killed, out of memory) is broken for good in ``concurrent.futures``:
the request that finds it so is parsed in its thread instead, and the next large body gets a new
pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from django.conf import settings

from gpucloud.openai_errors import ApiError
from inference import validation

logger = logging.getLogger(__name__)

PARSERS = {
    "chat": validation.chat_body,
    "completion": validation.completion_body,
    "embedding": validation.embedding_body,
}

NICENESS = 10
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _exit_with_parent() -> None:
    """Leave when the web process is gone: killed (SIGKILL), it cannot shut its pool down."""
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(0)


def _child_init() -> None:
    """In a pool process: any use of Django's settings is a bug here, so make it fail loudly; yield
    the CPU to the web process; and do not outlive it."""
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    # Below the web process: on a busy machine its event loop gets a core before a body's parsing.
    os.nice(NICENESS)
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()


def work(kind: str, body: bytes, max_size: int | None) -> tuple[bool, object]:
    """In a pool process: ``(True, what the view needs)`` or ``(False, the ApiError)``."""
    try:
        return True, PARSERS[kind](body, max_size=max_size)
    except ApiError as error:
        return False, error


def _ready(_: object = None) -> None:
    """A no-op run once in each new pool, so that its process starts (imports) before a body waits."""


def pool() -> ProcessPoolExecutor | None:
    """This process's pool, created on first use; None when BODY_POOL_PROCESSES is 0."""
    global _pool
    size = settings.BODY_POOL_PROCESSES
    if size <= 0:
        return None
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                max_workers=size, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init
            )
        return _pool


def _discard(broken: ProcessPoolExecutor) -> None:
    """Forget a broken pool (if it is still the current one), so the next body gets a new one."""
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


def warm_up() -> Future | None:
    """Start the pool's processes now (web process start) rather than on the first large body."""
    child = multiprocessing.parent_process() is not None
    if child or getattr(multiprocessing.current_process(), "_inheriting", False):
        return None  # a multiprocessing child, e.g. a pool process importing an unguarded main script
    executor = pool()
    if executor is None:
        return None
    try:
        # One no-op per process: a pool spawns a process for a submission that finds none idle.
        return [executor.submit(_ready) for _ in range(settings.BODY_POOL_PROCESSES)][-1]
    except BrokenProcessPool:
        _discard(executor)
        return None


def uses_pool(body: bytes) -> bool:
    return settings.BODY_POOL_PROCESSES > 0 and len(body) >= settings.LARGE_BODY_BYTES


def parse_in_thread(kind: str, body: bytes):
    return PARSERS[kind](body)


def parse_blocking(kind: str, body: bytes):
    """What the view needs from ``body`` (see :data:`PARSERS`), computed in the pool for a large
    body; raises the ApiError a client gets. Blocks: call it from a worker thread."""
    executor = pool() if uses_pool(body) else None
    if executor is None:
        return parse_in_thread(kind, body)
    try:
        ok, result = executor.submit(work, kind, body, settings.DATA_UPLOAD_MAX_MEMORY_SIZE).result()
    except BrokenProcessPool:
        logger.warning("The body parsing pool broke (a process died); parsing this body in its thread.")
        _discard(executor)
        return parse_in_thread(kind, body)
    if not ok:
        raise result
    return result
