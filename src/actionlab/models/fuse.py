"""Inference fusion: fold BatchNorm into neighbouring convolutions, fewer passes over memory.

``fuse_for_inference(model)`` returns an eval-only copy whose logits equal the model's in eval
mode within fp32 rounding (the folds are computed in float64):

* every inference BatchNorm that directly follows a convolution is folded into it (the
  convolution gains a bias): ``conv -> bn`` pairs in ``nn.Sequential`` containers (X3D, VoV3D,
  R3D/SRTG, ResNet downsampling), the ResNet stem and the three of every ResNet bottleneck (TSM),
  and RubiksNet's ``conv2 -> bn2``, as deployment tools fold conv + BN;
* RubiksNet: the ReLU after ``bn2`` runs inside the shift (applied to each value as the shift
  reads it, ``rubiks_shift_act``), and each residual sum is added in place and activated by the
  next block's pre-activation BN + ReLU in one pass (``add_affine_relu_``); its pre-activation
  BNs (``bn1``, ``bn_last``) cannot fold into a convolution because the identity shortcut needs
  their input, so they become a per-channel :class:`FrozenAffine`.

The CPU kernels of the fused elementwise ops are in ``cuda/fused_inference.cpp``; elsewhere (or
without the extension) the same is composed from PyTorch ops. A fused model refuses to train.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from actionlab.ops import rubiks_shift as _rs

__all__ = [
    "FrozenAffine",
    "add_affine_relu_",
    "affine_relu",
    "bn_affine",
    "fold_bn_into_conv",
    "fuse_for_inference",
    "is_fused",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FUSED_ATTR = "_actionlab_fused_for_inference"


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """The inference BatchNorm ``bn`` as ``x * scale + bias`` (float64 ``(C,)`` tensors)."""
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError(f"{bn} has no running statistics: it normalises with batch statistics "
                         "even in eval mode, so it cannot be folded")
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    bias = -mean * scale
    if bn.bias is not None:
        bias = bias + bn.bias.detach().double()
    return scale, bias


def fold_bn_into_conv(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """``bn(conv(x)) == conv'(x)``: scales ``conv``'s output channels and gives it a bias, in
    place (float64 arithmetic, the weight keeps its dtype and memory format)."""
    scale, bias = bn_affine(bn)
    weight = conv.weight.detach()
    shape = (-1,) + (1,) * (weight.ndim - 1)
    folded = (weight.double() * scale.view(shape)).to(weight.dtype)
    conv.weight.data.copy_(folded)
    old_bias = conv.bias.detach().double() if conv.bias is not None else 0.0
    new_bias = (old_bias * scale + bias).to(weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.data.copy_(new_bias)


class FrozenAffine(nn.Module):
    """An inference BatchNorm that cannot fold into a convolution, as a per-channel ``scale``
    and ``bias`` (buffers, in the BN's dtype): ``x * scale + bias`` on ``(N, C, ...)``."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        scale, bias = bn_affine(bn)
        dtype = bn.running_mean.dtype
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("bias", bias.to(dtype))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)


def _use_kernel(x: Tensor) -> bool:
    return x.device.type == "cpu" and (_rs._registered or _rs.kernel_available())


def affine_relu(x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """``relu(x * scale[c] + bias[c])`` on ``(N, C, ...)`` in one pass (CPU kernel), in the layout
    of ``x``."""
    if _use_kernel(x):
        return torch.ops.actionlab.affine_relu(x, scale, bias)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return torch.relu(x * scale.view(shape).to(x.dtype) + bias.view(shape).to(x.dtype))


def add_affine_relu_(x: Tensor, residual: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """``x += residual`` in place, then ``relu(x * scale[c] + bias[c])``: the residual sum of a
    pre-activation block and the next block's BN + ReLU of it, in one pass (CPU kernel)."""
    if _use_kernel(x):
        return torch.ops.actionlab.add_affine_relu_(x, residual, scale, bias)
    x.add_(residual)
    return affine_relu(x, scale, bias)


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for first, second in zip(names, names[1:]):
        conv, bn = seq._modules[first], seq._modules[second]
        if isinstance(conv, _CONVS) and isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats:
            fold_bn_into_conv(conv, bn)
            seq._modules[second] = nn.Identity()


def _fold_attr(owner: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats:
        fold_bn_into_conv(conv, bn)
        setattr(owner, bn_name, nn.Identity())


def _refuse_training(module: nn.Module, args: tuple) -> None:
    if module.training:
        raise RuntimeError(
            f"{type(module).__name__} was fused for inference (BatchNorm folded into its "
            "convolutions), so it cannot train; train the original model and fuse a copy"
        )


def _fuse_family(model: nn.Module) -> None:
    """Model-specific folds where a forward (not a Sequential) orders conv and BN."""
    from actionlab.models.resnet import Bottleneck, ResNet
    from actionlab.models.rubiksnet import RubiksNetBackbone

    for module in model.modules():
        if isinstance(module, Bottleneck):
            for i in (1, 2, 3):
                _fold_attr(module, f"conv{i}", f"bn{i}")
        elif isinstance(module, ResNet):
            _fold_attr(module, "conv1", "bn1")
        elif isinstance(module, RubiksNetBackbone):
            module.fuse_for_inference_()


def fuse_for_inference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` (``inplace=True``: ``model`` itself) with its BatchNorms
    folded and its elementwise passes fused (see the module docstring); logits equal the
    unfused model's in eval mode within fp32 rounding. Calling ``.train()`` and then forward
    raises: the folded weights are not the trainable parameters any more."""
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    _fuse_family(fused)
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    if not getattr(fused, _FUSED_ATTR, False):
        fused.register_forward_pre_hook(_refuse_training)
        setattr(fused, _FUSED_ATTR, True)
    return fused


def is_fused(model: nn.Module) -> bool:
    """True for models returned by :func:`fuse_for_inference`."""
    return getattr(model, _FUSED_ATTR, False)
