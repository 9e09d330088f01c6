"""Engine pieces: seeded sampler and augmentation, teacher BN on batch statistics, per-role needs."""

from __future__ import annotations

import collections

import torch

from kdbench.data.augment import NUM_VIEWS, PadCropFlip, apply_view, view_of, view_params
from kdbench.data.sampler import EpochSampler, ShardSampler, epoch_seed, sample_seed
from kdbench.tasks.base import batch_statistics
from kdbench.methods import METHODS
from kdbench.models import create_model


def test_sharded_sampler_splits_each_global_batch_exactly():
    """World of 2 with local batch 4 sees, step by step, the single-process batch of 8 (and the same seeds)."""
    single = list(EpochSampler(37, seed=3))
    ranks = [list(EpochSampler(37, seed=3, rank=r, world=2)) for r in range(2)]
    padded = single + single[:1]  # 37 samples padded to 38 by wrapping
    for step in range(len(ranks[0]) // 4):
        local = ranks[0][step * 4:(step + 1) * 4] + ranks[1][step * 4:(step + 1) * 4]
        assert sorted(local) == sorted(padded[step * 8:(step + 1) * 8])


def test_sampler_start_resumes_mid_epoch_and_epochs_differ():
    s = EpochSampler(50, seed=1)
    s.set_epoch(4)
    whole = list(s)
    s.set_epoch(4, start=17)
    assert list(s) == whole[17:] and len(s) == 33
    s.set_epoch(5)
    assert [i for i, _ in s] != [i for i, _ in whole]
    assert sorted(i for i, _ in whole) == list(range(50))
    assert whole[0][1] == sample_seed(epoch_seed(1, 4), whole[0][0])


def test_shard_sampler_covers_the_test_set_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


def test_reference_augmentation_has_exactly_162_uniform_views():
    image = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32) + 1
    views = {apply_view(image, v).numpy().tobytes() for v in range(NUM_VIEWS)}
    assert len(views) == NUM_VIEWS == 162
    # every view is what torchvision's pad-4 crop + flip would give: offsets 0..8, flip or not
    assert {view_params(v) for v in range(NUM_VIEWS)} == {(t, l, f) for t in range(9) for l in range(9) for f in (False, True)}
    counts = collections.Counter(view_of(sample_seed(epoch_seed(0, e), i)) for e in range(1, 41) for i in range(2000))
    n = sum(counts.values())
    assert set(counts) == set(range(NUM_VIEWS))
    expected = n / NUM_VIEWS
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 230, chi2  # 161 degrees of freedom: p < 0.001 beyond ~230
    flips = sum(c for v, c in counts.items() if v % 2) / n
    assert abs(flips - 0.5) < 0.01
    assert torch.equal(PadCropFlip()(image, 123), PadCropFlip()(image, 123))


def test_batch_statistics_normalises_with_the_batch_and_leaves_running_stats():
    torch.manual_seed(0)
    model = create_model("resnet8", 10).eval()
    x = torch.randn(6, 3, 32, 32) * 3 + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        eval_out = model(x)
        with batch_statistics(model):
            batch_out = model(x)
        reference = model.train()(x)  # plain train mode (this one does update the running stats)
    assert not torch.allclose(eval_out, batch_out)
    torch.testing.assert_close(batch_out, reference)
    model.load_state_dict(before)
    model.eval()
    with torch.no_grad(), batch_statistics(model):
        model(x)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_methods_declare_what_each_model_must_give():
    assert METHODS["reviewkd"].needs_of("teacher") >= {"preact", "embedding"}
    assert "preact" not in METHODS["reviewkd"].needs_of("student")
    assert METHODS["ofa"].needs_of("teacher") == {"logits"}
    assert METHODS["kd"].needs_of("teacher") == METHODS["kd"].needs_of("student") == {"logits"}
