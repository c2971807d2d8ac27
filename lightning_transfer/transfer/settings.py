"""The command line of ``lightning-transfer transfer``: :class:`TransferSettings` and its parser.

Trainer options pass through as in ``fit``: ``--trainer.accelerator gpu --trainer.devices 2
--trainer.strategy ddp --trainer.precision bf16-mixed`` (any ``pl.Trainer`` argument; values are read
as YAML, so ``2`` is an int and ``null`` is None). They apply to every stage's Trainer.
"""

from __future__ import annotations

import argparse
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lightning_transfer.errors import UserInputError, require

STRATEGIES = ("auto", "linear", "lp_ft", "full")
BACKBONES = ("auto", "convnet", "resnet18", "resnet34", "resnet50")
DEFAULT_LABELS = (1, 5, 10, 50)
DEFAULT_TEMPERATURE = 0.5  # SimCLR's NT-Xent temperature: the paper's CIFAR-10 value
# Fine-tuning LRs each run tries, as multiples of its recipe's LR; the run keeps the one with the best
# validation accuracy. The same grid for every init, so that scratch is tuned as carefully as pretrained: on
# the demo's digits, scratch at 10 labels per class scored 0.855 at the recipe's LR and 0.899 at 2.5x.
DEFAULT_LR_FACTORS = (0.3, 1.0, 3.0)
# Options the command owns: each stage sets them itself (its step count, its logs, no checkpoints).
OWNED_TRAINER_OPTIONS = (
    "max_steps",
    "max_epochs",
    "min_steps",
    "min_epochs",
    "logger",
    "default_root_dir",
    "enable_checkpointing",
    "callbacks",
)


@dataclass(frozen=True)
class TransferSettings:
    """Everything the command was asked to do. The fields that change results make up the keys of
    the finished stages (:mod:`~lightning_transfer.transfer.stages`); ``output_dir``, ``progress`` and
    ``budget_minutes`` (which acts through the plan) are not among them."""

    data: str
    output_dir: Path
    unlabeled: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    test_size: float = 0.2
    val_size: float = 0.1
    labels_per_class: tuple[int, ...] = DEFAULT_LABELS
    seeds: int = 2
    init_from: str | None = None
    budget_minutes: float = 15.0
    max_pretrain_steps: int | None = None
    strategy: str = "auto"
    backbone: str = "auto"
    image_size: int | None = None
    augment: dict[str, Any] = field(default_factory=dict)
    temperature: float = DEFAULT_TEMPERATURE
    lr_factors: tuple[float, ...] = DEFAULT_LR_FACTORS
    max_seq_length: int = 128
    seed: int = 0
    progress: bool = True
    trainer: dict[str, Any] = field(default_factory=dict)

    def result_settings(self) -> dict[str, Any]:
        """The settings that change results (JSON-able), for stage keys and the report."""
        settings = asdict(self)
        for name in ("output_dir", "progress", "budget_minutes"):
            settings.pop(name)
        return json.loads(json.dumps(settings, default=str))


def _positive_list(flag: str, kind: type, name: str):
    """An argparse type for ``flag``: comma-separated positive ``kind`` values (``name`` in messages),
    sorted, each once."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(sorted({kind(part) for part in text.split(",") if part.strip()}))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes comma-separated {name}, got {text!r}") from None
        if not values or values[0] <= 0:
            raise argparse.ArgumentTypeError(f"{flag} needs positive {name}, got {text!r}")
        return values

    return parse


def _size(text: str) -> float:
    value = float(text)
    if value <= 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"a size is a fraction in (0, 1) or a whole count, got {text!r}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--augment takes a JSON object, e.g. '{{\"flip_prob\": 0}}': {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--augment takes a JSON object, e.g. '{\"flip_prob\": 0}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-transfer transfer",
        description=(
            "Pretrain on your own data, fine-tune from it and from scratch with a few labels per class, "
            "and report how many labels pretraining saves."
        ),
        epilog="Trainer options pass through: --trainer.accelerator, --trainer.devices, --trainer.strategy, "
        "--trainer.precision (any pl.Trainer argument).",
    )
    parser.add_argument(
        "data",
        help="a folder <root>/<class>/<image>, a table (.csv .tsv .json .jsonl .parquet), or a Hub dataset name",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="where the results, report and models go")
    parser.add_argument("--unlabeled", help="a folder of unlabeled images added to pretraining (image data)")
    parser.add_argument("--text-column", default="text", help="the text column of a table (default: text)")
    parser.add_argument(
        "--label-column", default="label", help="the label column (default: label); empty labels are unlabeled"
    )
    parser.add_argument(
        "--test-size", type=_size, default=0.2, help="held-out test set: a fraction or a count (default 0.2)"
    )
    parser.add_argument(
        "--val-size", type=_size, default=0.1, help="validation set from the labeled pool (default 0.1)"
    )
    parser.add_argument(
        "--labels-per-class",
        type=_positive_list("--labels-per-class", int, "integers"),
        default=DEFAULT_LABELS,
        help="comma-separated label counts per class (default 1,5,10,50; counts some class cannot supply are skipped)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="label draws per count (default 2)")
    parser.add_argument(
        "--init-from", help="a Hugging Face BERT directory: continue its pretraining, and compare with it as shipped"
    )
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="the wall time to plan for (default 15)")
    parser.add_argument(
        "--max-pretrain-steps",
        type=int,
        help="at most this many pretraining steps, whatever the budget allows (the same count on every machine)",
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="auto", help="fine-tuning strategy (default: by label count)"
    )
    parser.add_argument("--backbone", choices=BACKBONES, default="auto", help="image encoder (default: by image size)")
    parser.add_argument("--image-size", type=int, help="image side in pixels (default: from the images, at most 224)")
    parser.add_argument(
        "--augment",
        type=_json_object,
        default={},
        help="SimCLR augmentation overrides as JSON, e.g. '{\"flip_prob\": 0}'",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help=f"SimCLR's NT-Xent temperature (default {DEFAULT_TEMPERATURE}, the paper's CIFAR-10 value; data with few classes "
        "gain from higher: see the README)",
    )
    parser.add_argument(
        "--lr-factors",
        type=_positive_list("--lr-factors", float, "numbers"),
        default=DEFAULT_LR_FACTORS,
        help="fine-tuning LRs to try, as multiples of the recipe's LR; each run keeps the one with the best validation "
        f"accuracy, the same grid for every init (default {','.join(f'{f:g}' for f in DEFAULT_LR_FACTORS)}; 1: no search)",
    )
    parser.add_argument("--max-seq-length", type=int, default=128, help="text: tokens per example (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the test/validation split (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bars")
    return parser


def trainer_options(extra: list[str]) -> dict[str, Any]:
    """``--trainer.key value`` / ``--trainer.key=value`` pairs as a dict of ``pl.Trainer`` arguments."""
    import lightning.pytorch as pl
    import yaml

    known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    options: dict[str, Any] = {}
    rest = list(extra)
    while rest:
        flag = rest.pop(0)
        require(
            flag.startswith("--trainer."),
            f"unrecognized argument {flag!r}; see lightning-transfer transfer --help (Trainer options: --trainer.KEY VALUE)",
        )
        key, _, value = flag[len("--trainer.") :].partition("=")
        if not _:
            require(bool(rest), f"{flag} needs a value")
            value = rest.pop(0)
        require(key in known, f"--trainer.{key} is not a pl.Trainer argument")
        require(key not in OWNED_TRAINER_OPTIONS, f"--trainer.{key} is set by the command per stage; leave it out")
        options[key] = yaml.safe_load(value)
    return options


def parse_settings(argv: list[str] | None) -> TransferSettings:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        trainer = trainer_options(extra)
    except UserInputError as err:
        parser.error(str(err))
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    if args.temperature <= 0:
        parser.error(f"--temperature must be positive, got {args.temperature}")
    if args.max_pretrain_steps is not None and args.max_pretrain_steps < 1:
        parser.error("--max-pretrain-steps must be at least 1")
    return TransferSettings(
        data=args.data,
        output_dir=args.output_dir,
        unlabeled=args.unlabeled,
        text_column=args.text_column,
        label_column=args.label_column,
        test_size=args.test_size,
        val_size=args.val_size,
        labels_per_class=args.labels_per_class,
        seeds=args.seeds,
        init_from=args.init_from,
        budget_minutes=args.budget_minutes,
        max_pretrain_steps=args.max_pretrain_steps,
        strategy=args.strategy,
        backbone=args.backbone,
        image_size=args.image_size,
        augment=args.augment,
        temperature=args.temperature,
        lr_factors=args.lr_factors,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        progress=not args.no_progress,
        trainer=trainer,
    )
