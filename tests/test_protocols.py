"""The benchmarks' protocols: MUStARD's official folds (on the real annotations in ../shared), one
default protocol for the command line and Dagster, CH-SIMS v2's label file names, and dialogue
context (MELD's earlier turns, MUStARD's context utterances) in the text modality."""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lcaffect_ml.contracts.tables import DEFAULT_PROTOCOLS
from lcaffect_ml.extract_features import ExtractConfig, extract
from lcaffect_ml.feature_inputs import context_turns, text_input
from lcaffect_ml.feature_io import Utterance, read_utterances
from lcaffect_ml.fusion_data import DownstreamDataError, FusionTrainConfig, describe_folds, load_data, make_splits
from lcaffect_ml.train_fusion import train
from lcaffect_ml.options import ConfigError
from lcaffect_pipeline.downstream import DatasetError, load_chsims2, load_meld, load_mustard
from lcaffect_pipeline.downstream.datasets import CHSIMS_COLUMNS
from lcaffect_ml.contracts.tables import UTTERANCES_SCHEMA

from conftest import data_path
from test_features import _checkpoint, _frames, _sine, _write_npz
from test_fusion import write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ------------------------------------------------------------------------------ MUStARD folds


@pytest.fixture
def mustard_root(tmp_path: Path) -> Path:
    root = tmp_path / "mustard"
    root.mkdir()
    (root / "sarcasm_data.json").symlink_to(data_path("mustard", "sarcasm_data.json"))
    return root


def test_official_folds_on_the_real_annotations(mustard_root: Path):
    official = json.loads(data_path("mustard", "split_indices.json").read_text(encoding="utf-8"))["folds"]
    assert load_mustard(mustard_root).column("fold").null_count == 690  # no folds file: no folds
    (mustard_root / "split_indices.json").symlink_to(data_path("mustard", "split_indices.json"))
    rows = load_mustard(mustard_root).to_pylist()
    assert len(rows) == 690 and all(r["fold"] is not None for r in rows)
    for k, fold in enumerate(official):
        tested = {r["utterance_id"] for r in rows if r["fold"] == k}
        trained = {r["utterance_id"] for r in rows if r["fold"] != k}
        assert len(tested) == 138 and len(trained) == 552
        assert tested == set(fold["test"]) and trained == set(fold["train"])
    assert sum(r["label"] for r in rows) == 345  # every utterance tested once, with its own label


def _json_folds(rows: list[dict]) -> None:
    """Every row's fold is the one split_indices.json (the ids) tests it in, all 5 folds as id sets."""
    official = json.loads(data_path("mustard", "split_indices.json").read_text(encoding="utf-8"))["folds"]
    assert len(rows) == 690 and len(official) == 5
    for k, fold in enumerate(official):
        assert {r["utterance_id"] for r in rows if r["fold"] == k} == set(fold["test"])
        assert {r["utterance_id"] for r in rows if r["fold"] != k} == set(fold["train"])


def test_split_indices_p_as_shipped_gives_the_json_folds(mustard_root: Path):
    (mustard_root / "split_indices.p").symlink_to(data_path("mustard", "split_indices.p"))
    rows = load_mustard(mustard_root).to_pylist()  # the pickle alone
    _json_folds(rows)
    assert {json.loads(r["extra_labels"])["folds_file"] for r in rows} == {"split_indices.p"}
    (mustard_root / "split_indices.json").symlink_to(data_path("mustard", "split_indices.json"))
    both = load_mustard(mustard_root).to_pylist()  # both files, checked against each other: they agree
    assert [r["fold"] for r in both] == [r["fold"] for r in rows]
    assert json.loads(both[0]["extra_labels"])["folds_file"] == "split_indices.p"


def test_split_indices_p_and_json_that_disagree_are_refused_naming_both(mustard_root: Path):
    (mustard_root / "split_indices.p").symlink_to(data_path("mustard", "split_indices.p"))
    folds = json.loads(data_path("mustard", "split_indices.json").read_text(encoding="utf-8"))["folds"]
    a, b = folds[0]["test"][0], folds[1]["test"][0]  # swap one utterance between folds 0 and 1: still a partition
    for f, (out, into) in zip(folds[:2], ((a, b), (b, a))):
        f["test"][f["test"].index(out)] = into
        f["train"][f["train"].index(into)] = out
    _folds_file(mustard_root, folds)
    with pytest.raises(DatasetError, match=rf"split_indices\.p\): gives other folds than {mustard_root}/split_indices\.json "
                                           r"for 2 utterances"):
        load_mustard(mustard_root)


class _Hostile:
    def __reduce__(self):
        return os.system, ("true",)


@pytest.mark.parametrize("payload, reason", [
    ([(np.arange(3), np.array([1, 2], dtype=object))], r"refused an array of dtype object"),
    ([(np.arange(3), np.arange(2))], r"refused to load collections\.OrderedDict: this file may hold only NumPy arrays$"),
    ([_Hostile()], r"refused to load (posix|os)\.system"),
    ([(np.arange(3), np.array([700]))], r"fold 0: positions \[700\] outside sarcasm_data\.json's 690 utterances"),
    ([(np.arange(3.0), np.arange(2))], r"fold 0: not a \(train, test\) pair of 1-D integer index arrays"),
    ({"folds": []}, r"not a list of \(train, test\) index arrays"),
])
def test_a_split_indices_p_that_is_not_folds_is_refused(mustard_root: Path, payload, reason):
    if "OrderedDict" in reason:  # a container the features reader admits, but a folds pickle does not
        payload = OrderedDict(enumerate(payload))
    (mustard_root / "split_indices.p").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DatasetError, match=r"mustard \(.*split_indices\.p\): (not a folds pickle: .*)?" + reason):
        load_mustard(mustard_root)


def test_split_indices_p_through_dagster(tmp_path: Path, mustard_root: Path):
    """As a user who cloned MUStARD: sarcasm_data.json and split_indices.p only, materialised by Dagster."""
    import dagster as dg

    from lcaffect_pipeline.defs.downstream_assets import ASSETS
    from lcaffect_pipeline.defs.resources import DownstreamResource
    from conftest import demo_resources

    (mustard_root / "split_indices.p").symlink_to(data_path("mustard", "split_indices.p"))
    ds = DownstreamResource(mustard_root=str(mustard_root), media_policy="keep")  # no videos: keep the rows
    (asset,) = [a for a in ASSETS if dg.AssetKey("mustard_utterances") in a.keys]
    result = dg.materialize([asset], resources=demo_resources(tmp_path / "lake", downstream=ds))
    assert result.success
    value = result.output_for_node("mustard_utterances")
    _json_folds(pq.read_table(value["path"]).to_pylist())


def _folds_file(root: Path, folds) -> None:
    (root / "split_indices.json").write_text(json.dumps({"folds": folds}), encoding="utf-8")


@pytest.mark.parametrize("change, reason", [
    (lambda f: f[1]["test"].append(f[0]["test"][0]), r"is tested in folds 0 and 1"),
    (lambda f: f[0]["test"].append("9_9999"), r"fold 0: ids not in sarcasm_data\.json: \['9_9999'\]"),
    (lambda f: f[0]["train"].append(f[0]["test"][0]), r"fold 0: train is not every utterance outside its test set"),
    (lambda f: f[4]["train"].append(f[4]["test"].pop()), r"1 utterances are tested in no fold"),
    (lambda f: f[2].pop("train"), r"fold 2: needs `train` and `test`"),
])
def test_a_folds_file_that_is_not_a_partition_is_refused(mustard_root: Path, change, reason):
    folds = json.loads(data_path("mustard", "split_indices.json").read_text(encoding="utf-8"))["folds"]
    change(folds)
    _folds_file(mustard_root, folds)
    with pytest.raises(DatasetError, match=r"mustard \(.*split_indices\.json\): (utterance .* )?" + reason):
        load_mustard(mustard_root)


def test_a_folds_file_that_is_not_json_is_refused(mustard_root: Path):
    (mustard_root / "split_indices.json").write_text("[[0, 1], [2]]", encoding="utf-8")  # the pickle's shape
    with pytest.raises(DatasetError, match=r"split_indices\.json\): not a folds file"):
        load_mustard(mustard_root)


def _with_folds(table_path: Path, folds: list[int | None]) -> None:
    table = pq.read_table(table_path)
    table = table.set_column(table.schema.get_field_index("fold"), "fold", pa.array(folds, pa.int32()))
    pq.write_table(table.cast(UTTERANCES_SCHEMA), table_path)


def _mustard_config(table: Path, features: Path, out: Path, **options) -> FusionTrainConfig:
    return FusionTrainConfig.from_dict({"task": "mustard", "utterances": str(table), "features_dir": str(features),
                                        "output_dir": str(out), "epochs": 2, "batch_size": 32, "device": "cpu",
                                        "precision": "fp32", **options})


def test_fusion_tests_each_official_fold_and_says_so(tmp_path: Path):
    table, features = write_dataset(tmp_path / "data", "mustard", n=80)
    _with_folds(table, [i % 4 for i in range(80)])  # 4 official folds of 20
    cfg = _mustard_config(table, features, tmp_path / "official")
    assert cfg.protocol == "speaker_dependent"  # the default
    data = load_data(cfg)
    splits = make_splits(data, cfg)
    assert [s.fold for s in splits] == [0, 1, 2, 3]
    for s in splits:
        assert {data.ids[i] for i in s.test} == {f"mustard-{i:04d}" for i in range(80) if i % 4 == s.fold}
        assert set(s.train).isdisjoint(s.test) and len(s.train) + len(s.test) == 80
    metrics = train(cfg)
    assert metrics["folds_used"] == "official (4 folds of the table's fold column)"  # no folds_file recorded
    table_rows = pq.read_table(table).to_pylist()  # the loader records where the folds came from
    for r in table_rows:
        r["extra_labels"] = json.dumps({"folds_file": "split_indices.p"})
    pq.write_table(pa.Table.from_pylist(table_rows, schema=UTTERANCES_SCHEMA), table)
    assert load_data(cfg).folds_file == "split_indices.p" and describe_folds(load_data(cfg), cfg) == \
        "official (4 folds of split_indices.p)"
    assert [r["n_test"] for r in metrics["runs"]] == [20, 20, 20, 20]
    # stratified on request, and said so
    metrics = train(_mustard_config(table, features, tmp_path / "strat", fold_source="stratified"))
    assert len(metrics["runs"]) == 5 and metrics["folds_used"].startswith("stratified (5 folds")


def test_official_folds_are_required_only_when_asked_for(tmp_path: Path):
    table, features = write_dataset(tmp_path / "data", "mustard", n=60)
    cfg = _mustard_config(table, features, tmp_path / "auto")
    assert len(make_splits(load_data(cfg), cfg)) == 5  # no fold column values: stratified folds
    cfg = _mustard_config(table, features, tmp_path / "strict", fold_source="official")
    with pytest.raises(DownstreamDataError, match=r"60 of 60 rows have no official fold"):
        make_splits(load_data(cfg), cfg)
    with pytest.raises(ConfigError, match="fold_source must be one of"):
        _mustard_config(table, features, tmp_path / "x", fold_source="random")


def test_one_default_protocol_for_the_command_line_and_dagster(tmp_path: Path):
    from lcaffect_pipeline.defs.resources import DownstreamResource

    cfg = FusionTrainConfig.from_dict({"task": "mustard", "utterances": "u", "features_dir": "f", "output_dir": "o"})
    assert cfg.protocol == DownstreamResource().mustard_protocol == DEFAULT_PROTOCOLS["mustard"] == "speaker_dependent"


# ------------------------------------------------------------------------------ CH-SIMS v2 label file


@pytest.mark.parametrize("name", ["label.csv", "meta.csv", "meta(s).csv"])
def test_chsims2_label_file_under_the_release_names(tmp_path: Path, name: str):
    with open(tmp_path / name, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CHSIMS_COLUMNS)
        writer.writerow(["video_0001", "0001", "好", "0.6", "0.8", "0.4", "0.6", "Positive", "train"])
    table = load_chsims2(tmp_path)
    assert table.column("utterance_id").to_pylist() == ["video_0001_0001"]


def test_chsims2_without_a_label_file_names_the_accepted_ones(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"chsims2 \(.*\): no label file: none of \['label\.csv', 'meta\.csv', "
                                           r"'meta\(s\)\.csv'\]"):
        load_chsims2(tmp_path)


# ------------------------------------------------------------------------------ context


def _meld_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def test_meld_context_is_the_earlier_turns_of_the_dialogue_on_the_real_csvs(tmp_path: Path):
    root = tmp_path / "MELD.Raw"
    root.mkdir()
    for name in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"):
        (root / name).symlink_to(data_path("meld", name))
    rows = {r["utterance_id"]: r for r in load_meld(root).to_pylist()}
    checked = with_context = 0
    for official in ("train", "dev", "test"):
        csv_rows = _meld_csv_rows(root / f"{official}_sent_emo.csv")
        turns: dict[int, dict[int, str]] = {}
        for r in csv_rows:
            turns.setdefault(int(r["Dialogue_ID"]), {})[int(r["Utterance_ID"])] = r["Utterance"]
        for r in csv_rows:
            dia, utt = int(r["Dialogue_ID"]), int(r["Utterance_ID"])
            context = rows[f"{official}_dia{dia}_utt{utt}"]["context"]
            earlier = [turns[dia][u] for u in sorted(turns[dia]) if u < utt]
            assert len(context) == len(earlier) and context == [rows[f"{official}_dia{dia}_utt{u}"]["text"]
                                                                for u in sorted(turns[dia]) if u < utt]
            later = {rows[f"{official}_dia{dia}_utt{u}"]["text"] for u in turns[dia] if u > utt} - set(context)
            assert not later & set(context)
            checked += 1
            with_context += bool(context)
    assert checked == len(rows) and with_context > len(rows) // 2
    assert rows["train_dia0_utt0"]["context"] == []
    assert rows["train_dia0_utt2"]["context"] == [rows["train_dia0_utt0"]["text"], rows["train_dia0_utt1"]["text"]]


def test_meld_context_never_takes_a_later_turn_from_rows_out_of_order(tmp_path: Path):
    header = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
              "Episode", "StartTime", "EndTime"]
    lines = [[3, "third", "A", "joy", "positive", 7, 2], [1, "first", "B", "neutral", "neutral", 7, 0],
             [9, "other dialogue", "C", "anger", "negative", 8, 0], [2, "second", "A", "fear", "negative", 7, 1]]
    for official in ("train", "dev", "test"):
        with open(tmp_path / f"{official}_sent_emo.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows([*line, 1, 1, "00:00:01,000", "00:00:02,000"] for line in lines)
    rows = {r["utterance_id"]: r["context"] for r in load_meld(tmp_path).to_pylist()}
    assert rows["test_dia7_utt0"] == [] and rows["test_dia8_utt0"] == []
    assert rows["dev_dia7_utt1"] == ["first"]
    assert rows["train_dia7_utt2"] == ["first", "second"]


def test_context_turns_are_the_most_recent_and_switch_off():
    u = Utterance("u", "now", None, "ok", ("t1", "t2", " ", "t3", "t4"))
    on = ExtractConfig.from_dict({"utterances": "u", "output_dir": "o", "v2lc_checkpoint": "c", "context_turns": 2})
    assert context_turns(on, u) == ["t3", "t4"]  # blank turns dropped, the last two kept
    assert text_input(on, u, "[SEP]") == ("now", "t4 [SEP] t3")  # most recent first: truncation drops the oldest
    off = ExtractConfig.from_dict({"utterances": "u", "output_dir": "o", "v2lc_checkpoint": "c", "context": False})
    assert context_turns(off, u) == [] and text_input(off, u, "[SEP]") == "now"
    none = ExtractConfig.from_dict({"utterances": "u", "output_dir": "o", "v2lc_checkpoint": "c", "context_turns": 0})
    assert text_input(none, u, "[SEP]") == "now"
    assert ExtractConfig.from_dict({"utterances": "u", "output_dir": "o", "v2lc_checkpoint": "c"}).context is True
    released_text = ExtractConfig.from_dict({"utterances": "u", "output_dir": "o", "v2lc_checkpoint": "c",
                                             "released_features": {"text": "t.pkl"}})
    assert text_input(released_text, u, "[SEP]") == "now"  # a released text feature is of the utterance alone


def test_context_reaches_the_text_features_and_the_off_switch_removes_it(tmp_path: Path):
    (tmp_path / "media").mkdir()
    texts = {"a": ("你好", ["早上好", "昨天下雨了"]), "b": ("谢谢", [])}
    rows = []
    for i, (uid, (text, context)) in enumerate(texts.items()):
        npz = tmp_path / "media" / f"{uid}.npz"
        _write_npz(npz, _frames(4, 32, i), _sine(0.5))
        rows.append({"dataset": "meld", "utterance_id": uid, "split": "train", "text": text, "label": 0.0,
                     "label_name": None, "extra_labels": None, "speaker": None, "show": None, "context": context,
                     "media_path": None, "media_status": "ok", "media_npz": str(npz)})
    table = tmp_path / "utterances.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=UTTERANCES_SCHEMA), table)
    assert read_utterances(table)[0].context == ("早上好", "昨天下雨了")
    ckpt = _checkpoint(tmp_path / "v2lc", 0)

    def run(out: str, **options):
        from safetensors.torch import load_file

        cfg = ExtractConfig.from_dict({"utterances": str(table), "output_dir": str(tmp_path / out),
                                       "v2lc_checkpoint": str(ckpt), "device": "cpu", "precision": "fp32",
                                       "progress": False, **options})
        meta = extract(cfg)
        return meta, load_file(str(tmp_path / out / "base_features.safetensors"))["text_len"].tolist()

    meta_on, lengths_on = run("on")
    meta_off, lengths_off = run("off", context=False)
    meta_one, lengths_one = run("one", context_turns=1)
    # char tokenizer: [CLS] text [SEP] (+ context [SEP] between turns [SEP])
    assert lengths_off == [4, 4]
    assert lengths_on == [4 + 3 + 1 + 5 + 1, 4]  # "昨天下雨了 [SEP] 早上好 [SEP]" after the utterance
    assert lengths_one == [4 + 5 + 1, 4]  # the most recent turn only
    assert meta_on["context"] == {"used": True, "max_turns": 5, "utterances_with_context": 1}
    assert meta_off["context"] == {"used": False, "max_turns": 0, "utterances_with_context": 0}
    assert meta_on["base_version"] != meta_off["base_version"] != meta_one["base_version"]
    assert np.isfinite(lengths_on).all()


# ------------------------------------------------------------------------------ per-task encoders


def test_per_task_encoders_override_the_defaults_and_unknown_tasks_are_refused():
    import yaml

    from conftest import ROOT
    from lcaffect_pipeline.defs.resources import DownstreamResource

    paper = yaml.safe_load((ROOT / "configs" / "paper.example.yaml").read_text())["resources"]["downstream"]["config"]
    ds = DownstreamResource(**paper)
    assert ds.features_options("chsims2")["text_model"] == "hfl/chinese-roberta-wwm-ext"
    assert ds.features_options("meld")["text_model"] == ds.features_options("mustard")["text_model"] == "roberta-base"
    assert {ds.features_options(t)["audio_model"] for t in ("chsims2", "meld", "mustard")} == {"facebook/wav2vec2-base"}
    assert ds.features_options("meld")["context_turns"] == 5
    plain = DownstreamResource(text_model="bert-base-uncased", features_extra_json='{"text_model": "x", "seed": 3}',
                               task_features_json='{"meld": {"seed": 4}}')
    assert plain.features_options("chsims2") == {"text_model": "x", "audio_model": "tiny", "vision_model": "tiny", "seed": 3}
    assert plain.features_options("meld")["seed"] == 4
    for bad, reason in (('{"mosi": {}}', r"unknown: \['mosi'\]"), ('{"meld": "roberta"}', "an object of options"),
                        ("[1]", "must be a JSON object"), ("{", "is not JSON")):
        with pytest.raises(Exception, match=reason):
            DownstreamResource(task_features_json=bad)
