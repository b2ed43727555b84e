"""RubiksShift: a learnable per-channel 3D shift by trilinear interpolation.

Fan, Buch, Wang, et al. "RubiksNet: Learnable 3D-Shift for Efficient Video Action
Recognition", ECCV 2020. Semantics follow the released CUDA kernel (see
``docs/operators.md``):

* input ``x`` is ``(N, T, C, H, W)``, shifts are ``(3, C)`` with rows ``(T, H, W)``;
* ``out[n, t, c, h, w] = x(t * sT + s_T[c], h * sH + s_H[c], w * sW + s_W[c])`` sampled by
  trilinear interpolation, every one of the 8 corners zero-padded on its own;
* stride ``(sT, sH, sW)`` subsamples like a 1x1 convolution: output size ``(L - 1) // s + 1``.

This module holds the pure-PyTorch reference, which is the oracle for every fast path, and
the entry point of the compiled operator ``actionlab::rubiks_shift`` (schema and CPU kernels in
``cuda/rubiks_shift.cpp``, CUDA kernels in ``cuda/rubiks_shift_cuda.cu``, built by
``actionlab.ops._extension``); its fake kernels and autograd are registered here with
``torch.library`` so it works under ``torch.compile(fullgraph=True)``.
Trilinear interpolation with per-corner zero padding is separable, so the reference runs
three 1D linear interpolations (T, then H, then W), each two gathers; autograd gives the
exact adjoint for the input. For the shift gradient at exactly integer shifts (where the
derivative is undefined) it uses the central difference ``0.5 * (x[s+1] - x[s-1])`` of
the released 2D kernel, not the 3D kernel's quirk (``docs/operators.md``).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from actionlab.ops import _extension

__all__ = [
    "rubiks_shift",
    "rubiks_shift_reference",
    "rubiks_shift_kernel",
    "rubiks_shift_act",
    "is_channels_last",
    "kernel_available",
    "RubiksShift3d",
    "RubiksShift2d",
    "normalize_shift_grad",
    "output_size",
]

IMPLEMENTATIONS = ("auto", "kernel", "reference")


def output_size(length: int, stride: int) -> int:
    """Length of an axis after a strided shift (1x1-conv-like subsampling)."""
    return (length - 1) // stride + 1


def _axis_shape(ndim: int, dim: int, channel_dim: int, length: int, channels: int) -> list[int]:
    shape = [1] * ndim
    shape[dim] = length
    shape[channel_dim] = channels
    return shape


def _gather_axis(x: Tensor, index: Tensor, dim: int, out_shape: Sequence[int]) -> Tensor:
    """``x`` gathered along ``dim`` at ``index`` (broadcast to ``out_shape``), 0 out of range."""
    length = x.shape[dim]
    valid = (index >= 0) & (index < length)
    gathered = torch.gather(x, dim, index.clamp(0, length - 1).expand(*out_shape))
    return gathered * valid.to(x.dtype)


def _axis_index(base: Tensor, offset: Tensor, dim: int, shape: Sequence[int]) -> Tensor:
    """Indices ``base[l] + offset[c]`` laid out as ``shape`` (length at ``dim``, channels at 2)."""
    index = base[None, :] + offset[:, None]  # (C, L)
    return (index.transpose(0, 1) if dim < 2 else index).reshape(shape)


def _shift_axis(x: Tensor, shift: Tensor, dim: int, stride: int) -> Tensor:
    """1D linear-interpolation shift of ``x`` along ``dim`` with a per-channel (dim 2) shift."""
    length, channels = x.shape[dim], x.shape[2]
    out_len = output_size(length, stride)
    shape = _axis_shape(x.ndim, dim, 2, out_len, channels)
    out_shape = list(x.shape)
    out_shape[dim] = out_len

    # Index math is (C, L_out); it is laid out as (1, L, C, 1, 1)-style views for gather.
    base = torch.arange(out_len, device=x.device) * stride
    floor = torch.floor(shift.detach())
    frac = shift - floor  # carries d/ds = 1
    lo = _axis_index(base, floor.to(torch.long), dim, shape)
    a = _gather_axis(x, lo, dim, out_shape)
    b = _gather_axis(x, lo + 1, dim, out_shape)
    frac_b = frac.to(x.dtype).view(_axis_shape(x.ndim, dim, 2, 1, channels))
    out = a + frac_b * (b - a)

    at_integer = frac.detach() == 0
    if shift.requires_grad and bool(at_integer.any()):
        # d out / d s is undefined at integer shifts; use 0.5 * (x[s+1] - x[s-1]) there.
        # The added term is zero in value and contributes only to the shift gradient.
        prev = _gather_axis(x, lo - 1, dim, out_shape)
        central = 0.5 * (b - prev) - (b - a)
        mask = at_integer.to(x.dtype).view(_axis_shape(x.ndim, dim, 2, 1, channels))
        out = out + (frac_b - frac_b.detach()) * (mask * central).detach()
    return out


def rubiks_shift_reference(
    x: Tensor,
    shift: Tensor,
    stride: Sequence[int] | int = 1,
    quantize: bool = False,
) -> Tensor:
    """Pure-PyTorch RubiksShift: ``(N, T, C, H, W)`` and shifts ``(3, C)`` to ``(N, T', C, H', W')``.

    Args:
        x: input features ``(N, T, C, H, W)``.
        shift: real-valued shifts ``(3, C)``, rows ``(T, H, W)``; ``out(p) = x(p + s)``.
        stride: ``(sT, sH, sW)`` or one int for all axes; output size ``(L - 1) // s + 1``.
        quantize: round shifts to the nearest integer in the forward pass; the shift gradient
            stays the interpolation derivative (a straight-through estimator).
    """
    if x.ndim != 5:
        raise ValueError(f"rubiks_shift expects x of shape (N, T, C, H, W), got {tuple(x.shape)}")
    if shift.ndim != 2 or shift.shape[0] != 3 or shift.shape[1] != x.shape[2]:
        raise ValueError(
            f"rubiks_shift expects shift of shape (3, C={x.shape[2]}), got {tuple(shift.shape)}"
        )
    st, sh, sw = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
    shift = shift.to(x.dtype) if shift.dtype != x.dtype else shift
    if quantize:
        # Forward and input gradient use the rounded shift (round half up, as the released
        # kernel); the shift gradient is the interpolation derivative (straight-through).
        hard = _shift_xyz(x, torch.floor(shift.detach() + 0.5), (st, sh, sw))
        soft = _shift_xyz(x.detach(), shift, (st, sh, sw))
        return hard + (soft - soft.detach())
    return _shift_xyz(x, shift, (st, sh, sw))


def _shift_xyz(x: Tensor, shift: Tensor, stride: tuple[int, int, int]) -> Tensor:
    out = _shift_axis(x, shift[0], 1, stride[0])
    out = _shift_axis(out, shift[1], 3, stride[1])
    return _shift_axis(out, shift[2], 4, stride[2])


def _stride3(stride: Sequence[int] | int) -> list[int]:
    st = [stride] * 3 if isinstance(stride, int) else [int(v) for v in stride]
    if len(st) != 3 or min(st) < 1:
        raise ValueError(f"rubiks_shift stride must be an int or 3 ints >= 1, got {stride!r}")
    return st


# --- compiled operator: actionlab::rubiks_shift (schema and kernels in cuda/) --------------------

_registered = False


def _out_shape(x: Tensor, stride: Sequence[int]) -> list:
    n, t, c, h, w = x.shape
    return [n, (t - 1) // stride[0] + 1, c, (h - 1) // stride[1] + 1, (w - 1) // stride[2] + 1]


def is_channels_last(x: Tensor) -> bool:
    """True if ``x`` ``(N, T, C, H, W)`` is stored ``N, T, H, W, C``: the 5-D view of a
    ``torch.channels_last`` ``(N*T, C, H, W)`` tensor, the kernels' second native layout (the
    same test as ``is_channels_last`` in ``cuda/rubiks_shift_args.h``)."""
    return x.dim() == 5 and not x.is_contiguous() and x.permute(0, 1, 3, 4, 2).is_contiguous()


def _empty_in_layout(like: Tensor, size: Sequence, channels_last: bool) -> Tensor:
    """What the kernels allocate: an empty ``size`` tensor in the layout they were given."""
    if not channels_last:
        return like.new_empty(size)
    n, t, c, h, w = size
    return like.new_empty((n, t, h, w, c)).permute(0, 1, 4, 2, 3)


def _register_python_parts() -> None:
    """Fake (meta) kernels and autograd of the C++-defined ops, once the library is loaded."""
    global _registered
    if _registered:
        return
    ops = torch.ops.actionlab

    @torch.library.register_fake("actionlab::rubiks_shift")
    def _(x: Tensor, shift: Tensor, stride: list[int], quantize: bool) -> Tensor:
        torch._check(x.dim() == 5 and shift.dim() == 2 and shift.shape[1] == x.shape[2])
        return _empty_in_layout(x, _out_shape(x, stride), is_channels_last(x))

    @torch.library.register_fake("actionlab::rubiks_shift_act")
    def _(x, shift, stride, quantize, scale, bias, relu) -> Tensor:
        torch._check(x.dim() == 5 and shift.dim() == 2 and shift.shape[1] == x.shape[2])
        return _empty_in_layout(x, _out_shape(x, stride), is_channels_last(x))

    # The fused inference elementwise op of cuda/fused_inference.cpp (actionlab.models.fuse).
    @torch.library.register_fake("actionlab::affine_relu")
    def _(x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        return torch.empty_like(x)

    @torch.library.register_fake("actionlab::rubiks_shift_grad_input")
    def _(grad, shift, input_size, stride, quantize, channels_last=None):
        layout = is_channels_last(grad) if channels_last is None else channels_last
        return _empty_in_layout(grad, input_size, layout)

    @torch.library.register_fake("actionlab::rubiks_shift_grad_shift")
    def _(grad: Tensor, x: Tensor, shift: Tensor, stride: list[int], quantize: bool) -> Tensor:
        return torch.empty_like(shift)

    def setup_context(ctx, inputs, output) -> None:
        x, shift, stride, quantize = inputs
        ctx.save_for_backward(x, shift)
        ctx.stride, ctx.quantize = stride, quantize

    def backward(ctx, grad: Tensor):
        x, shift = ctx.saved_tensors
        grad_x = grad_shift = None
        if ctx.needs_input_grad[0]:
            # In the layout of x (an upstream gradient of 1 x 1 planes does not tell).
            grad_x = ops.rubiks_shift_grad_input(
                grad, shift, x.shape, ctx.stride, ctx.quantize, is_channels_last(x)
            )
        if ctx.needs_input_grad[1]:
            grad_shift = ops.rubiks_shift_grad_shift(grad, x, shift, ctx.stride, ctx.quantize)
        return grad_x, grad_shift, None, None

    torch.library.register_autograd(
        "actionlab::rubiks_shift", backward, setup_context=setup_context
    )
    _registered = True


def kernel_available(build: bool = True) -> bool:
    """True if the compiled op is loaded (building it on first use when ``build``)."""
    if not _extension.is_loaded():
        if not build or torch.compiler.is_compiling() or _extension.load() is None:
            return False
    _register_python_parts()
    return True


def rubiks_shift_kernel(
    x: Tensor, shift: Tensor, stride: Sequence[int] | int = 1, quantize: bool = False
) -> Tensor:
    """The compiled op ``torch.ops.actionlab.rubiks_shift`` (CPU or CUDA kernel by device).

    The gradient it returns is the true gradient (see ``RubiksShift3d`` for normalisation).
    Under autocast it runs in the dtype of ``x`` (fp16/bf16 features with fp32 shifts work
    directly, accumulating in fp32).
    """
    if not kernel_available():
        raise RuntimeError(
            "rubiks_shift impl='kernel' needs the compiled operator, which is unavailable: "
            f"{_extension.unavailable_reason()}. Use impl='auto' to fall back to the reference, "
            "or run `python -m actionlab.ops.build` to see the build log."
        )
    if x.device.type == "cuda" and not _extension.has_cuda_kernels():
        raise RuntimeError(
            "rubiks_shift impl='kernel' on a CUDA tensor, but the extension was built without "
            "its CUDA kernels (no CUDA toolkit found at build time). Set CUDA_HOME and run "
            "`python -m actionlab.ops.build --cuda`, or use impl='auto'."
        )
    return torch.ops.actionlab.rubiks_shift(x, shift, _stride3(stride), quantize)


def rubiks_shift(
    x: Tensor,
    shift: Tensor,
    stride: Sequence[int] | int = 1,
    quantize: bool = False,
    impl: str = "auto",
) -> Tensor:
    """RubiksShift with the fastest available implementation.

    ``impl="auto"`` uses the compiled kernel (built with ninja on first use) and falls back to
    the pure-PyTorch reference with one warning when it cannot be built; ``"kernel"`` requires
    the compiled op; ``"reference"`` forces the pure-PyTorch oracle.
    """
    if impl == "reference":
        return rubiks_shift_reference(x, shift, stride, quantize)
    if impl == "kernel":
        return rubiks_shift_kernel(x, shift, stride, quantize)
    if impl != "auto":
        raise ValueError(f"rubiks_shift impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if _registered or (not torch.compiler.is_compiling() and kernel_available()):
        if x.device.type in ("cpu", "meta") or (
            x.device.type == "cuda" and _extension.has_cuda_kernels()
        ):
            return torch.ops.actionlab.rubiks_shift(x, shift, _stride3(stride), quantize)
        _warn_no_device_kernel(x.device.type)
    return rubiks_shift_reference(x, shift, stride, quantize)


def _pre_activation(x: Tensor, scale: Tensor | None, bias: Tensor | None, relu: bool) -> Tensor:
    c = x.shape[2]
    if scale is not None:
        x = x * scale.to(x.dtype).view(1, 1, c, 1, 1) + bias.to(x.dtype).view(1, 1, c, 1, 1)
    return torch.relu(x) if relu else x


def rubiks_shift_act(
    x: Tensor,
    shift: Tensor,
    stride: Sequence[int] | int = 1,
    quantize: bool = False,
    scale: Tensor | None = None,
    bias: Tensor | None = None,
    relu: bool = False,
    impl: str = "auto",
) -> Tensor:
    """Inference RubiksShift of ``act(x)``, ``act = [x * scale[c] + bias[c]] + [ReLU]``, in one
    pass: the activation is applied to each value as the shift reads it (an inference BatchNorm
    folded to ``scale``/``bias`` and/or the ReLU before the shift, without writing and reading
    their output). Forward only: the compiled op has no autograd; with gradients required, or
    without the kernel, the activation runs as its own ops before :func:`rubiks_shift`.
    """
    if (scale is None) != (bias is None):
        raise ValueError("rubiks_shift_act: pass both scale and bias (a folded BatchNorm) or neither")
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or shift.requires_grad or (scale is not None and scale.requires_grad)
    )
    if impl != "reference" and not needs_grad and (
        _registered or (not torch.compiler.is_compiling() and kernel_available())
    ):
        if x.device.type in ("cpu", "meta") or (
            x.device.type == "cuda" and _extension.has_cuda_kernels()
        ):
            return torch.ops.actionlab.rubiks_shift_act(
                x, shift, _stride3(stride), quantize, scale, bias, relu
            )
    return rubiks_shift(_pre_activation(x, scale, bias, relu), shift, stride, quantize, impl)


_warned_devices: set[str] = set()


def _warn_no_device_kernel(device: str) -> None:
    if device in _warned_devices or torch.compiler.is_compiling():
        return
    _warned_devices.add(device)
    hint = (
        "the extension was built without its CUDA kernels (no CUDA toolkit found: set CUDA_HOME "
        "to a toolkit matching torch.version.cuda, then `python -m actionlab.ops.build --cuda`)"
        if device == "cuda"
        else f"there is no RubiksShift kernel for {device!r} devices"
    )
    warnings.warn(
        f"actionlab: RubiksShift on {device}: {hint}; using the pure-PyTorch reference.",
        RuntimeWarning,
        stacklevel=3,
    )


def normalize_shift_grad(grad: Tensor, t_factor: float = 1.0, eps: float = 0.0) -> Tensor:
    """ActiveShift normalisation: each channel's ``(g_T, g_H, g_W)`` scaled to unit L2 norm.

    ``t_factor`` weights the temporal component before normalising (1.0 in RubiksNet).
    Channels with a zero gradient stay zero.
    """
    g = grad.clone()
    g[0] = g[0] * t_factor
    norm = g.norm(dim=0, keepdim=True)
    return torch.where(norm > eps, g / norm.clamp_min(torch.finfo(g.dtype).tiny), g)


class RubiksShift3d(nn.Module):
    """Learnable RubiksShift layer holding shifts ``(3, C)`` initialised U(-1, 1).

    Input ``(N, T, C, H, W)``. With ``normalize_grad`` (default, as in the paper) the shift
    gradient is L2-normalised per channel by a tensor hook; the op itself returns the true
    gradient.
    """

    def __init__(
        self,
        channels: int,
        stride: Sequence[int] | int = 1,
        normalize_grad: bool = True,
        normalize_t_factor: float = 1.0,
        quantize: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.channels = channels
        self.stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.normalize_grad = normalize_grad
        self.normalize_t_factor = normalize_t_factor
        self.quantize = quantize
        self.impl = impl
        self.shift = nn.Parameter(torch.empty(3, channels).uniform_(-1.0, 1.0))
        if normalize_grad:
            self.shift.register_hook(self._normalize)

    def _normalize(self, grad: Tensor) -> Tensor:
        return normalize_shift_grad(grad, self.normalize_t_factor)

    def forward(
        self, x: Tensor, scale: Tensor | None = None, bias: Tensor | None = None, relu: bool = False
    ) -> Tensor:
        """The shift of ``x``; with ``scale``/``bias`` and/or ``relu`` (inference) the shift of
        ``act(x)`` in one pass (:func:`rubiks_shift_act`)."""
        if scale is None and not relu:
            return rubiks_shift(x, self.shift, self.stride, self.quantize, self.impl)
        return rubiks_shift_act(x, self.shift, self.stride, self.quantize, scale, bias, relu, self.impl)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, stride={self.stride}, normalize_grad={self.normalize_grad}, "
            f"quantize={self.quantize}, impl={self.impl!r}"
        )


class RubiksShift2d(nn.Module):
    """Learnable spatial-only RubiksShift (the released ``RubiksShift2D``): shifts ``(2, C)``,
    rows ``(H, W)``, initialised U(-1, 1); used by the RubiksNet-AQ blocks.

    Input ``(N, T, C, H, W)``; frames are independent (the same op with the temporal axis folded
    into the batch), so a stride applies to ``H`` and ``W`` only.
    """

    def __init__(
        self,
        channels: int,
        stride: int = 1,
        normalize_grad: bool = True,
        quantize: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        self.normalize_grad, self.quantize, self.impl = normalize_grad, quantize, impl
        self.shift = nn.Parameter(torch.empty(2, channels).uniform_(-1.0, 1.0))
        if normalize_grad:
            self.shift.register_hook(normalize_shift_grad)

    def forward(
        self, x: Tensor, scale: Tensor | None = None, bias: Tensor | None = None, relu: bool = False
    ) -> Tensor:
        """As :meth:`RubiksShift3d.forward` (the activation arguments are for inference)."""
        n, t = x.shape[:2]
        shift = torch.cat([self.shift.new_zeros(1, self.channels), self.shift])
        args = (x.reshape(n * t, 1, *x.shape[2:]), shift, (1, self.stride, self.stride), self.quantize)
        if scale is None and not relu:
            y = rubiks_shift(*args, impl=self.impl)
        else:
            y = rubiks_shift_act(*args, scale, bias, relu, self.impl)
        return y.view(n, t, *y.shape[2:])

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, stride={self.stride}, normalize_grad={self.normalize_grad}, "
            f"quantize={self.quantize}, impl={self.impl!r}"
        )
