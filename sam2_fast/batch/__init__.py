"""Dataset-scale jobs: automatic masks, prompted masks or tracks for every image or video of
folders, globs and manifests, in this process or on a Ray cluster; resumable, every failure
recorded, no output ever half-written. ``sam2-fast batch`` is this module on the command line.

    from sam2_fast import batch

    result = batch.run("amg", ["photos/"], "masks/", points_per_side=16)
    result = batch.run("segment", ["boxes.jsonl"], "out/", multimask=True)
    result = batch.run("track", ["clips/*.mp4"], "tracks/", prompts=[batch.Prompt(box=(10, 20, 200, 240))])
    result = batch.run("amg", ["photos/"], "masks/", engine="ray", num_workers=4, ray_address="auto")
    print(result.ok, result.failed, result.skipped, result.summary_path)

Inputs and output names: :mod:`sam2_fast.batch.inputs`. Outputs (``DIR/<key>.json`` or
Parquet shards) and ``DIR/_summary.jsonl``: :mod:`sam2_fast.batch.outputs`. A rerun with the
same ``out`` skips the inputs already done (``overwrite=True`` redoes them) and retries the
failed ones.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from sam2_fast.batch.inputs import TASKS, BatchUsageError, Item, Prompt, resolve_inputs
from sam2_fast.batch.outputs import FORMATS, SUMMARY, Summary, make_sink
from sam2_fast.batch.tasks import BatchConfig, Processed

__all__ = ["TASKS", "BatchConfig", "BatchResult", "BatchUsageError", "Item", "Prompt", "plan", "run"]

ENGINES = ("local", "ray")


@dataclass
class BatchResult:
    """What a job did: counts of this run's inputs by status, the failed ones (their summary
    lines), whether Ctrl-C stopped it, and where the summary is."""

    out: Path
    total: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    failures: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def summary_path(self) -> Path:
        return self.out / SUMMARY

    @property
    def exit_code(self) -> int:
        """0 when every input is done, 1 when some failed, 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


def _check_model(config: BatchConfig) -> None:
    """Refuse an unknown ``model`` before Ray actors try (and retry) to load it: a zoo name, a
    Hub id (``owner/name``) or an existing checkpoint path."""
    from sam2_fast.errors import UnknownModelError
    from sam2_fast.zoo import get_model_info

    if Path(config.model).exists():
        return
    try:
        get_model_info(config.model)
    except UnknownModelError:
        if config.random_weights or config.model.count("/") != 1:
            raise


def plan(task: str, inputs: Sequence[Union[str, Path]], out: Union[str, Path]) -> List[Item]:
    """The inputs a job over ``inputs`` would run, with their output keys (nothing runs)."""
    out_path = Path(out)
    return resolve_inputs(inputs, task, exclude=out_path if out_path.exists() else None)


def run(
    task: str,
    inputs: Sequence[Union[str, Path]],
    out: Union[str, Path],
    *,
    engine: str = "local",
    format: str = "json",
    overwrite: bool = False,
    progress: bool = True,
    num_workers: int = 1,
    num_cpus: Optional[float] = None,
    num_gpus: Optional[float] = None,
    ray_address: Optional[str] = None,
    shard_size: int = 256,
    **options: Any,
) -> BatchResult:
    """Run ``task`` (``"amg"``, ``"segment"``, ``"track"``) over ``inputs`` into ``out``.

    ``options`` are :class:`BatchConfig`'s fields: ``model``, ``device``, ``precision``,
    ``image_size``, ``random_weights``; for amg ``points_per_side``, ``points_per_batch``,
    ``pred_iou_thresh``, ``stability_score_thresh``, ``crop_n_layers``,
    ``min_mask_region_area``; for segment ``multimask`` and default ``prompts`` (a list of
    :class:`Prompt`); for track ``prompts``, ``reverse``, ``max_frames``.

    ``engine="ray"`` runs on Ray Data with ``num_workers`` actors of ``num_cpus`` CPUs and
    ``num_gpus`` GPUs each (defaults: this machine's CPUs shared by the workers, or 1 on an
    existing cluster; 1 GPU when ``device`` is CUDA); ``ray_address`` joins an existing
    cluster (``"auto"``: the one ``ray start`` started here). ``format="parquet"`` writes
    Parquet shards of ``shard_size`` inputs instead of one JSON per input.

    Raises :class:`BatchUsageError` (a ``ValueError``) for unusable arguments before anything
    runs. Inputs that fail are recorded and the job goes on; Ctrl-C stops after the current
    input(s) with ``interrupted=True`` and everything finished so far written.
    """
    if engine not in ENGINES:
        raise BatchUsageError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if format not in FORMATS:
        raise BatchUsageError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    for name, value in (("num_workers", num_workers), ("shard_size", shard_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BatchUsageError(f"{name} must be an integer >= 1, got {value!r}")
    known = {f.name for f in dataclasses.fields(BatchConfig)} - {"task"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BatchUsageError(f"unknown option(s) {', '.join(unknown)}; the options are: {', '.join(sorted(known))}")
    if "prompts" in options:
        options["prompts"] = tuple(options["prompts"] or ())
    config = BatchConfig(task=task, **options)
    if config.random_weights and Path(config.model).exists():
        raise BatchUsageError(
            "random_weights builds the variant named by model with random weights: give a zoo "
            f"name or Hub id, not the file {config.model!r}"
        )
    _check_model(config)
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise BatchUsageError(f"out: {str(out_path)!r} exists and is not a folder")
    items = plan(task, inputs, out_path)
    if task != "amg" and not config.prompts:
        missing = [item.path for item in items if not item.prompts]
        if missing:
            raise BatchUsageError(
                f"{len(missing)} input(s) have no prompt (first: {missing[0]!r}): give default prompts "
                "(--point / --box) or a manifest with points / box columns for every input"
            )
    out_path.mkdir(parents=True, exist_ok=True)
    if config.random_weights:
        import sys

        from sam2_fast.build_sam import random_weights_warning

        print(random_weights_warning(config.model), file=sys.stderr)

    for stale in out_path.rglob(".*.tmp"):  # left by a killed job (see sam2_fast.utils.files)
        stale.unlink(missing_ok=True)
    sink = make_sink(format, out_path, task, shard_size)
    done = set() if overwrite else sink.done(items)
    runner = None
    if engine == "local" and len(done) < len(items):
        # the model loads before the summary is started: a model that cannot load leaves the
        # previous run's summary as it was
        from sam2_fast.batch.tasks import make_runner

        runner = make_runner(config)
    summary = Summary(out_path)
    result = BatchResult(out_path, total=len(items))
    start = time.perf_counter()
    try:
        for item in items:
            if item.key in done:
                summary.add(item, "skipped", output=None)
        todo = [item for item in items if item.key not in done]

        def deliver(item: Item, processed: Processed) -> None:
            if processed.status != "ok":
                summary.add(item, "failed", error=processed.error, seconds=processed.seconds)
                return

            def written(item: Item, output: str) -> None:
                summary.add(item, "ok", seconds=processed.seconds, masks=processed.masks, output=output)

            sink.write(item, processed.payload, written)

        try:
            if todo and engine == "local":
                from sam2_fast.batch.engines import run_local

                run_local(config, todo, format, deliver, progress=progress, runner=runner)
            elif todo:
                from sam2_fast.batch.engines import run_ray

                run_ray(config, todo, format, deliver, num_workers=num_workers, num_cpus=num_cpus,
                        num_gpus=num_gpus, address=ray_address, progress=progress)
        except KeyboardInterrupt:
            result.interrupted = True
        sink.flush()
    finally:
        summary.close()
    result.ok, result.failed, result.skipped = (summary.counts[s] for s in ("ok", "failed", "skipped"))
    result.failures = summary.failures
    result.seconds = time.perf_counter() - start
    return result
