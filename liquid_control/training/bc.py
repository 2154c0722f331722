"""Behaviour cloning over whole episodes with truncated BPTT.

Episodes are grouped into batches; each batch is cut into chunks of ``sequence_length`` updates that are
processed in order, carrying the (detached) recurrent state from one chunk to the next. The core therefore
trains on exactly the states it meets when it runs an episode from its start, with the episode's real,
irregular dt, while gradients only flow back ``sequence_length`` updates. Padding (shorter episodes of a
batch) is masked out of both the state and the loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from liquid_control.policy import observation_keys

from .augment import EpisodeAugmentation


def action_loss(policy, predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean squared error with every action dimension scaled to [-1, 1] by its bounds."""
    half_range = 0.5 * (policy.action_high - policy.action_low)
    target = torch.maximum(torch.minimum(target, policy.action_high), policy.action_low)
    err = ((predicted - target) / half_range).pow(2).mean(dim=-1)
    weight = mask.to(err.dtype)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


def _chunk(group, keys, start: int, length: int):
    """Stack updates [start, start+length) of each episode in ``group``, zero-padded, with a validity mask
    (padding: False) and a loss mask (also False where an episode has no label, see ``Episode.label_mask``).

    The camera arrives as each episode's distinct frames of the chunk (B, F, H, W, 3) with ``image_index``
    (B, length) into them, so the CNN runs once per frame (see ``Policy.encode_with``).
    """
    batch = len(group)
    obs = {}
    for key in keys:
        if key == "image":
            obs["image"], obs["image_index"] = _chunk_frames(group, start, length)
            continue
        sample = group[0].observations[key]
        out = np.zeros((batch, length) + sample.shape[1:], dtype=sample.dtype)
        for b, ep in enumerate(group):
            part = ep.observations[key][start : start + length]
            out[b, : len(part)] = part
        obs[key] = torch.from_numpy(out)
    dt = np.zeros((batch, length), np.float32)
    labels = np.zeros((batch, length, group[0].expert_action.shape[1]), np.float32)
    mask = np.zeros((batch, length), bool)
    labelled = np.zeros((batch, length), bool)
    for b, ep in enumerate(group):
        n = max(0, min(length, len(ep) - start))
        dt[b, :n] = ep.dt[start : start + n]
        labels[b, :n] = ep.expert_action[start : start + n]
        mask[b, :n] = True
        labelled[b, :n] = True if ep.label_mask is None else ep.label_mask[start : start + n]
    return obs, torch.from_numpy(dt), torch.from_numpy(labels), torch.from_numpy(mask), torch.from_numpy(labelled)


def _chunk_frames(group, start: int, length: int):
    """(frames (B, F, H, W, 3) uint8, index (B, length) long): each episode's frames used in the chunk."""
    firsts, counts = [], []
    for ep in group:
        index = ep.image_index[start : start + length]
        first = int(index[0]) if len(index) else 0
        firsts.append(first)
        counts.append(int(index[-1]) - first + 1 if len(index) else 1)
    frame_shape = group[0].observations["image"].shape[1:]
    frames = np.zeros((len(group), max(counts)) + frame_shape, dtype=np.uint8)
    index = np.zeros((len(group), length), dtype=np.int64)
    for b, ep in enumerate(group):
        part = ep.observations["image"][firsts[b] : firsts[b] + counts[b]]
        frames[b, : len(part)] = part
        local = ep.image_index[start : start + length] - firsts[b]
        index[b, : len(local)] = local
    return torch.from_numpy(frames), torch.from_numpy(index)


# ``batching: length`` sorts each pool of this many batches' episodes by length before cutting it into batches: wide
# enough that a batch's episodes end together, narrow enough that which long episodes meet still varies by epoch.
LENGTH_POOL_BATCHES = 8


def epoch_batches(lengths, batch_size: int, rng: np.random.Generator, batching: str = "random") -> list[np.ndarray]:
    """The episodes (indices into ``lengths``, each episode's updates) of each batch of one epoch, in order; one
    permutation drawn from ``rng`` whatever ``batching``, and for ``length`` one more of the batches.

    ``random``: consecutive slices of the permutation. A batch runs chunk by chunk to its longest episode with one
    optimizer step a chunk, so its last chunks hold only its longest episodes: a full step on the tails of one or two
    episodes, and padding computed for the rest. ``length``: each pool of ``LENGTH_POOL_BATCHES`` batches of the
    permutation sorted by length, cut into batches, the batches shuffled: a batch's episodes end about together (on
    the robust rover config's 350 episodes of 31-150 updates, means over 100 epochs: 2% of the steps hold updates of
    fewer than 4 of a batch's 16 episodes against 21%, and 146 steps an epoch against 205: 86% of what they compute
    is real updates against 61%)."""
    order = rng.permutation(len(lengths))
    if batching == "random":
        return [order[g : g + batch_size] for g in range(0, len(order), batch_size)]
    if batching != "length":
        raise ValueError(f"batching must be 'random' or 'length', got {batching!r}")
    lengths = np.asarray(lengths)
    pool = batch_size * LENGTH_POOL_BATCHES
    batches = []
    for p in range(0, len(order), pool):
        part = order[p : p + pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[g : g + batch_size] for g in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def count_chunks(episodes, sequence_length: int, batches) -> int:
    """Optimizer steps of one epoch over ``batches`` (:func:`epoch_batches`): per batch, its longest episode in
    sequence chunks."""
    return sum(-(-max(len(episodes[i]) for i in batch) // sequence_length) for batch in batches)


def has_dropout(module) -> bool:
    """Whether ``module`` draws dropout masks in training (data-parallel copies cannot reproduce them)."""
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in module.modules())


class DataParallel:
    """Behaviour cloning on ``count`` copies of the policy in threads, each on its share of a batch's episodes.

    Torch's operators and the compiled kernels release the GIL, so the copies run on ``count`` cores. Each
    computes the gradient of its episodes' summed loss; the sum over copies, divided by the batch's labelled
    updates, is the gradient of the whole batch's loss (the same up to float rounding), applied to the policy,
    whose weights then go back to the copies. Unlike torch's intra-op threads, which split each operator, the
    copies also run the core's compiled kernels and the Python between operators on every core (on 2 cores an
    epoch took a median 0.87 of the intra-op threads' time: ``benchmarks/bench_training.py --cores 2``). A
    policy with dropout is refused: its random masks would depend on the threads' interleaving.
    """

    def __init__(self, policy, count: int):
        import copy
        from concurrent.futures import ThreadPoolExecutor

        if int(count) < 2:
            raise ValueError(f"data-parallel behaviour cloning needs count >= 2, got {count!r}")
        if has_dropout(policy):
            raise ValueError(
                "data-parallel behaviour cloning: the policy has dropout, whose masks would not be reproducible"
            )
        self.policy = policy
        self.copies = [copy.deepcopy(policy) for _ in range(int(count) - 1)]
        self._threads = ThreadPoolExecutor(int(count) - 1, thread_name_prefix="bc")

    @property
    def count(self) -> int:
        """Copies of the policy that train in parallel (the policy itself included)."""
        return 1 + len(self.copies)

    def sync(self) -> None:
        """The policy's weights and buffers into every copy."""
        with torch.no_grad():
            source = self.policy.state_dict()
            for replica in self.copies:
                for key, value in replica.state_dict().items():
                    value.copy_(source[key])

    def close(self) -> None:
        """Stop the threads."""
        self._threads.shutdown(wait=True)


def _split(total: int, parts: int) -> list[slice]:
    bounds = np.linspace(0, total, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _share_step(replica, obs, dt, h0, mask, labels, labelled):
    """Forward and backward of one share of a chunk; returns (summed loss, labelled updates, state)."""
    actions, state = replica.forward_sequence(obs, dt, h0=h0, mask=mask)
    n = int(labelled.sum())
    summed = action_loss(replica, actions, labels, labelled) * n
    summed.backward()  # also without labels: zero gradients, as the whole batch's loss gives them
    return summed.detach(), n, state.detach()


def _parallel_step(parallel: DataParallel, obs, dt, states, mask, labels, labelled):
    """One chunk over the shares of ``parallel``; the policy's gradients are the batch loss's. Returns (loss,
    labelled updates, per-share states)."""
    shares = _split(dt.shape[0], parallel.count)
    models = [parallel.policy, *parallel.copies]

    def run(k):
        part = shares[k]
        if part.stop == part.start:  # a last batch with fewer episodes than copies
            return torch.zeros(()), 0, states[k]
        share_obs = {key: value[part] for key, value in obs.items()}
        return _share_step(models[k], share_obs, dt[part], states[k], mask[part], labels[part], labelled[part])

    for model in models:
        model.zero_grad(set_to_none=True)
    others = [parallel._threads.submit(run, k) for k in range(1, len(shares))]
    results = [run(0)] + [f.result() for f in others]
    total = sum(n for _, n, _ in results)
    scale = 1.0 / max(total, 1)
    for params in zip(*(m.parameters() for m in models)):
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            params[0].grad = None
            continue
        grad = grads[0] if params[0].grad is not None else grads[0].clone()
        for other in grads[1:]:
            grad.add_(other)
        params[0].grad = grad.mul_(scale)
    loss = sum(float(s) for s, _, _ in results) * scale
    return loss, total, [state for _, _, state in results]


def bc_epoch(
    policy,
    optimizer,
    episodes,
    *,
    batch_size: int,
    sequence_length: int,
    grad_clip: float,
    rng: np.random.Generator,
    augmentation=(),
    yaw_recovery: dict | None = None,
    turn_limits=(-1.0, 1.0),
    progress=None,
    parallel: DataParallel | None = None,
    batching: str = "random",
    after_step=None,
) -> dict:
    """One pass over ``episodes`` (shuffled by ``rng``, in batches as ``batching`` forms them: :func:`epoch_batches`);
    returns {"loss": mean per-update loss, "chunks": n,
    "updates": labelled updates}.

    ``progress`` is an optional callable(loss) called after every optimizer step (a tqdm update; loss None for
    a step without a labelled update, e.g. a takeover bag's stretch the policy drove: no loss, not 0). ``parallel``
    (a :class:`DataParallel` of ``policy``) splits every batch over its copies. ``after_step`` is an optional
    callable() called after every optimizer step that moved the weights (a weight average's update). A chunk whose
    loss is not finite ends the pass there, before its optimizer step: the rest would only train NaN weights on (an
    epoch over hours of recordings); the result is then {"loss": that loss, "diverged_at": its optimizer step
    (1-based), ...}.
    """
    if not episodes:
        raise ValueError("behaviour cloning needs at least one episode")
    if parallel is not None and parallel.policy is not policy:
        raise ValueError("bc_epoch: parallel must hold copies of this policy")
    keys = observation_keys(policy.config)
    policy.train()
    if parallel is not None:
        parallel.sync()
        for replica in parallel.copies:
            replica.train()
    batches = epoch_batches([len(ep) for ep in episodes], batch_size, rng, batching)
    weighted, updates, chunks = 0.0, 0, 0
    for batch in batches:
        group = [episodes[i] for i in batch]
        augment = (
            EpisodeAugmentation(augmentation, len(group), rng, yaw_recovery, turn_limits) if augmentation else None
        )
        longest = max(len(ep) for ep in group)
        state = None if parallel is None else [None] * parallel.count
        for start in range(0, longest, sequence_length):
            obs, dt, labels, mask, labelled = _chunk(group, keys, start, sequence_length)
            if augment is not None and "image" in obs:
                obs["image"], labels = augment.chunk(obs["image"], obs["image_index"], labels, dt)
            if parallel is None:
                actions, state = policy.forward_sequence(obs, dt, h0=state, mask=mask)
                loss_t = action_loss(policy, actions, labels, labelled)
                optimizer.zero_grad(set_to_none=True)
                loss_t.backward()
                loss, n = loss_t.item(), int(labelled.sum())
                state = state.detach()
            else:
                loss, n, state = _parallel_step(parallel, obs, dt, state, mask, labels, labelled)
            if not math.isfinite(loss):
                policy.eval()
                return {"loss": loss, "chunks": chunks, "updates": updates, "diverged_at": chunks + 1}
            if n:  # a step over no label leaves the weights: Adam's momentum moved them along the last gradient
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
                optimizer.step()
                if after_step is not None:
                    after_step()
                if parallel is not None:
                    parallel.sync()
            weighted += loss * n
            updates += n
            chunks += 1
            if progress is not None:
                progress(loss if n else None)
    policy.eval()
    return {"loss": weighted / max(updates, 1), "chunks": chunks, "updates": updates}


def bc_loss(policy, episodes, *, batch_size: int, sequence_length: int) -> dict:
    """The behaviour-cloning loss of ``episodes`` without training (validation): same chunks, state carried
    between them, same masks; returns {"loss": mean per labelled update, "updates": labelled updates}."""
    if not episodes:
        raise ValueError("a validation loss needs at least one episode")
    keys = observation_keys(policy.config)
    was_training = policy.training
    policy.eval()
    weighted, updates = 0.0, 0
    with torch.no_grad():
        for g in range(0, len(episodes), batch_size):
            group = episodes[g : g + batch_size]
            longest = max(len(ep) for ep in group)
            state = None
            for start in range(0, longest, sequence_length):
                obs, dt, labels, mask, labelled = _chunk(group, keys, start, sequence_length)
                actions, state = policy.forward_sequence(obs, dt, h0=state, mask=mask)
                n = int(labelled.sum())
                if n:
                    weighted += action_loss(policy, actions, labels, labelled).item() * n
                    updates += n
    policy.train(was_training)
    return {"loss": weighted / updates if updates else float("nan"), "updates": updates}
