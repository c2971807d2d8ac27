"""Our BERT encoder (Devlin et al. 2018) in plain torch, with Hugging Face-compatible weights.

Reading order, top to bottom, one block per screen (the sizes, :class:`BertConfig`, are in
:mod:`~lightning_transfer.models.bert_config`):

- :class:`BertEmbeddings`: word + position + token type, then LayerNorm and dropout.
- :class:`BertSelfAttention` / :class:`BertLayer`: post-LN transformer layer,
  ``h = LN(x + Attn(x))``, ``out = LN(h + W2 act(W1 h))``.
- :class:`BertModel`: embeddings, ``encoder.layer`` (a ``ModuleList``), pooler ``tanh(W h[:, 0])``.
- :class:`BertForPretraining`: ``BertModel`` + masked-LM head (decoder tied to the word embeddings)
  + next-sentence head. The vocabulary projection can run at the masked positions only.
- ``from_pretrained`` / ``save_pretrained``: local Hugging Face directories (config.json plus
  model.safetensors or pytorch_model.bin), read and written by :mod:`~lightning_transfer.models.hf_bert_io`.

Submodules carry Hugging Face's names (``encoder.layer.0.attention.self.query``, ``...output.LayerNorm``,
``pooler.dense``, ``cls.predictions.transform.dense``), so loading a checkpoint is a plain
``load_state_dict`` once ``bert.`` prefixes and unused extras are dropped.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lightning_transfer.errors import require
from lightning_transfer.models.bert_config import ACTIVATIONS, BertConfig
from lightning_transfer.models.hf_bert_io import (
    bert_for_pretraining_state,
    bert_model_state,
    load_weights,
    read_hf_checkpoint,
    strip_bert_prefix,
    write_hf_checkpoint,
)

# ----------------------------------------------------------------------------------------------------
# Building blocks


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that normalizes in float32 and returns the parameters' dtype.

    Under CPU autocast a plain LayerNorm would run (and keep the residual stream) in bfloat16; here,
    as under CUDA autocast, the statistics are float32 and the residual stream stays float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return y.to(self.weight.dtype)


def additive_attention_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key-padding mask for SDPA: 0 where ``keep`` is True, a large negative number elsewhere.

    ``keep`` is bool ``B x 1 x 1 x L``. The negative value is half of ``dtype``'s most negative finite
    number: adding a score cannot overflow to -inf, so a query whose keys are ALL masked gets a
    uniform (finite) softmax instead of NaN, in float32, float16 and bfloat16 alike.
    """
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min / 2)


class BertEmbeddings(nn.Module):
    """``LN(E_word[ids] + E_pos[0..L-1] + E_type[token_type_ids])`` then dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # L
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # B x L x H (+ L x H)
        x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))  # B x L x H


class BertSelfAttention(nn.Module):
    """Multi-head attention ``softmax(Q K^T / sqrt(d) + M) V`` with ``d = hidden_size / heads``, through
    ``torch.nn.functional.scaled_dot_product_attention``; ``M`` is the additive key-padding mask."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        B, L, H = x.shape
        # One matmul for Q, K and V (weights concatenated on the fly; the parameters stay HF's three
        # Linears): x is read and, under autocast, cast to the low-precision dtype once instead of 3 times.
        weight = torch.cat((self.query.weight, self.key.weight, self.value.weight))  # 3H x H
        bias = torch.cat((self.query.bias, self.key.bias, self.value.bias))
        qkv = F.linear(x, weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B x heads x L x d
        mask = None if keep is None else additive_attention_mask(keep, q.dtype)  # B x 1 x 1 x L
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, L, H)


class BertAddNorm(nn.Module):
    """``LN(residual + dropout(W x + b))``: the output half of both sub-layers (HF's ``*.output``)."""

    def __init__(self, in_features: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)  # HF's name, hence the keys `attention.self.query...`
        self.output = BertAddNorm(config.hidden_size, config)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))  # B x L x intermediate_size


class BertLayer(nn.Module):
    """Post-LN transformer layer: ``h = LN(x + Attn(x))``, ``out = LN(h + W2 act(W1 h))``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertAddNorm(config.intermediate_size, config)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        h = self.attention(x, keep)  # B x L x H
        return self.output(self.intermediate(h), h)  # B x L x H


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, keep)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # B x H, from the [CLS] position


def init_bert_weights(module: nn.Module, std: float) -> None:
    """Hugging Face's init: Linear and Embedding weights ~ N(0, std), biases 0 (the padding row of an
    embedding too), LayerNorm weight 1 and bias 0. Use with ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------
# The encoder


class BertModel(nn.Module):
    """BERT encoder: ``embeddings``, ``encoder.layer[0..N-1]`` and the ``pooler``.

    ``model(input_ids, attention_mask=None, token_type_ids=None)`` returns the last hidden states.
    Fine-tuning code may freeze ``model.embeddings`` and the bottom ``model.encoder.layer[:n]`` or give
    them decayed learning rates. Weights load from and save to Hugging Face directories
    (:meth:`from_pretrained`, :meth:`save_pretrained`); the state-dict keys are Hugging Face's.
    """

    hf_architecture = "BertModel"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(lambda module: init_bert_weights(module, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden states, float ``B x L x hidden_size`` (bfloat16 parts under autocast).

        ``input_ids``: int64 ``B x L`` with ``L <= max_position_embeddings`` (longer raises
        :class:`UserInputError`). ``attention_mask``: ``B x L`` of 0/1 (any dtype, or bool), 1 for real
        tokens; ``None`` attends everywhere. Padded positions still get (meaningless) hidden states; a
        row whose mask is all zeros gives finite values, never NaN. ``token_type_ids``: ``B x L`` of
        segment ids, zeros when ``None``.

        A given mask is applied whatever its values: the forward never reads a tensor's values on the
        host, so it never waits for the device (an all-ones mask gives the same hidden states as
        ``None``). Pass ``None`` when nothing is padded, as the collators do for such batches
        (:mod:`~lightning_transfer.data.collators`, which know it on the host): no mask to build, add
        and differentiate through, and SDPA may pick its fastest kernels.
        """
        require(input_ids.dim() == 2, f"input_ids must be batch x length, got shape {tuple(input_ids.shape)}")
        require(
            input_ids.shape[1] <= self.config.max_position_embeddings,
            f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
            f"{self.config.max_position_embeddings}; truncate the inputs to at most that many tokens",
        )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # B x 1 x 1 x L
        return self.encoder(self.embeddings(input_ids, token_type_ids), keep)

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        """Pooler output ``tanh(W h[:, 0] + b)``, ``B x hidden_size``, from :meth:`forward`'s output."""
        return self.pooler(hidden)

    def forward_with_pooler(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hidden B x L x H, pooled B x H)``."""
        hidden = self(input_ids, attention_mask, token_type_ids)
        return hidden, self.pooled(hidden)

    # -- Hugging Face format ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BertModel:
        """Load a local Hugging Face BERT directory: ``config.json`` plus ``model.safetensors`` or
        ``pytorch_model.bin`` (or a sharded ``*.index.json``). Keys may carry the ``bert.`` prefix
        (``BertForPreTraining``, ``BertForSequenceClassification`` checkpoints); task heads and
        extras such as ``embeddings.position_ids`` are ignored; a missing pooler is initialized.
        Anything that is not a BERT checkpoint raises :class:`UserInputError`."""
        config, state = read_hf_checkpoint(directory)
        model = cls(config)
        load_weights(model, bert_model_state(state), directory, optional_prefixes=("pooler.",))
        return model

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` that ``transformers.BertModel.from_pretrained``
        loads with the same outputs. Returns the directory."""
        return write_hf_checkpoint(directory, self.config, self.state_dict(), self.hf_architecture)


# ----------------------------------------------------------------------------------------------------
# Pretraining heads


class BertPredictionTransform(nn.Module):
    """``LN(act(W h + b))`` before the vocabulary projection (HF's ``cls.predictions.transform``)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertMLMHead(nn.Module):
    """Transform plus the decoder's own bias; the decoder weight is the word-embedding matrix, passed
    in at call time so the tie cannot come undone (and the state dict holds it once)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), word_embeddings, self.bias)  # ... x vocab_size


class BertForPretraining(nn.Module):
    """BERT with the masked-LM and next-sentence heads (HF's ``BertForPreTraining`` weights).

    MLM logits ``= LN(act(W h)) E^T + b`` with ``E`` the (tied) word embeddings; NSP logits
    ``= W_nsp pooled + b`` (class 0 = the true next segment, 1 = a random one).

    The vocabulary projection is most of the cost of a small model, so compute it where there are
    labels only::

        hidden = model.bert(input_ids, attention_mask, token_type_ids)   # B x L x H
        positions = (labels != -100).flatten().nonzero().squeeze(1)       # N flat indices
        mlm = model.mlm_logits(hidden, positions)                         # N x V
        loss = F.cross_entropy(mlm.float(), labels.flatten()[positions])
        nsp = model.nsp_logits(hidden)                                    # B x 2

    (``nonzero`` waits for the device to know ``N``; the collator computes the positions on the host.)
    """

    hf_architecture = "BertForPreTraining"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = nn.ModuleDict(
            {
                "predictions": BertMLMHead(config),
                "seq_relationship": nn.Linear(config.hidden_size, 2),
            }
        )
        self.cls.apply(lambda module: init_bert_weights(module, config.initializer_range))

    def mlm_logits(self, hidden: torch.Tensor, masked_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Masked-LM logits.

        ``hidden``: ``B x L x H`` from ``self.bert``. ``masked_positions`` selects the rows gathered
        BEFORE the transform and the vocabulary projection, giving ``N x vocab_size``, in row-major
        order (the order of ``labels[labels != -100]``):

        - int64 ``N``: flat indices into the ``B * L`` positions (``(labels != -100).flatten().nonzero()``,
          what :class:`~lightning_transfer.data.collators.PretrainingCollator` puts in a batch as
          ``mlm_positions``). ``N`` is then known on the host: no synchronization with the device.
        - bool ``B x L`` (``labels != -100``): boolean indexing, which synchronizes with the device once
          (the count ``N`` is data dependent).

        ``None`` computes every position: ``B x L x vocab_size``.
        """
        if masked_positions is not None:
            is_mask = masked_positions.dtype == torch.bool and masked_positions.shape == hidden.shape[:2]
            is_index = masked_positions.dim() == 1 and masked_positions.dtype in (torch.int64, torch.int32)
            require(
                is_mask or is_index,
                f"masked_positions must be int64 flat indices (N) or a bool tensor of shape "
                f"{tuple(hidden.shape[:2])}, got {masked_positions.dtype} {tuple(masked_positions.shape)}; "
                "pass labels != -100",
            )
            if is_mask:
                hidden = hidden[masked_positions]  # N x H (N read from the device)
            else:
                hidden = hidden.flatten(0, 1).index_select(0, masked_positions)  # N x H
        return self.cls["predictions"](hidden, self.bert.embeddings.word_embeddings.weight)

    def nsp_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-sentence logits ``B x 2`` from the pooled ``[CLS]`` state of ``hidden`` (``B x L x H``)."""
        return self.cls["seq_relationship"](self.bert.pooled(hidden))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mlm_logits, nsp_logits)``: ``N x V`` (or ``B x L x V`` when ``masked_positions`` is None)
        and ``B x 2``. Arguments as in :meth:`BertModel.forward` and :meth:`mlm_logits`."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.mlm_logits(hidden, masked_positions), self.nsp_logits(hidden)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BertForPretraining:
        """Load a local Hugging Face BERT directory (see :meth:`BertModel.from_pretrained`). The ``cls.*``
        head weights load when present (a ``BertForPreTraining`` checkpoint) and keep their fresh
        initialization otherwise (a plain ``BertModel`` checkpoint), so pretraining can continue from
        either. The decoder stays tied to the word embeddings; a stored ``cls.predictions.decoder.*``
        copy is ignored."""
        config, state = read_hf_checkpoint(directory)
        model = cls(config)
        load_weights(model, bert_for_pretraining_state(state), directory, optional_prefixes=("bert.pooler.", "cls."))
        return model

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` that ``transformers.BertForPreTraining`` loads
        with the same logits (and ``transformers.BertModel`` with the same hidden states)."""
        return write_hf_checkpoint(directory, self.config, self.state_dict(), self.hf_architecture)


__all__ = [
    "ACTIVATIONS",
    "BertConfig",
    "BertForPretraining",
    "BertLayer",
    "BertModel",
    "additive_attention_mask",
    "init_bert_weights",
    # re-exported from hf_bert_io: models/loading.py imports them from here
    "load_weights",
    "read_hf_checkpoint",
    "strip_bert_prefix",
]
