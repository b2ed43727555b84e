"""Inference fusion: fold BatchNorm into neighbouring convolutions, fewer passes over memory.

``fuse_for_inference(model)`` returns an eval-only copy whose logits equal the model's in eval
mode within fp32 rounding (the folds are computed in float64):

* every inference BatchNorm that directly follows a convolution is folded into it (the
  convolution gains a bias), as deployment tools fold conv + BN: ``conv -> bn [-> act]`` in
  ``nn.Sequential`` containers (X3D, VoV3D, R3D/SRTG, ResNet downsampling), the ResNet stem and
  bottlenecks (TSM), RubiksNet's ``conv2 -> bn2``;
* the activation after such a convolution, and a residual addition after it, run in the
  convolution's epilogue (:class:`ConvAct`: one oneDNN call on CPU,
  ``torch.ops.mkldnn._convolution_pointwise``, as ``torch.compile`` uses it), instead of as
  passes that write and read the whole tensor again;
* RubiksNet's pre-activation BNs (``bn1``, ``bn_last``) cannot fold into a convolution: the
  identity shortcut needs their input. They become a :class:`FrozenAffine`, applied together with
  their ReLU in one pass (``affine_relu``, CPU kernel in ``cuda/fused_inference.cpp``).

Elsewhere (GPU, or without oneDNN / the extension) the same is composed from PyTorch ops. A fused
model refuses to train.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actionlab.ops import rubiks_shift as _rs

__all__ = [
    "ConvAct",
    "FrozenAffine",
    "affine_relu",
    "bn_affine",
    "fold_affine_into_conv",
    "fold_bn_into_conv",
    "fuse_for_inference",
    "is_fused",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = nn.modules.batchnorm._BatchNorm
_FUSED_ATTR = "_actionlab_fused_for_inference"


def bn_affine(bn: _BN) -> tuple[Tensor, Tensor]:
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


def fold_affine_into_conv(conv: nn.Module, scale: Tensor, bias: Tensor | float = 0.0) -> nn.Module:
    """``conv'(x) == conv(x) * scale[c] + bias[c]``: scales ``conv``'s output channels and adds to
    (or gives it) a bias, in place (float64 arithmetic, the weight keeps its dtype and memory
    format); returns ``conv``."""
    scale = scale.double()
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
    return conv


def fold_bn_into_conv(conv: nn.Module, bn: _BN) -> nn.Module:
    """``bn(conv(x)) == conv'(x)``, in place (see :func:`fold_affine_into_conv`); returns
    ``conv``."""
    return fold_affine_into_conv(conv, *bn_affine(bn))


class FrozenAffine(nn.Module):
    """An inference BatchNorm that cannot fold into a convolution, as a per-channel ``scale``
    and ``bias`` (buffers, in the BN's dtype): ``x * scale + bias`` on ``(N, C, ...)``."""

    def __init__(self, bn: _BN) -> None:
        super().__init__()
        scale, bias = bn_affine(bn)
        dtype = bn.running_mean.dtype
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("bias", bias.to(dtype))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)


def affine_relu(x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """``relu(x * scale[c] + bias[c])`` on ``(N, C, ...)`` in one pass (CPU kernel), in the layout
    of ``x``."""
    if x.device.type == "cpu" and (_rs._registered or _rs.kernel_available()):
        return torch.ops.actionlab.affine_relu(x, scale, bias)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return torch.relu(x * scale.view(shape).to(x.dtype) + bias.view(shape).to(x.dtype))


# Activations a convolution epilogue runs, by module type, with their PyTorch fallback.
_ACTIVATIONS: dict[str, callable] = {"relu": torch.relu, "swish": F.silu}


def _activation_name(module: nn.Module) -> str | None:
    from actionlab.models.layers import Swish

    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, (nn.SiLU, Swish)):
        return "swish"
    return None


def _has_pointwise_conv() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class ConvAct(nn.Module):
    """``act(conv(x) [+ residual])`` for inference: on CPU one oneDNN convolution with the add
    and the activation in its epilogue (``torch.ops.mkldnn._convolution_pointwise``), otherwise
    the same from PyTorch ops. ``conv`` usually has a BatchNorm folded into it; ``act`` is
    ``"relu"``, ``"swish"`` or ``None``."""

    def __init__(self, conv: nn.Module, act: str | None = None) -> None:
        super().__init__()
        if act is not None and act not in _ACTIVATIONS:
            raise ValueError(f"ConvAct act must be one of {sorted(_ACTIVATIONS)} or None, got {act!r}")
        self.conv, self.act = conv, act
        self._native = (
            isinstance(conv, (nn.Conv2d, nn.Conv3d))
            and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            and _has_pointwise_conv()
        )

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        conv = self.conv
        # Under torch.compile the plain ops are traced (inductor fuses them itself; the oneDNN
        # op has no fake kernel).
        native = self._native and not torch.compiler.is_compiling()
        if native and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16):
            args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, conv.weight, conv.bias, *args, self.act or "none", [], ""
                )
            # oneDNN fuses only a ReLU after a binary post-op; other activations run after.
            post = self.act if self.act == "relu" else None
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, conv.weight, conv.bias, *args, "add", None, post, [], None
            )
            return _ACTIVATIONS[self.act](y) if self.act and post is None else y
        y = conv(x)
        if residual is not None:
            y = y + residual
        return _ACTIVATIONS[self.act](y) if self.act else y

    def extra_repr(self) -> str:
        return f"act={self.act}"


class FusedBottleneck(nn.Module):
    """A ResNet bottleneck (``actionlab.models.resnet.Bottleneck``) for inference: its three
    conv-BN(-ReLU) as :class:`ConvAct`, the residual add and the final ReLU in ``conv3``'s
    epilogue; the (TSM) shift stays before ``conv1``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.shift = block.shift
        self.conv1 = ConvAct(fold_bn_into_conv(block.conv1, block.bn1), "relu")
        self.conv2 = ConvAct(fold_bn_into_conv(block.conv2, block.bn2), "relu")
        self.conv3 = ConvAct(fold_bn_into_conv(block.conv3, block.bn3), "relu")
        ds = block.downsample
        self.downsample = None if ds is None else ConvAct(fold_bn_into_conv(ds[0], ds[1]))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        h = x if self.shift is None else self.shift(x)
        return self.conv3(self.conv2(self.conv1(h)), identity)


def _fold_sequential(seq: nn.Sequential) -> None:
    """``conv -> bn [-> relu | swish]`` runs inside ``seq``: folded into one :class:`ConvAct`."""
    names = list(seq._modules)
    for i in range(len(names) - 1):
        conv, bn = seq._modules[names[i]], seq._modules[names[i + 1]]
        if not (isinstance(conv, _CONVS) and isinstance(bn, _BN) and bn.track_running_stats):
            continue
        fold_bn_into_conv(conv, bn)
        seq._modules[names[i + 1]] = nn.Identity()
        act = _activation_name(seq._modules[names[i + 2]]) if i + 2 < len(names) else None
        if act is not None:
            seq._modules[names[i + 2]] = nn.Identity()
        seq._modules[names[i]] = ConvAct(conv, act)


def _refuse_training(module: nn.Module, args: tuple) -> None:
    if module.training:
        raise RuntimeError(
            f"{type(module).__name__} was fused for inference (BatchNorm folded into its "
            "convolutions), so it cannot train; train the original model and fuse a copy"
        )


def _fuse_family(model: nn.Module) -> None:
    """Folds where a forward (not a Sequential) orders conv, BN and activation."""
    from actionlab.models.resnet import Bottleneck, ResNet
    from actionlab.models.rubiksnet import RubiksNetBackbone

    for module in list(model.modules()):
        if isinstance(module, ResNet) and isinstance(module.bn1, _BN):
            module.conv1 = ConvAct(fold_bn_into_conv(module.conv1, module.bn1), "relu")
            module.bn1, module.relu = nn.Identity(), nn.Identity()
        elif isinstance(module, RubiksNetBackbone):
            module.fuse_for_inference_()
        for name, child in module.named_children():
            if isinstance(child, Bottleneck):
                setattr(module, name, FusedBottleneck(child))


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
