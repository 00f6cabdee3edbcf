"""The billing state in Redis, derived from the database, and the Lua scripts that change it.

Per account (all keys share the hash tag ``{u<user id>}``, so a cluster keeps them together):

- ``billing:{u1}:state`` (hash) — what the database says: ``v`` the account version it reflects
  (BillingAccount.version), ``bal`` the balance then, ``s:<key id>:<period>`` each budgeted key's
  spend in its current period then. Ledger entries committed since arrive through
  :func:`apply_entry` as pending items ``p:<version>`` (summed in ``pbal`` and ``ps:<field>``)
  and are folded into the base figures in version order; an entry at or below ``v`` is already
  included and is ignored, so an entry is never counted twice and order of arrival does not
  matter. The hash expires ``BILLING_STATE_TTL`` seconds after it is loaded, so any drift (an
  apply lost because Redis was unreachable) lasts at most that long.
- ``billing:{u1}:res`` (hash) and ``billing:{u1}:resexp`` (sorted set by expiry) — reservations
  of requests in flight: ``r:<request id>``, with running totals ``total`` (USD units),
  ``k:<key id>`` (USD units) and ``n:<key id>`` (requests in flight). A reservation not settled
  or released within ``BILLING_RESERVATION_TTL`` expires, and its amounts are freed.
- ``billing:{u1}:tpm:<key id>:<minute>`` — tokens admitted in a one-minute window.
- ``billing:prices`` (hash) — each catalog model's price version in force. Processes cache price
  versions; admission checks the cached one is still in force in the same script (a price change
  updates the hash when it commits), so the database is not read for prices on every request.

When the state is missing (first use, expiry, a Redis restart or FLUSHDB) admission loads it
from the database with :func:`load_state`. Money is counted in integer units of 1e-8 USD.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import cache

from django.conf import settings
from django.utils import timezone

from billing.money import to_units
from gpucloud.redis_client import get_redis

logger = logging.getLogger(__name__)


def _tag(user_id: int) -> str:
    return f"billing:{{u{user_id}}}"


def state_key(user_id: int) -> str:
    return f"{_tag(user_id)}:state"


def reservation_keys(user_id: int) -> list[str]:
    return [f"{_tag(user_id)}:res", f"{_tag(user_id)}:resexp"]


def tpm_prefix(user_id: int, key_id: int) -> str:
    return f"{_tag(user_id)}:tpm:{key_id}"


#: Catalog model pk -> the id of its price version in force (not per account: no hash tag).
PRICES_KEY = "billing:prices"


def spend_field(api_key, at: datetime) -> str:
    """The state field of a key's spend in its budget period containing ``at``."""
    from billing.selectors import period_id

    return f"{api_key.pk}:{period_id(api_key.budget_period, at)}"


_LIB = """
local function s(x) return string.format('%d', x) end
local function num(key, field) return tonumber(redis.call('HGET', key, field) or '0') end
local function split(item)
  return string.match(item, '^([^|]*)|([^|]*)|([^|]*)$')
end

-- Fold pending entries that follow the state's version into its base figures, in order.
local function drain(state)
  local v = tonumber(redis.call('HGET', state, 'v'))
  while true do
    local field = 'p:' .. s(v + 1)
    local item = redis.call('HGET', state, field)
    if not item then break end
    local delta, sfield, sdelta = split(item)
    redis.call('HINCRBY', state, 'bal', delta)
    redis.call('HINCRBY', state, 'pbal', s(-tonumber(delta)))
    if sfield ~= '' then
      redis.call('HINCRBY', state, 'ps:' .. sfield, s(-tonumber(sdelta)))
      if redis.call('HEXISTS', state, 's:' .. sfield) == 1 then
        redis.call('HINCRBY', state, 's:' .. sfield, sdelta)
      end
    end
    redis.call('HDEL', state, field)
    v = v + 1
  end
  redis.call('HSET', state, 'v', s(v))
end

-- Count a committed ledger entry (account version v) once, whatever order entries arrive in.
-- With no state loaded, it waits as a pending item for the load that follows.
local function apply(state, v, delta, sfield, sdelta, ttl)
  local cur = redis.call('HGET', state, 'v')
  if cur and tonumber(v) <= tonumber(cur) then return end
  if redis.call('HSETNX', state, 'p:' .. v, delta .. '|' .. sfield .. '|' .. sdelta) == 0 then return end
  redis.call('HINCRBY', state, 'pbal', delta)
  if sfield ~= '' then redis.call('HINCRBY', state, 'ps:' .. sfield, sdelta) end
  if cur then
    drain(state)
  elseif redis.call('PTTL', state) < 0 then
    redis.call('PEXPIRE', state, ttl)
  end
end

-- Free a reservation; returns {tokens, tpm key} or nil when it is gone (settled or expired).
local function unreserve(res, exp, rid)
  local item = redis.call('HGET', res, 'r:' .. rid)
  if not item then return nil end
  local worst, kid, tokens, tpmkey = string.match(item, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  redis.call('HINCRBY', res, 'total', s(-tonumber(worst)))
  redis.call('HINCRBY', res, 'k:' .. kid, s(-tonumber(worst)))
  redis.call('HINCRBY', res, 'n:' .. kid, -1)
  redis.call('HINCRBY', res, 'n', -1)
  redis.call('HDEL', res, 'r:' .. rid)
  redis.call('ZREM', exp, rid)
  return {tokens, tpmkey}
end
"""

# KEYS: state, res, resexp, tpm prefix, prices.
# ARGV: request id, key id, worst case (units), tokens, budget (units, -1: none), spend field,
#       tpm (-1: none), max parallel (-1: none), reservation ttl (ms), model pk, price version id
#       the worst case was computed at, the account's requests in flight (-1: none).
# Returns {'ok', tokens remaining (-1: no limit), reset s} | {'reload'} | {'price', version id in force}
#       | {refusal, figure, [reset s]}.
ADMIT = (
    _LIB
    + """
local state, res, exp = KEYS[1], KEYS[2], KEYS[3]
local rid, kid, sfield = ARGV[1], ARGV[2], ARGV[6]
local worst, tokens, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tpm, parallel, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reset = 60 - math.floor((now % 60000) / 1000)
local tpmkey = KEYS[4] .. ':' .. s(math.floor(now / 60000))
if redis.call('HEXISTS', res, 'r:' .. rid) == 1 then return {'ok', '-1', s(reset)} end
local price = redis.call('HGET', KEYS[5], ARGV[10])
if price ~= ARGV[11] then return {'price', price or ''} end
if not redis.call('HGET', state, 'v') then return {'reload'} end
if budget >= 0 and redis.call('HEXISTS', state, 's:' .. sfield) == 0 then return {'reload'} end
for _, expired in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', s(now))) do unreserve(res, exp, expired) end
local available = num(state, 'bal') + num(state, 'pbal') - num(res, 'total')
if worst > available then return {'balance', s(available)} end
if budget >= 0 then
  local spent = num(state, 's:' .. sfield) + num(state, 'ps:' .. sfield) + num(res, 'k:' .. kid)
  if spent + worst > budget then return {'budget', s(spent)} end
end
if parallel >= 0 then
  local running = num(res, 'n:' .. kid)
  if running >= parallel then return {'parallel', s(running)} end
end
local account_parallel = tonumber(ARGV[12])
if account_parallel >= 0 and num(res, 'n') >= account_parallel then return {'account_parallel', s(num(res, 'n'))} end
local used = tonumber(redis.call('GET', tpmkey) or '0')
if tpm >= 0 and used + tokens > tpm then return {'tpm', s(used), s(reset)} end
redis.call('HSET', res, 'r:' .. rid, s(worst) .. '|' .. kid .. '|' .. s(tokens) .. '|' .. tpmkey)
redis.call('HINCRBY', res, 'total', s(worst))
redis.call('HINCRBY', res, 'k:' .. kid, s(worst))
redis.call('HINCRBY', res, 'n:' .. kid, 1)
redis.call('HINCRBY', res, 'n', 1)
redis.call('ZADD', exp, s(now + ttl), rid)
redis.call('PEXPIRE', res, s(ttl))
redis.call('PEXPIRE', exp, s(ttl))
if tpm < 0 then return {'ok', '-1', s(reset)} end
redis.call('INCRBY', tpmkey, s(tokens))
redis.call('EXPIRE', tpmkey, 120)
return {'ok', s(tpm - used - tokens), s(reset)}
"""
)

# KEYS: state, res, resexp.
# ARGV: request id ('' none), tokens not used (given back to the TPM window),
#       entry version ('' none), delta (units), spend field ('' none), spend delta (units), state ttl (ms).
SETTLE = (
    _LIB
    + """
if ARGV[1] ~= '' then
  local freed = unreserve(KEYS[2], KEYS[3], ARGV[1])
  local unused = tonumber(ARGV[2])
  if freed and unused > 0 and redis.call('EXISTS', freed[2]) == 1 then
    redis.call('DECRBY', freed[2], s(math.min(unused, tonumber(freed[1]))))
  end
end
if ARGV[3] ~= '' then apply(KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]) end
return 1
"""
)

# KEYS: state. ARGV: version, balance (units), state ttl (ms), then pairs of spend field, spend (units).
# Returns 'ok', or 'retry' when the state already reflects a later version than was read.
LOAD = (
    _LIB
    + """
local state = KEYS[1]
local V = tonumber(ARGV[1])
local cur = redis.call('HGET', state, 'v')
if cur and tonumber(cur) > V then return 'retry' end
if cur and tonumber(cur) == V then
  for i = 4, #ARGV, 2 do redis.call('HSETNX', state, 's:' .. ARGV[i], ARGV[i + 1]) end
  return 'ok'
end
for _, f in ipairs(redis.call('HKEYS', state)) do
  local kind = string.sub(f, 1, 2)
  if kind == 's:' then
    redis.call('HDEL', state, f)
  elseif kind == 'p:' and tonumber(string.sub(f, 3)) <= V then
    local delta, sfield, sdelta = split(redis.call('HGET', state, f))
    redis.call('HINCRBY', state, 'pbal', s(-tonumber(delta)))
    if sfield ~= '' then redis.call('HINCRBY', state, 'ps:' .. sfield, s(-tonumber(sdelta))) end
    redis.call('HDEL', state, f)
  end
end
redis.call('HSET', state, 'v', ARGV[1], 'bal', ARGV[2])
for i = 4, #ARGV, 2 do redis.call('HSET', state, 's:' .. ARGV[i], ARGV[i + 1]) end
if not cur then redis.call('PEXPIRE', state, ARGV[3]) end
drain(state)
return 'ok'
"""
)


# KEYS: prices. ARGV: model pk, price version id, force ('1': also backwards).
# Versions only move forward, unless forced (Redis names a version the database does not have).
PRICE_SET = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '1' or not current or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


@cache
def script(source: str):
    """The registered script (redis-py runs it by SHA and reloads it after a Redis restart)."""
    return get_redis().register_script(source)


def _state_ttl_ms() -> int:
    return int(settings.BILLING_STATE_TTL * 1000)


def apply_entry(entry) -> None:
    """Count a committed ledger entry in Redis (called on commit by billing.services.ledger_post).

    A failure is logged, not raised: the money is in the database, and the state is reloaded
    from it within ``BILLING_STATE_TTL``.
    """
    from billing.selectors import SPEND_KINDS

    field, spend = "", 0
    if entry.api_key_id is not None and entry.kind in SPEND_KINDS:
        field, spend = spend_field(entry.api_key, entry.created_at), -to_units(entry.amount)
    try:
        settle_script(
            entry.account_id, version=entry.account_version, delta=to_units(entry.amount), field=field, spend=spend
        )
    except Exception:
        logger.exception("Could not apply ledger entry %s to the billing state in Redis", entry.pk)


def settle_script(
    user_id: int,
    *,
    request_id: str = "",
    unused_tokens: int = 0,
    version: int | None = None,
    delta: int = 0,
    field: str = "",
    spend: int = 0,
) -> None:
    script(SETTLE)(
        keys=[state_key(user_id), *reservation_keys(user_id)],
        args=[request_id, unused_tokens, "" if version is None else version, delta, field, spend, _state_ttl_ms()],
    )


def load_state(user_id: int) -> None:
    """Load an account's state from the database: its balance and version, and the spend of each
    budgeted key in its current period up to that version (so the figures agree with each other)."""
    from accounts.models import ApiKey
    from billing.models import BillingAccount
    from billing.selectors import key_spend

    for attempt in range(5):
        if attempt == 4:
            # Redis holds a later version than the database has: the database was restored or reset.
            forget(user_id)
        balance, version = BillingAccount.objects.filter(user_id=user_id).values_list("balance", "version").first() or (
            0,
            0,
        )
        now = timezone.now()
        pairs: list = []
        for api_key in ApiKey.objects.filter(user_id=user_id, max_budget__isnull=False, revoked_at__isnull=True):
            pairs += [spend_field(api_key, now), to_units(key_spend(api_key, now, up_to_version=version))]
        result = script(LOAD)(keys=[state_key(user_id)], args=[version, to_units(balance), _state_ttl_ms(), *pairs])
        if result == b"ok":
            return
    raise RuntimeError(f"Could not load the billing state of user {user_id}: it kept changing.")


def forget(user_id: int) -> None:
    """Drop an account's derived state (it is reloaded from the database on next use)."""
    get_redis().delete(state_key(user_id))


def forget_all() -> None:
    """Drop every account's billing state, reservations and cached prices (tests: ids come round
    again between tests; everything reloads from the database on next use)."""
    _price_cache.clear()
    redis = get_redis()
    for key in redis.scan_iter(match="billing:*", count=1000):
        redis.delete(key)


# --- Prices in force, cached per process and checked against Redis at admission ---------------

_price_cache: dict[int, object] = {}


def cached_price(model):
    """The price version this process last saw in force for ``model`` (None: ask the database)."""
    return _price_cache.get(model.pk)


def price_refresh(model, version_id: str):
    """Re-read the price version in force (``version_id`` from Redis, or '' when Redis has none)."""
    from billing.models import PriceVersion
    from billing.selectors import price_in_force
    from billing.services import price_version_record

    version = PriceVersion.objects.filter(pk=int(version_id), model=model).first() if version_id else None
    if version is None:
        version = price_in_force(model) or price_version_record(model)
        # Forced when Redis named a version that is not this model's (a database restored or reset).
        price_publish(version, force=bool(version_id))
    _price_cache[model.pk] = version
    return version


def price_publish(version, *, force: bool = False) -> None:
    """Tell every process that ``version`` is in force for its model (on commit of a new version)."""
    if version.model_id is None:
        return
    try:
        script(PRICE_SET)(keys=[PRICES_KEY], args=[version.model_id, version.pk, "1" if force else "0"])
    except Exception:
        logger.exception("Could not publish price version %s to Redis", version.pk)
