"""Opt-in fault injection used by the reliability tests (never active unless its env vars are set).

``VAD_FAULT_CRASH_AT_STEP=N`` with ``VAD_FAULT_MARKER=/path`` makes the training worker that reaches global
step ``N`` kill its own process once (``os._exit``), as a hardware or OOM failure would; the marker file makes
the crash happen only once so a restarted worker can finish.
"""

from __future__ import annotations

import os

__all__ = ["maybe_crash"]


def maybe_crash(step: int) -> None:
    """Kill this process once at ``step`` when fault injection is configured."""
    target = os.environ.get("VAD_FAULT_CRASH_AT_STEP")
    marker = os.environ.get("VAD_FAULT_MARKER")
    if target is None or marker is None or step != int(target) or os.path.exists(marker):
        return
    with open(marker, "w") as handle:
        handle.write(f"crashed at step {step}\n")
    os._exit(17)
