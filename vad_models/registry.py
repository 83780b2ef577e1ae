"""Explicit registry of methods: name -> module, imported lazily so the driver stays light.

Example:
    >>> from vad_models.registry import available_methods
    >>> "luss_ae" in available_methods()
    True
"""

from __future__ import annotations

import importlib

from vad_models.base import Method

# name -> "module:ClassName"; adding a method is one line here plus its package.
_METHODS: dict[str, str] = {
    "luss_ae": "vad_models.luss_ae.method:LussAeMethod",
    "std": "vad_models.std.method:StdMethod",
    "ssmtl": "vad_models.ssmtl.method:SsmtlMethod",
    "mtvae": "vad_models.mtvae.method:MtVaeMethod",
}

# Packages that register frame specs on import (methods plus backbones such as I3D).
_SPEC_PACKAGES = ("vad_models.luss_ae", "vad_models.std", "vad_models.ssmtl", "vad_models.i3d")


def available_methods() -> list[str]:
    """Names accepted by :func:`get_method`."""
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """Instantiate the method registered as ``name``.

    Raises:
        KeyError: naming the known methods when ``name`` is not one of them.
    """
    try:
        target = _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(available_methods())}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()


def import_all() -> None:
    """Import every package that registers frame specs (missing optional packages are skipped)."""
    for module_name in _SPEC_PACKAGES:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
