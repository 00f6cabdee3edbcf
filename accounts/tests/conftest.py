import pytest


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Every test starts with no login or account-email throttle counts (django-ratelimit keeps them
    in the cache, i.e. Redis, for up to an hour, and tests reuse addresses such as alice@example.com)."""
    from django.conf import settings

    from gpucloud.redis_client import get_redis

    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    redis = get_redis()
    keys = list(redis.scan_iter(f"{prefix}:*:rl:*"))
    if keys:
        redis.delete(*keys)
