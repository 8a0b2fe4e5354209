"""Config loading: defaults <- TOML <- flags <- --set, with typed checks and helpful errors."""

import dataclasses
from typing import Literal

import pytest

from vltk.config import config_to_dict, load_config, parse_override, require_range
from vltk.errors import VltkError


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.95)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig:
    depth: int = 4
    name: str = "tiny"
    schedule: Literal["cosine", "linear"] = "cosine"
    compile: bool = False
    limit: int | None = None
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError("depth must be >= 1")


def test_layers_merge_in_order(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('depth = 8\nname = "from-file"\n[optim]\nlr = 3e-4\n')
    cfg = load_config(ToyConfig, toml, ["optim.betas=[0.8, 0.99]", "depth=12"],
                      flags={"name": "flag", "limit": None})
    assert cfg == ToyConfig(depth=12, name="flag", optim=OptimConfig(lr=3e-4, betas=(0.8, 0.99)))
    assert load_config(ToyConfig) == ToyConfig()


def test_override_values_are_toml_or_bare_strings():
    assert parse_override("optim.lr=2e-4") == (["optim", "lr"], 2e-4)
    assert parse_override("compile=true") == (["compile"], True)
    assert parse_override("name=small") == (["name"], "small")
    assert parse_override("name = 'base' ") == (["name"], "base")
    with pytest.raises(VltkError, match="key=value"):
        parse_override("depth")


def test_int_promotes_to_float_but_not_the_reverse():
    assert load_config(ToyConfig, overrides=["optim.lr=1"]).optim.lr == 1.0
    assert isinstance(load_config(ToyConfig, overrides=["optim.lr=1"]).optim.lr, float)
    with pytest.raises(VltkError, match="'depth' must be int"):
        load_config(ToyConfig, overrides=["depth=1.5"])
    with pytest.raises(VltkError, match="'compile' must be bool"):
        load_config(ToyConfig, overrides=["compile=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("dpeth=3", "unknown config key 'dpeth' (did you mean 'depth'?)"),
        ("optim.lrr=3", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ("schedule=sqrt", "'schedule' must be one of 'cosine', 'linear'"),
        ("depth=0", "depth must be >= 1"),
        ("optim=3", "must be a table"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(VltkError) as err:
        load_config(ToyConfig, overrides=[override])
    assert message in str(err.value)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("depth = = 3\n")
    with pytest.raises(VltkError, match="not valid TOML"):
        load_config(ToyConfig, bad)
    with pytest.raises(VltkError, match="config file not found"):
        load_config(ToyConfig, tmp_path / "nope.toml")


def test_round_trip_through_dict():
    cfg = ToyConfig(depth=3, optim=OptimConfig(betas=(0.5, 0.6)))
    data = config_to_dict(cfg)
    assert data["optim"]["betas"] == [0.5, 0.6]
    assert load_config(ToyConfig, flags={"depth": 3, "optim.betas": data["optim"]["betas"]}) == cfg


def test_a_partial_table_keeps_its_field_s_own_defaults():
    """A field whose default differs from its type's (MaskGIT's optimiser has no weight decay) keeps that default when
    the user sets another key of the same table."""
    import dataclasses

    from vltk.config import from_dict

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Inner:
        a: int = 1
        b: int = 2

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Outer:
        inner: Inner = dataclasses.field(default_factory=lambda: Inner(a=5))

    assert from_dict(Outer, {"inner": {"b": 3}}).inner == Inner(a=5, b=3)
    assert from_dict(Outer, {"inner": {"a": 7}}).inner == Inner(a=7, b=2)


def test_require_range_is_the_one_range_check_and_catches_nan():
    @dataclasses.dataclass(frozen=True)
    class Knobs:
        steps: int = 1
        weight: float = 0.0
        temperature: float = 1.0

        def __post_init__(self) -> None:
            require_range(self, "steps")
            require_range(self, "weight", low=0, prefix="loss.")
            require_range(self, "temperature", low=0, strict=True)

    Knobs()
    for bad, message in (({"steps": 0}, "steps must be >= 1, got 0"), ({"weight": -0.5}, r"loss.weight must be >= 0"),
                         ({"temperature": 0.0}, "temperature must be > 0"),
                         ({"weight": float("nan")}, "loss.weight must be >= 0, got nan")):
        with pytest.raises(ValueError, match=message):
            Knobs(**bad)
