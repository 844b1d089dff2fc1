"""sam2_fast.zoo: named model variants (timm-style registry) and third-party families.

Usage::

    from sam2_fast.zoo import list_models, get_model_info

    list_models()                    # ['sam2-hiera-tiny', ..., 'sam2.1-hiera-large', <plugins>]
    info = get_model_info("configs/sam2.1/sam2.1_hiera_t.yaml")   # or "facebook/sam2.1-hiera-tiny"
    info.name, info.hub_repo_id, info.filename, info.config.trunk.embed_dim

A family (:class:`Family`) owns its config type, its model builder and the fingerprint that
recognises its checkpoints; the built-in ones are ``"sam2"`` (:mod:`sam2_fast.zoo.sam2`) and
``"edgetam"`` (:mod:`sam2_fast.zoo.edgetam`). A
third-party package adds a family, or variants of an existing one, with an entry point in the
``sam2_fast.zoo`` group that names a module or a callable registering its :class:`Family` and
:class:`ModelInfo` objects (see :mod:`sam2_fast.zoo.registry`). Importing this package does not
import torch.
"""

from sam2_fast.zoo import registry
from sam2_fast.zoo.registry import *  # noqa: F403  (the registry's public names: registry.__all__)
from sam2_fast.zoo import sam2  # the built-in families: register themselves
from sam2_fast.zoo import edgetam

__all__ = [*registry.__all__, "sam2", "edgetam"]
