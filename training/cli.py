"""``veil train ner|detector --config FILE``: train, log to MLflow, register a version.

Light at import (argparse only): the trainer (torch, MONAI) and MLflow load when the
command runs, so ``veil`` itself starts without them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import ProfileError, VeilError
from pipeline.io.report import UsageError

__all__ = [
    "TRAINERS",
    "add_profiles_register_parser",
    "add_train_parser",
    "cmd_profiles_register",
    "cmd_train",
    "train",
]

#: ``veil train`` kinds -> trainer modules (each has ``run(config, out_dir) -> TrainResult``).
TRAINERS = {"ner": "training.ner.train", "detector": "training.detector.train"}
_HEADLINE = 12  # metrics printed; all of them are in the run


def add_train_parser(sub: Any) -> None:
    """Add ``train`` to the ``veil`` sub-command parsers."""
    parser = sub.add_parser("train", help="train a model, log it to MLflow, register a version")
    parser.add_argument("kind", choices=sorted(TRAINERS), help="which model")
    parser.add_argument("--config", required=True, metavar="FILE", help="training config (YAML)")
    parser.add_argument("--out", metavar="DIR",
                        help="bundle folder (default: <state>/train/<kind>-<UTC time>)")
    parser.add_argument("--promote", action="store_true",
                        help="move the 'production' alias to the new version")
    parser.add_argument("--no-register", action="store_true",
                        help="log the run without registering a model version")
    parser.add_argument("--experiment", metavar="NAME",
                        help="MLflow experiment (default: the model name)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else the embedded "
                             "sqlite:///<state>/mlflow.db)")
    parser.set_defaults(func=cmd_train)


def train(
    kind: str,
    config: Path,
    out_dir: Path,
    *,
    register: bool = True,
    promote: bool = False,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> Any:
    """Run the trainer of ``kind`` on ``config`` into ``out_dir``, then log and register.

    Returns
    -------
    tuple
        The :class:`~training.result.TrainResult` and the
        :class:`~training.tracking.TrackedRun`.
    """
    if kind not in TRAINERS:
        raise UsageError(f"unknown model kind {kind!r}; expected one of {sorted(TRAINERS)}")
    if not config.is_file():
        raise UsageError(f"no such config file: {config}")
    if promote and not register:
        raise UsageError("--promote needs a registered version (drop --no-register)")
    from pipeline.registry import import_mlflow

    import_mlflow()  # first: MONAI imports MLflow too, and telemetry must be off before that
    module_name = TRAINERS[kind]
    try:
        trainer = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        hint = (f"the {kind} trainer ({module_name}) is not part of this installation"
                if module_name.startswith(missing) else
                f"the {kind} trainer needs {missing!r}: pip install 'veil[train]'")
        raise UsageError(hint) from exc
    from training.result import TrainResult
    from training.tracking import log_result

    result = trainer.run(config, out_dir)
    if not isinstance(result, TrainResult):
        raise VeilError(f"{module_name}.run returned {type(result).__name__}, not TrainResult")
    tracked = log_result(result, config=config, experiment=experiment, register=register,
                         promote=promote, tracking_uri=tracking_uri)
    return result, tracked


def cmd_train(args: argparse.Namespace, err: Any) -> int:
    """``veil train``: 0 when the run is logged (and registered), 1 on a training error."""
    from pydantic import ValidationError

    from pipeline.registry import safe_uri, state_dir

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else state_dir() / "train" / f"{args.kind}-{stamp}"
    try:
        result, tracked = train(
            args.kind, Path(args.config), out, register=not args.no_register,
            promote=args.promote, experiment=args.experiment, tracking_uri=args.tracking_uri,
        )
    except ValidationError as exc:  # the config file: synthetic settings, no PHI
        raise UsageError(f"invalid config {args.config}: {exc}") from exc
    except UsageError:
        raise
    except VeilError as exc:
        if isinstance(exc, ValueError):  # the trainers' config errors (no PHI: synthetic data)
            raise UsageError(str(exc)) from exc
        err.print(f"veil: error: {exc}", markup=False, highlight=False)
        return 1
    lines = [
        f"model: {tracked.model_name}",
        f"bundle: {result.bundle_dir}",
        f"run: {tracked.run_id} (experiment {tracked.experiment})",
        f"tracking: {safe_uri(tracked.tracking_uri)}",
        f"artifacts: {tracked.artifact_uri}",
    ]
    if tracked.version is not None:
        lines.append(f"version: {tracked.version} (aliases: {', '.join(tracked.aliases)})")
    else:
        lines.append("version: not registered (--no-register)")
    headline = [k for k in sorted(result.metrics) if k == k.lower()][:_HEADLINE]
    lines += [f"metric {key}: {result.metrics[key]:.4g}" for key in headline]
    lines.append(f"metrics: {len(result.metrics)} final ones logged in the run")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def add_profiles_register_parser(psub: Any) -> None:
    """Add ``profiles register`` to the ``veil profiles`` parsers."""
    parser = psub.add_parser("register", help="log a resolved profile and its hash to MLflow")
    parser.add_argument("ref", metavar="NAME|PATH")
    parser.add_argument("--option", action="append", default=[], metavar="NAME")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else embedded)")
    parser.set_defaults(func=cmd_profiles_register)


def cmd_profiles_register(args: argparse.Namespace, err: Any) -> int:
    """``veil profiles register``: one MLflow run holding the resolved YAML and its hash."""
    from training.tracking import log_profile

    try:
        run_id, content_hash = log_profile(args.ref, args.option, tracking_uri=args.tracking_uri)
    except VeilError as exc:
        if isinstance(exc, UsageError | ProfileError):
            raise
        err.print(f"veil: error: {exc}", markup=False, highlight=False)
        return 1
    sys.stdout.write(f"profile sha256:{content_hash} logged as run {run_id}\n")
    return 0
