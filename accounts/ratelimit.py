"""A sliding-window request counter in Redis, for the per-key requests-per-minute limit.

Fixed one-minute windows let a key send its whole limit just before a window ends and again just
after: twice its RPM within a second or two. Here each allowed request is a member of a Redis
sorted set scored by its time; a request is allowed only while fewer than ``limit`` members are
younger than the window. One Lua script does the trim, count and add atomically, on Redis's own
clock (Redis 5 or later), so every web process counts alike. Memory per key is at most ``limit``
members.
"""

from __future__ import annotations

import functools
import math
import secrets
from dataclasses import dataclass

from gpucloud.redis_client import get_redis

KEY_PREFIX = "gpucloud:rl:"

# KEYS[1]: the sorted set. ARGV: limit, window in ms, a unique member.
# Returns {allowed (0/1), count after this request, ms until the oldest counted request leaves}.
SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {allowed, count, reset}
"""


@functools.cache
def _script():
    return get_redis().register_script(SLIDING_WINDOW)


@dataclass(frozen=True)
class WindowUsage:
    allowed: bool
    count: int  # requests counted in the window, this one included if allowed
    limit: int
    reset_seconds: int  # until the oldest counted request leaves the window (a slot frees)

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)


def hit(name: str, *, limit: int, window_seconds: float = 60.0) -> WindowUsage:
    """Count one request under ``name`` if fewer than ``limit`` were allowed in the last
    ``window_seconds``; say whether it was allowed."""
    window_ms = max(int(window_seconds * 1000), 1)
    allowed, count, reset_ms = _script()(keys=[KEY_PREFIX + name], args=[limit, window_ms, secrets.token_hex(8)])
    return WindowUsage(
        allowed=bool(allowed),
        count=int(count),
        limit=limit,
        reset_seconds=max(math.ceil(int(reset_ms) / 1000), 1),
    )
