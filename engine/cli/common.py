"""What the command modules share: exit codes, error reporting, the plugin registry of this
invocation, ``--param`` parsing, strategy loading, time options and the ``--state`` check."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from perpwatch.common.errors import ErrorList, LocatedError, PerpwatchError
from perpwatch.common.text import printable

if TYPE_CHECKING:
    from perpwatch.api.registry import Registry
    from perpwatch.cli.main import LazyGroup
    from perpwatch.language.compiler import Strategy

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2

F = TypeVar("F", bound=Callable[..., Any])


def report_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn perpwatch errors into ``file:line:col: error: ...`` lines and exit 2; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ErrorList as e:
            for err in e.errors:
                click.echo(printable(err.format(), multiline=True), err=True)
        except LocatedError as e:
            click.echo(printable(e.format(), multiline=True), err=True)
        except PerpwatchError as e:
            click.echo(printable(f"error: {e}", multiline=True), err=True)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C before a command handles signals itself: one line
            ctx = click.get_current_context(silent=True)
            click.echo(f"{ctx.command_path if ctx else 'perpwatch'}: interrupted", err=True)
            raise SystemExit(130) from None
        except Exception as e:  # a bug, not bad input: still no traceback unless asked for
            if os.environ.get("PERPWATCH_DEBUG"):
                raise
            click.echo(
                printable(f"internal error: {type(e).__name__}: {e} (set PERPWATCH_DEBUG=1 for a traceback)"),
                err=True,
            )
            raise SystemExit(3) from None
        raise SystemExit(EXIT_BAD_INPUT)

    return wrapper


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    """``--param NAME=VALUE`` options as {name: text}; a name given twice is an error.

    Each text is read as its param's type when the strategy compiles: a number as a trader types
    it (``0.1``, ``-2``, ``1e-3``; never ``nan``, ``inf``, ``1_000`` or non-ASCII digits),
    ``true``/``false``, or text (see ``perpwatch.common.numbers``)."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="--param")
        if name in out:
            raise click.BadParameter(
                f"{name} is given more than once ({name}={out[name]} and {name}={value.strip()}); "
                "give each param once",
                param_hint="--param",
            )
        out[name] = value.strip()
    return out


class NumberType(click.ParamType):
    """A numeric option: a finite number as a trader types it (``perpwatch.common.numbers``), a
    whole one with ``integer``, within ``minimum`` (exclusive with ``min_open``) and ``maximum``."""

    name = "number"

    def __init__(
        self,
        *,
        integer: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        min_open: bool = False,
    ):
        self.integer, self.minimum, self.maximum, self.min_open = integer, minimum, maximum, min_open
        if integer:
            self.name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from perpwatch.common.numbers import number_problem, parse_number

        if isinstance(value, str):
            try:
                number: float = parse_number(value)
            except ValueError as e:
                self.fail(str(e), param, ctx)
        else:
            problem = number_problem(value)
            if problem:
                self.fail(problem, param, ctx)
            number = value
        if self.integer and not isinstance(number, int):
            self.fail(f"{value!r} is not a whole number", param, ctx)
        low_ok = self.minimum is None or (number > self.minimum if self.min_open else number >= self.minimum)
        if not low_ok or (self.maximum is not None and number > self.maximum):
            self.fail(f"{value!r} is not in the range {self._range()}", param, ctx)
        return number if self.integer else float(number)

    def _range(self) -> str:
        low = "" if self.minimum is None else f"{self.minimum:g}{' <' if self.min_open else ' <='} "
        high = "" if self.maximum is None else f" <= {self.maximum:g}"
        return f"{low}x{high}"


param_option = click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a strategy param (repeatable)."
)


def get_registry(ctx: click.Context | None = None, *, check: bool = True) -> Registry:
    """The plugin registry of this invocation, loaded on first use (by ``perpwatch.cli.main.cli``).

    With ``check``, two plugins registering the same name end the command: each conflict is printed
    as ``error: ...`` and the exit code is 2.
    """
    root = (ctx or click.get_current_context()).find_root()
    reg = cast("LazyGroup", root.command).registry(root)
    if check and reg.conflicts:
        for conflict in reg.conflicts:
            click.echo(f"error: {conflict}", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    return reg


def strategy_kwargs() -> dict[str, Any]:
    """What plugins add to the language: functions and metric names."""
    reg = get_registry()
    return {"functions": reg.functions, "extra_metrics": reg.metric_kinds()}


def load_strategies(
    files: tuple[str, ...], params: dict[str, str], interval: str | None = None
) -> list[Strategy]:
    """Compile each file with the ``--param`` overrides it declares (every one for a single file),
    at ``interval`` when given (windows stay in bars); a param no file declares is an error."""
    from perpwatch.language.compiler import compile_strategy
    from perpwatch.language.yamlsrc import LDict, load_yaml_file

    kwargs = strategy_kwargs()
    used: set[str] = set()
    out = []
    for path in files:
        doc = load_yaml_file(path)
        declared = doc.get("params") if isinstance(doc, LDict) else None
        own = params
        if len(files) > 1:
            own = {k: v for k, v in params.items() if isinstance(declared, dict) and k in declared}
        used.update(own)
        if interval is not None and isinstance(doc, LDict):
            doc["interval"] = interval
        out.append(compile_strategy(doc, path, overrides=own or None, **kwargs))
    unknown = sorted(set(params) - used)
    if unknown:
        raise PerpwatchError(f"--param {', '.join(unknown)}: no strategy given declares it")
    return out


def time_option(value: str | None, hint: str) -> int | None:
    """A time option (ISO 8601 or epoch ms) in epoch ms; None stays None; a bad value is a usage error."""
    if value is None:
        return None
    from perpwatch.common.timeutil import parse_time

    try:
        return parse_time(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=hint) from None


def check_state_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The ``--state`` callback: refuse a value that cannot name a database file (empty, a directory)."""
    from perpwatch.live.state import state_path_problem

    problem = None if value is None else state_path_problem(value)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def config_option(help: str = "Config file (for its state path).") -> Callable[[F], F]:
    """``--config FILE`` (as ``config_path``), the option of every command that reads the config."""
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), help=help)


def state_option(help: str = "State database.") -> Callable[[F], F]:
    """``--state FILE`` (as ``state_opt``), checked by :func:`check_state_option`."""
    return click.option(
        "--state", "state_opt", type=click.Path(dir_okay=False), callback=check_state_option, help=help
    )


def with_state_options(fn: F) -> F:
    """``--config`` and ``--state``: the options of the commands that work on the state database."""
    return config_option()(state_option()(fn))


def log_level(ctx: click.Context | None = None) -> int | None:
    """The level ``-q`` or ``--log-level`` chose for this invocation (a ``logging`` level), or None."""
    current = ctx or click.get_current_context(silent=True)
    if current is None:
        return None
    obj = current.find_root().obj
    level = obj.get("log_level") if isinstance(obj, dict) else None
    return level if isinstance(level, int) else None


def install_default_log_handler(ctx: click.Context, level: int) -> None:
    """Every command's log at ``level`` and above on stderr, each line redacted (secrets in the
    environment) and printable; removed when the command ends (``perpwatch run`` puts its own)."""
    import logging
    import sys

    from perpwatch.cli.run import RedactFilter, env_secrets

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter(env_secrets()))
    handler.perpwatch_default = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    before = root.level
    root.addHandler(handler)
    root.setLevel(level)
    quieted = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    for name in quieted:  # request lines carry URLs: never below WARNING
        logging.getLogger(name).setLevel(max(level, logging.WARNING))

    def remove() -> None:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(before)
        for name, was in quieted.items():
            logging.getLogger(name).setLevel(was)

    ctx.call_on_close(remove)


def drop_default_log_handler() -> None:
    """Detach the handler of :func:`install_default_log_handler` (a command that logs its own way)."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "perpwatch_default", False):
            root.removeHandler(handler)
