"""Training-loop pieces shared by the V2LC pretraining program and the downstream fusion trainer.

Config loading (YAML or JSON), seeding and RNG capture, state dicts as safetensors + JSON (never
pickle), atomic files and atomic checkpoint folders, the cosine schedule with warm-up, precision
and autocast selection, DDP set-up under torchrun, and the typed error for a non-finite loss.

Atomic files come from ``lcaffect_ml.atomic``, the one helper the pipeline's lake uses too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import os
import random
import re
import shutil
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .atomic import atomic_file, atomic_open
from .devices import resolve_device
from .lake_folder import read_bytes
from .options import ConfigError

log = logging.getLogger(__name__)

# Exit status of a training program stopped by a non-finite loss (sysexits' EX_DATAERR is 65,
# kept distinct from Python's 1 for "crashed" so an orchestrator can tell the two apart).
EXIT_NON_FINITE = 65


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN/inf; raised before any optimiser step or checkpoint
    of the poisoned weights, so the latest checkpoint on disk is still a good one."""

    def __init__(self, step: int, what: str, value: float):
        self.step, self.what, self.value = step, what, value
        super().__init__(
            f"non-finite {what} ({value}) at step {step}: stopping before the optimiser step; "
            "no checkpoint of these weights was written (lower the lr, check the data, or resume "
            "from the last checkpoint)"
        )


class CheckpointFormatError(ValueError):
    """A checkpoint folder is incomplete, or holds a format this loader refuses (e.g. pickle)."""


# ----------------------------------------------------------------------------------- config


def saved_config(cls, data: Mapping[str, Any], what: str):
    """A model's saved ``config.json`` as its dataclass ``cls``; unknown keys refused (ValueError)."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known - {"format_version", "model_type"}
    if unknown:
        raise ValueError(f"unknown {what} config keys: {sorted(unknown)}")
    return cls(**{k: v for k, v in data.items() if k in known})


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file (a local path or a lake URL) into a dict."""
    suffix = Path(str(path)).suffix
    try:
        text = read_bytes(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    try:
        if suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        raise ConfigError(f"{path}: not valid {suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is parsed as YAML (numbers, bools, lists)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


# --------------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA RNG states, as a flattenable tree (see ``save_state``)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "kind": np_state[0],
            "keys": np.asarray(np_state[1]).astype(np.int64),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npst = state["numpy"]
    keys = np.asarray(npst["keys"]).astype(np.uint32)
    np.random.set_state((npst["kind"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has %d CUDA RNG states, this machine %d devices: not restored",
                        len(cuda), torch.cuda.device_count())


# ------------------------------------------------------------- state dicts, no pickle


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """Split a state-dict tree into tensors (stored in safetensors) and a JSON skeleton.

    Dicts keep their key types (AdamW's state is keyed by int), tuples stay tuples, NumPy arrays
    round-trip as arrays. Anything else (an arbitrary object) raises: it would need pickle.
    """
    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise ValueError(f"state path collision at {path}")
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": path}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError(f"state key {key!r} at {path} is not JSON-representable")
            items.append([key, flatten_state(value, tensors, f"{path}.{key}")])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"state value of type {type(obj).__name__} at {path} cannot be stored without pickle")


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return tensors[tree["__ndarray__"]].numpy()
        if "__dict__" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(unflatten_state(v, tensors) for v in tree["__tuple__"])
        raise CheckpointFormatError(f"unknown state node {sorted(tree)}")
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


def save_state(folder: str | os.PathLike, name: str, state: Any) -> None:
    """Write ``state`` as ``{name}.safetensors`` (tensors) + ``{name}.json`` (everything else)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten_state(state, tensors)
    with atomic_file(folder / f"{name}.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(folder / f"{name}.json", tree)


def load_state(folder: str | os.PathLike, name: str, device: str | torch.device = "cpu") -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    st_path, js_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    for path in (st_path, js_path):
        if not path.is_file():
            raise CheckpointFormatError(f"{path}: missing from checkpoint")
    try:
        tensors = load_file(str(st_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{st_path}: not a safetensors file ({exc})") from exc
    return unflatten_state(json.loads(js_path.read_text(encoding="utf-8")), tensors)


# ---------------------------------------------------------------------- atomic files


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, allow_nan=True)


# ------------------------------------------------------------------------ checkpoints


_STEP_DIR = re.compile(r"^step-(\d+)$")
COMPLETE_MARKER = "trainer_state.json"


class CheckpointManager:
    """Resumable checkpoints under ``root/step-N/``, each written in a temporary folder and renamed
    into place when complete (a killed run leaves at worst a ``.tmp-*`` folder, which is ignored
    and cleaned), keeping the newest ``keep``. ``publish(folder, kept)``, where given, is called
    with each complete checkpoint and the ones kept (``lake_folder.RunFolder.publish_checkpoint``:
    a program whose run folder is in the lake resumes from there)."""

    def __init__(self, root: str | os.PathLike, keep: int = 2,
                 publish: Callable[[Path, list[Path]], None] | None = None):
        self.root = Path(root)
        self.keep = max(1, int(keep))
        self.publish = publish

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / COMPLETE_MARKER).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.root / f"step-{steps[-1]}" if steps else None

    def clean_stale(self) -> list[Path]:
        """Remove temporary folders left by a run killed while writing a checkpoint."""
        removed = []
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.name.startswith(".tmp-") and child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child)
        return removed

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """``write(folder)`` fills a temporary folder; it must write ``COMPLETE_MARKER`` last."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-step-{step}-{uuid.uuid4().hex[:8]}"
        final = self.root / f"step-{step}"
        try:
            tmp.mkdir()
            write(tmp)
            if not (tmp / COMPLETE_MARKER).is_file():
                raise CheckpointFormatError(f"{tmp}: writer did not write {COMPLETE_MARKER}")
            if final.exists():  # the same step saved again (e.g. after a resume): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        for old in self.steps()[: -self.keep]:
            shutil.rmtree(self.root / f"step-{old}", ignore_errors=True)
        if self.publish is not None:
            self.publish(final, [self.root / f"step-{s}" for s in self.steps()])
        return final


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every filesystem/OS
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -------------------------------------------------------------------------- schedules


def cosine_schedule_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                                min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr`` (transformers' implementation)."""
    from transformers.optimization import (
        get_cosine_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
    )

    warmup_steps = min(int(warmup_steps), max(0, int(total_steps) - 1))
    if min_lr_ratio > 0:
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup_steps, total_steps, min_lr_rate=min_lr_ratio)
    return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)


def adamw_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, embeddings of size 1 and the temperature (CLIP practice)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "logit_scale" in name or "norm" in name.lower():
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# ----------------------------------------------------------------- devices, precision


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool = False  # in a process group: the model is wrapped in DDP, even with one rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (``TORCHELASTIC_RUN_ID`` set), with any
    number of ranks: ``torchrun --nproc_per_node 1`` runs the DDP code path on one GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if (world > 1 or "TORCHELASTIC_RUN_ID" in os.environ) and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, dev, torch.distributed.is_initialized())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 on a CUDA device that supports it, else fp32 (CPU bf16 autocast is slow)."""
    precision = precision.lower()
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"precision must be auto, bf16, fp16 or fp32, not {precision!r}")
    if precision == "auto":
        chosen = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        log.info("precision auto -> %s on %s", chosen, device)
        return chosen
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak accelerator memory allocated, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"


# ------------------------------------------------------------------------- the programs' command line


# ------------------------------------------------------------------------- fault-injection points
# No-ops here. Tests replace them (tests/faults.py, or monkeypatch in-process) to crash a run right
# after a step or poison a loss; nothing on the command line or in a config reaches them.


def after_optimizer_step(step: int) -> None:
    """Called after every optimiser step, once its checkpoint (if any) is written."""


def loss_hook(loss: torch.Tensor, step: int) -> torch.Tensor:
    """The loss of optimiser step ``step``, just before it is back-propagated."""
    return loss


def config_with_overrides(args, config_cls):
    """The program's config dataclass from ``--config`` with ``--set`` overrides applied."""
    data = load_config(args.config)
    for item in args.overrides:
        key, value = parse_override(item)
        data[key] = value
    return config_cls.from_dict(data)


def setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
