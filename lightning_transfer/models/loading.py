"""The encoder a fine-tuning run starts from: where it comes from, and how it splits into blocks.

- :func:`load_encoder` turns ``pretrained`` (a path, an alias such as ``minilm_demo``, or ``None``)
  into ``(encoder, modality, feature_dim, info)``. It reads what kind of file it was given from the
  file itself, never from the caller:

  ========================================  =========================================================
  what ``pretrained`` points at             how it is recognized
  ========================================  =========================================================
  a directory                               a Hugging Face BERT directory (``config.json`` + weights)
  an exported encoder file                  a dict with ``format == ENCODER_FORMAT``
  a Lightning checkpoint (``.ckpt``)        ``state_dict`` + ``hyper_parameters``; SimCLR when the
                                            keys start with ``backbone.`` and the hyperparameters
                                            name a ``backbone``; BERT when BertPretrainModule's
                                            marker says so or a key ends with
                                            ``embeddings.word_embeddings.weight``; a fine-tuned model
                                            when the hyperparameters hold an ``encoder_config``
  ========================================  =========================================================

  The architecture is rebuilt from what the file records (no class arguments needed); with
  ``init="scratch"`` the same architecture gets fresh random weights: the from-scratch baseline.
- :func:`build_encoder` rebuilds an encoder from an ``encoder_config`` dict, the architecture record
  a :class:`~lightning_transfer.modules.finetune.FineTuneModule` keeps in its hyperparameters:
  ``{"modality": "image", "backbone", "in_channels", "small_images", "width"}`` or
  ``{"modality": "text", <BertConfig fields>}``.
- :func:`encoder_blocks` lists an encoder's blocks bottom to top (BERT: embeddings, then each
  layer; ResNet: the stem, then ``layer1..layer4``; the small convnet: its four stages). Partial
  freezing, gradual unfreezing and layer-wise LR decay all read this one list.
- :func:`save_encoder` writes the exported-encoder format (the SimCLR export writes the same).

Every bad input raises :class:`~lightning_transfer.errors.UserInputError` with one line naming the
problem and the fix.
"""
from __future__ import annotations

import dataclasses
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from lightning_transfer.errors import UserInputError, require
from lightning_transfer.models.bert import BertConfig, BertModel, load_weights, read_hf_checkpoint, strip_bert_prefix
from lightning_transfer.models.vision import BACKBONES, ConvNet, build_backbone

ENCODER_FORMAT = "lightning_transfer.encoder/v1"  # same value as SimCLRModule's export
MODALITIES = ("image", "text")
INITS = ("pretrained", "scratch")
KIND_MODALITY = {"simclr": "image", "bert": "text"}
IMAGE_DEFAULTS = {"in_channels": 3, "small_images": False, "width": 32}
BERT_FIELDS = tuple(field.name for field in dataclasses.fields(BertConfig))
WORD_EMBEDDINGS_KEY = "embeddings.word_embeddings.weight"
CHECKPOINT_MARKER = "lightning_transfer"  # {"kind", "modality", "tokenizer"}: written by BertPretrainModule
EXPECTED = ("pass a SimCLRModule or BertPretrainModule checkpoint (.ckpt), an exported encoder file, "
            "a Hugging Face BERT directory, or null to train from scratch")


class LoadedEncoder(NamedTuple):
    """What :func:`load_encoder` returns (unpacks as a 4-tuple)."""

    encoder: nn.Module
    modality: str  # "image" (B x C x H x W -> B x feature_dim) or "text" (ids -> B x L x hidden)
    feature_dim: int
    info: dict[str, Any]  # kind, source, path, init and config (the encoder_config to record)


def resolve_pretrained(pretrained: str | Path) -> Path:
    """``pretrained`` as a path: aliases (:data:`~lightning_transfer.data.sources.PATH_ALIASES`, e.g.
    ``minilm_demo``) resolved, ``~`` expanded. Raises :class:`UserInputError` when nothing exists there."""
    from lightning_transfer.data.sources import resolve_path

    path = resolve_path(pretrained)
    require(path.exists(), f"pretrained={pretrained}: no such file or directory; {EXPECTED}")
    return path


# ----------------------------------------------------------------------------------------------------
# Architecture records


def normalize_encoder_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate an ``encoder_config`` and fill its defaults. ``modality`` may be left out: a config
    with ``backbone`` is an image encoder, one with BERT fields (``hidden_size``...) a text encoder."""
    config = dict(config)
    modality = config.pop("modality", None) or ("image" if "backbone" in config else "text")
    config.pop("kind", None)
    require(modality in MODALITIES, f"encoder_config.modality={modality!r} is not one of {', '.join(MODALITIES)}")
    if modality == "image":
        unknown = sorted(set(config) - {"backbone", *IMAGE_DEFAULTS, "feature_dim"})
        require(not unknown, f"encoder_config has unknown image keys {unknown}; use backbone, in_channels, small_images, width")
        backbone = config.get("backbone")
        require(isinstance(backbone, str) and backbone.lower() in BACKBONES,
                f"encoder_config.backbone={backbone!r} cannot be rebuilt; use one of {', '.join(BACKBONES)}")
        config.pop("feature_dim", None)  # determined by the named backbone
        return {"modality": "image", **IMAGE_DEFAULTS, **config, "backbone": backbone.lower()}
    unknown = sorted(set(config) - set(BERT_FIELDS))
    require(not unknown, f"encoder_config has unknown BERT keys {unknown}; use BertConfig fields ({', '.join(BERT_FIELDS)})")
    return {"modality": "text", **BertConfig(**config).to_dict()}


def build_encoder(config: dict[str, Any]) -> tuple[nn.Module, int]:
    """A randomly initialized encoder for a (normalized) ``encoder_config``: ``(encoder, feature_dim)``.
    Text encoders are :class:`BertModel`; their ``feature_dim`` is ``hidden_size``."""
    config = normalize_encoder_config(config)
    if config["modality"] == "image":
        return build_backbone(config["backbone"], config["in_channels"], config["small_images"], None, None, config["width"])
    bert = BertConfig(**{key: config[key] for key in BERT_FIELDS})
    return BertModel(bert), bert.hidden_size


def _strip_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a ``torch.compile``-d module carry ``_orig_mod.``; drop it."""
    return {key.replace("_orig_mod.", ""): value for key, value in state.items()}


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
        raise UserInputError(f"pretrained={source}: its weights do not fit the {config['backbone']} it describes "
                             f"({problem}); the file is damaged or was edited")
    encoder.load_state_dict({key: state[key] for key in own})


# ----------------------------------------------------------------------------------------------------
# Reading files


TRUST_HINT = ("it holds Python objects besides tensors and plain values, and loading it would run their pickled code; "
              "load only files you trust, and opt in with trust_checkpoint=True (CLI: --model.init_args.trust_checkpoint true; "
              "export: --trust-checkpoint)")


def read_torch_file(path: Path, trust_checkpoint: bool = False, what: str = "pretrained") -> Any:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``: tensors and plain Python values
    only, which is how every checkpoint and export of lightning-transfer is written. A file that needs
    full unpickling (it could run code) is a :class:`UserInputError` unless ``trust_checkpoint``."""
    require(path.stat().st_size > 0, f"{what}={path} is an empty file (0 bytes); the save was interrupted: {EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # not a refused Python object: a damaged file
            raise UserInputError(f"{what}={path} is not a readable PyTorch checkpoint (UnpicklingError: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}); is it corrupt or truncated? {EXPECTED}") from None
    except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file, ...: all one message
        raise UserInputError(f"{what}={path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}); is it corrupt or truncated? {EXPECTED}") from None
    require(trust_checkpoint, f"{what}={path} cannot be loaded safely: {TRUST_HINT}")
    warnings.warn(f"{path} is unpickled in full (trust_checkpoint=True)", stacklevel=3)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise UserInputError(f"{what}={path} is not a readable PyTorch checkpoint ({type(err).__name__}); {EXPECTED}") from None


def _hyperparameters(checkpoint: dict) -> dict[str, Any]:
    hparams = checkpoint.get("hyper_parameters") or {}
    return dict(hparams.items()) if hasattr(hparams, "items") else {}


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def _bert_config_from_hparams(hparams: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """BertConfig fields from the checkpoint's hyperparameters: flat (BertPretrainModule's size
    arguments use the BertConfig names), or nested under ``config`` / ``bert_config``."""
    values: dict[str, Any] = {}
    for nested in ("config", "bert_config"):
        if isinstance(hparams.get(nested), dict):
            values.update(hparams[nested])
    values.update({key: hparams[key] for key in BERT_FIELDS if key in hparams and hparams[key] is not None})
    values = {key: value for key, value in values.items() if key in BERT_FIELDS and value is not None}
    require("num_attention_heads" in values and "hidden_size" in values,
            f"pretrained={path}: a BERT checkpoint whose hyperparameters do not record its sizes "
            "(num_attention_heads, hidden_size, ...); save it with BertPretrainModule, or export a Hugging Face directory")
    words = next(v for k, v in state.items() if k.endswith(WORD_EMBEDDINGS_KEY))
    values.setdefault("vocab_size", int(words.shape[0]))  # sizes the hyperparameters may leave to the data
    values.setdefault("num_hidden_layers", len({k.split("encoder.layer.")[1].split(".")[0] for k in state if "encoder.layer." in k}))
    return values


def _classify_lightning_checkpoint(checkpoint: dict, path: Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(kind, encoder_config, encoder state dict)`` of a Lightning checkpoint."""
    hparams = _hyperparameters(checkpoint)
    state = _strip_compile_prefix(checkpoint["state_dict"])
    require(len(state) > 0, f"pretrained={path} is a checkpoint without weights (empty state_dict); {EXPECTED}")
    marker = checkpoint.get(CHECKPOINT_MARKER) if isinstance(checkpoint.get(CHECKPOINT_MARKER), dict) else {}
    bert_pretrain = marker.get("kind") == "bert_pretrain"  # BertPretrainModule marks its checkpoints
    if not bert_pretrain and isinstance(hparams.get("encoder_config"), dict) and any(k.startswith("encoder.") for k in state):
        config = normalize_encoder_config(hparams["encoder_config"])  # a FineTuneModule: continue from it
        return "finetune", config, _sub_state(state, "encoder.")
    if not bert_pretrain and "backbone" in hparams and any(k.startswith("backbone.") for k in state):
        backbone = hparams["backbone"]
        require(isinstance(backbone, str),
                f"pretrained={path} was trained with a custom backbone module, which cannot be "
                "rebuilt from the checkpoint; build FineTuneModule around that module yourself")
        config = normalize_encoder_config({
            "modality": "image", "backbone": backbone,
            **{key: hparams[key] for key in IMAGE_DEFAULTS if key in hparams},
        })
        return "simclr", config, _sub_state(state, "backbone.")
    word_keys = [key for key in state if key.endswith(WORD_EMBEDDINGS_KEY)]
    if word_keys:
        prefix = min(word_keys, key=len)[: -len(WORD_EMBEDDINGS_KEY)]  # e.g. "model.bert."
        encoder_state = _sub_state(state, prefix)
        config = normalize_encoder_config({"modality": "text", **_bert_config_from_hparams(hparams, encoder_state, path)})
        return "bert", config, encoder_state
    some = ", ".join(sorted({key.split(".")[0] for key in state})[:5])
    raise UserInputError(f"pretrained={path} is a Lightning checkpoint of an unsupported model (weights under {some}); {EXPECTED}")


def _classify_export(payload: dict, path: Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    kind = payload.get("kind")
    modality = payload.get("modality") or KIND_MODALITY.get(kind)
    encoder, state = payload.get("encoder"), payload.get("state_dict")
    require(modality in MODALITIES and isinstance(encoder, dict) and isinstance(state, dict) and state,
            f"pretrained={path} is an exported encoder without modality, encoder description or weights; re-export it")
    if modality == "image":
        require(isinstance(encoder.get("backbone"), str),
                f"pretrained={path} exports a custom backbone module, which cannot be rebuilt from the file; "
                "build FineTuneModule around that module yourself")
        encoder = {key: encoder[key] for key in ("backbone", *IMAGE_DEFAULTS) if key in encoder}
    return kind or modality, normalize_encoder_config({"modality": modality, **encoder}), _strip_compile_prefix(state)


# ----------------------------------------------------------------------------------------------------
# The entry point


def load_encoder(pretrained: str | Path | None, init: str = "pretrained",
                 encoder_config: dict[str, Any] | None = None, trust_checkpoint: bool = False) -> LoadedEncoder:
    """Rebuild the encoder that ``pretrained`` describes; load its weights when ``init="pretrained"``.

    ``pretrained``: a Lightning checkpoint of :class:`~lightning_transfer.SimCLRModule`,
    :class:`~lightning_transfer.BertPretrainModule` (or a fine-tuned
    :class:`~lightning_transfer.FineTuneModule`), an exported encoder file (:func:`save_encoder`,
    ``SimCLRModule.export_encoder``), a local Hugging Face BERT directory, an alias from
    :data:`~lightning_transfer.data.sources.PATH_ALIASES`, or ``None``: then ``encoder_config`` gives the architecture and the
    weights are random. ``init="scratch"`` keeps the architecture of ``pretrained`` with fresh random
    weights (the baseline that isolates what pretraining contributed).

    Files are read with ``torch.load(weights_only=True)``; one that needs full unpickling (it could
    run code) raises unless ``trust_checkpoint=True`` (see :func:`read_torch_file`).

    ``info`` holds ``kind`` (simclr / bert / finetune / scratch), ``source`` (lightning_checkpoint /
    encoder_file / hf_directory / encoder_config), ``path``, ``init``, ``config`` (the normalized
    encoder_config, enough for :func:`build_encoder` to rebuild the architecture) and ``tokenizer``
    (what :func:`pretrained_tokenizer` reads, or ``None``).

    Raises :class:`UserInputError` for: a missing path, an empty or unreadable file, a file of another
    kind, weights that do not fit the recorded architecture, ``pretrained=None`` without
    ``encoder_config``, an unknown ``init``.
    """
    require(init in INITS, f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if pretrained is None:
        require(encoder_config is not None,
                "pretrained=null needs encoder_config to know which architecture to train from scratch, e.g. "
                "{backbone: convnet, in_channels: 1, small_images: true} or BertConfig fields; or pass pretrained=<checkpoint>")
        config = normalize_encoder_config(encoder_config)
        encoder, dim = build_encoder(config)
        info = {"kind": "scratch", "source": "encoder_config", "path": None, "init": "scratch", "config": config,
                "tokenizer": None}
        return LoadedEncoder(encoder, config["modality"], dim, info)

    path = resolve_pretrained(pretrained)
    state: dict[str, torch.Tensor] | None = None
    tokenizer: str | None = None  # a tokenizer path, or tokenizer.json content
    if path.is_dir():
        if any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
            tokenizer = str(path)
        if init == "scratch":  # the architecture only: config.json, weights not read
            require((path / "config.json").is_file(), f"pretrained={path} is a directory without config.json; {EXPECTED}")
            bert = BertConfig.from_json_file(path / "config.json")
        else:
            bert, state = read_hf_checkpoint(path)
        kind, source, config = "bert", "hf_directory", normalize_encoder_config({"modality": "text", **bert.to_dict()})
    else:
        payload = read_torch_file(path, trust_checkpoint)
        require(isinstance(payload, dict), f"pretrained={path} holds a {type(payload).__name__}, not a checkpoint; {EXPECTED}")
        if payload.get("format") == ENCODER_FORMAT:
            (kind, config, state), source = _classify_export(payload, path), "encoder_file"
        elif "state_dict" in payload and isinstance(payload["state_dict"], dict):
            (kind, config, state), source = _classify_lightning_checkpoint(payload, path), "lightning_checkpoint"
            marker = payload.get(CHECKPOINT_MARKER)
            tokenizer = marker.get("tokenizer") if isinstance(marker, dict) else None
        else:
            keys = ", ".join(sorted(map(str, payload))[:5]) or "nothing"
            raise UserInputError(f"pretrained={path} is neither a Lightning checkpoint nor an exported encoder (it holds {keys}); {EXPECTED}")

    encoder, dim = build_encoder(config)
    if init == "pretrained":
        _load_state(encoder, state, config, path)
    info = {"kind": kind, "source": source, "path": str(path), "init": init, "config": config, "tokenizer": tokenizer}
    return LoadedEncoder(encoder, config["modality"], dim, info)


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


def save_encoder(path: str | Path, encoder: nn.Module, encoder_config: dict[str, Any], kind: str | None = None) -> Path:
    """Write ``encoder`` alone in the exported-encoder format :func:`load_encoder` reads:
    ``{"format": ENCODER_FORMAT, "kind", "modality", "encoder": <architecture>, "state_dict"}``.
    ``encoder_config`` describes the architecture (see :func:`build_encoder`)."""
    config = normalize_encoder_config(encoder_config)
    modality = config.pop("modality")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": ENCODER_FORMAT, "kind": kind or {"image": "simclr", "text": "bert"}[modality], "modality": modality,
        "encoder": config,
        "state_dict": {key: value.detach().cpu().clone() for key, value in encoder.state_dict().items()},
    }, path)
    return path


# ----------------------------------------------------------------------------------------------------
# Blocks


@dataclass
class EncoderBlocks:
    """An encoder cut into blocks. ``stem``: the input block (BERT embeddings, the ResNet stem) or
    ``None``; ``layers``: the blocks above it, bottom to top."""

    stem: nn.Module | None
    layers: list[nn.Module]

    @property
    def ordered(self) -> list[nn.Module]:
        """All blocks, bottom (input) to top (features)."""
        return ([self.stem] if self.stem is not None else []) + list(self.layers)


def encoder_blocks(encoder: nn.Module) -> EncoderBlocks:
    """Cut ``encoder`` into the blocks that fine-tuning freezes, unfreezes and decays together.

    - :class:`BertModel`: stem = embeddings; layers = ``encoder.layer[0..N-1]``, the pooler joined
      to the top layer (both are the top of the pretrained network).
    - ResNet (``conv1``, ``bn1``, ``layer1..layer4``): stem = ``conv1`` + ``bn1``; layers =
      ``layer1..layer4``.
    - :class:`ConvNet`: no stem; layers = its four conv-BN-ReLU stages.
    - Anything else: one block, the whole encoder.

    Blocks are views (``nn.ModuleList`` / ``nn.Sequential`` holding the encoder's own submodules):
    freezing one or switching it to eval mode acts on the encoder.
    """
    if isinstance(encoder, BertModel):
        layers: list[nn.Module] = list(encoder.encoder.layer)
        layers[-1] = nn.ModuleList([layers[-1], encoder.pooler])
        return EncoderBlocks(encoder.embeddings, layers)
    if all(hasattr(encoder, name) for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")):
        return EncoderBlocks(nn.ModuleList([encoder.conv1, encoder.bn1]),
                             [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4])
    if isinstance(encoder, ConvNet):
        stages: list[nn.Module] = []
        current: list[nn.Module] = []
        for module in encoder.features:
            current.append(module)
            if isinstance(module, nn.MaxPool2d):
                stages.append(nn.Sequential(*current))
                current = []
        if current:
            stages.append(nn.Sequential(*current))
        return EncoderBlocks(None, stages)
    return EncoderBlocks(None, [encoder])
