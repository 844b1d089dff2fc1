"""sam2_fast.zoo: named model variants (timm-style registry) and third-party families.

Usage::

    from sam2_fast.zoo import list_models, get_model_info

    list_models()                    # ['sam2-hiera-tiny', ..., 'sam2.1-hiera-large', <plugins>]
    info = get_model_info("configs/sam2.1/sam2.1_hiera_t.yaml")   # or "facebook/sam2.1-hiera-tiny"
    info.name, info.hub_repo_id, info.filename, info.config.trunk.embed_dim

A third-party package adds a family with an entry point in the ``sam2_fast.zoo`` group that
names a module or a callable registering its :class:`ModelInfo` objects (see
:mod:`sam2_fast.zoo.registry`). Importing this package does not import torch.
"""

from sam2_fast.zoo.registry import (
    ENTRY_POINT_GROUP,
    ModelInfo,
    StateDictConverter,
    UnknownModelError,
    get_model_info,
    identity_state_dict,
    iter_model_infos,
    list_models,
    register,
)
from sam2_fast.zoo import sam2  # the built-in family: registers it

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelInfo",
    "StateDictConverter",
    "UnknownModelError",
    "get_model_info",
    "identity_state_dict",
    "iter_model_infos",
    "list_models",
    "register",
    "sam2",
]
