"""Resources: where the lake is, what a run covers, and how the crawler behaves.

Everything a user changes between runs is resource configuration, so one YAML file passed
with ``dagster job execute -c`` (or the launchpad) sets it in one place: see ``configs/``.
"""


import json
import os
from pathlib import Path
from typing import Any, Literal, Optional

import dagster as dg
from lcaffect_ml.contracts.shards import DEFAULT_FRAMES_PER_SEGMENT, DEFAULT_SEGMENT_S
from lcaffect_ml.contracts.tables import DEFAULT_PROTOCOLS
from pydantic import Field, model_validator

from .. import lake, leases, schema, versions
from ..demo import WORLDS as DEMO_WORLDS
from ..jsonopt import json_object
from lcaffect_ml.contracts import naming
from lcaffect_ml.contracts import tables as contract_tables


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
    chunk_size: Optional[int] = Field(default=None, description="Videos per fan-out step (each step is one process, or pod); default: sized to the executor, below")
    workers: Optional[int] = Field(default=None, description="Steps the executor runs at once, for sizing chunks (default: the CPU count; 16 under LCAFFECT_EXECUTOR=k8s)")
    min_chunk: Optional[int] = Field(default=None, description="Fewest videos per chunk, so a step's start-up is amortised (default 16; 64 under k8s, where a step is a pod)")
    max_chunk: int = Field(default=500, description="Most videos per chunk (memory, and what a dying step loses)")
    max_failed_share: float = Field(default=0.5, ge=0.0, le=1.0, description="A per-video asset fails its run when more than this share of the videos it worked on failed (all failed always fails)")
    as_of_json: str = Field(default="{}", description='Read these inputs as of an earlier version, to reproduce a run: tables by version, other assets by manifest id, e.g. {"clean_comments": 3, "v2lc_encoder": "<manifest id>"} (README, "Versions")')

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
    demo_world: Literal[DEMO_WORLDS] = Field(default=DEMO_WORLDS[0], description='"memorisation" (lcaffect_pipeline.demo) or '
                                             '"unseen" (lcaffect_pipeline.demo_unseen: no labelled scene in the corpus)')


class CrawlerResource(dg.ConfigurableResource):
    """Crawler politeness and endpoints (tests point the bases at a loopback server)."""

    api_base: str = "https://api.bilibili.com"
    comment_base: str = "https://comment.bilibili.com"
    min_interval_s: float = Field(default=1.0, description="Minimum seconds between requests to one host")
    attempts: int = Field(default=6, description="Attempts per request before the video is reported failed")
    backoff_base_s: float = Field(default=1.0, description="Base of the exponential back-off (with jitter)")
    backoff_max_s: float = 60.0
    timeout_s: float = 20.0
    cookie_file: Optional[str] = Field(default=None, description="Netscape cookies.txt (SESSDATA) for full history; a secret")
    max_response_bytes: int = Field(default=64 * 1024 * 1024, description="Largest reply accepted, on the wire and after decompression (bytes)")
    deadline_s: float = Field(default=120.0, description="Whole-answer deadline per request attempt (timeout_s is per read)")
    max_segments: int = Field(default=1000, description="Most Bilibili 6-minute comment segments per video; more is refused")
    max_redirects: int = 5
    redirect_hosts: list[str] = Field(default=[], description="Hosts a redirect may lead to besides the one asked (others are refused)")
    rate_limit_dir: Optional[str] = Field(default=None, description="Folder of per-host lock files that pace every process; default a temp folder (point it at a shared one for several machines)")

    def source_config(self):
        from ..sources import SourceConfig

        return SourceConfig.from_mapping(self.model_dump())


def _cleaning_default(name: str):
    from ..cleaning import CleaningConfig

    return CleaningConfig().to_dict()[name]


class CleaningOptions(dg.Config):
    """The fields of ``lcaffect_pipeline.cleaning.CleaningConfig`` as Dagster config, so that an
    unknown field is refused when the run is launched, naming it and the valid ones."""

    drop_code: bool = _cleaning_default("drop_code")
    min_weight: Optional[int] = _cleaning_default("min_weight")
    min_score: Optional[int] = _cleaning_default("min_score")
    strip_control: bool = _cleaning_default("strip_control")
    nfkc: bool = _cleaning_default("nfkc")
    trim_whitespace: bool = _cleaning_default("trim_whitespace")
    max_repeat: Optional[int] = _cleaning_default("max_repeat")
    repeat_unit_max: int = _cleaning_default("repeat_unit_max")
    t2s: bool = _cleaning_default("t2s")
    t2s_platforms: Optional[list[str]] = _cleaning_default("t2s_platforms")
    min_chars: Optional[int] = _cleaning_default("min_chars")
    max_chars: Optional[int] = _cleaning_default("max_chars")
    langid: bool = _cleaning_default("langid")
    langid_min_letters: int = _cleaning_default("langid_min_letters")
    langid_min_score: float = _cleaning_default("langid_min_score")
    languages: Optional[list[str]] = _cleaning_default("languages")
    keep_unknown_language: bool = _cleaning_default("keep_unknown_language")
    dedup_ids: bool = _cleaning_default("dedup_ids")
    dedup_exact: bool = _cleaning_default("dedup_exact")
    dedup_near: bool = _cleaning_default("dedup_near")
    dedup_window_ms: Optional[int] = _cleaning_default("dedup_window_ms")
    batch_rows: int = _cleaning_default("batch_rows")
    langid_cache_size: int = _cleaning_default("langid_cache_size")


class CleaningResource(dg.ConfigurableResource):
    """Cleaning options (see lcaffect_pipeline.cleaning.CleaningConfig): ``options`` field by
    field, or ``options_json`` (a JSON object of overrides, applied on top)."""

    options: CleaningOptions = Field(default_factory=CleaningOptions, description="CleaningConfig fields, e.g. {min_chars: 2}; unknown fields are refused at launch")
    options_json: str = Field(default="{}", description='Overrides of CleaningConfig fields as JSON, e.g. {"min_chars": 2}; checked before any video is cleaned')

    @model_validator(mode="after")
    def _valid(self) -> "CleaningResource":
        """Checked when the resource is built, before any video is cleaned."""
        from ..cleaning import CleaningConfig

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
    from ..cleaning import CleaningConfig

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

    segment_s: float = DEFAULT_SEGMENT_S
    comments_per_segment: int = Field(default=32, description="Comments kept per segment in order of appearance "
                                      "(after exact duplicates); training samples its few from these")
    frames_per_segment: int = DEFAULT_FRAMES_PER_SEGMENT
    size: int = Field(default=224, description="Frames are size x size RGB")
    max_shard_bytes: int = Field(default=1_000_000_000, description="Split a video's shards at this size")
    max_height: int = Field(default=360, description="yt-dlp format cap for downloads")
    cookie_file: Optional[str] = Field(default=None, description="cookies.txt for yt-dlp (a secret)")
    rate_limit: Optional[int] = Field(default=None, description="Download rate limit, bytes/s")
    max_duration_s: Optional[float] = Field(default=None, description="Skip videos longer than this")
    demote_filler: bool = Field(default=False, description="Rank laughter/filler comments last (off: they are affect signal)")
    exact_frames: bool = Field(default=False, description="Decode every frame: frame times exactly as planned, "
                               "instead of the nearest kept frame within 100 ms (slower)")
    frame_backend: Literal["auto", "pyav", "decord"] = Field(
        default="auto", description="Frame decoder: auto (PyAV, skipping what the samples do not need), "
        "pyav, or decord (exact, every needed frame; PyAV where decord refuses a file)")

    def options(self):
        from ..clips import ClipOptions

        return ClipOptions(**self.model_dump())


class V2LCTrainingResource(dg.ConfigurableResource):
    """Options of ``python -m lcaffect_ml.train_v2lc`` (``--help`` documents each) and how to launch it."""

    video_encoder: str = Field(default="tiny", description='"tiny", "base", or a hub name/path e.g. facebook/timesformer-base-finetuned-k400')
    text_encoder: str = Field(default="tiny", description='"tiny", "base", or e.g. hfl/chinese-roberta-wwm-ext, xlm-roberta-base')
    max_steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 100
    eval_every: int = 0
    eval_fraction: float = 0.1
    split_group: Optional[str] = Field(default=None, description='What the held-out retrieval split keeps together: '
                                       '"video", a catalogue column (series, uploader, group …) or "auto" (unset: the '
                                       "program's default, auto: the catalogue's group column where it has one)")
    checkpoint_every: int = 500
    num_workers: int = 2
    max_per_video: int = Field(default=2, description="At most this many segments of one video per batch (0: no cap)")
    seed: int = 0
    precision: str = "auto"
    extra_json: str = Field(default="{}", description="Any other training option, as a JSON object")
    variants_json: str = Field(default="{}", description='Named encoders trained side by side, each on the corpus it '
                               'selects (languages, platforms, genres, or where: {column: [values]} for any catalogue column; '
                               'segments or hours: a seeded subsample of that size, seed sample_seed) and with its own options, e.g. {"zh": {"languages": '
                               '["zh"], "options": {"text_encoder": "hfl/chinese-roberta-wwm-ext"}}, "bilingual": {"options": '
                               '{"text_encoder": "xlm-roberta-base"}}}; the first is the one downstream reads. Empty: one '
                               'encoder, "default", on every shard')
    # how to launch (not training options)
    launcher: str = Field(default="subprocess", description='"subprocess" (PipesSubprocessClient) or "k8s" (PipesK8sClient, needs dagster-k8s)')
    gpus: int = Field(default=0, description="GPUs: >1 launches torchrun --nproc_per_node=gpus; for k8s, the nvidia.com/gpu limit")
    command: list[str] = Field(default=[], description='Replace the launch command prefix, e.g. ["srun", "python", "-m", "lcaffect_ml.train_v2lc"]')
    k8s_image: Optional[str] = None
    k8s_namespace: Optional[str] = None


V2LCTrainingResource.LAUNCH_FIELDS = ("launcher", "gpus", "command", "k8s_image", "k8s_namespace", "variants_json")


class DownstreamResource(dg.ConfigurableResource):
    """Where the downstream datasets are, how their media are prepared, and how fusion is trained."""

    demo: bool = Field(default=False, description="Generate stand-in datasets in the official layouts into the lake")
    demo_world: Literal[DEMO_WORLDS] = Field(default=DEMO_WORLDS[0], description="The demo world the stand-ins show "
                                             "(the catalogue's demo_world)")
    chsims2_root: Optional[str] = Field(default=None, description="CH-SIMS v2 folder (label.csv, Raw/)")
    meld_root: Optional[str] = Field(default=None, description="MELD.Raw folder ({train,dev,test}_sent_emo.csv and the split folders)")
    mustard_root: Optional[str] = Field(default=None, description="MUStARD folder (sarcasm_data.json, utterances_final/)")
    media_policy: str = Field(default="skip", description='Utterances whose media are missing: "skip" them (reported) or "fail"')
    frames: int = Field(default=8, description="Frames per utterance")
    size: int = Field(default=224, description="Frame size (the V2LC video encoder's image size)")
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
        arms = json.loads(self.lc_variants_json or "{}")
        unknown = sorted(set(arms) - set(contract_tables.DOWNSTREAM_TASKS))
        if unknown or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in arms.values()):
            raise ValueError(f"downstream.lc_variants_json: keys must be tasks {list(contract_tables.DOWNSTREAM_TASKS)} with a "
                             f"list of V2LC variant names each (unknown: {unknown})")
        return self

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
