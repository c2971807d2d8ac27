"""What ``DATA`` is, which classes it has, and the held-out splits every stage shares.

``DATA`` is a folder ``<root>/<class>/<image>`` (images), a table file (texts: ``.csv``, ``.tsv``,
``.json``, ``.jsonl``, ``.parquet``; rows whose label is empty are unlabeled), or a Hub dataset name
(written out once as a folder or a table, then read like one). :func:`prepare_data` reads it once,
checks it, and returns a :class:`TransferData`.

The splits: a stratified test set (``--test-size``) and a validation set (``--val-size``) drawn from
the labeled examples with ``--seed``, by :func:`~lightning_transfer.data.subsets.stratified_split`,
exactly as the DataModules draw them from the same arguments. The rest is the *training pool*: every
few-label subset is drawn from it, and pretraining reads it, labels dropped, together with the
unlabeled data. No stage sees a test example.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_transfer.data.corpus import TABLE_SUFFIXES, _base_suffix, read_table, source_fingerprint
from lightning_transfer.data.corpus import Source as CorpusSource
from lightning_transfer.data.encoding import encode_labels
from lightning_transfer.data.images import ImageFolderDataset, unlabeled_images
from lightning_transfer.data.subsets import stratified_split
from lightning_transfer.errors import UserInputError, require
from lightning_transfer.transfer.settings import TransferSettings

LABELED_TABLE = "labeled.parquet"
CORPUS_FILE = "corpus.txt"


@dataclass
class TransferData:
    """The data as the stages use it.

    ``kind`` is ``"image"`` or ``"text"``. ``class_names[i]`` is class ``i``; ``pool_counts`` the
    labeled examples per class in the training pool (what a few-label draw can take);
    ``split_sizes`` the sizes of ``test``, ``validation``, ``pool`` and ``unlabeled``.
    Images: ``root`` (the class folders), ``unlabeled_root``, ``image_size``, ``channels``.
    Text: ``table`` (the labeled rows, columns ``text`` and ``label``) and ``corpus`` (the
    pretraining texts: the pool's and the unlabeled rows', one per line).
    ``fingerprint`` changes when the data does."""

    kind: str
    description: str
    class_names: list[str]
    pool_counts: list[int]
    split_sizes: dict[str, int]
    fingerprint: str
    root: Path | None = None
    unlabeled_root: Path | None = None
    image_size: int | None = None
    channels: int | None = None
    table: Path | None = None
    corpus: Path | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_arguments(self, settings: TransferSettings) -> dict[str, Any]:
        """The DataModule arguments that fix the test and validation sets."""
        return {"test_size": as_size(settings.test_size), "val_size": as_size(settings.val_size), "seed": settings.seed}


def as_size(value: float) -> int | float:
    """A count (``200.0`` -> ``200``) or a fraction, as the DataModules take them."""
    return int(value) if value >= 1 else float(value)


def data_kind(data: str) -> str:
    """``"image"`` for a folder, ``"text"`` for a table file, ``"hub"`` for anything else that is
    not a local path."""
    path = Path(data).expanduser()
    if path.is_dir():
        return "image"
    if path.is_file():
        require(
            _base_suffix(path) in TABLE_SUFFIXES,
            f"{path} is not a table; DATA is a folder <root>/<class>/<image> or a {'/'.join(TABLE_SUFFIXES)} file",
        )
        return "text"
    require(
        not data.startswith((".", "/", "~")) and "\\" not in data and not Path(data).suffix,
        f"{data} does not exist; DATA is a folder <root>/<class>/<image>, a table file, or a Hub dataset name",
    )
    return "hub"


def prepare_data(settings: TransferSettings, work_dir: Path, write: bool = True) -> TransferData:
    """Read and check ``settings.data``; for text, write the labeled table and the pretraining corpus
    into ``work_dir`` (only where ``write``: one process writes, the others read)."""
    kind = data_kind(settings.data)
    data = settings.data
    if kind == "hub":  # written out once, then read as a local folder or table
        data = str(_materialize_hub(settings, work_dir / "hub", write))
        kind = "image" if Path(data).is_dir() else "text"
    if kind == "image":
        return _prepare_images(settings, Path(data).expanduser())
    require(settings.unlabeled is None, "--unlabeled is for image folders; unlabeled text rows have an empty label")
    return _prepare_table(settings, Path(data).expanduser(), work_dir, write)


# ------------------------------------------------------------------------------------------ images
def _prepare_images(settings: TransferSettings, root: Path) -> TransferData:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    require(
        len(classes) >= 2,
        f"{root} has {len(classes)} class folder{'s' * (len(classes) != 1)}"
        f"{': ' + classes[0] if classes else ''}; transfer needs at least 2, laid out as <root>/<class>/<image>",
    )
    image_size, channels = settings.image_size, None
    sample = ImageFolderDataset(root, channels=1, size=8)  # the file list; decoding is lazy
    labels = sample.labels.tolist()
    counts = Counter(labels)
    empty = [name for i, name in enumerate(sample.classes) if counts.get(i, 0) == 0]
    require(not empty, f"class folder(s) {', '.join(empty)} in {root} hold no images; remove them or add images")
    detected_size, channels = _image_geometry([path for path, _ in sample.files])
    image_size = image_size or detected_size
    unlabeled = Path(settings.unlabeled).expanduser() if settings.unlabeled else None
    unlabeled_count = len(unlabeled_images(unlabeled)) if unlabeled else 0
    parts = _split(labels, settings)
    files = [f"{path.relative_to(root)}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path, _ in sample.files]
    if unlabeled:
        files += [f"u/{path}:{path.stat().st_size}" for path in unlabeled_images(unlabeled)]
    return TransferData(
        kind="image",
        description=f"image folder {root} ({len(labels)} labeled images, {unlabeled_count} unlabeled)",
        class_names=list(sample.classes),
        pool_counts=_counts([labels[i] for i in parts[2]], len(sample.classes)),
        split_sizes={
            "test": len(parts[0]),
            "validation": len(parts[1]),
            "pool": len(parts[2]),
            "unlabeled": unlabeled_count,
        },
        fingerprint=_digest(files, image_size, channels),
        root=root,
        unlabeled_root=unlabeled,
        image_size=image_size,
        channels=channels,
    )


def _image_geometry(paths: list[Path], sample: int = 64) -> tuple[int, int]:
    """The median shorter side of a sample of the images (clipped to 16..224, a multiple of 8
    above 32 px) and their channels (1 when every sampled image is grayscale, else 3)."""
    from PIL import Image

    sides, gray = [], True
    step = max(1, len(paths) // sample)
    for path in paths[::step][:sample]:
        try:
            with Image.open(path) as image:  # reads the header only
                sides.append(min(image.size))
                gray &= image.mode in ("1", "L", "LA", "I", "I;16", "F")
        except OSError:
            continue  # unreadable files are skipped (and counted) when the stages read them
    require(bool(sides), f"none of the {min(sample, len(paths))} sampled images could be read; are these images?")
    side = sorted(sides)[len(sides) // 2]
    side = min(224, max(16, side))
    if side > 32:
        side = side // 8 * 8
    return side, 1 if gray else 3


# ------------------------------------------------------------------------------------------- texts
def _prepare_table(settings: TransferSettings, path: Path, work_dir: Path, write: bool) -> TransferData:
    frame = read_table(path)
    columns = list(frame.columns)
    for option, column in (("--text-column", settings.text_column), ("--label-column", settings.label_column)):
        require(
            column in columns,
            f"{path} has no column {column!r} ({option}); its columns: {', '.join(map(str, columns))}",
        )
    frame = frame[frame[settings.text_column].notna()]
    texts = [" ".join(str(text).split()) for text in frame[settings.text_column].tolist()]
    raw = frame[settings.label_column].tolist()
    labeled_rows = [i for i, value in enumerate(raw) if not _is_empty(value)]
    unlabeled_rows = [i for i, value in enumerate(raw) if _is_empty(value)]
    values = [_plain(raw[i]) for i in labeled_rows]
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if not integers or set(values) != set(range(max(values, default=-1) + 1)):
        values = [str(v) for v in values]  # names, or integer labels that are not the ids 0..C-1: classes by name
    ids, names = encode_labels({"train": values}, settings.label_column)
    present = sorted(set(ids["train"]))
    require(
        len(present) >= 2,
        f"{path} has {len(present)} class{'es' * (len(present) != 1)} in column {settings.label_column!r}; "
        "transfer needs at least 2",
    )
    parts = _split(ids["train"], settings)
    work_dir.mkdir(parents=True, exist_ok=True)
    table, corpus = work_dir / LABELED_TABLE, work_dir / CORPUS_FILE
    pool_texts = [texts[labeled_rows[i]] for i in parts[2]] + [texts[i] for i in unlabeled_rows]
    if write:
        import pandas as pd

        labeled = pd.DataFrame({"text": [texts[i] for i in labeled_rows], "label": values})
        labeled.to_parquet(table.with_suffix(".tmp"), index=False)
        table.with_suffix(".tmp").replace(table)
        corpus.with_suffix(".tmp").write_text("\n".join(t for t in pool_texts if t) + "\n")
        corpus.with_suffix(".tmp").replace(corpus)
    fingerprint = source_fingerprint(CorpusSource("files", str(path), files=(path.resolve(),)))
    return TransferData(
        kind="text",
        description=f"table {path} ({len(labeled_rows)} labeled rows, {len(unlabeled_rows)} unlabeled)",
        class_names=[str(name) for name in names],
        pool_counts=_counts([ids["train"][i] for i in parts[2]], len(names)),
        split_sizes={
            "test": len(parts[0]),
            "validation": len(parts[1]),
            "pool": len(parts[2]),
            "unlabeled": len(unlabeled_rows),
        },
        fingerprint=_digest([fingerprint, settings.text_column, settings.label_column]),
        table=table,
        corpus=corpus,
    )


def _is_empty(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _plain(value: Any) -> Any:
    """A label as a plain Python value: whole floats (ints read next to empty cells) become ints."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.strip() if isinstance(value, str) else value


# --------------------------------------------------------------------------------------------- Hub
def _materialize_hub(settings: TransferSettings, directory: Path, write: bool) -> Path:
    """A Hub dataset written out once: images as ``<directory>/images/<class>/<n>.png``, text as
    ``<directory>/table.parquet`` (all splits pooled: the command draws its own test set)."""
    import datasets

    done = directory / "source.txt"
    if done.is_file() and done.read_text().strip() == settings.data:
        found = [p for p in (directory / "images", directory / "table.parquet") if p.exists()]
        if found:
            return found[0]
    try:
        loaded = datasets.load_dataset(settings.data)
    except Exception as err:  # noqa: BLE001 - offline, missing, private: one message for the user
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserInputError(
            f"could not load the Hub dataset {settings.data!r} ({type(err).__name__}: {first}); it needs the network "
            "or the Hugging Face cache. Offline, pass a local folder or table"
        ) from None
    pooled = datasets.concatenate_datasets(list(loaded.values())) if isinstance(loaded, dict) else loaded
    require(
        settings.label_column in pooled.column_names,
        f"Hub dataset {settings.data!r} has no column {settings.label_column!r} (--label-column); "
        f"its columns: {', '.join(pooled.column_names)}",
    )
    image_columns = [name for name, feature in pooled.features.items() if isinstance(feature, datasets.Image)]
    directory.mkdir(parents=True, exist_ok=True)
    if image_columns:
        target = directory / "images"
        if write:
            label_feature = pooled.features[settings.label_column]
            names = getattr(label_feature, "names", None)
            for index, row in enumerate(pooled):
                label = row[settings.label_column]
                folder = target / (str(names[label]) if names and label is not None and label >= 0 else "unlabeled")
                if folder.name == "unlabeled":
                    continue  # withheld labels (-1): a Hub test split; pretraining could use them, a test cannot
                folder.mkdir(parents=True, exist_ok=True)
                row[image_columns[0]].save(folder / f"{index}.png")
    else:
        require(
            settings.text_column in pooled.column_names,
            f"Hub dataset {settings.data!r} has no image column and no text column {settings.text_column!r} "
            f"(--text-column); its columns: {', '.join(pooled.column_names)}",
        )
        target = directory / "table.parquet"
        if write:
            label_feature = pooled.features[settings.label_column]
            frame = pooled.select_columns([settings.text_column, settings.label_column]).to_pandas()
            names = getattr(label_feature, "names", None)
            if names:  # class names instead of ids; withheld labels (-1) become unlabeled rows
                frame[settings.label_column] = [
                    names[v] if v is not None and v >= 0 else None for v in frame[settings.label_column]
                ]
            frame.to_parquet(target, index=False)
    if write:
        done.write_text(settings.data + "\n")
    return target


# ---------------------------------------------------------------------------------------- helpers
def _split(labels: list[int], settings: TransferSettings) -> list[list[int]]:
    """``[test, validation, pool]`` row indices, as the DataModules draw them."""
    try:
        parts = stratified_split(labels, [as_size(settings.test_size), as_size(settings.val_size)], seed=settings.seed)
    except UserInputError as err:
        raise UserInputError(f"{err} (--test-size {settings.test_size:g}, --val-size {settings.val_size:g})") from None
    require(bool(parts[0]), "the test set is empty; raise --test-size")
    require(
        bool(parts[2]),
        "no labeled example is left for training after the test and validation sets; lower --test-size/--val-size",
    )
    return parts


def _counts(labels: list[int], num_classes: int) -> list[int]:
    counts = Counter(labels)
    return [counts.get(c, 0) for c in range(num_classes)]


def _digest(*parts: Any) -> str:
    import hashlib
    import json

    return hashlib.blake2b(json.dumps(parts, default=str).encode(), digest_size=12).hexdigest()


def feasible_label_counts(data: TransferData, wanted: tuple[int, ...]) -> tuple[int, ...]:
    """The label counts every class of the training pool can supply; each other one is skipped with
    a warning naming the class that falls short. None left is an error."""
    kept = []
    for k in wanted:
        short = [(name, n) for name, n in zip(data.class_names, data.pool_counts) if n < k]
        if short:
            name, n = min(short, key=lambda item: item[1])
            warnings.warn(
                f"skipping {k} labels per class: class {name!r} has only {n} training examples "
                f"({len(short)} class{'es' * (len(short) != 1)} short)",
                stacklevel=2,
            )
        else:
            kept.append(k)
    require(
        bool(kept),
        f"no requested label count fits: the smallest class has {min(data.pool_counts)} training examples; "
        f"pass --labels-per-class with values up to {min(data.pool_counts)}",
    )
    return tuple(kept)


__all__ = ["TransferData", "as_size", "data_kind", "feasible_label_counts", "prepare_data"]
