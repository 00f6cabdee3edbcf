"""The platform's token count: one token per word or punctuation mark.

Prompts are counted with it before dispatch (context checks, metering of refused requests), and
the simulated engine counts its output with it, so counting a completion's text again gives its
token count. Engines that know better — an upstream server's usage, a model's tokenizer — report
their own counts, and those are billed.
"""

import json
import re

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# Long texts are counted a slice at a time, each cut before a character that is not part of a word
# (no token spans one): a regular expression holds the GIL for as long as it runs, and one pass over
# a 30 MB prompt held it for seconds, stalling the web process's event loop (every other request)
# while the prompt was counted in a worker thread. Between slices other threads get their turn.
SLICE = 16 * 1024
_CUT = re.compile(r"\W")

# Per-message overhead (role and separators) and the priming of the assistant's reply.
MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3


def count_tokens(text: str) -> int:
    size = len(text)
    if size <= SLICE:
        return len(TOKEN_RE.findall(text))
    total = start = 0
    while start < size:
        end = start + SLICE
        if end < size:
            cut = _CUT.search(text, end)
            end = cut.start() if cut else size
        total += len(TOKEN_RE.findall(text, start, end))
        start = end
    return total


def message_text(message: dict) -> str:
    """A chat message's text: its content, and the calls of an assistant's ``tool_calls``."""
    calls = [f"{c['function']['name']}({c['function']['arguments']})" for c in message.get("tool_calls") or []]
    content = message.get("content") or ""
    return "\n".join([content, *calls]) if content and calls else content or "\n".join(calls)


def count_chat_tokens(messages: list[dict], tools: list[dict] | None = None) -> int:
    """Messages with their overhead, the reply's priming, and the tools' definitions (which a
    model reads as part of its prompt)."""
    total = sum(count_tokens(message_text(m)) + MESSAGE_OVERHEAD for m in messages) + REPLY_PRIMING
    if tools:
        total += count_tokens(json.dumps(tools))
    return total
