"""Every notebook in notebooks/ runs top to bottom in quick mode and writes the plots it shows.

Each notebook is executed by nbclient in a fresh kernel of *this* interpreter (a kernelspec written
for the test, so a ``python3`` kernelspec installed elsewhere cannot pick another Python), with
``LT_NOTEBOOK_QUICK=1`` (small step counts) and ``LT_NOTEBOOK_OUTPUT`` pointing at the test's tmp dir.
The working directory is notebooks/, as in Jupyter. A failing cell fails the test with its traceback.
"""
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "lightning-transfer-test"
CELL_TIMEOUT_S = 300

# The PNG files each notebook writes under $LT_NOTEBOOK_OUTPUT (and displays).
EXPECTED_PLOTS = {
    "01_simclr_pretrain_finetune": [
        "01_simclr/simclr_views.png", "01_simclr/simclr_curves.png", "01_simclr/embedding_simclr.png",
        "01_simclr/embedding_random.png", "01_simclr/label_efficiency.png", "01_simclr/confusion_matrix.png",
    ],
    "02_bert_pretrain_finetune": [
        "02_bert/mlm_curves.png", "02_bert/label_efficiency.png", "02_bert/confusion_matrix_minilm.png",
    ],
    "03_use_in_your_project": [
        "03_your_project/my_images.png", "03_your_project/shapes_confusion.png",
        "03_your_project/finetune_reviews_curves.png",
    ],
}


def kernel_manager(kernel_dir: Path) -> KernelManager:
    """A KernelManager whose only kernelspec runs ipykernel with ``sys.executable``."""
    spec = kernel_dir / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lightning-transfer tests", "language": "python",
    }))
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))


def test_every_notebook_lists_the_plots_it_writes():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    assert sorted(path.stem for path in NOTEBOOKS) == sorted(EXPECTED_PLOTS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom_in_quick_mode_and_writes_its_plots(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert 'QUICK = os.environ.get("LT_NOTEBOOK_QUICK", "0") == "1"' in first_code.source

    output = tmp_path / "output"
    env = {**os.environ, "LT_NOTEBOOK_QUICK": "1", "LT_NOTEBOOK_OUTPUT": str(output),
           "OMP_NUM_THREADS": "1",  # two test workers on two cores: no OpenMP spin-waiting against each other
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    client = NotebookClient(notebook, km=kernel_manager(tmp_path / "kernels"), timeout=CELL_TIMEOUT_S,
                            startup_timeout=120, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute(env=env)  # raises CellExecutionError (cell source + traceback) when a cell fails

    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if output.output_type == "error"]
    assert not errors
    for relative in EXPECTED_PLOTS[path.stem]:
        plot = output / relative
        assert plot.is_file(), f"{path.name} did not write {relative}"
        assert plot.read_bytes()[:4] == b"\x89PNG"
    shown = sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
                for output in cell.get("outputs", []))
    assert shown >= len(EXPECTED_PLOTS[path.stem])  # the plots are displayed, not only written
