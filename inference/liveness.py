"""What a web process promises Redis every second, kept by a thread of its own.

Three things in Redis lapse unless the web process that owns them renews them every second:

* the process's own key (:mod:`inference.journal`): while it is there, other processes leave the
  requests of its views alone (they would cancel them and settle them as orphans);
* the presence of each node whose socket it holds (:mod:`deployments.presence`): placement keeps
  replicas only on present nodes;
* the leases of those nodes' jobs (:mod:`inference.replies`): a view whose job's lease lapses
  takes its node for lost and dispatches the job again.

Under load (thousands of open streams) every round trip a coroutine makes waits for turns of a busy
event loop, each of them long: renewals made on the loop came five to nine seconds late, presences
lapsed, and placement withdrew the replicas of live nodes while the views took their jobs for lost
(the 2,000-stream benchmark's ``model_not_ready`` and ``replica_not_loaded``). So one thread per
event loop renews all of it in one pipeline, with a synchronous client: it never waits for the loop.

One judgement still needs the loop: whether a node fell silent. A node is heard when the loop
reads its messages, and a loop late to read them says nothing about the node. Each tick the thread
posts a callback to the loop; a node's silence is judged only while the loop ran the previous one
within ``LATE_SECONDS``, and no message of the node is being relayed (a relay may wait on
backpressure) — or once the node has been silent for ``SILENT_ANYWAY_SECONDS``, longer than any
loop is late: then it is gone. A silent node's leases and presence are dropped at once, so its jobs
go elsewhere; when it speaks again it is present again at the next tick, which it brings forward.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from redis.exceptions import RedisError

from deployments import presence
from inference import replies

if TYPE_CHECKING:
    from inference.dispatcher import NodeDispatcher

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# A posted callback run this late shows a loop too busy to read the nodes' messages on time.
LATE_SECONDS = 0.5
# Silence this long means the node is gone, however busy the loop (no loop is ever that late).
SILENT_ANYWAY_SECONDS = 15.0
ERROR_LOG_SECONDS = 30.0


class Liveness(threading.Thread):
    """The renewals of one event loop's web process: its key, and its nodes' presence and leases."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="liveness", daemon=True)
        self.loop = loop
        self.process = ""  # this process's journal name, once a view or a node uses the journal
        self._dispatchers: weakref.WeakSet[NodeDispatcher] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._posted = self._ran = time.monotonic()
        self._error_logged_at = -ERROR_LOG_SECONDS
        self._client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)

    # --- from the event loop ------------------------------------------------------------------

    def add(self, dispatcher: NodeDispatcher) -> None:
        with self._lock:
            self._dispatchers.add(dispatcher)
        self._wake.set()  # present from the first moment, not from the next tick

    def discard(self, dispatcher: NodeDispatcher) -> None:
        with self._lock:
            self._dispatchers.discard(dispatcher)

    def wake(self) -> None:
        """Tick now (a silent node spoke again: present again at once)."""
        self._wake.set()

    def _loop_ran(self) -> None:
        self._ran = time.monotonic()

    # --- the thread -----------------------------------------------------------------------------

    def run(self) -> None:
        while not self.loop.is_closed():
            started = time.monotonic()
            # Cleared before the tick, not after the wait: a wake() that comes during a tick (or
            # just as the wait ends) brings the next tick forward rather than being lost.
            self._wake.clear()
            try:
                self.tick()
            except RuntimeError:
                if self.loop.is_closed():  # closed between the check and the post: the loop ends
                    return
                logger.exception("The liveness thread failed a tick; it carries on")
            except (RedisError, OSError) as error:  # Redis is down: it comes back, and so do these keys
                if started - self._error_logged_at > ERROR_LOG_SECONDS:
                    self._error_logged_at = started
                    logger.warning("Could not renew this web process's keys, presences and leases: %s", error)
            except Exception:
                logger.exception("The liveness thread failed a tick; it carries on")
            self._wake.wait(max(0.0, started + TICK_SECONDS - time.monotonic()))

    def loop_on_time(self) -> bool:
        """Whether the loop ran the callback posted at the previous tick within LATE_SECONDS."""
        return self._posted <= self._ran < self._posted + LATE_SECONDS

    def tick(self) -> None:
        """One round trip: this process's key, and every node's presence and leases (or their drop)."""
        on_time = self.loop_on_time()
        now, wall = time.monotonic(), time.time()
        self._posted = now
        self.loop.call_soon_threadsafe(self._loop_ran)
        with self._lock:
            dispatchers = [d for d in self._dispatchers if not d.closing]
        pipe = self._client.pipeline(transaction=False)
        if self.process:
            from inference import journal

            journal.beat_queue(pipe, self.process, wall)
        fell_silent = []
        for dispatcher in dispatchers:
            quiet = now - dispatcher.heard_at
            receiving = dispatcher.receiving > 0
            if not receiving and quiet > settings.WORKER_OFFLINE_AFTER and (on_time or quiet > SILENT_ANYWAY_SECONDS):
                if not dispatcher.silent:
                    dispatcher.silent = True
                    fell_silent.append(dispatcher)
                    replies.leases_drop_queue(pipe, dispatcher.leases())
                    presence.worker_silent_queue(pipe, dispatcher.node_name)
                continue
            dispatcher.silent = False
            # A loop late (or a relay held up) is late to read the node: it is alive as of now.
            heard_at = dispatcher.heard_wall if on_time and not receiving else wall
            presence.worker_seen_queue(pipe, dispatcher.node_name, heard_at)
            replies.leases_renew_queue(pipe, dispatcher.leases())
        if pipe.command_stack:
            pipe.execute()
        for dispatcher in fell_silent:
            logger.warning("Node %s fell silent; its jobs go elsewhere", dispatcher.node_name)


_threads: dict[asyncio.AbstractEventLoop, Liveness] = {}
_threads_lock = threading.Lock()


def liveness() -> Liveness:
    """The running event loop's liveness thread (started on first use)."""
    loop = asyncio.get_running_loop()
    with _threads_lock:
        for old in [old for old in _threads if old.is_closed()]:
            del _threads[old]
        old = thread = _threads.get(loop)
        if thread is None or not thread.is_alive():
            thread = _threads[loop] = Liveness(loop)
            if old is not None:  # a stopped thread's duties carry over
                thread.process = old.process
                for dispatcher in list(old._dispatchers):
                    thread.add(dispatcher)
            thread.start()
    return thread
