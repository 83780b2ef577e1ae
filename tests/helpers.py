"""Constants and small helpers shared by tests (import as ``tests.helpers``)."""

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]

# Overrides of the LUSS-AE config for a model small enough to train in seconds on 2 CPU cores.
TINY_LUSS_OVERRIDES = (
    "height=32",
    "width=32",
    "encoder_channels=[16,16,32,32]",
    "prp_hidden=[32,16]",
    "epochs=1",
    "batch_size=8",
    "train_stride=4",
)


def load_job(name: str) -> ModuleType:
    """Import ``jobs/<name>.py`` as a module (jobs are scripts, not a package), e.g. to call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
