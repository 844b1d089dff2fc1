"""The engines that run a batch job's items: ``local`` (this process, a reader thread ahead of
the model) and ``ray`` (Ray Data, one model per actor, on a local or an existing cluster).

Both hand every finished input to ``deliver(item, processed)``, in the driver process, which
writes its output and its summary line: the outputs of the two engines are the same files.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from sam2_fast.batch.inputs import Item
from sam2_fast.batch.tasks import BatchConfig, Processed, Runner, make_runner, process

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
Deliver = Callable[[Item, Processed], None]

_DONE = object()


def run_local(
    config: BatchConfig, items: Sequence[Item], fmt: str, deliver: Deliver, progress: bool = True,
    prefetch: int = 2, runner: Optional[Runner] = None,
) -> None:
    """Run ``items`` in this process: the model is loaded once, a reader thread decodes the
    next ``prefetch`` inputs while the model works, a tqdm bar shows items/s and the ETA.
    ``KeyboardInterrupt`` stops after the current input (whose output is then not written)."""
    from tqdm import tqdm

    runner = runner or make_runner(config)
    ahead: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def read_ahead() -> None:
        for item in items:
            if stop.is_set():
                return
            start = time.perf_counter()
            try:
                data: Any = runner.read(item)
            except Exception as exc:  # recorded as this input's failure by process()
                data = exc
            entry = (item, data, time.perf_counter() - start)
            while not stop.is_set():
                try:
                    ahead.put(entry, timeout=0.1)
                    break
                except queue.Full:
                    continue
        ahead.put(_DONE)

    reader = threading.Thread(target=read_ahead, name="sam2-fast-batch-reader", daemon=True)
    reader.start()
    try:
        with tqdm(total=len(items), desc=f"batch {config.task}", unit="item", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar:
            while True:
                entry = ahead.get()
                if entry is _DONE:
                    break
                item, data, read_seconds = entry
                deliver(item, process(runner, item, fmt, data, read_seconds))
                bar.update()
    finally:
        stop.set()
        reader.join(timeout=5)


# ------------------------------------------------------------------------------ Ray
class RayWorker:
    """A Ray Data actor: loads the model once (``__init__``), then runs one input per call."""

    def __init__(self, config: Dict[str, Any], fmt: str, threads: Optional[int] = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.fmt = fmt
        self.runner = make_runner(BatchConfig.from_json(config))

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        out: Dict[str, List[Any]] = {k: [] for k in ("item", "status", "error", "payload", "masks", "seconds")}
        for text in batch["item"]:
            item = Item.from_json(json.loads(str(text)))
            result = process(self.runner, item, self.fmt)
            out["item"].append(str(text))
            out["status"].append(result.status)
            out["error"].append(result.error or "")
            out["payload"].append(result.payload or "")
            out["masks"].append(-1 if result.masks is None else result.masks)
            out["seconds"].append(result.seconds)
        return out


def init_ray(address: Optional[str] = None, **kwargs: Any):
    """``ray.init`` for a batch job: on a new local cluster (no ``address``) or an existing one.

    The job gets an empty ``working_dir``. Without one, Ray puts the driver's current folder on
    every worker's ``sys.path``, and a folder holding a ``sam2_fast`` checkout (a source tree
    is not an installed package) would shadow the installed package in the workers."""
    import tempfile

    import ray

    empty = tempfile.mkdtemp(prefix="sam2-fast-ray-")
    kwargs.setdefault("include_dashboard", False)
    return ray.init(address=address, runtime_env={"working_dir": empty}, **kwargs)


def ray_cpus_per_worker(num_workers: int, address: Optional[str]) -> int:
    """The CPUs an actor asks for when ``--num-cpus`` is not given: this machine's CPUs shared
    by the workers on a local cluster; 1 on an existing cluster (whose nodes may differ)."""
    if address:
        return 1
    return max(1, (os.cpu_count() or 1) // num_workers)


def _check_fits(ray, num_cpus: float, num_gpus: float) -> None:
    """Refuse actors that no node of the cluster can hold (Ray would wait for them forever)."""
    from sam2_fast.batch.inputs import BatchUsageError

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return
    cpus = max(n.get("CPU", 0) for n in nodes)
    gpus = max(n.get("GPU", 0) for n in nodes)
    if num_gpus > gpus:
        raise BatchUsageError(
            f"num_gpus: each Ray actor asks for {num_gpus:g} GPU(s) but the largest node of the cluster has "
            f"{gpus:g}; use --device cpu, or join a cluster with GPUs (--ray-address)"
        )
    if num_cpus > cpus:
        raise BatchUsageError(
            f"num_cpus: each Ray actor asks for {num_cpus:g} CPU(s) but the largest node of the cluster has {cpus:g}"
        )


def run_ray(
    config: BatchConfig, items: Sequence[Item], fmt: str, deliver: Deliver, *, num_workers: int = 1,
    num_cpus: Optional[float] = None, num_gpus: Optional[float] = None, address: Optional[str] = None,
    progress: bool = True,
) -> None:
    """Run ``items`` on Ray Data: ``from_items`` over the input list, ``map_batches`` with
    :class:`RayWorker` on an actor pool of ``num_workers`` actors (each loads the model once;
    ``num_gpus`` per actor, 1 when the device is CUDA), results streamed back to this process,
    which writes them. ``address`` joins an existing cluster (``ray start --head``); without
    it a local cluster is started, and stopped at the end."""
    try:
        import ray
        import ray.data
    except ImportError:
        from sam2_fast.batch.inputs import BatchUsageError

        raise BatchUsageError("engine='ray' needs Ray Data: pip install 'sam2-fast[ray]'") from None

    if num_gpus is None:
        num_gpus = 1 if (config.device or "").startswith("cuda") else 0
    if num_cpus is None:
        num_cpus = ray_cpus_per_worker(num_workers, address)
    started = False
    if not ray.is_initialized():
        init_ray(address)
        started = True
    try:
        _check_fits(ray, num_cpus, num_gpus)
        ray.data.DataContext.get_current().enable_progress_bars = progress
        rows = [{"item": json.dumps(item.to_json())} for item in items]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 10_000)))
        results = dataset.map_batches(
            RayWorker,
            fn_constructor_kwargs={"config": config.to_json(), "fmt": fmt, "threads": max(1, int(num_cpus))},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            batch_format="numpy",
        )
        for row in results.iter_rows():
            item = Item.from_json(json.loads(str(row["item"])))
            masks = int(row["masks"])
            deliver(item, Processed(
                str(row["status"]), error=str(row["error"]) or None, payload=str(row["payload"]) or None,
                masks=None if masks < 0 else masks, seconds=float(row["seconds"]),
            ))
    finally:
        if started:
            ray.shutdown()
