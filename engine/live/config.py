"""The optional config file (``perpwatch.yaml``): symbols, state file, named plugin instances.

``${ENV_VAR}`` in a string value is read from the environment; every value read that way is a
secret, and so is every option its plugin's ``options_schema`` marks ``"x-secret": true`` or
``"writeOnly": true`` (webhook URLs, tokens): they are redacted from logs, errors, events and
output, with the parts a server may echo on their own (a URL's path and query). Each instance's
options are checked against its plugin's ``options_schema`` with the same located errors as
strategies.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from perpwatch.api.plugin import secret_values
from perpwatch.api.registry import Registry
from perpwatch.common.errors import ErrorList, Loc, LocatedError, PerpwatchError, did_you_mean
from perpwatch.common.redact import redact, secret_parts
from perpwatch.common.symbols import normalise_symbols
from perpwatch.common.timeutil import parse_duration
from perpwatch.language.schemas import locate, schema_validator, validate, validate_with
from perpwatch.language.yamlsrc import LDict, LList, load_yaml_file
from perpwatch.live.state import state_path_problem

DEFAULT_PATH = "perpwatch.yaml"
DEFAULT_STATE = "perpwatch.db"
DEFAULT_SYMBOLS = ["BTC", "ETH"]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Instance:
    name: str
    plugin: str
    options: dict[str, Any]
    loc: Loc | None = None


@dataclass
class Config:
    file: str | None = None
    symbols: list[str] = field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    state: str = DEFAULT_STATE
    sources: dict[str, Instance] = field(default_factory=dict)
    notifiers: dict[str, Instance] = field(default_factory=dict)
    executors: dict[str, Instance] = field(default_factory=dict)
    runner: dict[str, Any] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()
    notify: dict[str, Any] = field(default_factory=dict)  # group_by, repeat, inhibit (routing.NotifyPolicy)
    route: dict[str, Any] = field(default_factory=dict)  # receivers, routes (routing.NotifyPolicy)
    meta: dict[str, Any] = field(default_factory=dict)  # meta-alerts (meta.MetaSettings)
    heartbeat: dict[str, Any] = field(default_factory=dict)  # url (a secret), method, fail, timeout
    # listen, token (a secret), health_grace (perpwatch.web)
    http: dict[str, Any] = field(default_factory=dict)

    def default_source(self) -> str:
        """The source for strategies that name none: the only configured one, else coinglass/binance."""
        if len(self.sources) == 1:
            return next(iter(self.sources))
        if "coinglass" in self.sources or os.environ.get("COINGLASS_API_KEY"):
            return "coinglass"
        return "binance"

    def source(self, name: str) -> Instance:
        return self.sources.get(name) or Instance(name, name, {})

    def notifier(self, name: str) -> Instance:
        return self.notifiers.get(name) or Instance(name, name, {})

    def executor(self, name: str) -> Instance:
        return self.executors.get(name) or Instance(name, name, {})

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ***."""
        return redact(text, self.secrets)


def user_config_path() -> str:
    """The config in the user's config folder: ``$XDG_CONFIG_HOME/perpwatch/perpwatch.yaml``, or
    ``~/.config/perpwatch/perpwatch.yaml`` when ``XDG_CONFIG_HOME`` is unset or not absolute."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "perpwatch", DEFAULT_PATH)


def find_config(path: str | None) -> str | None:
    """The config to use, first found: ``--config``; the ``PERPWATCH_CONFIG`` environment variable
    (a file that must exist, like ``--config``); ./perpwatch.yaml; the user's config folder
    (:func:`user_config_path`); else none (the defaults)."""
    if path:
        return path
    env = os.environ.get("PERPWATCH_CONFIG", "")
    if env:
        if not os.path.exists(env):
            raise PerpwatchError(
                f"PERPWATCH_CONFIG names {env}, which does not exist (unset it, or fix the path)"
            )
        return env
    for candidate in (DEFAULT_PATH, user_config_path()):
        if os.path.exists(candidate):
            return candidate
    return None


def load_config(path: str | None, registry: Registry | None = None) -> Config:
    """Read and check a config file (``None``: the defaults). Raises ErrorList."""
    if path is None:
        return Config()
    doc = load_yaml_file(path)
    if doc is None:
        return Config(file=path)
    if not isinstance(doc, LDict):
        raise LocatedError(
            Loc(path, 1, 1), "a config file must be a YAML mapping (symbols:, sources:, notifiers:, ...)"
        )
    errors = validate(doc, "config", path)
    if errors:
        raise ErrorList(errors)
    secrets: set[str] = set()
    doc = _substitute(doc, secrets, doc.loc)
    heartbeat = dict(doc.get("heartbeat") or {})
    if (doc.get("http") or {}).get("token"):  # the dashboard's actions: a secret even when written out
        secrets.update(secret_parts(str(doc["http"]["token"])))
    if heartbeat.get("url"):  # it identifies the check: whoever has it can ping it
        secrets.update(secret_parts(str(heartbeat["url"])))
        if not str(heartbeat["url"]).startswith(("http://", "https://")):
            where = locate(doc, ["heartbeat", "url"], path)
            raise LocatedError(where, "heartbeat.url: an http:// or https:// URL is expected")
    cfg = Config(
        file=path,
        symbols=_symbols(doc),
        state=_state(doc, path),
        runner=dict(doc.get("runner") or {}),
        secrets=frozenset(secrets),
        notify=_plain(doc.get("notify") or {}),
        route=_plain(doc.get("route") or {}),
        meta=_plain(doc.get("meta") or {}),
        heartbeat=heartbeat,
        http=dict(doc.get("http") or {}),
    )
    for kind in ("sources", "notifiers", "executors"):
        section: LDict = doc.get(kind) or LDict()
        for name, raw in section.items():
            options = {k: v for k, v in raw.items() if k != "plugin"}
            getattr(cfg, kind)[name] = Instance(name, raw.get("plugin", name), options, section.key_loc(name))
    check_routes(cfg, doc, path, registry)
    if registry is not None:
        check_instances(cfg, doc, registry)
    return cfg


def _state(doc: LDict, path: str) -> str:
    """The ``state:`` path, refused where it is written when it cannot name a database file."""
    state = doc.get("state", DEFAULT_STATE)
    problem = state_path_problem(state)
    if problem:
        raise LocatedError(doc.val_loc("state") if "state" in doc else Loc(path, 1, 1), problem)
    return state


def instance_secrets(cfg: Config, registry: Registry) -> frozenset[str]:
    """The values of the options each instance's plugin marks secret, with their echoable parts."""
    found: set[str] = set()
    for kind in ("sources", "notifiers", "executors"):
        table = getattr(registry, kind)
        for inst in getattr(cfg, kind).values():
            cls = table.get(inst.plugin)
            if cls is not None:
                found |= secret_values(cls.options_schema, inst.options)
    return frozenset(found)


def check_instances(cfg: Config, doc: LDict, registry: Registry) -> None:
    """Each instance names a known plugin and its options fit that plugin's schema.

    The options its plugin marks secret join ``cfg.secrets`` first, so no error quotes them."""
    cfg.secrets = cfg.secrets | instance_secrets(cfg, registry)
    errors: list[LocatedError] = []
    for kind in ("sources", "notifiers", "executors"):
        table = getattr(registry, kind)
        for name, inst in getattr(cfg, kind).items():
            cls = table.get(inst.plugin)
            if cls is None:
                where = locate(
                    doc,
                    [kind, name, "plugin"] if "plugin" in doc[kind][name] else [kind, name],
                    cfg.file or "",
                    key="plugin" not in doc[kind][name],
                )
                listing = ", ".join(sorted(table)) or "none"
                hint = did_you_mean(inst.plugin, table) or f" (installed: {listing})"
                errors.append(LocatedError(where, f"no {kind[:-1]} plugin named {inst.plugin!r}{hint}"))
                continue
            node = doc[kind][name]
            sub = LDict({k: v for k, v in node.items() if k != "plugin"})
            sub.loc, sub.key_locs, sub.val_locs = node.loc, node.key_locs, node.val_locs
            validator = schema_validator(cls.options_schema)
            errors += validate_with(validator, sub, cfg.file or "", root=f"{kind}.{name}")
    if errors:
        raise ErrorList([LocatedError(e.loc, cfg.redact(e.message)) for e in errors])


def check_routes(cfg: Config, doc: LDict, path: str, registry: Registry | None = None) -> None:
    """``route:`` names configured notifiers (or installed notifier plugins; checked when the
    registry is given) and ``notify.repeat`` durations are at most a year: located errors
    otherwise (the schema checked the shapes)."""
    errors: list[LocatedError] = []
    known = set(cfg.notifiers) | set(registry.notifiers if registry is not None else ())

    def receivers(node: Any, at: list[Any]) -> None:
        if registry is None:
            return
        for i, name in enumerate(node or ()):
            if name not in known:
                listing = ", ".join(sorted(cfg.notifiers)) or "none"
                hint = did_you_mean(name, known) or f" (configured: {listing})"
                errors.append(LocatedError(locate(doc, [*at, i], path), f"no notifier named {name!r}{hint}"))

    route = doc.get("route") or {}
    receivers(route.get("receivers"), ["route", "receivers"])
    for i, item in enumerate(route.get("routes") or ()):
        receivers(item.get("receivers"), ["route", "routes", i, "receivers"])
    for severity, text in ((doc.get("notify") or {}).get("repeat") or {}).items():
        try:
            ms = parse_duration(str(text))
        except ValueError as e:
            ms, problem = -1, str(e)
        else:
            problem = "at most 365 days" if ms > 365 * 86_400_000 else ""
        if problem:
            where = locate(doc, ["notify", "repeat", severity], path)
            errors.append(LocatedError(where, f"repeat: {text!r}: {problem}"))
    if errors:
        raise ErrorList(errors)


def _plain(value: Any) -> Any:
    """Mappings and lists of a YAML document as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _symbols(doc: LDict) -> list[str]:
    """``symbols:`` in upper case (default BTC, ETH); a coin named twice is a located error."""
    if "symbols" not in doc:
        return list(DEFAULT_SYMBOLS)
    items: LList = doc["symbols"]
    return normalise_symbols(items, items.item_loc)


def _substitute(value: Any, secrets: set[str], loc: Loc) -> Any:
    if isinstance(value, LDict):
        out = LDict({k: _substitute(v, secrets, value.val_loc(k)) for k, v in value.items()})
        out.loc, out.key_locs, out.val_locs = value.loc, value.key_locs, value.val_locs
        return out
    if isinstance(value, LList):
        items = LList(_substitute(v, secrets, value.item_loc(i)) for i, v in enumerate(value))
        items.loc, items.locs = value.loc, value.locs
        return items
    if isinstance(value, str) and "${" in value:

        def repl(m: re.Match) -> str:
            var = m.group(1)
            if var not in os.environ:
                raise LocatedError(loc, f"environment variable {var} is not set (it is used as ${{{var}}})")
            secret = os.environ[var]
            secrets.update(secret_parts(secret))
            return secret

        return _ENV.sub(repl, value)
    return value
