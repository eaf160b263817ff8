"""Config: YAML + dotted overrides, validation with messages that list valid choices."""

from __future__ import annotations

import pytest

from analoglearn.config import Config, apply_overrides, build_config, load_config, parse_override
from analoglearn.errors import ConfigError


def test_defaults_resolve_and_round_trip():
    cfg = build_config({})
    plain = cfg.to_dict()
    assert plain["model"]["name"] == "lenet" and "width" in plain["model"]
    assert build_config(plain).to_dict() == plain
    assert cfg.digest() == build_config(plain).digest()


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {name: MNIST}\ntrain: {epochs: 5}\n")
    cfg = load_config(path, ["train.epochs=3", "data.name=fashionmnist", "optim.lr=[0.1, 0.05]",
                             "model.name=mlp", "model.hidden=[64]", "data.pad_to=null"])
    assert cfg.train.epochs == 3
    assert cfg.data.name == "FashionMNIST"  # canonical spelling
    assert cfg.optim.lr == [0.1, 0.05]
    assert cfg.model.options.hidden == [64]


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("epochs")
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"name": "ImageNet"}}, "Valid datasets: MNIST"),
        ({"model": {"name": "resnet1000"}}, "Valid models:"),
        ({"method": {"name": "magic"}}, "Valid methods:"),
        ({"train": {"epochz": 3}}, r"unknown key\(s\) train.epochz; valid keys in train:.*epochs"),
        ({"trian": {}}, "valid sections"),
        ({"train": {"epochs": "three"}}, "train.epochs must be an integer"),
        ({"train": {"epochs": 0}}, "epochs must be > 0"),
        ({"optim": {"lr": -1}}, "optim.lr must be > 0"),
        ({"optim": {"name": "lbfgs"}}, "one of sgd, adam, adamw"),
        ({"model": {"name": "lenet", "depth": 3}}, "valid keys in model: width"),
        ({"train": {"checkpoint_every": "often"}}, "checkpoint_every"),
        ({"data": "MNIST"}, "must be a mapping"),
    ],
)
def test_invalid_configs_name_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        build_config(raw)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_bool_is_not_an_integer():
    with pytest.raises(ConfigError):
        build_config({"train": {"epochs": True}})


def test_config_is_a_dataclass_tree():
    cfg = Config()
    assert cfg.train.epochs == 10 and cfg.optim.schedule == "cosine"
