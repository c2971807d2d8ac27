"""BERT's masked-language-model corruption (Devlin et al. 2018, section 3.1), as pure functions.

- :func:`mask_tokens`: each non-special token is selected with probability ``p``.
- :func:`mask_whole_words`: each word (all of its sub-tokens together) is selected with probability ``p``.

Of the selected tokens 80% become ``[MASK]``, 10% a random token and 10% stay as they are; ``labels``
holds the original id at selected positions and -100 (PyTorch's cross-entropy ``ignore_index``)
elsewhere. Inputs are never modified in place. Every random draw comes from ``generator`` when one is
given, so a seeded generator reproduces the same corruption.

Random replacements never draw a special token: the ids excluded are ``mask_token_id`` and every id
found at a special position of the batch (``[CLS]``, ``[SEP]``, ``[PAD]``), plus ``exclude_ids``. This
costs one ``torch.unique`` per batch; the replacement is then uniform over the remaining vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_transfer.errors import require

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    exclude_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level BERT masking.

    Args:
        input_ids: int64 ``B x L`` (any shape works) of token ids in ``[0, vocab_size)``.
        special_tokens_mask: same shape, bool or 0/1; True/1 at ``[CLS]``, ``[SEP]``, ``[PAD]`` (never selected).
        mask_token_id: id of ``[MASK]``.
        vocab_size: size of the vocabulary random replacements come from.
        mlm_probability: selection probability of each non-special token, in ``[0, 1]``.
        generator: a ``torch.Generator`` for every random draw (reproducible corruption); draws happen on
            its device and are moved to ``input_ids``' device.
        exclude_ids: extra ids random replacements must avoid (e.g. ``[UNK]``).

    Returns:
        ``(inputs, labels)``: new int64 tensors shaped like ``input_ids``. ``labels`` is the original id at
        selected positions and -100 elsewhere.

    Bad arguments (shape mismatch, probability outside ``[0, 1]``, ``mask_token_id`` outside the
    vocabulary) raise :class:`~lightning_transfer.errors.UserInputError`.
    """
    special = _check(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability)
    draw = _Draws(generator, input_ids.device)
    selected = (draw.uniform(input_ids.shape) < mlm_probability) & ~special
    return _corrupt(input_ids, selected, special, mask_token_id, vocab_size, draw, exclude_ids)


def mask_whole_words(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    exclude_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking: as :func:`mask_tokens`, but selection is per word.

    ``word_ids`` is int ``B x L`` with the tokenizer's word index of each token (``Encoding.word_ids``,
    see :func:`lightning_transfer.data.tokenizer.batch_word_ids`) and -1 at special and padding
    positions. A word is a maximal run of adjacent positions with the same id, so word indices that
    restart in the second segment of a pair are fine. Each word is selected with probability
    ``mlm_probability`` and all of its tokens with it (so about ``p`` of the words, not of the tokens,
    are selected); the 80/10/10 replacement is then drawn per token. Special positions are never
    selected, whatever ``word_ids`` says.
    """
    special = _check(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability)
    require(
        word_ids.shape == input_ids.shape,
        f"word_ids has shape {tuple(word_ids.shape)} but input_ids {tuple(input_ids.shape)}; "
        "pass one word id per token",
    )
    require(input_ids.dim() == 2, f"mask_whole_words needs batch x length inputs, got shape {tuple(input_ids.shape)}")
    word_ids = word_ids.to(input_ids.device)
    in_word = word_ids >= 0
    previous = torch.nn.functional.pad(word_ids, (1, 0), value=-1)[:, :-1]
    starts = in_word & (word_ids != previous)  # B x L, True at each word's first token
    word_index = (starts.cumsum(dim=1) - 1).clamp(min=0)  # B x L: k for the k-th word of the row
    draw = _Draws(generator, input_ids.device)
    word_selected = draw.uniform(input_ids.shape) < mlm_probability  # B x L: one draw per possible word
    selected = word_selected.gather(1, word_index) & in_word & ~special
    return _corrupt(input_ids, selected, special, mask_token_id, vocab_size, draw, exclude_ids)


# ----------------------------------------------------------------------------------------------------


class _Draws:
    """All random draws of one call, from ``generator`` (on its own device) when given."""

    def __init__(self, generator: torch.Generator | None, device: torch.device):
        self.generator, self.device = generator, device
        self.draw_device = generator.device if generator is not None else device

    def uniform(self, shape: torch.Size) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.draw_device).to(self.device)

    def integers(self, high: int, shape: torch.Size) -> torch.Tensor:
        return torch.randint(high, shape, generator=self.generator, device=self.draw_device).to(self.device)


def _check(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float,
) -> torch.Tensor:
    require(
        special_tokens_mask.shape == input_ids.shape,
        f"special_tokens_mask has shape {tuple(special_tokens_mask.shape)} but input_ids "
        f"{tuple(input_ids.shape)}; pass one flag per token",
    )
    require(0.0 <= mlm_probability <= 1.0, f"mlm_probability must be in [0, 1], got {mlm_probability}")
    require(
        0 <= mask_token_id < vocab_size,
        f"mask_token_id={mask_token_id} is outside the vocabulary of {vocab_size} tokens; "
        "pass the tokenizer's [MASK] id",
    )
    return special_tokens_mask.to(input_ids.device).bool()


def _corrupt(
    input_ids: torch.Tensor,
    selected: torch.Tensor,
    special: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    draw: _Draws,
    exclude_ids: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """80% ``[MASK]``, 10% random non-special token, 10% unchanged, among ``selected``."""
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    u = draw.uniform(input_ids.shape)  # one uniform per token decides its fate
    to_mask = selected & (u < 0.8)
    to_random = selected & (u >= 0.8) & (u < 0.9)
    random_ids = _random_ids_avoiding(input_ids, special, mask_token_id, vocab_size, draw, exclude_ids)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def _random_ids_avoiding(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    draw: _Draws,
    exclude_ids: Sequence[int],
) -> torch.Tensor:
    """Uniform ids over ``[0, vocab_size)`` minus the excluded ids, shaped like ``input_ids``.

    Draw ``r`` uniformly in ``[0, V - k)`` and map it to the r-th allowed id: with the excluded ids sorted
    as ``x_0 < ... < x_{k-1}``, that id is ``r + #{j : x_j - j <= r}``."""
    extra = torch.tensor([*exclude_ids, mask_token_id], dtype=input_ids.dtype, device=input_ids.device)
    excluded = torch.unique(torch.cat([input_ids[special], extra]))  # sorted
    excluded = excluded[(excluded >= 0) & (excluded < vocab_size)]
    require(len(excluded) < vocab_size, "every vocabulary id is excluded from random replacement; check exclude_ids")
    r = draw.integers(vocab_size - len(excluded), input_ids.shape).to(input_ids.dtype)
    shifted = excluded - torch.arange(len(excluded), device=excluded.device, dtype=excluded.dtype)
    return r + torch.searchsorted(shifted, r, right=True)


__all__ = ["IGNORE_INDEX", "mask_tokens", "mask_whole_words"]
