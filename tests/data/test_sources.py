"""data/sources.resolve_path: the one resolver of path arguments (aliases, ``~``, a clear error)."""

from pathlib import Path

import pytest

from lightning_transfer.data.sources import minilm_directory, resolve_path
from lightning_transfer.errors import UserInputError


def test_an_alias_resolves_to_its_demo_directory():
    assert resolve_path("minilm_demo") == minilm_directory()
    assert resolve_path("minilm_demo", what="pretrained") == minilm_directory()


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "model").mkdir()
    assert resolve_path("~/model", what="pretrained") == tmp_path / "model"
    assert resolve_path(Path("~/other")) == tmp_path / "other"  # without what: existence not checked


def test_a_missing_path_is_one_line_naming_the_argument_and_what_belongs_there(tmp_path):
    with pytest.raises(UserInputError, match=r"^tokenizer=.*nope: no such file or directory$"):
        resolve_path(str(tmp_path / "nope"), what="tokenizer")
    with pytest.raises(UserInputError, match="no such file or directory; pass a checkpoint") as missing:
        resolve_path(tmp_path / "nope", what="pretrained", expected="pass a checkpoint")
    assert "\n" not in str(missing.value)
