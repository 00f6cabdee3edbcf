"""Per-GPU figures for heartbeats: from NVML when the machine has NVIDIA GPUs, else simulated."""

from __future__ import annotations

import random

from nodeprotocol.gpus import GPU_PROFILES


class GpuTelemetry:
    """Per-GPU figures: from NVML when the machine has NVIDIA GPUs, else simulated per profile."""

    def __init__(self, profiles: list[str]) -> None:
        self.nvml = None
        try:  # optional dependency: pip install nvidia-ml-py
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self.nvml = pynvml
        except Exception:
            self.nvml = None
        self.profiles = [GPU_PROFILES[p] for p in profiles] if self.nvml is None else []

    def inventory(self) -> list[dict]:
        if self.nvml is not None:
            return [{k: g[k] for k in ("index", "name", "memory_total_mb")} for g in self.sample(0, 1)]
        return [
            {"index": i, "name": p.name, "memory_total_mb": p.memory_gb * 1024} for i, p in enumerate(self.profiles)
        ]

    def sample(self, in_flight: int, slots: int, held_mb: dict[int, float] | None = None) -> list[dict]:
        """Per-GPU figures now. A simulated GPU's memory used is what the replicas loaded on it hold
        (``held_mb``, per GPU index: see ``Replicas.memory_held_mb``), so the fleet's figures agree
        with what the platform placed; utilisation and temperature follow the requests in flight."""
        if self.nvml is not None:
            return self._nvml_sample()
        held_mb = held_mb or {}
        load = min(in_flight / max(slots, 1), 1.0)
        gpus = []
        for index, profile in enumerate(self.profiles):
            total = profile.memory_gb * 1024
            utilization = round(
                min(100.0, load * 100 * random.uniform(0.85, 1.0)) if in_flight else random.uniform(0, 2)
            )
            used = round(min(held_mb.get(index, 0), total))
            gpus.append(
                {
                    "index": index,
                    "name": profile.name,
                    "utilization": utilization,
                    "memory_used_mb": used,
                    "memory_total_mb": total,
                    "temperature_c": round(33 + 0.5 * utilization + random.uniform(-1, 1)),
                    "simulated": True,
                }
            )
        return gpus

    def _nvml_sample(self) -> list[dict]:
        nvml = self.nvml
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            gpus.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "utilization": nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                    "memory_used_mb": memory.used // 2**20,
                    "memory_total_mb": memory.total // 2**20,
                    "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
                    "simulated": False,
                }
            )
        return gpus
