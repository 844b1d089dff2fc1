"""connected_components and fill_holes_and_sprinkles: every backend that runs here against an
independent oracle (scipy.ndimage.label, 8- and 4-connectivity), plus bad input and the
dispatcher.

Labels and areas are integers: every comparison is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

import numpy as np
import pytest
import torch

from sam2_fast.ops import (
    BackendError,
    Op,
    connected_components,
    fill_holes_and_sprinkles,
    get_op,
    list_ops,
    use_backend,
)

ndimage = pytest.importorskip("scipy.ndimage")

OP = "connected_components"
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
STRUCTURES = {8: EIGHT_CONNECTED, 4: ndimage.generate_binary_structure(2, 1)}  # 4: the cross


def device_of(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def run_backend(
    backend: str, mask: torch.Tensor, connectivity: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backend`` (inputs moved to the GPU for ``cuda``); results on the CPU."""
    mask = mask.to(device_of(backend))
    with use_backend(backend, op=OP):
        assert get_op(OP).select(mask).name == backend
        labels, areas = connected_components(mask, connectivity)
    assert labels.device == mask.device and areas.device == mask.device
    return labels.cpu(), areas.cpu()


# ---------------------------------------------------------------------------------------------
# oracle


def oracle_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """scipy labels renumbered 1..K in raster order of first pixel, and areas; [N, 1, H, W]."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    areas = np.zeros(mask.shape, dtype=np.int32)
    for i, image in enumerate(mask[:, 0] != 0):
        scipy_labels, _ = ndimage.label(image, structure=STRUCTURES[connectivity])
        flat = scipy_labels.ravel()
        found, first = np.unique(flat, return_index=True)
        found, first = found[found > 0], first[found > 0]
        renumber = np.zeros(flat.max() + 1, dtype=np.int32)
        renumber[found[np.argsort(first)]] = np.arange(1, len(found) + 1)
        counts = np.bincount(flat)
        counts[0] = 0
        labels[i, 0] = renumber[scipy_labels]
        areas[i, 0] = counts[scipy_labels]
    return labels, areas


def assert_matches_oracle(backend: str, mask: torch.Tensor, connectivity: int = 8) -> None:
    labels, areas = run_backend(backend, mask, connectivity)
    expected_labels, expected_areas = oracle_components(mask.numpy(), connectivity)
    assert labels.dtype == torch.int32 and areas.dtype == torch.int32
    assert labels.shape == mask.shape and areas.shape == mask.shape
    np.testing.assert_array_equal(labels.numpy(), expected_labels)
    np.testing.assert_array_equal(areas.numpy(), expected_areas)


# ---------------------------------------------------------------------------------------------
# masks


def snake(h: int, w: int) -> np.ndarray:
    """One long boustrophedon path: full rows joined at alternating ends."""
    out = np.zeros((h, w), dtype=bool)
    out[::2] = True
    for row in range(1, h, 2):
        out[row, w - 1 if row % 4 == 1 else 0] = True
    return out


def spiral(n: int) -> np.ndarray:
    """One square spiral path from the border to the centre, walls one pixel apart."""
    out = np.zeros((n, n), dtype=bool)
    y, x, dy, dx = 0, 0, 0, 1
    out[y, x] = True
    while True:
        moved = False
        # advance while the cell two steps ahead is inside and free
        while 0 <= y + 2 * dy < n and 0 <= x + 2 * dx < n and not out[y + 2 * dy, x + 2 * dx]:
            y, x = y + dy, x + dx
            out[y, x] = True
            moved = True
        if not moved:
            break
        dy, dx = dx, -dy
    return out


def checkerboard(h: int, w: int) -> np.ndarray:
    return np.indices((h, w)).sum(axis=0) % 2 == 0


def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)[:, None].copy())


SIZES = [(1, 1), (1, 37), (37, 1), (7, 13), (64, 64), (256, 256)]
DENSITIES = [0.1, 0.35, 0.5, 0.65, 0.9]


# ---------------------------------------------------------------------------------------------
# connected_components vs the oracle


@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_random_masks_match_scipy(
    backend: str, size: tuple[int, int], density: float, connectivity: int
) -> None:
    generator = torch.Generator().manual_seed(hash((size, density)) % 2**31)
    mask = torch.rand(3, 1, *size, generator=generator) < density
    assert_matches_oracle(backend, mask, connectivity)


@pytest.mark.parametrize(
    "name, image",
    [
        ("empty", np.zeros((19, 23), dtype=bool)),
        ("full", np.ones((19, 23), dtype=bool)),
        ("checkerboard", checkerboard(19, 23)),
        ("checkerboard_256", checkerboard(256, 256)),
        ("anti_diagonal", np.fliplr(np.eye(31, dtype=bool))),
        ("snake", snake(64, 64)),
        ("snake_256", snake(256, 256)),
        ("snake_reversed", snake(256, 256)[::-1, ::-1]),
        ("snake_transposed", snake(256, 256).T),
        ("spiral", spiral(64)),
        ("spiral_256", spiral(256)),
        ("spiral_flipped", np.fliplr(spiral(101))),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
@pytest.mark.parametrize("connectivity", [8, 4])
def test_structured_masks_match_scipy(
    backend: str, name: str, image: np.ndarray, connectivity: int
) -> None:
    assert_matches_oracle(backend, as_batch(image), connectivity)


def test_connectivity_4_splits_diagonal_touches(backend: str) -> None:
    """A checkerboard is one 8-connected component and one component per pixel 4-connected;
    the default is 8."""
    mask = as_batch(checkerboard(5, 6))
    labels_8, areas_8 = run_backend(backend, mask, 8)
    labels_4, areas_4 = run_backend(backend, mask, 4)
    assert labels_8.max() == 1 and areas_8.max() == 15
    assert labels_4.max() == 15 and areas_4.max() == 1
    default = run_backend(backend, mask)
    assert torch.equal(default[0], labels_8) and torch.equal(default[1], areas_8)


def test_long_components_are_one_component() -> None:
    for image in (snake(256, 256), spiral(256)):
        _, count = ndimage.label(image, structure=EIGHT_CONNECTED)
        assert count == 1


def test_batch_images_are_independent(backend: str) -> None:
    images = [
        np.zeros((32, 40), bool),
        np.ones((32, 40), bool),
        checkerboard(32, 40),
        snake(32, 40),
        np.random.default_rng(0).random((32, 40)) < 0.5,
    ]
    labels, areas = run_backend(backend, as_batch(*images))
    for i, image in enumerate(images):
        single_labels, single_areas = run_backend(backend, as_batch(image))
        assert torch.equal(labels[i], single_labels[0])
        assert torch.equal(areas[i], single_areas[0])
    assert_matches_oracle(backend, as_batch(*images))


def test_uint8_nonzero_is_foreground(backend: str) -> None:
    values = torch.tensor([[0, 1, 0, 255], [7, 0, 0, 128], [0, 0, 3, 0]], dtype=torch.uint8)
    mask = values[None, None]
    labels, areas = run_backend(backend, mask)
    bool_labels, bool_areas = run_backend(backend, mask != 0)
    assert torch.equal(labels, bool_labels) and torch.equal(areas, bool_areas)
    assert_matches_oracle(backend, mask)


def test_non_contiguous_input(backend: str) -> None:
    base = torch.rand(2, 1, 48, 40, generator=torch.Generator().manual_seed(3)) < 0.5
    mask = base.transpose(2, 3)
    assert not mask.is_contiguous()
    labels, areas = run_backend(backend, mask)
    expected_labels, expected_areas = run_backend(backend, mask.contiguous())
    assert torch.equal(labels, expected_labels) and torch.equal(areas, expected_areas)


@pytest.mark.parametrize("shape", [(0, 1, 8, 8), (2, 1, 0, 8), (2, 1, 8, 0)])
def test_empty_tensors(backend: str, shape: tuple[int, ...]) -> None:
    labels, areas = run_backend(backend, torch.zeros(shape, dtype=torch.bool))
    assert labels.shape == shape and areas.shape == shape
    assert labels.dtype == torch.int32 and areas.dtype == torch.int32


@pytest.mark.parametrize("connectivity", [8, 4])
def test_cpp_equals_reference(extension: ModuleType, connectivity: int) -> None:
    mask = torch.rand(8, 1, 96, 80, generator=torch.Generator().manual_seed(7)) < 0.45
    cpp = run_backend("cpp", mask, connectivity)
    reference = run_backend("reference", mask, connectivity)
    assert torch.equal(cpp[0], reference[0]) and torch.equal(cpp[1], reference[1])


def test_compiled_op_passes_opcheck(extension: ModuleType) -> None:
    """Schema, fake kernel (what torch.compile traces with) and AOT dispatch of the C++ op."""
    if not hasattr(torch.library, "opcheck"):
        pytest.skip(f"torch.library.opcheck needs torch >= 2.4, got {torch.__version__}")
    mask = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    torch.library.opcheck(torch.ops.sam2_fast.connected_components.default, (mask,))
    torch.library.opcheck(torch.ops.sam2_fast.connected_components.default, (mask, 4))


def test_cuda_kernel_registered_when_cuda_ops_compiled(
    extension: ModuleType, expect_cuda_build: bool
) -> None:
    """No GPU here: check that the CUDA kernel was compiled and registered for the op."""
    info = extension.build_info()
    if not info["cuda"] and not expect_cuda_build:
        pytest.skip(f"CUDA ops not compiled in this build: {info['cuda_skip_reason']}")
    assert info["cuda"], info["cuda_skip_reason"]
    assert torch._C._dispatch_has_kernel_for_dispatch_key("sam2_fast::connected_components", "CUDA")


# ---------------------------------------------------------------------------------------------
# fill_holes_and_sprinkles vs a scipy implementation


def oracle_fill(
    logits: np.ndarray, threshold: float, max_hole: float, max_sprinkle: float
) -> np.ndarray:
    """Straightforward scipy version of official SAM 2's pre-upsampling post-processing."""
    out = logits.astype(np.float32).copy()
    for index in np.ndindex(*logits.shape[:2]):
        scores = logits[index]
        for region, max_area, value in (
            (scores <= threshold, max_hole, threshold + 10.0),
            (scores > threshold, max_sprinkle, threshold - 10.0),
        ):
            if max_area <= 0:
                continue
            labels, _ = ndimage.label(region, structure=EIGHT_CONNECTED)
            areas = np.bincount(labels.ravel())[labels]
            out[index][(labels > 0) & (areas <= max_area)] = value
    return out


def blobby_logits(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Smooth-ish random logits with holes and sprinkles of many sizes."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(shape[0] * shape[1], 1, shape[2] // 4, shape[3] // 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=shape[2:], mode="bilinear")
    noise = torch.randn(shape[0] * shape[1], 1, *shape[2:], generator=generator)
    return (smooth + 0.8 * noise).reshape(shape)


@pytest.mark.parametrize(
    "max_hole, max_sprinkle", [(0, 0), (8, 0), (0, 8), (8, 8), (1, 1), (100, 40), (1e9, 0)]
)
@pytest.mark.parametrize("threshold", [0.0, 0.7])
def test_fill_holes_and_sprinkles_matches_scipy(
    backend: str, threshold: float, max_hole: float, max_sprinkle: float
) -> None:
    logits = blobby_logits((2, 3, 64, 48), seed=int(threshold * 10) + int(max_hole))
    with use_backend(backend, op=OP):
        out = fill_holes_and_sprinkles(
            logits.to(device_of(backend)), threshold, max_hole, max_sprinkle
        ).cpu()
    expected = oracle_fill(logits.numpy(), threshold, max_hole, max_sprinkle)
    assert out.dtype == torch.float32 and out.shape == logits.shape
    np.testing.assert_array_equal(out.numpy(), expected)


def test_fill_is_noop_when_both_areas_are_zero() -> None:
    logits = blobby_logits((1, 2, 16, 16), seed=0)
    assert fill_holes_and_sprinkles(logits, 0.0, 0, 0) is logits
    half = logits.half()
    out = fill_holes_and_sprinkles(half, 0.0, 0, 0)
    assert out.dtype == torch.float32 and torch.equal(out, half.float())


def test_fill_removes_a_hole_and_a_sprinkle() -> None:
    logits = torch.full((1, 1, 9, 9), -5.0)
    logits[0, 0, 1:6, 1:6] = 5.0  # a 5x5 object...
    logits[0, 0, 3, 3] = -5.0  # ...with a one-pixel hole
    logits[0, 0, 8, 8] = 5.0  # and a one-pixel sprinkle
    out = fill_holes_and_sprinkles(logits, 0.0, max_hole_area=1, max_sprinkle_area=1)
    assert out[0, 0, 3, 3] == 10.0
    assert out[0, 0, 8, 8] == -10.0
    assert (out[0, 0, 1:6, 1:6] > 0).all() and (out[0, 0, 8, :8] < 0).all()


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "mask, error, message",
    [
        (torch.zeros(1, 8, 8, dtype=torch.bool), ValueError, r"mask must be \[N, 1, H, W\]"),
        (torch.zeros(1, 2, 8, 8, dtype=torch.bool), ValueError, r"mask must be \[N, 1, H, W\]"),
        (torch.zeros(1, 1, 1, 8, 8, dtype=torch.bool), ValueError, r"got \[1, 1, 1, 8, 8\]"),
        (torch.zeros(1, 1, 8, 8), TypeError, "must be bool or uint8.*float32"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.int64), TypeError, "must be bool or uint8.*int64"),
        (np.zeros((1, 1, 8, 8), dtype=bool), TypeError, "must be a torch.Tensor"),
    ],
    ids=["rank3", "two_channels", "rank5", "float", "int64", "numpy"],
)
def test_bad_mask_raises_clear_error(mask: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        connected_components(mask)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mask, error, message",
    [
        (
            torch.zeros(1, 8, 8, dtype=torch.bool),
            ValueError,
            r"mask must be \[N, 1, H, W\], got \[1, 8, 8\]",
        ),
        (torch.zeros(1, 3, 8, 8, dtype=torch.bool), ValueError, r"mask must be \[N, 1, H, W\]"),
        (torch.zeros(1, 1, 8, 8), TypeError, "mask must be bool or uint8"),
    ],
    ids=["rank3", "three_channels", "float"],
)
def test_compiled_op_checks_its_inputs(
    extension: ModuleType, mask: torch.Tensor, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        torch.ops.sam2_fast.connected_components(mask)


@pytest.mark.parametrize(
    "connectivity, error, message",
    [
        (6, ValueError, r"connectivity must be 4 \(edge neighbours\) or 8 .*, got 6"),
        (0, ValueError, r"connectivity must be 4 .* or 8 .*, got 0"),
        (8.0, TypeError, r"connectivity must be the int 4 or 8, got float 8.0"),
        ("4", TypeError, r"connectivity must be the int 4 or 8, got str '4'"),
        (True, TypeError, r"connectivity must be the int 4 or 8, got bool True"),
    ],
)
def test_bad_connectivity_raises_clear_error(
    connectivity: object, error: type, message: str
) -> None:
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    with pytest.raises(error, match=f"connected_components: {message}"):
        connected_components(mask, connectivity)  # type: ignore[arg-type]


def test_compiled_op_checks_connectivity(extension: ModuleType) -> None:
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    message = "connected_components: connectivity must be 4 or 8, got 6"
    with pytest.raises(ValueError, match=message):
        torch.ops.sam2_fast.connected_components(mask, 6)


@pytest.mark.parametrize(
    "logits, error, message",
    [
        (torch.zeros(2, 8, 8), ValueError, r"mask_logits must be \[B, C, H, W\], got \[2, 8, 8\]"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.int32), TypeError, "must be floating point"),
    ],
    ids=["rank3", "int"],
)
def test_fill_bad_input_raises_clear_error(logits: torch.Tensor, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        fill_holes_and_sprinkles(logits, 0.0, 4, 4)


# ---------------------------------------------------------------------------------------------
# dispatcher


@pytest.fixture
def toy_op() -> Iterator[Callable[..., Op]]:
    """Builds throwaway ops, removed from the registry afterwards."""
    from sam2_fast.ops import _dispatch

    created: list[str] = []

    def make(name: str) -> Op:
        created.append(name)
        return Op(name)

    yield make
    for name in created:
        _dispatch._REGISTRY.pop(name, None)


def test_first_supporting_backend_runs(toy_op: Callable[..., Op]) -> None:
    op = toy_op("toy_first")
    op.add_backend("fast", lambda x: "fast", lambda x: None if x > 0 else "x must be positive")
    op.add_backend("reference", lambda x: "reference")
    assert op(1) == "fast"
    assert op(-1) == "reference"
    assert op.explain(-1) == {"fast": "x must be positive", "reference": None}


def test_a_passed_over_backend_runs_only_when_forced(toy_op: Callable[..., Op]) -> None:
    op = toy_op("toy_prefer")
    op.add_backend(
        "kernel", lambda x: "kernel", prefer=lambda x: "measured slower here" if x > 10 else None
    )
    op.add_backend("reference", lambda x: "reference")
    assert op(1) == "kernel"
    assert op(11) == "reference"
    assert op.explain(11) == {"kernel": "passed over: measured slower here", "reference": None}
    with use_backend("kernel", op="toy_prefer"):
        assert op(11) == "kernel"  # forcing ignores the preference


def test_no_supporting_backend_lists_every_reason(toy_op: Callable[..., Op]) -> None:
    op = toy_op("toy_none")
    op.add_backend("cpp", lambda x: x, lambda x: "extension not built: test")
    op.add_backend("reference", lambda x: x, lambda x: "dtype float64 not supported")
    with pytest.raises(BackendError, match=r"toy_none.*cpp: extension not built: test.*reference"):
        op(0)


def test_registry_lists_ops_and_rejects_duplicates(toy_op: Callable[..., Op]) -> None:
    assert OP in [op.name for op in list_ops()]
    assert get_op(OP).backend_names == ["cuda", "cpp", "reference"]
    toy_op("toy_dup")
    with pytest.raises(ValueError, match="already registered"):
        Op("toy_dup")
    with pytest.raises(KeyError, match="unknown op"):
        get_op("no_such_op")


def test_explain_reports_every_backend_on_cpu(extension_or_none: ModuleType | None) -> None:
    verdicts = get_op(OP).explain(torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    assert list(verdicts) == ["cuda", "cpp", "reference"]
    assert verdicts["cuda"] == "mask is on cpu, this backend runs on cuda"
    assert verdicts["reference"] is None
    if extension_or_none is None:
        assert verdicts["cpp"].startswith("extension not built")
    else:
        assert verdicts["cpp"] is None


@pytest.fixture
def extension_or_none() -> ModuleType | None:
    from sam2_fast._ext import load_extension

    return load_extension()[0]


def test_cpu_default_is_cpp_when_built_else_reference(extension_or_none: ModuleType | None) -> None:
    expected = "reference" if extension_or_none is None else "cpp"
    assert get_op(OP).select(torch.zeros(1, 1, 4, 4, dtype=torch.bool)).name == expected


def test_context_manager_forces_and_restores() -> None:
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    op = get_op(OP)
    default = op.select(mask).name
    with use_backend("reference"):
        assert op.select(mask).name == "reference"
        with use_backend("cpp", op=OP), use_backend("reference", op=OP):
            assert op.select(mask).name == "reference"
    assert op.select(mask).name == default


def test_forced_backend_that_refuses_names_op_backend_and_reason() -> None:
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    with use_backend("cuda", op=OP), pytest.raises(BackendError) as excinfo:
        connected_components(mask)
    message = str(excinfo.value)
    assert "'connected_components'" in message and "'cuda'" in message
    assert "mask is on cpu, this backend runs on cuda" in message
    assert "use_backend('cuda', op='connected_components')" in message


@pytest.mark.parametrize(
    "name, op, message",
    [
        ("cppp", None, "unknown backend 'cppp'"),
        ("reference", "nope", "unknown op 'nope'"),
        ("triton", OP, "has no backend 'triton'"),
    ],
)
def test_use_backend_rejects_unknown_names(name: str, op: str | None, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        use_backend(name, op=op).__enter__()


def test_global_force_skips_ops_without_that_backend(toy_op: Callable[..., Op]) -> None:
    op = toy_op("toy_global")
    op.add_backend("reference", lambda: "reference")
    with use_backend("cpp"):
        assert op() == "reference"


@pytest.mark.parametrize(
    "value", ["reference", f"{OP}=reference", f"cpp, {OP}=reference", f"{OP}=reference,cuda"]
)
def test_env_var_forces_backend(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SAM2_FAST_BACKEND", value)
    assert get_op(OP).select(torch.zeros(1, 1, 4, 4, dtype=torch.bool)).name == "reference"


def test_env_var_forced_refusal_and_typos(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    monkeypatch.setenv("SAM2_FAST_BACKEND", f"{OP}=cuda")
    with pytest.raises(
        BackendError, match=f"backend 'cuda' \\(forced by SAM2_FAST_BACKEND='{OP}=cuda'\\)"
    ):
        connected_components(mask)
    monkeypatch.setenv("SAM2_FAST_BACKEND", "nope=reference")
    with pytest.raises(BackendError, match="unknown op 'nope'"):
        connected_components(mask)
    monkeypatch.setenv("SAM2_FAST_BACKEND", f"{OP}=triton")
    with pytest.raises(BackendError, match="has no backend 'triton'"):
        connected_components(mask)


def test_context_manager_wins_over_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM2_FAST_BACKEND", f"{OP}=cuda")
    with use_backend("reference", op=OP):
        labels, _ = connected_components(torch.ones(1, 1, 3, 3, dtype=torch.bool))
    assert labels.sum() == 9
