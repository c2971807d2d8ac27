"""memory_format: a channels_last conv backbone computes what the contiguous one does (within fp32 rounding,
against a float64 reference), checkpoints and exports stay contiguous and load into either layout, the
optimizers step channels_last parameters as contiguous ones, and text encoders ignore the setting."""

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from lightning_transfer import SimCLRModule
from lightning_transfer.errors import UserInputError
from lightning_transfer.modules.finetune import FineTuneModule
from lightning_transfer.optim import build_optimizer, split_decay_groups

CHANNELS_LAST = torch.channels_last
TINY_BERT = dict(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
)


def simclr(memory_format: str, **overrides) -> SimCLRModule:
    settings = dict(
        backbone="resnet18",
        small_images=True,
        projection_hidden_dim=64,
        projection_dim=16,
        num_classes=0,
        memory_format=memory_format,
    )
    settings.update(overrides)
    return SimCLRModule(**settings)


def conv_weights(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.dim() == 4]


def is_channels_last(tensor: torch.Tensor) -> bool:
    """Strictly NHWC in memory (a tensor with C == 1 or H == W == 1 is both, so callers pick shapes where it is not)."""
    return tensor.is_contiguous(memory_format=CHANNELS_LAST) and not tensor.is_contiguous()


def record_inputs(conv: nn.Module) -> list[torch.Tensor]:
    """The inputs ``conv`` receives from now on."""
    seen: list[torch.Tensor] = []
    conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return seen


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.double() - reference).norm() / reference.norm()).item()


def gradients(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.double().flatten() for p in module.parameters()])


def simclr_batch(images: torch.Tensor) -> dict:
    half = len(images) // 2
    return {"views": (images[:half], images[half:]), "labels": None}


def test_channels_last_resnet_trains_on_nhwc_filters_and_images_and_matches_contiguous_within_fp32_rounding():
    """ResNet-18 (3x3 stem, residual and 1x1 stride-2 shortcut convolutions): with channels_last every filter
    and the images the stem sees are NHWC; the NT-Xent loss with batch statistics and the gradients (BatchNorm
    in eval mode: batch statistics of 8 images make the fp32 gradient itself ill-conditioned) agree with a
    float64 contiguous reference as closely as the contiguous fp32 model does."""
    torch.manual_seed(0)
    nhwc, nchw, reference = simclr("channels_last"), simclr("contiguous"), simclr("contiguous")
    nchw.load_state_dict(nhwc.state_dict())
    reference.load_state_dict(nhwc.state_dict())
    reference.double()
    assert all(is_channels_last(w) for w in conv_weights(nhwc.backbone) if w.shape[-1] > 1)  # 1x1: both layouts
    assert all(w.is_contiguous() for w in conv_weights(nchw.backbone))
    stem_inputs = record_inputs(nhwc.backbone.conv1)

    images = torch.randn(8, 3, 8, 8)
    losses = {
        name: module.training_step(simclr_batch(x), 0).item()
        for name, module, x in (("nhwc", nhwc, images), ("nchw", nchw, images), ("ref", reference, images.double()))
    }
    assert is_channels_last(stem_inputs[0]) and images.is_contiguous()  # converted inside, the batch untouched
    assert losses["nhwc"] == pytest.approx(losses["ref"], rel=1e-5)
    assert losses["nchw"] == pytest.approx(losses["ref"], rel=1e-5)

    for module, x in ((nhwc, images), (nchw, images), (reference, images.double())):
        module.eval()
        module.training_step(simclr_batch(x), 0).backward()
    assert is_channels_last(nhwc.backbone.layer2[0].conv1.weight.grad)  # gradients in the parameters' layout
    nhwc_error, nchw_error = (
        relative_error(gradients(nhwc), gradients(reference)),
        relative_error(gradients(nchw), gradients(reference)),
    )
    assert nchw_error < 5e-5 and nhwc_error < 5e-5, (nhwc_error, nchw_error)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(images), nchw(images), rtol=1e-4, atol=1e-5)


def test_fine_tuning_an_image_encoder_uses_channels_last_and_gives_the_contiguous_logits():
    config = {"backbone": "convnet", "in_channels": 3, "small_images": True, "width": 4}
    torch.manual_seed(0)
    nhwc = FineTuneModule(encoder_config=config, num_classes=3)
    nchw = FineTuneModule(encoder_config=config, num_classes=3, memory_format="contiguous")
    nchw.load_state_dict(nhwc.state_dict())
    first_conv = nhwc.encoder.features[0]
    assert is_channels_last(first_conv.weight) and nchw.encoder.features[0].weight.is_contiguous()
    inputs = record_inputs(first_conv)
    batch = {"images": torch.randn(6, 3, 8, 8), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    torch.testing.assert_close(nhwc(batch), nchw(batch), rtol=1e-5, atol=1e-6)
    assert is_channels_last(inputs[0])


def fit_on_fixed_batches(module: SimCLRModule, steps: int = 2) -> pl.Trainer:
    torch.manual_seed(1)
    samples = [{"views": (torch.randn(1, 8, 8), torch.randn(1, 8, 8)), "labels": -1} for _ in range(8 * steps)]
    run = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    run.fit(module, DataLoader(samples, batch_size=8))
    return run


def test_a_channels_last_checkpoint_and_export_hold_contiguous_weights_that_load_into_either_layout(tmp_path):
    """Trained with channels_last: the Lightning checkpoint's state_dict, ``backbone_state_dict()`` and the
    exported safetensors hold contiguous tensors with the trained values; the checkpoint loads into a
    contiguous module with the same outputs and into a channels_last one that stays NHWC; the export
    fine-tunes with the same features."""
    torch.manual_seed(0)
    module = SimCLRModule(
        backbone="convnet",
        width=4,
        in_channels=1,
        projection_hidden_dim=16,
        projection_dim=8,
        optimizer="lars",
        lr=0.5,
        lr_scaling="none",
        warmup_steps=0,
        num_classes=0,
    )
    before = module.backbone.features[3].weight.detach().clone()
    run = fit_on_fixed_batches(module)
    trained = module.backbone.features[3].weight
    assert is_channels_last(trained) and not torch.equal(trained, before)  # trained, still NHWC
    path = tmp_path / "simclr.ckpt"
    run.save_checkpoint(path)

    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(value.is_contiguous() for value in state.values())
    for name, param in module.named_parameters():
        assert torch.equal(state[name], param.detach()), name
    exported = module.backbone_state_dict()
    assert all(value.is_contiguous() for value in exported.values())
    save_file(exported, tmp_path / "weights.safetensors")  # safetensors refuses non-contiguous tensors

    images = torch.randn(5, 1, 8, 8)
    module.eval()
    with torch.no_grad():
        expected = module(images)
        for layout, check in (("contiguous", lambda w: w.is_contiguous()), ("channels_last", is_channels_last)):
            loaded = SimCLRModule.load_from_checkpoint(path, memory_format=layout).eval()
            assert all(check(w) for w in conv_weights(loaded.backbone) if w.shape[1] > 1), layout
            torch.testing.assert_close(loaded(images), expected, rtol=1e-5, atol=1e-6)

        written = module.export_encoder(tmp_path / "encoder")
        weights = load_file(written / "encoder.safetensors")
        assert all(torch.equal(weights[k], v) for k, v in exported.items())
        finetune = FineTuneModule(pretrained=str(written), num_classes=2).eval()
        assert is_channels_last(finetune.encoder.features[3].weight)
        torch.testing.assert_close(finetune.features({"images": images}), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["lars", "sgd", "adamw", "adam"])
def test_optimizer_steps_give_the_same_parameters_in_both_layouts(optimizer):
    """Three steps over a conv filter (decayed, LARS-adapted), a 1-d norm weight and a bias (neither): a
    channels_last filter with channels_last gradients (as autograd makes them) ends where the contiguous
    one does, and stays channels_last."""
    torch.manual_seed(0)
    shapes = {"conv.weight": (8, 4, 3, 3), "norm.weight": (8,), "conv.bias": (8,)}
    values = {name: torch.randn(shape) for name, shape in shapes.items()}
    steps = [{name: torch.randn(shape) for name, shape in shapes.items()} for _ in range(3)]
    results = {}
    for layout in (torch.contiguous_format, CHANNELS_LAST):
        params = {
            name: nn.Parameter(v.clone().contiguous(memory_format=layout) if v.dim() == 4 else v.clone())
            for name, v in values.items()
        }
        opt = build_optimizer(optimizer, split_decay_groups(params.items(), 0.1), lr=0.1, weight_decay=0.1)
        for grads in steps:
            for name, param in params.items():
                param.grad = grads[name].contiguous(memory_format=layout) if param.dim() == 4 else grads[name].clone()
            opt.step()
        results[layout] = params
    nhwc, nchw = results[CHANNELS_LAST], results[torch.contiguous_format]
    assert is_channels_last(nhwc["conv.weight"])
    for name in shapes:
        torch.testing.assert_close(nhwc[name], nchw[name], rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(nchw["conv.weight"], values["conv.weight"])


def test_an_unknown_memory_format_is_one_clear_error_for_images_and_text():
    message = "unknown memory_format 'nhwc'; choose one of channels_last, contiguous"
    with pytest.raises(UserInputError, match=message):
        SimCLRModule(backbone="convnet", memory_format="nhwc")
    with pytest.raises(UserInputError, match=message):
        FineTuneModule(encoder_config=TINY_BERT, num_classes=2, memory_format="nhwc")


def test_text_fine_tuning_ignores_memory_format():
    torch.manual_seed(0)
    default = FineTuneModule(encoder_config=TINY_BERT, num_classes=3)
    contiguous = FineTuneModule(encoder_config=TINY_BERT, num_classes=3, memory_format="contiguous")
    contiguous.load_state_dict(default.state_dict())
    mask = torch.ones(4, 6, dtype=torch.long)
    batch = {
        "input_ids": torch.randint(5, 64, (4, 6)),
        "attention_mask": mask,
        "token_type_ids": 0 * mask,
        "labels": torch.tensor([0, 1, 2, 0]),
    }
    default.eval(), contiguous.eval()
    assert torch.equal(default(batch), contiguous(batch))
    assert torch.isfinite(default.training_step(batch, 0))


class FlatMLP(nn.Module):
    """A custom backbone that flattens with ``view``, which a channels_last input would break."""

    feature_dim = 16

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3 * 8 * 8, 16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.view(len(images), -1))


def test_a_custom_backbone_module_keeps_its_own_layout():
    module = SimCLRModule(backbone=FlatMLP(), projection_hidden_dim=16, projection_dim=8, num_classes=0)
    loss = module.training_step(simclr_batch(torch.randn(8, 3, 8, 8)), 0)
    assert torch.isfinite(loss)
