"""Large bodies are counted off the event loop without stalling it (the GIL is let go between slices)."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeprotocol import tokens
from nodeprotocol.tokens import TOKEN_RE, count_tokens

PIECES = st.sampled_from(["word", "GPU", " ", "  ", "\n", ".", ",", "ß", "日本", "é", "-", "42", "\t", "!?", "_x"])


@settings(max_examples=200, deadline=None)
@given(st.lists(PIECES, max_size=400), st.integers(min_value=1, max_value=40))
def test_counting_a_slice_at_a_time_gives_the_same_count(pieces, slice_size):
    text = "".join(pieces)
    original = tokens.SLICE
    tokens.SLICE = slice_size
    try:
        assert count_tokens(text) == len(TOKEN_RE.findall(text))
    finally:
        tokens.SLICE = original


def test_one_long_word_and_long_punctuation_count_as_before():
    for text in ("x" * 100_000, "." * 100_000, ("ab. " * 30_000) + "z" * 50_000):
        assert count_tokens(text) == len(TOKEN_RE.findall(text))


def test_counting_a_large_prompt_in_a_thread_leaves_other_threads_their_turn():
    """A 16 MB prompt counted in one regular-expression pass held the GIL for seconds: a web
    process's event loop (this test's main thread) stood still meanwhile."""
    text = "word, " * (16 * 1024 * 1024 // 6)
    counting = threading.Thread(target=count_tokens, args=(text,))
    longest, last = 0.0, time.perf_counter()
    counting.start()
    while counting.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    counting.join()
    assert longest < 0.5, f"the main thread waited {longest:.2f} s for the GIL"
