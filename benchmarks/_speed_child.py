"""A fresh process for one measurement of benchmarks/speed.py: peak memory of one configuration (S5),
or a timed run of one or more processes (S4). Prints one JSON line on stdout.

    python benchmarks/_speed_child.py '{"task": "memory", "kind": "synthcl", "recipe": "quickstart", ...}'
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _mib(kib: int) -> float:
    return kib / 1024  # ru_maxrss is in KiB on Linux


def memory(spec: dict) -> dict:
    """Peak resident memory after setup and after ``steps`` training steps of one configuration."""
    import torch
    from _speed_steps import Data, LightlyStep, SynthclStep, diffusion_status, recipe

    if spec.get("needs_diffusion"):
        ok, note = diffusion_status()
        if not ok:
            return {"skipped": note}
    r = recipe(spec["recipe"], spec.get("overrides", []), spec.get("extra"))
    data = Data(r)
    if spec["kind"] == "lightly":
        runner = LightlyStep(r, data)
    else:
        runner = SynthclStep(r, data, autocast=torch.bfloat16 if spec.get("bf16") else None)
    setup = _own_peak_mib()
    _trim()  # setup's freed temporaries back to the system, so "before the steps" is what is live
    # Forked helpers of the imports also count as children: only a rise over this is a DataLoader worker.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    reset = _reset_peak()  # from here on VmHWM is the peak of the training steps alone
    current = _status_kib("VmRSS")
    start = time.perf_counter()
    runner.round(spec.get("warmup", 1), spec["steps"])
    seconds = time.perf_counter() - start
    hwm = _status_kib("VmHWM") if reset else None
    steps_peak = None if hwm is None else _mib(hwm)
    peak = max(setup, _own_peak_mib())  # the reset cleared the setup phase's mark: the larger of the two
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    workers = _mib(children) if children > children_before else None
    return {"rss_setup_mib": setup, "rss_before_steps_mib": None if current is None else _mib(current),
            "rss_steps_peak_mib": steps_peak, "rss_peak_mib": peak, "workers_peak_mib": workers, "seconds": seconds}


def _trim() -> None:
    """Collect garbage and return the C allocator's free memory to the system (glibc's malloc_trim;
    nothing elsewhere). Without it, per-thread allocator arenas left by setup made the RSS before the
    steps vary with the thread count."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _own_peak_mib() -> float:
    """Peak resident memory of this process image: the kernel's VmHWM. Not ``ru_maxrss``: Linux carries
    that across fork and exec, so a child started by a large parent reports the parent's size."""
    hwm = _status_kib("VmHWM")
    return _mib(hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _ddp_worker(rank: int, spec: dict, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from _speed_steps import Data, SynthclStep, recipe

    from synthcl.io import atomic_write_text

    world = spec["world"]
    torch.set_num_threads(spec["threads"])
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    r = recipe(spec["recipe"], spec.get("overrides", []))
    data = Data(r)
    runner = SynthclStep(r, data, rank=rank, world=world, ddp=world > 1)
    for _ in range(spec["warmup"]):
        runner.step()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        runner.step()
    if world > 1:
        dist.barrier()
    seconds = time.perf_counter() - start
    # Every rank reports its own peak: the memory of a configuration is the sum over its processes.
    peak = _own_peak_mib()
    atomic_write_text(f"{out}.{rank}", json.dumps({"seconds": seconds, "rss_peak_mib": peak}))
    if world > 1:
        dist.destroy_process_group()


def processes(spec: dict) -> dict:
    """Seconds for ``steps`` steps of a global batch split over ``world`` gloo processes of ``threads``, and
    the peak resident memory of all the processes together (each process's VmHWM, summed)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        if spec["world"] == 1:
            _ddp_worker(0, spec, port, out)
        else:
            mp.spawn(_ddp_worker, args=(spec, port, out), nprocs=spec["world"], join=True)
        ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(spec["world"])]
        return {"seconds": ranks[0]["seconds"], "rss_peak_mib": sum(r["rss_peak_mib"] for r in ranks),
                "rss_peak_per_process_mib": [r["rss_peak_mib"] for r in ranks]}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = {"memory": memory, "processes": processes}[spec["task"]](spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
