"""The contracts between the pipeline (``lcaffect_pipeline``) and the training programs (``lcaffect_ml``).

They live here, in the lower layer, so both sides read one definition (``lcaffect_ml`` never imports
the pipeline or Dagster): ``hashing`` (content hashes and data versions), ``naming`` (the one file
name of an id), ``shards`` (the training-shard layout), ``tables`` (the utterance table and the
feature files the downstream programs read) and ``runs`` (what marks a finished run folder). docs/ARCHITECTURE.md describes them.
"""
