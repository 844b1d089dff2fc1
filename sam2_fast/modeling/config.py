"""Frozen dataclass configs for SAM 2 / SAM 2.1 (no hydra).

Each of the eight official checkpoints has a named preset (``SAM2Config.from_name``). The
values are those of the official yaml files in ``sam2/configs/sam2{,.1}/`` plus the
constructor defaults of the official modules they do not override.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, Tuple

from sam2_fast.errors import InvalidInputError


@dataclass(frozen=True)
class HieraConfig:
    """Hiera trunk (``image_encoder.trunk``). ``kind`` tags the backbone: the builder of each
    kind is registered in :mod:`sam2_fast.modeling.builders` (``BACKBONES``); every backbone
    config gives its ``channel_list``."""

    kind: ClassVar[str] = "hiera"

    embed_dim: int = 96
    num_heads: int = 1
    stages: Tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: Tuple[int, ...] = (5, 7, 9)
    window_pos_embed_bkg_spatial_size: Tuple[int, int] = (7, 7)
    window_spec: Tuple[int, ...] = (8, 4, 14, 7)
    q_pool: int = 3
    q_stride: Tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0

    @property
    def channel_list(self) -> Tuple[int, ...]:
        """Output channels per stage, lowest resolution first (the neck's order)."""
        dims = [self.embed_dim]
        for _ in range(len(self.stages) - 1):
            dims.append(int(dims[-1] * self.dim_mul))
        return tuple(reversed(dims))


@dataclass(frozen=True)
class SAM2Config:
    """Everything needed to build a :class:`~sam2_fast.modeling.sam2_base.SAM2Base`.

    Field names follow the official ``SAM2Base`` constructor so that official hydra
    overrides such as ``++model.num_maskmem=5`` map one to one (see :meth:`with_overrides`).
    """

    name: str = "sam2.1-hiera-tiny"
    trunk: HieraConfig = field(default_factory=HieraConfig)
    # FPN neck
    d_model: int = 256
    fpn_top_down_levels: Tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    scalp: int = 1
    # memory attention / encoder
    memory_attention_num_layers: int = 4
    memory_attention_dim_feedforward: int = 2048
    memory_attention_dropout: float = 0.1
    rope_theta: float = 10000.0
    rope_feat_sizes: Tuple[int, int] = (64, 64)
    mem_dim: int = 64
    # SAM2Base
    num_maskmem: int = 7
    image_size: int = 1024
    backbone_stride: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = False
    use_mask_input_as_output_without_sam: bool = True
    max_cond_frames_in_attn: int = -1
    directly_add_no_mem_embed: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    iou_prediction_use_sigmoid: bool = True
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    no_obj_embed_spatial: bool = True
    # mask decoder extras (official: ``sam_mask_decoder_extra_args``; set by apply_postprocessing)
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # video predictor options (official ``SAM2VideoPredictor.__init__``)
    fill_hole_area: int = 0
    non_overlap_masks: bool = False
    clear_non_cond_mem_around_input: bool = False
    add_all_frames_to_correct_as_cond: bool = False

    @property
    def backbone_channel_list(self) -> Tuple[int, ...]:
        return self.trunk.channel_list

    @property
    def is_sam2_1(self) -> bool:
        return self.no_obj_embed_spatial

    def replace(self, **changes: Any) -> "SAM2Config":
        """A copy with some fields changed (``trunk.<field>`` names reach the trunk)."""
        trunk_changes = {k[len("trunk.") :]: v for k, v in changes.items() if k.startswith("trunk.")}
        top = {k: v for k, v in changes.items() if not k.startswith("trunk.")}
        trunk_fields = {f.name for f in dataclasses.fields(self.trunk)}  # of this backbone
        names = {f.name for f in dataclasses.fields(self)}  # of this config type
        unknown = [k for k in top if k not in names] + [
            f"trunk.{k}" for k in trunk_changes if k not in trunk_fields
        ]
        if unknown:
            raise InvalidInputError(
                f"unknown {type(self).__name__} field(s) {unknown}; valid fields are "
                f"{sorted(names)} and trunk.{{{', '.join(sorted(trunk_fields))}}}"
            )
        if trunk_changes:
            top["trunk"] = dataclasses.replace(self.trunk, **trunk_changes)
        return dataclasses.replace(self, **top)

    def with_postprocessing(self, video: bool = False) -> "SAM2Config":
        """The settings official ``build_sam2(..., apply_postprocessing=True)`` adds.

        For the video predictor it also binarizes clicked masks for the memory encoder and
        fills holes of up to 8 pixels in low-res masks, as ``build_sam2_video_predictor`` does.
        """
        cfg = self.replace(
            dynamic_multimask_via_stability=True,
            dynamic_multimask_stability_delta=0.05,
            dynamic_multimask_stability_thresh=0.98,
        )
        if video:
            cfg = cfg.replace(binarize_mask_from_pts_for_mem_enc=True, fill_hole_area=8)
        return cfg

    def with_overrides(self, overrides: Iterable[str]) -> "SAM2Config":
        """Apply official hydra-style overrides such as ``"++model.num_maskmem=5"``.

        Supported forms: ``[+|++]model.<field>=<value>``,
        ``[+|++]model.sam_mask_decoder_extra_args.<field>=<value>`` and
        ``[+|++]model.image_encoder.trunk.<field>=<value>``. Values are parsed as Python
        literals (``true``/``false``/``null`` are accepted).
        """
        changes: Dict[str, Any] = {}
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise InvalidInputError(
                    f"hydra override {item!r} must look like '++model.<field>=<value>'"
                )
            key, raw = item.split("=", 1)
            key = key.lstrip("+")
            if key.startswith("~"):
                raise InvalidInputError(f"hydra override {item!r}: deleting keys is not supported")
            if not key.startswith("model."):
                raise InvalidInputError(f"hydra override {item!r} must start with 'model.'")
            key = key[len("model.") :]
            if key == "_target_":
                continue  # the class is chosen by the builder, not by the config
            for prefix, repl in (
                ("sam_mask_decoder_extra_args.", ""),
                ("image_encoder.trunk.", "trunk."),
            ):
                if key.startswith(prefix):
                    key = repl + key[len(prefix) :]
            changes[key] = _parse_value(raw)
        return self.replace(**changes) if changes else self

    @classmethod
    def from_name(cls, name: str) -> "SAM2Config":
        """The preset of an official variant, e.g. ``"sam2.1-hiera-tiny"``."""
        try:
            return PRESETS[name]
        except KeyError:
            raise InvalidInputError(
                f"unknown SAM 2 variant {name!r}; known: {', '.join(PRESETS)}"
            ) from None


def _parse_value(raw: str) -> Any:
    import ast

    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw.strip()
    return tuple(value) if isinstance(value, list) else value


_TRUNKS = {
    "tiny": HieraConfig(
        embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "small": HieraConfig(
        embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "base-plus": HieraConfig(
        embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "large": HieraConfig(
        embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8),
    ),
}

# What SAM 2.0 configs set differently from SAM 2.1 (the four 2.1 flags).
_SAM2_0_DIFF = dict(
    no_obj_embed_spatial=False,
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
)

PRESETS: Dict[str, SAM2Config] = {}
for _size, _trunk in _TRUNKS.items():
    PRESETS[f"sam2-hiera-{_size}"] = SAM2Config(
        name=f"sam2-hiera-{_size}", trunk=_trunk, **_SAM2_0_DIFF
    )
    PRESETS[f"sam2.1-hiera-{_size}"] = SAM2Config(name=f"sam2.1-hiera-{_size}", trunk=_trunk)
