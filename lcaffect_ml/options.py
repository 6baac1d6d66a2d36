"""The training programs' one command line: ``--config FILE [--set key=value ...]``, with each
option documented where its config dataclass declares it, so ``--help`` is the reference.

A config option is a dataclass field made with ``opt``; its help (and, on the first field of a
section, the section's title) lives in the field's metadata. ``options_help`` renders them in
declaration order; ``tests/test_options.py`` fails when a field has no help.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from typing import Any, Callable

class ConfigError(ValueError):
    """A training configuration file is unreadable or has an unknown/invalid option."""


HELP_INDENT = 24
HELP_WIDTH = 100


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
        section: str | None = None, low: float | None = None, high: float | None = None,
        above: float | None = None, choices: tuple | None = None, max_items: int | None = None) -> Any:
    """A config field with its documentation: ``lr: float = opt(1e-4, "peak learning rate", above=0)``.
    No ``default`` and no ``factory``: the option is required. ``section`` starts a titled group.
    ``low``/``high`` (inclusive), ``above`` (exclusive), ``choices`` and ``max_items`` (a list's
    length) are the option's allowed values: ``check_bounds`` and ``check_options`` enforce them,
    the one place they are written."""
    bounds = {k: v for k, v in (("low", low), ("high", high), ("above", above), ("choices", choices),
                                ("max_items", max_items)) if v is not None}
    metadata = {"help": help, "section": section, "bounds": bounds}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def allowed(field: dataclasses.Field) -> str:
    """The allowed values of an option in words ("an integer in [1, 128]", "one of 'a', 'b'")."""
    b = field.metadata.get("bounds") or {}
    parts = []
    if "choices" in b:
        parts.append("one of " + ", ".join(map(repr, b["choices"])))
    if "low" in b or "high" in b or "above" in b:
        lo = f"({b['above']}" if "above" in b else f"[{b.get('low', '-inf')}"
        parts.append(f"in {lo}, {b.get('high', 'inf')}{']' if 'high' in b else ')'}")
    if "max_items" in b:
        parts.append(f"at most {b['max_items']} items")
    return " and ".join(parts)


def _fits(bounds: dict, value: Any) -> bool:
    if "max_items" in bounds:  # the items' own type is the config's to check
        return not isinstance(value, (list, tuple)) or len(value) <= bounds["max_items"]
    if "choices" in bounds:
        return value in bounds["choices"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return False
    return (value >= bounds.get("low", value) and value <= bounds.get("high", value)
            and ("above" not in bounds or value > bounds["above"]))


def check_value(field: dataclasses.Field, value: Any, where: str = "") -> None:
    """ConfigError naming the option and its allowed values when ``value`` is outside them
    (None, an unset optional option, always fits)."""
    bounds = field.metadata.get("bounds") or {}
    if bounds and value is not None and not _fits(bounds, value):
        shown = f"{len(value)} items" if isinstance(value, (list, tuple)) else repr(value)
        raise ConfigError(f"{where}{field.name} = {shown:.80}: must be {allowed(field)}")


def check_bounds(config: Any, where: str = "") -> None:
    """Every bounded option of the dataclass instance ``config`` checked (``check_value``)."""
    for field in dataclasses.fields(config):
        check_value(field, getattr(config, field.name), where)


def check_options(config_cls: type, values: dict[str, Any], where: str) -> None:
    """Options meant for ``config_cls`` checked before anything is built from them (a Dagster
    resource, at launch): unknown names refused naming the known ones, values within bounds.
    ``where`` prefixes the message (the resource option the values came from)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if unknown := sorted(set(values) - set(fields)):
        raise ConfigError(f"{where}: unknown option(s) {unknown}; known: {sorted(fields)}")
    for name, value in values.items():
        check_value(fields[name], value, f"{where}: ")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return "" if field.default is None else f" (default {field.default!r})"
    if field.default_factory is not dataclasses.MISSING:
        return f" (default {field.default_factory()!r})"
    return " (required)"


def options_help(config_cls: type) -> str:
    """Every option of ``config_cls`` with its type, default and help, grouped by section."""
    lines = ["config options (a YAML or JSON mapping; --set key=value overrides one, the value parsed as YAML):"]
    for field in dataclasses.fields(config_cls):
        if field.metadata.get("section"):
            lines += ["", f"{field.metadata['section']}:"]
        head = f"  {field.name}"
        text = f"{field.metadata.get('help', '')}{_default(field)}"
        wrapped = textwrap.wrap(text, HELP_WIDTH - HELP_INDENT) or [""]
        if len(head) + 2 > HELP_INDENT:
            lines += [head] + [" " * HELP_INDENT + w for w in wrapped]
        else:
            lines += [head.ljust(HELP_INDENT) + wrapped[0]] + [" " * HELP_INDENT + w for w in wrapped[1:]]
    return "\n".join(lines)


def build(config_cls: type, data: dict[str, Any]) -> Any:
    """``config_cls(**data)``, refusing unknown options (naming the known ones) and missing or empty
    required ones (fields declared without a default)."""
    fields = dataclasses.fields(config_cls)
    known = {f.name for f in fields}
    if unknown := sorted(set(data) - known):
        raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(known)}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing := [k for k in required if data.get(k) in (None, "")]:
        raise ConfigError(f"missing required option(s) {missing}")
    config = config_cls(**data)
    check_bounds(config)
    return config


def program_args(prog: str, description: str, argv: list[str] | None = None, config_cls: type | None = None):
    """Parse ``--config FILE [--set key=value ...]``; ``--help`` lists ``config_cls``'s options."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description,
                                     epilog=options_help(config_cls) if config_cls else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML or JSON config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config option (value parsed as YAML); repeatable")
    return parser.parse_args(argv)
