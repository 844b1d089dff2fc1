"""What this installation of sam2-fast has: versions, the compiled extension, for every op
which backend runs a typical input and why the others refuse or lost, and the backend choices
measured on this machine (``sam2-fast info``).

Nothing here initialises CUDA: the CUDA verdicts are computed on fake tensors (no memory, no
context), and the GPU itself is only queried when asked with ``query_devices=True``.
"""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from sam2_fast import __version__

__all__ = ["collect_info", "format_info"]


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _describe(args: tuple[Any, ...]) -> str:
    import torch

    return ", ".join(
        f"{str(a.dtype).removeprefix('torch.')}{list(a.shape)}"
        if isinstance(a, torch.Tensor)
        else repr(a)
        for a in args
    )


def _op_verdicts(op: Any, device: str) -> dict[str, Any]:
    """The example input of ``op`` on ``device``, each backend's verdict and the selected one."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from sam2_fast.ops import BackendError

    if device == "cpu":
        args = op.example(device)
    else:
        with FakeTensorMode():  # a CUDA tensor without touching the GPU
            args = op.example(device)
    try:
        selected, error = op.planned(*args).name, None
    except BackendError as exc:
        selected, error = None, str(exc)
    return {
        "input": _describe(args),
        "verdicts": op.explain(*args),
        "selected": selected,
        "error": error,
    }


def collect_info(query_devices: bool = False) -> dict[str, Any]:
    """Versions, extension status and per-op backend verdicts, as plain data.

    Args:
        query_devices: also report ``torch.cuda.is_available()`` and the device count (this
            loads the CUDA driver, but creates no context).
    """
    info: dict[str, Any] = {
        "sam2_fast": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "triton": _package_version("triton"),
    }
    try:
        import torch
    except Exception as exc:  # a broken torch raises more than ImportError
        info["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
        return info
    info["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda}
    if query_devices:
        available = torch.cuda.is_available()
        info["torch"]["cuda_available"] = available
        info["torch"]["cuda_devices"] = torch.cuda.device_count() if available else 0

    from sam2_fast._ext import load_extension
    from sam2_fast.ops import list_ops

    _register_model_ops()

    ext, reason = load_extension()
    info["extension"] = {
        "loaded": ext is not None,
        "reason": reason,
        "build_info": ext.build_info() if ext is not None else None,
    }
    info["ops"] = {
        op.name: {device: _op_verdicts(op, device) for device in ("cpu", "cuda")}
        for op in list_ops()
        if op.example is not None
    }
    info["tuning"] = collect_tuning()
    return info


def _register_model_ops() -> None:
    """Import the modules whose model-level choices are ops (their ops register on import)."""
    for module in ("sam2_fast.modeling.common", "sam2_fast.modeling.hiera",
                   "sam2_fast.modeling.transformer", "sam2_fast.modeling.shared_image_decoder",
                   "sam2_fast.predictors.image_predictor"):
        importlib.import_module(module)


def collect_tuning() -> dict[str, Any]:
    """The tuning mode, the cache file, this CPU's fingerprint and the verdicts measured for it
    (``op | shape class`` -> winner, each candidate's seconds, notes)."""
    from sam2_fast.ops import _tuning

    machine, fingerprint = _tuning.machine_id("cpu")
    verdicts = _tuning.cache.verdicts(machine)
    return {
        "mode": _tuning.tuning_mode(),
        "cache": str(_tuning.cache.path),
        "machine": machine,
        "fingerprint": fingerprint,
        "verdicts": {key: {"winner": v.winner, "seconds": v.seconds, "notes": v.notes}
                     for key, v in sorted(verdicts.items())},
        "other_machines": len(_tuning.cache.machines()) - (1 if verdicts else 0),
    }


def format_tuning(tuning: dict[str, Any]) -> list[str]:
    fp = tuning["fingerprint"]
    flags = " ".join(fp.get("flags", [])) or "none of note"
    lines = [
        f"tuning     {tuning['mode']} (SAM2_FAST_TUNE); cache {tuning['cache']}",
        f"  this CPU   {fp.get('cpu')}, flags {flags}, {fp.get('threads')} torch threads"
        + (f", ONEDNN_MAX_CPU_ISA={fp['onednn_max_cpu_isa']}" if "onednn_max_cpu_isa" in fp else ""),
    ]
    if not tuning["verdicts"]:
        lines.append("  no measured choices for this CPU yet (`sam2-fast tune` measures them ahead of time)")
    else:
        lines.append(f"  measured choices ({len(tuning['verdicts'])}; * = fastest):")
    for key, verdict in tuning["verdicts"].items():
        lines.append(f"    {key}")
        for name, seconds in sorted(verdict["seconds"].items(), key=lambda item: item[1]):
            mark = "*" if name == verdict["winner"] else " "
            note = verdict["notes"].get(name)
            lines.append(f"      {mark} {name:<14} {seconds * 1e3:9.2f} ms" + (f"  ({note})" if note else ""))
        for name, note in verdict["notes"].items():
            if name not in verdict["seconds"]:
                lines.append(f"      - {name:<14} {note}")
    if tuning["other_machines"] > 0:
        lines.append(f"  (+ verdicts of {tuning['other_machines']} other machine fingerprint(s) in the cache)")
    return lines


def _format_extension(extension: dict[str, Any], torch_info: dict[str, Any]) -> list[str]:
    if not extension["loaded"]:
        return [f"extension  sam2_fast._C {extension['reason']}"]
    build = extension["build_info"]
    cuda = (
        f"yes (CUDA {build['cuda_version']}, archs {build['cuda_archs']})"
        if build["cuda"]
        else f"no ({build['cuda_skip_reason']})"
    )
    if build["cuda"] and torch_info.get("cuda_available") is False:
        cuda += ": built, not runnable here (no CUDA device)"
    threads = (
        "torch's intra-op threads (OpenMP)"
        if build.get("openmp")
        else "one thread (built without OpenMP)"
    )
    return [
        "extension  sam2_fast._C loaded",
        f"  built against torch {build['torch_version']}, {build['compiler']}, "
        f"{build['build_type']} [{build['cxx_flags']}]",
        f"  C++ ops    on {threads}",
        f"  CUDA ops   {cuda}",
    ]


def _format_ops(ops: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["ops        (* = runs this input, ok = could run it, - = refuses or lost)"]
    for name, per_device in ops.items():
        lines.append(f"  {name}")
        for device, result in per_device.items():
            lines.append(f"    {device}: {result['input']}")
            for backend, reason in result["verdicts"].items():
                mark = "*" if backend == result["selected"] else "ok" if reason is None else "-"
                lines.append(f"      {mark:>2} {backend:<10} {reason or ''}".rstrip())
            if result["error"] is not None:
                lines.append(f"      error: {result['error']}")
    return lines


def format_info(info: dict[str, Any] | None = None) -> str:
    """:func:`collect_info` (or ``info``) as human-readable text."""
    info = collect_info() if info is None else info
    torch_info = info["torch"]
    if "error" in torch_info:
        torch_line = f"not importable ({torch_info['error']})"
    else:
        torch_line = f"{torch_info['version']} (CUDA build: {torch_info['cuda'] or 'no'})"
        if "cuda_available" in torch_info:
            torch_line += f", {torch_info['cuda_devices']} CUDA device(s) available"
    lines = [
        f"sam2-fast  {info['sam2_fast']}",
        f"python     {info['python']} on {info['platform']}",
        f"torch      {torch_line}",
        f"triton     {info['triton'] or 'not installed'}",
    ]
    if "extension" in info:
        lines += _format_extension(info["extension"], torch_info)
    if "ops" in info:
        lines += _format_ops(info["ops"])
    if "tuning" in info:
        lines += format_tuning(info["tuning"])
    return "\n".join(lines)
