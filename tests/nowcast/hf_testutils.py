"""Helpers shared by the Trainer-callback tests and their torchrun worker: a tiny GPT-2, a token
dataset, a Trainer run, a frozen-base model with trainable adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

VOCAB, BLOCK = 32, 16


class TokenData(torch.utils.data.Dataset):
    """``n`` fixed random sequences; each item is ``input_ids`` = ``labels`` (causal LM)."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        # a learnable pattern (each token repeats the previous one + 1) with noise
        start = torch.randint(0, VOCAB, (n, 1), generator=gen)
        ids = (start + torch.arange(BLOCK)) % VOCAB
        noise = torch.rand(n, BLOCK, generator=gen) < 0.2
        self.ids = torch.where(noise, torch.randint(0, VOCAB, (n, BLOCK), generator=gen), ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


class Adapted(nn.Module):
    """A frozen base ``Linear`` plus a trainable low-rank adapter, as LoRA builds it (``lora_A`` / ``lora_B``)."""

    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) * 0.1)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T


class LoraGPT2(nn.Module):
    """A tiny GPT-2 with every weight frozen and LoRA-style adapters on its attention projections."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.model = tiny_gpt2(seed)
        self.model.requires_grad_(False)
        for block in self.model.transformer.h:
            conv = block.attn.c_attn  # a transformers Conv1D: weight [in, out]
            linear = nn.Linear(conv.weight.shape[0], conv.weight.shape[1])
            with torch.no_grad():
                linear.weight.copy_(conv.weight.T)
                linear.bias.copy_(conv.bias)
            block.attn.c_attn = Adapted(linear)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any):
        return self.model(input_ids=input_ids, labels=labels)


def training_args(out: Path | str, steps: int = 30, **options: Any) -> TrainingArguments:
    settings = {
        "max_steps": steps, "per_device_train_batch_size": 4, "learning_rate": 3e-3, "save_strategy": "no",
        "logging_steps": 5, "report_to": "none", "use_cpu": True, "disable_tqdm": True, "seed": 0,
        "lr_scheduler_type": "cosine", "warmup_steps": 3, "dataloader_num_workers": 0, **options,
    }
    return TrainingArguments(str(out), **settings)


def run_trainer(model: nn.Module, args: TrainingArguments, callbacks: list | None = None, resume: str | None = None) -> Trainer:
    trainer = Trainer(model=model, args=args, train_dataset=TokenData(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
