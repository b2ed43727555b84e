"""Training-mode BatchNorm + ReLU in one op for channels-last CPU tensors.

``bn_relu(bn, x)`` is ``relu(bn(x))``. Where it can, it runs the CPU kernel of
``cuda/batch_norm_relu.cpp`` (``torch.ops.actionlab.bn_relu_forward`` / ``bn_relu_backward``):
the forward computes the batch statistics and writes ``relu(bn(x))`` channels-last in one
output pass, the backward applies the ReLU mask and the BatchNorm gradient in two passes, and
the running statistics and ``num_batches_tracked`` are updated exactly as ``nn.BatchNorm2d``
does. It exists because PyTorch's channels-last CPU BatchNorm backward is several times slower
than its NCHW one at RubiksNet's widths, and the ReLU after it costs two more passes.

The kernel runs only when all of these hold, otherwise ``bn_relu`` is ``relu(bn(x))`` through
the module itself (same numbers, same hooks): :data:`enabled`; ``type(bn) is nn.BatchNorm2d``
(subclasses such as ``SyncBatchNorm`` keep their own forward); ``bn`` in training mode, affine,
tracking running statistics and without forward hooks; ``x`` a float32 4-D CPU tensor,
channels-last contiguous, with more than one value per channel; autocast off; not under
``torch.compile`` (inductor fuses BatchNorm itself); the compiled extension loaded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from actionlab.ops import rubiks_shift as _rs

__all__ = ["bn_relu", "kernel_applies", "enabled"]

# Module switch (tests and benchmarks flip it to compare with PyTorch's BatchNorm + ReLU).
enabled = True


class BatchNormReLU(torch.autograd.Function):
    """``relu(batch_norm(x, training=True))`` by the compiled op; the running statistics are
    updated in place. Works for float32 and float64 channels-last CPU tensors (float64 for
    ``gradcheck``); not twice differentiable."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor | None,
                running_var: Tensor | None, momentum: float, eps: float) -> Tensor:
        y, mean, invstd = torch.ops.actionlab.bn_relu_forward(
            x, weight, bias, running_mean, running_var, momentum, eps
        )
        # x, not y: the backward recomputes the ReLU mask from x (it reads two tensors, not three).
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, mean, invstd, weight, bias = ctx.saved_tensors
        grad_x, grad_w, grad_b = torch.ops.actionlab.bn_relu_backward(grad_y, x, mean, invstd, weight, bias)
        return grad_x, grad_w, grad_b, None, None, None, None


def _has_hooks(module: nn.Module) -> bool:
    from torch.nn.modules import module as _module

    return bool(module._forward_hooks or module._forward_pre_hooks
                or getattr(_module, "_global_forward_hooks", None)
                or getattr(_module, "_global_forward_pre_hooks", None))


def kernel_applies(bn: nn.Module, x: Tensor) -> bool:
    """Whether :func:`bn_relu` runs the compiled kernel for ``bn`` on ``x`` (see the module
    docstring for the conditions). Builds the extension on first use."""
    if not (enabled and type(bn) is nn.BatchNorm2d and bn.training and bn.affine
            and bn.track_running_stats and bn.running_mean is not None):
        return False
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.ndim == 4
            and bn.weight.dtype == torch.float32
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.numel() > x.shape[1]):  # one value per channel: PyTorch's own error applies
        return False
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling() or _has_hooks(bn):
        return False
    return _rs._registered or _rs.kernel_available()


def bn_relu(bn: nn.Module, x: Tensor, relu: nn.Module | None = None) -> Tensor:
    """``relu(bn(x))``, by the fused channels-last kernel where :func:`kernel_applies`.

    ``relu``: the caller's activation module (``nn.ReLU(inplace=True)`` in RubiksNet's blocks);
    the fallback calls it, and the kernel is used only while it is exactly an ``nn.ReLU`` without
    hooks (a model whose activation was swapped keeps it). ``None`` means ``torch.relu``.
    """
    if relu is not None and (type(relu) is not nn.ReLU or _has_hooks(relu)):
        return relu(bn(x))
    if not kernel_applies(bn, x):
        return torch.relu(bn(x)) if relu is None else relu(bn(x))
    # What nn.BatchNorm2d.forward does before normalising.
    bn.num_batches_tracked.add_(1)
    momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return BatchNormReLU.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps)
