"""The hand-off from pretraining to fine-tuning: one description of an encoder, in checkpoints and exports.

The description says what was trained and how to rebuild it, in plain values::

    {"format": ENCODER_FORMAT,
     "kind": "simclr" | "bert" | "finetune",   # the module that trained it
     "modality": "image" | "text",
     "encoder": {...}}                          # its encoder_config without modality; None for a custom
                                                # backbone module, which no file can rebuild

- **Checkpoints.** ``SimCLRModule``, ``BertPretrainModule`` and ``FineTuneModule`` store
  :func:`encoder_marker` as ``checkpoint[HANDOFF_KEY]`` in ``on_save_checkpoint``: the description plus
  ``state_dict_prefix`` (where the encoder's weights sit in ``checkpoint["state_dict"]``) and
  ``tokenizer`` (``tokenizer.json`` content, or None). Plain values only, so the checkpoint still loads
  with ``torch.load(weights_only=True)``. :func:`encoder_from_checkpoint` reads it back.
- **Exports.** :func:`save_encoder` is the one writer of an encoder alone. An image encoder becomes a
  directory with ``encoder.safetensors`` (the weights, keys of ``encoder.state_dict()``) and
  ``encoder.json`` (the description), read without pickle by :func:`read_export_directory`; a text
  encoder becomes a Hugging Face BERT directory (``config.json``, ``model.safetensors``, the tokenizer
  files), which ``transformers`` loads too.

:func:`~lightning_transfer.models.loading.load_encoder` dispatches on these; files written before the
marker existed are converted by :mod:`lightning_transfer.models.legacy_checkpoints`. Bad input raises
:class:`~lightning_transfer.errors.UserInputError` with one line naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lightning_transfer.errors import UserInputError, require
from lightning_transfer.models.bert import BertModel
from lightning_transfer.models.encoder_config import MODALITIES, normalize_encoder_config

HANDOFF_KEY = "lightning_transfer"
"""``checkpoint[HANDOFF_KEY]`` holds the marker (BertPretrainModule's tokenizer too)."""
ENCODER_FORMAT = "lightning_transfer.encoder/v1"
KINDS = ("simclr", "bert", "finetune")
WEIGHTS_FILE = "encoder.safetensors"
DESCRIPTION_FILE = "encoder.json"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
EXPECTED = (
    "pass a SimCLRModule, BertPretrainModule or FineTuneModule checkpoint (.ckpt), an exported encoder, "
    "a Hugging Face BERT directory, or null to train from scratch"
)
"""What ``pretrained`` accepts: the end of every error about it."""
CUSTOM_BACKBONE = (
    "was trained with a custom backbone module, which cannot be rebuilt from a file; "
    "build FineTuneModule around that module yourself"
)


class EncoderSource(NamedTuple):
    """An encoder as a file describes it: ready for :func:`~lightning_transfer.models.encoder_config.build_encoder`."""

    kind: str
    config: dict[str, Any]  # the normalized encoder_config
    state: dict[str, torch.Tensor] | None  # its weights, keys without prefix (None: not read)
    tokenizer: str | None  # tokenizer.json content or a tokenizer path, when the file records one


def encoder_description(kind: str, modality: str, encoder_config: dict[str, Any] | None) -> dict[str, Any]:
    """``{"format", "kind", "modality", "encoder"}`` for an encoder of ``kind``; ``encoder_config``
    None means a custom module (recorded as ``"encoder": None``)."""
    require(kind in KINDS, f"unknown encoder kind {kind!r}; one of {', '.join(KINDS)}")
    encoder = None
    if encoder_config is not None:
        encoder = normalize_encoder_config({"modality": modality, **encoder_config})
        require(encoder.pop("modality") == modality, f"encoder_config.modality differs from {modality}")
    return {"format": ENCODER_FORMAT, "kind": kind, "modality": modality, "encoder": encoder}


def encoder_marker(
    kind: str, modality: str, encoder_config: dict[str, Any] | None, state_dict_prefix: str, tokenizer: Any = None
) -> dict[str, Any]:
    """What a module stores as ``checkpoint[HANDOFF_KEY]`` in ``on_save_checkpoint``: the
    :func:`encoder_description`, ``state_dict_prefix`` (e.g. ``"backbone."``) and the
    ``tokenizers.Tokenizer`` ``tokenizer`` as its JSON string (or None)."""
    return {
        **encoder_description(kind, modality, encoder_config),
        "state_dict_prefix": state_dict_prefix,
        "tokenizer": tokenizer.to_str() if tokenizer is not None else None,
    }


def is_marked(checkpoint: dict) -> bool:
    """Whether a Lightning checkpoint carries the current marker."""
    marker = checkpoint.get(HANDOFF_KEY)
    return isinstance(marker, dict) and marker.get("format") == ENCODER_FORMAT


def encoder_config_of(description: dict[str, Any], path: Path) -> dict[str, Any]:
    """The normalized encoder_config of a description (marker or ``encoder.json``) read from ``path``."""
    modality, encoder = description.get("modality"), description.get("encoder")
    require(
        description.get("kind") in KINDS and modality in MODALITIES,
        f"pretrained={path}: its encoder description has kind={description.get('kind')!r}, "
        f"modality={modality!r}; re-export or re-save it with this version",
    )
    require(
        encoder is not None,
        f"pretrained={path} {CUSTOM_BACKBONE}"
        if modality == "image"
        else f"pretrained={path} was saved before its model was built (vocab_size unknown) and holds no encoder",
    )
    if not isinstance(encoder, dict):
        raise UserInputError(f"pretrained={path}: its encoder description is not a dict; re-export or re-save it")
    return normalize_encoder_config({**encoder, "modality": modality})


def strip_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a module wrapped by ``torch.compile`` carry ``_orig_mod.``; drop it."""
    return {key.replace("_orig_mod.", ""): value for key, value in state.items()}


def encoder_from_checkpoint(marker: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path) -> EncoderSource:
    """The encoder a Lightning checkpoint's ``marker`` describes, with its weights taken from
    ``state_dict`` under ``marker["state_dict_prefix"]`` (prefix removed)."""
    config = encoder_config_of(marker, path)
    require(len(state_dict) > 0, f"pretrained={path} is a checkpoint without weights (empty state_dict); re-save it")
    prefix = marker.get("state_dict_prefix") or ""
    state = {
        key[len(prefix) :]: value for key, value in strip_compile_prefix(state_dict).items() if key.startswith(prefix)
    }
    require(
        len(state) > 0,
        f"pretrained={path}: no weights under {prefix!r}, where its marker puts the encoder; "
        "the file is damaged or was edited",
    )
    return EncoderSource(marker["kind"], config, state, marker.get("tokenizer"))


def save_encoder(
    directory: str | Path,
    encoder: nn.Module,
    encoder_config: dict[str, Any],
    kind: str | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write ``encoder`` alone into ``directory`` (created) and return it; ``encoder_config`` describes
    its architecture. Image encoders: ``encoder.safetensors`` + ``encoder.json`` (``kind`` defaults to
    ``simclr``). Text encoders (a ``BertModel``): a Hugging Face directory, with the tokenizer files when
    ``tokenizer`` (a ``tokenizers.Tokenizer``) is given. Raises :class:`UserInputError` when
    ``directory`` is an existing file or ends in a PyTorch file suffix (``.pt``...): the export is a directory."""
    directory = Path(directory)
    require(
        directory.suffix not in TORCH_SUFFIXES,
        f"{directory}: an exported encoder is a directory (weights in safetensors, a JSON description); "
        f"name it without the {directory.suffix} suffix",
    )
    require(not directory.is_file(), f"{directory} is a file; an exported encoder is a directory: name a new one")
    config = normalize_encoder_config(encoder_config)
    if config["modality"] == "text":
        if not isinstance(encoder, BertModel):
            raise UserInputError(f"a text encoder is a BertModel, not a {type(encoder).__name__}")
        written = Path(encoder.save_pretrained(directory))
        if tokenizer is not None:
            from lightning_transfer.data.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, written, model_max_length=config["max_position_embeddings"])
        return written
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {key: value.detach().cpu().contiguous().clone() for key, value in encoder.state_dict().items()},
        directory / WEIGHTS_FILE,
    )
    description = encoder_description(kind or "simclr", "image", config)
    (directory / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return directory


def read_export_directory(directory: Path, with_weights: bool = True) -> EncoderSource:
    """The encoder that :func:`save_encoder` wrote into ``directory``: description from
    ``encoder.json``, weights (when ``with_weights``) from ``encoder.safetensors``. Nothing is unpickled."""
    try:
        description = json.loads((directory / DESCRIPTION_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:  # unreadable or not JSON: one message
        raise UserInputError(
            f"pretrained={directory}: {DESCRIPTION_FILE} is not readable JSON ({type(err).__name__}); "
            "re-export the encoder"
        ) from None
    require(
        isinstance(description, dict) and description.get("format") == ENCODER_FORMAT,
        f"pretrained={directory}: {DESCRIPTION_FILE} is not a {ENCODER_FORMAT} description; re-export the encoder",
    )
    config = encoder_config_of(description, directory)
    state = None
    if with_weights:
        weights = directory / WEIGHTS_FILE
        require(
            weights.is_file(),
            f"pretrained={directory} has {DESCRIPTION_FILE} but no {WEIGHTS_FILE}; re-export the encoder",
        )
        try:
            state = load_file(weights)
        except (SafetensorError, OSError) as err:  # truncated or not safetensors: one message
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserInputError(
                f"pretrained={weights} is not a readable safetensors file ({first}); re-export the encoder"
            ) from None
    return EncoderSource(description["kind"], config, state, None)
