"""Image tasks: the paper's FM/16 and FM/32 (FashionMNIST) and the embedded ``digits`` task.

- **FM/16, FM/32** (DESIGN section 5, paper Table 1): the FMConvNet 16-32-32 / 32-64-64 on
  FashionMNIST, Adam lr 6e-3, batch 128, 10k steps. Validation = the 10k official test images
  (the paper's "validation accuracy"), pixels scaled to [0, 1] and standardised with the training
  mean / std (0.2860 / 0.3530). Targets 89.5 % / 90.5 %.
- **digits**: the same FM/16 convnet on scikit-learn's 8x8 digits (1797 images, shipped with
  scikit-learn: no files at all). A fixed stratified split (seed 0) keeps 360 images for
  validation and trains on 1437; pixels /16 then standardised. Adam lr 1e-3 (with FM's 6e-3
  Adam reaches 95 % within 200 steps, before the first nowcast), batch 128, 2000 steps, target
  95 %, evaluated every 20 steps, nowcast period 200 (states every 40 steps).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from neuralgraph.examples import FMConvNet

from .classification import ClassificationData
from .data import load_digits, load_fashion_mnist, load_mnist_test
from .registry import register_task
from .task import Task

__all__ = ["fashion_mnist_data", "digits_data", "mnist8_data"]

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def _adam(lr: float):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


@functools.lru_cache(maxsize=2)
def _fashion(data_dir: str | None) -> tuple[torch.Tensor, ...]:
    raw = load_fashion_mnist(data_dir)

    def images(a: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(a.astype(np.float32)) / 255.0 - FASHION_MEAN) / FASHION_STD).unsqueeze(1)

    return images(raw["train_x"]), torch.from_numpy(raw["train_y"].astype(np.int64)), images(raw["test_x"]), torch.from_numpy(raw["test_y"].astype(np.int64))


def fashion_mnist_data(data_dir: str | os.PathLike | None = None, batch_size: int = 128) -> ClassificationData:
    """FashionMNIST train (60k) / validation (the 10k test images) as :class:`ClassificationData`."""
    return ClassificationData(*_fashion(None if data_dir is None else str(data_dir)), batch_size=batch_size)


DIGITS_VAL = 360


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, ...]:
    images, labels = load_digits()
    rng = np.random.default_rng(0)
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: DIGITS_VAL // 10] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), val)
    x = torch.from_numpy(images).unsqueeze(1) / 16.0
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    y = torch.from_numpy(labels)
    return x[train], y[train], x[val], y[val]


def digits_data(data_dir: str | os.PathLike | None = None, batch_size: int = 128) -> ClassificationData:
    """scikit-learn's digits: 1437 training / 360 validation images (a fixed stratified split)."""
    return ClassificationData(*_digits(), batch_size=batch_size)


MNIST8_VAL = 2000


@functools.lru_cache(maxsize=2)
def _mnist8(data_dir: str | None) -> tuple[torch.Tensor, ...]:
    images, labels = load_mnist_test(data_dir)
    # 28x28 -> drop the 2-pixel border -> 3x3 average pooling: 8x8 images like scikit-learn's digits
    x = torch.from_numpy(images[:, 2:26, 2:26].astype(np.float32) / 255.0).reshape(-1, 8, 3, 8, 3).mean(dim=(2, 4)).unsqueeze(1)
    rng = np.random.default_rng(0)
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: MNIST8_VAL // 10] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), val)
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    y = torch.from_numpy(labels.astype(np.int64))
    return x[train], y[train], x[val], y[val]


def mnist8_data(data_dir: str | os.PathLike | None = None, batch_size: int = 128) -> ClassificationData:
    """MNIST's 10k test images pooled to 8x8: 8,000 training / 2,000 validation images (fixed split)."""
    return ClassificationData(*_mnist8(None if data_dir is None else str(data_dir)), batch_size=batch_size)


def _fashion_task(name: str, hid: tuple[int, int, int], params: str, target: float, in_distribution: bool) -> Task:
    """A FashionMNIST task of the paper (FM/16, FM/32): they differ only in the widths and the target."""
    return register_task(
        Task(
            name=name,
            description=f"FashionMNIST, convnet {'-'.join(map(str, hid))} ({params} parameters)",
            build_model=lambda: FMConvNet(hid),
            make_optimizer=_adam(6e-3),
            load_data=fashion_mnist_data,
            metric="accuracy",
            higher_is_better=True,
            target=target,
            max_steps=10_000,
            eval_every=200,
            period=1000,
            validation="the 10,000 FashionMNIST test images",
            optimizer="Adam lr 6e-3, batch 128",
            in_distribution=in_distribution,
        )
    )


FM16 = _fashion_task("fm16", (16, 32, 32), "14,378", 0.895, in_distribution=True)
FM32 = _fashion_task("fm32", (32, 64, 64), "56,394", 0.905, in_distribution=False)

DIGITS = register_task(
    Task(
        name="digits",
        description="scikit-learn 8x8 digits, convnet 16-32-32 (embedded, no files needed)",
        build_model=lambda: FMConvNet((16, 32, 32)),
        make_optimizer=_adam(1e-3),
        load_data=digits_data,
        metric="accuracy",
        higher_is_better=True,
        target=0.95,
        max_steps=2000,
        eval_every=20,
        period=200,
        validation="360 images, 36 per class, a fixed split (seed 0)",
        optimizer="Adam lr 1e-3, batch 128",
    )
)

MNIST8 = register_task(
    Task(
        name="mnist8",
        description="MNIST pooled to 8x8, convnet 16-32-32: a validation task in digits' regime",
        build_model=lambda: FMConvNet((16, 32, 32)),
        make_optimizer=_adam(1e-3),
        load_data=mnist8_data,
        metric="accuracy",
        higher_is_better=True,
        target=0.92,
        max_steps=2000,
        eval_every=20,
        period=200,
        validation="2,000 of the MNIST test images (200 per class, a fixed split); trains on the other 8,000",
        optimizer="Adam lr 1e-3, batch 128",
        in_distribution=False,
    )
)
