"""The ``main`` of every training program (``train_v2lc``, ``extract_features``, ``train_fusion``):
``--config FILE [--set key=value ...]`` into the program's config dataclass, then one mapping of
the known failures to exit statuses."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from .options import ConfigError, program_args
from .trainutil import EXIT_NON_FINITE, NonFiniteLossError, config_with_overrides, setup_logging

log = logging.getLogger(__name__)


def program_config(argv: list[str] | None, prog: str, description: str, config_cls):
    """A program's config: ``--config FILE`` with its ``--set key=value`` overrides, validated."""
    return config_with_overrides(program_args(prog, description, argv, config_cls=config_cls), config_cls)


def program_main(argv: list[str] | None, prog: str, description: str, config_cls, body: Callable[[Any], int],
                 errors: tuple[type[Exception], ...] = ()) -> int:
    """The ``main`` of every training program: ``body(config)``'s exit status, or the one each known
    failure maps to (65 for a non-finite loss; 2 for a bad configuration or one of ``errors``),
    with the reason on stderr."""
    setup_logging()
    try:
        return body(program_config(argv, prog, description, config_cls))
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NON_FINITE
    except (ConfigError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
