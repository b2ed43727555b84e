"""TokShift: zero-parameter temporal shift of the [CLS] token between neighbouring frames.

Zhang, Hao, Ngo. "Token Shift Transformer for Video Classification", ACM MM 2021
(released ``VideoNetworks/TokShift-Transformer``, ``Block.shift_tk``; see
``docs/models/tokshift.md``).

Tokens arrive as ``(B*T, N, C)`` with the ``T`` frames of a clip contiguous (frames folded into
the batch). Only token 0 ([CLS]) moves: channels ``[0, C/d)`` take the *next* frame's values
(frame ``t`` receives ``t+1``, the last frame gets zeros), channels ``[C/d, 2C/d)`` take the
*previous* frame's values (the first frame gets zeros), the rest and all patch tokens stay.
With ``fold_div = 4`` (the paper's "div4") a quarter of the CLS channels goes each way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TokenShift", "token_shift"]


def token_shift(x: Tensor, num_frames: int, fold_div: int = 4) -> Tensor:
    """Shift the CLS token's first ``2 * C // fold_div`` channels across frames.

    Args:
        x: tokens ``(B*T, N, C)``, frames of a clip contiguous, token 0 = [CLS].
        num_frames: ``T``.
        fold_div: ``C // fold_div`` channels move backward in time and as many forward.

    Returns a new tensor of the same shape (out of place, so autograd sees a plain gather).
    """
    bt, n, c = x.shape
    if num_frames < 1 or bt % num_frames:
        raise ValueError(
            f"token_shift: batch*frames {bt} is not a multiple of num_frames={num_frames}; "
            "pass the clip length the tokens were folded with"
        )
    if fold_div < 2:
        raise ValueError(f"token_shift: fold_div must be >= 2 (2 folds move), got {fold_div}")
    fold = c // fold_div
    tokens = x.view(bt // num_frames, num_frames, n, c)
    cls = tokens[:, :, 0]  # (B, T, C)
    from_next = F.pad(cls[:, 1:, :fold], (0, 0, 0, 1))  # frame t <- t+1, zeros at the end
    from_prev = F.pad(cls[:, :-1, fold : 2 * fold], (0, 0, 1, 0))  # frame t <- t-1
    cls = torch.cat((from_next, from_prev, cls[:, :, 2 * fold :]), dim=-1)
    return torch.cat((cls.unsqueeze(2), tokens[:, :, 1:]), dim=2).view(bt, n, c)


class TokenShift(nn.Module):
    """Module form of :func:`token_shift`; ``num_frames`` is given at call time."""

    def __init__(self, fold_div: int = 4) -> None:
        super().__init__()
        self.fold_div = fold_div

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        return token_shift(x, num_frames, self.fold_div)

    def extra_repr(self) -> str:
        return f"fold_div={self.fold_div}"
