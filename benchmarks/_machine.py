"""What a benchmark ran on: date, CPU (cores, threads, whether it has bf16 instructions), GPU, library versions
(one line each)."""

from __future__ import annotations

import datetime
import os
import platform


def describe() -> dict[str, str]:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from synthcl.training.build import bf16_instructions

    found = bf16_instructions()
    bf16 = (f"native bf16 ({', '.join(found)})" if found else "bf16 emulated" if found is not None
            else "bf16 support unknown")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "n/a"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {bf16}",
        "gpu": gpu,
        "software": f"torch {torch.__version__}, Python {platform.python_version()}",
        "load average (1 min, at start)": load,
    }


def markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {key.capitalize()}: {value}" for key, value in info.items())
