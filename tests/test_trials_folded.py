"""The folded path of the batched Monte-Carlo trials (CPU): the trials folded into the batch dimension,
per-trial products for the corrupted modules (or a Hopfield network's reads), everything else once.
Same scores as the sequential forward, same accuracies, and the fall-back to vmap where it cannot fold."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import analoglearn.nets  # noqa: F401  (registers the models)
from analoglearn import fold, trials
from analoglearn.evaluate import noisy_accuracy, trial_seed
from analoglearn.noise import AdditiveGaussian, from_config
from analoglearn.trials import BatchedTrialsWarning, draw_trials, folded_forward
from test_evaluate_batched import NETS, net  # the same small models and clean-labelled batches


def spy(monkeypatch):
    """Counts of the folded and the vmapped scorings."""
    calls = {"fold": 0, "vmap": 0}
    folded, guarded = trials._folded, trials._guarded

    def count_fold(*a, **k):
        calls["fold"] += 1
        return folded(*a, **k)

    def count_vmap(*a, **k):
        calls["vmap"] += 1
        return guarded(*a, **k)

    monkeypatch.setattr(trials, "_folded", count_fold)
    monkeypatch.setattr(trials, "_guarded", count_vmap)
    return calls


def batched_and_sequential(predict, model, loader, noise, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchedTrialsWarning)
        bat = noisy_accuracy(predict, model, loader, noise, trials=5, seed=2, batch_trials=True, **kwargs)
    seq = noisy_accuracy(predict, model, loader, noise, trials=5, seed=2)
    return bat, seq


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("rows", [None, 7])
@pytest.mark.parametrize("name", NETS)
def test_folded_scores_match_the_sequential_forward_in_fp32(name, rows, channels_last, monkeypatch) -> None:
    monkeypatch.setattr(fold, "CHANNELS_LAST", channels_last)
    model, loader = net(name, torch.float32)
    noise = from_config({"name": "additive_gaussian", "sigma": 0.3, "bias": True})
    seeds = [trial_seed(0, noise.label, noise.strength, t) for t in range(3)]
    x = loader[0][0]
    scores = folded_forward(model, draw_trials(model, noise, seeds), x, rows=rows)
    assert scores.shape == (3, 32, 10)
    for t, s in enumerate(seeds):
        with torch.no_grad(), noise.applied(model, torch.Generator().manual_seed(s)):
            torch.testing.assert_close(scores[t], model(x), rtol=0, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in model.modules())  # the per-trial forwards removed


@pytest.mark.parametrize("noise", [{"name": "additive_gaussian", "sigma": 0.3},
                                   {"name": "additive_gaussian", "sigma": 0.3, "bias": True, "norm": True}])
@pytest.mark.parametrize("name", NETS)
def test_folded_trials_equal_the_sequential_ones_in_fp64(name, noise, monkeypatch) -> None:
    calls = spy(monkeypatch)
    monkeypatch.setattr(fold, "FOLD_ROWS", 40)  # 8 examples × 5 trials a pass: several passes per batch
    model, loader = net(name)
    bat, seq = batched_and_sequential(lambda x: model(x), model, loader, from_config(noise))
    assert bat.per_trial == seq.per_trial and bat.per_trial_top5 == seq.per_trial_top5
    assert len(set(seq.per_trial)) > 1
    assert calls["fold"] == len(loader) and calls["vmap"] == 1  # vmap only probes 16 examples


class Tied(nn.Module):
    """Uses a corrupted weight outside its module's forward: the fold would miss it, vmap does not."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + x.flatten(1)[:, :10] @ self.fc.weight[:, :10].T


class Transposed(nn.Module):
    """A corrupted module the fold has no per-trial forward for."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 2, 2, stride=2)
        self.fc = nn.Linear(2 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.up(x).flatten(1))


@pytest.mark.parametrize("cls", [Tied, Transposed])
def test_what_cannot_fold_runs_vmapped_without_a_warning(cls, monkeypatch) -> None:
    calls = spy(monkeypatch)
    torch.manual_seed(0)
    model = cls().double().eval()
    x = torch.randn(40, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    loader = [(x[:24], y[:24]), (x[24:], y[24:])]
    noise = from_config({"name": "additive_gaussian", "sigma": 0.5, "modules": ["ConvTranspose2d"]})
    assert any(name.startswith("up.") for name, _ in noise.select(model)) or cls is Tied
    bat, seq = batched_and_sequential(lambda v: model(v), model, loader, noise)
    assert bat.per_trial == seq.per_trial and len(set(seq.per_trial)) > 1
    assert calls["vmap"] == 1 + len(loader)  # the probe, then every batch vmapped


def test_the_folded_path_is_only_used_where_it_was_measured(monkeypatch) -> None:
    calls = spy(monkeypatch)
    model, loader = net("mlp")
    assert trials._folds_on(torch.device("cpu")) and not trials._folds_on(torch.device("meta"))
    monkeypatch.setattr(trials, "_folds_on", lambda device: False)  # e.g. a GPU
    bat, seq = batched_and_sequential(lambda x: model(x), model, loader, AdditiveGaussian(0.3))
    assert bat.per_trial == seq.per_trial and calls["fold"] == 0 and calls["vmap"] == len(loader)


# ----------------------------------------------------------------- Hopfield relaxations
def hopfield(dtype=torch.float64):
    from analoglearn.energy import presets
    from analoglearn.energy.methods import EnergyMethod, EnergyOptions

    model = presets.tiny(None, in_shape=(1, 8, 8), num_classes=4, generator=torch.Generator().manual_seed(0)).to(dtype)
    precision = "fp64" if dtype == torch.float64 else "fp32"
    method = EnergyMethod("CEP", model, EnergyOptions(eval_iterations=25, precision=precision))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 1, 8, 8, generator=g, dtype=dtype)
    y = method.predict(x).argmax(1)
    return model, method, [(x[:24], y[:24]), (x[24:], y[24:])]


@pytest.mark.parametrize("rows", [None, 5])
def test_folded_relaxation_scores_match_the_sequential_relaxation_in_fp32(rows) -> None:
    model, method, loader = hopfield(torch.float32)
    noise = AdditiveGaussian(sigma=1.0)
    seeds = [trial_seed(0, noise.label, 1.0, t) for t in range(3)]
    scores = folded_forward(model, draw_trials(model, noise, seeds), loader[0][0], method.predict, rows=rows)
    for t, s in enumerate(seeds):
        with torch.no_grad(), noise.applied(model, torch.Generator().manual_seed(s)):
            torch.testing.assert_close(scores[t], method.predict(loader[0][0]), rtol=0, atol=1e-5)


def test_folded_relaxation_trials_equal_the_sequential_ones_in_fp64(monkeypatch) -> None:
    calls = spy(monkeypatch)
    monkeypatch.setattr(fold, "FOLD_ROWS_RELAXATION", 30)  # 6 examples × 5 trials a pass
    model, method, loader = hopfield()
    bat, seq = batched_and_sequential(method.predict, model, loader, AdditiveGaussian(sigma=1.0))
    assert bat.to_dict() == seq.to_dict() and len(set(seq.per_trial)) > 1
    assert calls["fold"] == len(loader) and calls["vmap"] == 1


def test_a_relaxation_under_a_reader_runs_vmapped(monkeypatch) -> None:
    from analoglearn.energy.interactions import reading

    calls = spy(monkeypatch)
    model, method, loader = hopfield()
    with reading(lambda op, x, w, site: op(x, w)):
        bat, seq = batched_and_sequential(method.predict, model, loader, AdditiveGaussian(sigma=1.0))
    assert bat.to_dict() == seq.to_dict()
    assert calls["vmap"] == 1 + len(loader)
