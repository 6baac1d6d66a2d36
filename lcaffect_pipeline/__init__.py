"""LCAffect pipeline: live comments and videos into learned live-comment features (arXiv 2410.16407).

The plain modules (``formats``, ``sources``, ``cleaning``, ``corpus``, ``segments``, ``shards``,
``downstream``, …) do the work and import no Dagster; the code location is
``lcaffect_pipeline.definitions`` (``dagster job execute -m lcaffect_pipeline.definitions -j ...``).
"""
