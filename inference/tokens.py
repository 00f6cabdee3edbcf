"""The platform's token count: one token per word or punctuation mark.

Every engine's usage is reported with the same counter, so prompt and completion counts (and so
bills) are consistent across engines: counting a completion's text again gives its token count.
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
