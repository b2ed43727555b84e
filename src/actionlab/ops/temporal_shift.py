"""Temporal shift (TSM): move 1/``fold_div`` of the channels one frame back and another
1/``fold_div`` one frame forward, zero-padded at the clip ends.

Lin, Gan, Han. "TSM: Temporal Shift Module for Efficient Video Understanding", ICCV 2019,
semantics of the released ``ops/temporal_shift.py`` (``docs/operators.md``)::

    out[:, t, :fold]        = x[:, t + 1, :fold]        (fold 0 reads the next frame)
    out[:, t, fold:2*fold]  = x[:, t - 1, fold:2*fold]  (fold 1 reads the previous frame)
    out[:, t, 2*fold:]      = x[:, t, 2*fold:]

on frames folded into the batch, ``(N*T, C, H, W)``. It is registered as the ``torch.library``
op ``actionlab::temporal_shift`` (a pure copy with an exact adjoint as backward) so profilers
see it as one op (0 MACs) and ``torch.compile`` treats it as opaque.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TemporalShift", "temporal_shift"]


def _shift(x: Tensor, num_segments: int, fold_div: int, reverse: bool) -> Tensor:
    nt, c = x.shape[:2]
    if nt % num_segments:
        raise ValueError(
            f"temporal_shift: batch*frames {nt} is not a multiple of num_segments={num_segments}; "
            "pass the clip length the frames were folded with"
        )
    # Splitting the batch dimension is a view in any layout, and empty_like keeps the layout
    # (channels_last frames stay channels_last); every element is written exactly once.
    v = x.view(nt // num_segments, num_segments, *x.shape[1:])
    fold = c // fold_div
    out = torch.empty_like(v)
    # reverse=True is the adjoint (the gradient): each fold moves the other way.
    ahead, behind = (slice(fold, 2 * fold), slice(0, fold)) if reverse else (slice(0, fold), slice(fold, 2 * fold))
    out[:, :-1, ahead] = v[:, 1:, ahead]
    out[:, -1:, ahead] = 0
    out[:, 1:, behind] = v[:, :-1, behind]
    out[:, :1, behind] = 0
    out[:, :, 2 * fold:] = v[:, :, 2 * fold:]
    return out.view(x.shape)


@torch.library.custom_op("actionlab::temporal_shift", mutates_args=())
def _temporal_shift_op(x: Tensor, num_segments: int, fold_div: int, reverse: bool) -> Tensor:
    return _shift(x, num_segments, fold_div, reverse)


@_temporal_shift_op.register_fake
def _(x: Tensor, num_segments: int, fold_div: int, reverse: bool) -> Tensor:
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output) -> None:
    _, ctx.num_segments, ctx.fold_div, ctx.reverse = inputs


def _backward(ctx, grad: Tensor):
    # The gradient keeps its layout (a .contiguous() here would undo channels-last training).
    g = _temporal_shift_op(grad, ctx.num_segments, ctx.fold_div, not ctx.reverse)
    return g, None, None, None


_temporal_shift_op.register_autograd(_backward, setup_context=_setup_context)


def temporal_shift(x: Tensor, num_segments: int, fold_div: int = 8) -> Tensor:
    """Shift ``(N*T, C, ...)`` frames (``T = num_segments``): 1/``fold_div`` of the channels
    read the next frame, 1/``fold_div`` the previous one, the rest stay; zeros at clip ends."""
    return _temporal_shift_op(x, num_segments, fold_div, False)


class TemporalShift(nn.Module):
    """:func:`temporal_shift` as a parameter-free module (TSM places it before the first 1x1
    conv of a residual branch). ``num_segments`` is the clip length; set per forward with
    :attr:`num_segments` when it changes (the TSM backbone does)."""

    def __init__(self, num_segments: int = 8, fold_div: int = 8) -> None:
        super().__init__()
        self.num_segments, self.fold_div = num_segments, fold_div

    def forward(self, x: Tensor) -> Tensor:
        return temporal_shift(x, self.num_segments, self.fold_div)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"
