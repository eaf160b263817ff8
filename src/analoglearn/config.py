"""Typed run configuration: dataclasses, YAML files and dotted command-line overrides.

One schema serves every method::

    seed: 0
    data:   {name: MNIST, batch_size: 128, augment: true}
    model:  {name: lenet}                     # other keys: the model's options
    method: {name: sgd}                       # other keys: the method's options
    optim:  {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4, schedule: cosine}
    train:  {epochs: 10}
    eval:   {noise: [{name: additive_gaussian, strengths: [0.02, 0.05]}], trials: 10}

``load_config(path, overrides)`` reads a YAML file, applies overrides such as
``train.epochs=3`` or ``optim.lr=[0.1,0.05]`` (values parsed as YAML), and validates everything:
unknown keys, wrong types, out-of-range values and unknown names raise
:class:`~analoglearn.errors.ConfigError` with the valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .registry import DATASETS, METHODS, MODELS, NOISE_MODELS, PERTURBATIONS, Registry
from .schema import _coerce, _mapping, _sequence, _show, build_dataclass, to_plain
from .yamlfiles import apply_overrides, dump_yaml, parse_override, parse_yaml, read_yaml, set_path

__all__ = ["Config", "apply_overrides", "build_config", "build_dataclass", "dump_yaml", "load_config", "parse_override",
           "parse_yaml", "read_yaml", "set_path", "to_plain"]


@dataclass
class DataConfig:
    """Which dataset, and how batches are made."""

    name: str = "MNIST"
    """Dataset name: MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR100 or Synthetic."""
    batch_size: int = 128
    """Training batch size (the last, smaller batch of an epoch is kept)."""
    eval_batch_size: int = 1000
    """Batch size for evaluation (no effect on results)."""
    augment: bool = True
    """Apply the dataset's training augmentation (random crop, flip) of PAPERS.md A.4."""
    pad_to: int | None = None
    """Zero-pad raw images centrally to this size (28 → 32 for the Hopfield networks)."""
    root: str | None = None
    """Data root; default ``$ANALOGLEARN_DATA``, else ``~/.cache/analoglearn``."""
    train_subset: int | None = None
    """Train on a fixed random subset of this many examples (quick runs)."""
    test_subset: int | None = None
    """Evaluate on a fixed random subset of this many test examples."""

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "eval_batch_size")
        _positive_or_none(self, "pad_to", "train_subset", "test_subset")
        if self.root is not None and not self.root.strip():
            raise ConfigError("data.root must be a folder path, or null for $ANALOGLEARN_DATA / ~/.cache/analoglearn; "
                              "got an empty string")


@dataclass
class ModelConfig:
    """The network: a registered model name and its options."""

    name: str = "lenet"
    """Model name (``analoglearn list models``)."""
    options: Any = None
    """The model's options dataclass (written flat beside ``name`` in YAML)."""


@dataclass
class MethodConfig:
    """The training method: a registered method name and its options."""

    name: str = "sgd"
    """Method name (``analoglearn list methods``): sgd, sam, asam, rwp, CL, PEP, NEP, CEP, ..."""
    options: Any = None
    """The method's options dataclass (written flat beside ``name`` in YAML)."""


@dataclass
class PerturbConfig:
    """The perturbation of training: none, or SAM/ASAM/RWP wrapping the optimiser (``PERTURBATIONS``)."""

    name: str = "none"
    """Perturbation name (``analoglearn list perturbations``): none, sam, asam, rwp."""
    options: Any = None
    """The perturbation's options dataclass (written flat beside ``name`` in YAML)."""


OPTIMIZERS = ("sgd", "adam", "adamw", "analog_sgd")
MAX_THREADS = 1024
"""Most CPU threads a run may ask torch for."""
LR_SCHEDULES = ("constant", "cosine", "linear")
AUTOCAST = ("bf16", "fp16")


@dataclass
class OptimConfig:
    """The torch optimiser and its learning-rate schedule (stepped per epoch)."""

    name: str = "sgd"
    """One of sgd, adam, adamw."""
    lr: float | list[float] = 0.05
    """Learning rate; a list gives one rate per layer group of the model (``model.param_groups()``)."""
    momentum: float = 0.9
    """Momentum (sgd) or β1 (adam, adamw)."""
    weight_decay: float = 5.0e-4
    """L2 weight decay on all parameters (decoupled for adamw)."""
    nesterov: bool = False
    """Nesterov momentum (sgd)."""
    schedule: str = "cosine"
    """constant, cosine (to ``lr_min`` at the last epoch, as CosineAnnealingLR) or linear."""
    lr_min: float = 0.0
    """Final learning rate of the cosine and linear schedules."""
    clip_grad_norm: float | None = None
    """Clip the (unscaled) gradient of every step to this global 2-norm before the optimiser steps; null: no
    clipping."""
    device: dict[str, Any] | None = None
    """analog_sgd only: the device update model through which every update is programmed as pulses,
    ``{name: soft_bounds | constant_step | ideal, states: N, w_min, w_max, asymmetry, c2c, dw_min_d2d,
    asymmetry_d2d, bounds_d2d, rounding, max_pulses}`` (``analoglearn list analog``); weights in weight
    units, states = (w_max − w_min)/Δw_min. Stored with every default filled in."""
    weight_scale: str = "absolute"
    """analog_sgd only: ``absolute`` (device bounds and steps in weight units) or ``per_tensor`` (each
    parameter mapped onto the device range by its initial max|w|, so bounds and steps are in those units)."""

    def __post_init__(self) -> None:
        _choice(self, "name", OPTIMIZERS)
        _choice(self, "weight_scale", ("absolute", "per_tensor"))
        if (self.device is not None or self.weight_scale != "absolute") and self.name != "analog_sgd":
            raise ConfigError(f"optim.device and optim.weight_scale belong to analog_sgd; optim.name is {self.name!r}")
        if self.name == "analog_sgd":
            from .analog.devices import device_from_config

            device = device_from_config(self.device or {"name": "ideal"})
            fields = {k: v for k, v in to_plain(device).items() if not (isinstance(v, float) and math.isinf(v))}
            self.device = {"name": device.name, **fields}  # an ideal device's unbounded range stays implicit
        _choice(self, "schedule", LR_SCHEDULES)
        rates = self.lr if isinstance(self.lr, list) else [self.lr]
        if not rates or any(not r > 0 for r in rates):
            raise ConfigError(f"optim.lr must be > 0 (a number or a list of numbers), got {self.lr}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"optim.clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}")
        if self.momentum < 0 or self.weight_decay < 0 or self.lr_min < 0:
            raise ConfigError("optim.momentum, optim.weight_decay and optim.lr_min must be ≥ 0")


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10
    """Number of epochs."""
    device: str = "auto"
    """cpu, cuda, cuda:N, mps, or auto (cuda when available, else cpu)."""
    checkpoint_every: int | str = "epoch"
    """``epoch`` (checkpoint at every epoch end) or N: also every N optimiser steps."""
    eval_every: int = 1
    """Evaluate on the test set every this many epochs (and always after the last)."""
    progress: bool | None = None
    """Show a progress bar; default: only when output is a terminal."""
    threads: int | None = None
    """CPU threads for torch (``torch.set_num_threads``); default: torch's choice."""
    accumulate: int = 1
    """Split each batch into this many micro-batches whose gradients add up to the batch's (memory, not
    results: equal to one pass within float tolerance, without BatchNorm)."""
    autocast: str | None = None
    """Mixed precision of backprop's forward pass: null (fp32), bf16 or fp16 (fp16 with a GradScaler;
    SAM, ASAM and RWP included). Energy-based methods set their relaxation's precision instead
    (``method.precision``)."""

    log: list[str] = field(default_factory=lambda: ["jsonl"])
    """Where the metrics go: ``jsonl`` (``metrics.jsonl``, always written) and ``tensorboard`` (the
    run's ``tensorboard/`` folder; needs ``pip install 'analoglearn[tensorboard]'``)."""

    def __post_init__(self) -> None:
        from .logsinks import check

        self.log = check(self.log)
        _positive(self, "epochs", "eval_every", "accumulate")
        _positive_or_none(self, "threads")
        if self.autocast is not None and self.autocast not in AUTOCAST:
            raise ConfigError(f"train.autocast must be one of {', '.join(AUTOCAST)} or null (fp32); "
                              f"got {self.autocast!r}")
        if self.threads is not None and self.threads > MAX_THREADS:
            raise ConfigError(f"train.threads must be at most {MAX_THREADS} (this machine has {os.cpu_count()} "
                              f"cores), got {self.threads}")
        every = self.checkpoint_every
        if every != "epoch" and not (isinstance(every, int) and not isinstance(every, bool) and every > 0):
            raise ConfigError(f"train.checkpoint_every must be 'epoch' or a positive step count, got {every!r}")


@dataclass
class NoiseSpec:
    """One weight-noise model to evaluate the trained network under."""

    name: str = "additive_gaussian"
    """Noise model name (``analoglearn list noise``)."""
    strengths: list[float] = field(default_factory=lambda: [0.02, 0.05])
    """Strengths to evaluate (σ, drift time, fault probability, levels: see the model)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Further options of the noise model (written flat beside ``name`` in YAML)."""


@dataclass
class AnalogSpec:
    """One evaluation through the analog tile model (:mod:`analoglearn.analog`), swept over one tile field."""

    tile: dict[str, Any] = field(default_factory=dict)
    """The tile's fields (``analoglearn list analog``; e.g. ``{in_range: calibrated, dac_bits: 8, adc_bits: 8,
    out_bound: 10}``), every default filled in."""
    sweep: str = "out_noise"
    """The tile field whose values are swept (its *strength*): out_noise, dac_bits, adc_bits, out_bound, r_in,
    tile_rows, w_clip, quantile or std_alpha; 0 bits, rows or bound mean that converter or limit is off."""
    values: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.04])
    """The values of the swept field to evaluate."""
    noise: dict[str, Any] | None = None
    """Weight noise under the tile in every trial, ``{name, strength, **options}`` (a noise entry), or null."""


@dataclass
class EvalConfig:
    """Evaluation after training: clean, and under weight noise (Monte Carlo)."""

    noise: list[NoiseSpec] = field(default_factory=list)
    """Noise models to evaluate under; empty: clean accuracy only."""
    analog: list[AnalogSpec] = field(default_factory=list)
    """Tile-model evaluations (DAC/ADC, output noise, tiles in every MVM), each with paired Monte-Carlo
    trials like the noise models; feed-forward and Hopfield networks (tiles inside the relaxation)."""
    trials: int = 10
    """Noise draws per strength; each draw is fixed for the whole test set."""
    subset: int | None = None
    """Evaluate under noise on a fixed subset of this many test examples (default: all)."""
    checkpoint: str = "last"
    """Which weights to evaluate under noise: last or best."""
    seed: int = 0
    """Seed of the trials' noise draws; the same for every run, so comparisons between runs are paired."""
    bn: str = "keep"
    """BatchNorm statistics under noise: keep them, or recalibrate them on training images after each draw."""
    calibration_images: int = 2000
    """Training images used to recalibrate BatchNorm statistics (bn: recalibrate)."""
    batch_trials: bool | int = False
    """Weight-noise trials per pass over the test set (:mod:`analoglearn.trials`): false, one pass per
    trial; true, all T trials in vmapped passes, as many as memory_budget allows; n ≥ 1, at most n per
    pass. The same draws and numbers either way (fp32: to rounding); on CPU slower (about 0.5×), meant for
    GPUs. eval.noise only: the tile model (eval.analog) runs one pass per trial."""
    memory_budget: int | None = None
    """Bytes the trials of one batched pass may take (batch_trials); null: half the memory free on the
    model's device."""

    def __post_init__(self) -> None:
        _positive(self, "trials", "calibration_images")
        _positive_or_none(self, "subset", "memory_budget")
        _choice(self, "checkpoint", ("last", "best"))
        _choice(self, "bn", ("keep", "recalibrate"))
        check_batch_trials(self.batch_trials, "batch_trials")


@dataclass
class AnalogConfig:
    """Hardware-aware training: the analog tile model in every training MVM (:mod:`analoglearn.analog.training`)."""

    tile: dict[str, Any] | None = None
    """The tile's fields (``analoglearn list analog``), every default filled in; null: digital training."""
    calibration_images: int = 1000
    """Training images on which calibrated input ranges are measured at the start of every epoch."""
    weight_clip: float | None = None
    """κ: after every optimiser step, clip each conv/linear weight to ±κ·std(W) (keeps hardware-aware
    training from diverging, see :mod:`analoglearn.analog.training`); null: no clipping."""

    def __post_init__(self) -> None:
        _positive(self, "calibration_images")
        _positive_or_none(self, "weight_clip")


@dataclass
class Config:
    """A whole run."""

    seed: int = 0
    """Seed from which the initialisation, data-order, training-noise and evaluation-noise generators derive."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    """SAM, ASAM or RWP around the optimiser (optional); any method works under any perturbation."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    analog: AnalogConfig = field(default_factory=AnalogConfig)
    """Hardware-aware training through the tile model (optional; feed-forward and Hopfield networks)."""

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able data (options flattened beside ``name``)."""
        return to_plain(self)

    def digest(self) -> str:
        """Short SHA-256 of the resolved config, for run-directory names."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


# ---------------------------------------------------------------- building from plain data


SEED_MAX = 2**63 - 1
"""Largest seed (seeds are integers in [0, 2⁶³ − 1], the range every torch and numpy generator takes)."""

def _named(registry: Registry[Any], raw: Any, default: str, where: str) -> tuple[str, Any]:
    """Split a ``{name: ..., **options}`` section; validate the name and the options."""
    section = dict(_mapping(raw, where))
    try:
        name = registry.canonical(section.pop("name", default))
    except ConfigError as err:
        raise ConfigError(f"{where}.name: {err}") from None
    return name, registry.build_options(name, section, where=where)


def check_seed(value: Any, where: str) -> int:
    """An integer seed in [0, 2⁶³ − 1]; :class:`ConfigError` naming ``where`` otherwise."""
    seed = _coerce(value, int, where) if not (isinstance(value, int) and not isinstance(value, bool)) else value
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{where} must be an integer in [0, 2^63 - 1] = [0, {SEED_MAX}], got {seed}")
    return seed


def check_batch_trials(value: Any, where: str) -> bool | int:
    """``eval.batch_trials``: true, false or a whole number ≥ 1 of trials per pass (an integral float is
    taken as an integer); :class:`ConfigError` naming ``where`` and the valid values otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and math.isfinite(value) and value == int(value) and 1 <= value < 2**63:
        return int(value)
    raise ConfigError(f"{where} must be true, false or a number of trials per pass ≥ 1, got {_show(value)}")


PERTURBED_METHODS = ("sam", "asam", "rwp")
"""Method names that were perturbations before the ``perturb`` section (translated by :func:`translate`)."""


def translate(raw: dict[str, Any]) -> dict[str, Any]:
    """A config written before the ``perturb`` section, in today's form (others are returned as they are).

    ``method: {name: rwp, estimator: CEP, estimator_options: {...}, sigma: ...}`` becomes
    ``method: {name: CEP, ...}`` and ``perturb: {name: rwp, sigma: ...}`` (``estimator: null``:
    ``method: {name: sgd, label_smoothing}``); ``noise: NAME`` with ``noise_options`` becomes
    ``noise: {name: NAME, **noise_options}``. So an old run's ``config.yaml`` resolves to the same run.
    """
    method = raw.get("method")
    if not isinstance(method, dict) or str(method.get("name", "")).lower() not in PERTURBED_METHODS:
        return raw
    if "perturb" in raw:
        raise ConfigError(f"method.name: {method['name']!r} is a perturbation: give it as perturb.name beside a "
                          "method (sgd, CEP, ...), not as the method as well")
    old = dict(method)
    name = str(old.pop("name")).lower()
    estimator, estimator_options = old.pop("estimator", None), old.pop("estimator_options", None) or {}
    smoothing = old.pop("label_smoothing", 0.0)
    if estimator is None:
        new_method: dict[str, Any] = {"name": "sgd", **({"label_smoothing": smoothing} if smoothing else {})}
    else:
        new_method = {"name": estimator, **estimator_options}
    if "noise" in old or "noise_options" in old:
        old["noise"] = {"name": old.pop("noise", "additive_gaussian"), **(old.pop("noise_options", None) or {})}
    return {**raw, "method": new_method, "perturb": {"name": name, **old}}


def build_config(raw: dict[str, Any] | None) -> Config:
    """Validate plain data (from YAML) into a :class:`Config`."""
    from .plugins import load_builtins

    load_builtins()
    raw = translate(dict(_mapping(raw or {}, "config")))
    valid = [f.name for f in dataclasses.fields(Config)]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid sections: {', '.join(valid)}")
    cfg = Config(seed=check_seed(raw.get("seed", 0), "seed"))
    data = build_dataclass(DataConfig, raw.get("data", {}), where="data")
    try:
        data.name = DATASETS.canonical(data.name)
    except ConfigError as err:
        raise ConfigError(f"data.name: {err}") from None
    cfg.data = data
    cfg.model = ModelConfig(*_named(MODELS, raw.get("model", {}), "lenet", "model"))
    cfg.method = MethodConfig(*_named(METHODS, raw.get("method", {}), "sgd", "method"))
    cfg.perturb = PerturbConfig(*_named(PERTURBATIONS, raw.get("perturb", {}), "none", "perturb"))
    cfg.optim = build_dataclass(OptimConfig, raw.get("optim", {}), where="optim")
    cfg.train = build_dataclass(TrainConfig, raw.get("train", {}), where="train")
    cfg.eval = build_eval(raw.get("eval", {}))
    cfg.analog = build_analog_training(raw.get("analog", {}))
    return cfg


def build_eval(raw: Any) -> EvalConfig:
    """Validate an ``eval`` section (noise names and options included)."""
    section = dict(_mapping(raw, "eval"))
    specs = []
    for i, item in enumerate(_sequence(section.pop("noise", []), "eval.noise")):
        where = f"eval.noise[{i}]"
        item = dict(_mapping(item, where))
        name = _coerce(item.pop("name", "additive_gaussian"), str, f"{where}.name")
        strengths = _coerce(item.pop("strengths", [0.02, 0.05]), list[float], f"{where}.strengths")
        if not strengths or any(s < 0 for s in strengths):
            raise ConfigError(f"{where}.strengths must be a non-empty list of finite numbers ≥ 0, got {strengths}")
        if name.lower() == "compose":
            specs.append(NoiseSpec("compose", strengths, _compose_options(item, where)))
            continue
        name, options = _noise_options(name, item, where)
        specs.append(NoiseSpec(name, strengths, options))
    analog = [build_analog(item, f"eval.analog[{i}]")
              for i, item in enumerate(_sequence(section.pop("analog", []), "eval.analog"))]
    if "seed" in section:
        section["seed"] = check_seed(section["seed"], "eval.seed")
    if "batch_trials" in section:
        section["batch_trials"] = check_batch_trials(section["batch_trials"], "eval.batch_trials")
    evaluation = build_dataclass(EvalConfig, section, where="eval")
    evaluation.noise = specs
    evaluation.analog = analog
    return evaluation


def build_analog_training(raw: Any) -> AnalogConfig:
    """Validate the ``analog`` section (hardware-aware training); its tile is stored with every default."""
    from .analog.tile import TileConfig

    section = build_dataclass(AnalogConfig, raw if raw is not None else {}, where="analog")
    if section.tile is not None:
        tile = build_dataclass(TileConfig, section.tile, where="analog.tile")
        if tile.in_range == "learned":
            raise ConfigError("analog.tile.in_range: learned ranges are trained through the Python API "
                              "(analog.init_ranges); the config takes static or calibrated ranges")
        section.tile = to_plain(tile)
    return section


def build_analog(raw: Any, where: str) -> AnalogSpec:
    """Validate one ``eval.analog`` entry: the tile at every swept value, and its weight noise."""
    from .analog.corruption import SWEEPABLE
    from .analog.tile import TileConfig

    section = dict(_mapping(raw, where))
    unknown = sorted(set(section) - {"tile", "sweep", "values", "noise"}, key=str)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; valid keys in {where}: "
                          "tile, sweep, values, noise")
    tile = build_dataclass(TileConfig, section.get("tile", {}), where=f"{where}.tile")
    if tile.in_range == "learned":
        raise ConfigError(f"{where}.tile.in_range: learned ranges are trained with the network (the Python API's "
                          "analog.init_ranges); evaluate with static or calibrated ranges")
    sweep = _coerce(section.get("sweep", "out_noise"), str, f"{where}.sweep")
    if sweep not in SWEEPABLE:
        raise ConfigError(f"{where}.sweep must be one of {', '.join(SWEEPABLE)}; got {sweep!r}")
    values = _coerce(section.get("values", [0.0, 0.02, 0.04]), list[float], f"{where}.values")
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"{where}.values must be a non-empty list of finite numbers ≥ 0, got {values}")
    noise = section.get("noise")
    if noise is not None:
        noise = _noise_entry(dict(_mapping(noise, f"{where}.noise")), f"{where}.noise", "additive_gaussian")
    from .analog.corruption import AnalogCorruption

    corruption = AnalogCorruption(tile, sweep)
    for value in values:
        try:
            corruption.with_strength(value)
        except ConfigError as err:
            raise ConfigError(f"{where}.values: {value:g} for {sweep}: {err}") from None
    return AnalogSpec(to_plain(tile), sweep, values, noise)


def _noise_name(name: Any, where: str) -> str:
    """The canonical name of a noise model, the error naming ``where.name``."""
    try:
        return NOISE_MODELS.canonical(_coerce(name, str, f"{where}.name"))
    except ConfigError as err:
        raise ConfigError(err.args[0] if f"{where}.name" in str(err) else f"{where}.name: {err}") from None


def _noise_options(name: str, options: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """A noise model's canonical name and its options validated and filled in, as plain data."""
    name = _noise_name(name, where)
    built = NOISE_MODELS.build_options(name, options, where=where)
    return name, to_plain(built) if built is not None else {}


def _noise_entry(item: dict[str, Any], where: str, default: str | None) -> dict[str, Any]:
    """A noise entry with its own strength, ``{name, strength, **options}`` (``strength`` or the model's
    field name), validated into plain ``{name, **options}``; ``default`` is the name when none is given."""
    name = _noise_name(item.pop("name", default), where)
    if "strength" in item:
        item[NOISE_MODELS.get(name).options.strength_field] = item.pop("strength")
    name, options = _noise_options(name, item, where)
    return {"name": name, **options}


def _compose_options(item: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate the ``parts`` of a ``compose`` noise entry: models applied in order to each weight.

    The entry's ``strengths`` set part ``swept`` (default 0, the first); every other part keeps its
    own strength, given as ``strength`` or under its field name (e.g. ``{name: quantize, levels: 32}``).
    """
    parts = item.pop("parts", None)
    swept = item.pop("swept", 0)
    if item:
        raise ConfigError(f"{where} (compose) takes only 'parts', 'swept' and 'strengths'; got {sorted(item)}")
    if not isinstance(parts, list) or not parts:
        raise ConfigError(f"{where} (compose) needs a non-empty 'parts' list of noise entries, "
                          "e.g. [{name: quantize, levels: 32}, {name: additive_gaussian}]")
    plain = []
    for j, part in enumerate(parts):
        part = dict(_mapping(part, f"{where}.parts[{j}]"))
        if "name" not in part:
            raise ConfigError(f"{where}.parts[{j}] needs a 'name'; valid: {', '.join(NOISE_MODELS.names())}")
        plain.append(_noise_entry(part, f"{where}.parts[{j}]", None))
    if not isinstance(swept, int) or isinstance(swept, bool) or not 0 <= swept < len(plain):
        raise ConfigError(f"{where}.swept must index one of its {len(plain)} parts (0 to {len(plain) - 1}); "
                          f"got {swept!r}")
    return {"parts": plain, "swept": swept}


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(obj, name)!r}")


def _positive_or_none(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) is not None and not getattr(obj, name) > 0:
            raise ConfigError(f"{name} must be > 0 or null, got {getattr(obj, name)!r}")


def _choice(obj: Any, name: str, valid: tuple[str, ...]) -> None:
    if getattr(obj, name) not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {getattr(obj, name)!r}")


# ---------------------------------------------------------------- files and overrides


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path`` (or start from the defaults), apply overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(raw, list(overrides)))
