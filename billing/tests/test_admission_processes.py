"""Admission is exact across processes: several server processes admit against one account."""

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from billing import services
from billing.selectors import balance_of, reconciliation_differences

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parents[2]

# Each process admits its share of requests from 10 threads, settles what it was admitted at the
# worst case (completion = max_tokens), and prints how many it was admitted and refused.
WORKER = """
import json, sys, threading
import django
django.setup()
from accounts.models import ApiKey
from billing import admission
from deployments.models import CatalogModel

key_id, process, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
api_key = ApiKey.objects.get(pk=key_id)
model = CatalogModel.objects.get(model_id="priced-model")
outcome = {"admitted": 0, "refused": {}}
lock = threading.Lock()

def run(thread):
    for n in range(thread, count, 10):
        request_id = f"req_{process}_{n}"
        try:
            reservation = admission.admit(api_key, model, request_id=request_id, prompt_tokens=100, max_tokens=200)
        except admission.AdmissionRefused as refused:
            with lock:
                outcome["refused"][refused.reason] = outcome["refused"].get(refused.reason, 0) + 1
            continue
        usage = {"endpoint": "chat.completions", "status_code": 200}
        admission.settle(reservation, prompt_tokens=100, completion_tokens=200, **usage)
        with lock:
            outcome["admitted"] += 1

threads = [threading.Thread(target=run, args=(t,)) for t in range(10)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(outcome))
"""


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def test_four_processes_admit_exactly_what_the_balance_covers(user, model, make_key):
    services.adjustment(user=user, amount=Decimal("-5.00"))
    services.credit_grant(user=user, amount=Decimal("0.025"))  # 50 worst cases of $0.0005
    api_key, _ = make_key(user)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gpucloud.settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "LOG_LEVEL": "WARNING",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(api_key.pk), str(index), "50"],
            env=env,
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(4)
    ]
    outcomes = []
    for process in processes:
        stdout, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        outcomes.append(json.loads(stdout.strip().splitlines()[-1]))

    assert sum(o["admitted"] for o in outcomes) == 50
    assert sum(o["refused"].get("balance", 0) for o in outcomes) == 150
    assert balance_of(user) == Decimal("0")
    assert reconciliation_differences() == []
