"""Screening of the "unknown" calibration, on a trained model's own features (no Spark).

Reads a registered version's folded scorer and distance detector, and the features the
training and ``fruits evaluate`` cached in the lake for its extractor, then scores every cached
photo as the stream would (fruits/model/answers.py) and reports, per dataset and split, what
each candidate operating point answers: kind right, confidently wrong, unknown. Used to choose
how ``training.unknown_*`` calibrates (BENCHMARKS.md, section 12)::

    python -m bench.calibration_screening --root /tmp/c7root --version 1 \
        --non-produce /tmp/non_produce

Run ``fruits evaluate --data ../shared/data/grocery --data ../shared/data/fruits360
--non-produce DIR`` on that root first, so Grocery ``val``, Fruits-360 ``Test`` and the
non-produce photos are in the cache.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from fruits.config import load_config
from fruits.model.registry import ModelRegistry
from fruits.model.taxonomy import default_taxonomy
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import FEATURES


def _groups(paths: np.ndarray, non_produce: str | None) -> np.ndarray:
    out = np.full(len(paths), "", dtype=object)
    for name, marker in (
        ("fruits360/Training", "/fruits360/Training/"),
        ("fruits360/Test", "/fruits360/Test/"),
        ("grocery/train", "/grocery/train/"),
        ("grocery/val", "/grocery/val/"),
    ):
        out[[marker in p for p in paths]] = name
    if non_produce:
        real = os.path.realpath(non_produce)
        out[[p.removeprefix("file:").startswith((non_produce, real)) for p in paths]] = (
            "non_produce"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--non-produce", default=None)
    args = parser.parse_args()
    os.environ["FRUITS_ROOT"] = args.root
    config = load_config()
    files = ModelRegistry(config).files(args.version)
    scorer = files.scorer()
    assert scorer is not None, "a logistic-regression version (a folded scorer) is needed"
    table = DeltaRsLake(config.path("lake")).read_arrow(
        FEATURES, columns=["path", "label", "features", "extractor"]
    )
    keep = np.asarray(table.column("extractor").to_pylist()) == files.meta["extractor"]
    paths = np.asarray(table.column("path").to_pylist(), dtype=object)[keep]
    labels = np.asarray(table.column("label").to_pylist(), dtype=object)[keep]
    column = table.column("features").combine_chunks()
    features = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)[keep]
    groups = _groups(paths, args.non_produce)
    taxonomy = default_taxonomy()
    classes = set(scorer.rule.classes)
    varieties = np.asarray(
        [
            taxonomy.variety("grocery" if "grocery/" in g else "fruits360", str(label))
            if g != "non_produce"
            else ""
            for g, label in zip(groups, labels, strict=True)
        ],
        dtype=object,
    )
    kinds = np.asarray([taxonomy.kind(v) if v else "" for v in varieties], dtype=object)
    answers = scorer.answer(features)
    rule = scorer.rule
    assert rule.detector is not None
    probs = scorer.probabilities(features)
    answered = np.argmax(probs, axis=1)
    distance = rule.detector.distance(features, answered)
    kind_score = rule.detector.score(answers["kind_confidence"].to_numpy(), distance)
    result: dict[str, Any] = {"threshold": rule.detector.threshold}
    for group in sorted(set(groups) - {""}):
        mask = groups == group
        known = np.asarray([v in classes for v in varieties[mask]])
        kind_ok = answers["kind"].to_numpy()[mask] == kinds[mask]
        variety_ok = answers["label"].to_numpy()[mask] == varieties[mask]
        rows = []
        for t in [
            rule.detector.threshold,
            *np.quantile(kind_score[mask], [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98]),
        ]:
            unknown = kind_score[mask] > t
            rows.append(
                {
                    "t": round(float(t), 3),
                    "unknown": round(float(unknown.mean()), 4),
                    "kind_right": round(float((~unknown & kind_ok).mean()), 4),
                    "wrong_kind": round(float((~unknown & ~kind_ok).mean()), 4),
                }
            )
        # A variety threshold of its own on top of the model's rule: the answered variety is
        # "not sure" below it, turning a sure wrong variety of the right kind into "kind,
        # variety not sure".
        unknown = answers["is_unknown"].to_numpy()[mask]
        not_sure = answers["variety_not_sure"].to_numpy()[mask]
        confidence = answers["confidence"].to_numpy()[mask]
        variety_rows = []
        for p in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98):
            sure = ~unknown & ~not_sure & (confidence >= p)
            variety_rows.append(
                {
                    "p": p,
                    "variety_right_sure": round(float((sure & variety_ok).mean()), 4),
                    "kind_right_variety_not_sure": round(
                        float((~unknown & kind_ok & ~sure).mean()), 4
                    ),
                    "confidently_wrong": round(
                        float((~unknown & (~kind_ok | (sure & ~variety_ok))).mean()), 4
                    ),
                }
            )
        result[group] = {
            "n": int(mask.sum()),
            "known": int(known.sum()),
            "top1_kind": round(float(kind_ok.mean()), 4),
            "top1_variety": round(float(variety_ok.mean()), 4),
            "model": {
                "unknown": round(float(answers["is_unknown"].to_numpy()[mask].mean()), 4),
            },
            "sweep": rows,
            "variety_sweep": variety_rows,
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
