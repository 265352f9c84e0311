"""``fruits evaluate``: score labelled photos with the champion (or a given) version.

``--data`` names dataset roots (Fruits-360's ``Test``, Grocery's ``val`` are scored:
fruits/sources/datasets.py) or ``<Class>/*.jpg`` folders, several at once: each is reported on
its own, at both levels of the answer (kind and variety, fruits/model/answers.py), and all
together. Folders may mix classes the model knows with classes it does not: the latter measure
how well "unknown" catches what the model was never taught. ``--non-produce`` names a folder
of photos that are not produce at all: each should be answered "unknown".

The report folder holds ``evaluation.json``, the kind-level confusion matrix
(``kind_confusion.png``), a contact sheet of the worst confident mistakes
(``mistakes.png``) and, when unknown classes were scored, the unknown curve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from batch.report import plot_contact_sheet, plot_kind_confusion, plot_unknown_curve, unknown_curve
from fruits.config import Config
from fruits.console import Stages, log, progress_printer
from fruits.errors import ConfigError
from fruits.features.featurizer import ExtractorSpec, ship_backend
from fruits.features.store import featurize_labelled
from fruits.model.metrics import classification_report, open_set_report, two_level_report
from fruits.model.registry import ModelRegistry
from fruits.model.taxonomy import default_taxonomy
from fruits.sinks.delta import open_lake
from fruits.sources.datasets import EvaluationSet, evaluation_sets
from fruits.sources.training import check_labelled_tree
from fruits.spark import get_spark

__all__ = ["run_evaluation"]

NOT_PRODUCE = "(not produce)"  # the true label of a --non-produce photo


def run_evaluation(
    config: Config,
    data: str | Sequence[str],
    *,
    version: int | None = None,
    report: str | None = None,
    non_produce: str | None = None,
    mistakes: int = 20,
) -> dict[str, Any]:
    """Scores of a model version on ``data`` (and ``non_produce``); ``report``: the folder of
    the report (default ``{root}/reports/evaluate-v<version>``)."""
    sets = evaluation_sets(data)
    if non_produce:
        sets.append(EvaluationSet(NOT_PRODUCE, non_produce.rstrip("/"), None))
    for target in sets:
        check_labelled_tree(target.location)
    registry = ModelRegistry(config)
    entry = registry.files(version)  # fails early, before Spark starts, if there is no model
    spec = ExtractorSpec.for_model(config, entry.meta)
    if spec.extractor_id != entry.meta["extractor"]:
        raise ConfigError(
            f"config key 'featurizer.weights' gives extractor {spec.extractor_id} but model "
            f"version {entry.version} was trained on {entry.meta['extractor']}"
        )
    stages = Stages()
    with stages("spark start"):
        spark = get_spark(config)
    ship_backend(spark, spec)  # the ONNX export (made once) to every executor, through Spark
    model = entry.model()
    lake = open_lake(config)
    scored: dict[str, list[Any]] = {}
    rejected = []
    for target in sets:
        with stages(f"features {target.name}"):
            features, run = featurize_labelled(
                spark,
                lake,
                target.location,
                split="evaluate",
                spec=spec,
                images=config.images,
                azure=config.azure,
                chunk_size=config.training.feature_chunk_size,
                progress=progress_printer(f"features {target.name}"),
            )
        rejected += run.rejected
        with stages(f"predict {target.name}"):
            rows = model.answer_labelled(features, "path")
        scored[target.name] = [_as_answer(r, target) for r in rows]

    labelled = [r for name, rows in scored.items() if name != NOT_PRODUCE for r in rows]
    summary = _scores(labelled, model.classes)
    per_set = {name: _scores(rows, model.classes) for name, rows in scored.items()}
    if non_produce:
        photos = scored[NOT_PRODUCE]
        per_set[NOT_PRODUCE] = {
            "n_images": len(photos),
            "answered_unknown": sum(r["is_unknown"] for r in photos) / len(photos)
            if photos
            else None,
        }
    log(
        f"{summary['n_images']} photos: accuracy {summary['accuracy']} on the "
        f"{summary['n_known_class']} of known classes; known photos rejected (answered "
        f"unknown) {summary['known_rejected']}; unseen photos caught {summary['unseen_caught']} "
        f"of {summary['n_unknown_class']}"
    )
    for name, scores in per_set.items():
        log(f"{name}: {_one_line(scores)}")

    folder = Path(report or f"{config.root.rstrip('/')}/reports/evaluate-v{entry.version}")
    folder.mkdir(parents=True, exist_ok=True)
    curve = None
    if summary["n_known_class"] and summary["n_unknown_class"]:
        # The curve reads attributes (Spark rows in training).
        curve = unknown_curve(
            [SimpleNamespace(**r) for r in labelled], model.classes, model.unknown_rule
        )
        plot_unknown_curve(
            folder / "unknown_curve.png", curve, f"model v{entry.version} on {_names(sets)}"
        )
    everything = [r for rows in scored.values() for r in rows]
    plot_kind_confusion(folder / "kind_confusion.png", everything, f"model v{entry.version}")
    worst = _worst_mistakes(everything, mistakes)
    plot_contact_sheet(folder / "mistakes.png", worst, f"model v{entry.version}")
    known = [r for r in labelled if r["true_label"] in set(model.classes)]
    per_class = classification_report(
        [r["true_label"] for r in known], [r["label"] for r in known], model.classes
    )["per_class"]
    result = {
        **summary,
        "model_version": entry.version,
        "per_dataset": per_set,
        "rejected_files": len(rejected),
        "rejected": [f"{r.path}: {r.reason}" for r in rejected],
        "per_class_recall": {c: v["recall"] for c, v in per_class.items() if v["support"]},
        "worst_mistakes": [
            {k: r[k] for k in ("path", "true_label", "label", "kind", "confidence")} for r in worst
        ],
        "timings_s": stages.seconds,
        "report": str(folder),
    }
    (folder / "evaluation.json").write_text(
        json.dumps({**result, "unknown_curve": curve}, indent=2)
    )
    return result


def _as_answer(row: Any, target: EvaluationSet) -> dict[str, Any]:
    """A scored row with its true variety and kind (the taxonomy's names for its dataset)."""
    answer: dict[str, Any] = row.asDict()
    if target.name == NOT_PRODUCE:
        answer["true_label"], answer["true_kind"] = NOT_PRODUCE, NOT_PRODUCE
        return answer
    taxonomy = default_taxonomy()
    answer["true_label"] = taxonomy.variety(target.layout, answer["true_label"])
    answer["true_kind"] = taxonomy.kind(answer["true_label"])
    return answer


def _scores(rows: list[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """The open-set figures (accuracy, known rejected, unseen caught) and, for the photos of
    known classes and of unseen ones, the answers at both levels."""
    summary = open_set_report(
        [r["true_label"] for r in rows],
        [r["label"] for r in rows],
        [r["is_unknown"] for r in rows],
        classes,
    )
    known_classes = set(classes)
    for name, part in (
        ("known", [r for r in rows if r["true_label"] in known_classes]),
        ("unseen", [r for r in rows if r["true_label"] not in known_classes]),
    ):
        if part:
            summary[f"two_level_{name}"] = two_level_report(
                [r["true_kind"] for r in part],
                [r["true_label"] for r in part],
                [r["kind"] for r in part],
                [r["label"] for r in part],
                [bool(r["is_unknown"]) for r in part],
                [bool(r["variety_not_sure"]) for r in part],
            )
    return summary


def _one_line(scores: dict[str, Any]) -> str:
    if "two_level_known" not in scores and "two_level_unseen" not in scores:
        return f"{scores['n_images']} photos, answered unknown {scores.get('answered_unknown')}"
    parts = [f"{scores['n_images']} photos"]
    known = scores.get("two_level_known")
    if known:
        parts.append(
            f"kind right {known['kind_right']:.4f}, variety right {known['variety_right']:.4f}, "
            f"unknown {known['answered_unknown']:.4f}, confidently wrong "
            f"{known['confidently_wrong']:.4f}"
        )
    unseen = scores.get("two_level_unseen")
    if unseen:
        parts.append(f"unseen classes: unknown or right kind {unseen['unknown_or_right_kind']:.4f}")
    return "; ".join(parts)


def _worst_mistakes(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` surest wrong answers: a wrong kind, or a wrong variety given as sure (a
    non-produce photo answered anything but unknown)."""

    def wrong(r: dict[str, Any]) -> bool:
        if r["is_unknown"]:
            return False
        if r["kind"] != r["true_kind"]:
            return True
        return not r["variety_not_sure"] and r["label"] != r["true_label"]

    def sureness(r: dict[str, Any]) -> float:
        return float(r["kind_confidence"] if r["variety_not_sure"] else r["confidence"])

    return sorted((r for r in rows if wrong(r)), key=sureness, reverse=True)[:n]


def _names(sets: Sequence[EvaluationSet]) -> str:
    return ", ".join(s.name for s in sets if s.name != NOT_PRODUCE)
