"""BertPretrainModule: losses against Hugging Face, metrics, optimizer and schedule, checkpoints, export, data checks."""
import math
import random

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from lightning_transfer import BertPretrainModule, TextPretrainDataModule
from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.data.tokenizer import save_tokenizer, train_wordpiece
from lightning_transfer.errors import UserInputError
from lightning_transfer.models.bert import BertModel
from lightning_transfer.optim import warmup_factor

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=32)


def tiny_module(**overrides) -> BertPretrainModule:
    return BertPretrainModule(**{**TINY, **overrides})


def make_batch(batch_size=4, length=16, vocab=100, masked_fraction=0.3, seed=0, pad_last=True) -> dict:
    """A pretraining batch with padding in the last row and about ``masked_fraction`` of the real
    tokens carrying labels."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (batch_size, length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    if pad_last:
        attention_mask[-1, length // 2:] = 0
        input_ids[-1, length // 2:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, length // 2:] = 1
    chosen = (torch.rand(input_ids.shape, generator=gen) < masked_fraction) & attention_mask.bool()
    chosen[0, 1] = True  # at least one
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
            "labels": labels, "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=gen)}


def quiet_trainer(**overrides) -> pl.Trainer:
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0)
    settings.update(overrides)
    return pl.Trainer(**settings)


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    """A randomly initialized transformers.BertForPreTraining, saved by transformers, and our module
    continuing from that directory (so both hold the same weights, written by Hugging Face's code)."""
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(1)
    reference = transformers.BertForPreTraining(config).eval()
    directory = tmp_path_factory.mktemp("hf_bert")
    reference.save_pretrained(directory)
    return reference, directory


def hf_losses(reference, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference MLM loss over the full vocabulary (labels -100 ignored) and the NSP loss."""
    with torch.no_grad():
        out = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"])
    mlm = F.cross_entropy(out.prediction_logits.reshape(-1, out.prediction_logits.shape[-1]), batch["labels"].reshape(-1))
    return mlm, F.cross_entropy(out.seq_relationship_logits, batch["next_sentence_label"])


# -------------------------------------------------------------------------------- losses


def test_training_step_loss_equals_hugging_face_bert_for_pretraining_loss(hf_reference):
    reference, directory = hf_reference
    module = BertPretrainModule(pretrained=str(directory)).eval()
    batch = make_batch()
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        hf_total = reference(**batch).loss  # transformers' own MLM + NSP loss
    mlm, nsp = hf_losses(reference, batch)
    assert torch.allclose(loss, hf_total, atol=1e-4)
    out = module.pretraining_losses(batch)
    assert torch.allclose(out.mlm_loss, mlm, atol=1e-4) and torch.allclose(out.nsp_loss, nsp, atol=1e-4)
    assert out.mlm_logits.shape == (int((batch["labels"] != -100).sum()), 100)  # projected at masked rows only


def test_nsp_weight_scales_only_the_next_sentence_term(hf_reference):
    reference, directory = hf_reference
    batch = make_batch(seed=3)
    mlm, nsp = hf_losses(reference, batch)
    with torch.no_grad():
        weighted = BertPretrainModule(pretrained=str(directory), nsp_weight=0.25).eval().training_step(batch, 0)
        no_nsp_batch = {k: v for k, v in batch.items() if k != "next_sentence_label"}
        mlm_only = BertPretrainModule(pretrained=str(directory), nsp=False).eval().training_step(no_nsp_batch, 0)
    assert torch.allclose(weighted, mlm + 0.25 * nsp, atol=1e-4)
    assert torch.allclose(mlm_only, mlm, atol=1e-4)


def test_batch_without_masked_tokens_gives_finite_loss_and_gradients():
    module = tiny_module()
    batch = make_batch()
    batch["labels"] = torch.full_like(batch["labels"], -100)
    out = module.pretraining_losses(batch)
    out.loss.backward()
    assert out.mlm_loss.item() == 0.0 and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_nsp_without_next_sentence_label_in_the_batch_is_a_clear_error():
    batch = make_batch()
    del batch["next_sentence_label"]
    with pytest.raises(UserInputError, match="next_sentence_label"):
        tiny_module().training_step(batch, 0)


def test_epoch_mlm_loss_and_accuracy_are_token_weighted_and_perplexity_is_exp_of_the_mean_loss():
    """Over two batches with very different numbers of masked tokens (and accuracies of about 1/3
    and 3/4, arranged by relabeling some masked tokens with the model's own prediction), the epoch's
    mlm_loss and mlm_acc are means over all masked tokens, and mlm_ppl is exp(mlm_loss)."""
    module = tiny_module(nsp=False).eval()
    total, tokens, correct, batch_accuracies = 0.0, 0, 0, []
    with torch.no_grad():
        for seed, fraction, right in ((0, 0.1, 1 / 3), (1, 0.6, 3 / 4)):  # very different numbers of masked tokens
            batch = make_batch(seed=seed, masked_fraction=fraction)
            predicted = module.pretraining_losses(batch).mlm_logits.argmax(-1)  # one row per masked token
            masked = torch.nonzero(batch["labels"] != -100, as_tuple=True)
            relabel = torch.arange(len(predicted)) < round(right * len(predicted))
            batch["labels"][masked] = torch.where(relabel, predicted, (predicted + 1) % 100)  # right exactly there
            out = module.pretraining_losses(batch)
            module._update_metrics("train", out)
            total += F.cross_entropy(out.mlm_logits, out.mlm_labels, reduction="sum").item()
            tokens += out.mlm_labels.numel()
            hits = sum(int(out.mlm_logits[i].argmax() == out.mlm_labels[i]) for i in range(len(out.mlm_labels)))
            correct += hits
            batch_accuracies.append(hits / out.mlm_labels.numel())
    metrics = module.train_metrics
    assert metrics["mlm_loss"].compute().item() == pytest.approx(total / tokens, rel=1e-5)
    assert metrics["mlm_ppl"].compute().item() == pytest.approx(math.exp(total / tokens), rel=1e-5)
    assert 0.2 < batch_accuracies[0] < 0.5 < batch_accuracies[1] < 0.9  # the arrangement worked
    assert abs(correct / tokens - sum(batch_accuracies) / 2) > 0.03  # token- and batch-weighted means differ here
    assert metrics["mlm_acc"].compute().item() == pytest.approx(correct / tokens, abs=1e-6)


def test_bf16_autocast_loss_is_close_to_fp32_and_finite_with_a_fully_padded_row():
    module = tiny_module(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()
    batch = make_batch(batch_size=6, length=32, seed=5)
    batch["attention_mask"][-1] = 0  # a row with nothing to attend to
    batch["labels"][-1] = -100
    with torch.no_grad():
        fp32 = module.pretraining_losses(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = module.pretraining_losses(batch)
    assert bf16.mlm_logits.dtype == torch.float32  # cross-entropy in fp32
    assert torch.isfinite(bf16.loss)
    assert abs(bf16.loss.item() - fp32.loss.item()) < 0.05  # bf16 keeps ~3 significant digits


# -------------------------------------------------------------------------------- optimization


def test_adamw_steps_on_a_fixed_batch_drive_the_loss_down():
    torch.manual_seed(0)
    module = tiny_module(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    optimizer = torch.optim.AdamW(module.param_groups(), lr=1e-2)
    batch = make_batch(batch_size=8, masked_fraction=0.2)
    losses = []
    for _ in range(25):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::5]


def test_bias_and_layernorm_parameters_get_no_weight_decay():
    module = tiny_module()
    names = {id(p): n for n, p in module.named_parameters()}
    decay, no_decay = module.param_groups()
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith(".weight") and "LayerNorm" not in n for n in decayed)
    assert "model.bert.embeddings.word_embeddings.weight" in decayed
    assert {"model.cls.predictions.bias", "model.bert.embeddings.LayerNorm.weight",
            "model.bert.encoder.layer.0.output.LayerNorm.weight", "model.bert.encoder.layer.1.attention.self.query.bias"} <= undecayed
    assert all(n.endswith(".bias") or "LayerNorm" in n for n in undecayed)


def test_head_lr_factor_speeds_up_only_the_heads_and_keeps_the_tied_decoder_at_the_encoder_lr():
    module = tiny_module(lr=1e-4, head_lr_factor=20.0)
    names = {id(p): n for n, p in module.named_parameters()}
    groups = module.param_groups()
    fast = {names[id(p)] for g in groups if g.get("lr") is not None for p in g["params"]}
    slow = {names[id(p)] for g in groups if g.get("lr") is None for p in g["params"]}
    assert all(g["lr"] == pytest.approx(2e-3) for g in groups if "lr" in g)
    assert fast and all(n.startswith("model.cls.") for n in fast) and not any(n.startswith("model.cls.") for n in slow)
    assert "model.bert.embeddings.word_embeddings.weight" in slow  # the decoder weight is this one, tied
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert sorted(fast | slow) == sorted(trainable) and len(fast) + len(slow) == len(trainable)
    with pytest.raises(UserInputError, match="head_lr_factor"):
        tiny_module(head_lr_factor=0.0)


def test_without_nsp_the_pooler_and_nsp_head_are_frozen_and_out_of_the_optimizer():
    module = tiny_module(nsp=False)
    in_groups = {id(p) for group in module.param_groups() for p in group["params"]}
    for part in (module.encoder.pooler, module.model.cls["seq_relationship"]):
        assert all(not p.requires_grad and id(p) not in in_groups for p in part.parameters())


# -------------------------------------------------------------------------------- torch.compile


def fit_losses(compile: bool, steps: int = 3) -> tuple[BertPretrainModule, list[float]]:
    """A tiny dropout-free BertPretrainModule trained ``steps`` steps by a Trainer on fixed batches;
    returns it and the training loss of every step."""
    torch.manual_seed(0)
    module = BertPretrainModule(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0, lr=1e-2, warmup_steps=0, schedule="constant",
                                compile=compile)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    batches = [make_batch(batch_size=4, length=16, vocab=64, seed=seed) for seed in range(steps)]
    quiet_trainer(max_steps=steps, callbacks=[Record()]).fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    return module, losses


@pytest.fixture
def dynamo_counters():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_true_compiles_the_encoder_in_a_real_fit_and_gives_the_eager_losses(backend, dynamo_counters, monkeypatch):
    """compile=True is accepted, compiles the encoder when training starts (TorchDynamo captures its
    forward: frames compiled, one graph) and trains to the same losses and weights as the eager module.
    The default run uses TorchDynamo's "eager" backend (capture without code generation: seconds);
    ``-m slow`` runs the default inductor backend, which builds C++ kernels (about a minute cold)."""
    from lightning_transfer.modules.base import compile_unavailable_reason

    if backend == "inductor":  # the inductor variant needs a C++ compiler: fail, do not skip, where there is none
        assert compile_unavailable_reason(torch.device("cpu")) is None, compile_unavailable_reason(torch.device("cpu"))
    if backend != "inductor":
        compile_in_place = torch.nn.Module.compile
        monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_in_place(self, backend=backend, **kw))
    eager, eager_losses = fit_losses(compile=False)
    assert dynamo_counters["frames"]["ok"] == 0
    compiled, compiled_losses = fit_losses(compile=True)
    assert compiled.encoder._compiled_call_impl is not None and eager.encoder._compiled_call_impl is None
    assert dynamo_counters["frames"]["ok"] >= 1 and dynamo_counters["stats"]["unique_graphs"] >= 1
    assert len(compiled_losses) == 3 and eager_losses[-1] < eager_losses[0]
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=1e-5, atol=1e-6)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes in checkpoints
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------------------- starting points and checks


def test_continuing_from_minilm_starts_from_its_exact_encoder_weights():
    module = BertPretrainModule(pretrained="minilm_demo", nsp=False)
    reference = BertModel.from_pretrained(minilm_directory()).state_dict()
    ours = module.encoder.state_dict()
    assert set(ours) == set(reference) and all(torch.equal(ours[k], reference[k]) for k in reference)
    assert (module.hparams.hidden_size, module.hparams.num_hidden_layers, module.hparams.vocab_size) == (384, 6, 30522)
    assert module.tokenizer is not None and module.tokenizer.get_vocab_size() == 30522  # the directory's tokenizer


def test_pretrained_with_a_different_vocab_size_is_rejected():
    with pytest.raises(UserInputError, match="vocab_size=1000 differs"):
        BertPretrainModule(pretrained="minilm_demo", vocab_size=1000)


class TokenizerOnlyData(pl.LightningDataModule):
    """Just enough DataModule for setup(): a tokenizer, settings and a loader of one fixed batch."""

    def __init__(self, tokenizer, nsp=True, max_seq_length=16):
        super().__init__()
        self.save_hyperparameters("nsp", "max_seq_length")
        self.tokenizer = tokenizer

    def train_dataloader(self):
        batch = make_batch(vocab=self.tokenizer.get_vocab_size())
        return torch.utils.data.DataLoader([batch], batch_size=None)


@pytest.fixture(scope="module")
def small_tokenizer():
    texts = [f"the {a} {b} sat on the {c} mat" for a in ("red", "blue", "green") for b in ("cat", "dog") for c in ("big", "flat")]
    return train_wordpiece(texts * 5, vocab_size=60, min_frequency=1)


def test_vocab_size_mismatch_with_the_data_tokenizer_fails_in_setup_with_one_clear_line(small_tokenizer):
    size = small_tokenizer.get_vocab_size()
    with pytest.raises(UserInputError, match=f"tokenizer has {size} tokens but the model has vocab_size=100"):
        quiet_trainer(max_steps=1).fit(tiny_module(), datamodule=TokenizerOnlyData(small_tokenizer))


def test_nsp_model_with_data_that_makes_no_nsp_labels_fails_in_setup(small_tokenizer):
    with pytest.raises(UserInputError, match="nsp"):
        quiet_trainer(max_steps=1).fit(tiny_module(vocab_size=None), datamodule=TokenizerOnlyData(small_tokenizer, nsp=False))


def test_vocab_size_none_is_taken_from_the_data_tokenizer_in_setup(small_tokenizer):
    module = tiny_module(vocab_size=None)
    assert module.model is None
    quiet_trainer(max_steps=1).fit(module, datamodule=TokenizerOnlyData(small_tokenizer))
    assert module.hparams.vocab_size == small_tokenizer.get_vocab_size() == module.encoder.config.vocab_size
    assert module.tokenizer is small_tokenizer  # kept for export and checkpoints


# -------------------------------------------------------------------------------- end to end


def write_toy_corpus(path, documents=300, sentences=6, seed=0):
    """Documents of templated sentences: learnable structure, so the MLM loss can fall in a few steps."""
    rng = random.Random(seed)
    animals = ["cat", "dog", "bird", "horse", "fox", "owl", "bear", "wolf"]
    colors = ["red", "green", "blue", "small", "big", "old"]
    verbs = ["sees", "chases", "likes", "finds", "follows"]
    places = ["garden", "house", "river", "forest", "field"]
    docs = ["\n".join(f"the {rng.choice(colors)} {rng.choice(animals)} {rng.choice(verbs)} the {rng.choice(animals)} "
                      f"in the {rng.choice(places)} ." for _ in range(sentences)) for _ in range(documents)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A short fit on a toy corpus through TextPretrainDataModule: val MLM losses before and during
    training, the LR of every step, and a checkpoint."""
    root = tmp_path_factory.mktemp("fit")
    data = TextPretrainDataModule(source=str(write_toy_corpus(root / "corpus.txt")), tokenizer_vocab_size=200, max_seq_length=32,
                                  nsp=True, batch_size=16, val_fraction=0.1, cache_dir=str(root / "cache"))
    torch.manual_seed(0)
    module = BertPretrainModule(vocab_size=None, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=96, max_position_embeddings=32, lr=2e-3, warmup_steps=5)
    record = {"lr": [], "val": []}

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            record["lr"].append(trainer.optimizers[0].param_groups[0]["lr"])

        def on_validation_end(self, trainer, pl_module):
            record["val"].append(trainer.callback_metrics["val/mlm_loss"].item())

    before = quiet_trainer(limit_val_batches=3).validate(module, datamodule=data, verbose=False)
    record["val"].append(before[0]["val/mlm_loss"])  # the loss before training
    logger = pl.loggers.CSVLogger(root / "logs", name="", version="")
    trainer = quiet_trainer(max_steps=60, val_check_interval=15, limit_val_batches=3, gradient_clip_val=1.0,
                            callbacks=[Record()], logger=logger)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(root / "model.ckpt")
    return {"module": module, "data": data, "trainer": trainer, "ckpt": root / "model.ckpt", "root": root,
            "hparams": root / "logs" / "hparams.yaml", **record}


def test_short_fit_on_a_text_datamodule_lowers_the_validation_mlm_loss(fitted):
    first, *later = fitted["val"]
    assert len(later) == 3  # after 15, 30 and 45 steps
    assert later[-1] < first - 1.0, fitted["val"]
    metrics = fitted["trainer"].callback_metrics
    for name in ("val/loss", "val/mlm_ppl", "val/mlm_acc", "val/nsp_acc", "train/mlm_loss", "train/mlm_ppl", "train/nsp_acc"):
        assert torch.isfinite(metrics[name]), name
    assert metrics["val/mlm_ppl"].item() == pytest.approx(math.exp(metrics["val/mlm_loss"].item()), rel=1e-4)


def test_logged_hyperparameters_hold_the_model_vocab_size_beside_the_tokenizer_target_size(fitted):
    import yaml

    # The DataModule's tokenizer_vocab_size (the target size, 200) is not the model's vocab_size (the
    # trained tokenizer's actual size): two keys, so Lightning's merge of the two sets has no clash.
    logged = yaml.safe_load(fitted["hparams"].read_text())
    assert logged["tokenizer_vocab_size"] == 200 and logged["vocab_size"] == fitted["data"].vocab_size < 200
    assert logged["hidden_size"] == 48 and logged["nsp"] is True and not any(key.startswith("model/") for key in logged)


def test_hyperparameters_clashing_with_the_datamodule_are_logged_under_a_model_prefix(fitted, tmp_path):
    import yaml

    # model.tokenizer=None takes the DataModule's tokenizer: a valid run, although the two `tokenizer`
    # hyperparameters differ, which would stop Lightning's merge of the two sets.
    tokenizer = save_tokenizer(fitted["data"].tokenizer, tmp_path / "tokenizer")
    data = TextPretrainDataModule(source=str(fitted["root"] / "corpus.txt"), tokenizer=str(tokenizer), max_seq_length=32,
                                  nsp=True, batch_size=16, val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    module = BertPretrainModule(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=32)
    logger = pl.loggers.CSVLogger(tmp_path / "logs", name="", version="")
    quiet_trainer(max_steps=1, limit_val_batches=1, logger=logger).fit(module, datamodule=data)
    logged = yaml.safe_load((tmp_path / "logs" / "hparams.yaml").read_text())
    assert logged["tokenizer"] == str(tokenizer) and logged["model/tokenizer"] is None
    assert logged["vocab_size"] == data.vocab_size and logged["nsp"] is True


def test_learning_rate_warms_up_then_decays_linearly_every_step(fitted):
    lrs = fitted["lr"]
    assert len(lrs) == 60
    expected = [2e-3 * warmup_factor(step, 5, 60, "linear") for step in range(60)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[4] == pytest.approx(2e-3) and lrs[-1] < lrs[30] < lrs[5]


def test_default_optimizer_is_adamw_with_bert_betas_and_no_decay_group(fitted):
    optimizer = fitted["trainer"].optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0]
    assert all(group["betas"] == (0.9, 0.999) for group in optimizer.param_groups)


def test_checkpoint_reloads_alone_with_weights_vocab_size_tokenizer_and_kind(fitted):
    module, path = fitted["module"], fitted["ckpt"]
    loaded = BertPretrainModule.load_from_checkpoint(path)
    assert loaded.hparams.vocab_size == fitted["data"].vocab_size
    reference = module.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in loaded.state_dict().items())
    assert loaded.tokenizer is not None and loaded.tokenizer.to_str() == fitted["data"].tokenizer.to_str()
    marker = torch.load(path, map_location="cpu", weights_only=True)["lightning_transfer"]
    assert (marker["kind"], marker["modality"], marker["state_dict_prefix"]) == ("bert", "text", "model.bert.")
    assert marker["encoder"] == module.encoder.config.to_dict()


def test_save_pretrained_loads_in_transformers_with_identical_logits_and_tokenizer(fitted, tmp_path):
    module = BertPretrainModule.load_from_checkpoint(fitted["ckpt"]).eval()
    directory = module.save_pretrained(tmp_path / "export")
    hf = transformers.BertForPreTraining.from_pretrained(directory).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    encoded = hf_tokenizer(["the red fox sees the owl ."], ["in the garden ."], return_tensors="pt")
    ours = module.tokenizer.encode("the red fox sees the owl .", "in the garden .")
    assert encoded["input_ids"][0].tolist() == ours.ids
    with torch.no_grad():
        hidden = module(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"])
        expected = hf(**encoded)
        assert torch.allclose(module.model.mlm_logits(hidden), expected.prediction_logits, atol=1e-5)
        assert torch.allclose(module.model.nsp_logits(hidden), expected.seq_relationship_logits, atol=1e-5)


def test_checkpoint_is_recognized_by_the_fine_tuning_loader_as_a_bert_encoder(fitted):
    from lightning_transfer.models.loading import load_encoder

    encoder, modality, feature_dim, info = load_encoder(fitted["ckpt"])
    assert (modality, feature_dim, info["kind"]) == ("text", 48, "bert")
    reference = fitted["module"].encoder.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in encoder.state_dict().items())


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
CPU_OVERRIDES = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
                 "--trainer.precision", "32-true", "--trainer.num_nodes", "1"]


@pytest.mark.parametrize("recipe", ["reviews_tiny", "minilm_continue", "wikitext103_base"])
def test_bert_config_builds_its_module_and_datamodule_through_the_cli(recipe, monkeypatch, tmp_path):
    from lightning_transfer.cli import build_cli

    monkeypatch.chdir(REPO)
    # building reads the data (the model's vocab_size is linked to its tokenizer): wikitext-103 is on the Hub,
    # so offline the review corpus stands in for it, with a small tokenizer
    offline = (["--data.init_args.source", "reviews_demo", "--data.init_args.tokenizer_vocab_size", "2000"]
               if recipe == "wikitext103_base" else [])
    cli = build_cli(["--config", f"configs/bert/{recipe}.yaml", *CPU_OVERRIDES, "--trainer.default_root_dir", str(tmp_path),
                     "--data.init_args.cache_dir", str(tmp_path / "cache"), *offline], run=False)
    assert isinstance(cli.model, BertPretrainModule) and isinstance(cli.datamodule, TextPretrainDataModule)
    assert cli.model.hparams.vocab_size == cli.datamodule.vocab_size  # linked (or, for MiniLM, both its 30522)
    assert cli.model.hparams.nsp == cli.datamodule.hparams.nsp
    assert cli.datamodule.hparams.max_seq_length <= cli.model.hparams.max_position_embeddings
    assert cli.trainer.gradient_clip_val == 1.0
