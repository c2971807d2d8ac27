"""The encoder a fine-tuning run starts from: :func:`load_encoder` turns ``pretrained`` (a path, an alias
such as ``minilm_demo``, or ``None``) into ``(encoder, modality, feature_dim, info)``.

It dispatches on what the file says about itself, never on the caller and never on weight names:

=================================================  ==============================================================
``pretrained``                                     read as
=================================================  ==============================================================
a directory with ``encoder.json``                  an exported encoder (safetensors + JSON description;
                                                   :func:`~lightning_transfer.models.encoder_handoff.save_encoder`)
another directory                                  a Hugging Face BERT directory (``config.json`` + weights)
a Lightning checkpoint with the hand-off marker    the encoder the marker describes
                                                   (:mod:`~lightning_transfer.models.encoder_handoff`)
a Lightning checkpoint without it, a ``.pt``       a file from before the marker
exported encoder                                   (:mod:`~lightning_transfer.models.legacy_checkpoints`)
=================================================  ==============================================================

The architecture is rebuilt from what the file records
(:func:`~lightning_transfer.models.encoder_config.build_encoder`); with ``init="scratch"`` the same
architecture gets fresh random weights: the from-scratch baseline. Every bad input raises
:class:`~lightning_transfer.errors.UserInputError` with one line naming the problem and the fix.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lightning_transfer.data.sources import resolve_path
from lightning_transfer.errors import UserInputError, require
from lightning_transfer.models.bert import BertConfig, load_weights, read_hf_checkpoint, strip_bert_prefix
from lightning_transfer.models.encoder_config import build_encoder, normalize_encoder_config
from lightning_transfer.models.encoder_handoff import (
    DESCRIPTION_FILE,
    ENCODER_FORMAT,
    EXPECTED,
    HANDOFF_KEY,
    EncoderSource,
    encoder_from_checkpoint,
    is_marked,
    read_export_directory,
)
from lightning_transfer.models.legacy_checkpoints import legacy_marker, read_torch_export

INITS = ("pretrained", "scratch")


class LoadedEncoder(NamedTuple):
    """What :func:`load_encoder` returns (unpacks as a 4-tuple)."""

    encoder: nn.Module
    modality: str  # "image" (B x C x H x W -> B x feature_dim) or "text" (ids -> B x L x hidden)
    feature_dim: int
    info: dict[str, Any]  # kind, source, path, init, config (the encoder_config to record), tokenizer


def _load_state(encoder: nn.Module, state: dict[str, torch.Tensor], config: dict[str, Any], source: Path) -> None:
    """Load ``state`` (already without module prefix) into ``encoder``; every encoder weight must be
    there with the right shape (BERT's pooler may be missing: it keeps its initialization)."""
    if config["modality"] == "text":
        load_weights(encoder, strip_bert_prefix(state), source, optional_prefixes=("pooler.",))
        return
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    mismatched = [key for key in own if key in state and state[key].shape != own[key].shape]
    if missing or mismatched:
        problem = f"missing {missing[0]}" if missing else f"shape mismatch at {mismatched[0]}"
        raise UserInputError(
            f"pretrained={source}: its weights do not fit the {config['backbone']} it describes "
            f"({problem}); the file is damaged or was edited"
        )
    encoder.load_state_dict({key: state[key] for key in own})


TRUST_HINT = (
    "it holds Python objects besides tensors and plain values, and loading it would run their pickled code; "
    "load only files you trust, and opt in with trust_checkpoint=True (CLI: --model.init_args.trust_checkpoint true; "
    "export: --trust-checkpoint)"
)


def read_torch_file(path: Path, trust_checkpoint: bool = False, what: str = "pretrained") -> Any:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``: tensors and plain Python values
    only, which is how every checkpoint and export of lightning-transfer is written. A file that needs
    full unpickling (it could run code) is a :class:`UserInputError` unless ``trust_checkpoint``."""
    require(path.stat().st_size > 0, f"{what}={path} is an empty file (0 bytes); the save was interrupted: {EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # not a refused Python object: a damaged file
            raise UserInputError(
                f"{what}={path} is not a readable PyTorch checkpoint (UnpicklingError: "
                f"{str(err).splitlines()[0] if str(err) else ''}); is it corrupt or truncated? {EXPECTED}"
            ) from None
    except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file, ...: all one message
        raise UserInputError(
            f"{what}={path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); is it corrupt or truncated? {EXPECTED}"
        ) from None
    require(trust_checkpoint, f"{what}={path} cannot be loaded safely: {TRUST_HINT}")
    warnings.warn(f"{path} is unpickled in full (trust_checkpoint=True)", stacklevel=3)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a trusted file that still fails to unpickle (missing class, corrupt): one message
        raise UserInputError(
            f"{what}={path} is not a readable PyTorch checkpoint ({type(err).__name__}); {EXPECTED}"
        ) from None


def _read_directory(path: Path, init: str) -> tuple[str, EncoderSource]:
    """``(source, encoder)`` of an exported-encoder directory or a Hugging Face BERT directory."""
    if (path / DESCRIPTION_FILE).is_file():
        return "encoder_directory", read_export_directory(path, with_weights=init == "pretrained")
    tokenizer = str(path) if any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")) else None
    state = None
    if init == "scratch":  # the architecture only: config.json, weights not read
        require((path / "config.json").is_file(), f"pretrained={path} is a directory without config.json; {EXPECTED}")
        bert = BertConfig.from_json_file(path / "config.json")
    else:
        bert, state = read_hf_checkpoint(path)
    return "hf_directory", EncoderSource(
        "bert", normalize_encoder_config({"modality": "text", **bert.to_dict()}), state, tokenizer
    )


def _read_file(path: Path, trust_checkpoint: bool) -> tuple[str, EncoderSource]:
    """``(source, encoder)`` of a Lightning checkpoint or a ``.pt`` exported encoder."""
    payload = read_torch_file(path, trust_checkpoint)
    require(
        isinstance(payload, dict), f"pretrained={path} holds a {type(payload).__name__}, not a checkpoint; {EXPECTED}"
    )
    if payload.get("format") == ENCODER_FORMAT:
        return "encoder_file", read_torch_export(payload, path)
    if isinstance(payload.get("state_dict"), dict):
        marker = payload[HANDOFF_KEY] if is_marked(payload) else legacy_marker(payload, path)
        return "lightning_checkpoint", encoder_from_checkpoint(marker, payload["state_dict"], path)
    keys = ", ".join(sorted(map(str, payload))[:5]) or "nothing"
    raise UserInputError(
        f"pretrained={path} is neither a Lightning checkpoint nor an exported encoder (it holds {keys}); {EXPECTED}"
    )


def load_encoder(
    pretrained: str | Path | None,
    init: str = "pretrained",
    encoder_config: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
) -> LoadedEncoder:
    """Rebuild the encoder that ``pretrained`` describes; load its weights when ``init="pretrained"``.

    ``pretrained``: a Lightning checkpoint of :class:`~lightning_transfer.SimCLRModule`,
    :class:`~lightning_transfer.BertPretrainModule` or :class:`~lightning_transfer.FineTuneModule`, an
    exported encoder (``SimCLRModule.export_encoder``, ``python -m lightning_transfer.export``; also the
    ``.pt`` files earlier versions wrote), a local Hugging Face BERT directory, an alias from
    :data:`~lightning_transfer.data.sources.PATH_ALIASES`, or ``None``: then ``encoder_config`` gives the
    architecture and the weights are random. ``init="scratch"`` keeps the architecture of ``pretrained``
    with fresh random weights (the baseline that isolates what pretraining contributed).

    PyTorch files are read with ``torch.load(weights_only=True)``; one that needs full unpickling (it
    could run code) raises unless ``trust_checkpoint=True`` (see :func:`read_torch_file`). Exported
    encoders and Hugging Face directories are safetensors and JSON: nothing is unpickled.

    ``info`` holds ``kind`` (simclr / bert / finetune / scratch), ``source`` (lightning_checkpoint /
    encoder_directory / encoder_file / hf_directory / encoder_config), ``path``, ``init``, ``config``
    (the normalized encoder_config, enough for :func:`build_encoder` to rebuild the architecture) and
    ``tokenizer`` (what :func:`pretrained_tokenizer` reads, or ``None``).

    Raises :class:`UserInputError` for: a missing path, an empty or unreadable file, a file of another
    kind, weights that do not fit the recorded architecture, ``pretrained=None`` without
    ``encoder_config``, an unknown ``init``.
    """
    require(init in INITS, f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if pretrained is None:
        if encoder_config is None:
            raise UserInputError(
                "pretrained=null needs encoder_config to know which architecture to train from scratch, e.g. "
                "{backbone: convnet, in_channels: 1, small_images: true} or BertConfig fields; "
                "or pass pretrained=<checkpoint>"
            )
        config = normalize_encoder_config(encoder_config)
        encoder, dim = build_encoder(config)
        info = {
            "kind": "scratch",
            "source": "encoder_config",
            "path": None,
            "init": "scratch",
            "config": config,
            "tokenizer": None,
        }
        return LoadedEncoder(encoder, config["modality"], dim, info)

    path = resolve_path(pretrained, what="pretrained", expected=EXPECTED)
    source, found = _read_directory(path, init) if path.is_dir() else _read_file(path, trust_checkpoint)
    encoder, dim = build_encoder(found.config)
    if init == "pretrained" and found.state is not None:  # every reader reads the weights for init="pretrained"
        _load_state(encoder, found.state, found.config, path)
    info = {
        "kind": found.kind,
        "source": source,
        "path": str(path),
        "init": init,
        "config": found.config,
        "tokenizer": found.tokenizer,
    }
    return LoadedEncoder(encoder, found.config["modality"], dim, info)


def pretrained_tokenizer(info: dict[str, Any]):
    """The ``tokenizers.Tokenizer`` the encoder of ``info`` (from :func:`load_encoder`) was pretrained
    with, when the source records one (a Hugging Face directory with tokenizer files, a
    BertPretrainModule checkpoint); else ``None``."""
    stored = info.get("tokenizer")
    if stored is None:
        return None
    if stored.lstrip().startswith("{"):  # tokenizer.json content stored in a checkpoint
        from tokenizers import Tokenizer

        return Tokenizer.from_str(stored)
    from lightning_transfer.data.tokenizer import load_tokenizer

    return load_tokenizer(stored)
