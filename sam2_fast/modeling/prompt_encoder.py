"""Prompt encoder: points / box corners -> sparse tokens, mask -> dense embedding."""

from __future__ import annotations

from typing import Optional, Tuple, Type

import torch
from torch import nn

from sam2_fast.modeling.common import Conv2d, LayerNorm2d
from sam2_fast.modeling.position_encoding import PositionEmbeddingRandom


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Point labels: 1 positive click, 0 negative click, 2 / 3 box top-left / bottom-right
    corner, -1 padding ("not a point").
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # neg / pos point, box top-left / bottom-right
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, ``[1, C, h, w]``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """``[B, N, 2]`` pixel coords + ``[B, N]`` labels -> ``[B, N (+1), C]``."""
        points = points + 0.5  # centre of the pixel
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels.unsqueeze(-1)
        # float32 from here on (``where`` promotes), as the point embeddings added below are
        emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
        for value, table in enumerate(self.point_embeddings):
            emb = torch.where(labels == value, emb + table.weight, emb)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``[B, 4]`` (x0, y0, x1, y1) pixel boxes -> ``[B, 2, C]`` corner tokens."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return emb + corner

    def _get_batch_size(self, points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse ``[B, N, C]`` and dense ``[B, C, h, w]`` prompt embeddings."""
        bs = self._get_batch_size(points, boxes, masks)
        device = self.point_embeddings[0].weight.device
        sparse = [torch.empty((bs, 0, self.embed_dim), device=device)]
        if points is not None:
            coords, labels = points
            sparse.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, self.image_embedding_size[0], self.image_embedding_size[1]
            )
        return sparse_embeddings, dense
