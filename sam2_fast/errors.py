"""The exceptions sam2-fast raises, one small hierarchy. Each error names the argument, what
was expected and what arrived. The predictor or inference state that raised stays usable.

::

    SAM2FastError                       catch-all for this library's own errors
    ├── InvalidInputError (ValueError)  a value is out of range, mis-shaped, NaN, unknown, ...
    │   ├── UnknownModelError           a model name that is neither registered nor an alias
    │   ├── OutOfRangeError (IndexError)  a frame index outside the video
    │   └── UnknownObjectError (KeyError)  an object id that is not tracked
    ├── InvalidTypeError (TypeError)    an argument of the wrong type or dtype
    ├── InvalidStateError (RuntimeError)  a call before the state it needs (predict before
    │                                   set_image, propagate before any prompt, ...)
    ├── CheckpointError (RuntimeError)  a checkpoint that cannot be read or does not fit
    │   ├── UnsafeCheckpointError       a pickle that needs code execution to load
    │   └── CheckpointNotFoundError (FileNotFoundError)  not found locally, in the cache or on the Hub
    ├── VideoReadError (RuntimeError)   a video file or frame folder that cannot be read
    └── BackendError (RuntimeError)     no op backend can run the inputs, or a forced one refuses

Each class also derives from the built-in exception that code written for the official
package catches (``ValueError``, ``TypeError``, ``RuntimeError``, ``FileNotFoundError``), so
``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import List

#: the entry-point group through which installed packages add model families (sam2_fast.zoo)
ZOO_ENTRY_POINT_GROUP = "sam2_fast.zoo"


class SAM2FastError(Exception):
    """Base class of every error raised by sam2-fast itself."""


class InvalidInputError(SAM2FastError, ValueError):
    """An argument has the right type but a wrong value: shape, range, NaN / inf, an unknown
    object id or frame index, mismatched batch sizes."""


class OutOfRangeError(InvalidInputError, IndexError):
    """An index outside its range, such as a frame index outside the video."""


class UnknownObjectError(InvalidInputError, KeyError):
    """An object id that the inference state does not track."""

    __str__ = BaseException.__str__  # the message as is (KeyError would quote it)


class InvalidTypeError(SAM2FastError, TypeError):
    """An argument of the wrong type or dtype."""


class InvalidStateError(SAM2FastError, RuntimeError):
    """A call made before the state it needs exists: ``predict`` before ``set_image``,
    propagation before any prompt, a prompt on a stream before its first frame."""


class CheckpointError(SAM2FastError, RuntimeError):
    """A checkpoint file that cannot be read, or whose weights do not fit the model."""


class UnknownModelError(InvalidInputError):
    """A name that is neither a registered model nor one of its aliases."""

    def __init__(self, name: str, suggestions: List[str], known: List[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        self.known = known
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown model {name!r}.{hint} Known models: {', '.join(known) or '(none)'}. "
            "Hub ids (e.g. 'facebook/sam2.1-hiera-tiny') and official config names "
            "(e.g. 'configs/sam2.1/sam2.1_hiera_t.yaml') work too; third-party families are "
            f"added by installing a package with a {ZOO_ENTRY_POINT_GROUP!r} entry point."
        )


class UnsafeCheckpointError(CheckpointError):
    """A pickle that ``torch.load(weights_only=True)`` refused: it holds more than tensors."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint was found locally, in the Hugging Face cache or on the Hub."""


class VideoReadError(SAM2FastError, RuntimeError):
    """A video or frame folder could not be read; the message says which file and why."""


class BackendError(SAM2FastError, RuntimeError):
    """No backend can run an op on the given inputs, or a forced backend refuses them."""


class ExportError(SAM2FastError, RuntimeError):
    """An exported graph broke its contract (a complex tensor, a custom op, a value beyond
    the export's dtype...)."""


__all__ = [
    "SAM2FastError", "InvalidInputError", "OutOfRangeError", "UnknownObjectError", "InvalidTypeError",
    "InvalidStateError", "UnknownModelError",
    "CheckpointError", "UnsafeCheckpointError", "CheckpointNotFoundError", "VideoReadError",
    "BackendError", "ExportError",
]
