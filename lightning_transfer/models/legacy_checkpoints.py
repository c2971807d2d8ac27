"""Files written before the hand-off marker (:mod:`~lightning_transfer.models.encoder_handoff`): read,
converted to today's description, never written.

- A ``.pt`` exported encoder: ``torch.save`` of ``{"format": ENCODER_FORMAT, "kind", "modality",
  "encoder", "state_dict"}``, what ``SimCLRModule.export_encoder`` and ``save_encoder`` wrote before the
  safetensors export. :func:`read_torch_export` reads it.
- A Lightning checkpoint without the marker. :func:`legacy_marker` gives the marker its module writes
  today, from what that module stored then:

  ======================  ==================================================================
  module                  what its checkpoints held
  ======================  ==================================================================
  BertPretrainModule      ``checkpoint["lightning_transfer"] == {"kind": "bert_pretrain",
                          "modality": "text", "tokenizer"}``; the BertConfig fields flat in
                          ``hyper_parameters``; the encoder under ``model.bert.``
  FineTuneModule          ``hyper_parameters["encoder_config"]``; the encoder under ``encoder.``
  SimCLRModule            ``hyper_parameters["backbone"]`` (a name, or None for a custom module),
                          ``in_channels``, ``small_images``, ``width``; the encoder under ``backbone.``
  ======================  ==================================================================

  Any other checkpoint is a :class:`~lightning_transfer.errors.UserInputError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_transfer.errors import UserInputError, require
from lightning_transfer.models.encoder_config import BERT_FIELDS, IMAGE_DEFAULTS, MODALITIES
from lightning_transfer.models.encoder_handoff import (
    EXPECTED,
    HANDOFF_KEY,
    KINDS,
    EncoderSource,
    encoder_config_of,
    encoder_marker,
    strip_compile_prefix,
)

BERT_PRETRAIN_KIND = "bert_pretrain"  # the kind BertPretrainModule's old marker recorded
DEFAULT_KIND = {"image": "simclr", "text": "bert"}


def legacy_marker(checkpoint: dict, path: Path) -> dict[str, Any]:
    """The marker (:func:`~lightning_transfer.models.encoder_handoff.encoder_marker`) that the module
    which wrote ``checkpoint`` (a Lightning checkpoint without one) stores today."""
    stored = checkpoint.get("hyper_parameters") or {}
    hparams = dict(stored.items()) if hasattr(stored, "items") else {}
    old = checkpoint.get(HANDOFF_KEY)
    if isinstance(old, dict) and old.get("kind") == BERT_PRETRAIN_KIND:
        sizes = {key: hparams[key] for key in BERT_FIELDS if hparams.get(key) is not None}
        require(
            "vocab_size" in sizes and "hidden_size" in sizes and "num_attention_heads" in sizes,
            f"pretrained={path}: a BertPretrainModule checkpoint whose hyperparameters do not record its sizes "
            "(vocab_size, hidden_size, num_attention_heads); export a Hugging Face directory from it instead",
        )
        return {**encoder_marker("bert", "text", sizes, "model.bert."), "tokenizer": old.get("tokenizer")}
    if isinstance(hparams.get("encoder_config"), dict):
        config = hparams["encoder_config"]
        modality = config.get("modality") or ("image" if "backbone" in config else "text")
        return encoder_marker("finetune", modality, config, "encoder.")
    if "backbone" in hparams:
        backbone = hparams["backbone"]
        config = None
        if isinstance(backbone, str):  # else a custom module: recorded as such, refused when read
            config = {"backbone": backbone, **{key: hparams[key] for key in IMAGE_DEFAULTS if key in hparams}}
        return encoder_marker("simclr", "image", config, "backbone.")
    some = ", ".join(sorted({key.split(".")[0] for key in checkpoint.get("state_dict", {})})[:5]) or "none"
    raise UserInputError(
        f"pretrained={path} is a Lightning checkpoint of an unsupported model (weights under {some}); {EXPECTED}"
    )


def read_torch_export(payload: dict, path: Path) -> EncoderSource:
    """The encoder of a ``.pt`` exported-encoder file, already loaded as ``payload``."""
    kind = str(payload.get("kind"))
    modality = str(payload.get("modality") or DEFAULT_KIND.get(kind))
    encoder, state = payload.get("encoder"), payload.get("state_dict")
    if not (modality in MODALITIES and isinstance(encoder, dict | None) and isinstance(state, dict) and state):
        raise UserInputError(
            f"pretrained={path} is an exported encoder without modality, encoder description or weights; re-export it"
        )
    if modality == "image" and encoder is not None:  # also recorded feature_dim, which the backbone name fixes
        encoder = {key: encoder[key] for key in ("backbone", *IMAGE_DEFAULTS) if key in encoder}
        if encoder.get("backbone") is None:  # export_encoder of a custom module wrote backbone=None
            encoder = None
    kind = kind if kind in KINDS else DEFAULT_KIND[modality]
    config = encoder_config_of({"kind": kind, "modality": modality, "encoder": encoder}, path)
    return EncoderSource(kind, config, strip_compile_prefix(state), None)
