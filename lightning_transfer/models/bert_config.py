"""BERT's sizes (:class:`BertConfig`): Hugging Face's field names and BERT-base defaults, checked on
construction, and read from a Hugging Face ``config.json``
(:func:`~lightning_transfer.models.hf_bert_io.write_hf_checkpoint` writes one).

:data:`ACTIVATIONS` maps the names ``hidden_act`` may take to their functions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lightning_transfer.errors import UserInputError, require

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact: x * Phi(x) with the erf, as in the original BERT
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class BertConfig:
    """BERT sizes with Hugging Face's field names; the defaults are BERT-base (110M parameters).

    Raises :class:`UserInputError` when ``hidden_size`` is not divisible by ``num_attention_heads``,
    a size is not positive, a dropout is outside ``[0, 1)``, ``pad_token_id`` is outside the vocabulary
    or ``hidden_act`` is not one of :data:`ACTIVATIONS`.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    hidden_act: str = "gelu"
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            require(
                isinstance(value, int) and value > 0, f"BertConfig.{name} must be a positive integer, got {value!r}"
            )
        require(
            self.hidden_size % self.num_attention_heads == 0,
            f"BertConfig.hidden_size={self.hidden_size} is not divisible by num_attention_heads="
            f"{self.num_attention_heads}; choose sizes with hidden_size % num_attention_heads == 0",
        )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"BertConfig.{name} must be in [0, 1), got {value!r}")
        require(
            0 <= self.pad_token_id < self.vocab_size,
            f"BertConfig.pad_token_id={self.pad_token_id} is outside the vocabulary of {self.vocab_size} tokens",
        )
        require(
            self.hidden_act in ACTIVATIONS,
            f"BertConfig.hidden_act={self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}",
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        """Build from a Hugging Face ``config.json`` dict: unknown keys and ``null`` values are ignored.

        A ``model_type`` other than ``bert`` or a ``position_embedding_type`` other than ``absolute``
        raises :class:`UserInputError` (this encoder implements neither)."""
        model_type = values.get("model_type", "bert")
        require(
            model_type == "bert",
            f"config has model_type={model_type!r}, not 'bert'; this loader reads BERT checkpoints only",
        )
        position_type = values.get("position_embedding_type") or "absolute"
        require(
            position_type == "absolute",
            f"config has position_embedding_type={position_type!r}; only 'absolute' positions are implemented",
        )
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names and value is not None})

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        require(path.is_file(), f"config file {path} does not exist; pass a Hugging Face BERT config.json")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserInputError(f"{path} is not valid JSON ({err}); pass a Hugging Face BERT config.json") from None
        require(isinstance(values, dict), f"{path} does not hold a JSON object; pass a Hugging Face BERT config.json")
        return cls.from_dict(values)


__all__ = ["ACTIVATIONS", "BertConfig"]
