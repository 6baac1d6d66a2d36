"""What the training programs and the pipeline agree on about a run folder in the lake."""

# Uploaded last, in this order, by the V2LC program: a run folder holding both is a finished run
# (the pipeline reuses it), whatever the program's host.
V2LC_FINISHED = ("metrics.json", "model.safetensors")
# The fusion program's: metrics.json (what the pipeline looks for) at the very end.
FUSION_FINISHED = ("model.safetensors", "metrics.json")
