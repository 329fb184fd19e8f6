"""Hard negatives for the text detector: generated image structure with no text at all.

The synthetic corpus's backgrounds are smooth phantoms; real ultrasound and secondary
captures also hold speckle, layered tissue, colour-flow blobs, markers, rulers, icons and
straight image edges, which a detector trained on phantoms alone reads as text. Each
negative crop is drawn here from a seeded generator (nothing read from disk, so no
evaluation image can leak in): a speckle field (Rayleigh noise smoothed more along the
rows than the columns, as ultrasound is), modulated by tissue bands and dark cysts, cut
by a sector or rectangle mask against a flat field, with a few bright thin structures,
dots, tick rulers, crosses and outlined shapes on top. Its target is empty everywhere.
"""

from __future__ import annotations

import math

import numpy as np


def speckle(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Ultrasound-like speckle in [0, 1]: smoothed Rayleigh noise, bands and cysts."""
    import cv2

    noise = rng.rayleigh(1.0, (rows, cols)).astype(np.float32)
    sx, sy = float(rng.uniform(0.6, 4.0)), float(rng.uniform(0.4, 1.5))
    field: np.ndarray = cv2.GaussianBlur(noise, (0, 0), sigmaX=sx, sigmaY=sy)
    yy = np.arange(rows, dtype=np.float32)[:, None] / max(rows, 1)
    bands: np.ndarray = np.ones((rows, 1), np.float32)
    for _ in range(int(rng.integers(1, 5))):
        middle, width = rng.uniform(0, 1), rng.uniform(0.02, 0.2)
        bands = bands + float(rng.uniform(-0.6, 1.2)) * np.exp(-((yy - middle) / width) ** 2)
    field = np.asarray(field * np.clip(bands, 0.1, None), np.float32)
    for _ in range(int(rng.integers(0, 4))):  # dark cysts / vessels
        mask = np.zeros((rows, cols), np.uint8)
        centre = (int(rng.integers(0, cols)), int(rng.integers(0, rows)))
        axes = (int(rng.integers(4, max(cols // 3, 5))), int(rng.integers(3, max(rows // 5, 4))))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(-30, 30)), 0, 360, 1, -1)
        field[mask > 0] *= float(rng.uniform(0.05, 0.4))
    field = np.log1p(field * float(rng.uniform(1.0, 4.0)))  # log compression
    low, high = np.percentile(field, [1.0, 99.5])
    return np.asarray(np.clip((field - low) / max(float(high - low), 1e-6), 0, 1), np.float32)


def _mask(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Where the image content is: a sector (fan), a rectangle or everything."""
    kind = rng.integers(3)
    if kind == 0:
        yy, xx = np.mgrid[:rows, :cols].astype(np.float32)
        apex_x = float(rng.uniform(-0.5, 1.5) * cols)
        apex_y = float(rng.uniform(-1.0, 0.2) * rows)
        angle = np.abs(np.arctan2(xx - apex_x, yy - apex_y))
        radius = np.hypot(xx - apex_x, yy - apex_y)
        far = float(rng.uniform(0.6, 2.0) * rows) + abs(apex_y)
        out: np.ndarray = (angle < rng.uniform(0.3, 0.9)) & (radius < far)
        return out
    if kind == 1:
        mask = np.zeros((rows, cols), bool)
        x0, y0 = int(rng.integers(-cols // 2, cols // 2)), int(rng.integers(-rows // 2, rows // 2))
        x1 = x0 + int(rng.integers(cols // 3, 2 * cols))
        y1 = y0 + int(rng.integers(rows // 3, 2 * rows))
        mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        return mask
    return np.ones((rows, cols), bool)


def _graphics(image: np.ndarray, rng: np.random.Generator) -> None:
    """Draw non-text graphics in place (values in [0, 1]): thin bright structures, dots,
    tick rulers, crosses, outlined shapes, straight lines."""
    import cv2

    rows, cols = image.shape
    for _ in range(int(rng.integers(0, 6))):
        kind = int(rng.integers(6))
        level = float(rng.choice([rng.uniform(0.0, 0.2), rng.uniform(0.7, 1.0)]))
        x, y = int(rng.integers(0, cols)), int(rng.integers(0, rows))
        if kind == 0:  # bright thin tissue interface
            axes = (int(rng.integers(8, max(cols // 2, 9))), int(rng.integers(1, 4)))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(-25, 25)), 0, 360, level, -1)
        elif kind == 1:  # dots (calliper marks, depth markers), in a row or alone
            step = int(rng.integers(6, 30))
            for k in range(int(rng.integers(1, 8))):
                cv2.circle(image, (x, y + k * step), int(rng.integers(1, 4)), level, -1)
        elif kind == 2:  # ruler: a line with evenly spaced ticks
            step, length = int(rng.integers(3, 16)), int(rng.integers(30, max(cols, 31)))
            tick = int(rng.integers(2, 8))
            if rng.random() < 0.5:
                cv2.line(image, (x, y), (x + length, y), level, 1)
                for t in range(0, length, step):
                    cv2.line(image, (x + t, y), (x + t, y - tick), level, 1)
            else:
                cv2.line(image, (x, y), (x, y + length), level, 1)
                for t in range(0, length, step):
                    cv2.line(image, (x, y + t), (x + tick, y + t), level, 1)
        elif kind == 3:  # cross / plus markers
            size = int(rng.integers(3, 10))
            cv2.line(image, (x - size, y), (x + size, y), level, 1 + int(rng.integers(2)))
            cv2.line(image, (x, y - size), (x, y + size), level, 1 + int(rng.integers(2)))
        elif kind == 4:  # outlined or filled box / circle (icons, colour bars, ROI)
            w, h = int(rng.integers(6, 80)), int(rng.integers(6, 80))
            fill = -1 if rng.random() < 0.4 else 1
            if rng.random() < 0.5:
                cv2.rectangle(image, (x, y), (x + w, y + h), level, fill)
            else:
                cv2.circle(image, (x, y), max(w, h) // 2, level, fill)
        else:  # long straight line (image border, sector edge)
            angle = float(rng.uniform(0, math.pi))
            length = int(rng.integers(20, 2 * max(rows, cols)))
            end = (int(x + length * math.cos(angle)), int(y + length * math.sin(angle)))
            cv2.line(image, (x, y), end, level, 1 + int(rng.integers(2)))


def negative_crop(size: int, rng: np.random.Generator) -> np.ndarray:
    """One text-free crop, float32 ``size`` x ``size`` in [0, 255]."""
    import cv2

    field = speckle(size, size, rng)
    if rng.random() < 0.3:  # colour-flow or tissue blobs, smooth and bright or dark
        blobs = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0),
                                 float(rng.uniform(3, 10)))
        blobs = (blobs - blobs.min()) / max(float(np.ptp(blobs)), 1e-6)
        field = np.where(blobs > rng.uniform(0.6, 0.8), float(rng.uniform(0.2, 1.0)), field)
    low, high = sorted(float(v) for v in rng.uniform(0.0, 1.0, 2))
    high = max(high, low + 0.5)
    image = low + (high - low) * field
    mask = _mask(size, size, rng)
    image = np.where(mask, image, float(rng.choice([0.0, 1.0, rng.uniform(0, 1)])))
    image = np.ascontiguousarray(image, np.float32)
    _graphics(image, rng)
    return np.asarray(np.clip(image, 0.0, 1.0) * 255.0, np.float32)
