"""Import the Kubernetes client library without its ~850 generated API and model modules.

Herald uses `kubernetes_asyncio` only to load credentials (`herald.kubeauth`: kubeconfig,
exec plugins, in-cluster), and kopf only looks at two of its model classes. Yet importing
`kubernetes_asyncio.client` runs its `__init__`, which imports every API class and every
model: about 850 modules and 36 MiB of each process's memory, a third of the operator's
baseline (bench/RESULTS.md, "A smaller baseline").

`install()` puts lazy stand-ins for `kubernetes_asyncio.client`, `.client.models` and
`.client.api` into `sys.modules` before anything imports the library. Each one exports the
names its real `__init__` would (read from that file), and imports a name's own module the
first time the name is used; submodules (`kubernetes_asyncio.client.configuration`, …)
import as usual. Nothing changes for a caller but when the modules load.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path

PACKAGES = (
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models",
)
_EXPORT = re.compile(r"^from (kubernetes_asyncio\.client[\w.]*) import (\w+)$", re.MULTILINE)


class LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their own modules on first use."""

    def __init__(self, name: str, init: Path, exports: dict[str, str]) -> None:
        super().__init__(name)
        self.__file__ = str(init)
        self.__path__ = [str(init.parent)]
        self.__package__ = name
        spec = importlib.machinery.ModuleSpec(name, None, origin=str(init), is_package=True)
        spec.submodule_search_locations = self.__path__
        self.__spec__ = spec
        self.__all__ = list(exports)
        self._exports = exports

    def __getattr__(self, attr: str) -> object:
        module = self.__dict__.get("_exports", {}).get(attr)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        value = getattr(importlib.import_module(module), attr)
        setattr(self, attr, value)  # looked up once
        return value

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._exports})


def exports(init: Path) -> dict[str, str]:
    """`name -> module` for every `from <module> import <name>` line of an `__init__.py`."""
    return {name: module for module, name in _EXPORT.findall(init.read_text())}


def install() -> bool:
    """Put the lazy packages in place. False, and nothing done, when the library is not
    installed, is already imported, or its layout is not the one expected."""
    if any(name in sys.modules for name in ("kubernetes_asyncio", *PACKAGES)):
        return False
    # find_spec of the top-level package does not import it (a dotted name would).
    top = importlib.util.find_spec("kubernetes_asyncio")
    if top is None or not top.submodule_search_locations:
        return False
    root = Path(next(iter(top.submodule_search_locations)))
    inits = {name: root.joinpath(*name.split(".")[1:], "__init__.py") for name in PACKAGES}
    if not all(init.is_file() for init in inits.values()):
        return False
    found = {name: exports(init) for name, init in inits.items()}
    if (
        "Configuration" not in found["kubernetes_asyncio.client"]
        or not found["kubernetes_asyncio.client.models"]
    ):
        return False
    for name, init in inits.items():
        sys.modules[name] = LazyPackage(name, init, found[name])
    # The parents' attributes, as the import system would set them.
    client, api, models = (sys.modules[name] for name in PACKAGES)
    client.__dict__.update(api=api, models=models)
    return True
