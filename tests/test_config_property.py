"""Property: any override of any schema key, however hostile, gives a valid config or one ConfigError
naming the key path, through the same validation ``train`` runs before it writes anything."""

from __future__ import annotations

import dataclasses
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analoglearn.config import Config, build_config, set_path
from analoglearn.errors import ConfigError, DataError
from analoglearn.plugins import load_builtins
from analoglearn.registry import METHODS, MODELS, PERTURBATIONS
from analoglearn.train import validate

load_builtins()

BASES = {  # one valid run per kind of model, each on the generated data set (no files needed)
    "mlp": {"data": {"name": "Synthetic", "train_subset": 64, "test_subset": 32}, "model": {"name": "mlp"},
            "method": {"name": "sgd"}, "train": {"epochs": 1, "device": "cpu"}},
    "tiny": {"data": {"name": "Synthetic", "train_subset": 64, "test_subset": 32}, "model": {"name": "tiny"},
             "method": {"name": "CEP"}, "train": {"epochs": 1, "device": "cpu"}},
    "rwp": {"data": {"name": "Synthetic", "train_subset": 64, "test_subset": 32}, "model": {"name": "lenet"},
            "method": {"name": "sgd"}, "perturb": {"name": "rwp"}, "train": {"epochs": 1, "device": "cpu"},
            "eval": {"noise": [{"name": "pcm", "strengths": [1.0]}]}},
}


def schema_keys() -> list[str]:
    """Every dotted key of the schema: the sections' fields, and the options of the bases' models and methods."""
    keys = ["seed", "model.name", "method.name", "perturb.name"]
    for section in ("data", "optim", "train", "eval"):
        cls = next(f for f in dataclasses.fields(Config) if f.name == section).default_factory
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls())]
    for base in BASES.values():
        for registry, section in ((MODELS, "model"), (METHODS, "method"), (PERTURBATIONS, "perturb")):
            options = registry.get(base.get(section, {"name": "none"})["name"]).options
            keys += [f"{section}.{f.name}" for f in dataclasses.fields(options)] if options else []
    return sorted(set(keys))


KEYS = schema_keys()
OUTCOMES: list[str] = []
SCALARS = st.one_of(
    st.none(), st.booleans(), st.just(""), st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, -1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
    st.sampled_from(["MNIST", "sgd", "CEP", "cpu", "meta", "cosine", "epoch", "best", "pcm", "ünïcødé", "\x00"]),
)
PLAUSIBLE = st.one_of(st.integers(min_value=1, max_value=64), st.floats(min_value=0.0, max_value=1.0),
                      st.booleans(), st.none(),
                      st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=3))
VALUES = st.one_of(PLAUSIBLE, st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(
        ["name", "strengths", "sigma", "lr", "hidden"])), inner, max_size=3)), max_leaves=6))


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), overrides=st.lists(st.tuples(st.sampled_from(KEYS), VALUES),
                                                                  min_size=1, max_size=3))
def test_hostile_overrides_give_a_valid_config_or_one_config_error_naming_the_key(base, overrides):
    raw = json.loads(json.dumps(BASES[base]))
    for key, value in overrides:
        try:
            set_path(raw, key.split("."), value)
        except ConfigError as err:  # an earlier override made a section a scalar: the error names it
            assert key.split(".")[0] in str(err)
            return
    try:
        validate(build_config(raw))
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message.strip()
        assert any(key in message for key, _ in overrides), (overrides, message)
        OUTCOMES.append("error")
    except DataError as err:  # a real data set named, or a data root given: the message names it
        assert any(key in ("data.name", "data.root") for key, _ in overrides), (overrides, str(err))
        OUTCOMES.append("data")
    else:
        OUTCOMES.append("valid")


def test_the_property_saw_valid_configs_and_errors():
    """The generated overrides are neither all valid nor all refused (the property tests something)."""
    if not OUTCOMES:
        test_hostile_overrides_give_a_valid_config_or_one_config_error_naming_the_key()
    assert OUTCOMES.count("valid") >= 15 and OUTCOMES.count("error") >= 100, {o: OUTCOMES.count(o) for o in
                                                                               set(OUTCOMES)}
