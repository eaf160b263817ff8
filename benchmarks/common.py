"""What every benchmark records beside its table: the machine, torch's version, and the JSON file."""

from __future__ import annotations

import json
import platform
from typing import Any

import torch


def machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where the figures were measured: platform, processor, device (and GPU), torch threads."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"platform": platform.platform(), "processor": platform.processor(), "device": str(device),
            "gpu": gpu, "threads": torch.get_num_threads()}


def write_result(path: str | None, benchmark: str, settings: dict[str, Any], rows: list[dict[str, Any]],
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """The benchmark's JSON record (machine, torch version, settings, results), written to ``path`` if given."""
    result = {"benchmark": benchmark, "machine": machine(device), "torch": torch.__version__, "settings": settings,
              "results": rows}
    if path:
        with open(path, "w") as handle:
            json.dump(result, handle, indent=2)
    return result
