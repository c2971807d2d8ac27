"""Export the encoder of a run for use outside Lightning.

``python -m lightning_transfer.export SOURCE OUT``

``SOURCE`` is a run directory (its ``best_checkpoint.txt``, written by ``lightning-transfer fit``,
names the checkpoint) or any checkpoint :class:`~lightning_transfer.FineTuneModule` accepts: a
SimCLR, BERT pretraining or fine-tuning Lightning checkpoint, or an exported encoder. ``OUT`` is a
directory, written by :func:`~lightning_transfer.models.encoder_handoff.save_encoder`: for an image
encoder ``encoder.safetensors`` (the weights) + ``encoder.json`` (how to rebuild it), loadable without
pickle; for a text encoder a Hugging Face directory (``config.json``, ``model.safetensors`` and the
tokenizer files), which ``transformers.BertModel`` / ``AutoTokenizer`` load. ``FineTuneModule(pretrained=OUT)``
reads both. A fine-tuning checkpoint exports its fine-tuned encoder (the classification head is left
out) with the tokenizer its data used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning_transfer.cli import best_checkpoint_of
from lightning_transfer.data.sources import resolve_path
from lightning_transfer.errors import UserInputError


def resolve_checkpoint(source: str | Path) -> Path:
    """``source`` itself, or for a run directory the checkpoint its ``best_checkpoint.txt`` names."""
    path = resolve_path(source)
    return (best_checkpoint_of(path) if path.is_dir() else None) or path


def _data_tokenizer(checkpoint: Path, trust_checkpoint: bool = False):
    """The tokenizer a fine-tuning run's DataModule used (Lightning stores the DataModule's
    hyperparameters in its checkpoints), when that path still exists; else ``None``."""
    from lightning_transfer.data.tokenizer import load_tokenizer
    from lightning_transfer.models.loading import read_torch_file

    if checkpoint.is_dir():
        return None
    stored = read_torch_file(checkpoint, trust_checkpoint, what="source")
    path = (stored.get("datamodule_hyper_parameters") or {}).get("tokenizer") if isinstance(stored, dict) else None
    path = resolve_path(path) if path else None  # an alias such as minilm_demo, or a path
    return load_tokenizer(path) if path is not None and path.exists() else None


def export_encoder(source: str | Path, out: str | Path, trust_checkpoint: bool = False) -> Path:
    """Write the encoder of ``source`` to ``out`` (see the module docstring). Returns ``out``.
    ``trust_checkpoint``: allow a file that needs full unpickling (only for files you trust)."""
    from lightning_transfer.models.encoder_handoff import save_encoder
    from lightning_transfer.models.loading import load_encoder, pretrained_tokenizer

    checkpoint = resolve_checkpoint(source)
    loaded = load_encoder(str(checkpoint), trust_checkpoint=trust_checkpoint)
    tokenizer = None
    if loaded.modality == "text":
        tokenizer = pretrained_tokenizer(loaded.info) or _data_tokenizer(checkpoint, trust_checkpoint)
    return save_encoder(out, loaded.encoder, loaded.info["config"], kind=loaded.info["kind"], tokenizer=tokenizer)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lightning_transfer.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run directory (with best_checkpoint.txt) or a checkpoint file")
    parser.add_argument(
        "out",
        help="the directory to write: encoder.safetensors + encoder.json (images), a Hugging Face directory (text)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint that needs full unpickling, which can run code: only for files you trust "
        "(every checkpoint lightning-transfer writes loads without it)",
    )
    parsed = parser.parse_args(args)
    try:
        written = export_encoder(parsed.source, parsed.out, parsed.trust_checkpoint)
    except UserInputError as err:
        print(f"lightning-transfer: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    print(f"exported the encoder of {resolve_checkpoint(parsed.source)} to {written}")


if __name__ == "__main__":
    main()
