"""Resources: where the lake is, what a run covers, and how the crawler behaves.

Everything a user changes between runs is resource configuration, so one YAML file passed
with ``dagster job execute -c`` (or the launchpad) sets it in one place: see ``configs/``.
"""


import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal, Optional

import dagster as dg
from lcaffect_ml.contracts.shards import FRAME_CODECS
from lcaffect_ml.contracts.tables import DEFAULT_PROTOCOLS
from pydantic import Field, model_validator

from lcaffect_ml.contracts import naming
from lcaffect_ml.contracts import tables as contract_tables

from .. import lake, leases, schema, versions
from ..cleaning import CleaningConfig
from ..clips import ClipOptions
from ..demo_world import WORLDS as DEMO_WORLDS
from ..downstream.datasets import MEDIA_POLICIES
from ..human_eval.kit import KitOptions
from ..json_options import json_object
from ..sources import SourceConfig


def owned(cls, name: str, **field_kwargs) -> Any:
    """A resource option whose default is the one the dataclass ``cls`` declares (``cls`` owns the
    option: its default, bounds and help live there once); the resource declares its type and,
    where it says more than ``cls``'s help, its description in the UI."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    field_kwargs.setdefault("description", (f.metadata or {}).get("help") or None)
    return Field(default=list(default) if isinstance(default, tuple) else default, **field_kwargs)


def changed_from_defaults(resource: dg.ConfigurableResource) -> set[str]:
    """The names of the options ``resource`` sets to other than their defaults."""
    values = resource.model_dump()
    return {name for name, field in type(resource).model_fields.items()
            if name in values and values[name] != field.get_default(call_default_factory=True)}


class LakeResource(dg.ConfigurableResource):
    """The lake root (a folder, or an fsspec URL such as s3://bucket/lcaffect)."""

    root: str = Field(default_factory=lambda: os.environ.get("LCAFFECT_LAKE", "lake"), description="Lake root folder or URL; default $LCAFFECT_LAKE or ./lake")
    author_salt: Optional[str] = Field(default=None, description="Salt for author hashes; default $LCAFFECT_AUTHOR_SALT. Without one, authors are dropped.")

    def path(self, *parts: str):
        root = lake.as_path(self.root)
        if lake.is_local(root):
            root = lake.as_path(Path(self.root).expanduser().resolve())
            lake.check_not_scratch(root)
        return root.joinpath(*parts) if parts else root

    def salt(self) -> str | None:
        return schema.author_salt(self.author_salt)


class RunScope(dg.ConfigurableResource):
    """Which videos a run touches and how: the knobs for re-running one video or refreshing."""

    videos: list[str] = Field(default=[], description="Only these video ids (empty: the whole catalogue)")
    force: bool = Field(default=False, description="Recompute even when inputs are unchanged")
    refresh: bool = Field(default=False, description="Re-crawl comments of videos already fetched (new comments keep arriving)")
    chunk_size: Optional[int] = Field(default=None, ge=1, description="Videos per fan-out step (each step is one process, or pod); default: sized to the executor, below")
    workers: Optional[int] = Field(default=None, ge=1, description="Steps the executor runs at once, for sizing chunks (default: the CPU count; 16 under LCAFFECT_EXECUTOR=k8s)")
    min_chunk: Optional[int] = Field(default=None, ge=1, description="Fewest videos per chunk, so a step's start-up is amortised (default 16; 64 under k8s, where a step is a pod)")
    max_chunk: int = Field(default=500, ge=1, description="Most videos per chunk (memory, and what a dying step loses)")
    max_failed_share: float = Field(default=0.5, ge=0.0, le=1.0, description="A per-video asset fails its run when more than this share of the videos it worked on failed (all failed always fails)")
    as_of_json: str = Field(default="{}", description='Read these inputs as of an earlier version, to reproduce a run: tables by version, other assets by manifest id, e.g. {"clean_comments": 3, "v2lc_encoder": "<manifest id>"} (docs/VERSIONS.md)')

    @model_validator(mode="after")
    def _check_as_of(self):
        self.as_of()
        return self

    def as_of(self) -> dict[str, int]:
        return versions.parse_as_of(self.as_of_json)

    def chunks(self, n_videos: int) -> list[tuple[int, int]]:
        from ..stages import plan_chunks

        k8s = os.environ.get("LCAFFECT_EXECUTOR", "multiprocess") == "k8s"
        workers = self.workers or (16 if k8s else os.cpu_count() or 1)
        min_chunk = self.min_chunk or (64 if k8s else 16)
        return plan_chunks(n_videos, workers=workers, min_chunk=min_chunk, max_chunk=self.max_chunk,
                           chunk_size=self.chunk_size)


class CatalogueResource(dg.ConfigurableResource):
    """The video catalogue file (YAML or CSV), or the built-in offline demo."""

    path: str = Field(default_factory=lambda: os.environ.get("LCAFFECT_CATALOGUE", ""), description="Catalogue YAML/CSV; default $LCAFFECT_CATALOGUE")
    demo: bool = Field(default=False, description="Generate the offline demo world into the lake and use its catalogue")
    demo_videos: int = Field(default=16, description="Number of demo videos")
    demo_segments: int = Field(default=5, description="8-second segments per demo video")
    demo_world: Literal[DEMO_WORLDS] = Field(default=DEMO_WORLDS[0], description='"memorisation" (lcaffect_pipeline.demo_world) or '
                                             '"unseen" (lcaffect_pipeline.demo_unseen: no labelled scene in the corpus)')


class CrawlerResource(dg.ConfigurableResource):
    """Crawler politeness and endpoints (tests point the bases at a loopback server)."""

    api_base: str = owned(SourceConfig, "api_base")
    comment_base: str = owned(SourceConfig, "comment_base")
    min_interval_s: float = owned(SourceConfig, "min_interval_s", description="Minimum seconds between requests to one host")
    attempts: int = owned(SourceConfig, "attempts", description="Attempts per request before the video is reported failed")
    backoff_base_s: float = owned(SourceConfig, "backoff_base_s", description="Base of the exponential back-off (with jitter)")
    backoff_max_s: float = owned(SourceConfig, "backoff_max_s")
    timeout_s: float = owned(SourceConfig, "timeout_s")
    cookie_file: Optional[str] = owned(SourceConfig, "cookie_file", description="Netscape cookies.txt (SESSDATA) for full history; a secret")
    max_response_bytes: int = owned(SourceConfig, "max_response_bytes", description="Largest reply accepted, on the wire and after decompression (bytes)")
    deadline_s: float = owned(SourceConfig, "deadline_s", description="Whole-answer deadline per request attempt (timeout_s is per read)")
    max_segments: int = owned(SourceConfig, "max_segments", description="Most Bilibili 6-minute comment segments per video; more is refused")
    max_redirects: int = owned(SourceConfig, "max_redirects")
    redirect_hosts: list[str] = owned(SourceConfig, "redirect_hosts", description="Hosts a redirect may lead to besides the one asked (others are refused)")
    rate_limit_dir: Optional[str] = owned(SourceConfig, "rate_limit_dir", description="Folder of per-host lock files that pace every process; default a temp folder (point it at a shared one for several machines)")

    @model_validator(mode="after")
    def _valid(self) -> "CrawlerResource":
        """Checked when the resource is built, before any request: ``SourceConfig`` holds the bounds."""
        self.source_config()
        return self

    def source_config(self):
        return SourceConfig.from_mapping(self.model_dump())


class CleaningOptions(dg.Config):
    """The fields of ``lcaffect_pipeline.cleaning.CleaningConfig`` as Dagster config, so that an
    unknown field is refused when the run is launched, naming it and the valid ones."""

    drop_code: bool = owned(CleaningConfig, "drop_code")
    min_weight: Optional[int] = owned(CleaningConfig, "min_weight")
    min_score: Optional[int] = owned(CleaningConfig, "min_score")
    strip_control: bool = owned(CleaningConfig, "strip_control")
    nfkc: bool = owned(CleaningConfig, "nfkc")
    trim_whitespace: bool = owned(CleaningConfig, "trim_whitespace")
    max_repeat: Optional[int] = owned(CleaningConfig, "max_repeat")
    repeat_unit_max: int = owned(CleaningConfig, "repeat_unit_max")
    t2s: bool = owned(CleaningConfig, "t2s")
    t2s_platforms: Optional[list[str]] = owned(CleaningConfig, "t2s_platforms")
    min_chars: Optional[int] = owned(CleaningConfig, "min_chars")
    max_chars: Optional[int] = owned(CleaningConfig, "max_chars")
    langid: bool = owned(CleaningConfig, "langid")
    langid_min_letters: int = owned(CleaningConfig, "langid_min_letters")
    langid_min_score: float = owned(CleaningConfig, "langid_min_score")
    languages: Optional[list[str]] = owned(CleaningConfig, "languages")
    keep_unknown_language: bool = owned(CleaningConfig, "keep_unknown_language")
    dedup_ids: bool = owned(CleaningConfig, "dedup_ids")
    dedup_exact: bool = owned(CleaningConfig, "dedup_exact")
    dedup_near: bool = owned(CleaningConfig, "dedup_near")
    dedup_window_ms: Optional[int] = owned(CleaningConfig, "dedup_window_ms")
    batch_rows: int = owned(CleaningConfig, "batch_rows")
    langid_cache_size: int = owned(CleaningConfig, "langid_cache_size")


class CleaningResource(dg.ConfigurableResource):
    """Cleaning options (see lcaffect_pipeline.cleaning.CleaningConfig): ``options`` field by
    field, or ``options_json`` (a JSON object of overrides, applied on top)."""

    options: CleaningOptions = Field(default_factory=CleaningOptions, description="CleaningConfig fields, e.g. {min_chars: 2}; unknown fields are refused at launch")
    options_json: str = Field(default="{}", description='Overrides of CleaningConfig fields as JSON, e.g. {"min_chars": 2}; checked before any video is cleaned')

    @model_validator(mode="after")
    def _valid(self) -> "CleaningResource":
        """Checked when the resource is built, before any video is cleaned."""
        try:
            CleaningConfig(**self.options_dict())
        except TypeError as exc:
            raise ValueError(f"cleaning: {exc}") from exc
        return self

    def options_dict(self) -> dict[str, Any]:
        """The fields that differ from CleaningConfig's defaults (so the fingerprint of a
        video cleaned with defaults stays what it was)."""
        defaults = CleaningOptions().model_dump()
        chosen = {k: v for k, v in self.options.model_dump().items() if v != defaults[k]}
        return {**chosen, **cleaning_overrides(self.options_json)}


def cleaning_overrides(options_json: str | None) -> dict[str, Any]:
    """Parse and check ``options_json``: a ValueError names an unknown field and the valid ones."""
    overrides = json_object(options_json, "cleaning.options_json")
    valid = list(CleaningConfig().to_dict())
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"cleaning.options_json: unknown field(s) {', '.join(map(repr, unknown))}; valid fields: {', '.join(valid)}")
    return overrides


class LakeJsonIOManager(dg.ConfigurableIOManager):
    """Small JSON values (asset manifests, per-chunk results) kept in the lake itself.

    An asset's value is a manifest (``lcaffect_pipeline.versions``): each materialisation adds
    ``{lake}/_manifests/{asset}/{id}.json`` (never overwritten) and refreshes the latest copy,
    ``{lake}/_manifests/{asset}.json``, so a later run (or another machine) reading the same lake
    finds them without sharing DAGSTER_HOME. A loaded value carries its ``manifest_id``, which
    the assets built from it record as what they read. Step outputs inside a fan-out live under
    ``{lake}/_dagster_io/{run_id}/``.
    """

    lake: dg.ResourceDependency[LakeResource]
    as_of_json: str = Field(default="{}", description="Inputs to read as of a version (RunScope.as_of_json)")

    def _asset(self, context) -> str:
        return "/".join(context.asset_key.path)

    def _path(self, context) -> Any:
        ident = context.get_identifier()
        return self.lake.path("_dagster_io", *[naming.safe_name(p) for p in ident[:-1]], f"{naming.safe_name(ident[-1])}.json")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if context.has_asset_key:
            stored = versions.write_manifest(self.lake.path(), self._asset(context), obj)
            context.add_output_metadata({"manifest_id": stored["manifest_id"]})
            return
        lake.atomic_write_bytes(self._path(context), json.dumps(obj, sort_keys=True, default=str).encode())

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if upstream.has_asset_key:
            asset = self._asset(upstream)
            try:
                latest = versions.load(self.lake.path(), asset)
                pinned = versions.pinned_input(self.lake.path(), asset, latest, versions.parse_as_of(self.as_of_json))
                if pinned is not latest:
                    context.log.info(f"reading {asset} as of {pinned.get('as_of')} (manifest {pinned.get('manifest_id')})")
                    # retention keeps what this run reads (the lease lapses after a day)
                    leases.take(self.lake.path(), f"run-{context.step_context.run_id}-{asset}",
                                versions=versions.table_versions(versions.lineage_of(self.lake.path(), asset, pinned)))
                return pinned
            except versions.ManifestError as exc:
                raise FileNotFoundError(f"{exc}: upstream {upstream.asset_key.to_user_string()} has not been "
                                        "materialised in this lake") from None
        path = self._path(upstream)
        if not path.exists():
            raise FileNotFoundError(f"{path}: upstream {upstream.name} has not been materialised in this lake")
        return json.loads(path.read_text())


class ClipsResource(dg.ConfigurableResource):
    """How videos become training clips (segment length, comments per segment, frames, shards)."""

    segment_s: float = owned(ClipOptions, "segment_s")
    comments_per_segment: int = owned(ClipOptions, "comments_per_segment", description="Comments kept per segment in "
                                      "order of appearance (after exact duplicates); training samples its few from these")
    frames_per_segment: int = owned(ClipOptions, "frames_per_segment")
    size: int = owned(ClipOptions, "size", description="Frames are size x size RGB")
    max_shard_bytes: int = owned(ClipOptions, "max_shard_bytes", description="Split a video's shards at this size")
    max_height: int = owned(ClipOptions, "max_height", description="yt-dlp format cap for downloads")
    cookie_file: Optional[str] = owned(ClipOptions, "cookie_file", description="cookies.txt for yt-dlp (a secret)")
    rate_limit: Optional[int] = owned(ClipOptions, "rate_limit", description="Download rate limit, bytes/s")
    max_duration_s: Optional[float] = owned(ClipOptions, "max_duration_s", description="Skip videos longer than this")
    demote_filler: bool = owned(ClipOptions, "demote_filler", description="Rank laughter/filler comments last (off: they are affect signal)")
    exact_frames: bool = owned(ClipOptions, "exact_frames", description="Decode every frame: frame times exactly as "
                               "planned, instead of the nearest kept frame within 100 ms (slower)")
    frame_backend: Literal["auto", "pyav", "decord"] = owned(
        ClipOptions, "frame_backend", description="Frame decoder: auto (PyAV, skipping what the samples do not need), "
        "pyav, or decord (exact, every needed frame; PyAV where decord refuses a file)")
    frame_codec: Literal[tuple(FRAME_CODECS)] = owned(
        ClipOptions, "frame_codec", description="How shards store frames: jpeg (default, about 1/10 of raw), "
        "webp, or npy (exact raw uint8, the layout before codecs); a new codec writes a new shard version")
    frame_quality: int = owned(ClipOptions, "frame_quality", description="jpeg/webp quality (1-100)")

    @model_validator(mode="after")
    def _valid(self) -> "ClipsResource":
        """Checked when the resource is built, before any video is fetched: ``ClipOptions`` holds
        the bounds (``frames_per_segment: 1000000`` once failed 75 s in with bare MemoryErrors)."""
        self.options()
        return self

    def options(self):
        return ClipOptions(**self.model_dump())


class V2LCTrainingResource(dg.ConfigurableResource):
    """Options of ``python -m lcaffect_ml.train_v2lc`` (``--help`` documents each) and how to launch it."""

    # Training options: null keeps train_v2lc's own default (``TrainConfig``, the one home of each:
    # ``python -m lcaffect_ml.train_v2lc --help`` lists them); only the options set are passed on.
    video_encoder: Optional[str] = Field(default=None, description='"tiny" (the default), "base", or a hub name/path e.g. facebook/timesformer-base-finetuned-k400')
    text_encoder: Optional[str] = Field(default=None, description='"tiny" (the default), "base", or e.g. hfl/chinese-roberta-wwm-ext, xlm-roberta-base')
    max_steps: Optional[int] = Field(default=None, description="Optimiser steps (null: train_v2lc's default)")
    batch_size: Optional[int] = Field(default=None, description="Clips per step (null: train_v2lc's default)")
    grad_accum: Optional[int] = Field(default=None, description="Micro-batches per step (null: train_v2lc's default)")
    lr: Optional[float] = Field(default=None, description="Peak learning rate (null: train_v2lc's default)")
    warmup_steps: Optional[int] = Field(default=None, description="Linear warm-up steps (null: train_v2lc's default)")
    eval_every: Optional[int] = Field(default=None, description="Steps between held-out evaluations (null: train_v2lc's default)")
    eval_fraction: Optional[float] = Field(default=None, description="Share of videos held out (null: train_v2lc's default)")
    split_group: Optional[str] = Field(default=None, description='What the held-out retrieval split keeps together: '
                                       '"video", a catalogue column (series, uploader, group …) or "auto" (null: the '
                                       "program's default, auto: the catalogue's group column where it has one)")
    checkpoint_every: Optional[int] = Field(default=None, description="Steps between checkpoints (null: train_v2lc's default)")
    num_workers: Optional[int] = Field(default=None, description="Loader workers (null: train_v2lc's default)")
    max_per_video: Optional[int] = Field(default=None, description="At most this many segments of one video per batch, "
                                         "0: no cap (null: train_v2lc's default)")
    seed: Optional[int] = Field(default=None, description="Seed (null: train_v2lc's default)")
    precision: Optional[str] = Field(default=None, description="auto | bf16 | fp16 | fp32 (null: train_v2lc's default)")
    extra_json: str = Field(default="{}", description="Any other training option, as a JSON object")
    variants_json: str = Field(default="{}", description='Named encoders trained side by side, each on the corpus it '
                               'selects (languages, platforms, genres, or where: {column: [values]} for any catalogue column; '
                               'segments or hours: a seeded subsample of that size, seed sample_seed) and with its own options, e.g. {"zh": {"languages": '
                               '["zh"], "options": {"text_encoder": "hfl/chinese-roberta-wwm-ext"}}, "bilingual": {"options": '
                               '{"text_encoder": "xlm-roberta-base"}}}; the first is the one downstream reads. Empty: one '
                               'encoder, "default", on every shard')
    # how to launch (not training options)
    launcher: Literal["subprocess", "k8s"] = Field(default="subprocess", description='"subprocess" (PipesSubprocessClient) or "k8s" (PipesK8sClient, needs dagster-k8s)')
    gpus: int = Field(default=0, description="GPUs: >1 launches torchrun --nproc_per_node=gpus; for k8s, the nvidia.com/gpu limit")
    command: list[str] = Field(default=[], description='Replace the launch command prefix, e.g. ["srun", "python", "-m", "lcaffect_ml.train_v2lc"]')
    k8s_image: Optional[str] = None
    k8s_namespace: Optional[str] = None
    k8s_secret: Optional[str] = Field(default=None, description="Kubernetes secret whose keys become the training pod's environment (the lake's AWS_* credentials)")


    @model_validator(mode="after")
    def _valid(self) -> "V2LCTrainingResource":
        """The training options checked when the resource is built, against ``TrainConfig``'s
        fields and bounds (the program's own), not when the program starts after the shards."""
        extra = json_object(self.extra_json, "v2lc_training.extra_json")
        changed = changed_from_defaults(self) - {*self.LAUNCH_FIELDS, "extra_json"}
        if changed or extra:  # the defaults need no check (nor torch's import)
            from lcaffect_ml.options import check_options
            from lcaffect_ml.train_v2lc_config import TrainConfig

            check_options(TrainConfig, extra, "v2lc_training.extra_json")
            check_options(TrainConfig, {k: getattr(self, k) for k in changed}, "v2lc_training")
        return self


V2LCTrainingResource.LAUNCH_FIELDS = ("launcher", "gpus", "command", "k8s_image", "k8s_namespace", "k8s_secret", "variants_json")


class HumanEvalResource(dg.ConfigurableResource):
    """What the human evaluation kit samples and shows (``KitOptions`` owns each default and bound)."""

    items: int = owned(KitOptions, "items")
    seed: int = owned(KitOptions, "seed")
    comments_per_set: int = owned(KitOptions, "comments_per_set")
    bank_limit: int = owned(KitOptions, "bank_limit")
    variant: str = owned(KitOptions, "variant")
    device: str = owned(KitOptions, "device")

    @model_validator(mode="after")
    def _valid(self) -> "HumanEvalResource":
        self.options()  # out-of-range values fail at launch, naming the option
        return self

    def options(self) -> KitOptions:
        return KitOptions(**self.model_dump())


class DownstreamResource(dg.ConfigurableResource):
    """Where the downstream datasets are, how their media are prepared, and how fusion is trained."""

    demo: bool = Field(default=False, description="Generate stand-in datasets in the official layouts into the lake")
    demo_world: Literal[DEMO_WORLDS] = Field(default=DEMO_WORLDS[0], description="The demo world the stand-ins show "
                                             "(the catalogue's demo_world)")
    chsims2_root: Optional[str] = Field(default=None, description="CH-SIMS v2 folder (label.csv, Raw/)")
    meld_root: Optional[str] = Field(default=None, description="MELD.Raw folder ({train,dev,test}_sent_emo.csv and the split folders)")
    mustard_root: Optional[str] = Field(default=None, description="MUStARD folder (sarcasm_data.json, utterances_final/)")
    media_policy: Literal[MEDIA_POLICIES] = Field(default="skip", description='Utterances whose media are missing: '
                                                  '"skip" them (reported), "keep" them (text-only work) or "fail"')
    follow_symlinks: bool = Field(default=False, description="Admit media files or folders symlinked out of a dataset "
                                  "folder (refused by default: the folder is untrusted input)")
    frames: int = Field(default=8, ge=1, le=256, description="Frames per utterance")
    size: int = Field(default=224, ge=16, le=2048, description="Frame size (the V2LC video encoder's image size)")
    frame_backend: Literal["auto", "pyav", "decord"] = Field(default="auto", description="Frame decoder (exact "
                                                             "either way): PyAV, or decord (PyAV where it refuses a file)")
    modalities: list[str] = Field(
        default=["text", "audio", "visual", "lc"],
        description="What is extracted and fused: at least one of text, audio, visual, and lc (the synthetic live "
                    "comments, the with-LC arm; without it that arm reports not available). Text alone reads no media, "
                    "so utterances whose media are missing are still scored")
    text_model: str = Field(default="tiny", description="Text encoder of every task without its own (task_features_json)")
    audio_model: str = Field(default="tiny", description="Acoustic encoder of every task without its own")
    vision_model: str = Field(default="tiny", description="Visual encoder of every task without its own")
    task_features_json: str = Field(
        default="{}", description='Per-task extract_features options over the defaults above and features_extra_json, as a '
                                  'JSON object task -> options, e.g. {"chsims2": {"text_model": "hfl/chinese-roberta-wwm-ext"}, '
                                  '"meld": {"text_model": "roberta-base"}, "mustard": {"released_features": {"audio": '
                                  '"/data/mustard/audio_features.p"}}}')
    seeds: list[int] = Field(default=[0, 1, 2], description="Fusion training seeds (mean and spread are reported)")
    mustard_protocol: str = Field(default=DEFAULT_PROTOCOLS["mustard"],
                                  description='"speaker_dependent" (the default, as on the command line: 5 folds, the official '
                                              'ones of split_indices.p / .json when the dataset folder has them) or '
                                              '"speaker_independent" (Friends held out)')
    lc_variants_json: str = Field(default="{}", description='The V2LC variants each task is evaluated with, first '
                                  'the primary, e.g. {"meld": ["bilingual", "zh"]}; a task not named: every variant '
                                  'the v2lc_encoder asset holds. The ablation has one with-LC arm per variant')
    features_extra_json: str = Field(default="{}", description='Other extract_features options, as a JSON object (e.g. {"max_audio_frames": 16})')
    fusion_extra_json: str = Field(default="{}", description="Other train_fusion options, as a JSON object")
    launch_prefix: list[str] = Field(default=[], description='A command the feature and fusion programs are launched '
                                     'through, their "python -m …" appended (e.g. ["srun", "--gpus=1"]); they need only '
                                     "the lake's URL and credentials")

    @model_validator(mode="after")
    def _valid_task_features(self) -> "DownstreamResource":
        """Checked when the resource is built: JSON objects, known tasks (option names are checked
        by extract_features itself, which names the valid ones)."""
        for name in ("features_extra_json", "task_features_json", "lc_variants_json", "fusion_extra_json"):
            json_object(getattr(self, name), f"downstream.{name}")
        known = type(self).model_fields["modalities"].default
        if (not set(self.modalities) <= set(known) or not set(self.modalities) - {"lc"}
                or len(set(self.modalities)) != len(self.modalities)):
            raise ValueError(f"downstream.modalities: distinct names from {known} with at least one of text, audio, "
                             f"visual, got {self.modalities}")
        per_task = json.loads(self.task_features_json or "{}")
        unknown = sorted(set(per_task) - set(contract_tables.DOWNSTREAM_TASKS))
        if unknown or not all(isinstance(v, dict) for v in per_task.values()):
            raise ValueError(f"downstream.task_features_json: keys must be tasks {list(contract_tables.DOWNSTREAM_TASKS)} with an "
                             f"object of options each (unknown: {unknown})")
        self._check_program_options()
        arms = json.loads(self.lc_variants_json or "{}")
        unknown = sorted(set(arms) - set(contract_tables.DOWNSTREAM_TASKS))
        if unknown or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in arms.values()):
            raise ValueError(f"downstream.lc_variants_json: keys must be tasks {list(contract_tables.DOWNSTREAM_TASKS)} with a "
                             f"list of V2LC variant names each (unknown: {unknown})")
        return self

    def _check_program_options(self) -> None:
        """Unknown keys and values out of bounds inside the ``*_json`` options and ``seeds``,
        refused as at the top level, against the programs' own config fields."""
        from lcaffect_ml.options import check_options

        features = {"features_extra_json": json.loads(self.features_extra_json or "{}"),
                    **{f"task_features_json[{t}]": v for t, v in json.loads(self.task_features_json or "{}").items()}}
        if any(features.values()):  # importing the program costs torch's import: only when there is something
            from lcaffect_ml.extract_features import ExtractConfig

            for where, values in features.items():
                check_options(ExtractConfig, values, f"downstream.{where}")
        fusion = json.loads(self.fusion_extra_json or "{}")
        if fusion or "seeds" in changed_from_defaults(self):
            from lcaffect_ml.fusion_data import FusionTrainConfig

            check_options(FusionTrainConfig, fusion, "downstream.fusion_extra_json")
            check_options(FusionTrainConfig, {"seeds": self.seeds}, "downstream")

    def lc_variants(self, task: str) -> list[str] | None:
        """The V2LC variants ``task`` is evaluated with (``lc_variants_json``), None: every one."""
        wanted = json.loads(self.lc_variants_json or "{}").get(task)
        return [str(v) for v in wanted] if wanted else None

    def features_options(self, task: str) -> dict[str, Any]:
        """The extract_features options of one task: the default encoders, features_extra_json, then
        the task's own entry of task_features_json (last wins)."""
        return {"text_model": self.text_model, "audio_model": self.audio_model, "vision_model": self.vision_model,
                **self._chosen_modalities(self.modalities),
                **json.loads(self.features_extra_json or "{}"),
                **json.loads(self.task_features_json or "{}").get(task, {})}

    def fusion_options(self) -> dict[str, Any]:
        """The train_fusion options every fusion run gets: its modalities (besides lc, which the
        with/without arms decide), then fusion_extra_json."""
        return {**self._chosen_modalities([m for m in self.modalities if m != "lc"]),
                **json.loads(self.fusion_extra_json or "{}")}

    def _chosen_modalities(self, names: list[str]) -> dict[str, Any]:
        """``{"modalities": names}`` unless every modality is chosen (the programs' own default, so
        the run folders of a configuration that never named modalities stay where they were)."""
        default = type(self).model_fields["modalities"].default
        return {} if set(self.modalities) == set(default) else {"modalities": names}

    def root_for(self, task: str, demo_root) -> "Path | None":
        explicit = getattr(self, f"{task}_root")
        if explicit:
            return Path(explicit)
        if self.demo:
            from ..downstream import generate_demo_downstream

            from .. import lake

            return Path(generate_demo_downstream(lake.local_path(demo_root, "the demo datasets"), world=self.demo_world)[task])
        return None
