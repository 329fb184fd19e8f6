"""Train the text detector: ``run(config, out_dir) -> TrainResult``.

Seeded end to end (data, crops, initialisation); CUDA when available, else CPU with
``optim.threads`` threads. After training the post-processing is tuned on the
validation views and generated text-free views (grid search, :mod:`training.detector.tune`),
the network is exported to ONNX (parity-checked) and the bundle is written to ``out_dir``.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.pixel.dbnet import prepare
from training.detector.config import DetectorConfig, load_config
from training.detector.data import CropSampler, ViewSample, corpus_views, data_hash
from training.detector.export import KernelNet, export_onnx, multiple_of, write_bundle
from training.detector.tune import negative_views, score, tune
from training.result import TrainResult

logger = logging.getLogger(__name__)


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
    validation += negative_views(cfg)
    digest = data_hash(train)
    net = KernelNet(cfg.model).to(device)
    sampler = CropSampler(train, cfg.data, cfg.augment, cfg.optim.seed)
    history = fit(net, sampler, cfg, device)
    step = multiple_of(cfg.model)
    probs = predict(net, validation, step, device)
    post = tune(validation, probs, cfg)
    val = score(validation, probs, post, cfg.data.shrink)
    metrics = {f"validation_{k}": v for k, v in val.items()}
    metrics["final_loss"] = history[-1]["loss"]
    metrics.update(export_onnx(net, cfg.model, out_dir / "model.onnx", validation[0].image))
    params = {"steps": cfg.optim.steps, "batch_size": cfg.optim.batch_size, "lr": cfg.optim.lr,
              "crop": cfg.data.crop, "train_files": cfg.data.train_files,
              "validation_files": cfg.data.validation_files, "shrink": cfg.data.shrink,
              "negative_share": cfg.data.negative_share,
              "exclude_backgrounds": list(cfg.data.exclude_backgrounds),
              "tune_negatives": cfg.post.negatives,
              "channels": list(cfg.model.channels), "res_units": cfg.model.res_units,
              "device": device.type, "parameters": sum(p.numel() for p in net.parameters()),
              **{f"post_{k}": v for k, v in post.items()}}
    write_bundle(out_dir, cfg, post, metrics, cfg.data.seed, digest, params)
    return TrainResult(model_name=cfg.model_name, bundle_dir=out_dir, params=params,
                       metrics=metrics, data_seed=cfg.data.seed, data_hash=digest,
                       history=history)
