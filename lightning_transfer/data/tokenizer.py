"""BERT WordPiece tokenizers with the ``tokenizers`` library: train, load, save, check.

- :func:`train_wordpiece`: a BERT-style uncased (or cased) WordPiece vocabulary from raw texts.
- :func:`load_tokenizer`: a ``tokenizer.json``, a ``vocab.txt``, or a directory holding either.
- :func:`save_tokenizer`: ``tokenizer.json`` + ``vocab.txt`` + ``tokenizer_config.json``, readable by
  ``transformers.BertTokenizerFast`` / ``AutoTokenizer``.
- :func:`special_token_ids`, :func:`check_vocab_size`: the ids the masking and the model need, and the
  one mismatch that otherwise fails deep inside an embedding lookup.

The pipeline is BERT's: ``BertNormalizer`` (clean text, CJK spacing, optional lowercase and accent
stripping) -> ``BertPreTokenizer`` (split on whitespace and punctuation) -> WordPiece (``##``
continuations, ``[UNK]``) -> ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` with token types 0 / 1.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

import torch
from tokenizers import (
    Encoding,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from lightning_transfer.errors import UserInputError, require

SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def _bert_pipeline(model: models.WordPiece, lowercase: bool) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _add_bert_template(tokenizer: Tokenizer) -> Tokenizer:
    """Mark the specials as special (never split, skipped when decoding) and add the CLS/SEP template."""
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS.values()))
    ids = special_token_ids(tokenizer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["cls"]), ("[SEP]", ids["sep"])],
    )
    return tokenizer


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a BERT WordPiece tokenizer on ``texts`` (any iterable of strings, read once).

    Special tokens get ids ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``. ``vocab_size`` is an upper
    bound: a small corpus gives fewer tokens, so size the model with ``tokenizer.get_vocab_size()``.
    ``min_frequency``: pairs rarer than this are not merged. An empty corpus (no non-blank text) raises
    :class:`UserInputError`.
    """
    require(
        vocab_size > len(SPECIAL_TOKENS),
        f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}",
    )
    texts = iter(texts)
    first = next((text for text in texts if text.strip()), None)
    require(first is not None, "the tokenizer training corpus is empty (no non-blank text); pass at least one text")
    tokenizer = _bert_pipeline(
        models.WordPiece(unk_token=SPECIAL_TOKENS["unk"], continuing_subword_prefix="##"), lowercase
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        special_tokens=list(SPECIAL_TOKENS.values()),
        continuing_subword_prefix="##",
    )
    tokenizer.train_from_iterator(itertools.chain([first], texts), trainer=trainer)
    return _add_bert_template(tokenizer)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a BERT tokenizer from ``path``: a ``tokenizer.json`` file, a ``vocab.txt`` file (one token per
    line, line number = id), or a directory holding ``tokenizer.json`` (preferred) or ``vocab.txt``.

    From a ``vocab.txt`` the BERT pipeline is rebuilt; it lowercases unless the directory's
    ``tokenizer_config.json`` says ``"do_lower_case": false``. Padding and truncation stored in a
    ``tokenizer.json`` are switched off: the caller (the DataModule) decides them. A missing path, a
    directory with neither file, or a vocabulary without BERT's special tokens raises
    :class:`UserInputError`.
    """
    path = Path(path)
    require(
        path.exists(),
        f"tokenizer path {path} does not exist; pass a tokenizer.json, a vocab.txt or a directory with one",
    )
    if path.is_dir():
        candidates = [path / "tokenizer.json", path / "vocab.txt"]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        require(
            found is not None, f"{path} holds neither tokenizer.json nor vocab.txt; pass a BERT tokenizer directory"
        )
        assert found is not None  # require() above raised otherwise
        path = found
    if path.suffix == ".json":
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - the Rust side raises a bare Exception for a malformed file
            raise UserInputError(
                f"could not read tokenizer {path} ({err}); pass a `tokenizers` tokenizer.json"
            ) from None
        tokenizer.no_padding()
        tokenizer.no_truncation()
    else:
        vocab = _read_vocab(path)
        config_path = path.parent / "tokenizer_config.json"
        lowercase = (
            bool(json.loads(config_path.read_text()).get("do_lower_case", True)) if config_path.is_file() else True
        )
        tokenizer = _add_bert_template(
            _bert_pipeline(
                models.WordPiece(vocab, unk_token=SPECIAL_TOKENS["unk"], continuing_subword_prefix="##"), lowercase
            )
        )
    special_token_ids(tokenizer)  # fail early when a BERT special token is missing
    return tokenizer


def _read_vocab(path: Path) -> dict[str, int]:
    tokens = path.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    missing = [token for token in SPECIAL_TOKENS.values() if token not in tokens]
    require(not missing, f"{path} lacks the special tokens {missing}; pass a BERT vocab.txt")
    return {token: index for index, token in enumerate(tokens)}


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path, model_max_length: int = 512) -> Path:
    """Write ``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``
    into ``directory`` (created if needed); ``transformers.AutoTokenizer`` / ``BertTokenizerFast`` and
    :func:`load_tokenizer` read it back with the same ids. Returns the directory."""
    ids = special_token_ids(tokenizer)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    by_id = {index: token for token, index in tokenizer.get_vocab(with_added_tokens=True).items()}
    require(
        sorted(by_id) == list(range(len(by_id))),
        "the tokenizer's ids are not contiguous from 0; cannot write vocab.txt",
    )
    (directory / "vocab.txt").write_text("".join(by_id[index] + "\n" for index in range(len(by_id))), encoding="utf-8")
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    lowercase = bool(normalizer.get("lowercase", False))
    special_map = {f"{name}_token": SPECIAL_TOKENS[name] for name in ids}
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "model_max_length": model_max_length,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        **special_map,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return directory


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """``{"pad", "unk", "cls", "sep", "mask"} -> id``; a token missing from the vocabulary raises
    :class:`UserInputError` naming it."""
    ids = {name: tokenizer.token_to_id(token) for name, token in SPECIAL_TOKENS.items()}
    missing = [SPECIAL_TOKENS[name] for name, index in ids.items() if index is None]
    require(
        not missing,
        f"the tokenizer has no {', '.join(missing)} token; use a BERT WordPiece tokenizer "
        "(train_wordpiece or a BERT vocab.txt)",
    )
    return cast("dict[str, int]", ids)  # require() above rejected every None


def check_vocab_size(tokenizer: Tokenizer, vocab_size: int) -> None:
    """Raise :class:`UserInputError` when a model's ``vocab_size`` differs from the tokenizer's."""
    actual = tokenizer.get_vocab_size(with_added_tokens=True)
    if actual != vocab_size:
        raise UserInputError(
            f"the model's vocab_size={vocab_size} differs from the tokenizer's {actual} tokens; "
            f"set vocab_size: {actual} (or use the tokenizer the model was trained with)"
        )


def batch_word_ids(encodings: Sequence[Encoding], length: int | None = None) -> torch.Tensor:
    """``B x L`` int64 word indices for :func:`~lightning_transfer.data.masking.mask_whole_words`, from
    ``Encoding.word_ids`` (not from ``##`` prefixes): -1 at special tokens and padding. Rows are padded
    (or cut) to ``length``, by default the longest encoding."""
    length = max((len(encoding.ids) for encoding in encodings), default=0) if length is None else length
    out = torch.full((len(encodings), length), -1, dtype=torch.long)
    for row, encoding in enumerate(encodings):
        words = [-1 if word is None else word for word in encoding.word_ids[:length]]
        out[row, : len(words)] = torch.tensor(words, dtype=torch.long)
    return out


__all__ = [
    "SPECIAL_TOKENS",
    "batch_word_ids",
    "check_vocab_size",
    "load_tokenizer",
    "save_tokenizer",
    "special_token_ids",
    "train_wordpiece",
]
