"""X3D/VoV3D ``release_head``: the released PySlowFast/VoV3D head (fixed stride-1 pooling and
per-position softmax averaging) at a 256 test input, and unchanged logits by default."""

import math

import pytest
import torch
import torch.nn.functional as F

from actionlab.models.heads import X3DHead
from actionlab.models.vov3d import vov3d_m
from actionlab.models.x3d import release_pool, x3d_xs


def reference_head(head: X3DHead, x: torch.Tensor, pool_size) -> torch.Tensor:
    """PySlowFast ``slowfast/models/head_helper.py`` ``X3DHead.forward`` in eval mode, written
    down from the original: conv_5 + BN + ReLU, ``AvgPool3d(pool_size, stride=1)``, lin_5 +
    ReLU, permute to channels last, the FC per position, ``Softmax(dim=4)``, mean over
    ``[1, 2, 3]`` (T, H, W positions)."""
    x = head.conv_5(x)
    x = F.avg_pool3d(x, pool_size, stride=1)
    x = torch.relu(head.lin_5(x))
    x = head.projection(x.permute(0, 2, 3, 4, 1))
    return x.softmax(dim=4).mean([1, 2, 3])


def test_release_pool_is_the_builders_kernel():
    # spat_sz = ceil(TRAIN_CROP_SIZE / 32), pool_size = [NUM_FRAMES, spat_sz, spat_sz].
    assert release_pool(16, 224) == (16, 7, 7)
    assert release_pool(4, 160) == (4, 5, 5)
    assert release_pool(16, 312) == (16, 10, 10)


@pytest.mark.parametrize("shape, positions", [((1, 7, 7), 1), ((1, 8, 8), 4), ((2, 9, 7), 6)])
def test_release_head_equals_the_original_head(shape, positions):
    torch.manual_seed(0)
    head = X3DHead(24, 32, num_classes=10, dim_out=48, pool_size=(1, 7, 7)).eval()
    for p in head.parameters():  # non-trivial BN statistics
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 24, *shape)
    out = head(x)
    probs = reference_head(head, x, tuple(min(k, n) for k, n in zip((1, 7, 7), shape)))
    assert out.shape == (2, 10)
    # The output's softmax is the original's per-position softmax average, to float precision.
    torch.testing.assert_close(out.softmax(-1), probs, rtol=1e-5, atol=1e-6)
    if positions == 1:  # one position: the logits themselves, as the global head gives them
        glob = X3DHead(24, 32, num_classes=10, dim_out=48).eval()
        glob.load_state_dict(head.state_dict())
        torch.testing.assert_close(out, glob(x), rtol=1e-5, atol=1e-6)
    else:
        assert out.exp().sum(-1).sub(1).abs().max() < 1e-5  # log-probabilities
        assert math.isfinite(float(out.min()))


def test_x3d_and_vov3d_release_head_option_same_weights():
    torch.manual_seed(0)
    default = x3d_xs(num_classes=5, num_frames=4).eval()
    release = x3d_xs(num_classes=5, num_frames=4, release_head=True, train_crop_size=160).eval()
    assert set(default.state_dict()) == set(release.state_dict())  # same checkpoint keys
    release.load_state_dict(default.state_dict())
    assert release.head.pool_size == (4, 5, 5) and default.head.pool_size is None
    x = torch.randn(1, 3, 4, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(release(x), default(x), rtol=1e-4, atol=1e-5)  # 1 position
        big = torch.randn(1, 3, 4, 182, 182)  # X3D-XS 3-crop test size: 6 x 6 -> 2 x 2 positions
        a, b = release(big), default(big)
    assert not torch.allclose(a.softmax(-1), b.softmax(-1))
    v = vov3d_m(num_classes=3, num_frames=4, release_head=True)
    assert v.head.pool_size == (4, 7, 7) and v.train_crop_size == 224
