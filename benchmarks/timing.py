"""Interleaved timing: every candidate runs once per round, in turn, so that machine noise hits all alike."""

import json
import platform
import statistics
import time
from typing import Callable, Dict

import torch


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    candidates: Dict[str, Callable[[], None]], device: torch.device, rounds: int = 7, warmup: int = 2
) -> Dict[str, float]:
    """Median milliseconds per call of each candidate, over `rounds` interleaved rounds after `warmup`."""
    samples = {name: [] for name in candidates}
    for round_index in range(warmup + rounds):
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_index >= warmup:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def meta(device: torch.device, dtype: torch.dtype, rounds: int) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "rounds": rounds,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_table(rows, columns):
    """rows: list of dicts; columns: list of (key, header, format)."""
    headers = [header for _, header, _ in columns]
    cells = [[fmt.format(row[key]) for key, _, fmt in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for line in cells:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)))


def write_json(path: str, payload: dict):
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")
