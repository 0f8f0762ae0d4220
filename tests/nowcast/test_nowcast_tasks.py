"""Tasks: data lookup, splits, batches, metrics and the registry."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch

from nowcast.tasks import DataNotFoundError, TokenData, get_task, tasks
from nowcast.tasks.data import find_dataset, read_idx, word_tokens


def test_registry_lists_the_issue_tasks():
    names = set(tasks())
    assert {"digits", "fm16", "fm32", "shakespeare-3-24", "shakespeare-2-32", "wikitext2-3-64"} <= names
    with pytest.raises(KeyError, match="unknown task 'cifar'.*digits"):
        get_task("cifar")


@pytest.mark.parametrize("name", sorted(tasks()))
def test_every_task_is_documented_and_builds_a_convertible_model(name):
    import neuralgraph

    task = get_task(name)
    assert task.validation and task.optimizer and task.metric in ("accuracy", "perplexity")
    model = task.model(seed=0)
    assert torch.equal(next(iter(task.model(seed=0).parameters())), next(iter(model.parameters())))
    assert not torch.equal(next(iter(task.model(seed=1).parameters())), next(iter(model.parameters())))
    graph = neuralgraph.convert(model, lpe=0)
    assert graph.num_params == sum(p.numel() for p in model.parameters())


def test_missing_dataset_names_every_place_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("NOWCAST_DATA", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        find_dataset("no-such-set", ("a.bin",), tmp_path / "given")
    message = str(err.value)
    assert "given" in message and "env" in message and "--data-dir" in message and "a.bin" in message


def test_fashion_mnist_is_found_in_a_user_folder(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    labels = bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([3, 7])
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(labels)  # uncompressed twin also accepted
    found = find_dataset("fashion-mnist", ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"), tmp_path)
    assert found == tmp_path
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    assert read_idx(tmp_path / "train-labels-idx1-ubyte.gz").tolist() == [3, 7]
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + b"\x00" * 24))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "bad.gz")


def test_digits_split_is_fixed_stratified_and_disjoint():
    data = get_task("digits").load_data(None)
    assert len(data.train_x) == 1437 and len(data.val_x) == 360
    assert torch.bincount(data.val_y, minlength=10).tolist() == [36] * 10
    train_rows = {tuple(r) for r in data.train_x.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in data.val_x.flatten(1).tolist())
    assert overlap < 5  # the dataset itself holds a few duplicate images


def test_mnist8_pools_the_mnist_test_images_to_8x8_with_a_fixed_stratified_split():
    from nowcast.tasks.data import load_mnist_test

    try:
        images, labels = load_mnist_test()
    except DataNotFoundError:
        pytest.skip("MNIST test files not available")
    data = get_task("mnist8").load_data(None)
    assert data.train_x.shape == (8000, 1, 8, 8) and data.val_x.shape == (2000, 1, 8, 8)
    assert torch.bincount(data.val_y, minlength=10).tolist() == [200] * 10
    assert len(data.train_y) + len(data.val_y) == len(labels) == 10_000
    # each image is a 3x3-pooled crop of an MNIST test image, standardised by one affine map
    pooled = (images[:, 2:26, 2:26].astype(np.float64) / 255.0).reshape(-1, 8, 3, 8, 3).mean(axis=(2, 4)).reshape(-1, 64)
    ours = torch.cat([data.train_x, data.val_x]).flatten(1).double().numpy()
    offset = ours.min()  # a blank pixel (0 before standardising)
    slope = (ours.max() - offset) / pooled.max()
    for row in ours[:: 499]:
        assert np.abs(pooled - (row - offset) / slope).max(axis=1).min() < 1e-4
    assert float(data.train_x.mean()) == pytest.approx(0.0, abs=1e-4) and float(data.train_x.std()) == pytest.approx(1.0, abs=1e-3)
    assert get_task("mnist8").target == 0.92 and not get_task("mnist8").in_distribution


def test_classification_batches_are_seeded_epochs():
    data = get_task("digits").load_data(None)
    a, b, c = (list(zip(range(12), data.batches(s))) for s in (0, 0, 1))
    assert all(torch.equal(x[1][0], y[1][0]) for x, y in zip(a, b))
    assert not torch.equal(a[0][1][0], c[0][1][0])
    seen = torch.cat([y for _, (_, y) in a[:11]])  # one epoch = 11 batches of 128 from 1437
    assert len(seen) == 11 * 128


def test_accuracy_of_a_perfect_and_a_constant_classifier():
    data = get_task("digits").load_data(None)

    class Lookup(torch.nn.Module):
        def forward(self, x):
            rows = {tuple(r): int(y) for r, y in zip(data.val_x.flatten(1).tolist(), data.val_y)}
            return torch.nn.functional.one_hot(torch.tensor([rows[tuple(r)] for r in x.flatten(1).tolist()]), 10).float()

    assert data.evaluate(Lookup()) == pytest.approx(1.0, abs=0.02)

    class Zero(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([3]), 1.0)

    assert data.evaluate(Zero()) == pytest.approx(0.1)


def test_token_data_windows_and_perplexity():
    stream = torch.arange(1000) % 7
    data = TokenData(stream, stream.clone(), block_size=16, batch_size=4, eval_windows=5)
    x, y = next(data.batches(0))
    assert x.shape == (4, 16) and torch.equal(y[:, :-1], x[:, 1:])

    class Uniform(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, 7)

    assert data.evaluate(Uniform()) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="block_size"):
        TokenData(stream[:10], stream, block_size=16, batch_size=4)


def test_wikitext_tokens_follow_the_published_counts(shared):
    path = shared / "data" / "wikitext-2" / "valid.txt"
    if not path.is_file():
        pytest.skip("WikiText-2 not available")
    assert len(word_tokens(path.read_text(encoding="utf-8"))) == 217_646


def test_language_data_loads_offline(shared):
    if not (shared / "data" / "tinyshakespeare").is_dir():
        pytest.skip("Tiny Shakespeare not available")
    data = get_task("shakespeare-2-32").load_data(None)
    assert len(data.train) + len(data.val) == 1_115_394
    model = get_task("shakespeare-2-32").model(0)
    assert math.isclose(data.evaluate(model), 65, rel_tol=0.1)  # an untrained model is near-uniform
