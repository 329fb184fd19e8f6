"""End-to-end pixel de-identification throughput (slices/s), in process and through Serve.

Method: ``--count`` CT slices (512x512, 12 bits, burned-in text and PHI) are generated
by :mod:`training.pixel_corpus` and held as DICOM file bytes in memory. For each mode
(``inprocess``: ONNX Runtime sessions in this process; ``serve``: the Veil Serve
deployments on a local Ray cluster) and each batch size B, the slices are processed in
groups of B, the whole pixel stage of ``dicom-basic`` + ``clean-pixel-data``:

* decode: ``dcmread`` from bytes and pydicom's decoding of every frame (host);
* transfer: the host-to-device copy of each decoded frame and the device-to-host copy
  of each view the detector reads, on the array module of ``--device``
  (:func:`pipeline.accel.array_module`; near zero with NumPy, where nothing is copied);
* preprocess: rendering the views the stage detects on (``stage.DETECT_VIEWS``:
  rescale, window, stretch, inversion, upscaling) on that module;
* detect: the views of the B slices in one batched call (in process:
  :func:`serving.engines.detect_many`; Serve: B concurrent requests, batched by
  ``@serve.batch``);
* recognise, tag, redact: :func:`pipeline.pixel.stage.clean_pixels` per slice with
  the batched detections (in process: one slice after another; Serve: the B slices in
  B threads, so recognition requests batch too); tag is the PHI decision; redact fills
  the boxes on the same array module (its per-frame copies included);
* write: ``save_as`` to memory;
* rpc (Serve only): the calls' wall time minus the replicas' own inference time
  (serialisation, object store, queueing).

One untimed warm-up group first. Stage seconds are summed over threads (they overlap in
Serve mode); slices/s is wall-clock. Ratios to the first (mode, batch size) of the run
are printed, since absolute figures on a shared machine mean little. Provider and device
of every engine are printed, and for each run the stage that takes the most time
(the bottleneck) with its share.

Run ``python -m benchmarks.bench_gpu [--count 32] [--batch-sizes 1,8,32]
[--modes inprocess,serve] [--device auto] [--threads N]``.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pydicom

from training.pixel_corpus import make_sample

__all__ = ["main"]

STAGES = ("decode", "transfer", "preprocess", "detect", "recognise", "tag", "redact", "write",
          "rpc")


class Clock:
    """Thread-safe seconds per stage."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.spent[stage] += seconds

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - start)
        return timed


def ct_corpus(count: int, seed: int) -> list[bytes]:
    """``count`` CT slices with burned-in text, as DICOM file bytes."""
    out: list[bytes] = []
    index = 0
    while len(out) < count:
        sample, ds, _ = make_sample(index, seed)
        index += 1
        if sample.modality != "CT":
            continue
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


class _Prefetched:
    """A detector answering from detections computed in one batch beforehand."""

    def __init__(self, found: dict[int, Any]) -> None:
        self.found = found

    def detect(self, image: Any) -> Any:
        return self.found[id(image)]


class Runner:
    """Runs groups of slices through the pixel stage in one mode."""

    def __init__(self, mode: str, device: str, threads: int | None, batch: int,
                 clock: Clock) -> None:
        from pipeline.profile import load_profile
        from serving.config import DeploymentSpec, ModelSource

        self.mode, self.batch, self.clock = mode, batch, clock
        self.settings = load_profile("dicom-basic", ["clean-pixel-data"]).pixel
        self.spec = DeploymentSpec(model=ModelSource(name="ppocr-v4"), device=device,  # type: ignore[arg-type]
                                   intra_op_num_threads=threads, num_cpus=0,
                                   max_batch_size=max(batch, 1),
                                   batch_wait_timeout_s=0.002)
        self.detector: Any = None
        self.recognizer: Any = None
        from pipeline import accel

        self.xp = accel.array_module(device)

    def process(self, blobs: list[bytes], pool: ThreadPoolExecutor | None) -> int:
        """De-identify the pixels of one group; return the number of slices."""
        from pipeline.pixel import stage
        from pipeline.text import HeaderContext

        clock = self.clock
        start = time.perf_counter()
        datasets = [pydicom.dcmread(io.BytesIO(blob)) for blob in blobs]
        clock.add("decode", time.perf_counter() - start)
        cached = {id(ds): stage_views(ds, self.xp, clock) for ds in datasets}
        images = [view.image for views in cached.values() for view in views]
        start = time.perf_counter()
        boxes = self._detect(images, pool)
        clock.add("detect" if self.mode == "inprocess" else "detect phase (wall)",
                  time.perf_counter() - start)
        found = {id(image): b for image, b in zip(images, boxes, strict=True)}
        engines = stage.PixelEngines(_Prefetched(found), self._timed_recognizer())

        def one(ds: Any) -> None:
            context = HeaderContext.from_dataset(ds)
            with _views_from(cached):
                stage.clean_pixels(ds, self.settings, context, engines)
            t0 = time.perf_counter()
            ds.save_as(io.BytesIO(), enforce_file_format=True)
            clock.add("write", time.perf_counter() - t0)

        if pool is None:
            for ds in datasets:
                one(ds)
        else:
            list(pool.map(one, datasets))
        return len(datasets)

    def _detect(self, images: list[Any], pool: ThreadPoolExecutor | None) -> list[Any]:
        from serving.engines import DetectRequest, detect_many

        if self.mode == "inprocess":
            return detect_many(self.detector, [DetectRequest(image) for image in images])
        assert pool is not None
        handle = self.detector
        return list(pool.map(lambda image: handle.detect.remote(image).result(timeout_s=600),
                             images))

    def _timed_recognizer(self) -> Any:
        clock, recognizer, mode = self.clock, self.recognizer, self.mode

        class Timed:
            def recognize(self, image: Any, boxes: Any) -> Any:
                if mode == "inprocess":
                    return clock.wrap("recognise", recognizer.recognize)(image, boxes)
                if not boxes:
                    return []
                return recognizer.recognize.remote(image, list(boxes)).result(timeout_s=600)
        return Timed()


_local = threading.local()


def _sync(xp: Any) -> None:
    """Wait for the device's queued work (CuPy); nothing to wait for with NumPy."""
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.Stream.null.synchronize()


def stage_views(ds: Any, xp: Any, clock: Clock) -> list[Any]:
    """The views the stage detects on, as :func:`pipeline.pixel.frames.views` makes them,
    with decode, transfer (both ways) and preprocess timed apart."""
    from pipeline import accel
    from pipeline.pixel import frames, stage

    start = time.perf_counter()
    decoded = list(frames.decoded_frames(ds))
    clock.add("decode", time.perf_counter() - start)
    start = time.perf_counter()
    on_device = [(xp.asarray(frame), photometric) for frame, photometric in decoded]
    _sync(xp)
    clock.add("transfer", time.perf_counter() - start)
    start = time.perf_counter()
    rendered = [(index, frames.render(frame, photometric, ds, xp=xp, names=stage.DETECT_VIEWS))
                for index, (frame, photometric) in enumerate(on_device)]
    _sync(xp)
    clock.add("preprocess", time.perf_counter() - start)
    start = time.perf_counter()
    out = [frames.View(frame=index, name=name, image=accel.to_host(image), scale=scale,
                       native=None if native is None else accel.to_host(native))
           for index, views in rendered for name, image, scale, native in views]
    clock.add("transfer", time.perf_counter() - start)
    return out


@contextmanager
def _views_from(cached: dict[int, list[Any]]) -> Iterator[None]:
    """Make the stage read the views already decoded for its dataset (this thread)."""
    _local.cached = cached
    try:
        yield
    finally:
        _local.cached = None


class _Current:
    clock = Clock()


def _install_hooks(xp: Any) -> None:
    """Point the stage's ``views``/``decide``/``redact`` at timed, cache-aware versions
    (``redact`` on the array module ``xp``)."""
    from pipeline.pixel import stage

    original_views, decide, redact = stage.views, stage.decide, stage.redact

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return _Current.clock.wrap(name, fn)(*args, **kwargs)
        return call

    def cached_views(ds: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        cache = getattr(_local, "cached", None)
        if cache is not None and id(ds) in cache:
            return iter(cache[id(ds)])
        return original_views(ds, *args, **kwargs)

    stage.views = cached_views
    stage.decide = timed("tag", decide)
    stage.redact = timed("redact", functools.partial(redact, xp=xp))


def start_ray(stack: ExitStack) -> None:
    """A local Ray cluster for the run, in a loopback-only namespace when possible."""
    import ray

    from serving import netns

    if netns.available():
        stack.enter_context(netns.isolated_network())
    else:
        print("warning: not root: Ray's gRPC servers listen on all interfaces", file=sys.stderr)
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.ERROR, log_to_driver=False)
    stack.callback(ray.shutdown)


def _start_serve(runner: Runner, stack: ExitStack) -> dict[str, Any]:
    """Deploy the app for this run's batch size; return its handles."""
    from ray import serve

    from serving.config import ServingConfig
    from serving.deployments import deploy

    config = ServingConfig(app_name="veil-bench", detector=runner.spec,
                           recognizer=runner.spec)
    deploy(config)
    stack.callback(serve.delete, "veil-bench")
    return {kind: serve.get_deployment_handle(kind, app_name="veil-bench")
            for kind in ("detector", "recognizer", "VeilIngress")}


def run(mode: str, batch: int, blobs: list[bytes], args: argparse.Namespace
        ) -> dict[str, Any]:
    """One (mode, batch size) measurement."""
    from serving import engines

    clock = _Current.clock = Clock()
    runner = Runner(mode, args.device, args.threads, batch, clock)
    with ExitStack() as stack:
        if mode == "inprocess":
            runner.detector = engines.build_detector(runner.spec)
            runner.recognizer = engines.build_recognizer(runner.spec)
            providers = engines.providers_of(runner.detector)
            pool = None
        else:
            handles = _start_serve(runner, stack)
            runner.detector, runner.recognizer = handles["detector"], handles["recognizer"]
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(batch, 1)))
        groups = [blobs[i:i + batch] for i in range(0, len(blobs), batch)]
        runner.process(groups[0], pool)  # warm-up (sessions, replicas, caches)
        before = _server_busy(handles) if mode == "serve" else {}
        clock.spent.clear()
        start = time.perf_counter()
        slices = sum(runner.process(group, pool) for group in groups)
        wall = time.perf_counter() - start
        if mode == "serve":
            after = _server_busy(handles)
            busy = {kind: after[kind] - before[kind] for kind in after}
            stats = handles["VeilIngress"].health.remote().result()
            providers = stats["detector"]["providers"]
            clock.spent["detect"] = busy["detector"]
            clock.spent["recognise"] = busy["recognizer"]
            phase = clock.spent.pop("detect phase (wall)", 0.0)
            clock.spent["rpc"] += max(phase - busy["detector"], 0.0)
    return {"mode": mode, "batch": batch, "slices": slices, "wall": wall,
            "spent": dict(clock.spent), "providers": providers}


def _server_busy(handles: dict[str, Any]) -> dict[str, float]:
    """Seconds each deployment has spent in inference so far."""
    stats = handles["VeilIngress"].health.remote().result()
    return {kind: float(value["busy_s"]) for kind, value in stats.items()}


def report(results: list[dict[str, Any]]) -> None:
    """Print slices/s per run, ratios to the first, and where the time goes."""
    base = results[0]["slices"] / results[0]["wall"]
    header = f"{'mode':<10}{'batch':>6}{'slices':>8}{'slices/s':>10}{'ratio':>7}  " + \
        "  ".join(f"{s:>9}" for s in STAGES)
    print(header)
    for r in results:
        rate = r["slices"] / r["wall"]
        shares = "  ".join(f"{r['spent'].get(s, 0.0) / r['slices'] * 1000:>7.1f}ms"
                           for s in STAGES)
        print(f"{r['mode']:<10}{r['batch']:>6}{r['slices']:>8}{rate:>10.2f}"
              f"{rate / base:>7.2f}  {shares}")
    print("stage columns: milliseconds per slice (summed over threads); providers: "
          + "; ".join(f"{r['mode']}/{r['batch']}: {','.join(r['providers'])}"
                      for r in results))
    for r in results:
        stage, share = bottleneck(r["spent"])
        print(f"bottleneck {r['mode']}/{r['batch']}: {stage} ({share:.0%} of stage time)")


def bottleneck(spent: dict[str, float]) -> tuple[str, float]:
    """The stage with the most time and its share of all stage time."""
    total = sum(spent.get(s, 0.0) for s in STAGES)
    stage = max(STAGES, key=lambda s: spent.get(s, 0.0))
    return stage, (spent.get(stage, 0.0) / total if total > 0 else 0.0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=32, help="CT slices (32)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (1,8,32)")
    parser.add_argument("--modes", default="inprocess,serve", help="inprocess,serve")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (runtime default)")
    args = parser.parse_args(argv)
    from pipeline import accel

    print("command: python -m benchmarks.bench_gpu " + " ".join(argv or sys.argv[1:]))
    print(f"machine: {os.cpu_count()} CPUs; accel: {accel.describe(args.device)}")
    start = time.perf_counter()
    blobs = ct_corpus(args.count, args.seed)
    print(f"corpus: {len(blobs)} CT 512x512 slices (seed {args.seed}) generated in "
          f"{time.perf_counter() - start:.1f} s")
    _install_hooks(accel.array_module(args.device))
    with ExitStack() as stack:
        if "serve" in args.modes.split(","):
            start_ray(stack)
        results = [run(mode, int(batch), blobs, args) for mode in args.modes.split(",")
                   for batch in args.batch_sizes.split(",")]
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
