"""The Dagster code location: ``dagster job execute -m lcaffect_pipeline.definitions -j ...``.

Kept apart from the package's ``__init__`` so that the plain modules (``formats``, ``schema``,
``segments``, ``cleaning``, …) import without Dagster, on a training machine for example.
"""

from .defs.definitions import defs

__all__ = ["defs"]
