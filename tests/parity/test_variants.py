"""All 8 official variants: same state-dict layout as the official models (strict load both
ways), and every configuration flag equal to what the official yaml files build."""

from __future__ import annotations

import pytest
import torch

from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.modeling.sam2_base import _BASE_FIELDS, SAM2Base

from oracle_support import OFFICIAL_CONFIGS, import_oracle

VARIANTS = sorted(OFFICIAL_CONFIGS)


@pytest.fixture(scope="module")
def official_models():
    import_oracle()
    from sam2.build_sam import build_sam2

    cache = {}

    def get(name):
        if name not in cache:
            cache.clear()
            cache[name] = build_sam2(OFFICIAL_CONFIGS[name], None, device="cpu")
        return cache[name]

    return get


@pytest.mark.parametrize("name", VARIANTS)
def test_random_weights_load_strictly_into_ours_and_official(name, official_models):
    sd = random_state_dict(PRESETS[name], seed=0)
    with torch.device("meta"):
        ours = SAM2Base.from_config(PRESETS[name])
    ours.load_state_dict(sd, strict=True, assign=True)
    official = official_models(name)
    official.load_state_dict(sd, strict=True)
    ours_sd = ours.state_dict()
    for key, value in official.state_dict().items():
        assert ours_sd[key].shape == value.shape, key
        assert torch.equal(ours_sd[key], value), key


@pytest.mark.parametrize("name", VARIANTS)
def test_config_flags_match_official_yaml(name, official_models):
    official = official_models(name)
    with torch.device("meta"):
        ours = SAM2Base.from_config(PRESETS[name])
    for field in _BASE_FIELDS:
        theirs, mine = getattr(official, field), getattr(ours, field)
        if field == "no_obj_embed_spatial":  # a parameter when enabled
            theirs, mine = theirs is not None, mine is not None
        assert mine == theirs, f"{name}: {field} is {mine}, official {theirs}"
    trunk_o, trunk_u = official.image_encoder.trunk, ours.image_encoder.trunk
    assert trunk_u.stage_ends == trunk_o.stage_ends
    assert list(trunk_u.global_att_blocks) == list(trunk_o.global_att_blocks)
    assert list(trunk_u.window_spec) == list(trunk_o.window_spec)
    assert [b.window_size for b in trunk_u.blocks] == [b.window_size for b in trunk_o.blocks]
    assert [b.attn.num_heads for b in trunk_u.blocks] == [b.attn.num_heads for b in trunk_o.blocks]
    neck_o, neck_u = official.image_encoder.neck, ours.image_encoder.neck
    assert neck_u.fpn_top_down_levels == list(neck_o.fpn_top_down_levels)
    assert neck_u.fpn_interp_model == neck_o.fpn_interp_model
    assert ours.image_encoder.scalp == official.image_encoder.scalp
    assert ours.memory_attention.num_layers == official.memory_attention.num_layers
