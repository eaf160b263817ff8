"""Clean and Monte-Carlo noisy evaluation: statistics, pairing by seed, restore, BatchNorm policy."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from analoglearn.errors import ConfigError
from analoglearn.evaluate import (
    accuracy,
    evaluate_noise,
    noisy_accuracy,
    recalibrated_batchnorm,
    robustness_curve,
    summarize,
    trapezoid,
    trial_seed,
)
from analoglearn.noise import AdditiveGaussian


def data(n: int = 120, k: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 10, generator=g), torch.randint(0, k, (n,), generator=g)
    return [(x[i : i + 40], y[i : i + 40]) for i in range(0, n, 40)]


def model(k: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, k)).eval()


def predictor(net: nn.Module):
    return lambda x: net(x)


def test_accuracy_top1_and_top5() -> None:
    scores = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 0, 0, 0, 0, 1]])
    loader = [(torch.arange(3), torch.tensor([5, 5, 0]))]
    acc = accuracy(lambda idx: scores[idx], loader)
    assert acc.top1 == pytest.approx(100 / 3) and acc.top5 == pytest.approx(200 / 3) and acc.count == 3
    assert accuracy(lambda idx: scores[idx, :3], [(torch.arange(3), torch.tensor([2, 0, 1]))]).top5 is None


def test_summary_statistics_and_ci() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s["mean"] == 3.0 and s["std"] == pytest.approx(math.sqrt(2.5))
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert s["ci95"] == pytest.approx([3 - half, 3 + half]) and (s["min"], s["max"]) == (1.0, 5.0)


def test_trial_seeds_depend_on_all_four_keys() -> None:
    base = trial_seed(0, "additive_gaussian", 0.05, 3)
    assert base == trial_seed(0, "additive_gaussian", 0.050, 3)
    others = {trial_seed(1, "additive_gaussian", 0.05, 3), trial_seed(0, "pcm", 0.05, 3),
              trial_seed(0, "additive_gaussian", 0.02, 3), trial_seed(0, "additive_gaussian", 0.05, 4)}
    assert base not in others and len(others) == 4 and 0 <= base < 2**63


def test_noisy_accuracy_is_reproducible_paired_and_restores_weights() -> None:
    net, loader = model(), data()
    before = [p.detach().clone() for p in net.parameters()]
    noise = AdditiveGaussian(0.5)
    a = noisy_accuracy(predictor(net), net, loader, noise, trials=4, seed=3)
    b = noisy_accuracy(predictor(net), net, loader, noise, trials=4, seed=3)
    c = noisy_accuracy(predictor(net), net, loader, noise, trials=4, seed=4)
    assert a.per_trial == b.per_trial and a.seeds == b.seeds and a.seeds != c.seeds
    other = model(seed=1)
    d = noisy_accuracy(predictor(other), other, loader, noise, trials=4, seed=3)
    assert d.seeds == a.seeds  # every model compared sees the same trial seeds
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters()))
    assert a.mean == pytest.approx(sum(a.per_trial) / 4) and a.min == min(a.per_trial)
    assert len(a.per_trial_top5) == 4
    json.dumps(a.to_dict())


def test_zero_noise_gives_clean_accuracy() -> None:
    net, loader = model(), data()
    clean = accuracy(predictor(net), loader).top1
    result = noisy_accuracy(predictor(net), net, loader, AdditiveGaussian(0.0), trials=2)
    assert result.per_trial == [clean, clean] and result.std == 0.0


@pytest.mark.parametrize(
    ("noise", "deterministic"),
    [
        ({"name": "additive_gaussian", "sigma": 0.0}, True),
        ({"name": "multiplicative_uniform", "sigma": 0.0}, True),
        ({"name": "stuck_at", "p": 0.0}, True),
        ({"name": "quantize", "levels": 4}, True),
        ({"name": "compose", "parts": [{"name": "quantize", "levels": 4}, {"name": "gaussian", "sigma": 0.0}]}, True),
        ({"name": "additive_gaussian", "sigma": 0.1}, False),
        ({"name": "stuck_at", "p": 0.1}, False),
        ({"name": "compose", "parts": [{"name": "quantize", "levels": 4}, {"name": "gaussian", "sigma": 0.1}]}, False),
        ({"name": "pcm", "t_inference": 1.0}, False),  # programming noise is drawn even at t = t0
    ],
)
def test_a_corruption_that_draws_nothing_is_evaluated_once(noise, deterministic) -> None:
    from analoglearn.noise import from_config

    net, loader = model(), data()
    calls = []

    def predict(x):
        calls.append(1)
        return net(x)

    trials = 4
    result = noisy_accuracy(predict, net, loader, from_config(noise), trials=trials)
    assert result.deterministic is deterministic
    assert len(calls) == len(loader) * (1 if deterministic else trials)
    assert len(result.per_trial) == len(result.seeds) == trials
    if deterministic:  # one pass stands for T: the numbers of the corrupted network, T times
        from analoglearn.noise import perturbed

        with perturbed(net, from_config(noise)):
            once = accuracy(predictor(net), loader).top1
        assert result.per_trial == [once] * trials and result.std == 0.0


def test_batchnorm_recalibration_and_restore() -> None:
    net, calib = model(), data(n=80, seed=5)
    bn = net[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    with recalibrated_batchnorm(net, calib, images=60):
        x = torch.cat([b[0] for b in calib])[:60]
        features = net[0](x)
        assert torch.allclose(bn.running_mean, features.mean(0), atol=1e-5)
        assert not bn.training and not net.training
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == before[2]
    result = noisy_accuracy(predictor(net), net, data(), AdditiveGaussian(0.1), trials=2, bn="recalibrate",
                            calibration=calib, calibration_images=40)
    assert result.bn == "recalibrate" and torch.equal(bn.running_mean, before[0])
    with pytest.raises(ConfigError, match="keep, recalibrate"):
        noisy_accuracy(predictor(net), net, data(), AdditiveGaussian(0.1), bn="refresh")


def test_robustness_curve_area_and_evaluate_noise() -> None:
    assert trapezoid([0.0, 0.1, 0.05], [100.0, 60.0, 80.0]) == pytest.approx(0.05 * 90 + 0.05 * 70)
    net, loader = model(), data()
    curve = robustness_curve(predictor(net), net, loader, AdditiveGaussian(), [0.0, 0.5, 1.0], trials=2)
    means = [p.mean for p in curve.points]
    assert curve.area == pytest.approx(trapezoid([0.0, 0.5, 1.0], means))
    assert curve.normalized_area == pytest.approx(curve.area)
    spec = [{"name": "additive_gaussian", "scale": "tensor-max", "strengths": [0.0, 0.3]}]
    (other,) = evaluate_noise(predictor(net), net, loader, spec, trials=2, seed=0)
    assert other.points[1].options["scale"] == "tensor-max" and other.strengths == [0.0, 0.3]
    json.dumps(other.to_dict())


def test_single_trial_has_no_interval() -> None:
    wide = summarize([99.0, 92.0, 100.0])  # mean 97, t(2)·std/√3 ≈ 10.8: the interval stops at 100
    assert wide["ci95"][1] == 100.0 and wide["ci95"][0] == pytest.approx(97 - 4.3027 * 4.3589 / 3 ** 0.5, abs=1e-3)
    assert summarize([70.0]) == {"mean": 70.0, "std": 0.0, "min": 70.0, "max": 70.0, "ci95": None}


def test_composed_noise_from_the_eval_schema() -> None:
    """``eval.noise`` may compose models: quantise to 16 levels, then sweep Gaussian read noise."""
    from analoglearn.config import build_eval
    from analoglearn.noise import Quantize, perturbed

    entry = {"name": "compose", "swept": 1, "strengths": [0.0, 0.1],
             "parts": [{"name": "quantize", "strength": 16}, {"name": "additive_gaussian", "scale": "tensor-max"}]}
    spec = build_eval({"noise": [entry]}).noise[0]
    assert spec.name == "compose" and spec.options["swept"] == 1
    assert [p["name"] for p in spec.options["parts"]] == ["quantize", "additive_gaussian"]
    assert spec.options["parts"][0]["levels"] == 16 and spec.options["parts"][1]["scale"] == "tensor-max"

    net, loader = model(), data()
    [curve] = evaluate_noise(predictor(net), net, loader, [{"name": spec.name, "strengths": spec.strengths,
                                                            **spec.options}], trials=3)
    assert curve.noise == "quantize(16)+additive_gaussian[scale=tensor-max]"  # options off their defaults named
    with perturbed(net, Quantize(16)):
        quantized = accuracy(predictor(net), loader).top1
    # σ = 0: every trial is the 16-level network; σ = 0.1 draws differ from trial to trial
    assert curve.points[0].per_trial == [quantized] * 3
    assert len(set(curve.points[1].per_trial)) > 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "compose", "strengths": [0.1]}, "non-empty 'parts'"),
        ({"name": "compose", "parts": [{"levels": 4}]}, r"parts\[0\] needs a 'name'"),
        ({"name": "compose", "parts": [{"name": "blur"}]}, "unknown noise model 'blur'"),
        ({"name": "compose", "parts": [{"name": "quantize", "colour": 1}]}, "colour"),
        ({"name": "compose", "swept": 2, "parts": [{"name": "quantize"}]}, r"swept must index .* \(0 to 0\)"),
        ({"name": "compose", "sigma": 0.1, "parts": [{"name": "quantize"}]}, "takes only 'parts'"),
    ],
)
def test_bad_composed_noise_is_refused(entry, message) -> None:
    from analoglearn.config import build_eval

    with pytest.raises(ConfigError, match=message):
        build_eval({"noise": [entry]})
