"""A run's parts, built from its config, and the validation that runs before anything is written.

:class:`Seeds` derives the independent generators' seeds from the run seed; ``build_parts`` builds
the model, the optimiser and the method (plus the tile of hardware-aware training); ``validate``
checks everything that can be checked without training (device, data, subsets, model × method,
``eval`` entries), building the model on the ``meta`` device where it allows it, so that a refused
run leaves the disk as it was (:func:`analoglearn.train.prepare` calls it through the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import data as datasets
from .config import Config, DataConfig, EvalConfig, OptimConfig
from .errors import ConfigError
from .method import Method
from .registry import METHODS, MODELS, PERTURBATIONS
from .robust.methods import Backprop, Clock
from .robust.perturbation import Perturbation


@dataclass(frozen=True)
class Seeds:
    """Independent seeds derived from the run seed (numpy SeedSequence), one per source of randomness."""

    init: int
    data: int
    train_noise: int

    analog: int = 0
    device: int = 0

    @classmethod
    def derive(cls, seed: int) -> Seeds:
        """Five 63-bit seeds from one run seed (evaluation noise has its own, ``eval.seed``): init, data,
        training noise, the tile's output noise in hardware-aware training, the device draws of
        analog_sgd. The first three are those of earlier versions (``generate_state`` is prefix-stable)."""
        words = np.random.SeedSequence(seed).generate_state(5, dtype=np.uint64)
        return cls(*(int(w >> np.uint64(1)) for w in words))


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
"""Device types a run may train on (when this machine has them)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda if available, else cpu; check that the named device exists on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = "use cpu, auto, cuda, cuda:N, mps or xpu (those this machine has)"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"train.device {name!r} is not a device; {valid}") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"train.device {name!r}: analoglearn cannot train on {device.type!r} devices; {valid}")
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type) if device.type != "mps" else torch.backends.mps
    if not backend.is_available():
        raise ConfigError(f"train.device is {name!r} but this machine has no {device.type} device; {valid}")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise ConfigError(f"train.device {name!r}: this machine has {count} {device.type} device(s), "
                          f"{device.type}:0 to {device.type}:{count - 1}")
    return device


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------- building blocks


def check_subsets(cfg: Config) -> None:
    """Refuse subsets larger than the dataset's splits (``data.train_subset``, ``data.test_subset``,
    ``eval.subset``), which would otherwise silently mean "all"."""
    spec = datasets.get_spec(cfg.data.name)
    test_size = spec.size("test") if cfg.data.test_subset is None else min(cfg.data.test_subset, spec.size("test"))
    for key, value, size, split in (("data.train_subset", cfg.data.train_subset, spec.size("train"), "train"),
                                    ("data.test_subset", cfg.data.test_subset, spec.size("test"), "test"),
                                    ("eval.subset", cfg.eval.subset, test_size, "(evaluated) test")):
        if value is not None and value > size:
            raise ConfigError(f"{key}={value} is larger than the {size} examples of {spec.name}'s {split} split; "
                              f"give at most {size}, or null for all of them")


def load_splits(cfg: DataConfig, seed: int) -> tuple[Any, Any]:
    """Train and test splits of the configured dataset (fixed random subsets when asked)."""
    train = datasets.load(cfg.name, "train", root=cfg.root)
    test = datasets.load(cfg.name, "test", root=cfg.root)
    if cfg.train_subset is not None and cfg.train_subset < len(train):
        train = train.subset(cfg.train_subset, seed=seed)
    if cfg.test_subset is not None and cfg.test_subset < len(test):
        test = test.subset(cfg.test_subset, seed=seed)
    return train, test


def check_eval(evaluation: EvalConfig, model: nn.Module) -> None:
    """Build every noise model of ``eval.noise`` at every strength, and check that it selects
    parameters of ``model``: a mistake here would otherwise surface only after training."""
    from .noise import from_config

    for i, spec in enumerate(evaluation.noise):
        for strength in spec.strengths:
            try:
                noise = from_config({"name": spec.name, **spec.options}, strength)
            except ConfigError as err:
                raise ConfigError(f"eval.noise[{i}] at strength {strength}: {err}") from None
            if not noise.select(model):
                raise ConfigError(f"eval.noise[{i}] ({spec.name}) selects no parameter of "
                                  f"{type(model).__name__}; see its 'modules', 'bias' and 'norm' options")
    from .analog.corruption import from_spec

    for i, analog_spec in enumerate(evaluation.analog):
        try:
            from_spec(analog_spec).check(model)
        except ConfigError as err:
            raise ConfigError(f"eval.analog[{i}]: {err}") from None


def validate(cfg: Config) -> None:
    """Check everything about ``cfg`` that can be checked without training, writing nothing.

    The device exists; the dataset's files are present, readable and intact; the subsets fit the
    splits; the model can be built for the data's shape, the method accepts it, the optimiser's
    layer groups match it; every ``eval.noise`` entry can be built and corrupts some of its
    weights. Models are built on the ``meta`` device (no memory) where they allow it. Raises an
    :class:`~analoglearn.errors.AnalogLearnError` (ConfigError or DataError) naming what is wrong.
    """
    resolve_device(cfg.train.device)
    check_subsets(cfg)
    input_shape(cfg.data)
    if datasets.get_spec(cfg.data.name).name != "Synthetic":
        for split in ("train", "test"):
            datasets.check_readable(cfg.data.name, split, root=cfg.data.root)
    seeds = Seeds.derive(cfg.seed)
    try:
        with torch.device("meta"):
            build_parts(cfg, seeds, torch.device("meta"))
    except NotImplementedError:  # an initialisation that needs real memory (Hopfield presets: small)
        build_parts(cfg, seeds, torch.device("cpu"))


def build_parts(
    cfg: Config, seeds: Seeds, device: torch.device, steps_per_epoch: int = 1, rank: int = 0
) -> tuple[nn.Module, torch.optim.Optimizer, Method, Any]:
    """The model (on ``device``), the optimiser (wrapped by the ``perturb`` section's SAM/ASAM/RWP, whose
    schedule counts ``steps_per_epoch`` × ``train.epochs`` steps), the method and the tile of hardware-aware
    training (:func:`build_hardware`, None without an ``analog`` section). ``rank``: the worker's, for
    ``perturb.per_worker_noise`` (:mod:`analoglearn.distributed`). Errors that come from combining
    sections name the keys involved (``model.name=lenet with method.name=CEP: ...``)."""
    shape = "×".join(map(str, input_shape(cfg.data)))
    try:
        model = build_model(cfg, seeds).to(device)
    except ConfigError as err:
        raise ConfigError(_with_keys(str(err), f"model.name={cfg.model.name} on {cfg.data.name} ({shape})")) from None
    noise_seed = seeds.train_noise
    if rank and getattr(cfg.perturb.options, "per_worker_noise", False):
        noise_seed = Seeds.derive(seeds.train_noise + rank).train_noise  # every worker its own stream
    noise_generator = generator(noise_seed, "cpu" if device.type == "meta" else device)
    try:
        method = METHODS.create(cfg.method.name, model, cfg.method.options, generator=noise_generator)
    except ConfigError as err:
        raise ConfigError(_with_keys(str(err), f"method.name={cfg.method.name} with model.name={cfg.model.name}")) \
            from None
    method.accumulate = cfg.train.accumulate
    if cfg.train.autocast is not None:
        if not isinstance(method, Backprop):
            raise ConfigError(f"train.autocast={cfg.train.autocast} is for backprop; method.name={cfg.method.name} "
                              "relaxes at its own precision: set method.precision (fp32, bf16, fp16) instead")
        method.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.autocast]
    clock = Clock(steps_per_epoch * cfg.train.epochs, steps_per_epoch)
    base = build_optimizer(model, cfg.optim, seeds.device)
    try:
        optimizer = PERTURBATIONS.create(cfg.perturb.name, base, model, cfg.perturb.options, generator=noise_generator,
                                         clock=clock)
    except ConfigError as err:
        raise ConfigError(_with_keys(str(err), f"perturb.name={cfg.perturb.name} with model.name={cfg.model.name}")) \
            from None
    if isinstance(optimizer, Perturbation):
        optimizer.max_grad_norm = cfg.optim.clip_grad_norm
    check_eval(cfg.eval, model)
    return model, optimizer, method, build_hardware(cfg, model, seeds, method)


def build_hardware(cfg: Config, model: nn.Module, seeds: Seeds, method: Method | None = None) -> Any:
    """The :class:`~analoglearn.analog.training.HardwareAware` state of an ``analog`` section, or None.

    For a Hopfield network ``method.predict`` (its digital relaxation) is the inference the calibrated
    ranges are measured with."""
    if cfg.analog.tile is None:
        return None
    from .analog.relaxation import is_hopfield
    from .analog.tile import TileConfig
    from .analog.training import HardwareAware

    run = method.predict if method is not None and is_hopfield(model) else None
    try:
        return HardwareAware(TileConfig(**cfg.analog.tile), model, seeds.analog, cfg.analog.calibration_images,
                             cfg.analog.weight_clip, run=run)
    except ConfigError as err:
        raise ConfigError(_with_keys(str(err), f"analog.tile with model.name={cfg.model.name}")) from None


def _with_keys(message: str, keys: str) -> str:
    """``message`` prefixed with the config keys it is about, unless it names a key path already."""
    sections = ("model", "method", "perturb", "data", "optim")
    return message if any(f"{s}." in message for s in sections) else f"{keys}: {message}"


def eval_loader(dataset: Any, cfg: DataConfig, device: torch.device, seed: int = 0) -> Any:
    """An evaluation loader over ``dataset``: in order, no augmentation."""
    return datasets.Loader(dataset, cfg.eval_batch_size, shuffle=False, augment=False, seed=seed,
                           device=device, pad_to=cfg.pad_to)


def input_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """(C, H, W) of the tensors the loader yields."""
    channels, height, width = datasets.get_spec(cfg.name).shape
    if cfg.pad_to is not None:
        if cfg.pad_to < max(height, width):
            raise ConfigError(f"data.pad_to={cfg.pad_to} is smaller than the {height}×{width} images of {cfg.name}; "
                              f"give null (no padding) or a size ≥ {max(height, width)}")
        height = width = cfg.pad_to
    return channels, height, width


def build_model(cfg: Config, seeds: Seeds) -> nn.Module:
    """The configured network, initialised from the init generator."""
    spec = datasets.get_spec(cfg.data.name)
    return MODELS.create(cfg.model.name, cfg.model.options, in_shape=input_shape(cfg.data),
                         num_classes=spec.num_classes, generator=generator(seeds.init))


def build_optimizer(model: nn.Module, cfg: OptimConfig, seed: int = 0) -> torch.optim.Optimizer:
    """The torch optimiser; a list of learning rates maps onto ``model.param_groups()``.

    ``analog_sgd`` (:class:`~analoglearn.analog.optim.AnalogSGD`) programs every update as device
    pulses; its device draws come from a generator seeded with ``seed``, saved in its state_dict."""
    if isinstance(cfg.lr, list):
        groups = model.param_groups() if hasattr(model, "param_groups") else None
        if groups is None or len(groups) != len(cfg.lr):
            have = "has no layer groups" if groups is None else f"has {len(groups)} layer groups"
            raise ConfigError(f"optim.lr lists {len(cfg.lr)} rates but the model {have}; give one number")
        params: list[dict[str, Any]] = [{"params": g, "lr": lr} for g, lr in zip(groups, cfg.lr)]
    else:
        params = [{"params": list(model.parameters()), "lr": cfg.lr}]
    for group in params:
        group["initial_lr"] = group["lr"]
    if cfg.name == "analog_sgd":
        from .analog.devices import device_from_config
        from .analog.optim import AnalogSGD

        return AnalogSGD(params, lr=params[0]["lr"], device=device_from_config(cfg.device or {"name": "ideal"}),
                         momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                         nesterov=cfg.nesterov and cfg.momentum > 0, generator=generator(seed),
                         weight_scale=cfg.weight_scale)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=params[0]["lr"], momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
    kind = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return kind(params, lr=params[0]["lr"], betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
