"""The platform's token count: one token per word or punctuation mark.

Prompts are counted with it before dispatch (context checks, metering of refused requests), and
the simulated engine counts its output with it, so counting a completion's text again gives its
token count. Engines that know better — an upstream server's usage, a model's tokenizer — report
their own counts, and those are billed.
"""

import re

TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# Per-message overhead (role and separators) and the priming of the assistant's reply.
MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3


def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))


def count_chat_tokens(messages: list[dict]) -> int:
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages) + REPLY_PRIMING
