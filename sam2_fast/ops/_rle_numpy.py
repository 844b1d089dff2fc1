"""COCO run-length encoding (RLE) of binary masks, byte-for-byte the format of pycocotools.

A mask ``[H, W]`` is read in column-major (Fortran) order and stored as the lengths of its
alternating runs, starting with a run of zeros (of length 0 when the first pixel is set)::

    {"size": [H, W], "counts": [3, 2, 7]}        # uncompressed: a list of run lengths
    {"size": [H, W], "counts": "32;0"}           # compressed: pycocotools' string form

The compressed form is what ``pycocotools.mask.encode(np.asfortranarray(mask))`` returns
(there as ``bytes``; here as ASCII ``str`` so that it goes straight into JSON). Each run length
``c[i]`` (``c[i] - c[i - 2]`` for ``i > 2``) is written as a signed little-endian base-32
number: 5 bits per character, ``0x20`` set on every character but the last, ``+ 48``.

Pure numpy and vectorised (no loop over pixels or runs): the reference of the format for
the compiled implementations. Private: the public RLE API is :mod:`sam2_fast.ops.rle`, whose
dict layer reads RLEs with :func:`rle_runs`, whose ``reference`` backends compress with
:func:`compress_runs`, and whose one-mask functions (``mask_to_rle``, ``rle_to_mask``, ...)
are these.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Union

import numpy as np

from sam2_fast.errors import InvalidInputError

#: ``{"size": [H, W], "counts": str | bytes | list of int}``
RLE = Dict[str, Any]

_CHUNK_BITS = 5
_MAX_CHUNKS = 12  # 60 bits: run lengths (and their differences) below 2**59
_OFFSET = 48  # ord("0")
_MORE = 0x20  # continuation bit
_SIGN = 0x10  # sign bit of the last chunk


def _as_mask(mask: Any) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInputError(f"mask: expected a 2-D [H, W] array, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Run lengths ``[R]`` int64 of a bool ``[H, W]`` mask in column-major order, starting
    with the (possibly empty) run of zeros; ``[0]`` for a mask without pixels."""
    flat = mask.ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, np.int64)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).astype(np.int64)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs


def compress_runs(counts: np.ndarray) -> str:
    """Run lengths ``[R]`` -> pycocotools' compressed string."""
    x = counts.astype(np.int64)
    if x.size > 3:
        x[3:] -= counts[1:-2]
    # a number ends after chunk k (bits 5k .. 5k + 4) once all its bits from 5k + 4 (the
    # chunk's sign bit) up are equal: x >> (5k + 4) is 0 or -1
    n_chunks = np.ones(x.size, np.int64)
    rest = x >> (_CHUNK_BITS - 1)
    pending = (rest != 0) & (rest != -1)
    while pending.any():  # at most _MAX_CHUNKS rounds over all numbers at once
        n_chunks += pending
        rest >>= _CHUNK_BITS
        pending = (rest != 0) & (rest != -1)
    number = np.repeat(np.arange(x.size), n_chunks)
    first = np.cumsum(n_chunks) - n_chunks
    k = np.arange(number.size) - first[number]
    chunks = (x[number] >> (_CHUNK_BITS * k)) & 0x1F
    chars = chunks + np.where(k < n_chunks[number] - 1, _MORE, 0) + _OFFSET
    return chars.astype(np.uint8).tobytes().decode("ascii")


def _decompress(counts: Union[str, bytes]) -> np.ndarray:
    """pycocotools' compressed string -> run lengths ``[R]`` int64."""
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    c = np.frombuffer(raw, np.uint8).astype(np.int64) - _OFFSET
    if c.size == 0:
        return np.zeros(0, np.int64)
    if (c < 0).any() or (c > 0x3F).any() or c[-1] & _MORE:
        raise InvalidInputError("rle['counts']: not a valid compressed COCO RLE string")
    last = (c & _MORE) == 0  # last character of each number
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    number = np.cumsum(np.concatenate(([0], last[:-1].astype(np.int64))))
    position = np.arange(c.size) - starts[number]
    if position.max() >= _MAX_CHUNKS:
        raise InvalidInputError("rle['counts']: a run length in the compressed string is too long")
    x = np.add.reduceat((c & 0x1F) << (_CHUNK_BITS * position), starts)
    length = np.diff(np.concatenate((starts, [c.size])))
    negative = (c[last] & _SIGN) != 0
    x[negative] |= np.left_shift(np.int64(-1), _CHUNK_BITS * length[negative])
    # undo the differences: c[i] += c[i - 2] for i > 2, i.e. running sums of the odd entries
    # from index 1 and of the even entries from index 2
    x[1::2] = np.cumsum(x[1::2])
    x[2::2] = np.cumsum(x[2::2])
    return x


def rle_runs(rle: Mapping[str, Any]) -> np.ndarray:
    """Run lengths ``[R]`` int64 of a compressed or uncompressed COCO RLE, checked: ValueError
    for missing keys, an invalid string, negative runs or runs that do not cover ``size``."""
    try:
        size, counts = rle["size"], rle["counts"]
    except (KeyError, TypeError):
        raise InvalidInputError("rle: expected a dict with 'size' [H, W] and 'counts'") from None
    if len(size) != 2:
        raise InvalidInputError(f"rle['size']: expected [H, W], got {size!r}")
    if isinstance(counts, (str, bytes)):
        runs = _decompress(counts)
    else:
        runs = np.asarray(counts, dtype=np.int64).reshape(-1)
        if (runs < 0).any():
            raise InvalidInputError("rle['counts']: run lengths must be >= 0")
    h, w = int(size[0]), int(size[1])
    if int(runs.sum()) != h * w:
        raise InvalidInputError(
            f"rle['counts']: the runs cover {int(runs.sum())} pixels but size {h}x{w} has {h * w}"
        )
    return runs


def mask_to_rle(mask: Any) -> RLE:
    """Compressed COCO RLE of a binary mask ``[H, W]`` (bool, or nonzero = set):
    ``{"size": [H, W], "counts": str}``, equal to pycocotools' ``encode`` (counts decoded
    from ASCII bytes)."""
    m = _as_mask(mask)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": compress_runs(_run_lengths(m))}


def mask_to_uncompressed_rle(mask: Any) -> RLE:
    """Uncompressed COCO RLE of a binary mask ``[H, W]``: ``{"size": [H, W], "counts": [int]}``
    (run lengths in column-major order, starting with zeros)."""
    m = _as_mask(mask)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": _run_lengths(m).tolist()}


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a compressed (``str`` / ``bytes``) or uncompressed (list) COCO RLE to a bool
    mask ``[H, W]``."""
    runs = rle_runs(rle)
    h, w = int(rle["size"][0]), int(rle["size"][1])
    values = np.arange(runs.size) % 2 == 1
    return np.ascontiguousarray(np.repeat(values, runs).reshape(w, h).T)


def area(rle: Mapping[str, Any]) -> int:
    """Number of set pixels of a COCO RLE (pycocotools' ``area``)."""
    return int(rle_runs(rle)[1::2].sum())


def rle_to_bbox(rle: Mapping[str, Any]) -> np.ndarray:
    """Bounding box ``[4]`` float64 ``(x, y, w, h)`` in pixels of a COCO RLE, as pycocotools'
    ``toBbox`` computes it (``[0, 0, 0, 0]`` for an empty mask)."""
    runs = rle_runs(rle)
    h = int(rle["size"][0])
    m = runs.size // 2 * 2  # complete (zeros, ones) pairs
    if m == 0 or h == 0:
        return np.zeros(4, np.float64)
    # first pixel of each run of ones and last pixel of each (as pycocotools: end - 1)
    t = np.cumsum(runs[:m]) - np.arange(m) % 2
    y, x = t % h, t // h
    xs, xe = int(x.min()), int(x.max())
    if (x[1::2] > x[0::2]).any():  # a run crosses a column: it touches the top and the bottom
        ys, ye = 0, h - 1
    else:
        ys, ye = int(y.min()), int(y.max())
    return np.array([xs, ys, xe - xs + 1, ye - ys + 1], np.float64)
