"""pipelines.config: defaults, YAML, overrides, nested keys, type conversion and every error kind."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from pipelines import storage
from pipelines.config import ConfigError, config_from_dict, config_to_dict, load_config, parse_overrides


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Model:
    widths: tuple[int, ...] = (32, 64)
    error: Literal["mse", "pse", "bpe"] = "bpe"
    dropout: float | None = None


@dataclass(frozen=True)
class Cfg:
    epochs: int = 60
    batch_size: int = 16
    name: str = "run"
    amp: bool = False
    layers: list[int] = field(default_factory=lambda: [1, 2])
    weights: dict[str, float] = field(default_factory=lambda: {"vcr": 0.2, "prp": 0.9})
    mode: Mode = Mode.FAST
    out: Path = Path("out")
    optim: Optim = field(default_factory=Optim)
    model: Model = field(default_factory=Model)
    extra: Optim | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


@dataclass(frozen=True)
class Required:
    size: int
    tag: str = "x"


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_overrides() -> None:
    assert load_config(Cfg) == Cfg()


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path,
        "method: luss_ae\n"  # picks the config class; ignored by default
        "epochs: 5\n"
        "optim: {lr: 1e-3}\n"
        "model:\n  widths: [8, 16, 32]\n  error: mse\n"
        "weights: {vcr: 1, prp: 2}\n",
    )
    cfg = load_config(Cfg, path, ["epochs=7", "optim.betas=[0.5, 0.6]", "model.dropout=0.1", "weights.vcr=3"])
    assert cfg.epochs == 7
    assert cfg.optim == Optim(lr=1e-3, betas=(0.5, 0.6))  # nested: lr from YAML, betas from the override
    assert cfg.model == Model(widths=(8, 16, 32), error="mse", dropout=0.1)
    assert isinstance(cfg.model.widths, tuple)
    assert cfg.weights == {"vcr": 3.0, "prp": 2.0} and all(type(v) is float for v in cfg.weights.values())
    assert cfg.batch_size == 16 and cfg.name == "run"


def test_type_conversions() -> None:
    cfg = config_from_dict(
        Cfg,
        {
            "optim": {"lr": 1, "betas": [1, 0]},  # ints accepted for floats and converted
            "layers": (3, 4),
            "mode": "slow",
            "out": "/data/out",
            "extra": {"lr": 0.5},
            "amp": True,
        },
    )
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    assert cfg.optim.betas == (1.0, 0.0) and all(type(b) is float for b in cfg.optim.betas)
    assert cfg.layers == [3, 4] and cfg.mode is Mode.SLOW and cfg.out == Path("/data/out")
    assert cfg.extra == Optim(lr=0.5)
    assert config_from_dict(Cfg, {"model": {"dropout": None}}).model.dropout is None


def test_round_trip_through_json() -> None:
    cfg = config_from_dict(Cfg, {"model": {"widths": [4]}, "extra": {"lr": 0.5}, "mode": "slow"})
    data = json.loads(json.dumps(config_to_dict(cfg)))
    assert data["model"]["widths"] == [4] and data["mode"] == "slow" and data["out"] == "out"
    assert config_from_dict(Cfg, data) == cfg


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    assert load_config(Cfg, _yaml(tmp_path, "# nothing set\n")) == Cfg()


def test_yaml_from_a_storage_uri() -> None:
    storage.write_text_atomic("memory://test-config/cfg.yaml", "epochs: 3\n")
    assert load_config(Cfg, "memory://test-config/cfg.yaml").epochs == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- 1\n- 2\n", "top level must be a mapping.*got list"),
        ("epochs: [1\n", "Invalid YAML"),
    ],
)
def test_bad_yaml_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(Cfg, _yaml(tmp_path, text))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"not found: {missing}"):
        load_config(Cfg, missing)


def test_unknown_keys_suggest_and_list_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, overrides=["epoch=3"])
    message = str(err.value)
    assert "'epoch'" in message and "did you mean 'epochs'?" in message and "batch_size" in message

    with pytest.raises(ConfigError) as err:
        load_config(Cfg, _yaml(tmp_path, "model:\n  widht: [1]\n"))
    message = str(err.value)
    assert "'model.widht'" in message and "did you mean 'model.widths'?" in message
    assert "Valid keys: model.dropout, model.error, model.widths" in message

    with pytest.raises(ConfigError, match="Unknown config key 'method'"):
        load_config(Cfg, overrides=["method=std"], ignore=())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["epochs=2.5"], "'epochs' expects int, got float 2.5"),
        (["epochs=true"], "'epochs' expects int, got bool"),
        (["optim.lr=fast"], "'optim.lr' expects float, got str 'fast'"),
        (["amp=1"], "'amp' expects bool, got int"),
        (["name=123"], "'name' expects str, got int"),
        (["model.widths=[1, x]"], r"'model.widths\[1\]' expects int"),
        (["model.widths=3"], "'model.widths' expects tuple"),
        (["optim.betas=[0.1, 0.2, 0.3]"], "'optim.betas' expects 2 items"),
        (["weights={vcr: high}"], "'weights.vcr' expects float"),
        (["model.dropout=none"], r"'model.dropout' expects float \| None"),
        (["optim=3"], "'optim' expects Optim"),
        (["mode=medium"], "'mode' must be one of 'fast', 'slow'"),
    ],
)
def test_wrong_types_name_the_key(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(Cfg, overrides=overrides)


def test_literal_violation() -> None:
    with pytest.raises(ConfigError, match="'model.error' must be one of 'mse', 'pse', 'bpe', got 'l2'"):
        load_config(Cfg, overrides=["model.error=l2"])


def test_dataclass_validation_becomes_config_error() -> None:
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        load_config(Cfg, overrides=["epochs=0"])


def test_required_fields() -> None:
    assert config_from_dict(Required, {"size": 3}) == Required(size=3)
    with pytest.raises(ConfigError, match="Missing required config key.*size"):
        config_from_dict(Required, {"tag": "y"})


def test_parse_overrides() -> None:
    assert parse_overrides(["a=1", "b.c=[1, 2]", "b.d=1e-4", "s='1'", "n=", "a=2"]) == {
        "a": 2,
        "b": {"c": [1, 2], "d": 1e-4},
        "s": "1",
        "n": None,
    }
    for bad, match in [
        ("novalue", "key=value"),
        ("=3", "key=value"),
        ("a..b=1", "key=value"),
        ("x=[1", "not valid YAML"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_overrides([bad])
    with pytest.raises(ConfigError, match="conflicts with an earlier value for 'a'"):
        parse_overrides(["a=1", "a.b=2"])


def test_rejects_non_dataclasses() -> None:
    with pytest.raises(TypeError, match="dataclass"):
        load_config(dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dataclass instance"):
        config_to_dict(Cfg)
    with pytest.raises(ConfigError, match="expects a mapping"):
        config_from_dict(Cfg, [("epochs", 1)])  # type: ignore[arg-type]
