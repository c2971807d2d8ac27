import pandas as pd
import pytest

from lightning_transfer.data.corpus import read_corpus, read_table
from lightning_transfer.errors import UserInputError

# ------------------------------------------------------------------------------------------------
# Corpus reading
# ------------------------------------------------------------------------------------------------
DOCS = ["The first document. It has two sentences.", "Second document here.", "Third one!"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_read_corpus_reads_table_files_one_document_per_row(tmp_path, suffix):
    frame = pd.DataFrame({"body": DOCS + [None], "id": [1, 2, 3, 4]})
    path = tmp_path / f"corpus{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".tsv": lambda: frame.to_csv(path, sep="\t", index=False),
        ".json": lambda: frame.to_json(path, orient="records"),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    assert read_corpus(path, text_column="body") == DOCS


def test_read_corpus_txt_splits_documents_at_blank_lines_or_by_line_or_file(tmp_path):
    (tmp_path / "a.txt").write_text("One. Two.\nThree.\n\n \nFour.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Five.\n", encoding="utf-8")
    assert read_corpus(tmp_path) == ["One. Two.\nThree.", "Four.", "Five."]
    assert read_corpus(tmp_path, txt_documents="line") == ["One. Two.", "Three.", "Four.", "Five."]
    assert read_corpus(tmp_path / "a.txt", txt_documents="file") == ["One. Two.\nThree.\n\n \nFour."]


def test_read_corpus_demo_has_reviews_and_plot_summaries():
    documents = read_corpus("reviews_demo")
    assert len(documents) > 13000 and documents[0] == "A three-hour cinema master class."


def test_missing_text_column_lists_the_available_columns(tmp_path):
    pd.DataFrame({"review": ["x"], "stars": [5]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserInputError, match="no column 'text'; available columns: review, stars"):
        read_corpus(tmp_path / "t.csv")


def test_whitespace_only_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n\t\n")
    with pytest.raises(UserInputError, match="no text"):
        read_corpus(tmp_path / "empty.txt")


def test_missing_file_is_reported_not_sent_to_the_hub(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_corpus(str(tmp_path / "nope.txt"))


def test_binary_file_is_an_error(tmp_path):
    (tmp_path / "blob.txt").write_bytes(b"\x89PNG\x00\x00\x01binary")
    with pytest.raises(UserInputError, match="binary"):
        read_corpus(tmp_path / "blob.txt")


def test_lines_that_are_not_utf8_are_skipped_with_a_counted_warning(tmp_path):
    (tmp_path / "mixed.txt").write_bytes("Good line.\nCaf\xe9 latin-1.\nAnother good one.\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="skipped 1 of"):
        assert read_corpus(tmp_path / "mixed.txt", txt_documents="line") == ["Good line.", "Another good one."]


def test_offline_hub_dataset_fails_with_one_line_pointing_to_local_files():
    with pytest.raises(UserInputError) as info:
        read_corpus("someone/surely-not-cached-dataset")
    message = str(info.value)
    assert "\n" not in message and "network" in message and "local files" in message


# ------------------------------------------------------------------------------------------------
# Tables (read with datasets.load_dataset)
# ------------------------------------------------------------------------------------------------
def test_a_compressed_table_and_a_json_object_of_columns_read_like_the_plain_table(tmp_path):
    frame = pd.DataFrame({"body": DOCS, "id": [1, 2, 3]})
    frame.to_csv(tmp_path / "corpus.csv.gz", index=False, compression="gzip")
    frame.to_json(tmp_path / "columns.json")  # pandas' default layout: {"body": {"0": ...}, ...}
    assert read_corpus(tmp_path / "corpus.csv.gz", text_column="body") == DOCS
    assert read_corpus(tmp_path / "columns.json", text_column="body") == DOCS
    assert read_table(tmp_path / "columns.json")["id"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("latin.csv", "text\nCaf\xe9\n".encode("latin-1"), "is not UTF-8; convert it"),
        ("broken.json", b"{not json", "cannot read .*broken.json as json: "),
        ("broken.parquet", b"PAR1garbage", "cannot read .*broken.parquet as parquet: Parquet magic bytes"),
        ("ragged.csv", b'text,label\n"unterminated,1\n', "cannot read .*ragged.csv as csv: Error tokenizing data"),
        ("empty.jsonl", b"", "cannot read .*empty.jsonl as jsonl: the file is empty"),
        ("header.tsv", b"text\tlabel\n", "cannot read .*header.tsv as tsv: the file has no rows"),
    ],
)
def test_a_malformed_table_fails_with_one_line_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserInputError, match=message) as info:
        read_corpus(tmp_path / name)
    assert "\n" not in str(info.value)
