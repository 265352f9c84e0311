"""Screening for real photos: which InceptionV3 block and input size recognise the kind of
produce in a smartphone photo (Grocery ``val``) while keeping the studio varieties apart
(Fruits-360 ``Test``), when trained on both datasets at once.

1. ``extract``: one Keras pass per input size (``bench.layer_screening.extract_blocks``, 2
   processes x 1 thread) over Grocery ``train`` and ``val`` and a Fruits-360 sample (every
   ``--step``-th Training and Test photo of each class), saved as
   ``<out>/real_<size>.npz`` with each photo's dataset, split, class and kind.
2. ``score``: standardise -> PCA (95% of the variance) -> multinomial logistic regression
   (scikit-learn), fitted on Grocery ``train`` + the Fruits-360 Training sample with one class
   per variety; reported per ``SIZE:BLOCK``: the kind accuracy on Grocery ``val`` (the
   predicted variety's kind against the photo's), its variety accuracy, and the variety
   accuracy on the Fruits-360 Test sample. ``--restandardise`` scales each component to unit
   variance before the regression, as Spark's logistic regression does by default (the
   pipeline turns it off); ``--studio-weight 8`` gives each sampled Fruits-360 photo the weight
   of the 8 it stands for (with ``--step 8``), as in the pipeline's proportions.

``--lite N [N ...]`` adds EfficientNet-LiteN's features at each size (N in 0, 1, 2;
fruits/features/efficientnet_lite.py through the project's decoder and ONNX Runtime, as the
stream computes them), as arrays ``liteN`` (the whole photo) and ``liteNcrop`` (the mean of the
whole photo's features and its central 70%'s: a test-time crop), scored as ``224:lite0`` or
``260:lite2crop``.

The kind of a Fruits-360 class here is its first word (``Apple Braeburn`` -> apple), of a Grocery
class its coarse class in ``classes.csv``; a quick stand-in for the project's taxonomy.

    python -m bench.real_photo_screening extract --fruits360 ../shared/data/fruits360 \
        --grocery ../shared/data/grocery --out /tmp/real --sizes 150 224 \
        --layers mixed3 mixed4 mixed5
    python -m bench.real_photo_screening score --out /tmp/real 150:mixed5 224:mixed3+mixed5
    python -m bench.real_photo_screening extract --fruits360 ../shared/data/fruits360 \
        --grocery ../shared/data/grocery --out /tmp/lite0 --sizes 224 --lite 0
    python -m bench.real_photo_screening score --out /tmp/lite0 224:lite0 224:lite0crop
    python -m bench.real_photo_screening score --out /tmp/lite0 --restandardise \
        --studio-weight 8 224:lite0crop
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.layer_screening import extract_blocks
from fruits.features.inception import LAYERS


@dataclass(frozen=True)
class Photo:
    dataset: str  # grocery | fruits360
    split: str  # train | val | Training | Test
    label: str  # the class (a variety, or a kind that has no varieties)
    kind: str
    path: str


def grocery_photos(root: Path) -> list[Photo]:
    """Grocery's train and val photos: ``<split>/<Fruit|Vegetables>/<Kind>/[<Variety>/]*.jpg``;
    the class is the folder holding the photo, its kind the coarse class of ``classes.csv``."""
    with open(root / "classes.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    kind_of = {row[0].strip(): row[2].strip().lower() for row in rows}
    photos = []
    for split in ("train", "val"):
        for path in sorted((root / split).rglob("*.jpg")):
            label = path.parent.name
            photos.append(Photo("grocery", split, label, kind_of[label], str(path)))
    return photos


def fruits360_photos(root: Path, step: int) -> list[Photo]:
    photos = []
    for split in ("Training", "Test"):
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            kind = folder.name.split()[0].lower()
            files = sorted(folder.glob("*.jpg"))[::step]
            photos += [Photo("fruits360", split, folder.name, kind, str(f)) for f in files]
    return photos


def extract(
    photos: list[Photo],
    out: Path,
    sizes: list[int],
    layers: list[str],
    weights: str,
    *,
    lite: tuple[int, ...] = (),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    paths = [p.path for p in photos]
    for size in sizes:
        started = time.perf_counter()
        arrays = extract_blocks(paths, size, layers, weights) if layers else {}
        for variant in lite:
            arrays |= lite_features(paths, size, variant)
        np.savez(
            out / f"real_{size}.npz",
            dataset=np.array([p.dataset for p in photos]),
            split=np.array([p.split for p in photos]),
            label=np.array([p.label for p in photos]),
            kind=np.array([p.kind for p in photos]),
            **arrays,
        )
        print(
            f"size {size}: {len(paths)} photos in {time.perf_counter() - started:.0f} s", flush=True
        )


def lite_features(paths: list[str], size: int, variant: int) -> dict[str, np.ndarray]:
    """EfficientNet-LiteN's features of the whole photo (``liteN``) and that averaged with
    its central 70%'s (``liteNcrop``): two processes of one thread, each on every other photo."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        shards = pool.map(_lite_shard, [(size, variant, paths[k::2]) for k in (0, 1)])
    arrays = {}
    for j, name in enumerate((f"lite{variant}", f"lite{variant}crop")):
        merged = np.empty((len(paths), shards[0][j].shape[1]), np.float32)
        merged[0::2], merged[1::2] = shards[0][j], shards[1][j]
        arrays[name] = merged
    return arrays


def _lite_shard(args: tuple[int, int, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    from fruits.decode import ImageLimits, decode_batch
    from fruits.features import efficientnet_lite
    from fruits.features.featurizer import ExtractorSpec, export_onnx, extract_features

    size, variant, paths = args
    backbone = f"efficientnet_lite{variant}"
    weights = efficientnet_lite.packaged_weights(backbone)
    spec = ExtractorSpec(
        weights=weights,
        image_size=size,
        weights_digest=f"screening{variant}",
        layer="",
        backend="onnx",
        onnx_dir=os.environ.get("TMPDIR", "/tmp"),
        backbone=backbone,  # type: ignore[arg-type]
    )
    export_onnx(spec)
    margin = round(size / 0.7)  # the photo at this size, its central size x size is 70% of it
    whole, cropped = [], []
    for i in range(0, len(paths), 16):
        contents = [Path(p).read_bytes() for p in paths[i : i + 16]]
        pixels, _ = decode_batch(contents, size=size, limits=ImageLimits())
        larger, _ = decode_batch(contents, size=margin, limits=ImageLimits())
        assert len(pixels) == len(larger) == len(contents), "an unreadable photo in the datasets"
        start = (margin - size) // 2
        centre = np.ascontiguousarray(larger[:, start : start + size, start : start + size])
        features = extract_features(pixels, spec)
        whole.append(features)
        cropped.append((features + extract_features(centre, spec)) / 2)
    return np.concatenate(whole), np.concatenate(cropped)


def score(
    out: Path,
    settings: list[str],
    c: float,
    *,
    restandardise: bool = False,
    studio_weight: float = 1,
) -> None:
    for setting in settings:
        size, blocks = setting.split(":")
        saved = np.load(out / f"real_{size}.npz")
        features = np.concatenate([saved[b] for b in blocks.split("+")], axis=1)
        result: dict[str, object] = {"image_size": int(size), "layers": blocks}
        weights = np.where(saved["dataset"] == "fruits360", studio_weight, 1.0)
        result |= _fit_and_score(
            features, saved["split"], saved["label"], saved["kind"], c, weights, restandardise
        )
        print(json.dumps(result), flush=True)


def _fit_and_score(
    features: np.ndarray,
    split: np.ndarray,
    label: np.ndarray,
    kind: np.ndarray,
    c: float,
    weights: np.ndarray,
    restandardise: bool,
) -> dict[str, object]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train = (split == "train") | (split == "Training")
    scaler = StandardScaler().fit(features[train])
    pca = PCA(n_components=0.95, svd_solver="full").fit(scaler.transform(features[train]))

    # Spark's logistic regression re-standardises its inputs unless told not to.
    spread = pca.transform(scaler.transform(features[train])).std(axis=0) if restandardise else 1

    def project(rows: np.ndarray) -> np.ndarray:
        return np.asarray(pca.transform(scaler.transform(features[rows])) / spread)

    classifier = LogisticRegression(C=c, max_iter=500).fit(
        project(train), label[train], sample_weight=weights[train]
    )
    kind_of = dict(zip(label[train], kind[train], strict=False))
    result: dict[str, object] = {"pca": int(pca.n_components_)}
    for name, rows in (("grocery_val", split == "val"), ("fruits360_test", split == "Test")):
        predicted = classifier.predict(project(rows))
        predicted_kind = np.array([kind_of[p] for p in predicted])
        result[f"{name}_variety"] = round(float((predicted == label[rows]).mean()), 4)
        result[f"{name}_kind"] = round(float((predicted_kind == kind[rows]).mean()), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.real_photo_screening")
    sub = parser.add_subparsers(dest="command", required=True)
    extracting = sub.add_parser("extract")
    extracting.add_argument("--fruits360", type=Path, required=True)
    extracting.add_argument("--grocery", type=Path, required=True)
    extracting.add_argument("--step", type=int, default=4, help="every Nth Fruits-360 photo")
    extracting.add_argument("--out", type=Path, required=True)
    extracting.add_argument("--sizes", type=int, nargs="+", required=True)
    extracting.add_argument("--layers", nargs="*", choices=list(LAYERS), default=[])
    extracting.add_argument(
        "--lite", type=int, nargs="*", choices=(0, 1, 2), default=[], help="EfficientNet-LiteN"
    )
    extracting.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS", "imagenet"))
    scoring = sub.add_parser("score")
    scoring.add_argument("--out", type=Path, required=True)
    scoring.add_argument("--c", type=float, default=0.2, help="logistic regression's C")
    scoring.add_argument(
        "--restandardise",
        action="store_true",
        help="scale each PCA component to unit variance first (Spark LR's standardization)",
    )
    scoring.add_argument(
        "--studio-weight",
        type=float,
        default=1.0,
        help="weight of a Fruits-360 photo (--step's share of them back: 8 for --step 8)",
    )
    scoring.add_argument("settings", nargs="+", metavar="SIZE:BLOCK[+BLOCK]")
    args = parser.parse_args()
    if args.command == "extract":
        photos = grocery_photos(args.grocery) + fruits360_photos(args.fruits360, args.step)
        extract(photos, args.out, args.sizes, args.layers, args.weights, lite=tuple(args.lite))
    else:
        score(
            args.out,
            args.settings,
            args.c,
            restandardise=args.restandardise,
            studio_weight=args.studio_weight,
        )


if __name__ == "__main__":
    main()
