from pathlib import Path

import pytest

from pipelines.config import load_config
from vad_models.i3d.config import I3DConfig
from vad_models.mtvae.config import MtVaeConfig

# Method and extractor configs; sweep.yaml is a Tune sweep spec (pipelines/tune.py) with its own tests.
CONFIGS = sorted(
    p for p in (Path(__file__).resolve().parents[3] / "configs" / "mtvae").glob("*.yaml") if p.name != "sweep.yaml"
)


def test_there_are_configs() -> None:
    names = {p.name for p in CONFIGS}
    assert {"shanghaitech.yaml", "ucf_crime.yaml", "i3d.yaml", "synthetic.yaml", "i3d_synthetic.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cls = I3DConfig if path.name.startswith("i3d") else MtVaeConfig
    cfg = load_config(cls, path)
    if path.name == "i3d.yaml":
        assert cfg == I3DConfig()  # the shipped recipe is the pinned default
    if path.name == "shanghaitech.yaml":
        assert cfg == MtVaeConfig()  # the paper's defaults are defined once, in the dataclass
