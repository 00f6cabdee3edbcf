"""inference.journal: what a survivor does with a dead web process's journal."""

import asyncio
import json
import time

import pytest

from gpucloud.redis_client import get_redis
from inference import journal
from inference.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

PROCESS = "dead-process-for-tests"


def _journal(request_id: str, user_id: int, api_key_id: int) -> None:
    entry = {
        "endpoint": "chat.completions", "model": "m", "deployment": "d", "stream": True, "prompt_tokens": 5,
        "user": user_id, "api_key": api_key_id, "reservation": None, "at": time.time(),
    }  # fmt: skip
    get_redis().hset(f"gpucloud:journal:{PROCESS}", request_id, json.dumps(entry))


def test_a_request_of_an_account_that_no_longer_exists_is_dropped_not_retried_forever(user, make_key):
    api_key, _ = make_key(user)
    _journal("req_gone", user.pk + 1000, api_key.pk)  # e.g. a database restored from before it

    asyncio.run(journal.settle_orphan(PROCESS, "req_gone", completion_tokens=3))

    assert get_redis().hget(f"gpucloud:journal:{PROCESS}", "req_gone") is None
    assert not UsageRecord.objects.filter(request_id="req_gone").exists()


def test_a_request_of_a_live_account_is_recorded_as_lost_with_its_web_process(user, make_key):
    api_key, _ = make_key(user)
    _journal("req_orphan", user.pk, api_key.pk)

    asyncio.run(journal.settle_orphan(PROCESS, "req_orphan", completion_tokens=3))

    record = UsageRecord.objects.get(request_id="req_orphan")
    assert (record.status_code, record.error_code) == (journal.STATUS_PROCESS_LOST, journal.CODE_PROCESS_LOST)
    assert get_redis().hget(f"gpucloud:journal:{PROCESS}", "req_orphan") is None
