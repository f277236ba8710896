"""``aitrader model train | import | report``: research commands (see backend/model_cli/__init__.py).

Bad input (a missing file, an unknown feature, a model of the wrong width ...) prints one
line on stderr and exits 2; argparse's own errors exit 2 too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

__all__ = ["TrainSpec", "add_commands", "register_bundle", "resolve_bundle", "train_bundle", "train_errors"]


def resolve_bundle(ref: str, common: Any = None) -> Path:
    """The bundle directory a command-line reference names: a directory, or a registry id
    (``name@N``, or ``name`` for its promoted version) when ``common`` gives the database."""
    from pattern_engine.ml.metadata import BundleError

    p = Path(ref)
    if p.is_dir():
        return p
    if common is None or "/" in ref:
        raise BundleError(f"{ref}: no such bundle directory")
    from backend.model_cli.registry import _registry
    from pattern_engine.ml.registry import RegistryError, parse_ref

    try:
        reg = _registry(common)
        try:
            name, version = parse_ref(ref)
            rec = reg.get(name, version) if version is not None else reg.promoted(name)
            if rec is None:
                raise BundleError(f"{ref}: no such bundle directory, and model {name!r} has no promoted version")
            return reg.bundle_dir(rec)
        finally:
            reg.engine.dispose()
    except RegistryError as e:
        raise BundleError(f"{ref}: no such bundle directory, and not in the registry: {e}") from e


def register_bundle(bundle: Path, common: Any, actor: str, reason: str, promote: bool) -> tuple[Any, Path]:
    """Record ``bundle`` in the registry (and promote it): (its record, its folder in the store).
    ``RegistryError`` when it cannot."""
    from backend.model_cli.registry import _registry

    reg = _registry(common)
    try:
        rec = reg.register(bundle, actor, reason)
        if promote:
            rec = reg.promote(rec.name, rec.version, actor, reason).record
        return rec, reg.bundle_dir(rec)
    finally:
        reg.engine.dispose()


def _register(bundle: Path, args: argparse.Namespace, common: Any, what: str) -> None:
    """``--register`` / ``--promote``: record the new bundle (and promote it) in the registry."""
    if not (args.register or args.promote):
        return
    from backend.model_cli.registry import _actor

    rec, where = register_bundle(bundle, common, _actor(), args.reason or f"aitrader model {what}", args.promote)
    print(f"registered {rec.ref} at {where}")
    if args.promote:
        print(f"promoted {rec.ref}: engines following {rec.name!r} swap to it")


def _bundle_flags(p: Any) -> None:
    """What train and import share: the feature settings, where the bundle goes, and the registry."""
    p.add_argument("--pattern", default=None, metavar="FILE",
                   help="pattern config whose features: settings the model uses (default config/pattern.yml)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--register", action="store_true", help="also register the bundle in the model registry")
    p.add_argument("--promote", action="store_true", help="register and promote it (engines following the name "
                   "swap to it)")
    p.add_argument("--reason", default="", help="reason recorded with --register / --promote")


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an integer: {v!r}") from e
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _names(v: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in v.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError("empty list")
    return names


def _floats(v: str) -> list[float]:
    try:
        return [float(s) for s in v.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {v!r}") from e


def _ints(v: str) -> list[int]:
    try:
        return [int(s) for s in v.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {v!r}") from e


def _depth(v: str) -> tuple[str, str]:
    sym, sep, path = v.partition("=")
    if not sep or not sym or not path:
        raise argparse.ArgumentTypeError(f"expected SYMBOL=PATH, got {v!r}")
    return sym, path


def add_commands(msub: Any) -> dict[str, Callable[[argparse.Namespace, Any], int]]:
    tp = msub.add_parser("train", help="train a model on tick files and write a bundle (model.onnx + model.json)")
    src = tp.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", nargs="+", metavar="PATH", help="tick files (any tick_replay format)")
    src.add_argument("--synthetic", type=_positive, metavar="N",
                     help="train on N ticks of the seeded synthetic market (tick_replay.synthetic) instead")
    tp.add_argument("--symbols", type=_positive, default=4, help="symbols of --synthetic (default 4)")
    tp.add_argument("--synthetic-seed", type=int, default=101,
                    help="seed of --synthetic (default 101; the replay's default is 7: train and replay differ)")
    tp.add_argument("--format", default=None, help="force one tick_replay format for every file")
    tp.add_argument("--horizon", type=_positive, required=True, help="label horizon in price events of the symbol")
    tp.add_argument("--flat-bps", type=float, default=None,
                    help="|future return| below this (bps) is flat; default: the band holding 1/3 of training rows")
    tp.add_argument("--model", choices=["mlp", "gbm"], default="mlp")
    tp.add_argument("--features", type=_names, default=None, help="comma-separated engine feature names")
    tp.add_argument("--depth", type=_depth, action="append", default=[], metavar="SYMBOL=PATH",
                    help="Binance depth capture of SYMBOL for obi_1/obi_5/obi_10 columns (repeat for more files)")
    tp.add_argument("--name", default=None, help="model name (default <model>_h<horizon>)")
    tp.add_argument("--threshold", type=float, default=0.5, help="decision threshold on P(up) / P(down)")
    tp.add_argument("--max-rows", type=_positive, default=None, help="train on a random subset of N labelled rows")
    tp.add_argument("--seed", type=int, default=0)
    _bundle_flags(tp)

    ip = msub.add_parser("import", help="turn a .onnx / .pkl / .joblib / .pt model into a bundle")
    ip.add_argument("file")
    ip.add_argument("--name", required=True)
    ip.add_argument("--features", type=_names, required=True, help="comma-separated engine feature names, in "
                    "the order of the model's input columns")
    ip.add_argument("--classes", type=_ints, default=None, help="label of each output column (default -1,0,1; "
                    "sklearn models give their own)")
    ip.add_argument("--outputs", choices=["probabilities", "logits"], default="probabilities",
                    help="what the output tensor holds; logits get a softmax appended")
    ip.add_argument("--output-name", default=None, help="which output tensor (when the graph has several)")
    ip.add_argument("--mean", type=_floats, default=None, help="per-feature mean the engine subtracts (default 0)")
    ip.add_argument("--scale", type=_floats, default=None, help="per-feature scale the engine divides by (default 1)")
    ip.add_argument("--threshold", type=float, default=0.6)
    _bundle_flags(ip)

    rp = msub.add_parser("report", help="draw a trained bundle's curve, precision vs threshold and importances")
    rp.add_argument("bundle", help="bundle directory, or a registry id: NAME@VERSION, or NAME (its promoted version)")
    rp.add_argument("--out", default=None, help="PNG to write (default <bundle>/report.png for a directory, "
                    "./report-<name>-<version>.png for a registry id)")
    return {"train": cmd_train, "import": cmd_import, "report": cmd_report}


def _fail(what: str, e: BaseException) -> int:
    print(f"aitrader model {what}: {e}", file=sys.stderr)
    return EXIT_USAGE


def train_errors() -> tuple[type[BaseException], ...]:
    """The errors bad input to ``train_bundle`` (and import / report) raises: a message for the user."""
    from common.config import ConfigError
    from pattern_engine.ml.convert import ModelImportError
    from pattern_engine.ml.dataset import DatasetError
    from pattern_engine.ml.metadata import BundleError
    from tick_replay.formats import FormatError

    return ConfigError, DatasetError, ModelImportError, BundleError, FormatError, OSError


def _feature_params(path: str | None) -> Any:
    from pattern_engine.pattern_config import DEFAULT_PATH, load_pattern_config

    return load_pattern_config(path or DEFAULT_PATH).features


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """What ``aitrader model train`` and the ``train`` job train: tick files (``data``) or ``synthetic`` ticks,
    labelled at ``horizon``, the model and where its bundle goes (``out``)."""

    out: str
    horizon: int
    data: tuple[str, ...] = ()
    synthetic: int | None = None
    symbols: int = 4
    synthetic_seed: int = 101
    format: str | None = None
    flat_bps: float | None = None
    model: str = "mlp"
    features: tuple[str, ...] | None = None
    depth: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    threshold: float = 0.5
    max_rows: int | None = None
    seed: int = 0
    pattern: str | None = None


def train_bundle(spec: TrainSpec, step: Callable[[str], None] = lambda _what: None) -> Any:
    """Label, train and write the bundle ``spec`` describes; the ``TrainResult``. ``step`` is told before each
    stage (``reading ticks``, ``training``). Raises the errors of ``train_errors()`` on bad input."""
    from pattern_engine.ml.dataset import DatasetError, check_feature_names, load_rows
    from pattern_engine.ml.train import TrainOptions, train

    if bool(spec.data) == (spec.synthetic is not None):
        raise DatasetError("give tick files (data) or a number of synthetic ticks, not both or neither")
    params = _feature_params(spec.pattern)
    depth: dict[str, list[str]] = {}
    for sym, path in spec.depth:
        depth.setdefault(sym, []).append(path)
    opts = TrainOptions(horizon=spec.horizon, flat_bps=spec.flat_bps, model=spec.model, features=spec.features,
                        name=spec.name, threshold=spec.threshold, max_rows=spec.max_rows, seed=spec.seed)
    if spec.features:
        check_feature_names(spec.features)  # before reading and computing features
    step("reading ticks")
    if spec.synthetic is not None:
        from tick_replay.synthetic import synthetic_ticks

        label = f"synthetic:n={spec.synthetic},symbols={spec.symbols},seed={spec.synthetic_seed}"
        rows = load_rows([label], spec.horizon, params=params, depth=depth or None,
                         ticks=synthetic_ticks(spec.synthetic, spec.symbols, spec.synthetic_seed))
    else:
        rows = load_rows(list(spec.data), spec.horizon, fmt=spec.format, params=params, depth=depth or None)
    step("training")
    return train(rows, opts, spec.out, params)


def cmd_train(args: argparse.Namespace, common: Any) -> int:
    spec = TrainSpec(out=args.out, horizon=args.horizon, data=tuple(args.data or ()), synthetic=args.synthetic,
                     symbols=args.symbols, synthetic_seed=args.synthetic_seed, format=args.format,
                     flat_bps=args.flat_bps, model=args.model, features=args.features, depth=tuple(args.depth),
                     name=args.name, threshold=args.threshold, max_rows=args.max_rows, seed=args.seed,
                     pattern=args.pattern)
    try:
        result = train_bundle(spec)
    except train_errors() as e:
        return _fail("train", e)
    print(result.summary)
    return _registered(Path(args.out), args, common, "train")


def _registered(bundle: Path, args: argparse.Namespace, common: Any, what: str) -> int:
    from pattern_engine.ml.registry import RegistryError

    try:
        _register(bundle, args, common, what)
    except RegistryError as e:
        print(f"aitrader model {what}: the bundle is at {bundle} but registering it failed: {e}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_import(args: argparse.Namespace, common: Any) -> int:
    from pattern_engine.ml.convert import import_model

    try:
        params = _feature_params(args.pattern)
        out = import_model(args.file, args.out, name=args.name, features=args.features, classes=args.classes,
                           outputs=args.outputs, output_name=args.output_name, mean=args.mean, scale=args.scale,
                           threshold=args.threshold,
                           feature_params=params.recorded())
    except train_errors() as e:
        return _fail("import", e)
    from pattern_engine.ml.metadata import load_bundle

    meta, _ = load_bundle(out)
    print(f"imported {args.file} as {meta.name} {meta.version} ({meta.kind}): {len(meta.features)} features -> "
          f"classes {meta.classes} from output {meta.output_name!r}\nbundle: {out}")
    return _registered(Path(out), args, common, "import")


def cmd_report(args: argparse.Namespace, common: Any) -> int:
    from pattern_engine.ml.metadata import load_bundle
    from pattern_engine.ml.report import write_report

    try:
        bundle = resolve_bundle(args.bundle, common)
        meta, _ = load_bundle(bundle)
        out = args.out
        if out is None and not Path(args.bundle).is_dir():  # never write into the registry's store
            out = f"report-{meta.name}-{meta.version}.png"
        result = write_report(bundle, out)
    except train_errors() as e:
        return _fail("report", e)
    m = meta.metrics
    print(f"{meta.name} {meta.version} ({meta.kind}), horizon "
          f"{meta.horizon.events if meta.horizon else '?'} price events")
    if "verdict" in m:
        print(m["verdict"])
    print(f"permutation importance on {result.rows} validation rows (rise in log-loss when shuffled):")
    for imp in result.importances:
        print(f"  {imp.feature:<16} {imp.mean:+.5f} ± {imp.std:.5f}")
    print(f"report: {result.png}")
    return EXIT_OK
