"""Which episodes share a behaviour-cloning batch (``training.batching``, ``training.bc.epoch_batches``).

A batch runs chunk by chunk to its longest episode with one optimizer step a chunk, so with ``random`` batches the
last chunks hold only a batch's longest episodes (a full step on the tails of one or two) and compute padding for the
rest. ``length`` forms batches of episodes of similar length. ``random`` stays what training always did
(the shipped policies' runs): the slices of one permutation, drawing nothing more from the epoch's generator."""

import numpy as np
import pytest
from test_training import tiny_config

from liquid_control.policy import PolicyConfigError, validate_config
from liquid_control.training.bc import LENGTH_POOL_BATCHES, count_chunks, epoch_batches

B, S = 16, 16


def _lengths(count=520, seed=0):
    """Episode lengths spread as in a robust rover run with 1.5x its data (520 episodes of 20-150 updates)."""
    return np.random.default_rng(seed).integers(20, 151, count)


def _steps(lengths, batches):
    """Per optimizer step: how many episodes it holds updates of, and how many updates of its B * S."""
    steps = []
    for batch in batches:
        for start in range(0, int(max(lengths[batch])), S):
            left = lengths[batch] - start
            steps.append(((left > 0).sum(), np.clip(left, 0, S).sum()))
    return np.array(steps)


def test_random_batches_are_the_slices_of_one_permutation_and_draw_nothing_more():
    lengths = _lengths()
    rng, reference = np.random.default_rng([3, 7, 5]), np.random.default_rng([3, 7, 5])
    batches = epoch_batches(lengths, B, rng, "random")
    order = reference.permutation(len(lengths))
    assert [list(b) for b in batches] == [list(order[g : g + B]) for g in range(0, len(order), B)]
    assert rng.random() == reference.random()  # the augmentation's draws after it are the same as before


def test_length_batches_hold_every_episode_once_of_similar_length_and_weigh_updates_alike():
    lengths = _lengths()
    random = epoch_batches(lengths, B, np.random.default_rng(1), "random")
    by_length = epoch_batches(lengths, B, np.random.default_rng(1), "length")
    assert sorted(np.concatenate(by_length).tolist()) == list(range(len(lengths)))
    assert sorted(map(len, by_length)) == sorted(map(len, random))  # one batch short of B at most, as random's last
    spread = [np.ptp(lengths[b]) for b in by_length]
    assert np.median(spread) < 0.2 * np.median([np.ptp(lengths[b]) for b in random]), spread
    # random: ~15-23% of the steps hold updates of fewer than 4 of a batch's 16 episodes (the tails of its longest),
    # and ~57-60% of what the steps compute is a real update (the rest padding); length: ~2-4% and ~83-85%
    steps = {name: _steps(lengths, batches) for name, batches in (("random", random), ("length", by_length))}
    few = {name: (s[:, 0] < B / 4).mean() for name, s in steps.items()}
    real = {name: s[:, 1].sum() / (len(s) * B * S) for name, s in steps.items()}
    assert few["random"] > 0.1 and few["length"] < 0.06 and real["random"] < 0.65 and real["length"] > 0.8, (few, real)
    assert len(steps["length"]) == count_chunks(list(map(range, lengths)), S, by_length) < 0.8 * len(steps["random"])
    # which episodes meet still varies from epoch to epoch
    other = epoch_batches(lengths, B, np.random.default_rng(2), "length")
    assert {tuple(sorted(b)) for b in by_length} != {tuple(sorted(b)) for b in other}


def test_length_batches_pool_a_few_batches_so_episodes_of_all_lengths_can_meet_across_epochs():
    """Sorting the whole epoch would give the same batches every epoch (up to ties); a pool is LENGTH_POOL_BATCHES."""
    lengths = np.arange(LENGTH_POOL_BATCHES * B * 3)  # all different: a global sort would fix every batch
    one = {tuple(sorted(b)) for b in epoch_batches(lengths, B, np.random.default_rng(1), "length")}
    two = {tuple(sorted(b)) for b in epoch_batches(lengths, B, np.random.default_rng(2), "length")}
    assert len(one & two) < len(one) // 2


def test_length_batches_run_in_shuffled_order_not_shortest_first():
    """Sorted pools cut into batches would otherwise run each pool's batches from its shortest to its longest."""
    lengths = _lengths()
    means = [np.mean(lengths[b]) for b in epoch_batches(lengths, B, np.random.default_rng(4), "length")]
    rising = sum(b > a for a, b in zip(means, means[1:]))
    assert 0.3 < rising / (len(means) - 1) < 0.7, means


def test_an_unknown_batching_is_refused_naming_the_key():
    with pytest.raises(PolicyConfigError, match=r"training\.batching.*'sorted'.*random.*length"):
        validate_config(tiny_config(batching="sorted"))
    with pytest.raises(ValueError, match="batching must be 'random' or 'length'"):
        epoch_batches(_lengths(), B, np.random.default_rng(0), "sorted")
