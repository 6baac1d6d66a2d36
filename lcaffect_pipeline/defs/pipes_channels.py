"""Dagster Pipes channels that need no disk shared with the program a step launches.

The context goes in an environment variable (``PipesEnvContextInjector``); the program's messages
come back through the lake (``LakeMessageReader``: numbered JSON-lines chunks under
``_pipes/{id}/`` written by ``lcaffect_ml.pipes`` with the lake's credentials, removed after the
step). A program launched here, in a pod, or in a private mount namespace reports the same way.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

import dagster as dg

from lcaffect_ml.pipes import LAKE_MESSAGES_KEY

from ..lake import as_path

PIPES_FOLDER = "_pipes"


class LakeMessageReader(dg.PipesBlobStoreMessageReader):
    """Reads the chunks a program writes under a fresh ``{lake}/_pipes/{id}/`` (polled every second)."""

    def __init__(self, lake_root, interval: float = 1):
        super().__init__(interval=interval)
        self.lake_root = as_path(lake_root)

    @contextlib.contextmanager
    def get_params(self) -> Iterator[dict]:
        folder = self.lake_root / PIPES_FOLDER / uuid.uuid4().hex
        try:
            yield {LAKE_MESSAGES_KEY: str(folder)}
        finally:
            if folder.exists():
                folder.fs.rm(folder.path, recursive=True)

    def messages_are_readable(self, params: dict) -> bool:
        return True  # chunks are polled by name: one that is not there yet is read next time

    def download_messages_chunk(self, index: int, params: dict) -> str | None:
        chunk = as_path(params[LAKE_MESSAGES_KEY]) / f"{index}.json"
        try:
            return chunk.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def no_messages_debug_text(self) -> str:
        return f"Tried to read messages from {self.lake_root / PIPES_FOLDER}; the program needs the lake's URL and credentials"


def lake_pipes_client(client: dg.PipesSubprocessClient, lake_root) -> dg.PipesSubprocessClient:
    """``client`` (the ``pipes_subprocess_client`` resource: its env, cwd, termination) with the
    context in the environment and the messages through the lake."""
    return dg.PipesSubprocessClient(
        env=client.env, cwd=client.cwd, forward_termination=client.forward_termination,
        forward_stdio=client.forward_stdio, termination_timeout_seconds=client.termination_timeout_seconds,
        context_injector=dg.PipesEnvContextInjector(), message_reader=LakeMessageReader(lake_root))
