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
        section: str | None = None) -> Any:
    """A config field with its documentation: ``lr: float = opt(1e-4, "peak learning rate")``.
    No ``default`` and no ``factory``: the option is required. ``section`` starts a titled group."""
    metadata = {"help": help, "section": section}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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
    return config_cls(**data)


def undocumented(config_cls: type) -> list[str]:
    """Names of the options of ``config_cls`` that carry no help (the tests keep this empty)."""
    return [f.name for f in dataclasses.fields(config_cls) if not f.metadata.get("help")]


def program_args(prog: str, description: str, argv: list[str] | None = None, config_cls: type | None = None):
    """Parse ``--config FILE [--set key=value ...]``; ``--help`` lists ``config_cls``'s options."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description,
                                     epilog=options_help(config_cls) if config_cls else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML or JSON config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config option (value parsed as YAML); repeatable")
    return parser.parse_args(argv)
