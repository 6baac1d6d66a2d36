"""Whether the pretrained models a run loads are on this machine: in the Hugging Face cache
(``HF_HOME``) or a local folder.

A run names each model by a hub name (``facebook/timesformer-base-finetuned-k400``), a local folder,
or a preset built in code (``tiny``; V2LC's ``base``), which needs nothing. The pipeline checks the
models of a whole run at launch and before its long steps, and the programs check their own at
start, so an offline node fails in seconds naming what is missing and the command that fetches it,
not hours later at the first ``from_pretrained``. ``LCAFFECT_ALLOW_DOWNLOAD=1`` lets a run with
network access download what the cache lacks instead (unless ``HF_HUB_OFFLINE`` is set).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .options import ConfigError

log = logging.getLogger(__name__)

FETCH_COMMAND = "python -m lcaffect_pipeline.defs.fetch_models -c <the run's config files>"
ALLOW_DOWNLOAD_ENV = "LCAFFECT_ALLOW_DOWNLOAD"
# What a checkpoint folder needs for from_pretrained: the config and tokenizer files, and weights
# (safetensors where the repository has them, else PyTorch .bin).
META_PATTERNS = ("*.json", "*.txt", "*.model")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


class ModelsMissingError(ConfigError):
    """Models a run loads do not resolve on this machine."""


@dataclass(frozen=True)
class ModelRef:
    """A model a run loads: its hub name or folder, who loads it, and whether weights are needed
    (False for a tokenizer)."""

    name: str
    used_by: str
    weights: bool = True


def hub_cache_dir() -> Path:
    """The hub cache as huggingface_hub resolves it from the environment (HF_HUB_CACHE, else
    HF_HOME/hub), read now: its module constants are fixed when it is first imported."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def downloads_allowed() -> bool:
    return _truthy(ALLOW_DOWNLOAD_ENV) and not _truthy("HF_HUB_OFFLINE")


def is_local(name: str) -> bool:
    """A folder path (absolute, relative with ./ or ~, or an existing folder), not a hub name."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().is_dir()


def _complete(folder: Path, ref: ModelRef) -> str | None:
    """Why ``folder`` cannot be loaded as ``ref`` (None: it can)."""
    if not ref.weights:
        return None if any((folder / f).is_file() for f in ("tokenizer_config.json", "config.json")) \
            else "no tokenizer_config.json or config.json"
    if not (folder / "config.json").is_file():
        return "no config.json"
    if not any(p.is_file() for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)):
        return f"no weights file ({', '.join(WEIGHT_PATTERNS)}): an incomplete download"
    return None


def locate(ref: ModelRef) -> tuple[Path | None, str]:
    """(the folder ``ref`` loads from, "") or (None, why it does not resolve), without network."""
    if is_local(ref.name):
        folder = Path(ref.name).expanduser()
        if not folder.is_dir():
            return None, f"no such folder {folder}"
        problem = _complete(folder, ref)
        return (None, f"{folder}: {problem}") if problem else (folder, "")
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    cache = hub_cache_dir()
    try:
        found = try_to_load_from_cache(ref.name, "config.json" if ref.weights else "tokenizer_config.json",
                                       cache_dir=cache)
    except HFValidationError:
        return None, "neither a local folder nor a valid hub name"
    if not isinstance(found, str):
        return None, f"not in the Hugging Face cache {cache}"
    folder = Path(found).parent
    problem = _complete(folder, ref)
    return (None, f"in the cache but {problem}") if problem else (folder, "")


def missing(refs: Iterable[ModelRef]) -> dict[str, tuple[list[str], str]]:
    """name -> (who loads it, why it does not resolve), for every model of ``refs`` not on this machine."""
    users: dict[str, list[ModelRef]] = {}
    for ref in refs:
        users.setdefault(ref.name, []).append(ref)
    out = {}
    for name, group in users.items():
        ref = next((r for r in group if r.weights), group[0])  # weights needed by any user: check them
        folder, why = locate(ref)
        if folder is None:
            out[name] = ([r.used_by for r in group], why)
    return out


def require(refs: Iterable[ModelRef], fetch_command: str = FETCH_COMMAND) -> None:
    """Raise ``ModelsMissingError`` naming every model of ``refs`` that does not resolve, where the
    cache is and the command that fills it; with downloads allowed, log them instead."""
    absent = missing(refs)
    if not absent:
        return
    lines = "\n".join(f"  - {name} (used by {', '.join(users)}): {why}" for name, (users, why) in absent.items())
    if downloads_allowed():
        log.warning("%d model(s) not on this machine will be downloaded (%s=1):\n%s", len(absent),
                    ALLOW_DOWNLOAD_ENV, lines)
        return
    raise ModelsMissingError(
        f"{len(absent)} model(s) this run loads are not on this machine (HF_HOME={os.environ.get('HF_HOME', '(unset)')}, "
        f"hub cache {hub_cache_dir()}):\n{lines}\nFetch them into that cache on a machine with network access "
        f"(the same HF_HOME): {fetch_command}; or set {ALLOW_DOWNLOAD_ENV}=1 to let the run download them")
