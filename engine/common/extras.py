"""Optional dependencies, each named with the extra that installs it when it is missing.

``require("pyarrow.parquet", extra="parquet", purpose="reading Parquet files")`` returns the
module, or raises :class:`MissingExtra`: "reading Parquet files needs pyarrow: pip install
'perpwatch[parquet]'", located at a file when ``where`` is given. Plugins use it too (a third
party names its own package with ``install=``), so a missing module is never taken for missing
data.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from perpwatch.common.errors import Loc, LocatedError

#: perpwatch's extras: the packages each one installs (``pyproject.toml``).
EXTRAS = {
    "parquet": ("pyarrow",),
    "report": ("plotly",),
    "sweep": ("optuna", "distributed"),
    "http": ("starlette", "uvicorn", "prometheus_client", "jinja2"),
}


class MissingExtra(LocatedError):
    """An optional dependency is not installed; the message says how to install it."""

    def __init__(self, loc: Loc | None, message: str, module: str, extra: str):
        self.module = module
        self.extra = extra
        super().__init__(loc, message)


def install_hint(module: str, extra: str, purpose: str, install: str | None = None) -> str:
    """The hint: "<purpose> needs <package>: pip install '<install>'" (default ``perpwatch[<extra>]``)."""
    package = module.split(".")[0]
    return f"{purpose} needs {package}: pip install '{install or f'perpwatch[{extra}]'}'"


def require(
    module: str,
    *,
    extra: str,
    purpose: str,
    where: str | Loc | None = None,
    install: str | None = None,
) -> ModuleType:
    """``module`` imported, or :class:`MissingExtra` naming the extra to install.

    ``where`` (a file path or a location) places the error; ``install`` replaces
    ``perpwatch[<extra>]`` in the hint (a plugin's own package).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        loc = Loc(where) if isinstance(where, str) else where
        missing = e.name or module
        if missing.split(".")[0] != module.split(".")[0]:  # installed, but one of its own imports fails
            raise LocatedError(
                loc, f"{purpose} needs {module.split('.')[0]}, which is installed but cannot be imported: {e}"
            ) from None
        raise MissingExtra(loc, install_hint(module, extra, purpose, install), module, extra) from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without saying why not)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
