"""OptimizedModule: every module checks its optimizer and schedule settings once, at construction,
with one clear UserInputError line naming the bad setting."""
import pytest

from lightning_transfer import BertPretrainModule, FineTuneModule, SimCLRModule
from lightning_transfer.errors import UserInputError

MODULES = {
    "simclr": lambda **kw: SimCLRModule(backbone="convnet", width=4, in_channels=1, projection_hidden_dim=8,
                                        projection_dim=4, num_classes=0, **kw),
    "bert_pretrain": lambda **kw: BertPretrainModule(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16,
                                                     max_position_embeddings=16, **kw),
    "finetune": lambda **kw: FineTuneModule(encoder_config={"backbone": "convnet", "in_channels": 1, "width": 4},
                                            num_classes=2, **kw),
}
BAD_SETTINGS = [  # (setting, bad value, what the message must say)
    ("optimizer", "adagrad", "unknown optimizer 'adagrad'; choose one of lars, adamw, sgd, adam"),
    ("optimizer", None, "unknown optimizer None"),
    ("lr", 0.0, "lr must be a number > 0"),
    ("lr", -1e-3, "lr must be a number > 0"),
    ("lr", float("nan"), "lr must be a number > 0"),
    ("weight_decay", -0.1, "weight_decay must be a number >= 0"),
    ("momentum", 1.0, "momentum must be a number in [0, 1)"),
    ("momentum", -0.1, "momentum must be a number in [0, 1)"),
    ("betas", (0.9,), "betas must be two numbers in [0, 1)"),
    ("betas", (0.9, 1.0), "betas must be two numbers in [0, 1)"),
    ("betas", (-0.1, 0.999), "betas must be two numbers in [0, 1)"),
    ("betas", 0.9, "betas must be two numbers in [0, 1)"),
    ("warmup_steps", -1, "warmup_steps must be an integer >= 0"),
    ("warmup_steps", 2.5, "warmup_steps must be an integer >= 0"),
    ("warmup_fraction", 1.0, "warmup_fraction must be a number in [0, 1)"),
    ("warmup_fraction", -0.1, "warmup_fraction must be a number in [0, 1)"),
    ("schedule", "step", "unknown schedule 'step'; choose one of cosine, linear, constant"),
    ("min_lr_factor", 1.5, "min_lr_factor must be a number in [0, 1]"),
    ("min_lr_factor", -0.1, "min_lr_factor must be a number in [0, 1]"),
]


@pytest.mark.parametrize("setting, value, message", BAD_SETTINGS,
                         ids=[f"{setting}={value!r}" for setting, value, _ in BAD_SETTINGS])
@pytest.mark.parametrize("module", list(MODULES))
def test_a_bad_optimization_setting_is_one_user_input_error_at_construction(module, setting, value, message):
    with pytest.raises(UserInputError) as info:
        MODULES[module](**{setting: value})
    text = str(info.value)
    assert message in text and setting in text, text
    assert "\n" not in text and repr(value) in text, text


@pytest.mark.parametrize("module", list(MODULES))
def test_usable_settings_at_the_edges_of_their_ranges_are_accepted(module):
    built = MODULES[module](optimizer="SGD", lr=1e-9, weight_decay=0.0, momentum=0.0, betas=[0.0, 0.0],
                            warmup_steps=0, warmup_fraction=0.0, schedule="constant", min_lr_factor=1.0)
    assert built.hparams.optimizer == "SGD" and built.hparams.min_lr_factor == 1.0
