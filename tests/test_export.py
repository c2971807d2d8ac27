"""python -m lightning_transfer.export: the encoder of a run (its exported round trip is run by
tests/test_readme.py's walkthroughs); bad input is one line."""
import pytest

from lightning_transfer.cli import BEST_RECORD
from lightning_transfer.export import export_encoder, main, resolve_checkpoint
from lightning_transfer.models.loading import load_encoder


def test_a_run_directory_exports_the_checkpoint_its_best_record_names(tmp_path):
    from lightning_transfer import SimCLRModule

    SimCLRModule(backbone="convnet", width=8, in_channels=1, num_classes=0).export_encoder(tmp_path / "best")
    (tmp_path / BEST_RECORD).write_text(f"{tmp_path / 'best'}\n")
    assert resolve_checkpoint(tmp_path) == tmp_path / "best"
    out = export_encoder(tmp_path, tmp_path / "again")
    assert out == tmp_path / "again" and load_encoder(str(out)).modality == "image"


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(SystemExit) as done:
        main([str(tmp_path / "notes.txt"), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err.startswith("lightning-transfer: error:") and "\n" not in err
