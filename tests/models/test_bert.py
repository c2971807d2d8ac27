"""Our BERT against Hugging Face's: same weights in, same numbers out, both directions."""
from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.errors import UserInputError
from lightning_transfer.models.bert import BertConfig, BertForPretraining, BertModel, additive_attention_mask

TINY_CONFIGS = [
    dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    dict(vocab_size=73, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, hidden_act="relu"),
    dict(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
         hidden_act="gelu_new", type_vocab_size=3, layer_norm_eps=1e-6),
]
TOL = 1e-4


def tiny_config(**overrides) -> BertConfig:
    values = dict(TINY_CONFIGS[0], max_position_embeddings=32)
    values.update(overrides)
    return BertConfig(**values)


def padded_batch(vocab_size: int, type_vocab_size: int = 2, batch: int = 4, length: int = 12):
    """Random ids with right padding of different lengths (row 0 unpadded) and two segments."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    lengths = torch.tensor([length, 7, 3, 9])[:batch]
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    token_type_ids = (torch.arange(length)[None, :] >= (lengths[:, None] // 2)).long() * attention_mask
    token_type_ids = token_type_ids.clamp(max=type_vocab_size - 1)
    return input_ids, attention_mask, token_type_ids


def hf_config(config: BertConfig) -> transformers.BertConfig:
    return transformers.BertConfig(**config.to_dict())


def assert_close_where_real(ours: torch.Tensor, theirs: torch.Tensor, attention_mask: torch.Tensor) -> None:
    real = attention_mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("values", TINY_CONFIGS, ids=["gelu-2layers", "relu-1layer", "gelu_new-3layers"])
def test_loading_a_transformers_checkpoint_gives_its_hidden_states_and_pooler(values, tmp_path):
    config = BertConfig(**values, max_position_embeddings=16)
    theirs = transformers.BertModel(hf_config(config)).eval()
    theirs.save_pretrained(tmp_path)
    ours = BertModel.from_pretrained(tmp_path).eval()
    input_ids, attention_mask, token_type_ids = padded_batch(config.vocab_size, config.type_vocab_size)
    with torch.no_grad():
        expected = theirs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden, pooled = ours.forward_with_pooler(input_ids, attention_mask, token_type_ids)
    assert hidden.shape == (4, 12, config.hidden_size)
    assert_close_where_real(hidden, expected.last_hidden_state, attention_mask)
    torch.testing.assert_close(pooled, expected.pooler_output, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("values", TINY_CONFIGS[:2], ids=["gelu-2layers", "relu-1layer"])
def test_saved_directory_loads_in_transformers_with_the_same_hidden_states(values, tmp_path):
    config = BertConfig(**values, max_position_embeddings=16)
    ours = BertModel(config).eval()
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "bert" and saved["architectures"] == ["BertModel"]
    theirs = transformers.BertModel.from_pretrained(tmp_path).eval()
    input_ids, attention_mask, token_type_ids = padded_batch(config.vocab_size)
    with torch.no_grad():
        expected = theirs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = ours(input_ids, attention_mask, token_type_ids)
    assert_close_where_real(hidden, expected.last_hidden_state, attention_mask)
    torch.testing.assert_close(ours.pooled(hidden), expected.pooler_output, atol=TOL, rtol=TOL)


def test_real_minilm_checkpoint_gives_the_same_hidden_states_as_transformers():
    directory = minilm_directory()
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # longest in batch instead of the file's fixed 128
    sentences = ["A gripping, beautifully shot thriller.", "Dull.", "The plot never quite holds together, sadly."]
    encodings = tokenizer.encode_batch(sentences)
    input_ids = torch.tensor([e.ids for e in encodings])
    attention_mask = torch.tensor([e.attention_mask for e in encodings])
    assert attention_mask.sum(1).min() < input_ids.shape[1]  # the batch really has padding
    ours = BertModel.from_pretrained(directory).eval()
    theirs = transformers.BertModel.from_pretrained(directory).eval()
    with torch.no_grad():
        hidden = ours(input_ids, attention_mask)
        expected = theirs(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert ours.config.hidden_size == 384 and len(ours.encoder.layer) == 6
    assert_close_where_real(hidden, expected, attention_mask)


def test_pretraining_logits_at_masked_positions_equal_transformers_full_logits(tmp_path):
    config = tiny_config()
    theirs = transformers.BertForPreTraining(hf_config(config)).eval()
    with torch.no_grad():  # non-zero biases so that a lost or untied bias shows
        theirs.cls.predictions.bias.normal_()
        theirs.cls.predictions.transform.dense.bias.normal_()
    theirs.save_pretrained(tmp_path / "theirs")
    ours = BertForPretraining.from_pretrained(tmp_path / "theirs").eval()
    input_ids, attention_mask, token_type_ids = padded_batch(config.vocab_size)
    masked = (torch.rand(input_ids.shape) < 0.3) & attention_mask.bool()
    with torch.no_grad():
        expected = theirs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        mlm, nsp = ours(input_ids, attention_mask, token_type_ids, masked_positions=masked)
    assert mlm.shape == (int(masked.sum()), config.vocab_size)
    torch.testing.assert_close(mlm, expected.prediction_logits[masked], atol=TOL, rtol=TOL)
    torch.testing.assert_close(nsp, expected.seq_relationship_logits, atol=TOL, rtol=TOL)

    ours.save_pretrained(tmp_path / "ours")  # and back: transformers reads our heads and ties the decoder
    again = transformers.BertForPreTraining.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        roundtrip = again(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    torch.testing.assert_close(roundtrip.prediction_logits, expected.prediction_logits, atol=TOL, rtol=TOL)
    torch.testing.assert_close(roundtrip.seq_relationship_logits, expected.seq_relationship_logits, atol=TOL, rtol=TOL)


def test_mlm_head_projects_only_the_selected_rows():
    model = BertForPretraining(tiny_config()).eval()
    input_ids, attention_mask, _ = padded_batch(100)
    masked = torch.zeros_like(attention_mask, dtype=torch.bool)
    masked[0, 3] = masked[1, 1] = masked[3, 5] = True
    rows_seen = []
    hook = model.cls["predictions"].transform.dense.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape))
    with torch.no_grad():
        hidden = model.bert(input_ids, attention_mask)
        selected = model.mlm_logits(hidden, masked)
        everywhere = model.mlm_logits(hidden)
    hook.remove()
    assert rows_seen[0] == (3, 64)  # gathered before the transform and the vocabulary projection
    assert everywhere.shape == (4, 12, 100)
    torch.testing.assert_close(selected, everywhere[masked])
    positions = masked.flatten().nonzero().squeeze(1)  # flat indices, as the collator gives them
    with torch.no_grad():
        assert torch.equal(model.mlm_logits(hidden, positions), selected)
    with pytest.raises(UserInputError, match="masked_positions"):
        model.mlm_logits(hidden, masked.long())


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_an_all_ones_attention_mask_gives_exactly_what_no_mask_gives(autocast):
    """The forward applies any mask it is given (it never reads the mask's values on the host, which
    would wait for the device): with nothing padded, the same hidden states and gradients, bit for bit,
    in training mode with dropout, as without a mask (what the collators pass for unpadded batches)."""
    model = BertModel(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)).train()
    input_ids, _, token_type_ids = padded_batch(100)
    results = []
    for mask in (None, torch.ones_like(input_ids)):
        model.zero_grad()
        torch.manual_seed(3)  # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            hidden = model(input_ids, mask, token_type_ids)
        hidden.float().square().mean().backward()
        results.append((hidden.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (hidden_none, grads_none), (hidden_ones, grads_ones) = results
    assert torch.equal(hidden_none, hidden_ones)
    assert len(grads_none) == len(grads_ones) > 0 and all(torch.equal(a, b) for a, b in zip(grads_none, grads_ones))


def test_pretraining_model_from_plain_bert_directory_initializes_tied_heads(tmp_path):
    encoder = BertModel(tiny_config())
    encoder.save_pretrained(tmp_path)
    model = BertForPretraining.from_pretrained(tmp_path)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)
    assert torch.all(model.cls["predictions"].bias == 0)
    assert float(model.cls["predictions"].transform.dense.weight.detach().std()) == pytest.approx(0.02, rel=0.2)
    with torch.no_grad():  # the decoder is the embedding matrix itself, so it follows embedding updates
        model.bert.embeddings.word_embeddings.weight[7].fill_(3.0)
        logits = model.mlm_logits(torch.zeros(1, 1, 64))
    transformed = model.cls["predictions"].transform(torch.zeros(1, 1, 64))
    torch.testing.assert_close(logits[0, 0, 7], transformed.sum() * 3.0)


def test_checkpoint_with_bert_prefix_position_ids_and_bin_format_loads(tmp_path):
    reference = BertForPretraining(tiny_config()).eval()
    reference.save_pretrained(tmp_path / "source")
    state = load_file(str(tmp_path / "source" / "model.safetensors"))  # keys carry the `bert.` prefix
    state["bert.embeddings.position_ids"] = torch.arange(32)[None]
    state["classifier.weight"] = torch.zeros(2, 64)  # a task head BertModel has no use for
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "source" / "config.json").read_text())
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    loaded = BertModel.from_pretrained(tmp_path / "bin").eval()
    input_ids, attention_mask, _ = padded_batch(100)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids, attention_mask), reference.bert(input_ids, attention_mask))


def test_fully_padded_rows_stay_finite_in_fp32_and_bf16_autocast():
    model = BertForPretraining(tiny_config()).eval()
    input_ids, attention_mask, token_type_ids = padded_batch(100)
    attention_mask[2] = 0  # a sequence with no real token at all
    with torch.no_grad():
        fp32 = model.bert(input_ids, attention_mask, token_type_ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.bert(input_ids, attention_mask, token_type_ids)
            mlm = model.mlm_logits(bf16)
            nsp = model.nsp_logits(bf16)
    for tensor in (fp32, bf16, mlm, nsp):
        assert torch.isfinite(tensor).all()
    real = attention_mask.bool()  # bf16 is close to fp32 where it matters
    assert (bf16.float()[real] - fp32[real]).abs().max() < 0.15


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_additive_mask_keeps_a_fully_masked_softmax_finite(dtype):
    keep = torch.tensor([[True, False, True], [False, False, False]])[:, None, None, :]  # B x 1 x 1 x L
    mask = additive_attention_mask(keep, dtype)
    assert mask.dtype == dtype
    scores = torch.full((2, 1, 1, 3), -30.0, dtype=dtype)  # adding a negative score must not overflow to -inf
    probs = torch.softmax((scores + mask).float(), dim=-1)  # the naive softmax, no kernel safety net
    torch.testing.assert_close(probs[0, 0, 0], torch.tensor([0.5, 0.0, 0.5]))
    torch.testing.assert_close(probs[1, 0, 0], torch.full((3,), 1 / 3))


def test_gradients_reach_every_parameter_in_training_mode():
    model = BertForPretraining(tiny_config()).train()
    input_ids, attention_mask, token_type_ids = padded_batch(100)
    labels = input_ids.masked_fill(torch.rand(input_ids.shape) > 0.5, -100).masked_fill(attention_mask == 0, -100)
    selected = labels != -100
    hidden = model.bert(input_ids, attention_mask, token_type_ids)
    mlm_loss = torch.nn.functional.cross_entropy(model.mlm_logits(hidden, selected).float(), labels[selected])
    nsp_loss = torch.nn.functional.cross_entropy(model.nsp_logits(hidden).float(), torch.tensor([0, 1, 0, 1]))
    (mlm_loss + nsp_loss).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_state_dict_keys_are_the_transformers_keys():
    config = tiny_config()
    ours = set(BertForPretraining(config).state_dict())
    theirs = set(transformers.BertForPreTraining(hf_config(config)).state_dict())
    tied_copies = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert ours == theirs - tied_copies


@pytest.mark.parametrize("breakage", ["roberta", "no_weights", "no_config", "not_a_directory", "wrong_shapes"])
def test_non_bert_directory_raises_one_line_error(breakage, tmp_path):
    BertModel(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    target = tmp_path
    if breakage == "roberta":
        config["model_type"] = "roberta"
        (tmp_path / "config.json").write_text(json.dumps(config))
    elif breakage == "no_weights":
        (tmp_path / "model.safetensors").unlink()
    elif breakage == "no_config":
        (tmp_path / "config.json").unlink()
    elif breakage == "not_a_directory":
        target = tmp_path / "missing"
    elif breakage == "wrong_shapes":
        config["hidden_size"], config["num_attention_heads"] = 32, 2
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError) as raised:
        BertModel.from_pretrained(target)
    assert "\n" not in str(raised.value)
    assert {"roberta": "model_type", "no_weights": "model.safetensors", "no_config": "config.json",
            "not_a_directory": "not a directory", "wrong_shapes": "shapes"}[breakage] in str(raised.value)


def test_config_validation_and_hugging_face_dict_round_trip(tmp_path):
    with pytest.raises(UserInputError, match="not divisible"):
        BertConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(UserInputError, match="hidden_act"):
        BertConfig(hidden_act="swish")
    config = BertConfig.from_json_file(minilm_directory() / "config.json")  # has many keys we do not use
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (384, 6, 1536)
    assert BertConfig.from_dict(config.to_dict()) == config
    assert BertConfig() == BertConfig.from_dict(transformers.BertConfig().to_dict())


def test_too_long_input_raises_user_input_error():
    model = BertModel(tiny_config(max_position_embeddings=8))
    with pytest.raises(UserInputError, match="max_position_embeddings=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
