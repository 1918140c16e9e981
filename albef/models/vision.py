"""The image encoder: timm's ``VisionTransformer`` returning every token, and position-embedding resizing.

The official ``visual_encoder.*`` keys are timm's own names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.attn.qkv``, ``norm``), so official and DeiT weights load 1:1.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from albef.config.schema import VisionConfig


class VisionEncoder(VisionTransformer):
    """Pre-norm ViT without a head; :meth:`forward` returns all tokens after the final LayerNorm.

    Args:
        cfg: Sizes (``image_res``, ``patch_size``, ``width``, ``depth``, ``num_heads``, ...).
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__(
            img_size=cfg.image_res,
            patch_size=cfg.patch_size,
            embed_dim=cfg.width,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            num_classes=0,
            global_pool="token",
            norm_layer=functools.partial(nn.LayerNorm, eps=cfg.layer_norm_eps),
            act_layer=nn.GELU,
        )
        self.image_res = cfg.image_res
        if cfg.pos_embed_std != 0.02 and self.pos_embed is not None:  # timm's own init drew it at 0.02
            nn.init.trunc_normal_(self.pos_embed, std=cfg.pos_embed_std)
        self.explicit_attention_blocks: frozenset[int] = frozenset()
        """Blocks that run timm's explicit-softmax attention (set by
        :func:`albef.models.attention_capture.capture_vit_attention` for the duration of a capture)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Images (B, 3, R, R) -> tokens (B, 1 + N, D); index 0 is the image [CLS]."""
        self._select_attention(x)
        out: Tensor = self.forward_features(x)
        return out

    def _select_attention(self, x: Tensor) -> None:
        """timm's fused SDPA, except on CPU under bf16/fp16 where plain math is faster (as in the BERT)."""
        low = x.dtype in (torch.bfloat16, torch.float16) or (
            x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        )
        fused = not (x.device.type == "cpu" and low)
        for n, block in enumerate(self.blocks):
            attn = block.attn
            if isinstance(attn, nn.Module) and hasattr(attn, "fused_attn"):
                explicit = n in self.explicit_attention_blocks
                setattr(attn, "fused_attn", fused and not explicit)  # noqa: B010  # a plain bool of timm's Attention

    @property
    def num_tokens(self) -> int:
        """1 + number of patches."""
        assert self.pos_embed is not None
        return int(self.pos_embed.shape[1])


def resize_pos_embed(pos_embed: Tensor, num_patches: int, num_extra_tokens: int = 1) -> Tensor:
    """Resize a ViT position embedding to a new patch grid, as the official ``interpolate_pos_embed``.

    The extra-token rows (the [CLS]) are kept; the square patch grid is resized bicubically with
    ``align_corners=False``.

    Args:
        pos_embed: (1, extra + old_side**2, D).
        num_patches: Patches of the target model (a square number).
        num_extra_tokens: Leading rows that are not patches.

    Returns:
        (1, extra + num_patches, D); the input itself when the grid already matches.
    """
    old_side = math.isqrt(pos_embed.shape[1] - num_extra_tokens)
    new_side = math.isqrt(num_patches)
    if old_side * old_side != pos_embed.shape[1] - num_extra_tokens or new_side * new_side != num_patches:
        raise ValueError(
            f"position embedding of {pos_embed.shape[1]} rows or {num_patches} target patches is not a square grid"
        )
    if old_side == new_side:
        return pos_embed
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    width = grid.shape[-1]
    grid = grid.reshape(1, old_side, old_side, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(new_side, new_side), mode="bicubic", align_corners=False)
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([extra, grid], dim=1)
