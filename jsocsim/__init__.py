"""jsocsim: a faithful, fault-injecting emulator of JSOC's HTTP/JSON interface.

Public API: `Emulator`, `EmulatorConfig`, `FaultConfig`, `run_emulator` (see docs/emulator.md).
Names are imported lazily so that submodules can import `jsocsim.config` without cycles.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Emulator", "EmulatorConfig", "FaultConfig", "run_emulator"]


def __getattr__(name: str) -> Any:
    if name in ("EmulatorConfig", "FaultConfig"):
        from jsocsim import config

        return getattr(config, name)
    if name in ("Emulator", "run_emulator"):
        from jsocsim import server

        return getattr(server, name)
    raise AttributeError(f"module 'jsocsim' has no attribute {name!r}")
