"""The machine a run or benchmark ran on, as RESULTS.md and `fastft ablate` name it.

Cloud VMs of one name differ underneath: two "AMD EPYC" VMs were different processor
generations, with different speeds and even different training trajectories (convolution
kernels are chosen per instruction set). So a CPU is named by its family and model numbers
and the vector units that decide fp32 and bf16 speed.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def cpu(cpuinfo: str | None = None) -> str:
    """e.g. 'AMD EPYC (family 26, model 2), 2 cores, AVX-512 with BF16'."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first processor's block: every core of a VM is alike
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or os.uname().machine
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    flags = set(fields.get("flags", "").split())
    if "avx512f" in flags:
        vector = "AVX-512 with BF16" if "avx512_bf16" in flags else "AVX-512"
    else:
        vector = "AVX2" if "avx2" in flags else "no AVX2"
    if flags & {"amx_bf16", "amx_tile"}:
        vector += ", AMX"
    return f"{name}, {os.cpu_count()} cores, {vector}"


def describe() -> str:
    """The GPU's name when there is one (the benchmarks then run on it), else the CPU's."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else cpu()
