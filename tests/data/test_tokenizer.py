"""WordPiece tokenizers: train, save, reload, and agree with transformers on the same files."""
from __future__ import annotations

import json
import shutil

import pytest
import transformers

from lightning_transfer.data.sources import load_reviews_demo, minilm_directory
from lightning_transfer.data.tokenizer import (
    batch_word_ids,
    check_vocab_size,
    load_tokenizer,
    save_tokenizer,
    special_token_ids,
    train_wordpiece,
)
from lightning_transfer.errors import UserInputError

PAIRS = [
    ("A gripping, beautifully-shot thriller!", "Then it falls apart."),
    ("Naïve but charming; the café scenes work.", "Dull."),
    ("unbelievably overlong", "An ending that nobody saw coming"),
]


@pytest.fixture(scope="module")
def trained():
    return train_wordpiece(load_reviews_demo().texts[:500], vocab_size=2000)


def test_training_puts_special_tokens_first_and_adds_cls_sep_and_token_types(trained):
    assert special_token_ids(trained) == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert 1000 < trained.get_vocab_size() <= 2000
    single = trained.encode("The film is great.")
    assert single.tokens[0] == "[CLS]" and single.tokens[-1] == "[SEP]"
    assert single.tokens[1:-1] == ["the", "film", "is", "great", "."]  # lowercased, punctuation split
    pair = trained.encode(*PAIRS[0])
    first_sep = pair.tokens.index("[SEP]")
    assert pair.tokens[0] == "[CLS]" and pair.tokens[-1] == "[SEP]"
    assert pair.type_ids == [0] * (first_sep + 1) + [1] * (len(pair.ids) - first_sep - 1)
    assert trained.decode(single.ids) == "the film is great."


def test_cased_training_keeps_upper_case():
    tokenizer = train_wordpiece(["The Film", "The film"] * 20, vocab_size=100, lowercase=False, min_frequency=1)
    assert tokenizer.encode("The").tokens[1:-1] == ["The"]


def test_saved_tokenizer_reloads_with_the_same_ids_here_and_in_transformers(trained, tmp_path):
    save_tokenizer(trained, tmp_path)
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    reloaded = load_tokenizer(tmp_path)
    fast = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    vocab_only = tmp_path / "vocab_only"  # transformers' own reading of vocab.txt + do_lower_case
    vocab_only.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(tmp_path / name, vocab_only / name)
    from_vocab = transformers.BertTokenizer.from_pretrained(vocab_only)
    for first, second in PAIRS:
        expected = trained.encode(first, second)
        assert reloaded.encode(first, second).ids == expected.ids
        assert load_tokenizer(tmp_path / "vocab.txt").encode(first, second).ids == expected.ids
        for theirs in (fast, auto, from_vocab):
            encoded = theirs(first, second)
            assert encoded["input_ids"] == expected.ids
            assert encoded["token_type_ids"] == expected.type_ids


def test_minilm_tokenizer_json_and_vocab_txt_give_the_same_ids():
    directory = minilm_directory()
    from_json = load_tokenizer(directory)  # prefers tokenizer.json
    from_vocab = load_tokenizer(directory / "vocab.txt")
    reference = transformers.BertTokenizerFast.from_pretrained(directory)
    for first, second in PAIRS + [("東京 in 1999 — ÉTÉ", "x" * 30)]:
        ids = from_json.encode(first, second).ids
        assert ids == from_vocab.encode(first, second).ids
        assert ids == reference(first, second)["input_ids"]
    assert len(from_json.encode("short").ids) == 3  # the file's fixed padding to 128 is switched off
    assert special_token_ids(from_vocab) == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}


def test_vocab_txt_honours_do_lower_case_false(tmp_path):
    shutil.copy(minilm_directory() / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = load_tokenizer(tmp_path)
    uncased = load_tokenizer(minilm_directory() / "vocab.txt")
    assert uncased.encode("Film").tokens[1:-1] == ["film"]
    assert cased.encode("Film").tokens[1:-1] != ["film"]  # the uncased vocabulary has no capital F


def test_vocab_size_mismatch_error_names_both_sizes_and_the_fix(trained):
    check_vocab_size(trained, trained.get_vocab_size())
    with pytest.raises(UserInputError) as raised:
        check_vocab_size(trained, 30522)
    message = str(raised.value)
    assert "30522" in message and str(trained.get_vocab_size()) in message
    assert f"vocab_size: {trained.get_vocab_size()}" in message and "\n" not in message


def test_bad_inputs_raise_user_input_error(tmp_path):
    with pytest.raises(UserInputError, match="empty"):
        train_wordpiece(["", "   "])
    with pytest.raises(UserInputError, match="does not exist"):
        load_tokenizer(tmp_path / "nothing")
    with pytest.raises(UserInputError, match="neither"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(UserInputError, match=r"\[MASK\]"):
        load_tokenizer(tmp_path / "vocab.txt")


def test_batch_word_ids_marks_specials_and_padding_and_groups_sub_tokens(trained):
    encodings = trained.encode_batch([("unbelievably overlong", "dull"), ("ok", "fine")])
    word_ids = batch_word_ids(encodings)
    assert word_ids.shape == (2, max(len(e.ids) for e in encodings))
    first = encodings[0]
    assert word_ids[0].tolist() == [-1 if w is None else w for w in first.word_ids]
    assert word_ids[1, len(encodings[1].ids):].eq(-1).all()
    pieces = [token for token, word, seq in zip(first.tokens, first.word_ids, first.sequence_ids) if word == 0 and seq == 0]
    assert "".join(piece.removeprefix("##") for piece in pieces) == "unbelievably"
