"""Language tasks: GPT-2-style transformers (nanoGPT layout) on Tiny Shakespeare and WikiText-2.

- **shakespeare-3-24 / shakespeare-2-32**: character level (65 symbols), layers-width 3-24 (3
  heads) and 2-32 (4 heads), context 64, batch 32; the first 90 % of the text trains, the last
  10 % validates (as nanoGPT's shakespeare_char). These stand in for the paper's LM1B 3-24 / 2-32
  (LM1B is not available offline).
- **wikitext2-3-64**: word level, 3-64 (4 heads), context 64, batch 16. Only WikiText-2's valid
  and test files are available offline: the model trains on ``valid.txt`` and is evaluated on
  ``test.txt``. The vocabulary is the words seen at least 5 times in ``valid.txt`` (4,709 with
  ``<unk>`` and ``<eos>``; the full 13,777 would make the output layer dominate the cost on a CPU);
  other words, in both files, map to ``<unk>``.

All use AdamW (weight decay 1e-2) with the learning rate given per task and evaluate the
validation perplexity on a fixed set of windows (:class:`TokenData`).
"""

from __future__ import annotations

import functools
import os

import torch

from neuralgraph.models.nanogpt import GPT, GPTConfig

from .data import load_text, word_tokens
from .language import CharVocab, TokenData, WordVocab
from .registry import register_task
from .task import Task

__all__ = ["shakespeare_data", "wikitext2_data"]

SHAKESPEARE_BLOCK, WIKITEXT_BLOCK = 64, 64
SHAKESPEARE_BATCH, WIKITEXT_BATCH = 32, 16
WIKITEXT_MIN_COUNT = 5


def _adamw(lr: float, weight_decay: float = 1e-2):
    return lambda model: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _gpt(layers: int, width: int, heads: int, vocab: int, block: int):
    return lambda: GPT(GPTConfig(block_size=block, vocab_size=vocab, n_layer=layers, n_head=heads, n_embd=width))


@functools.lru_cache(maxsize=2)
def _shakespeare(data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    text = load_text("tinyshakespeare", "input.txt", data_dir)
    ids = CharVocab(text).encode(text)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:]


def shakespeare_data(data_dir: str | os.PathLike | None = None) -> TokenData:
    """Tiny Shakespeare, characters: first 90 % train, last 10 % validation."""
    train, val = _shakespeare(None if data_dir is None else str(data_dir))
    return TokenData(train, val, block_size=SHAKESPEARE_BLOCK, batch_size=SHAKESPEARE_BATCH)


SHAKESPEARE_VOCAB = 65
WIKITEXT_VOCAB = 4_709


@functools.lru_cache(maxsize=2)
def _wikitext(data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    train_tokens = word_tokens(load_text("wikitext-2", "valid.txt", data_dir))
    test_tokens = word_tokens(load_text("wikitext-2", "test.txt", data_dir))
    vocab = WordVocab(train_tokens, min_count=WIKITEXT_MIN_COUNT)
    if len(vocab) != WIKITEXT_VOCAB:
        raise ValueError(f"WikiText-2 valid.txt gives {len(vocab)} words, expected {WIKITEXT_VOCAB}: is it the tokenized v1 valid.txt?")
    return vocab.encode(train_tokens), vocab.encode(test_tokens)


def wikitext2_data(data_dir: str | os.PathLike | None = None) -> TokenData:
    """WikiText-2 words: trains on valid.txt, validates on test.txt."""
    train, val = _wikitext(None if data_dir is None else str(data_dir))
    return TokenData(train, val, block_size=WIKITEXT_BLOCK, batch_size=WIKITEXT_BATCH)


def _shakespeare_task(layers: int, width: int, heads: int) -> Task:
    """A character-level Tiny Shakespeare task; the two sizes differ only in the model."""
    return register_task(
        Task(
            name=f"shakespeare-{layers}-{width}",
            description=f"Tiny Shakespeare characters, GPT-2 style {layers} layers x {width} wide, {heads} heads",
            build_model=_gpt(layers, width, heads, SHAKESPEARE_VOCAB, SHAKESPEARE_BLOCK),
            make_optimizer=_adamw(2e-3),
            load_data=shakespeare_data,
            metric="perplexity",
            higher_is_better=False,
            target=7.0,
            max_steps=5000,
            eval_every=100,
            period=500,
            validation="last 10 % of the text, 64 windows of 64 characters",
            optimizer="AdamW lr 2e-3, wd 1e-2, batch 32 x 64",
            in_distribution=True,
        )
    )


SHAKESPEARE_3_24 = _shakespeare_task(3, 24, 3)
SHAKESPEARE_2_32 = _shakespeare_task(2, 32, 4)

WIKITEXT2_3_64 = register_task(
    Task(
        name="wikitext2-3-64",
        description="WikiText-2 words (train on valid, evaluate on test), GPT-2 style 3 layers x 64 wide, 4 heads",
        build_model=_gpt(3, 64, 4, WIKITEXT_VOCAB, WIKITEXT_BLOCK),
        make_optimizer=_adamw(2e-3),
        load_data=wikitext2_data,
        metric="perplexity",
        higher_is_better=False,
        target=72.0,
        max_steps=1500,
        eval_every=100,
        period=300,
        validation="WikiText-2 test.txt, 64 windows of 64 words",
        optimizer="AdamW lr 2e-3, wd 1e-2, batch 16 x 64",
    )
)
