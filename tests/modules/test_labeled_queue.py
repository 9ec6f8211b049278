"""MoCo queue with labels and flags (spec 3.8; spec 8 item 18; STYLE section 6)."""

from __future__ import annotations

import pytest
import torch

from coreg.modules import LabeledQueue


def _batch(b: int, start: int, d: int = 2, k: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.arange(start, start + b, dtype=torch.float32)
    keys = ids.unsqueeze(1).expand(b, d).clone()
    labels = ids.unsqueeze(1).expand(b, k).clone() * 10
    flags = (ids % 2 == 0).float()
    return keys, labels, flags


def test_starts_as_zeros() -> None:
    q = LabeledQueue(5, 2, 3)
    keys, labels, flags = q.contents()
    assert keys.abs().sum() == 0 and labels.abs().sum() == 0 and flags.abs().sum() == 0
    assert q.ptr.dtype == torch.long and int(q.ptr) == 0
    assert set(dict(q.named_buffers())) == {"keys", "labels", "flags", "ptr"}


def test_fifo_wraps_with_batch_not_dividing_size() -> None:
    size = 7
    queue = LabeledQueue(size, 2, 3)
    expected = torch.zeros(size)
    ptr, start = 0, 1
    for b in (3, 3, 3, 2, 5):
        before = queue.contents()[0].clone()
        keys, labels, flags = _batch(b, start)
        queue.enqueue(keys, labels, flags)
        rows = [(ptr + j) % size for j in range(b)]
        for j, r in enumerate(rows):
            expected[r] = start + j
        ptr = (ptr + b) % size
        start += b
        got_keys, got_labels, got_flags = queue.contents()
        assert int(queue.ptr) == ptr
        torch.testing.assert_close(got_keys[:, 0], expected)
        torch.testing.assert_close(got_labels[:, 0], expected * 10)
        torch.testing.assert_close(got_flags, ((expected % 2 == 0) & (expected > 0)).float())
        untouched = [r for r in range(size) if r not in rows]
        torch.testing.assert_close(got_keys[untouched], before[untouched])


def test_batch_larger_than_queue_keeps_last_rows() -> None:
    queue = LabeledQueue(4, 2, 3)
    queue.enqueue(*_batch(1, 100))  # ptr = 1
    queue.enqueue(*_batch(6, 1))  # writes 1..6 at rows 1,2,3,0,1,2 -> last 4 survive
    keys = queue.contents()[0][:, 0]
    torch.testing.assert_close(keys, torch.tensor([4.0, 5.0, 6.0, 3.0]))
    assert int(queue.ptr) == (1 + 6) % 4


def test_contents_are_clones_and_no_grad() -> None:
    queue = LabeledQueue(4, 2, 3)
    snapshot = queue.contents()
    keys, labels, flags = _batch(2, 1)
    keys.requires_grad_(True)
    queue.enqueue(keys * 2, labels, flags.bool())
    assert snapshot[0].abs().sum() == 0  # bank taken before the enqueue is unchanged
    assert not queue.keys.requires_grad


def test_shape_errors() -> None:
    queue = LabeledQueue(4, 2, 3)
    keys, labels, flags = _batch(2, 1)
    with pytest.raises(ValueError):
        queue.enqueue(keys[:, :1], labels, flags)
    with pytest.raises(ValueError):
        queue.enqueue(keys, labels[:, :2], flags)
    with pytest.raises(ValueError):
        queue.enqueue(keys, labels, flags[:1])
    with pytest.raises(ValueError):
        LabeledQueue(0, 2, 3)
