"""Local Hugging Face BERT directories: ``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``
(or a sharded ``*.index.json``).

- :func:`read_hf_checkpoint`: ``(BertConfig, raw state dict)`` of a directory.
- :func:`strip_bert_prefix`, :func:`bert_model_state`, :func:`bert_for_pretraining_state`: checkpoint
  keys (with or without the ``bert.`` prefix of ``BertForPreTraining`` / ``BertForSequenceClassification``
  checkpoints) renamed to :class:`~lightning_transfer.models.bert.BertModel`'s or
  :class:`~lightning_transfer.models.bert.BertForPretraining`'s.
- :func:`load_weights`: ``load_state_dict`` that names what is missing or mis-shaped.
- :func:`write_hf_checkpoint`: ``config.json`` and ``model.safetensors`` that ``transformers`` loads.

The ``from_pretrained`` / ``save_pretrained`` methods of both models are made of these functions.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from lightning_transfer.errors import UserInputError, require
from lightning_transfer.models.bert_config import BertConfig

WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"


def read_hf_checkpoint(directory: str | Path) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """``(config, raw state dict)`` of a local Hugging Face BERT directory; :class:`UserInputError`
    when the directory, its config.json or its weights are missing or not a BERT."""
    directory = Path(directory)
    require(
        directory.is_dir(),
        f"{directory} is not a directory; pass a local Hugging Face BERT directory "
        "(config.json plus model.safetensors or pytorch_model.bin)",
    )
    require(
        (directory / "config.json").is_file(), f"{directory} has no config.json; pass a Hugging Face BERT directory"
    )
    config = BertConfig.from_json_file(directory / "config.json")
    for name in (WEIGHTS_NAME, WEIGHTS_NAME + ".index.json", LEGACY_WEIGHTS_NAME, LEGACY_WEIGHTS_NAME + ".index.json"):
        if (directory / name).is_file():
            return config, _read_weights(directory / name)
    raise UserInputError(
        f"{directory} has no {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME}; "
        "pass a Hugging Face BERT directory with its weights"
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.name.endswith(".index.json"):  # sharded: {"weight_map": {key: shard file}}
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {key: value for shard in shards for key, value in _read_weights(path.parent / shard).items()}
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
        # what a corrupt or truncated file raises: torch's zip reader (RuntimeError), pickle, safetensors
        raise UserInputError(
            f"could not read weights from {path} ({type(err).__name__}: {err}); re-download or re-save it"
        ) from None


def strip_bert_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``bert.`` prefix, rename old TF-converted ``LayerNorm.gamma/beta`` and remove buffers
    Hugging Face stores but we compute (``embeddings.position_ids``)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("bert.")
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.endswith("position_ids"):
            continue
        out[key] = value
    return out


def bert_model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's encoder weights keyed as ``BertModel``'s: :func:`strip_bert_prefix`, and no
    ``cls.*`` task heads."""
    return {key: value for key, value in strip_bert_prefix(state).items() if not key.startswith("cls.")}


def bert_for_pretraining_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights keyed as ``BertForPretraining``'s: the encoder under ``bert.`` (whether or
    not the file has the prefix), the ``cls.*`` heads as they are, and no stored
    ``cls.predictions.decoder.*`` copy (the decoder is tied to the word embeddings)."""
    state = {key if key.startswith("cls.") else f"bert.{key}": value for key, value in strip_bert_prefix(state).items()}
    return {key: value for key, value in state.items() if not key.startswith("cls.predictions.decoder.")}


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, optional_prefixes: tuple[str, ...] = ()
) -> None:
    """``model.load_state_dict(state)`` that tolerates missing keys under ``optional_prefixes`` (they keep
    their initialization) and ignores checkpoint keys the model does not have (task heads); a missing
    encoder weight or a shape mismatch raises :class:`UserInputError`."""
    own = model.state_dict()
    mismatched = [
        f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
        for key, value in state.items()
        if key in own and value.shape != own[key].shape
    ]
    require(
        not mismatched,
        f"{source}: weight shapes differ from its config.json: {', '.join(mismatched[:3])}; "
        "the weights and config.json do not belong together",
    )
    result = model.load_state_dict({key: value for key, value in state.items() if key in own}, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(optional_prefixes)]
    require(
        not missing,
        f"{source} lacks {len(missing)} encoder weights (e.g. {missing[0] if missing else ''}); "
        "it is not a BERT checkpoint this loader understands",
    )
    if any(key.startswith("pooler.") or key.startswith("bert.pooler.") for key in result.missing_keys):
        warnings.warn(f"{source} has no pooler weights; the pooler keeps its random initialization", stacklevel=3)


def write_hf_checkpoint(
    directory: str | Path, config: BertConfig, state: dict[str, torch.Tensor], architecture: str
) -> Path:
    """Write ``config.json`` (``model_type: bert``, ``architectures``) and ``model.safetensors``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = {
        "architectures": [architecture],
        "model_type": "bert",
        **config.to_dict(),
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


__all__ = [
    "LEGACY_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "bert_for_pretraining_state",
    "bert_model_state",
    "load_weights",
    "read_hf_checkpoint",
    "strip_bert_prefix",
    "write_hf_checkpoint",
]
