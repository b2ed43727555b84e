"""ViT-B/16, ViT-L/16 and the Token Shift Transformer (TokShift) for video clips.

Dosovitskiy et al. "An Image is Worth 16x16 Words", ICLR 2021 (pre-LN encoder, GELU MLP, [CLS]
token, learned position embeddings, LayerNorm eps 1e-6); Zhang, Hao, Ngo. "Token Shift
Transformer for Video Classification", ACM MM 2021.

Parameter names follow the released TokShift code (``vit_models/modeling_tokshift.py``, itself
jeonsworld/ViT-pytorch): ``transformer.embeddings.{patch_embeddings,position_embeddings,
cls_token}``, ``transformer.encoder.layer.{i}.{attention_norm,attn.{query,key,value,out},
ffn_norm,ffn.{fc1,fc2}}``, ``transformer.encoder.encoder_norm``, ``head``. So the released
TokShift ``.pth`` maps by dropping ``module.base_model.`` and Google's ImageNet-21k ``.npz``
through the key table in ``models/convert/vit.py``.

Input ``(B, C, T, H, W)``. Frames are folded into the batch; every frame goes through the shared
encoder; with TokShift the [CLS] token exchanges 1/4 of its channels with the previous and 1/4
with the next frame before attention and before the MLP in every block (on the residual stream,
as released). The head runs on each frame's [CLS] and logits are averaged over ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actionlab.ops.token_shift import token_shift

__all__ = [
    "SIZES",
    "ViTSize",
    "VideoViT",
    "resize_pos_embed",
    "tokshift_base",
    "tokshift_large",
    "vit_base",
    "vit_large",
]


@dataclass(frozen=True)
class ViTSize:
    hidden: int
    layers: int
    heads: int
    mlp_dim: int
    patch: int = 16


SIZES: dict[str, ViTSize] = {
    "base": ViTSize(768, 12, 12, 3072),  # ViT-B/16
    "large": ViTSize(1024, 24, 16, 4096),  # ViT-L/16
}
LN_EPS = 1e-6


def resize_pos_embed(posemb: Tensor, grid: tuple[int, int]) -> Tensor:
    """Resize ``(1, 1 + g*g, D)`` position embeddings to ``(1, 1 + gh*gw, D)``, CLS kept.

    Bilinear with corners aligned, which is what the released loader's
    ``scipy.ndimage.zoom(order=1)`` computes (its sample grid maps corner to corner).
    """
    cls, table = posemb[:, :1], posemb[0, 1:]
    old = math.isqrt(table.shape[0])
    if old * old != table.shape[0]:
        raise ValueError(
            f"position embeddings hold {table.shape[0]} patch entries, not a square grid; "
            "only square source grids can be resized"
        )
    if (old, old) == tuple(grid):
        return posemb
    table = table.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table.float(), size=grid, mode="bilinear", align_corners=True)
    table = table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(posemb.dtype)
    return torch.cat((cls, table), dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections, fused SDPA kernel."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (
            proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        ctx = F.scaled_dot_product_attention(q, k, v)
        return self.out(ctx.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 - GELU (erf) - fc2; Xavier-uniform weights and N(0, 1e-6) biases as released."""

    def __init__(self, hidden: int, mlp_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, hidden)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN encoder block; with ``fold_div`` set, TokShift runs before each sub-layer.

    The shift replaces the stream (the residual is taken after it), as in the released
    ``Block.forward``: ``x = shift(x); x = x + attn(LN(x)); x = shift(x); x = x + mlp(LN(x))``.
    """

    def __init__(self, size: ViTSize, fold_div: int | None = None) -> None:
        super().__init__()
        self.fold_div = fold_div
        self.attention_norm = nn.LayerNorm(size.hidden, eps=LN_EPS)
        self.attn = Attention(size.hidden, size.heads)
        self.ffn_norm = nn.LayerNorm(size.hidden, eps=LN_EPS)
        self.ffn = Mlp(size.hidden, size.mlp_dim)

    def _shift(self, x: Tensor, num_frames: int) -> Tensor:
        return x if self.fold_div is None else token_shift(x, num_frames, self.fold_div)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        x = self._shift(x, num_frames)
        x = x + self.attn(self.attention_norm(x))
        x = self._shift(x, num_frames)
        return x + self.ffn(self.ffn_norm(x))


class Embeddings(nn.Module):
    """Patch embedding conv, [CLS] token and learned position embeddings for ``img_size``."""

    def __init__(self, size: ViTSize, img_size: int) -> None:
        super().__init__()
        # Like a strided conv, a side that is not a multiple of the patch drops its last pixels.
        self.patch = size.patch
        self.grid = img_size // size.patch
        self.patch_embeddings = nn.Conv2d(3, size.hidden, size.patch, stride=size.patch)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid**2 + 1, size.hidden))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size.hidden))
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens = self.patch_embeddings(x).flatten(2).transpose(1, 2)
        tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
        posemb = self.position_embeddings
        if (h, w) != (self.grid, self.grid):
            # Another input size at run time (e.g. evaluation at 256 of a 224 model).
            posemb = resize_pos_embed(posemb, (h, w))
        return tokens + posemb


class Encoder(nn.Module):
    def __init__(self, size: ViTSize, fold_div: int | None) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Block(size, fold_div) for _ in range(size.layers))
        self.encoder_norm = nn.LayerNorm(size.hidden, eps=LN_EPS)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        for block in self.layer:
            x = block(x, num_frames)
        return self.encoder_norm(x)


class Transformer(nn.Module):
    def __init__(self, size: ViTSize, img_size: int, fold_div: int | None) -> None:
        super().__init__()
        self.embeddings = Embeddings(size, img_size)
        self.encoder = Encoder(size, fold_div)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        return self.encoder(self.embeddings(x), num_frames)


class VideoViT(nn.Module):
    """ViT or TokShift on clips: ``(B, 3, T, H, W)`` to logits ``(B, num_classes)``.

    Args:
        size: ``base`` (ViT-B/16) or ``large`` (ViT-L/16), or a :class:`ViTSize` (tests).
        num_classes: classifier outputs.
        num_frames: clip length used in training (kept for configs and checkpoints; the shift
            uses the ``T`` of each input).
        img_size: input side the position embeddings are built for (224, 256, 384); another
            side at run time is served by interpolating them.
        shift: TokShift on (``True``) or plain per-frame ViT (``False``).
        fold_div: ``C // fold_div`` CLS channels move each way (paper: 4).
    """

    def __init__(
        self,
        size: str | ViTSize = "base",
        num_classes: int = 400,
        num_frames: int = 8,
        img_size: int = 224,
        shift: bool = True,
        fold_div: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(size, str) and size not in SIZES:
            raise ValueError(f"ViT size must be one of {sorted(SIZES)}, got {size!r}")
        cfg = SIZES[size] if isinstance(size, str) else size
        self.size, self.dims = size, cfg
        self.num_classes, self.num_frames = num_classes, num_frames
        self.img_size, self.shift, self.fold_div = img_size, shift, fold_div
        self.transformer = Transformer(cfg, img_size, fold_div if shift else None)
        self.head = nn.Linear(cfg.hidden, num_classes)
        self.reset_head(num_classes)

    def reset_head(self, num_classes: int) -> None:
        """A fresh zero-initialised head (released ``zero_head=True``) for another label set."""
        self.head = nn.Linear(self.head.in_features, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"VideoViT expects clips (B, C, T, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        cls = self.transformer(frames, t)[:, 0]
        return self.head(cls).view(b, t, -1).mean(dim=1)

    def no_weight_decay(self) -> set[str]:
        """Position embeddings and [CLS] token take no weight decay."""
        return {"transformer.embeddings.position_embeddings", "transformer.embeddings.cls_token"}


def vit_base(**kwargs) -> VideoViT:
    """ViT-B/16 per frame, logits averaged over T (TokShift's "ViT" baseline)."""
    return VideoViT(size="base", shift=False, **kwargs)


def vit_large(**kwargs) -> VideoViT:
    return VideoViT(size="large", shift=False, **kwargs)


def tokshift_base(**kwargs) -> VideoViT:
    """TokShift-B/16 (div4)."""
    return VideoViT(size="base", shift=True, **kwargs)


def tokshift_large(**kwargs) -> VideoViT:
    """TokShift-L/16 (div4)."""
    return VideoViT(size="large", shift=True, **kwargs)
