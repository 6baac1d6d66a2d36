"""Talking to Dagster through Pipes, and only when launched by it.

``pipes_session()`` is a context manager around a training program. Under Dagster Pipes
(``PipesSubprocessClient`` sets ``DAGSTER_PIPES_CONTEXT``/``DAGSTER_PIPES_MESSAGES``) it opens the
Pipes context, forwards the ``lcaffect_ml`` log records to the Dagster run log, exposes the step's
``retry_number`` and, at the end, reports one asset materialization (metrics as numeric metadata,
where the model and checkpoint are in the lake, ``data_version`` = sha256 of ``model.safetensors``,
hashed once by the program) and the asset check
``retrieval_above_chance`` (passed when held-out video→comment R@1 beats chance). An exception
inside the block is reported to Dagster by the Pipes context. Outside Dagster, and on every
rank but 0 of a torchrun job, it does nothing, so the same program runs by hand.

Channels: the context comes as Dagster sends it (an environment variable from the pipeline's
launchers, so nothing of the launcher's disk is needed); messages go where the launcher's params
say: ``LAKE_MESSAGES_KEY`` (a URL prefix in the lake, written in numbered chunks through fsspec with
the lake's credentials, ``lcaffect_pipeline.defs.pipes_channels`` reads them), else Dagster's
default channels (a file, or stdout/stderr as the Kubernetes pod-log reader expects).

``dagster_pipes`` is imported lazily (it is light, and absent is fine outside Dagster); this is
the only module of ``lcaffect_ml`` that touches Dagster at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Mapping


log = logging.getLogger(__name__)

CHECK_NAME = "retrieval_above_chance"
LAKE_MESSAGES_KEY = "lake_messages"  # the launcher's message params: the lake URL prefix of the chunks


def launched_by_dagster() -> bool:
    if "DAGSTER_PIPES_CONTEXT" not in os.environ:
        return False
    try:
        from dagster_pipes import PipesEnvVarParamsLoader
    except ImportError:  # launched by Pipes but the package is missing: say so, run anyway
        log.warning("DAGSTER_PIPES_CONTEXT is set but dagster_pipes is not installed: not reporting")
        return False
    return PipesEnvVarParamsLoader().is_dagster_pipes_process()


class _ForwardToPipes(logging.Handler):
    def __init__(self, context):
        super().__init__(level=logging.INFO)
        self.context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self.context.is_closed:
                self.context.log.log(record.levelno, self.format(record))
        except Exception:  # never let log forwarding break training
            self.handleError(record)


class TrainingReporter:
    """What a training program needs from Dagster; every method is a no-op when ``active`` is False."""

    def __init__(self, context=None, asset_key: str | None = None):
        self.context = context
        self.asset_key = asset_key

    @property
    def active(self) -> bool:
        return self.context is not None

    @property
    def retry_number(self) -> int:
        return int(self.context.retry_number or 0) if self.active else 0

    def report_training_result(self, metrics: Mapping[str, Any], model_dir: str,
                               checkpoint: str | None) -> dict[str, Any]:
        """Materialization with metrics, where the model and its checkpoint are (paths or lake
        URLs), the data version (``metrics["model_sha256"]``, the weights' hash), and the
        above-chance check.

        Without retrieval metrics (no held-out videos) the check is reported as failed, saying why,
        so that a declared check never goes missing.
        """
        version = metrics["model_sha256"]
        metadata = pipes_metadata(metrics)
        metadata["model_dir"] = {"raw_value": model_dir, "type": "path"}
        if checkpoint is not None:
            metadata["checkpoint"] = {"raw_value": checkpoint, "type": "path"}
        if "v2c_r1" in metrics:
            passed = bool(float(metrics["v2c_r1"]) > float(metrics["chance_r1"]))
            check_meta = {"v2c_r1": {"raw_value": float(metrics["v2c_r1"]), "type": "float"},
                          "chance_r1": {"raw_value": float(metrics["chance_r1"]), "type": "float"}}
        else:
            passed = False
            check_meta = {"reason": {"raw_value": "no held-out videos (eval_fraction=0)", "type": "text"}}
        result = {"data_version": version, "passed": passed}
        if self.active:
            self.context.report_asset_materialization(metadata=metadata, data_version=version,
                                                      asset_key=self.asset_key)
            self.context.report_asset_check(CHECK_NAME, passed=passed, asset_key=self.asset_key,
                                            metadata=check_meta)
        return result


def report_model_materialization(reporter: TrainingReporter, metrics: Mapping[str, Any], data_version: str,
                                 model_dir: str, checkpoint: str | None = None) -> None:
    """One materialization (metrics as metadata, where the model and its checkpoint are: paths or
    lake URLs, ``data_version`` = the sha256 of ``model.safetensors``) and no asset check: for
    models without a pass/fail criterion, such as the downstream fusion model. A no-op outside Dagster."""
    if not reporter.active:
        return
    metadata = pipes_metadata(metrics)
    metadata["model_dir"] = {"raw_value": model_dir, "type": "path"}
    metadata["model_sha256"] = {"raw_value": data_version, "type": "text"}
    if checkpoint is not None:
        metadata["checkpoint"] = {"raw_value": checkpoint, "type": "path"}
    reporter.context.report_asset_materialization(metadata=metadata, data_version=data_version,
                                                  asset_key=reporter.asset_key)


def pipes_metadata(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Numbers as typed Pipes metadata (int/float), strings as text, mappings as JSON; other values are left out."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            out[key] = {"raw_value": value, "type": "bool"}
        elif isinstance(value, int):
            out[key] = {"raw_value": value, "type": "int"}
        elif isinstance(value, float):
            out[key] = {"raw_value": value, "type": "float"}
        elif isinstance(value, str):
            out[key] = {"raw_value": value, "type": "text"}
        elif isinstance(value, dict):  # e.g. retrieval by platform: a table in the UI
            out[key] = {"raw_value": value, "type": "json"}
    return out


@contextlib.contextmanager
def pipes_session(rank: int = 0, asset_key: str | None = None) -> Iterator[TrainingReporter]:
    if rank != 0 or not launched_by_dagster():
        yield TrainingReporter()
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes(message_writer=_message_writer()) as context:
        handler = _ForwardToPipes(context)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        package_logger = logging.getLogger("lcaffect_ml")
        package_logger.addHandler(handler)
        if package_logger.level == logging.NOTSET or package_logger.level > logging.INFO:
            package_logger.setLevel(logging.INFO)
        reporter = TrainingReporter(context, asset_key)
        if reporter.retry_number > 0:
            log.info("Dagster retry %d of this step: resuming from the latest checkpoint", reporter.retry_number)
        try:
            yield reporter
        finally:
            package_logger.removeHandler(handler)


def _message_writer():
    """Dagster's default message writer, which also writes to the lake where the launcher asks
    (``LAKE_MESSAGES_KEY``): numbered JSON-lines chunks, each one PUT, every second."""
    import fsspec
    from dagster_pipes import PipesBlobStoreMessageWriterChannel, PipesDefaultMessageWriter

    class LakeChannel(PipesBlobStoreMessageWriterChannel):
        def __init__(self, prefix: str):
            super().__init__(interval=1)
            self.prefix = prefix.rstrip("/")

        def upload_messages_chunk(self, payload, index: int) -> None:
            with fsspec.open(f"{self.prefix}/{index}.json", "w", encoding="utf-8") as fh:
                fh.write(payload.getvalue())

    class Writer(PipesDefaultMessageWriter):
        @contextlib.contextmanager
        def open(self, params):
            if LAKE_MESSAGES_KEY not in params:
                with super().open(params) as channel:
                    yield channel
                return
            channel = LakeChannel(params[LAKE_MESSAGES_KEY])
            with channel.buffered_upload_loop():
                yield channel

    return Writer()
