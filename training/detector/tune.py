"""Post-processing of the text detector: scoring and tuning on the validation views.

Only the validation split of the training seed is ever used here (never the benchmarks'
seed-7 corpus, never the real samples), plus ``post.negatives`` generated text-free views
(:mod:`training.detector.negatives`, a seed stream of their own). The objective is the
trainer's: box recall minus
``OVER_WEIGHT`` times over-detection. Besides the binarisation threshold, the minimum
mean probability and the pad, the grid holds two filters grounded in what a text kernel
looks like (:func:`pipeline.pixel.dbnet.kernel_boxes`): a minimum share of confident
pixels (``min_core``) and a minimum smaller side (``min_size``).

``python -m training.detector.tune BUNDLE_DIR --config FILE`` re-tunes a trained bundle
in place (its network unchanged): the post-processing, validation metrics, metadata and
model card are rewritten.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import VeilError
from pipeline.pixel.dbnet import grow_boxes, kernel_components
from training.detector.config import DetectorConfig, load_config
from training.detector.data import ViewSample

logger = logging.getLogger(__name__)


class DetectorTuneError(VeilError, ValueError):
    """A bundle cannot be re-tuned (files missing or not matching their metadata)."""

#: Share of a ground-truth box's pixels inside the detected boxes for it to count as found.
COVER = 0.95
#: Weight of over-detection (share of the image area) against recall when tuning.
OVER_WEIGHT = 5.0
THRESH_GRID = (0.3, 0.4, 0.5, 0.6)
BOX_THRESH_GRID = (0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
PAD_GRID = (0.5, 1.5, 2.5)
MIN_CORE_GRID = (0.0, 0.25, 0.5, 0.75, 0.85)
MIN_SIZE_GRID = (2, 3, 4)


def score(samples: list[ViewSample], probs: list[np.ndarray], post: dict[str, float],
          shrink: float) -> dict[str, float]:
    """Box recall and over-detection of the post-processed maps against the truth.

    ``post`` holds ``thresh``, ``box_thresh``, ``pad``, ``min_size`` and ``min_core``.
    """
    tables = [kernel_components(prob, post["thresh"]) for prob in probs]
    return _score(samples, probs, tables, post, shrink)


def _score(samples: list[ViewSample], probs: list[np.ndarray], tables: list[np.ndarray],
           post: dict[str, float], shrink: float) -> dict[str, float]:
    """:func:`score` from each map's components at ``post["thresh"]``."""
    found = total = 0
    outside = area = 0
    for sample, prob, table in zip(samples, probs, tables, strict=True):
        mask = np.zeros(prob.shape, dtype=bool)
        for x0, y0, x1, y1, _ in grow_boxes(
                table, prob.shape, box_thresh=post["box_thresh"], shrink=shrink,
                pad=post["pad"], min_size=int(post["min_size"]), min_core=post["min_core"]):
            mask[math.floor(y0):math.ceil(y1), math.floor(x0):math.ceil(x1)] = True
        truth = np.zeros(prob.shape, dtype=bool)
        for x0, y0, x1, y1 in sample.boxes.astype(int):
            truth[y0:y1, x0:x1] = True
            region = mask[y0:y1, x0:x1]
            total += 1
            found += bool(region.size) and region.mean() >= COVER
        outside += int((mask & ~truth).sum())
        area += mask.size
    return {"box_recall": found / max(total, 1), "over_detection": outside / max(area, 1)}


def negative_views(config: DetectorConfig) -> list[ViewSample]:
    """``config.post.negatives`` text-free views (no boxes) the size of the corpus's
    upscaled views, seeded from the data seed (a stream the training crops never use)."""
    from training.detector.negatives import negative_crop

    rng = np.random.default_rng([config.data.seed, 0x7E6A])
    out = []
    for _ in range(config.post.negatives):
        rows, cols = (640, 640) if rng.random() < 0.5 else (640, 853)
        image = negative_crop(max(rows, cols), rng)[:rows, :cols]
        if rng.random() < 0.5:
            image = 255.0 - image
        out.append(ViewSample(np.rint(image).astype(np.uint8), np.zeros((0, 4), np.float32)))
    return out


def default_post(config: DetectorConfig) -> dict[str, float]:
    """The configuration's post-processing (used as is when ``post.tune`` is off)."""
    return {"thresh": config.post.thresh, "box_thresh": config.post.box_thresh,
            "pad": config.post.pad, "min_size": float(config.post.min_size),
            "min_core": config.post.min_core}


def tune(samples: list[ViewSample], probs: list[np.ndarray], config: DetectorConfig,
         ) -> dict[str, float]:
    """Post-processing maximising recall - OVER_WEIGHT * over-detection on ``samples``, or
    with ``post.recall_first`` the highest recall, then the least over-detection (ties:
    the earlier, more lenient grid point)."""
    best = default_post(config)
    if not config.post.tune:
        return best
    best_value = (-math.inf, -math.inf)
    tables = {t: [kernel_components(prob, t) for prob in probs] for t in THRESH_GRID}
    for thresh, box_thresh, pad, min_size, min_core in itertools.product(
            THRESH_GRID, BOX_THRESH_GRID, PAD_GRID, MIN_SIZE_GRID, MIN_CORE_GRID):
        if box_thresh < thresh:
            continue
        post = {"thresh": thresh, "box_thresh": box_thresh, "pad": pad,
                "min_size": float(min_size), "min_core": min_core}
        m = _score(samples, probs, tables[thresh], post, config.data.shrink)
        value = (m["box_recall"] - OVER_WEIGHT * m["over_detection"], 0.0)
        if config.post.recall_first:
            value = (m["box_recall"], -m["over_detection"])
        if value > best_value:
            best, best_value = post, value
    return best


def retune(bundle_dir: Path, config: DetectorConfig) -> dict[str, Any]:
    """Re-tune the post-processing of the bundle in ``bundle_dir`` on the validation views
    of ``config`` (its network unchanged); rewrite metadata and card; return metadata."""
    import hashlib

    from pipeline.pixel.dbnet import prepare
    from pipeline.pixel.ppocr import make_session
    from training.detector.data import corpus_views
    from training.detector.export import model_card

    meta_path = bundle_dir / "metadata.json"
    metadata: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    model = (bundle_dir / "model.onnx").read_bytes()
    if hashlib.sha256(model).hexdigest() != metadata["source"]["sha256"]:
        raise DetectorTuneError(f"{bundle_dir}: model.onnx does not match its metadata")
    session = make_session(model, 1)
    name = session.get_inputs()[0].name
    step = int(metadata["preprocessing"]["multiple_of"])
    validation = corpus_views(config.data, "validation", config.data.validation_files)
    validation += negative_views(config)
    probs = []
    for view in validation:
        rows, cols = view.image.shape
        out = session.run(None, {name: prepare(view.image.astype(np.float32), step)})[0]
        probs.append(np.asarray(out[0, 0, :rows, :cols], np.float32))
    post = tune(validation, probs, config)
    metrics = score(validation, probs, post, config.data.shrink)
    metadata["postprocessing"].update(
        {"thresh": post["thresh"], "box_thresh": post["box_thresh"], "pad": post["pad"],
         "min_size": int(post["min_size"]), "min_core": post["min_core"]})
    metadata["postprocessing"]["method"] = METHOD
    metadata["metrics"].update({f"validation_{k}": v for k, v in metrics.items()})
    params = metadata["training"]["params"]
    params.update({f"post_{k}": v for k, v in post.items()})
    params.update({"negative_share": config.data.negative_share,
                   "exclude_backgrounds": list(config.data.exclude_backgrounds),
                   "tune_negatives": config.post.negatives})
    meta_path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    (bundle_dir / "README.md").write_text(model_card(metadata), encoding="utf-8")
    return metadata


#: The post-processing as written into a bundle's metadata.
METHOD = ("binarise at thresh, 8-connected components; keep those with mean probability >= "
          "box_thresh, smaller side >= min_size and a share >= min_core of pixels at "
          "probability >= 0.9; bounding box grown by shrink/(1-2*shrink)*smaller side + pad")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="bundle folder (model.onnx, metadata.json)")
    parser.add_argument("--config", type=Path, required=True, help="training config (YAML)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    metadata = retune(args.bundle, load_config(args.config))
    print(json.dumps({"postprocessing": metadata["postprocessing"],
                      "metrics": metadata["metrics"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
