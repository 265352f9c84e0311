"""Which "unknown" detector, chosen by leaving classes out *within Training* only.

``fruits train --leave-out-share 0.1`` measures how many photos of classes never taught are
answered "unknown"; choosing the detector on that same measurement would tune it to those
classes. This chooses it on Training alone, nested:

1. the evaluation's own left-out classes (``training.leave_out_share``, ``training.seed``:
   the same draw as ``fruits train``) are removed first, as that run removes them;
2. each fold leaves out another seeded tenth of the remaining classes, fits standardise ->
   PCA (``training.explained_variance``) -> multinomial logistic regression (scikit-learn, the
   same ``regParam`` as ``C = 1 / (regParam * n)``: a stand-in for Spark ML's) on the honest
   split's training part of the others (fruits/model/splits.py);
3. every candidate detector (the project's own: fruits/model/unknown.py) is calibrated to
   ``training.unknown_reject_share`` of the validation part and counts the fold's left-out
   classes' Training photos it answers "unknown".

Test is never read. The features come from a root's feature cache, which ``fruits train``
fills (the configured extractor's rows of the Training split):

    fruits train --data ../shared/data/fruits360          # once: caches the features
    python -m bench.unknown_selection --folds 6           # FRUITS_ROOT as for the training

scikit-learn is not a dependency of the project: ``pip install scikit-learn`` to run it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fruits.config import Config, load_config
from fruits.features.featurizer import ExtractorSpec
from fruits.model.splits import left_out_classes, validation_mask
from fruits.model.unknown import UnknownDetector, calibrate_unknown, fit_detector


@dataclass(frozen=True)
class Candidate:
    name: str
    rule: str  # fruits/model/unknown.py's UNKNOWN_RULES
    space: str  # "raw": fit_detector; "pca": fit_pca_detector (the pipeline's components)
    dims: int
    k: int = 1
    per_class: bool = False  # distance to the answered class's photos only


CANDIDATES = (
    Candidate("top probability alone", "probability", "raw", 64),
    Candidate("both: any class, PCA 64 (the previous default)", "both", "pca", 64),
    Candidate("both: any class, raw 64", "both", "raw", 64),
    Candidate("both: answered class, raw 64", "both", "raw", 64, per_class=True),
    Candidate("fused: any class, PCA 64", "fused", "pca", 64),
    Candidate("fused: any class, raw 64", "fused", "raw", 64),
    Candidate("fused: answered class, PCA 64", "fused", "pca", 64, per_class=True),
    Candidate("fused: answered class, raw 32", "fused", "raw", 32, per_class=True),
    Candidate("fused: answered class, raw 64", "fused", "raw", 64, per_class=True),
    Candidate("fused: answered class, raw 128", "fused", "raw", 128, per_class=True),
    Candidate("fused: answered class, raw 64, 3rd nearest", "fused", "raw", 64, 3, True),
    Candidate("distance alone: answered class, raw 64", "distance", "raw", 64, per_class=True),
)


def training_features(config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, paths) of the Training split in the root's feature cache."""
    from deltalake import DeltaTable

    spec = ExtractorSpec.from_config(config)
    table = DeltaTable(f"{config.path('lake').rstrip('/')}/features").to_pyarrow_table(
        columns=["path", "label", "split", "features"],
        filters=[("extractor", "=", spec.extractor_id), ("split", "=", "Training")],
    )
    if table.num_rows == 0:
        raise SystemExit(f"no cached Training features of {spec.extractor_id}: fruits train first")
    column = table.column("features").combine_chunks()
    features = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    paths = np.asarray([p.rsplit("/", 1)[-1] for p in table.column("path").to_pylist()])
    return features.astype(np.float32), np.asarray(table.column("label").to_pylist()), paths


def run_fold(
    features: np.ndarray,
    labels: np.ndarray,
    validation: np.ndarray,
    classes: list[str],
    seed: int,
    config: Config,
) -> dict[str, tuple[float, float]]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    settings = config.training
    unseen_classes = set(left_out_classes(classes, settings.leave_out_share or 0.1, seed))
    taught = [c for c in classes if c not in unseen_classes]
    known = np.isin(labels, taught)
    unseen = np.isin(labels, list(unseen_classes))
    fit_rows, calibration_rows = known & ~validation, known & validation
    scaler = StandardScaler().fit(features[fit_rows])
    scaled = scaler.transform(features[fit_rows])
    pca = PCA(n_components=settings.explained_variance, svd_solver="full").fit(scaled)
    points = pca.transform(scaled)
    # Spark's logistic regression standardises its inputs, as here.
    inputs = StandardScaler().fit(points)
    classifier = LogisticRegression(
        C=1.0 / (settings.regularization * fit_rows.sum()), max_iter=300
    ).fit(inputs.transform(points), labels[fit_rows])
    index = {c: i for i, c in enumerate(classifier.classes_)}
    train_classes = np.asarray([index[c] for c in labels[fit_rows]])

    def answers(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = classifier.predict_proba(
            inputs.transform(pca.transform(scaler.transform(features[rows])))
        )
        return probabilities.max(axis=1), probabilities.argmax(axis=1)

    (cal_conf, cal_answered), (new_conf, new_answered) = answers(calibration_rows), answers(unseen)
    results = {}
    for candidate in CANDIDATES:
        detector = _detector(candidate, features[fit_rows], train_classes, scaler, pca, points)
        cal_dist = detector.distance(features[calibration_rows], cal_answered)
        new_dist = detector.distance(features[unseen], new_answered)
        calibration = calibrate_unknown(
            cal_conf, cal_dist, settings.unknown_reject_share, candidate.rule
        )
        caught = calibration.rejects(new_conf, new_dist)
        results[candidate.name] = (calibration.rejected_share, float(caught.mean()))
    return results


def _detector(
    candidate: Candidate,
    train_features: np.ndarray,
    train_classes: np.ndarray,
    scaler: Any,
    pca: Any,
    points: np.ndarray,
) -> UnknownDetector:
    classes = train_classes if candidate.per_class else None
    if candidate.space == "raw":
        return fit_detector(train_features, classes, k=candidate.k, dims=candidate.dims)
    # scikit-learn's PCA centres (Spark's does not, on standardised data whose mean is 0).
    detector = fit_pca_detector(
        mean=scaler.mean_,
        std=scaler.scale_,
        components=pca.components_.T,
        train_points=points,
        k=candidate.k,
        dims=candidate.dims,
    )
    if classes is None:
        return detector
    return UnknownDetector(
        detector.projection, detector.offset, detector.references, detector.k,
        reference_classes=np.asarray(classes, dtype=np.int32),
    )  # fmt: skip


def fit_pca_detector(
    *,
    mean: np.ndarray,
    std: np.ndarray,
    components: np.ndarray,
    train_points: np.ndarray,
    k: int,
    dims: int,
) -> UnknownDetector:
    """A detector in the leading components of a pipeline standardise -> PCA (the models before
    the raw-direction detector, kept here as a candidate; the product fits ``fit_detector``):
    ``components`` (feature_dim x n, as Spark's PCA, largest variance first; it does not
    centre) and the training photos' PCA points (rows)."""
    dims = min(dims, components.shape[1])
    leading = np.asarray(components, dtype=np.float64)[:, :dims]
    inverse_std = np.divide(1.0, std, out=np.zeros_like(std, dtype=np.float64), where=std != 0)
    projection = inverse_std[:, None] * leading
    offset = -(np.asarray(mean, dtype=np.float64) * inverse_std) @ leading
    points = np.asarray(train_points, dtype=np.float64)[:, :dims]
    unit = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    return UnknownDetector(
        projection=projection.astype(np.float32),
        offset=offset.astype(np.float32),
        references=unit.astype(np.float32),
        k=k,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the configuration file (default: the local one)")
    parser.add_argument("--folds", type=int, default=6, help="inner folds (seeds 1..N)")
    parser.add_argument("--out", help="a JSON file for the per-fold figures")
    args = parser.parse_args()
    config = load_config(args.config)
    started = time.perf_counter()
    features, labels, paths = training_features(config)
    settings = config.training
    validation = np.asarray(
        validation_mask(list(paths), list(labels), settings.validation_fraction, settings.seed)
    )
    classes = sorted(set(labels))
    evaluation_out = set(left_out_classes(classes, settings.leave_out_share or 0.1, settings.seed))
    kept = ~np.isin(labels, list(evaluation_out))
    features, labels, validation = features[kept], labels[kept], validation[kept]
    remaining = [c for c in classes if c not in evaluation_out]
    folds = {}
    for seed in range(1, args.folds + 1):
        folds[seed] = run_fold(features, labels, validation, remaining, seed, config)
        print(f"fold {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
    inner = len(left_out_classes(remaining, settings.leave_out_share or 0.1, 1))
    print(
        f"\n{len(features)} Training photos of {len(remaining)} classes (the evaluation's "
        f"{len(evaluation_out)} left out); {args.folds} folds, each leaving out {inner} more; "
        "mean (min-max) over the folds\n"
    )
    print("| detector | validation rejected | inner unseen caught |")
    print("|---|---|---|")
    names = [c.name for c in CANDIDATES]
    for name in sorted(names, key=lambda n: -np.mean([f[n][1] for f in folds.values()])):
        rejected = [f[name][0] for f in folds.values()]
        caught = [f[name][1] for f in folds.values()]
        print(
            f"| {name} | {np.mean(rejected):.2%} | {np.mean(caught):.1%} "
            f"({min(caught):.1%}-{max(caught):.1%}) |"
        )
    if args.out:
        with open(args.out, "w") as out:
            json.dump({"folds": folds, "evaluation_left_out": sorted(evaluation_out)}, out)
    os._exit(0)  # deltalake's threads can abort a normal interpreter exit


if __name__ == "__main__":
    main()
