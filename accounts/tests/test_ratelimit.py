"""accounts.ratelimit: a sliding-window counter in Redis."""

import secrets
import threading
import time

from accounts import ratelimit


def name() -> str:
    return f"test-{secrets.token_hex(6)}"


def test_it_works():
    key = name()

    usages = [ratelimit.hit(key, limit=3) for _ in range(4)]

    assert [u.allowed for u in usages] == [True, True, True, False]
    assert [u.remaining for u in usages] == [2, 1, 0, 0]
    assert all(1 <= u.reset_seconds <= 60 for u in usages)


def test_it_counts_each_name_separately():
    first, second = name(), name()

    assert ratelimit.hit(first, limit=1).allowed
    assert not ratelimit.hit(first, limit=1).allowed
    assert ratelimit.hit(second, limit=1).allowed


def test_no_burst_across_a_window_edge():
    """Fixed one-second windows would let twice the limit through in any second that straddles an edge;
    the sliding window never lets more than ``limit`` through in any second."""
    key = name()
    # Start half-way through a wall-clock second, so the burst straddles a fixed window's edge.
    time.sleep((1.5 - time.time() % 1) % 1)
    started = time.monotonic()
    allowed = 0
    while time.monotonic() - started < 0.9:
        allowed += ratelimit.hit(key, limit=5, window_seconds=1).allowed
        time.sleep(0.01)

    assert allowed == 5


def test_it_frees_slots_as_requests_leave_the_window():
    key = name()
    assert ratelimit.hit(key, limit=1, window_seconds=0.3).allowed
    assert not ratelimit.hit(key, limit=1, window_seconds=0.3).allowed

    time.sleep(0.35)

    assert ratelimit.hit(key, limit=1, window_seconds=0.3).allowed


def test_it_is_atomic_under_concurrency():
    key = name()
    results = []

    def worker():
        for _ in range(10):
            results.append(ratelimit.hit(key, limit=25).allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(results) == 25
