"""GPU profiles: what the simulated engine pretends to run on, and how fast that would be."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuProfile:
    name: str
    memory_gb: int
    # Decode speed of a 7B-parameter model on one sequence, in tokens per second.
    tokens_per_second_7b: float
    # Fixed latency before the first token, plus prefill time per prompt token.
    first_token_ms: float
    prefill_ms_per_token: float

    def tokens_per_second(self, parameters_billion: float) -> float:
        """Decode speed for a model of this size: memory-bandwidth bound, so roughly 1/size."""
        return max(self.tokens_per_second_7b * 7.0 / max(parameters_billion, 0.1), 1.0)

    def time_to_first_token(self, parameters_billion: float, prompt_tokens: int) -> float:
        scale = max(parameters_billion, 0.1) / 7.0
        return (self.first_token_ms + self.prefill_ms_per_token * prompt_tokens * scale) / 1000.0


GPU_PROFILES: dict[str, GpuProfile] = {
    profile.name: profile
    for profile in (
        GpuProfile("H100-80GB", 80, tokens_per_second_7b=160.0, first_token_ms=25.0, prefill_ms_per_token=0.02),
        GpuProfile("A100-80GB", 80, tokens_per_second_7b=110.0, first_token_ms=35.0, prefill_ms_per_token=0.04),
        GpuProfile("RTX-A6000-48GB", 48, tokens_per_second_7b=75.0, first_token_ms=45.0, prefill_ms_per_token=0.07),
        GpuProfile("RTX-4090-24GB", 24, tokens_per_second_7b=90.0, first_token_ms=40.0, prefill_ms_per_token=0.06),
    )
}

GPU_PROFILE_CHOICES = [(name, name) for name in GPU_PROFILES]
