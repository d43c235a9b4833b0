"""The plugin manager: finds plugins, asks each what it registers, and keeps the results.

Plugins come from the ``perpwatch`` entry-point group (built-ins register the same way), from
``--plugin path.py`` and from ``PERPWATCH_PLUGINS`` (paths separated by ``:`` or ``,``).
``PERPWATCH_DISABLE_PLUGINS=name,...`` skips some. A plugin that fails to import or to register
is recorded with its error (and traceback) and skipped; the others still load. A class that does
not implement its kind's abstract methods is refused when it registers. Two plugins registering the
same name is an error naming both.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import inspect
import os
import re
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from perpwatch.api import hookspecs
from perpwatch.api.history import HistoryReader
from perpwatch.api.interfaces import Executor, Notifier, Plugin, Source
from perpwatch.api.sources import provides_is_classmethod
from perpwatch.common.errors import PerpwatchError
from perpwatch.language.functions import BUILTINS, FunctionSpec
from perpwatch.language.metrics import CATALOGUE, Metric

KINDS = ("sources", "notifiers", "executors", "functions", "history_readers", "commands")


@dataclass
class PluginInfo:
    name: str
    version: str
    origin: str  # "entry point (dist)" or the file path
    registers: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None  # of the failures, for ``perpwatch plugins -v``

    def add_error(self, error: str, exc: BaseException | None = None) -> None:
        """Record a problem (and the traceback of ``exc``), keeping the earlier ones."""
        self.error = error if self.error is None else f"{self.error}; {error}"
        if exc is not None:
            tb = "".join(traceback.format_exception(exc))
            self.traceback = tb if self.traceback is None else f"{self.traceback}\n{tb}"


@dataclass
class Registry:
    sources: dict[str, type[Source]] = field(default_factory=dict)
    notifiers: dict[str, type[Notifier]] = field(default_factory=dict)
    executors: dict[str, type[Executor]] = field(default_factory=dict)
    history_readers: dict[str, type[HistoryReader]] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)
    pm: pluggy.PluginManager | None = None

    def check(self) -> None:
        """Raise if two plugins registered the same name."""
        if self.conflicts:
            raise PerpwatchError("; ".join(self.conflicts))

    def extra_metrics(self) -> dict[str, Metric]:
        """Metrics that source plugins add beyond the core namespace."""
        out: dict[str, Metric] = {}
        for cls in self.sources.values():
            for m in getattr(cls, "metrics", ()):
                out[m.name] = m
        return out

    def metric_kinds(self) -> dict[str, str]:
        return {name: m.kind for name, m in self.extra_metrics().items()}

    def catalogue(self) -> dict[str, tuple[Metric, list[str]]]:
        """Every metric name with the sources that provide it (with default options)."""
        out: dict[str, tuple[Metric, list[str]]] = {
            name: (m, []) for name, m in {**CATALOGUE, **self.extra_metrics()}.items()
        }
        for name, cls in sorted(self.sources.items()):
            for metric in sorted(provided_by(cls)):
                if metric in out:
                    out[metric][1].append(name)
        return out

    def add_commands(self, cli: Any) -> None:
        """Let plugins add CLI commands (``register_commands``)."""
        if self.pm is None:
            return
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as e:  # a broken plugin must not break the CLI
                self._fail(impl.plugin_name, f"register_commands failed: {type(e).__name__}: {e}", e)

    def _fail(self, plugin_name: str, error: str, exc: BaseException) -> None:
        for info in self.plugins:
            if info.name == plugin_name:
                info.add_error(error, exc)


def provided_by(cls: type[Source]) -> frozenset[str]:
    """What a source class provides with its default options (empty if it cannot say); opens nothing."""
    try:
        return frozenset(cls.provides({}))
    except Exception:
        return frozenset()


def load_registry(plugin_paths: Iterable[str] = (), *, entry_points: bool = True) -> Registry:
    """Discover and register every plugin; never raises for a broken plugin."""
    reg = Registry()
    pm = pluggy.PluginManager("perpwatch")
    pm.add_hookspecs(hookspecs)
    reg.pm = pm
    disabled = {n.strip() for n in os.environ.get("PERPWATCH_DISABLE_PLUGINS", "").split(",") if n.strip()}
    modules: list[tuple[PluginInfo, Callable[[], ModuleType]]] = []
    if entry_points:
        for ep in importlib.metadata.entry_points(group="perpwatch"):
            if ep.name in disabled:
                continue
            dist = ep.dist
            info = PluginInfo(
                ep.name, dist.version if dist else "?", f"entry point ({dist.name if dist else '?'})"
            )
            modules.append((info, ep.load))
    env = os.environ.get("PERPWATCH_PLUGINS", "").replace(os.pathsep, ",")
    env_paths = [p.strip() for p in env.split(",") if p.strip()]
    for path in [*plugin_paths, *env_paths]:
        name = Path(path).stem
        if name in disabled:
            continue
        info = PluginInfo(name, "local", str(path))
        modules.append((info, functools.partial(_load_file, path)))
    for info, load in modules:
        reg.plugins.append(info)
        try:
            module = load()
            pm.register(module, name=info.name)
        except Exception as e:
            info.add_error(f"failed to load: {type(e).__name__}: {e}", e)
            continue
        version = getattr(module, "__version__", None)
        if version and info.version == "local":
            info.version = str(version)
    for hook_name, kind in (
        ("register_sources", "sources"),
        ("register_notifiers", "notifiers"),
        ("register_executors", "executors"),
        ("register_history_readers", "history_readers"),
        ("register_functions", "functions"),
    ):
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            info = next(i for i in reg.plugins if i.name == impl.plugin_name)
            try:
                impl.function(register=_registrar(reg, info, kind))
            except Exception as e:
                info.add_error(f"{hook_name} failed: {type(e).__name__}: {e}", e)
    for impl in pm.hook.register_commands.get_hookimpls():
        info = next(i for i in reg.plugins if i.name == impl.plugin_name)
        info.registers.setdefault("commands", [])
    return reg


def _load_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    mod_name = f"perpwatch_local_{Path(path).stem}_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _registrar(reg: Registry, info: PluginInfo, kind: str) -> Callable[..., None]:
    table: dict[str, Any] = getattr(reg, kind)
    base = {
        "sources": Source,
        "notifiers": Notifier,
        "executors": Executor,
        "history_readers": HistoryReader,
    }.get(kind)

    def register(obj: Any, *args: Any, **kwargs: Any) -> None:
        spec: FunctionSpec | type
        if kind == "functions":
            spec = _function_spec(obj, *args, origin=info.name, **kwargs)  # type: ignore[misc]
            name = spec.name
            if name in BUILTINS:
                raise ValueError(f"function {name!r} is a built-in and cannot be replaced")
        else:
            if not (isinstance(obj, type) and issubclass(obj, base or Plugin)):
                raise TypeError(
                    f"register() takes a {base.__name__ if base else 'Plugin'} subclass, got {obj!r}"
                )
            _check_contract(obj, kind, info.name)
            name, spec = obj.name, obj
            if not name:
                raise ValueError(f"{obj.__name__} has no name")
        owner = reg.owners.get((kind, name))
        if owner is not None and owner != info.name:
            reg.conflicts.append(
                f"{kind[:-1]} {name!r} is registered by both plugin {owner!r} and plugin {info.name!r}"
            )
            info.add_error(f"{kind[:-1]} {name!r} is already registered by plugin {owner!r}")
            return
        reg.owners[(kind, name)] = info.name
        table[name] = spec
        info.registers.setdefault(kind, []).append(name)

    return register


def _check_contract(cls: type[Plugin], kind: str, plugin: str) -> None:
    """Refuse a class that leaves abstract methods out, or whose ``provides`` is not a class method."""
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise TypeError(
            f"{cls.__name__} (plugin {plugin!r}) does not implement the abstract "
            f"method{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {kind[:-1]}s"
        )
    if kind == "sources" and not provides_is_classmethod(cls):  # type: ignore[arg-type]
        raise TypeError(
            f"{cls.__name__} (plugin {plugin!r}): provides must be a classmethod, provides(cls, options)"
        )


def _function_spec(
    name: str,
    func: Callable[..., Any],
    windows: Iterable[int] = (),
    lookback: Callable[..., int] | None = None,
    returns: str = "num",
    origin: str = "plugin",
) -> FunctionSpec:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"function name {name!r} must be lower-case letters, digits and _")
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    windows = tuple(windows)
    defaults = {i: p.default for i, p in enumerate(params) if p.default is not p.empty and i in windows}
    required = sum(1 for p in params if p.default is p.empty)
    if returns not in ("num", "bool"):
        raise ValueError(f"returns must be 'num' or 'bool', not {returns!r}")
    return FunctionSpec(
        name=name,
        func=func,
        params=tuple(p.name for p in params),
        required=required,
        windows=windows,
        defaults=defaults,
        arg_kinds="n",
        returns=returns,
        lookback=lookback,
        origin=origin,
        doc=inspect.getdoc(func.func if isinstance(func, functools.partial) else func) or "",
    )
