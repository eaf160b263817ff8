"""The tensor-resident loader: order, resumption, augmentation statistics, normalisation, padding."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from analoglearn import data
from analoglearn.data.loader import derive_seed
from analoglearn.errors import DataError


def _batches(loader, epoch=0, start=0):
    return list(loader.epoch(epoch, start_batch=start))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


@pytest.fixture(scope="module")
def synthetic():
    return data.load("Synthetic", "train").subset(300, seed=0)


def _coordinates_dataset(n: int, side: int = 12, **spec_changes) -> data.ImageDataset:
    """2-channel images whose channel 0 holds 10·row + 5 and channel 1 holds 10·column + 5; x = pixel/255."""
    spec = dataclasses.replace(data.get_spec("Synthetic"), shape=(2, side, side), mean=(0.0, 0.0),
                               std=(1.0, 1.0), **spec_changes)
    rows = (10 * torch.arange(side) + 5).view(side, 1).expand(side, side)
    images = torch.stack([rows, rows.T]).to(torch.uint8).expand(n, 2, side, side).contiguous()
    return data.ImageDataset(images, torch.arange(n) % 10, spec, "train")


def test_same_seed_same_batches_other_seed_or_epoch_differs(synthetic):
    a = data.Loader(synthetic, 64, shuffle=True, augment=True, seed=5)
    b = data.Loader(synthetic, 64, shuffle=True, augment=True, seed=5)
    assert _same(_batches(a, 2), _batches(b, 2))
    assert _same(list(a), _batches(a, 0))  # __iter__ is epoch 0
    assert not torch.equal(a.order(0), a.order(1))
    c = data.Loader(synthetic, 64, shuffle=True, augment=True, seed=6)
    assert not torch.equal(a.order(0), c.order(0))


@pytest.mark.parametrize("start", [0, 1, 3, 4, 5])
def test_start_batch_yields_exactly_the_remaining_batches(synthetic, start):
    loader = data.Loader(synthetic, 64, shuffle=True, augment=True, seed=1)
    assert len(loader) == 5
    full = _batches(loader, 7)
    assert _same(_batches(loader, 7, start), full[start:])


def test_every_example_once_and_last_partial_batch_kept(synthetic):
    loader = data.Loader(synthetic, 128, shuffle=True, augment=False, seed=0)
    batches = _batches(loader, 3)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [128, 128, 44]
    order = loader.order(3)
    assert torch.equal(order.sort().values, torch.arange(300))
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(x, loader.normalise(synthetic.images[order].float() / 255))
    assert torch.equal(torch.cat([b[1] for b in batches]), synthetic.labels[order])


def test_no_shuffle_keeps_dataset_order(synthetic):
    loader = data.Loader(synthetic, 100, shuffle=False, augment=False, seed=0)
    assert torch.equal(torch.cat([y for _, y in loader.epoch(4)]), synthetic.labels)


def test_batches_have_the_promised_types(synthetic):
    x, y = next(iter(data.Loader(synthetic, 32, shuffle=True, augment=True, seed=0)))
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28)
    assert y.dtype == torch.int64 and y.shape == (32,)


def test_normalisation_gives_zero_mean_unit_std():
    loader = data.Loader(data.load("Synthetic"), 500, shuffle=True, augment=False, seed=0)
    x = torch.cat([x for x, _ in loader])
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_pad_to_zero_pads_centrally_before_normalising(synthetic):
    loader = data.Loader(synthetic, 50, shuffle=False, augment=False, seed=0, pad_to=32)
    assert loader.shape == (1, 32, 32)
    x, _ = next(iter(loader))
    mean, std = synthetic.spec.mean[0], synthetic.spec.std[0]
    border = torch.cat([x[..., :2, :].flatten(), x[..., -2:, :].flatten(), x[..., :, :2].flatten()])
    assert torch.allclose(border, torch.full_like(border, -mean / std))
    inner = (synthetic.images[:50].float() / 255 - mean) / std
    assert torch.allclose(x[..., 2:30, 2:30], inner)
    odd = data.Loader(synthetic, 50, shuffle=False, augment=False, seed=0, pad_to=31)
    assert odd.shape == (1, 31, 31) and odd.images[0, 0, 1, 1] == synthetic.images[0, 0, 0, 0]


def _source_coordinates(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column each output pixel came from (x = pixel/255 of a coordinates dataset)."""
    pixel = (x * 255).round()
    return ((pixel[:, 0] - 5) / 10).round().long(), ((pixel[:, 1] - 5) / 10).round().long()


def test_crop_offsets_and_flips_have_the_right_statistics():
    dataset = _coordinates_dataset(4000, crop_padding=2, padding_mode="edge", hflip=True)
    x, _ = next(data.Loader(dataset, 4000, shuffle=False, augment=True, seed=0).epoch(0))
    rows, cols = _source_coordinates(x)
    c = 6  # a centre pixel is never clamped by the padding
    dy = rows[:, c, c] - c
    flipped = cols[:, c, c + 1] < cols[:, c, c]
    dx = torch.where(flipped, cols[:, c, c] - (11 - c), cols[:, c, c] - c)
    assert abs(flipped.float().mean().item() - 0.5) < 0.04
    for shift in (dy, dx):
        freq = torch.bincount(shift + 2, minlength=5).float() / len(shift)
        assert shift.min() == -2 and shift.max() == 2 and torch.all((freq - 0.2).abs() < 0.03)
    assert (dy == dx).float().mean() < 0.3  # independent offsets
    # Edge padding replicates the border: every source coordinate is a real one.
    assert rows.min() == 0 and rows.max() == 11 and cols.min() == 0 and cols.max() == 11


def test_no_flip_when_the_spec_says_so_and_zeros_for_constant_padding():
    dataset = _coordinates_dataset(500, crop_padding=3, padding_mode="constant", hflip=False)
    x, _ = next(data.Loader(dataset, 500, shuffle=False, augment=True, seed=0).epoch(0))
    _, cols = _source_coordinates(x)
    assert torch.all(cols[:, 6, 7] > cols[:, 6, 6])  # never flipped
    zero = (x == 0).all(dim=1)  # both channels black: padding
    assert zero.any() and not zero[:, 3:9, 3:9].any()


def test_vectorised_augmentation_equals_a_per_example_reference(synthetic):
    spec = dataclasses.replace(synthetic.spec, crop_padding=4, hflip=True)
    dataset = dataclasses.replace(synthetic, spec=spec)
    loader = data.Loader(dataset, 40, shuffle=True, augment=True, seed=9)
    x, _ = list(loader.epoch(2))[1]
    gen = torch.Generator().manual_seed(derive_seed(9, "augment", 2, 1))
    offsets = torch.randint(0, 9, (40, 2), generator=gen)
    flips = torch.rand(40, generator=gen) < 0.5
    raw = synthetic.images[loader.order(2)[40:80]].float() / 255
    for n in range(40):
        padded = F.pad(raw[n : n + 1], (4, 4, 4, 4), mode="replicate")[0]
        i, j = offsets[n].tolist()
        crop = padded[:, i : i + 28, j : j + 28]
        crop = crop.flip(-1) if flips[n] else crop
        assert torch.equal(x[n], loader.normalise(crop[None])[0])


def test_augment_false_is_identity(synthetic):
    plain = data.Loader(synthetic, 300, shuffle=False, augment=False, seed=0)
    x, _ = next(iter(plain))
    assert torch.allclose(x, plain.normalise(synthetic.images.float() / 255))


def test_loader_errors_speak_to_the_user(synthetic):
    with pytest.raises(DataError, match="batch_size"):
        data.Loader(synthetic, 0, shuffle=True, augment=False, seed=0)
    loader = data.Loader(synthetic, 100, shuffle=True, augment=False, seed=0)
    for bad in (-1, 4):
        with pytest.raises(DataError, match=r"start_batch must be in 0\.\.3"):
            loader.epoch(0, start_batch=bad)
    with pytest.raises(DataError, match="pad_to=20 is smaller"):
        data.Loader(synthetic, 10, shuffle=True, augment=False, seed=0, pad_to=20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(synthetic):
    cpu = data.Loader(synthetic, 64, shuffle=True, augment=True, seed=3, pad_to=32)
    gpu = data.Loader(synthetic, 64, shuffle=True, augment=True, seed=3, pad_to=32, device="cuda")
    for (x, y), (u, v) in zip(cpu.epoch(1), gpu.epoch(1)):
        assert u.is_cuda and torch.allclose(x, u.cpu()) and torch.equal(y, v.cpu())
