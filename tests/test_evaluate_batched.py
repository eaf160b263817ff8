"""Batched Monte-Carlo trials (``noisy_accuracy(batch_trials=...)``): the same numbers as one pass per
trial, chunking to a memory budget, and the fallback to one pass per trial where vmap cannot be trusted."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import analoglearn.nets  # noqa: F401  (registers the models)
from analoglearn import evaluate, trials
from analoglearn.errors import ConfigError
from analoglearn.evaluate import noisy_accuracy, trial_seed
from analoglearn.noise import AdditiveGaussian, from_config
from analoglearn.registry import MODELS
from analoglearn.trials import (
    BatchedTrialsWarning,
    batched_forward,
    default_memory_budget,
    draw_trials,
    trial_memory,
)

NETS = {  # name: (options, input shape); VGG-11 at width 1/8 on 16×16 inputs: BatchNorm, fast
    "mlp": ({"hidden": [24, 16]}, (1, 8, 8)),
    "lenet": ({"width": 0.5}, (1, 16, 16)),
    "vgg11": ({"width": 0.125}, (3, 16, 16)),
}
NOISES = {
    "additive_gaussian": {"name": "additive_gaussian", "sigma": 0.3},
    "quantize+gaussian": {"name": "compose", "swept": 1,
                          "parts": [{"name": "quantize", "levels": 8}, {"name": "additive_gaussian", "sigma": 0.3}]},
    "stuck_at": {"name": "stuck_at", "p": 0.1, "mode": "both"},
}


def net(name: str, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A model in eval mode (BatchNorm statistics made non-trivial) and 3 test batches (the last short)
    labelled by the clean model (clean accuracy 100 %)."""
    options, shape = NETS[name]
    g = torch.Generator().manual_seed(0)
    model = MODELS.create(name, MODELS.build_options(name, options), in_shape=shape, num_classes=10, generator=g)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.2, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    model = model.to(dtype).eval()
    x = torch.randn(70, *shape, generator=g, dtype=dtype)
    with torch.no_grad():  # labels: the clean network's predictions, so that every trial's errors show
        y = model(x).argmax(1)
    return model, [(x[i : i + 32], y[i : i + 32]) for i in range(0, 70, 32)]


def predictor(model: nn.Module):
    return lambda x: model(x)


def both(model, loader, noise, trials=4, **kwargs):
    """(sequential, batched) results; the batched path must not fall back."""
    seq = noisy_accuracy(predictor(model), model, loader, noise, trials=trials, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchedTrialsWarning)
        bat = noisy_accuracy(predictor(model), model, loader, noise, trials=trials, seed=7, **kwargs)
    return seq, bat


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("name", NETS)
def test_batched_trials_equal_the_sequential_ones_in_fp64(name, noise) -> None:
    model, loader = net(name)
    clean = [p.detach().clone() for p in model.parameters()]
    seq, bat = both(model, loader, from_config(NOISES[noise]), batch_trials=True)
    assert bat.per_trial == seq.per_trial and bat.per_trial_top5 == seq.per_trial_top5
    assert bat.seeds == seq.seeds and bat.mean == seq.mean and bat.ci95 == seq.ci95
    assert len(set(seq.per_trial)) > 1  # the trials really differ: a shared draw would not pass
    assert all(torch.equal(p, q) for p, q in zip(clean, model.parameters()))  # weights restored
    assert not model.training


@pytest.mark.parametrize("name", NETS)
def test_batched_scores_match_the_sequential_forward_in_fp32(name) -> None:
    model, loader = net(name, torch.float32)
    noise = from_config(NOISES["quantize+gaussian"])
    seeds = [trial_seed(0, noise.label, noise.strength, t) for t in range(3)]
    x = loader[0][0]
    scores = batched_forward(model, draw_trials(model, noise, seeds), x)
    assert scores.shape == (3, 32, 10)
    for t, s in enumerate(seeds):
        with torch.no_grad(), noise.applied(model, torch.Generator().manual_seed(s)):
            torch.testing.assert_close(scores[t], model(x), rtol=0, atol=1e-5)


def test_chunks_of_the_budget_give_the_unchunked_result(monkeypatch) -> None:
    model, loader = net("lenet")
    noise = AdditiveGaussian(0.3)
    chunks: list[int] = []
    draw = trials.draw_trials
    monkeypatch.setattr(trials, "draw_trials", lambda m, n, seeds: chunks.append(len(seeds)) or draw(m, n, seeds))
    seq, whole = both(model, loader, noise, trials=5, batch_trials=True)
    per_trial = trial_memory(model, loader[0][0], noise)
    _, budgeted = both(model, loader, noise, trials=5, batch_trials=True, memory_budget=2 * per_trial + 1)
    _, capped = both(model, loader, noise, trials=5, batch_trials=3)
    assert chunks == [5, 2, 2, 1, 3, 2]
    assert seq.per_trial == whole.per_trial == budgeted.per_trial == capped.per_trial


def test_a_budget_below_one_trial_is_refused() -> None:
    model, loader = net("mlp")
    with pytest.raises(ConfigError, match=r"one trial needs about \d+ bytes.*budget of 1000 bytes"):
        noisy_accuracy(predictor(model), model, loader, AdditiveGaussian(0.1), batch_trials=True, memory_budget=1000)


def test_the_warning_is_still_importable_from_evaluate() -> None:
    assert evaluate.BatchedTrialsWarning is BatchedTrialsWarning


def test_memory_estimate_and_default_budget() -> None:
    model, loader = net("mlp")
    x = loader[0][0]
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) * 8
    # input (32·64), Flatten (32·64), Linear+ReLU (2·32·24, 2·32·16), logits (32·10), fp64
    activations = (2 * 32 * 64 + 2 * 32 * 24 + 2 * 32 * 16 + 32 * 10) * 8
    assert trial_memory(model, x, AdditiveGaussian(0.1)) == weights + 2 * activations
    assert default_memory_budget("cpu") > 2**20


@pytest.mark.parametrize("value", [-1, 2.5, "yes"])
def test_bad_batch_trials_is_refused(value) -> None:
    model, loader = net("mlp")
    with pytest.raises(ConfigError, match="batch_trials must be"):
        noisy_accuracy(predictor(model), model, loader, AdditiveGaussian(0.1), batch_trials=value)


def test_default_and_draw_free_corruptions_stay_one_pass() -> None:
    model, loader = net("mlp")
    calls = []

    def predict(x):
        calls.append(1)
        return model(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchedTrialsWarning)
        noisy_accuracy(predict, model, loader, AdditiveGaussian(0.1), trials=3)
        assert len(calls) == 3 * len(loader)
        calls.clear()
        noisy_accuracy(predict, model, loader, from_config({"name": "quantize", "levels": 4}), trials=3,
                       batch_trials=True)
        assert len(calls) == len(loader)  # nothing drawn: one pass stands for the 3 trials, as before


class Branchy(nn.Module):
    """Data-dependent control flow: vmap cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        return out if float(out.sum()) > -1e9 else -out


def fallback(model, loader, noise, predict=None, **kwargs):
    """(sequential, batch_trials=True) results; the second must warn that it fell back."""
    predict = predict or predictor(model)
    seq = noisy_accuracy(predict, model, loader, noise, trials=3, seed=1, **kwargs)
    with pytest.warns(BatchedTrialsWarning, match="one pass per trial instead") as caught:
        bat = noisy_accuracy(predict, model, loader, noise, trials=3, seed=1, batch_trials=True, **kwargs)
    assert len([w for w in caught if w.category is BatchedTrialsWarning]) == 1
    assert bat.per_trial == seq.per_trial and bat.per_trial_top5 == seq.per_trial_top5
    return str(caught[0].message)


def test_the_analog_tile_falls_back() -> None:
    from analoglearn.analog.corruption import AnalogCorruption
    from analoglearn.analog.tile import TileConfig

    model, loader = net("mlp", torch.float32)
    corruption = AnalogCorruption(TileConfig(in_range="static", r_in=3.0, out_noise=0.1), noise=AdditiveGaussian(0.1))
    assert "AnalogCorruption is not a weight-noise model" in fallback(model, loader, corruption)


def test_batchnorm_recalibration_falls_back() -> None:
    model, loader = net("vgg11")
    message = fallback(model, loader, AdditiveGaussian(0.2), bn="recalibrate", calibration=loader,
                       calibration_images=64)
    assert "recalibrate" in message


def test_a_model_vmap_cannot_run_falls_back() -> None:
    torch.manual_seed(0)
    model = Branchy().double().eval()
    _, loader = net("mlp")
    assert "vmap cannot run Branchy" in fallback(model, loader, AdditiveGaussian(0.3))


def test_a_predict_that_is_not_the_eval_forward_falls_back() -> None:
    model, loader = net("lenet")
    dropout = nn.Dropout(0.5)
    model.train()  # predict runs the network in train mode, with dropout: the batched eval forward differs
    with pytest.warns(BatchedTrialsWarning, match="predict is not the model's eval-mode forward"):
        noisy_accuracy(lambda x: dropout(model(x)), model, loader, AdditiveGaussian(0.2), trials=2, batch_trials=True)
    assert model.training  # the modes are restored
    model.eval()
    assert "trial 0's scores differ" in fallback(model, loader, AdditiveGaussian(0.2), predict=lambda x: 3.0 * model(x))


# ----------------------------------------------------------------- Hopfield relaxations
def hopfield(dtype=torch.float64, **options):
    from analoglearn.energy import presets
    from analoglearn.energy.methods import EnergyMethod, EnergyOptions

    model = presets.tiny(None, in_shape=(1, 8, 8), num_classes=4, generator=torch.Generator().manual_seed(0)).to(dtype)
    precision = "fp64" if dtype == torch.float64 else "fp32"
    method = EnergyMethod("CEP", model, EnergyOptions(eval_iterations=25, precision=precision, **options))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 1, 8, 8, generator=g, dtype=dtype)
    y = method.predict(x).argmax(1)  # an untrained network's outputs are mostly its biases: σ = 1 moves them
    return model, method, [(x[:24], y[:24]), (x[24:], y[24:])]


def test_batched_trials_of_a_hopfield_relaxation_equal_the_sequential_ones() -> None:
    model, method, loader = hopfield()
    noise = AdditiveGaussian(sigma=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchedTrialsWarning)
        batched = noisy_accuracy(method.predict, model, loader, noise, trials=5, seed=3, batch_trials=2)
    sequential = noisy_accuracy(method.predict, model, loader, noise, trials=5, seed=3)
    assert batched.to_dict() == sequential.to_dict() and len(set(batched.to_dict()["per_trial"])) > 1


def test_batched_relaxation_scores_match_the_sequential_relaxation_in_fp32() -> None:
    model, method, loader = hopfield(torch.float32)
    noise = AdditiveGaussian(sigma=1.0)
    seeds = [trial_seed(0, noise.label, 1.0, t) for t in range(3)]
    stacked = draw_trials(model, noise, seeds)
    scores = batched_forward(model, stacked, loader[0][0], method.predict)
    for t, s in enumerate(seeds):
        with torch.no_grad(), noise.applied(model, torch.Generator().manual_seed(s)):
            torch.testing.assert_close(scores[t], method.predict(loader[0][0]), rtol=0, atol=1e-5)


def test_a_relaxation_with_a_tolerance_stop_falls_back() -> None:
    model, method, loader = hopfield(eval_tolerance=1e-6)
    noise = AdditiveGaussian(sigma=1.0)
    with pytest.warns(BatchedTrialsWarning, match="one pass per trial"):
        batched = noisy_accuracy(method.predict, model, loader, noise, trials=3, seed=0, batch_trials=True)
    assert batched.to_dict() == noisy_accuracy(method.predict, model, loader, noise, trials=3, seed=0).to_dict()
