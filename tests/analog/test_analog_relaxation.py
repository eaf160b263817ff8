"""The tile model inside a Hopfield network's relaxation (``analog.relaxation``): bit-equality when off, reads
per iteration and their noise, Monte-Carlo trials, calibration over relaxation reads, fixed points and cycles
under quantisation, the noise floor, ``eval.analog`` and hardware-aware training of Hopfield networks."""

from __future__ import annotations

import collections
import itertools
import json

import pytest
import torch

from analoglearn.analog import TileConfig, analog, calibrate, init_ranges
from analoglearn.analog import relaxation as relaxation_module
from analoglearn.analog.corruption import AnalogCorruption
from analoglearn.config import build_config
from analoglearn.energy import presets
from analoglearn.energy.estimators import ALGORITHMS, Settings, estimate, onehot
from analoglearn.energy.methods import EnergyMethod, EnergyOptions
from analoglearn.energy.minimize import Minimizer
from analoglearn.evaluate import robustness_curve
from analoglearn.runs import RunDir
from analoglearn.train import fit

STATIC = {"in_range": "static", "r_in": 1.0}
CONVERTERS = {"in_range": "calibrated", "dac_bits": 8, "adc_bits": 8, "out_bound": 10.0, "tile_rows": 256}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make(name: str, batch: int = 8, side: int | None = None):
    """``(net, x, y)``: a fp32 preset on random inputs (tiny: 1×8×8, 3 classes; dchn_cpu: 1×side×side, 10)."""
    g = torch.Generator().manual_seed(0)
    if name == "tiny":
        net = presets.tiny(None, in_shape=(1, 8, 8), num_classes=3, generator=g)
        x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        return net, x, torch.arange(batch) % 3
    side = side or 28
    net = presets.dchn_cpu(None, in_shape=(1, side, side), num_classes=10, generator=g)
    x = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(1))
    return net, x, torch.arange(batch) % 10


def relax(net, x, iterations, schedule="asynchronous", state=None, **kwargs):
    state = net.zero_state(x.shape[0]) if state is None else state
    return Minimizer(schedule=schedule).relax(net, x, state, iterations, **kwargs)


def digital_run(net, iterations=30, schedule="asynchronous"):
    return lambda x: relax(net, x, iterations, schedule).state[-1]


# ----------------------------------------------------------------- everything off: bit-equal
@pytest.mark.parametrize("name", ["tiny", "dchn_cpu"])
@pytest.mark.parametrize("schedule", ["asynchronous", "synchronous"])
def test_an_ideal_tile_relaxes_bit_equal_to_the_plain_relaxation(name, schedule):
    net, x, y = make(name)
    target = onehot(y, net.layer_shapes[-1][0], torch.float32)
    plain = relax(net, x, 12, schedule, beta=0.3, target=target).state
    with analog(net, TileConfig()) as sites:
        inside = relax(net, x, 12, schedule, beta=0.3, target=target).state
    assert sites[0] == "interactions.0.drive" and "interactions.0.feedback" not in sites
    assert all(torch.equal(a, b) for a, b in zip(plain, inside))


def test_an_ideal_tile_gives_all_nine_estimators_bit_equal_gradients():
    net, x, y = make("tiny")
    target = onehot(y, 3, torch.float32)
    free = relax(net, x, 15)
    settings = Settings(0.25, 5, Minimizer())
    for algorithm in ALGORITHMS:
        plain = estimate(algorithm, net, x, target, free.state, settings, free.input_drive)
        with analog(net, TileConfig()):
            inside = estimate(algorithm, net, x, target, free.state, settings, free.input_drive)
        assert all(torch.equal(a, b) for pa, pb in zip(plain, inside) for a, b in zip(pa, pb)), algorithm


# ----------------------------------------------------------------- reads and their noise
class Reads:
    """Counts the tile reads per site and keeps the noise each one added (tile read − digital product)."""

    def __init__(self, monkeypatch):
        self.sites: collections.Counter = collections.Counter()
        self.noise: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
        self.last = ""
        name_of, original = relaxation_module.site_name, relaxation_module.read

        def named(index, transposed):
            self.last = name_of(index, transposed)
            return self.last

        def counted(x, weight, op, tile, **kwargs):
            y = original(x, weight, op, tile, **kwargs)
            self.sites[self.last] += 1
            self.noise[self.last].append(y - op(x, weight))
            return y

        monkeypatch.setattr(relaxation_module, "site_name", named)
        monkeypatch.setattr(relaxation_module, "read", counted)

    @property
    def total(self) -> int:
        return sum(self.sites.values())


@pytest.mark.parametrize("name, schedule, per_iteration, once", [
    # tiny: conv x→s1, conv s1→s2, dense s2→o: drives 1, 2 and feedbacks 1, 2 every iteration (4 reads);
    # once: the input drive, and (asynchronous) conv(s1)'s arg-max for s1's first feedback before s1 changes
    ("tiny", "asynchronous", 4, 2), ("tiny", "synchronous", 4, 1),
    # dchn_cpu: conv x→s1, dense s1→o: drive 1 and feedback 1 every iteration, the input drive once
    ("dchn_cpu", "asynchronous", 2, 1), ("dchn_cpu", "synchronous", 2, 1),
])
def test_every_iteration_reads_what_the_schedule_implies_with_fresh_noise(monkeypatch, name, schedule,
                                                                          per_iteration, once):
    net, x, _ = make(name, side=8)
    tile = TileConfig(**STATIC, out_noise=0.05)
    reads = Reads(monkeypatch)
    for iterations in (1, 2, 3):
        reads.sites.clear()
        reads.noise.clear()
        with analog(net, tile, torch.Generator().manual_seed(0)):
            relax(net, x, iterations, schedule)
        assert reads.total == per_iteration * iterations + once
    last = f"interactions.{len(net.interactions) - 1}.feedback"
    assert reads.sites[last] == 3
    first, second = reads.noise[last][:2]  # the same site in two iterations: different draws
    assert first.abs().max() > 0 and not torch.equal(first, second)


def test_the_same_seed_replays_a_whole_noisy_relaxation_exactly():
    net, x, _ = make("tiny")
    tile = TileConfig(**CONVERTERS, out_noise=0.05)
    ranges = calibrate(net, tile, [x], run=digital_run(net))
    states = []
    for seed in (3, 3, 4):
        with analog(net, tile, torch.Generator().manual_seed(seed), ranges):
            states.append(relax(net, x, 10).state)
    assert all(torch.equal(a, b) for a, b in zip(states[0], states[1]))
    assert not torch.equal(states[0][-1], states[2][-1])


def test_monte_carlo_trials_of_a_hopfield_network_replay_and_pair():
    net, x, y = make("tiny", batch=16)
    method = EnergyMethod("CEP", net, EnergyOptions(eval_iterations=8))
    twin = EnergyMethod("CEP", make("tiny", batch=16)[0], EnergyOptions(eval_iterations=8))  # same shapes, weights
    loader = [(x[:8], y[:8]), (x[8:], y[8:])]
    corruption = AnalogCorruption(TileConfig(**STATIC, dac_bits=6)).calibrated(net, None)
    curves = [robustness_curve(m.predict, m.model, loader, corruption, [0.2], trials=2, seed=5)
              for m in (method, method, twin)]
    noisy = [c.points[0] for c in curves]
    assert noisy[0].per_trial == noisy[1].per_trial == noisy[2].per_trial and noisy[0].seeds == noisy[2].seeds
    assert not noisy[0].deterministic and len(set(noisy[0].seeds)) == 2
    outputs = []  # trials draw differently, and a trial's draws are the same on the twin
    for m, seed in ((method, 1), (twin, 1), (method, 2)):
        with corruption.with_strength(0.2).applied(m.model, torch.Generator().manual_seed(seed)):
            outputs.append(m.predict(x))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])


# ----------------------------------------------------------------- calibration over relaxation reads
@pytest.mark.parametrize("calibration, per_channel", [("max", False), ("max", True), ("percentile", False),
                                                      ("std", False)])
def test_calibrated_ranges_are_the_statistic_of_all_recorded_reads(calibration, per_channel):
    net, x, _ = make("tiny")
    tile = TileConfig(in_range="calibrated", calibration=calibration, in_per_channel=per_channel, quantile=0.99)
    batches, run = [x[:4], x[4:]], digital_run(net, 6)
    inputs = collections.defaultdict(list)
    with relaxation_module.recorded(net, lambda name, op, v: inputs[name].append(
            (v, relaxation_module.geometry(op).axis))), torch.no_grad():
        for b in batches:
            run(b)
    ranges = calibrate(net, tile, batches, run=run)
    assert set(ranges) == set(inputs) == {"interactions.0.drive", "interactions.1.drive", "interactions.1.feedback",
                                          "interactions.2.drive", "interactions.2.feedback"}
    assert len(inputs["interactions.0.drive"]) == 2 and len(inputs["interactions.2.feedback"]) == 12
    for name, values in inputs.items():
        if calibration == "std":
            expected = 3.0 * torch.stack([v.std() for v, _ in values]).mean()
        elif per_channel:
            expected = torch.stack([v.abs().movedim(axis, 0).flatten(1).amax(1) for v, axis in values]).amax(0)
        elif calibration == "max":
            expected = torch.stack([v.abs().max() for v, _ in values]).max()
        else:
            expected = torch.quantile(torch.cat([v.abs().flatten() for v, _ in values]), 0.99)
        torch.testing.assert_close(ranges[name], expected, rtol=0, atol=0)
    learned = init_ranges(net, TileConfig(in_range="learned", in_per_channel=True))
    assert {k: tuple(v.shape) for k, v in learned.items()} == {k: tuple(v.shape) for k, v in
                                                               calibrate(net, tile if per_channel else
                                                                         TileConfig(in_range="calibrated",
                                                                                    in_per_channel=True),
                                                                         batches, run=run).items()}
    with pytest.raises(Exception, match="needs run="):
        calibrate(net, tile, batches)


# ----------------------------------------------------------------- energy descent and the noise floor
def fixed_point_or_cycle(net, x, tile, ranges, schedule, limit=60):
    """``(iteration, period)``: the first iteration whose state was seen before, and how long ago (1: fixed
    point, ≥ 2: a cycle), or ``(None, None)`` if no state repeats within ``limit`` iterations; and the
    digital mean energy after every iteration."""
    state, seen, energies = net.zero_state(x.shape[0]), {}, []
    with analog(net, tile, None, ranges):
        for iteration in range(1, limit + 1):
            state = relax(net, x, 1, schedule, state=state).state
            with torch.no_grad():
                energies.append(float(net.energy(x, state).mean()))
            key = tuple(tuple(s.flatten().tolist()) for s in state)
            if key in seen:
                return (iteration, iteration - seen[key]), energies
            seen[key] = iteration
    return (None, None), energies


# measured (module doc of analog.relaxation): (first repeated iteration, period) per preset, schedule and bits
REPEATS = {
    ("dchn_cpu", "asynchronous", 8): (6, 1), ("dchn_cpu", "asynchronous", 4): (4, 1),
    ("dchn_cpu", "synchronous", 8): (11, 1), ("dchn_cpu", "synchronous", 4): (6, 1),
    ("tiny", "asynchronous", 8): (7, 1), ("tiny", "asynchronous", 4): (7, 2),
    ("tiny", "synchronous", 8): (11, 2), ("tiny", "synchronous", 4): (11, 2),
}


@pytest.mark.parametrize("name", ["dchn_cpu", "tiny"])
def test_quantised_noiseless_relaxations_end_in_a_fixed_point_or_a_short_cycle(name):
    net, x, _ = make(name, batch=16)
    for schedule in ("asynchronous", "synchronous"):
        for bits in (8, 4):
            tile = TileConfig(**{**CONVERTERS, "dac_bits": bits, "adc_bits": bits})
            ranges = calibrate(net, tile, [x], run=digital_run(net, 60, schedule))
            found, energies = fixed_point_or_cycle(net, x, tile, ranges, schedule)
            assert found == REPEATS[(name, schedule, bits)], (schedule, bits, found)
            if found[1] >= 2:  # on a cycle the (digital) energy goes up and down again every period
                cycle = energies[-found[1] - 1:]
                assert any(b > a for a, b in itertools.pairwise(cycle)) and cycle[0] == cycle[-1]
            if found[1] == 1:  # a fixed point: the residual is exactly 0 from then on, the tolerance stop works
                with analog(net, tile, None, ranges):
                    stopped = Minimizer(schedule=schedule, tolerance=1e-12).relax(net, x, net.zero_state(16), 200)
                assert stopped.residual == 0.0 and stopped.iterations == found[0]


def test_the_residual_floor_grows_with_the_output_noise():
    net, x, _ = make("dchn_cpu", batch=8, side=16)
    tile = TileConfig(**CONVERTERS)
    ranges = calibrate(net, tile, [x], run=digital_run(net))
    floors = []
    for noise in (0.0, 0.02, 0.05, 0.1):
        noisy = TileConfig(**CONVERTERS, out_noise=noise)
        values = []
        for seed in range(3):
            with analog(net, noisy, torch.Generator().manual_seed(seed), ranges):
                trace = relax(net, x, 40, trace=True).trace
            values.append(sum(trace[-10:]) / 10)
        floors.append(sum(values) / len(values))
    assert floors[0] == 0.0 and all(a < b for a, b in itertools.pairwise(floors)), floors
    # a tolerance below the floor never triggers: the relaxation runs its whole budget
    with analog(net, TileConfig(**CONVERTERS, out_noise=0.05), torch.Generator().manual_seed(0), ranges):
        budget = Minimizer(tolerance=floors[2] / 10).relax(net, x, net.zero_state(8), 40)
    assert budget.iterations == 40 and budget.residual > floors[2] / 10


# ----------------------------------------------------------------- the config: eval.analog and training
def hopfield_config(tiny, **sections) -> dict:
    sections["train"] = {"epochs": 2, "checkpoint_every": 2, **sections.get("train", {})}
    raw = tiny(data={"batch_size": 32, "train_subset": 64, "test_subset": 64}, **sections)
    raw["model"] = {"name": "tiny"}
    raw["method"] = {"name": "CEP", "free_iterations": 5, "nudged_iterations": 3, "eval_iterations": 8}
    return raw


def test_eval_analog_of_a_hopfield_network_writes_plausible_results(tiny, tmp_path):
    raw = hopfield_config(tiny, train={"epochs": 1}, eval={"trials": 2, "calibration_images": 32, "analog": [
        {"tile": CONVERTERS, "sweep": "out_noise", "values": [0.0, 0.1]},
        {"tile": {}, "sweep": "out_noise", "values": [0.0]}]})
    fit(build_config(raw), tmp_path / "run", log=lambda s: None)
    result = json.loads((tmp_path / "run" / "analog.json").read_text())
    clean = result["clean"]["top1"]
    ideal = next(p for p in result["points"] if p["noise"] == "analog(out_noise)")
    assert ideal["per_trial"] == [clean, clean]  # everything off: the digital relaxation
    quantised, noisy = (p for p in result["points"] if p["noise"] != "analog(out_noise)")
    assert quantised["deterministic"] and not noisy["deterministic"] and len(set(noisy["seeds"])) == 2
    assert all(0.0 <= v <= 100.0 for p in result["points"] for v in p["per_trial"])
    assert abs(quantised["mean"] - clean) <= 20.0  # 8-bit converters barely move a tiny network's accuracy


@pytest.mark.parametrize("algorithm", ["CEP", "TBP"])
def test_hardware_aware_training_of_a_hopfield_network_resumes_exactly(tiny, interrupted_and_resumed, tmp_path,
                                                                       algorithm):
    tile = {**CONVERTERS, "dac_bits": 6, "adc_bits": 6, "out_noise": 0.05, "tile_rows": 16}
    raw = hopfield_config(tiny, analog={"tile": tile, "calibration_images": 32, "weight_clip": 3.0})
    raw["method"]["name"] = algorithm
    full, resumed = interrupted_and_resumed(build_config(raw), EnergyMethod, stop_after=3)
    assert full == resumed and len(full) == 2
    checkpoint = RunDir(tmp_path / "full").load_checkpoint()
    assert set(checkpoint["analog"]["ranges"]) == {"interactions.0.drive", "interactions.1.drive",
                                                   "interactions.1.feedback", "interactions.2.drive",
                                                   "interactions.2.feedback"}
    if algorithm != "CEP":
        return
    digital = hopfield_config(tiny)
    digital["method"]["name"] = algorithm
    fit(build_config(digital), tmp_path / "digital", log=lambda s: None)
    plain = RunDir(tmp_path / "digital").load_checkpoint()["model"]
    assert any(not torch.equal(checkpoint["model"][k], plain[k]) for k in plain)  # the tile changed the steps


def test_half_precision_relaxations_read_the_tile_in_fp32_and_cast_back():
    from analoglearn.analog.read import read

    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(4, 12, generator=g).bfloat16(), torch.randn(5, 12, generator=g).bfloat16()
    tile = TileConfig(**STATIC, dac_bits=8, adc_bits=8, out_bound=10.0, out_noise=0.04)
    y = relaxation_module.tile_read(x, w, torch.nn.functional.linear, tile, None, torch.Generator().manual_seed(1))
    expected = read(x.float(), w.float(), torch.nn.functional.linear, tile, generator=torch.Generator().manual_seed(1))
    assert y.dtype == torch.bfloat16 and torch.equal(y, expected.bfloat16())
    net, x, _ = make("tiny")
    with analog(net, tile, torch.Generator().manual_seed(0)):
        relaxed = Minimizer(precision="bf16").relax(net, x, net.zero_state(8), 5)
    assert all(torch.isfinite(s).all() for s in relaxed.state)


# ----------------------------------------------------------------- deeper networks on the chip
def _deep(readout: str = "energy"):
    from analoglearn.energy.network import HopfieldNetwork

    skips = [{"source": 0, "target": 2, "kernel": 1, "mode": "stride"}, {"source": 1, "target": 3, "mode": "max"}]
    net = HopfieldNetwork((1, 8, 8), (4, 6, 8), 3, downsample=["none", "stride", "max"], skips=skips,
                          ranges=(0.0, 2.0), readout=readout, gains=[0.6] * 6,
                          generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    return net, torch.randn(5, 1, 8, 8, generator=g), torch.randint(0, 3, (5,), generator=g)


@pytest.mark.parametrize("readout", ["energy", "cross_entropy"])
def test_skips_strides_and_the_cross_entropy_read_out_are_read_through_the_tile(readout):
    net, x, y = _deep(readout)
    target = onehot(y, 3, torch.float32)
    free = relax(net, x, 10)
    settings = Settings(0.25, 5, Minimizer())
    for algorithm in ("CEP", "PEP", "TBP", "RBP"):
        plain = estimate(algorithm, net, x, target, free.state, settings, free.input_drive)
        with analog(net, TileConfig()) as sites:
            inside = estimate(algorithm, net, x, target, free.state, settings, free.input_drive)
        assert all(torch.equal(a, b) for pa, pb in zip(plain, inside) for a, b in zip(pa, pb)), algorithm
    assert {"interactions.4.drive", "interactions.5.drive", "interactions.5.feedback"} <= set(sites)  # the skips
    assert "interactions.4.feedback" not in sites  # the input skip feeds back into the clamped input: never read
    noisy = TileConfig(**STATIC, out_noise=0.05)
    seen = collections.Counter()
    original = relaxation_module.read

    def counting(x_, w, op, tile, **kwargs):
        seen[tuple(w.shape)] += 1
        return original(x_, w, op, tile, **kwargs)

    relaxation_module.read = counting
    try:
        with analog(net, noisy, generator=torch.Generator().manual_seed(0)):
            nudged = relax(net, x, 6, beta=0.25, target=target).state
    finally:
        relaxation_module.read = original
    assert seen[(6, 1, 1, 1)] == 1 and seen[(8, 4, 1, 1)] >= 6  # the input skip (read once) and the max skip
    clean = relax(net, x, 6, beta=0.25, target=target).state
    assert 0 < float((nudged[-1] - clean[-1]).abs().max()) < 1
