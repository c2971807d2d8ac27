"""BERT pretraining (Devlin et al. 2018): masked-language modelling plus next-sentence prediction.

One training step (section 3.1 and appendix A.2 of the paper)::

    hidden = BERT(input_ids, attention_mask, token_type_ids)                   # B x L x H
    L_MLM  = CE(vocab logits at the N selected positions, their original ids)   # mean over N tokens
    L_NSP  = CE(W tanh(W_p hidden[:, 0]), next_sentence_label)                  # mean over B pairs
    L      = L_MLM + nsp_weight * L_NSP

The vocabulary projection runs at the N selected positions only (``labels != -100``), gathered before
the projection: for a small model that is most of the step. The DataModule does the masking
(:mod:`lightning_transfer.data.masking`), so the module sees ready-made Hugging Face batches.

Starting points: random weights sized by the ``BertConfig`` arguments, or ``pretrained``, a local
Hugging Face BERT directory (continued, domain-adaptive pretraining; ``minilm_demo`` is the MiniLM-L6
shipped for the offline demo). Export: :meth:`BertPretrainModule.save_pretrained` writes a
``BertForPreTraining`` directory (plus the tokenizer) that ``transformers`` loads.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from lightning_transfer.data.masking import IGNORE_INDEX
from lightning_transfer.data.sources import resolve_path
from lightning_transfer.distributed import is_distributed, world_size
from lightning_transfer.errors import UserInputError, require
from lightning_transfer.evaluation import WeightedMean
from lightning_transfer.models.bert import ACTIVATIONS, BertConfig, BertForPretraining, BertModel
from lightning_transfer.models.encoder_config import BERT_FIELDS
from lightning_transfer.models.encoder_handoff import HANDOFF_KEY, encoder_marker
from lightning_transfer.modules.base import OptimizedModule
from lightning_transfer.optim import split_decay_groups

if TYPE_CHECKING:
    from tokenizers import Tokenizer

REQUIRED_KEYS = ("input_ids", "labels")


class ExpOfMean(WeightedMean):
    """``exp`` of a (weighted) running mean: the perplexity of a mean cross-entropy. Taking the exp
    after the token-weighted mean over the epoch (and over processes) gives the corpus perplexity,
    which the mean of per-batch perplexities is not."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class PretrainingOutput(NamedTuple):
    """What :meth:`BertPretrainModule.pretraining_losses` returns for one batch."""

    loss: torch.Tensor  # L_MLM + nsp_weight * L_NSP, scalar (what backward sees)
    mlm_loss: torch.Tensor  # mean CE over the N selected tokens, float32 scalar (0 when N = 0)
    mlm_logits: torch.Tensor  # N x vocab_size, at the selected positions in row-major order
    mlm_labels: torch.Tensor  # N original token ids
    nsp_loss: torch.Tensor | None  # mean CE over the B pairs, None when NSP is off
    nsp_logits: torch.Tensor | None  # B x 2
    nsp_labels: torch.Tensor | None  # B (0 = true next segment, 1 = random)


class BertPretrainModule(OptimizedModule):
    """Masked-LM (+ next-sentence) pretraining of a BERT encoder.

    Batches are dicts with Hugging Face key names (``TextPretrainDataModule`` makes them):
    ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``B x L``), ``labels`` (``B x L``, the
    original id at positions selected for prediction, -100 elsewhere) and, when ``nsp=True``,
    ``next_sentence_label`` (``B``; 0 = the true next segment, 1 = a random one). Optional:
    ``mlm_positions`` (int64 ``N``, the flat indices where ``labels`` is not -100, which the collator
    computes on the host; without it the step finds them itself, which waits for the device once).

    A training step never reads a tensor's value on the host (no host-device synchronization), given
    ``mlm_positions``: the count of selected tokens comes from its shape, the DDP loss normaliser stays
    a tensor, the metrics update on the device and ``train/loss`` is not shown on the progress bar
    (Lightning reads progress-bar values with ``.item()`` after every step; loggers get it every
    ``log_every_n_steps``).

    Args:
        vocab_size ... initializer_range: the :class:`~lightning_transfer.models.bert.BertConfig`
            fields (defaults: BERT-base). ``vocab_size=None`` takes it from ``tokenizer`` when given,
            else from the DataModule's tokenizer in :meth:`setup`; the resolved value is stored in
            the hyperparameters, so ``load_from_checkpoint(path)`` rebuilds the model alone. The
            ``lightning-transfer`` command links it to the DataModule's ``vocab_size`` when it builds
            them (LightningCLI ``link_arguments``), so there the model is built with it at once.
        pretrained: a local Hugging Face BERT directory to continue pretraining from (its
            ``config.json`` overrides the size arguments; ``cls.*`` heads load when present), or
            ``minilm_demo``. ``load_from_checkpoint`` reads it again (the checkpoint's weights then
            replace its weights); pass ``pretrained=None`` there when the directory is gone.
        tokenizer: a tokenizer path (``tokenizer.json``, ``vocab.txt`` or a directory) or
            ``minilm_demo``; optional. Used to size ``vocab_size``, to check the DataModule's
            tokenizer and for :meth:`save_pretrained`. With ``pretrained`` it defaults to the
            tokenizer in that directory, otherwise to the DataModule's. It is stored in checkpoints.
        nsp: train next-sentence prediction (the batches must carry ``next_sentence_label``); with
            ``False`` the pooler and NSP head are frozen (unused parameters would stall DDP).
        nsp_weight: ``L = L_MLM + nsp_weight * L_NSP``.
        optimizer, lr, weight_decay, momentum, betas, warmup_steps, warmup_fraction, schedule,
            min_lr_factor: see :class:`~lightning_transfer.modules.base.OptimizedModule`. Defaults are
            the paper's: AdamW, lr 1e-4, betas (0.9, 0.999), decay 0.01 (none on biases and LayerNorm),
            1% linear warmup (BERT: 10k of 1M steps; RoBERTa uses ~6%), then linear decay to 0.
            Clip gradients with the Trainer's ``gradient_clip_val`` (1.0 in the configs).
        head_lr_factor: the pretraining heads (``cls.*``: the MLM transform and decoder bias, NSP)
            train at ``lr * head_lr_factor``; the decoder weight is the tied word embedding and stays
            at ``lr``. Raise it (e.g. 20) when continuing an encoder-only checkpoint such as MiniLM,
            whose heads start untrained: at the encoder's small LR a fresh head takes hundreds of steps
            to learn, feeding the encoder uninformative gradients all the while.
        compile: compile the encoder with ``torch.compile`` when training starts (speed only; see
            :class:`~lightning_transfer.modules.base.OptimizedModule`).

    Logged (torchmetrics, correct under DDP), for ``train`` and ``val``: ``{stage}/mlm_loss``
    (token-level mean over the epoch), ``{stage}/mlm_acc``, ``{stage}/mlm_ppl`` (``exp`` of the epoch's
    mean MLM loss), ``{stage}/nsp_loss`` and ``{stage}/nsp_acc`` (NSP on); ``train/loss`` every step
    (to the loggers every ``log_every_n_steps``), ``val/loss`` (``val/mlm_loss + nsp_weight *
    val/nsp_loss``) per epoch. The epoch-level ones are on the progress bar.

    Bad arguments, a tokenizer whose vocabulary differs from the model's, and ``nsp=True`` with data
    without NSP labels raise :class:`~lightning_transfer.errors.UserInputError`.
    """

    checkpoint_metric = ("val/mlm_loss", "min")  # the best checkpoint (callbacks.BestCheckpoint): lowest MLM loss

    def __init__(
        self,
        vocab_size: int | None = None,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        hidden_act: str = "gelu",
        pad_token_id: int = 0,
        initializer_range: float = 0.02,
        pretrained: str | None = None,
        tokenizer: str | None = None,
        nsp: bool = True,
        nsp_weight: float = 1.0,
        optimizer: str = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int | None = None,
        warmup_fraction: float = 0.01,
        schedule: str = "linear",
        min_lr_factor: float = 0.0,
        head_lr_factor: float = 1.0,
        compile: bool = False,
    ):
        super().__init__()
        require(nsp_weight >= 0, f"nsp_weight must be >= 0, got {nsp_weight}")
        require(head_lr_factor > 0, f"head_lr_factor must be > 0, got {head_lr_factor}")
        self.save_hyperparameters(
            logger=False
        )  # logged resolved, beside the DataModule's: _log_resolved_hyperparameters
        self.validate_optimization_settings()
        self.model: BertForPretraining | None = None
        self._tokenizer: Tokenizer | None = None  # loaded on first use
        self._pretrained_dir = resolve_path(pretrained, what="pretrained") if pretrained is not None else None
        if self._pretrained_dir is not None:
            self._adopt_pretrained_config(self._pretrained_dir)
        elif vocab_size is None and tokenizer is not None:
            own = self.tokenizer
            assert own is not None  # loaded from the tokenizer argument
            self.hparams.vocab_size = own.get_vocab_size(with_added_tokens=True)
        self.bert_config(placeholder_vocab=True)  # bad sizes fail here, not after the data is ready
        self.train_metrics, self.val_metrics = self._stage_metrics(), self._stage_metrics()
        if self.hparams.vocab_size is not None:
            self.configure_model()

    # ---------------------------------------------------------------- building
    def _adopt_pretrained_config(self, directory: Path) -> None:
        config = BertConfig.from_json_file(directory / "config.json")
        given = self.hparams.vocab_size
        require(
            given is None or given == config.vocab_size,
            f"vocab_size={given} differs from the {config.vocab_size} of pretrained={self.hparams.pretrained}; "
            "leave vocab_size unset (null) to use the pretrained model's",
        )
        self.hparams.update({name: getattr(config, name) for name in BERT_FIELDS})

    def bert_config(self, placeholder_vocab: bool = False) -> BertConfig:
        """The :class:`BertConfig` of the hyperparameters (``vocab_size`` must be resolved unless
        ``placeholder_vocab``, which only validates the other sizes)."""
        values = {name: self.hparams[name] for name in BERT_FIELDS}
        if values["vocab_size"] is None:
            require(
                placeholder_vocab,
                "vocab_size is unknown: set model.vocab_size or model.tokenizer, or train with a "
                "DataModule that exposes .tokenizer (TextPretrainDataModule)",
            )
            values["vocab_size"] = values["pad_token_id"] + 1
        require(
            values["hidden_act"] in ACTIVATIONS,
            f"hidden_act={values['hidden_act']!r} is not supported; use one of {sorted(ACTIVATIONS)}",
        )
        return BertConfig(**values)

    def configure_model(self) -> None:
        """Build the network once ``vocab_size`` is known (here, in ``__init__`` or in :meth:`setup`)."""
        if self.model is not None:
            return
        if self._pretrained_dir is not None:
            model = BertForPretraining.from_pretrained(self._pretrained_dir)
        else:
            model = BertForPretraining(self.bert_config())
        if not self.hparams.nsp:  # unused without NSP: frozen, so DDP and the optimizer skip them
            for part in (model.bert.pooler, model.cls["seq_relationship"]):
                part.requires_grad_(False)
        self.model = model

    def param_groups(self) -> list[dict]:
        """The encoder's groups at ``lr``, the heads' at ``lr * head_lr_factor``; no weight decay on
        biases and LayerNorm weights in either."""
        hp = self.hparams
        if hp.head_lr_factor == 1.0:
            return super().param_groups()
        named = list(self.named_parameters())
        heads = [(n, p) for n, p in named if n.startswith("model.cls.")]
        rest = [(n, p) for n, p in named if not n.startswith("model.cls.")]
        return split_decay_groups(rest, hp.weight_decay) + split_decay_groups(
            heads, hp.weight_decay, lr=self.learning_rate() * hp.head_lr_factor
        )

    @staticmethod
    def _stage_metrics() -> nn.ModuleDict:
        # Updated on the device only (no host-device synchronization per step): WeightedMean, and an
        # accuracy without torchmetrics' argument checks, which read the targets' values on the host.
        return nn.ModuleDict(
            {
                "mlm_loss": WeightedMean(),
                "mlm_ppl": ExpOfMean(),
                "mlm_acc": WeightedMean(),
                "nsp_loss": WeightedMean(),
                "nsp_acc": MulticlassAccuracy(2, average="micro", validate_args=False),
            }
        )

    @property
    def encoder(self) -> BertModel:
        """The BERT encoder (what fine-tuning transfers)."""
        require(
            self.model is not None,
            "the model is not built yet: vocab_size is unknown until setup() "
            "(or pass vocab_size / tokenizer / pretrained)",
        )
        assert self.model is not None  # require() above
        return self.model.bert

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The ``tokenizers.Tokenizer`` of this model, or None when unknown: the ``tokenizer`` argument,
        else the ``pretrained`` directory's, else the DataModule's (after :meth:`setup`) or the one a
        checkpoint stored."""
        if self._tokenizer is None:
            from lightning_transfer.data.tokenizer import load_tokenizer

            if self.hparams.tokenizer is not None:
                self._tokenizer = load_tokenizer(resolve_path(self.hparams.tokenizer, what="tokenizer"))
            elif self._pretrained_dir is not None and any(
                (self._pretrained_dir / name).is_file() for name in ("tokenizer.json", "vocab.txt")
            ):
                self._tokenizer = load_tokenizer(self._pretrained_dir)
        return self._tokenizer

    # ---------------------------------------------------------------- checks against the data
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        data_tokenizer = getattr(datamodule, "tokenizer", None)
        data_hparams = getattr(datamodule, "hparams", None) or {}
        if self.hparams.vocab_size is None:
            size = (
                data_tokenizer.get_vocab_size(with_added_tokens=True)
                if data_tokenizer is not None
                else getattr(datamodule, "vocab_size", None)
            )
            require(
                isinstance(size, int),
                "vocab_size is unknown: set model.vocab_size or model.tokenizer, or use a "
                "DataModule that exposes .tokenizer (TextPretrainDataModule)",
            )
            self.hparams.vocab_size = size  # saved with the checkpoint, so loading rebuilds the same model
            self.configure_model()
        if data_tokenizer is not None:
            self._check_data_tokenizer(data_tokenizer)
        self._check_data_settings(data_hparams)
        self._log_resolved_hyperparameters(datamodule)

    def _check_data_tokenizer(self, data_tokenizer) -> None:
        data_size = data_tokenizer.get_vocab_size(with_added_tokens=True)
        origin = f"pretrained={self.hparams.pretrained}" if self.hparams.pretrained else "the model"
        require(
            data_size == self.hparams.vocab_size,
            f"the data's tokenizer has {data_size} tokens but {origin} has vocab_size={self.hparams.vocab_size}; "
            "give the DataModule the model's tokenizer (data.tokenizer) or set model.vocab_size: "
            f"{data_size} for a model trained from scratch",
        )
        own = self.tokenizer
        if own is None:
            self._tokenizer = data_tokenizer  # exported with the model and stored in checkpoints
        elif own.get_vocab(with_added_tokens=True) != data_tokenizer.get_vocab(with_added_tokens=True):
            raise UserInputError(
                f"the data's tokenizer and the model's tokenizer ({self.hparams.tokenizer or self.hparams.pretrained}) "
                f"both have {data_size} tokens but map them to different ids; use the same tokenizer for both"
            )

    def _check_data_settings(self, data_hparams) -> None:
        data_nsp = data_hparams.get("nsp")
        if self.hparams.nsp and data_nsp is False:
            raise UserInputError(
                "model.nsp=True needs batches with next_sentence_label but the DataModule has nsp=False; "
                "set model.nsp: false or data.nsp: true"
            )
        if not self.hparams.nsp and data_nsp:
            warnings.warn(
                "the DataModule builds NSP pairs (nsp=True) but model.nsp=False ignores their labels; "
                "set data.nsp: false to pack full sequences instead",
                UserWarning,
                stacklevel=2,
            )
        length = data_hparams.get("max_seq_length")
        limit = self.hparams.max_position_embeddings
        require(
            length is None or length <= limit,
            f"data.max_seq_length={length} exceeds the model's max_position_embeddings={limit}; "
            f"set data.max_seq_length <= {limit}",
        )

    def _log_resolved_hyperparameters(self, datamodule) -> None:
        """Log this module's hyperparameters as resolved: ``vocab_size`` and the sizes taken from
        ``pretrained`` or the tokenizer, where the constructor's arguments said None.

        The module saves them with ``save_hyperparameters(logger=False)``, so Lightning does not log them
        itself: it would log the constructor's arguments, merged with the DataModule's into one flat dict,
        and stop the run when a shared key has two values. ``TextPretrainDataModule`` has its own
        ``tokenizer`` and ``nsp``, which may differ from ours in a valid run (``tokenizer=None`` here takes
        the DataModule's). So a key the DataModule has with another value is logged here as
        ``model/<key>``, and Lightning logs the DataModule's own."""
        if not getattr(self.trainer, "enable_autolog_hparams", True):
            return
        theirs = dict(getattr(datamodule, "hparams", None) or {})
        params = {}
        for key, value in self.hparams.items():
            if key != "_class_path":
                clash = key in theirs and (type(value) is not type(theirs[key]) or value != theirs[key])
                params[f"model/{key}" if clash else key] = value
        for logger in self.trainer.loggers:
            logger.log_hyperparams(params)

    # ---------------------------------------------------------------- the algorithm
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Last hidden states of the encoder, ``B x L x hidden_size``; the arguments are
        :meth:`BertModel.forward`'s (``input_ids``, ``attention_mask``, ``token_type_ids``)."""
        return self.encoder(*args, **kwargs)

    def pretraining_losses(self, batch: dict[str, torch.Tensor]) -> PretrainingOutput:
        """The MLM (+ NSP) losses of one batch, without logging (see :class:`PretrainingOutput`).

        Cross-entropies are computed in float32 whatever the autocast dtype. A batch without selected
        tokens gives ``mlm_loss = 0`` (still connected to the graph), never NaN. The selected positions
        are ``batch["mlm_positions"]`` when given (they must be where ``labels`` is not -100, ascending),
        else found from ``labels`` (one wait for the device)."""
        missing = [key for key in REQUIRED_KEYS if key not in batch]
        require(
            not missing,
            f"the batch lacks {missing}; a pretraining batch has input_ids, attention_mask, "
            "token_type_ids, labels (-100 where not masked) and next_sentence_label when nsp=True",
        )
        labels = batch["labels"]
        hidden = self.encoder(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        assert self.model is not None  # self.encoder above requires it
        positions = batch.get("mlm_positions")  # N flat indices; N, its shape, is known on the host
        if positions is None:
            positions = torch.nonzero(labels.flatten() != IGNORE_INDEX).squeeze(1)  # waits for the device
        mlm_logits = self.model.mlm_logits(hidden, positions).float()  # N x V
        mlm_labels = labels.flatten().index_select(0, positions)  # N
        # sum / max(N, 1): the mean over selected tokens, and 0 (not 0/0) for a batch without any
        mlm_sum = F.cross_entropy(mlm_logits, mlm_labels, reduction="sum")
        mlm_loss = mlm_sum / max(mlm_labels.numel(), 1)
        loss, nsp_loss, nsp_logits, nsp_labels = mlm_sum / self._mlm_denominator(mlm_labels.numel()), None, None, None
        if self.hparams.nsp:
            require(
                "next_sentence_label" in batch,
                "model.nsp=True but the batch has no next_sentence_label; set "
                "model.nsp: false, or use a DataModule with nsp=True",
            )
            nsp_labels = batch["next_sentence_label"].view(-1)
            nsp_logits = self.model.nsp_logits(hidden).float()  # B x 2
            nsp_loss = F.cross_entropy(nsp_logits, nsp_labels)
            loss = loss + self.hparams.nsp_weight * nsp_loss
        return PretrainingOutput(loss, mlm_loss, mlm_logits, mlm_labels, nsp_loss, nsp_logits, nsp_labels)

    def _mlm_denominator(self, count: int) -> float | torch.Tensor:
        """What the MLM loss sum is divided by. One process: its selected-token count. Training under
        DDP: the mean count per process, so that DDP's averaging of gradients over processes gives the
        gradient of the mean over *all* selected tokens, as one process on the global batch would
        (processes mask different numbers of tokens, so a mean of per-process means would not).

        Under DDP it is a float32 scalar tensor on this module's device: the all-reduced count is
        never read on the host, so the step does not wait for the device (``torch.full`` writes the
        count on the device; ``torch.tensor(..., device=...)`` would be a blocking copy)."""
        if not (self.training and is_distributed()):
            return float(max(count, 1))
        total = torch.full((), float(count), device=self.device)
        torch.distributed.all_reduce(total)
        return total.clamp(min=1.0) / world_size()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.pretraining_losses(batch)
        self._update_metrics("train", out)
        # Not on the progress bar: Lightning reads every progress-bar value with .item() after each step
        # (a host-device synchronization); the loggers get it every log_every_n_steps.
        self.log("train/loss", out.loss, batch_size=batch["input_ids"].shape[0])
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update_metrics("val", self.pretraining_losses(batch))

    def _update_metrics(self, stage: str, out: PretrainingOutput) -> None:
        """Token-weighted MLM means (so the epoch value is the mean over all selected tokens of all
        processes) and pair-level NSP means; Lightning computes and resets them each epoch."""
        metrics = getattr(self, f"{stage}_metrics")
        num = out.mlm_labels.numel()  # from the shape: no wait for the device
        if num:
            mlm_loss_sum = out.mlm_loss.detach() * num
            metrics["mlm_loss"].update(mlm_loss_sum, num)
            metrics["mlm_ppl"].update(mlm_loss_sum, num)
            metrics["mlm_acc"].update((out.mlm_logits.detach().argmax(-1) == out.mlm_labels).sum(), num)
        for name in ("mlm_loss", "mlm_ppl", "mlm_acc"):
            self.log(f"{stage}/{name}", metrics[name], on_step=False, on_epoch=True, prog_bar=name == "mlm_loss")
        if out.nsp_loss is not None:
            assert out.nsp_labels is not None and out.nsp_logits is not None  # set together with nsp_loss
            metrics["nsp_loss"].update(out.nsp_loss.detach() * out.nsp_labels.numel(), out.nsp_labels.numel())
            metrics["nsp_acc"].update(out.nsp_logits.detach(), out.nsp_labels)
            for name in ("nsp_loss", "nsp_acc"):
                self.log(f"{stage}/{name}", metrics[name], on_step=False, on_epoch=True)

    def on_fit_start(self) -> None:
        # A trainer.validate() before fit resets the metrics inside inference mode, which turns their
        # states into inference tensors; fit's validation (no_grad, not inference mode) could then not
        # update them in place. Resetting here, outside inference mode, gives ordinary tensors again.
        for metric in (*self.train_metrics.values(), *self.val_metrics.values()):
            cast(Metric, metric).reset()

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics
        loss = cast(Metric, metrics["mlm_loss"]).compute()  # synchronized over processes; cached for Lightning's log
        if self.hparams.nsp:
            loss = loss + self.hparams.nsp_weight * cast(Metric, metrics["nsp_loss"]).compute()
        self.log("val/loss", loss, prog_bar=True)

    # ---------------------------------------------------------------- checkpoints and export
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Mark the checkpoint for fine-tuning (:mod:`~lightning_transfer.models.encoder_handoff`): the
        encoder's BertConfig, its weights under ``model.bert.``, and the tokenizer, so the checkpoint
        alone can export a complete Hugging Face directory."""
        config = self.model.bert.config.to_dict() if self.model is not None else None
        checkpoint[HANDOFF_KEY] = encoder_marker("bert", "text", config, "model.bert.", tokenizer=self._tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = (checkpoint.get(HANDOFF_KEY) or {}).get("tokenizer")
        if self._tokenizer is None and stored:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(stored)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a Hugging Face directory: ``config.json`` + ``model.safetensors`` in
        ``BertForPreTraining`` format (encoder, MLM and NSP heads; ``transformers.BertModel`` and
        ``BertForPreTraining`` load it) and, when the tokenizer is known, ``tokenizer.json``,
        ``vocab.txt`` and ``tokenizer_config.json`` (``AutoTokenizer`` loads them). Returns the directory."""
        require(self.model is not None, "the model is not built yet (vocab_size unknown); train it or pass vocab_size")
        assert self.model is not None  # require() above
        directory = self.model.save_pretrained(directory)
        if self.tokenizer is not None:
            from lightning_transfer.data.tokenizer import save_tokenizer

            save_tokenizer(self.tokenizer, directory, model_max_length=self.hparams.max_position_embeddings)
        return directory


__all__ = ["BertPretrainModule", "ExpOfMean", "PretrainingOutput"]
