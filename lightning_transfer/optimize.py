"""``lightning-transfer optimize SRC OUT``: an image folder or a text corpus -> litdata shards.

The shards are what ``ImageDataModule(source="litdata", root=OUT)`` and
``TextPretrainDataModule(source="litdata", root=OUT)`` stream (layout:
:mod:`lightning_transfer.data.shards`):

- images (``SRC`` laid out as ``SRC/<class>/<image>``, or a flat folder of unlabeled images): each
  file's *encoded bytes* with its label, split into ``train`` / ``val`` / ``test`` here, with the
  ImageDataModule's own function (:func:`~lightning_transfer.data.images.holdout_split`) and the same
  ``seed`` / ``val_size`` / ``test_size`` meaning, so the held-out images are those
  ``source="folder"`` would hold out, and they are never in the training shards. Decoding happens
  when the shards are read, so one set serves every image size.
- text (a file, a folder of files, ``reviews_demo`` or a Hub name, as
  :class:`~lightning_transfer.data.text_pretraining.TextPretrainDataModule` reads them): that
  DataModule's own pipeline (tokenizer trained or given, document split, NSP pairs or packing, its
  cache) builds the examples, written ready to collate with the tokenizer next to them. Masking is
  left to the collator, so every epoch masks anew.

How the training split is laid out, and why: litdata shuffles an epoch by permuting the *chunks*
and then the samples inside each chunk, so a batch holds samples of one or two chunks; and its
``drop_last`` (forced under DDP) cuts the epoch's tail off the chunk that comes last. So the training
samples are written in a seeded random order (never the folder's class-sorted order, whose chunks
would each hold one class), and into at least :data:`MIN_CHUNKS` chunks (``chunk_bytes`` is lowered
for a small split), so that the cut lands on another chunk every epoch instead of dropping the same
samples forever. Held-out splits are read by index and keep their order. Every sample records
where it came from: images ``"path"`` (and the manifest the folder index of every position), text
``"row"`` (the DataModule's example number).

``OUT`` appears complete or not at all: the shards are written into a temporary sibling folder that
is renamed when done. An existing non-empty ``OUT`` is replaced only with ``overwrite`` and only when
it is an earlier output of this command (it has the manifest). ``OUT`` must be a local folder (copy
it to object storage afterwards to stream from there). Bad input raises
:class:`~lightning_transfer.errors.UserInputError`; the command prints it as one line (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Literal

from lightning_transfer.errors import UserInputError

Kind = Literal["image", "text"]
TEXT_ROWS_PER_TASK = 1000  # examples per litdata task: big enough to amortize opening the cache
MIN_CHUNKS = 8  # per split (when it has as many samples): see the module docstring
UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_bytes(value: int | str) -> int:
    """``64MB`` / ``512KiB`` / ``1000000`` -> bytes."""
    text = str(value).strip().lower()
    number = text.rstrip("bikmg")
    unit = text[len(number) :] or "b"
    try:
        size = int(float(number) * UNITS[unit])
    except (ValueError, KeyError):
        raise UserInputError(f"--chunk-bytes {value!r}: expected bytes such as 64MB, 512KiB or 1000000") from None
    if size < 1:
        raise UserInputError(f"--chunk-bytes must be positive, got {value!r}")
    return size


def chunk_items(count: int, mean_bytes: float, chunk_bytes: int) -> int:
    """Samples per chunk: as many as ``chunk_bytes`` holds, but few enough for :data:`MIN_CHUNKS` chunks."""
    return max(1, min(int(chunk_bytes // max(mean_bytes, 1.0)), math.ceil(count / MIN_CHUNKS)))


def detect_kind(src: str) -> Kind:
    """``"image"`` for a folder with image files anywhere under it, ``"text"`` for anything else
    (a file, a folder of text files, ``reviews_demo``, a Hub name). A path that does not exist (and
    is no demo name) and an empty folder are errors."""
    from lightning_transfer.data.image_sources import IMAGE_EXTENSIONS

    if src == "reviews_demo":
        return "text"
    path = Path(src).expanduser()
    if not path.exists():
        raise UserInputError(f"SRC {src}: no such file or folder (for a Hugging Face Hub corpus pass --kind text)")
    if path.is_file():
        return "text"
    seen_file = False
    for file in path.rglob("*"):
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts):
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                return "image"
            seen_file = True
    if not seen_file:
        raise UserInputError(f"SRC {src} is an empty folder: nothing to optimize")
    return "text"


def _prepare_out(out: str | Path, overwrite: bool) -> Path:
    """Check ``out`` (see the module docstring) and return it as an absolute path."""
    from lightning_transfer.data.shards import MANIFEST

    path = Path(out).expanduser().absolute()
    if "://" in str(out):
        raise UserInputError(f"OUT {out}: write the shards to a local folder, then copy it to object storage")
    if path.exists() and not path.is_dir():
        raise UserInputError(f"OUT {out} is a file; choose a folder")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UserInputError(
                f"OUT {out} exists and is not empty; pass --overwrite to replace it, or choose another OUT"
            )
        if not (path / MANIFEST).is_file():
            raise UserInputError(
                f"OUT {out} has no {MANIFEST}, so it is not an earlier output of lightning-transfer optimize; "
                f"refusing to delete it with --overwrite: remove it yourself or choose another OUT"
            )
    return path


def _write_split(fn, inputs: list, dest: Path, chunk_size: int, workers: int, start_method, progress: bool) -> None:
    """``litdata.optimize`` of ``fn`` over ``inputs`` into ``dest``, ``chunk_size`` samples per chunk,
    in input order (each worker takes a contiguous slice, written in order): the sample at position
    ``i`` of the split is read back at index ``i``, which the readers check."""
    from lightning_transfer.data.litdata_env import litdata

    litdata.optimize(
        fn=fn,
        inputs=inputs,
        output_dir=str(dest),
        num_workers=max(1, min(workers, len(inputs))),
        chunk_size=chunk_size,
        keep_data_ordered=True,
        reorder_files=False,
        start_method=start_method,
        verbose=progress,
    )


def _image_sample(entry: tuple[int, int, str], root: str) -> dict[str, Any]:
    position, label, relative = entry
    return {"index": position, "label": label, "image": (Path(root) / relative).read_bytes(), "path": relative}


def _optimize_images(
    src: str, tmp: Path, seed: int, val_size: int | float, test_size: int | float, chunk_bytes: int, write
) -> dict:
    import numpy as np

    from lightning_transfer.data.image_sources import ImageFolderDataset
    from lightning_transfer.data.images import holdout_split
    from lightning_transfer.data.shards import FORMAT, FORMAT_VERSION

    root = Path(src).expanduser()
    if not root.is_dir():
        raise UserInputError(f"SRC {src}: no such folder; pass an image folder laid out as SRC/<class>/<image>")
    folder = ImageFolderDataset(root, channels=3, size=8)  # lists the files; checks that some decode
    labels = folder.labels
    try:
        test_idx, val_idx, train_idx = holdout_split(labels, val_size, test_size, seed)
    except UserInputError as err:
        raise UserInputError(
            f"{err} ({len(labels)} images in {src}); pass a smaller --test-size / --val-size"
        ) from None
    shuffled = np.random.default_rng([seed, 1]).permutation(np.asarray(train_idx, dtype=np.int64)).tolist()
    splits = {"train": shuffled, "val": val_idx, "test": test_idx or []}
    sizes = [folder.files[i][0].stat().st_size for i in shuffled[:1000]]
    mean_bytes = float(np.mean(sizes)) if sizes else 1.0
    for split, indices in splits.items():
        entries = [
            (pos, int(labels[i]), folder.files[i][0].relative_to(root).as_posix()) for pos, i in enumerate(indices)
        ]
        if entries:
            write(
                partial(_image_sample, root=str(root)),
                entries,
                tmp / split,
                chunk_items(len(entries), mean_bytes, chunk_bytes),
            )
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": "image",
        "source": str(root.absolute()),
        "classes": folder.classes,
        "settings": {"seed": seed, "val_size": val_size, "test_size": test_size},
        "splits": {
            split: {"count": len(indices), "labels": [int(labels[i]) for i in indices], "source_index": indices}
            for split, indices in splits.items()
        },
    }


_OPENED: dict[tuple[str, str], Any] = {}  # per worker process: the examples it reads


def _text_task(task: tuple[list[int], int], path: str, split: str):
    """The samples of one task: the examples ``rows`` of the DataModule's cache, written at the
    positions ``first, first + 1, ...``."""
    import datasets
    import numpy as np

    rows, first = task
    key = (path, split)
    if key not in _OPENED:
        _OPENED[key] = datasets.load_from_disk(path)[split].with_format("numpy")
    examples = _OPENED[key]
    dtypes = {"input_ids": np.int32, "word_ids": np.int32, "token_type_ids": np.int8, "special_tokens_mask": np.int8}
    for offset, row in enumerate(rows):
        sample: dict[str, Any] = {"index": first + offset, "row": row}
        for name, value in examples[row].items():
            sample[name] = np.asarray(value, dtype=dtypes[name]) if name in dtypes else int(value)
        yield sample


def _optimize_text(src: str, tmp: Path, settings: dict[str, Any], chunk_bytes: int, write) -> dict:
    import numpy as np

    from lightning_transfer.data.shards import FORMAT, FORMAT_VERSION
    from lightning_transfer.data.streaming_text import TOKENIZER_FILE
    from lightning_transfer.data.text_pretraining import TextPretrainDataModule

    data = TextPretrainDataModule(source=src, **settings)
    data.setup()  # the DataModule's pipeline, through its cache
    assert data.cache_path is not None and data.train_dataset is not None and data.val_dataset is not None
    counts = {"train": len(data.train_dataset), "validation": len(data.val_dataset)}
    lengths = data.train_dataset[:1000]["length"]
    mean_bytes = 6.0 * float(np.mean(lengths)) + 32  # int32 ids, two int8 rows, the scalars
    for split, count in counts.items():
        order = np.arange(count)
        if split == "train":
            order = np.random.default_rng([settings["seed"], 2]).permutation(count)
        starts = range(0, count, TEXT_ROWS_PER_TASK)
        tasks = [(order[start : start + TEXT_ROWS_PER_TASK].tolist(), start) for start in starts]
        if tasks:
            fn = partial(_text_task, path=str(data.cache_path), split=split)
            write(fn, tasks, tmp / split, chunk_items(count, mean_bytes, chunk_bytes))
    data.tokenizer.save(str(tmp / TOKENIZER_FILE))
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": "text",
        "source": src,
        "settings": {name: value for name, value in settings.items() if name not in ("cache_dir", "num_proc")},
        "splits": {split: {"count": count} for split, count in counts.items()},
    }


def optimize(
    src: str | Path,
    out: str | Path,
    kind: Kind | None = None,
    *,
    workers: int = 1,
    chunk_bytes: int | str = "64MB",
    overwrite: bool = False,
    start_method: str | None = None,
    progress: bool = True,
    seed: int = 0,
    val_size: int | float = 500,
    test_size: int | float = 1000,
    tokenizer: str | None = None,
    tokenizer_vocab_size: int = 8192,
    lowercase: bool = True,
    min_frequency: int = 2,
    max_seq_length: int = 128,
    nsp: bool = True,
    short_seq_prob: float = 0.1,
    whole_word_masking: bool = False,
    val_fraction: float = 0.05,
    text_column: str = "text",
    txt_documents: str = "blank_line",
    num_proc: int = 1,
    cache_dir: str = "~/.cache/lightning_transfer/text",
) -> Path:
    """Write ``src`` as litdata shards into ``out``; returns ``out``.

    Args:
        kind: ``"image"`` or ``"text"``; ``None`` detects it (:func:`detect_kind`).
        workers: litdata worker processes; ``chunk_bytes``: the size of a chunk file (``"64MB"``, or
            bytes); ``start_method``: how the workers start (``None``: litdata's, spawn; ``"fork"``
            starts fast on Linux); ``progress``: litdata's progress output.
        overwrite: replace an earlier output of this command at ``out``.
        seed, val_size, test_size (images): the held-out splits, as ``ImageDataModule`` draws them
            (ints are counts, floats fractions); the DataModule must then use the same values.
        seed and the rest (text): ``TextPretrainDataModule``'s arguments of the same names; the
            DataModule reading the shards must use the same ``max_seq_length``, ``nsp``,
            ``short_seq_prob``, ``whole_word_masking`` and ``val_fraction``.

    Raises:
        UserInputError: ``src`` missing or empty, ``out`` not empty without ``overwrite`` (or not
            ours), and whatever the image folder or the text pipeline rejects.
    """
    if workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {workers}")
    size = parse_bytes(chunk_bytes)
    src = str(src)
    kind = kind or detect_kind(src)
    if kind not in ("image", "text"):
        raise UserInputError(f"--kind must be image or text, got {kind!r}")
    target = _prepare_out(out, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    write = partial(_write_split, workers=workers, start_method=start_method, progress=progress)
    try:
        if kind == "image":
            manifest = _optimize_images(src, tmp, seed, val_size, test_size, size, write)
        else:
            settings = dict(
                tokenizer=tokenizer,
                tokenizer_vocab_size=tokenizer_vocab_size,
                lowercase=lowercase,
                min_frequency=min_frequency,
                max_seq_length=max_seq_length,
                nsp=nsp,
                short_seq_prob=short_seq_prob,
                whole_word_masking=whole_word_masking,
                val_fraction=val_fraction,
                seed=seed,
                text_column=text_column,
                txt_documents=txt_documents,
                num_proc=num_proc,
                cache_dir=cache_dir,
            )
            manifest = _optimize_text(src, tmp, settings, size, write)
        from lightning_transfer.data.shards import MANIFEST

        (tmp / MANIFEST).write_text(json.dumps(manifest) + "\n")  # last: a folder without it is unfinished
        if target.exists():
            shutil.rmtree(target)  # _prepare_out checked it is empty or an earlier output of ours
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------- the command
def _size(text: str) -> int | float:
    """An int count (``500``) or a float fraction (``0.1``)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a count (500) or a fraction (0.1), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-transfer optimize",
        description="Write an image folder or a text corpus as litdata shards that ImageDataModule / "
        "TextPretrainDataModule (source=litdata, root=OUT) stream, sharded per process and worker.",
    )
    parser.add_argument("src", metavar="SRC", help="an image folder SRC/<class>/<image>, or a text corpus")
    parser.add_argument("out", metavar="OUT", help="the local folder to write (created; see --overwrite)")
    parser.add_argument("--kind", choices=("image", "text"), help="what SRC is (default: detected)")
    parser.add_argument("--workers", type=int, default=1, help="litdata worker processes (default 1)")
    parser.add_argument("--chunk-bytes", default="64MB", help="size of a chunk file (default 64MB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command at OUT")
    parser.add_argument(
        "--start-method", choices=("spawn", "fork", "forkserver"), help="how the workers start (default: spawn)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--seed", type=int, default=0, help="split seed (images) / pipeline seed (text); default 0")
    images = parser.add_argument_group("images (the DataModule must use the same values)")
    images.add_argument("--val-size", type=_size, default=500, help="validation images: count or fraction (500)")
    images.add_argument("--test-size", type=_size, default=1000, help="test images: count or fraction (1000)")
    text = parser.add_argument_group("text (TextPretrainDataModule's arguments of the same names)")
    text.add_argument("--tokenizer", help="tokenizer.json / vocab.txt / folder (default: train a WordPiece one)")
    text.add_argument("--tokenizer-vocab-size", type=int, default=8192)
    text.add_argument("--no-lowercase", dest="lowercase", action="store_false")
    text.add_argument("--min-frequency", type=int, default=2)
    text.add_argument("--max-seq-length", type=int, default=128)
    text.add_argument("--no-nsp", dest="nsp", action="store_false", help="pack full sentences instead of NSP pairs")
    text.add_argument("--short-seq-prob", type=float, default=0.1)
    text.add_argument("--whole-word-masking", action="store_true")
    text.add_argument("--val-fraction", type=float, default=0.05)
    text.add_argument("--text-column", default="text")
    text.add_argument("--txt-documents", choices=("blank_line", "line", "file"), default="blank_line")
    text.add_argument("--num-proc", type=int, default=1, help="tokenization processes")
    text.add_argument("--cache-dir", default="~/.cache/lightning_transfer/text")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the command (``argv`` without the program name and without ``optimize``)."""
    args = vars(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
    src, out, quiet = args.pop("src"), args.pop("out"), args.pop("quiet")
    try:
        target = optimize(src, out, progress=not quiet, **args)
    except UserInputError as err:
        if os.environ.get("LIGHTNING_TRANSFER_TRACEBACK"):
            raise
        print(f"lightning-transfer optimize: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    from lightning_transfer.data.shards import MANIFEST

    splits = json.loads((target / MANIFEST).read_text())["splits"]
    counts = ", ".join(f"{split} {entry['count']}" for split, entry in splits.items())
    print(f"lightning-transfer optimize: wrote {counts} samples to {target}")


__all__ = ["build_parser", "detect_kind", "main", "optimize"]
