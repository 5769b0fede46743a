"""The ``cnnlab`` command: train | eval | predict | models | datasets | study.

Every subcommand is a thin layer over a plain Python call. User mistakes raise
:class:`CnnlabError`; ``main`` prints them as one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


from .config import (DEVICES, FIELDS, RESUME_OVERRIDABLE, SECTIONS, TTA_MODES, TrainConfig, field_default,
                     parse_key_value)
from .errors import CnnlabError

class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage block."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": meta["help"]}
        if kind == "bool":
            shown = f" (default: {default})" if default is not None else ""  # None: the help says what happens
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **{**kw, "help": kw["help"] + shown})
            continue
        if kind.startswith("dict"):
            group.add_argument(flag, action="extend", nargs="+", type=_key_values, metavar="KEY=VALUE", **kw)
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
        if isinstance(v, list):  # KEY=VALUE pairs
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
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_run

    evaluate_run(args.run, data=args.data, data_dir=args.data_dir, tta=args.tta, device=args.device,
                 batch_size=args.batch_size, as_json=args.json)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import predict_files

    predict_files(args.run, args.paths, top_k=args.top_k, tta=args.tta, device=args.device, as_json=args.json)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.catalog import print_model_info, print_model_table

    if args.info:
        print_model_info(args.info, args.input, args.num_classes, args.batch_size, dict(args.model_options or []))
    else:
        print_model_table()
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

    p = sub.add_parser("eval", help="evaluate a run on its test split (all metrics)")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="evaluate on another dataset with the same classes and input shape")
    p.add_argument("--data-dir", help="folder holding the dataset's files")
    p.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation (default: the run's)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("-b", "--batch-size", type=int, default=1024)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for image files or folders")
    p.add_argument("run", help="run folder")
    p.add_argument("paths", nargs="+", help="image files or folders of images")
    p.add_argument("-k", "--top-k", type=int, default=5)
    p.add_argument("--tta", choices=TTA_MODES, default="none")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("models", help="list models with parameters and size, or cost figures of one")
    p.add_argument("--info", metavar="NAME", help="cost figures of one model")
    p.add_argument("--input", default=None, metavar="CxHxW", help="input shape for --info, e.g. 3x32x32")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("-b", "--batch-size", type=int, default=128, help="batch for peak activation memory")
    p.add_argument("--model-options", action="extend", nargs="+", type=_key_values, metavar="KEY=VALUE",
                   help="model options for --info, e.g. groups=2")
    p.set_defaults(func=cmd_models)

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
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
