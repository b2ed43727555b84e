"""RubiksNet-AQ: attention-quantized temporal shift, budget loss, annealing to one-hot shifts."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from actionlab.lit.aq_callbacks import AQTemperatureAnneal, temperature_at
from actionlab.models.rubiksnet import RubiksNet, TemporalAttentionShift, rubiksnet_tiny_aq
from actionlab.ops.rubiks_shift import RubiksShift2d, rubiks_shift_reference


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: extra OpenMP threads only add contention on a shared CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_large_aq_parameter_count_and_released_key_layout():
    model = RubiksNet("large", num_classes=174, variant="rubiks3d-aq")
    # Released layout: 8,563,854 with (C_in, 3) attention logits and (2, C) 2D shifts.
    assert sum(p.numel() for p in model.parameters()) == 8_563_854
    state = model.state_dict()
    assert state["backbone.layer2.0.conv2.0.T"].shape == ()
    assert state["backbone.layer2.0.conv2.0.weight"].shape == (72, 3)  # C_in of the block
    assert state["backbone.layer2.0.conv2.1.weight"].shape == (144, 72, 1, 1)
    assert state["backbone.layer2.0.as3.shift"].shape == (2, 144)
    assert not any("rubiks3d" in k for k in state)


def test_aq_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = rubiksnet_tiny_aq(num_classes=5)
    x = torch.randn(2, 3, 4, 16, 16)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    block = model.backbone.layer1[0]
    assert block.conv2[0].weight.grad.abs().sum() > 0
    assert block.as3.shift.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv2[0].T.requires_grad is False


def test_attention_shift_equals_the_released_depthwise_conv1d():
    torch.manual_seed(1)
    layer = TemporalAttentionShift(6, temperature=0.7)
    x = torch.randn(2, 5, 6, 3, 4)
    n, t, c, h, w = x.shape
    # Released AttentionShift: softmax((W / (std + 1e-6)) / T), conv1d over T, padding 1,
    # groups = C*H*W, weights repeated over H*W.
    weight = layer.weight
    kernel = torch.softmax((weight / (weight.std(dim=1, keepdim=True) + 1e-6)) / 0.7, dim=1)
    seq = x.permute(0, 2, 3, 4, 1).reshape(n, c * h * w, t)
    out = F.conv1d(seq, kernel.repeat_interleave(h * w, dim=0)[:, None], padding=1, groups=c * h * w)
    expected = out.view(n, c, h, w, t).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(layer(x), expected)


def test_hard_quantisation_is_an_integer_frame_shift():
    torch.manual_seed(2)
    layer = TemporalAttentionShift(9)
    layer.T.fill_(0.0)
    x = torch.randn(2, 6, 9, 3, 3, dtype=torch.float64)
    attention = layer.attention()
    assert torch.all((attention == 0) | (attention == 1)) and torch.all(attention.sum(1) == 1)
    # Tap 0, 1, 2 reads frame t-1, t, t+1: RubiksShift temporal shifts -1, 0, +1.
    shift_t = attention.argmax(dim=1).to(torch.float64) - 1
    shift = torch.stack([shift_t, torch.zeros(9, dtype=torch.float64), torch.zeros(9, dtype=torch.float64)])
    torch.testing.assert_close(layer(x), rubiks_shift_reference(x, shift), rtol=0, atol=0)


def test_rubiks_shift2d_is_a_spatial_only_shift():
    torch.manual_seed(3)
    layer = RubiksShift2d(5, stride=2)
    x = torch.randn(2, 3, 5, 7, 6)
    shift3 = torch.cat([torch.zeros(1, 5), layer.shift.detach()])
    expected = torch.stack([rubiks_shift_reference(x[:, i : i + 1], shift3, (1, 2, 2))[:, 0] for i in range(3)], 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_budget_loss_gradient_and_threshold():
    torch.manual_seed(4)
    model = RubiksNet("tiny", num_classes=3, variant="rubiks3d-aq", aq_budget=0.125).double()
    loss = model.auxiliary_losses()["aq_budget"]
    fraction = model.temporal_shift_fraction()
    # U(0, 1) logits at T=2: every channel keeps about 2/3 of its mass on shifted taps.
    assert 0.5 < fraction.item() < 0.8
    torch.testing.assert_close(loss, fraction - 0.125)
    params = [m.weight for m in model.attention_shifts()]
    grads = torch.autograd.grad(loss, params)
    direction = [torch.randn_like(p) for p in params]
    eps = 1e-6

    def loss_at(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
            value = float(model.auxiliary_losses()["aq_budget"])
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
        return value

    numeric = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))
    assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic))
    # A step against the gradient lowers the shifted fraction.
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(10.0 * g / g.norm())
    assert model.temporal_shift_fraction().item() < fraction.item()
    # Under budget the loss and its gradient vanish.
    with torch.no_grad():
        for m in model.attention_shifts():
            m.weight.copy_(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(m.weight))
    model.set_aq_temperature(0.05)
    under = model.auxiliary_losses()["aq_budget"]
    assert float(under) == 0.0
    assert all(float(g.abs().sum()) == 0 for g in torch.autograd.grad(under, params))
    assert RubiksNet("tiny", num_classes=3).auxiliary_losses() == {}


def test_temperature_schedules():
    assert temperature_at(0.0, 2.0, 0.01) == pytest.approx(2.0)
    assert temperature_at(1.0, 2.0, 0.01) == pytest.approx(0.01)
    assert temperature_at(0.5, 2.0, 0.02) == pytest.approx(0.2)  # geometric midpoint
    assert temperature_at(0.5, 2.0, 0.0, "linear") == pytest.approx(1.0)
    assert temperature_at(1.0, 2.0, 0.01, "cosine") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule must be one of"):
        AQTemperatureAnneal(schedule="step")


class _TinyClassifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = rubiksnet_tiny_aq(num_classes=3)
        self.temperatures: list[float] = []

    def training_step(self, batch, batch_idx):
        self.temperatures.append(float(self.model.attention_shifts()[0].T))
        clips, labels = batch
        loss = F.cross_entropy(self.model(clips), labels)
        return loss + sum(self.model.auxiliary_losses().values())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_annealing_callback_ends_one_hot(tmp_path):
    torch.manual_seed(5)
    data = TensorDataset(torch.randn(12, 3, 2, 16, 16), torch.randint(0, 3, (12,)))
    module = _TinyClassifier()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[AQTemperatureAnneal(t_start=2.0, t_end=0.01, log=False)],
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    temps = module.temperatures
    assert len(temps) == 6 and temps[0] == pytest.approx(2.0) and temps[-1] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(temps, temps[1:]))
    for layer in module.model.attention_shifts():
        attention = layer.attention()
        assert float(layer.T) == 0.0
        assert torch.all(attention.max(dim=1).values == 1) and torch.all(attention.sum(dim=1) == 1)


def test_annealing_callback_rejects_models_without_attention(tmp_path):
    class Plain(_TinyClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.model = RubiksNet("tiny", num_classes=3)

    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[AQTemperatureAnneal()],
                        default_root_dir=tmp_path)
    data = TensorDataset(torch.randn(2, 3, 2, 16, 16), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="needs a RubiksNet-AQ model"):
        trainer.fit(Plain(), DataLoader(data, batch_size=2))


@pytest.mark.slow
def test_train_with_aq_config(compose_train):
    """model=rubiks_tiny_aq callbacks=aq_anneal through the training task: quantised at the end."""
    from actionlab.train import run

    cfg = compose_train("model=rubiks_tiny_aq", "callbacks=aq_anneal", "trainer.max_epochs=1",
                        "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1")
    assert cfg.callbacks.aq_anneal.t_start == 2.0 and "model_checkpoint" in cfg.callbacks
    run(cfg)
    from pathlib import Path

    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    temps = [v for k, v in ckpt["state_dict"].items() if k.endswith("conv2.0.T")]
    assert temps and all(float(t) == 0.0 for t in temps)
