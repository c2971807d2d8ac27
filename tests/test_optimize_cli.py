"""``lightning-transfer optimize SRC OUT``: the command end to end on a folder the test writes, its
help, and every bad input as one line on stderr with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_transfer.cli import main
from tests.helpers.images import write_image_folder

ENTRY = str(Path(sys.executable).with_name("lightning-transfer"))  # the console script pip installed


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["optimize", *args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out, captured.err


def test_the_command_writes_image_shards_and_says_what_it_wrote(tmp_path):
    images = write_image_folder(tmp_path / "images", classes=("ant", "bee"), per_class=5, size=12)
    result = subprocess.run([ENTRY, "optimize", str(images), str(tmp_path / "out"), "--val-size", "2", "--test-size",
                             "0.2", "--seed", "3", "--start-method", "fork", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote train 6, val 2, test 2 samples to {tmp_path / 'out'}" in result.stdout
    manifest = json.loads((tmp_path / "out" / "lightning_transfer.json").read_text())
    assert manifest["kind"] == "image" and manifest["classes"] == ["ant", "bee"]
    assert manifest["settings"] == {"seed": 3, "val_size": 2, "test_size": 0.2}
    assert sorted(manifest["splits"]["train"]["labels"]) == [0, 0, 0, 1, 1, 1]
    assert len(list((tmp_path / "out" / "train").glob("chunk-*.bin"))) >= 6  # several chunks even for 6 images
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]  # no temporary folder left


def test_help_lists_the_arguments(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for option in ("SRC", "OUT", "--kind", "--workers", "--chunk-bytes", "--overwrite", "--val-size",
                   "--max-seq-length", "--tokenizer"):
        assert option in out, option


def assert_one_line_error(capsys, args: list[str], expected: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightning-transfer optimize: error: "), err
    assert expected in lines[0], lines[0]


def test_bad_input_is_one_line(capsys, tmp_path):
    assert_one_line_error(capsys, [str(tmp_path / "missing"), str(tmp_path / "out")], "no such file or folder")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(capsys, [str(tmp_path / "empty"), str(tmp_path / "out")], "is an empty folder")
    assert_one_line_error(capsys, [str(tmp_path / "empty"), str(tmp_path / "out"), "--kind", "image"],
                          "no images found")
    images = write_image_folder(tmp_path / "images", classes=("ant", "bee"), per_class=3, size=12)
    assert_one_line_error(capsys, [str(images), str(tmp_path / "out")], "pass a smaller --test-size / --val-size")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert_one_line_error(capsys, [str(images), str(busy), "--val-size", "1", "--test-size", "1"],
                          "exists and is not empty; pass --overwrite")
    assert_one_line_error(capsys, [str(images), str(busy), "--val-size", "1", "--test-size", "1", "--overwrite"],
                          "refusing to delete it")
    assert (busy / "notes.txt").read_text() == "mine"
    assert_one_line_error(capsys, [str(images), str(tmp_path / "o"), "--chunk-bytes", "lots"], "--chunk-bytes 'lots'")


def test_overwrite_replaces_an_earlier_output(capsys, tmp_path):
    images = write_image_folder(tmp_path / "images", classes=("ant", "bee"), per_class=3, size=12)
    args = [str(images), str(tmp_path / "out"), "--val-size", "0", "--test-size", "2", "--start-method", "fork",
            "--quiet"]
    assert run(capsys, *args)[0] == 0
    (tmp_path / "out" / "stale.bin").write_text("old")
    assert run(capsys, *args)[0] == 2  # not without --overwrite
    code, out, _ = run(capsys, *args, "--overwrite")
    assert code == 0 and "wrote train 4, val 0, test 2 samples" in out
    assert not (tmp_path / "out" / "stale.bin").exists()


def test_a_text_corpus_becomes_examples_and_the_tokenizer(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"the cat sees dog {i} .\nthe owl likes the river .\nthe fox is red ."
                                  for i in range(12)) + "\n")
    code, out, err = run(capsys, str(corpus), str(tmp_path / "out"), "--max-seq-length", "16",
                         "--tokenizer-vocab-size", "64", "--min-frequency", "1", "--no-nsp", "--val-fraction", "0.2",
                         "--cache-dir", str(tmp_path / "cache"), "--start-method", "fork", "--quiet")
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "lightning_transfer.json").read_text())
    assert manifest["kind"] == "text" and manifest["settings"]["nsp"] is False
    assert manifest["settings"]["max_seq_length"] == 16 and (tmp_path / "out" / "tokenizer.json").is_file()
    counts = {split: manifest["splits"][split]["count"] for split in ("train", "validation")}
    assert counts["train"] > 0 and counts["validation"] > 0
    assert f"wrote train {counts['train']}, validation {counts['validation']} samples" in out
