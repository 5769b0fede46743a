"""The ``cnnlab`` command: train | eval | predict | export | serve | features | models | datasets | study.

Every subcommand is a thin layer over a plain Python call. User mistakes raise
:class:`CnnlabError`; ``main`` prints them as one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


from .config import (DEVICES, FIELDS, RESUME_OVERRIDABLE, SECTIONS, SIZE_KIND, TTA_MODES, TrainConfig, field_default,
                     parse_key_value)
from .errors import CnnlabError

class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage block."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    """argparse type for counts and sizes that must be >= 1 (``-b 0`` would loop on empty batches)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _key_values(text: str) -> tuple[str, Any]:
    """argparse type for KEY=VALUE options (:func:`cnnlab.config.parse_key_value`)."""
    try:
        return parse_key_value(text)
    except CnnlabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help and short flag from the field's declaration, grouped by section."""
    groups = {s: p.add_argument_group(f"{s} options") for s in SECTIONS}
    for name, f in FIELDS.items():
        meta = f.metadata
        flag = "--" + name.replace("_", "-")
        kind = str(f.type).replace(" | None", "")
        group = groups[meta["section"]]
        default = field_default(name)
        # a field's help is plain text: argparse would read a "%" in it as a format directive and crash --help
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": meta["help"].replace("%", "%%")}
        if kind == "bool":
            shown = f" (default: {default})" if default is not None else ""  # None: the help says what happens
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **{**kw, "help": kw["help"] + shown})
            continue
        if kind.startswith("dict"):
            group.add_argument(flag, action="extend", nargs="+", type=_key_values, metavar="KEY=VALUE", **kw)
            continue
        if kind == SIZE_KIND:  # --image-size 32, --image-size 48 64 or --image-size 48x64
            kw["help"] += f" (default: {default})" if default is not None else ""
            group.add_argument(flag, nargs="+", metavar="S|H W", **kw)
            continue
        kw["type"] = {"int": int, "float": float}.get(kind, str)
        if meta["choices"]:  # checked by TrainConfig.validate, so a config file gets the same message
            kw["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        if default is not None:
            kw["help"] += f" (default: {default})"
        group.add_argument(*([meta["short"]] if meta["short"] else []), flag, **kw)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    for k, v in given.items():
        if isinstance(v, list) and str(FIELDS[k].type).replace(" | None", "") == SIZE_KIND:
            given[k] = " ".join(v)  # "48 64" or "48x64": the config reads either (cnnlab.sizes)
        elif isinstance(v, list):  # KEY=VALUE pairs
            given[k] = dict(v)
    if args.resume:
        from . import runs

        if args.config:  # the saved config is the recipe; a second one would be silently ignored
            raise CnnlabError("--config cannot be combined with --resume (the run's saved config.yaml is used; "
                              "flags listed in docs/cli.md may still change it)")
        run_dir = runs.check_run_dir(args.resume)
        base = TrainConfig.from_yaml(run_dir / runs.CONFIG).to_dict()
        changed = sorted(k for k in given if k not in RESUME_OVERRIDABLE and given[k] != base.get(k))
        if changed:
            raise CnnlabError(f"--resume continues {run_dir} with its saved config; these flags cannot change it: "
                              f"{', '.join('--' + k.replace('_', '-') for k in changed)}")
        base.update(given, out=str(run_dir.parent), name=run_dir.name)
        return TrainConfig.from_dict(base, str(run_dir / runs.CONFIG))
    base = {}
    if args.config:
        from .config import read_yaml

        base = read_yaml(args.config)
        if not isinstance(base, dict):
            raise CnnlabError(f"{args.config}: expected a mapping of config keys")
        base = {str(k).replace("-", "_"): v for k, v in base.items()}  # `model-options:` is `model_options`
    for k, v in given.items():  # flags override file values; dict options merge key by key
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return TrainConfig.from_dict(base, args.config or "flags")


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    cfg = _config_from_args(args)
    summary = train(cfg, resume=bool(args.resume))
    from .distributed import is_main_process

    if args.json and is_main_process():  # under torchrun every process returns it; two prints could interleave
        print(json.dumps(summary))
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .lr_find import lr_find

    result = lr_find(_config_from_args(args), args.start_lr, args.end_lr, args.num_steps, args.plot)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k not in ("lrs", "losses", "smoothed")}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_run

    if len(args.run) > 1:  # an ensemble: the members' probabilities averaged (cnnlab/ensemble.py)
        from .ensemble import evaluate_ensemble

        if args.denoiser:
            raise CnnlabError("--denoiser evaluates one run; it does not apply to an ensemble of several runs")
        evaluate_ensemble(args.run, data=args.data, data_dir=args.data_dir, tta=args.tta, device=args.device,
                          batch_size=args.batch_size, as_json=args.json, corrupt=args.corrupt,
                          corrupt_seed=args.corrupt_seed, output=args.output, overwrite=args.overwrite,
                          weights=args.weights)
        return 0
    evaluate_run(args.run[0], data=args.data, data_dir=args.data_dir, tta=args.tta, device=args.device,
                 batch_size=args.batch_size, as_json=args.json, corrupt=args.corrupt, corrupt_seed=args.corrupt_seed,
                 denoiser=args.denoiser, output=args.output, overwrite=args.overwrite, weights=args.weights)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import predict_files

    predict_files(args.run, args.paths, top_k=args.top_k, tta=args.tta, device=args.device, as_json=args.json,
                  backend=args.backend, batch_size=args.batch_size, csv_path=args.csv, weights=args.weights,
                  collect=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    record = export_run(args.run, fmt=args.format, weights=args.weights, opset=args.opset, int8=args.int8,
                        out=args.out, data_dir=args.data_dir, tolerance=args.tolerance,
                        min_agreement=args.min_agreement, parity_images=args.parity_images,
                        calibration_images=args.calibration_images, quiet=args.json)
    if args.json:
        print(json.dumps(record))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.source, host=args.host, port=args.port, backend=args.backend, device=args.device,
          weights=args.weights, max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels,
          max_images=args.max_images, max_concurrency=args.max_concurrency, max_queue=args.max_queue,
          top_k=args.top_k)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.catalog import print_model_info, print_model_table

    if args.info:
        print_model_info(args.info, args.input, args.num_classes, args.batch_size, dict(args.model_options or []))
    else:
        print_model_table()
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from .viz import show_features

    print(show_features(args.run, args.image, args.layer, args.out, args.device))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import list_datasets

    rows = [("name", "shape", "classes", "splits", "files", "description")]
    for spec in list_datasets():
        present = spec.files_present(args.data_dir)
        rows.append((spec.name, spec.shape, spec.classes, spec.splits,
                     "built in" if present is None else ("present" if present else "missing (downloads)"),
                     spec.description))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    from .data.path_costs import cost_report  # what the in-memory and the stream data path cost

    print("\n" + "\n".join(cost_report(list_datasets(), args.data_dir)))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from .pack import pack

    if args.verify:
        from .data.shards import verify_shards

        print(f"{args.source}: all shards match their checksums ({verify_shards(args.source) / 1e6:.1f} MB read)")
        return 0
    if not args.out:
        raise CnnlabError("pack: --out DIR is required (where the shards and manifest.json go)")
    pack(args.source, args.out, shard_size_mb=args.shard_size, image_size=args.image_size, keep_size=args.keep_size,
         data_dir=args.data_dir, test_split=args.test_split, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="cnnlab", description="Train, compare and deploy deep image classifiers.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model into a run folder",
                       description="Train a model. Flags override values from --config; see docs/cli.md.")
    p.add_argument("--config", help="YAML file of config values (flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="sweep the learning rate exponentially and suggest one (plot + JSON)",
                       description="Train the configured model for ~100 steps while the learning rate grows "
                                   "geometrically; plot the smoothed loss and suggest the rate where it falls "
                                   "fastest. Takes every train flag; see docs/training.md.")
    p.add_argument("--config", help="YAML file of config values (flags override it)")
    p.add_argument("--start-lr", type=float, default=1e-6, help="first rate of the sweep (default 1e-6)")
    p.add_argument("--end-lr", type=float, default=1.0, help="last rate of the sweep (default 1)")
    p.add_argument("--num-steps", type=int, default=100, help="optimizer steps of the sweep (default 100)")
    p.add_argument("--plot", default="lr_find.png", metavar="PNG", help="where the plot goes; the figures go "
                   "beside it as .json (default lr_find.png)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    _add_train_flags(p)
    p.set_defaults(func=cmd_lr_find, resume=None)

    p = sub.add_parser("eval", help="evaluate a run on its test split (all metrics), or an ensemble of runs")
    p.add_argument("run", nargs="+", metavar="RUN", help="run folder; several: their averaged probabilities "
                   "(an ensemble; nothing is written unless --output NAME, then RUN/evals/NAME.json in each)")
    p.add_argument("--data", help="evaluate on another dataset with the same classes and input shape")
    p.add_argument("--data-dir", help="folder holding the dataset's files")
    p.add_argument("--tta", metavar="MODE", help=f"test-time augmentation: {', '.join(TTA_MODES)} or random:N (N seeded "
                   "random views averaged, thesis Ch. 6; default: the run's)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("-b", "--batch-size", type=_positive_int, default=1024)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--corrupt", metavar="KIND:LEVEL",
                   help="evaluate on a corrupted copy of the test split: salt-pepper:P (a fraction P of the pixels "
                        "black or white), replace:P (random values), gaussian:S (noise std S); docs/two-stage.md")
    p.add_argument("--corrupt-seed", type=int, default=0, help="seed of the corruption (default: 0)")
    p.add_argument("--denoiser", metavar="RUN_DIR",
                   help="pass the test images through this (denoising) autoencoder run first")
    p.add_argument("--output", metavar="NAME", help="name of this evaluation: it goes to RUN/evals/NAME.json "
                   "(default with --corrupt/--denoiser: derived from them; never the run's own eval.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing evals/NAME.json")
    p.add_argument("--weights", choices=("auto", "final", "last", "best"), default="auto",
                   help="auto = best on validation (best.safetensors) when kept, else final; last = checkpoint.pt")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for image files or folders",
                       description="Top-k classes of images, decoded as the run's training data, streamed in batches "
                                   "(memory stays that of one batch); unreadable files in folders are skipped with a "
                                   "warning naming them. See docs/deploy.md.")
    p.add_argument("run", metavar="SOURCE", help="run folder, or a .onnx / .pt2 file from `cnnlab export`")
    p.add_argument("paths", nargs="+", help="image files or folders of images")
    p.add_argument("-k", "--top-k", type=int, default=5)
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation (exported models: none or flip)")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="auto: PyTorch for a run folder or .pt2, onnxruntime for .onnx; onnxruntime with a run "
                        "folder uses its exported model.onnx")
    p.add_argument("-b", "--batch-size", type=_positive_int, default=64, help="images decoded and predicted at a time")
    p.add_argument("--weights", choices=("auto", "final", "last", "best"), default="auto",
                   help="a run folder's weights: auto = best on validation when kept, else final, else last")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--csv", metavar="OUT", help="also write the results to this CSV file")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a run to ONNX or torch.export (.pt2), optionally int8; parity-checked",
                       description="Write a deployable file that takes uint8 images [batch, C, H, W] and returns "
                                   "class probabilities (normalization inside the graph), check it against PyTorch on "
                                   "the run's test images and record the check in export.json beside it. "
                                   "See docs/deploy.md.")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    p.add_argument("--weights", choices=("auto", "final", "last", "best"), default="auto",
                   help="auto = best when kept, else final; final: model.safetensors (last epoch); last: "
                        "checkpoint.pt; best: best.safetensors (best epoch on validation)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's own, 18)")
    p.add_argument("--int8", action="store_true", help="static int8 quantization (onnxruntime), calibrated on "
                   "training images; reports accuracy, size and latency before and after")
    p.add_argument("--out", metavar="FILE", help="where to write (default: RUN/model.onnx, RUN/model.int8.onnx, "
                   "RUN/model.pt2)")
    p.add_argument("--data-dir", help="folder holding the run's dataset (for the parity check and calibration)")
    p.add_argument("--tolerance", type=float, help="largest allowed |p_exported - p_torch| (default 1e-3; "
                   "int8: not checked)")
    p.add_argument("--min-agreement", type=float, help="smallest allowed top-1 agreement with PyTorch "
                   "(default 0.99; int8: 0.90)")
    p.add_argument("--parity-images", type=int, default=256, help="test images the parity check runs")
    p.add_argument("--calibration-images", type=int, default=256, help="training images that calibrate int8")
    p.add_argument("--json", action="store_true", help="print the export record as one JSON line")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="HTTP prediction server with a web page (POST /predict, GET /health, /model)",
                       description="Serve a run folder or an exported file over HTTP: a page at /, POST /predict "
                                   "(image upload or JSON pixel arrays), GET /health, GET /model. See docs/deploy.md.")
    p.add_argument("source", metavar="SOURCE", help="run folder, or a .onnx / .pt2 file from `cnnlab export`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto", help="as for predict")
    p.add_argument("--weights", choices=("auto", "final", "last", "best"), default="auto",
                   help="a run folder's weights")
    p.add_argument("--device", default="auto", choices=DEVICES)
    from . import serve as limits  # constants only: cnnlab.serve imports torch and FastAPI when serving

    p.add_argument("-k", "--top-k", type=int, default=5, help="classes per image unless the request says top_k")
    p.add_argument("--max-upload-bytes", type=int, default=limits.MAX_UPLOAD_BYTES,
                   help="largest request body in bytes; larger gets 413 (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=limits.MAX_PIXELS,
                   help="largest image, width x height; larger gets 413 before decoding (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=limits.MAX_IMAGES,
                   help="most images in one request (default: %(default)s)")
    p.add_argument("--max-concurrency", type=int, default=limits.MAX_CONCURRENCY,
                   help="predictions computing at once (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=limits.MAX_QUEUE,
                   help="requests waiting for a slot; more get 503 at once (default: %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list models with parameters and size, or cost figures of one")
    p.add_argument("--info", metavar="NAME", help="cost figures of one model")
    p.add_argument("--input", default=None, metavar="CxHxW",
                   help="input shape for --info, e.g. 3x32x32, or 1x4000 (channels x length) for a 1-D signal")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("-b", "--batch-size", type=_positive_int, default=128, help="batch for peak activation memory")
    p.add_argument("--model-options", action="extend", nargs="+", type=_key_values, metavar="KEY=VALUE",
                   help="model options for --info, e.g. groups=2")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("features", help="draw a layer's feature maps for one image (PNG grid, up to 64 maps)",
                       description="What a layer sees (sadie Fig. 6): the run's model on one image, the first 64 "
                                   "channels of one layer's output as grey images.")
    p.add_argument("run", help="run folder")
    p.add_argument("image", help="image file, preprocessed as the run's training data")
    p.add_argument("--layer", required=True, metavar="NAME",
                   help="layer name as `cnnlab models --info MODEL` lists it, e.g. blocks.3")
    p.add_argument("--out", metavar="PNG", help="where to write the grid (default: RUN/features/IMAGE-LAYER.png)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("pack", help="pack an image folder or a dataset into record shards (for data > RAM)",
                       description="Write WebDataset-layout tar shards and a manifest (classes, counts, sha256 per "
                                   "shard, split); train on them with --data shards --data-dir DIR. Resumable: run "
                                   "the same command again after an interruption. See docs/datasets.md.")
    p.add_argument("source", metavar="SOURCE", help="an image folder (one sub-folder per class) or a dataset name")
    p.add_argument("--out", metavar="DIR", help="folder for the shards and manifest.json")
    p.add_argument("--shard-size", type=float, default=128.0, metavar="MB", help="target shard size (default: 128)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--image-size", metavar="S|HxW", help="fit every image to S x S (or H x W), stored as PNG")
    size.add_argument("--keep-size", action="store_true", help="store the files as they are (default for folders)")
    p.add_argument("--data-dir", help="where a named dataset's files are")
    p.add_argument("--test-split", type=float, default=0.2, help="folder without train/ and test/: fraction of "
                   "each class for the test split (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the shuffle before sharding")
    p.add_argument("--verify", action="store_true", help="check SOURCE, a packed folder, against its checksums")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("datasets", help="list datasets and whether their files are present")
    p.add_argument("--data-dir", help="also look for files here")
    p.set_defaults(func=cmd_datasets)

    from .study import add_study_parser

    add_study_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. skipped unreadable images) as one plain line, not a source excerpt."""
    print(f"cnnlab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CnnlabError as e:
        print(f"cnnlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # files the user pointed at: missing, unreadable, disk full
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"cnnlab {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # training's says what is kept and how to resume (cnnlab.signals_handling)
        print(f"cnnlab {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
