"""LCAffect pipeline: live comments and videos into learned live-comment features (arXiv 2410.16407).

``defs`` is the Dagster code location (``dagster job execute -m lcaffect_pipeline -j ...``).
"""

from .defs.definitions import defs

__all__ = ["defs"]
