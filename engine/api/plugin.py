"""What every plugin class shares: the context the engine hands it, its errors, its base class, and
the options its ``options_schema`` marks secret."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from perpwatch.common.clock import Clock
from perpwatch.common.redact import secret_parts

#: Keywords that mark an option of an ``options_schema`` as a secret (``"x-secret": true``, or JSON
#: Schema's own ``"writeOnly": true``): its value is never shown, nor the parts of it a server
#: may echo (a URL's path and query, a token in ``Bearer <token>``).
SECRET_MARKERS = ("x-secret", "writeOnly")


@dataclass
class PluginContext:
    """What the engine hands a plugin instance.

    ``transport`` replaces httpx's network transport (tests use ``httpx.MockTransport``);
    ``clock`` is the engine's clock (fake in tests); ``state_path`` is the SQLite state database;
    ``secrets`` are config values that came from ``${ENV}`` or from options marked secret (with
    the parts of them a server may echo) and must never be shown;
    ``store`` is the engine's state store (``perpwatch.live.state.StateStore``) when one is open, so an
    executor can write inside the cycle's transaction.
    """

    clock: Clock = field(default_factory=Clock)
    transport: httpx.AsyncBaseTransport | None = None
    state_path: str | None = None
    secrets: frozenset[str] = frozenset()
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("perpwatch"))
    store: Any = None


class PluginError(Exception):
    """A plugin's failure, with a message that is safe to show (no secrets)."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class Plugin:
    """The base of sources, notifiers and executors.

    ``name`` is the default instance name in a config; ``options_schema`` is the JSON Schema of the
    options, checked when the config is loaded, and the one place that states their defaults
    (read them with :meth:`option`). An instance is built as ``cls(options, ctx)``. The kinds'
    base classes are abstract: a class must implement their abstract methods, or
    registering it fails.
    """

    name: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}

    @classmethod
    def secret_options(cls) -> tuple[str, ...]:
        """The options ``options_schema`` marks secret (:data:`SECRET_MARKERS`)."""
        return secret_option_names(cls.options_schema)

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None):
        self.options = dict(options or {})
        self.ctx = ctx or PluginContext()

    @classmethod
    def option_default(cls, name: str) -> Any:
        """The ``default`` that ``options_schema`` gives option ``name`` (a copy; None without one)."""
        spec = cls.options_schema.get("properties", {}).get(name, {})
        return copy.deepcopy(spec.get("default"))

    def option(self, name: str) -> Any:
        """Option ``name``: its configured value, else its default from ``options_schema``."""
        return self.options[name] if name in self.options else self.option_default(name)

    async def aclose(self) -> None:
        """Release connections; called once when the engine stops."""


def secret_option_names(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """The top-level properties of ``schema`` marked ``"x-secret": true`` or ``"writeOnly": true``."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return ()
    return tuple(
        name
        for name, spec in properties.items()
        if isinstance(spec, Mapping) and any(spec.get(marker) is True for marker in SECRET_MARKERS)
    )


def secret_values(schema: Mapping[str, Any], options: Mapping[str, Any]) -> set[str]:
    """Every text and number inside the options ``schema`` marks secret (in mappings and lists
    too), with the parts of each that a server may echo (``secret_parts``)."""
    found: set[str] = set()
    for name in secret_option_names(schema):
        if name in options:
            for leaf in _leaves(options[name]):
                found |= secret_parts(leaf)
    return found


def _leaves(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)]
    return []
