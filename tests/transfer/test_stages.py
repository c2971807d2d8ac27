"""Finished stages on disk: a rerun skips exactly the stages whose key is unchanged."""

from lightning_transfer.transfer.stages import StageStore, stage_key


def test_a_stage_is_done_only_with_the_same_key(tmp_path):
    store = StageStore(tmp_path)
    key = stage_key("pretrain", {"steps": 10, "data": "abc"})
    assert store.get("pretrain", key) is None
    store.put("pretrain", key, {"seconds": 1.5})
    assert store.get("pretrain", key) == {"seconds": 1.5}
    assert store.get("pretrain", stage_key("pretrain", {"steps": 11, "data": "abc"})) is None  # other settings
    assert stage_key("x", {"a": 1, "b": 2}) == stage_key("x", {"b": 2, "a": 1})  # key order does not matter
    assert [p.name for p in tmp_path.iterdir()] == ["pretrain.json"]  # no temporary file left behind


def test_a_record_cut_short_means_the_stage_runs_again(tmp_path):
    store = StageStore(tmp_path)
    (tmp_path / "run.json").write_text('{"key": "abc", "res')
    assert store.get("run", "abc") is None


def test_only_the_writing_process_writes(tmp_path):
    StageStore(tmp_path, writer=False).put("run", "k", {"a": 1})
    assert not (tmp_path / "run.json").exists()
