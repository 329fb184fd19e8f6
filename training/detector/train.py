"""Train the text detector: ``run(config, out_dir) -> TrainResult``.

Seeded end to end (data, crops, initialisation); CUDA when available, else CPU with
``optim.threads`` threads. After training the post-processing thresholds are tuned on
the validation views (grid search), the network is exported to ONNX (parity-checked)
and the bundle is written to ``out_dir``.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.pixel.dbnet import kernel_boxes, prepare
from training.detector.config import DetectorConfig, load_config
from training.detector.data import CropSampler, ViewSample, corpus_views, data_hash
from training.detector.export import KernelNet, export_onnx, multiple_of, write_bundle
from training.result import TrainResult

logger = logging.getLogger(__name__)

#: Share of a ground-truth box's pixels inside the detected boxes for it to count as found.
COVER = 0.95
#: Weight of over-detection (share of the image area) against recall when tuning.
OVER_WEIGHT = 5.0
THRESH_GRID = (0.3, 0.4, 0.5, 0.6)
BOX_THRESH_GRID = (0.4, 0.5, 0.6, 0.7)
PAD_GRID = (0.5, 1.5, 2.5)


def loss_fn(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy plus weighted soft dice."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * weight).sum() / weight.sum().clamp(min=1.0)
    prob = torch.sigmoid(logits) * weight
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + (target * weight).sum() + 1)
    return bce + dice


def predict(net: KernelNet, samples: list[ViewSample], step: int,
            device: torch.device) -> list[np.ndarray]:
    """Probability map of every view (eval mode, no grad)."""
    net.eval()
    out = []
    with torch.no_grad():
        for sample in samples:
            rows, cols = sample.image.shape
            batch = torch.from_numpy(prepare(sample.image.astype(np.float32), step)).to(device)
            out.append(net(batch)[0, 0, :rows, :cols].cpu().numpy())
    return out


def score(samples: list[ViewSample], probs: list[np.ndarray], post: dict[str, float],
          shrink: float, min_size: int) -> dict[str, float]:
    """Box recall and over-detection of the post-processed maps against the truth."""
    found = total = 0
    outside = area = 0
    for sample, prob in zip(samples, probs, strict=True):
        mask = np.zeros(prob.shape, dtype=bool)
        for x0, y0, x1, y1, _ in kernel_boxes(prob, thresh=post["thresh"],
                                              box_thresh=post["box_thresh"], shrink=shrink,
                                              pad=post["pad"], min_size=min_size):
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


def tune(samples: list[ViewSample], probs: list[np.ndarray], config: DetectorConfig,
         ) -> dict[str, float]:
    """Post-processing maximising recall - OVER_WEIGHT * over-detection on ``samples``."""
    default = {"thresh": config.post.thresh, "box_thresh": config.post.box_thresh,
               "pad": config.post.pad}
    if not config.post.tune:
        return default
    best, best_value = default, -math.inf
    for thresh, box_thresh, pad in itertools.product(THRESH_GRID, BOX_THRESH_GRID, PAD_GRID):
        if box_thresh < thresh:
            continue
        post = {"thresh": thresh, "box_thresh": box_thresh, "pad": pad}
        m = score(samples, probs, post, config.data.shrink, config.post.min_size)
        value = m["box_recall"] - OVER_WEIGHT * m["over_detection"]
        if value > best_value:
            best, best_value = post, value
    return best


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(net: KernelNet, sampler: CropSampler, config: DetectorConfig,
        device: torch.device) -> list[dict[str, float]]:
    """Train ``net`` in place; return the loss history (every ``log_every`` steps)."""
    opt = config.optim
    optimizer = torch.optim.AdamW(net.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opt.lr,
                                                   total_steps=opt.steps, pct_start=0.1)
    history: list[dict[str, float]] = []
    running = 0.0
    start = time.perf_counter()
    net.train()
    for step in range(1, opt.steps + 1):
        images, target, weight = (torch.from_numpy(a).to(device)
                                  for a in sampler.batch(opt.batch_size))
        loss = loss_fn(net.unet(images), target, weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running += float(loss.detach())
        if step % opt.log_every == 0 or step == opt.steps:
            count = step % opt.log_every or opt.log_every
            history.append({"step": float(step), "loss": running / count,
                            "seconds": time.perf_counter() - start})
            logger.info("step %d loss %.4f (%.0f s)", step, running / count,
                        time.perf_counter() - start)
            running = 0.0
    return history


def run(config: dict[str, Any] | str | Path, out_dir: Path) -> TrainResult:
    """Train, tune, export and bundle the detector into ``out_dir``."""
    cfg = load_config(config)
    out_dir = Path(out_dir)
    seed_everything(cfg.optim.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(cfg.optim.threads)
    logger.info("training the text detector on %s", device)
    train = corpus_views(cfg.data, "train", cfg.data.train_files)
    validation = corpus_views(cfg.data, "validation", cfg.data.validation_files)
    digest = data_hash(train)
    net = KernelNet(cfg.model).to(device)
    sampler = CropSampler(train, cfg.data, cfg.augment, cfg.optim.seed)
    history = fit(net, sampler, cfg, device)
    step = multiple_of(cfg.model)
    probs = predict(net, validation, step, device)
    post = tune(validation, probs, cfg)
    val = score(validation, probs, post, cfg.data.shrink, cfg.post.min_size)
    metrics = {f"validation_{k}": v for k, v in val.items()}
    metrics["final_loss"] = history[-1]["loss"]
    metrics.update(export_onnx(net, cfg.model, out_dir / "model.onnx", validation[0].image))
    params = {"steps": cfg.optim.steps, "batch_size": cfg.optim.batch_size, "lr": cfg.optim.lr,
              "crop": cfg.data.crop, "train_files": cfg.data.train_files,
              "validation_files": cfg.data.validation_files, "shrink": cfg.data.shrink,
              "channels": list(cfg.model.channels), "res_units": cfg.model.res_units,
              "device": device.type, "parameters": sum(p.numel() for p in net.parameters()),
              **{f"post_{k}": v for k, v in post.items()}}
    write_bundle(out_dir, cfg, post, metrics, cfg.data.seed, digest, params)
    return TrainResult(model_name=cfg.model_name, bundle_dir=out_dir, params=params,
                       metrics=metrics, data_seed=cfg.data.seed, data_hash=digest,
                       history=history)
