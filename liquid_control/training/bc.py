"""Behaviour cloning over whole episodes with truncated BPTT.

Episodes are grouped into batches; each batch is cut into chunks of ``sequence_length`` updates that are
processed in order, carrying the (detached) recurrent state from one chunk to the next. The core therefore
trains on exactly the states it meets when it runs an episode from its start, with the episode's real,
irregular dt, while gradients only flow back ``sequence_length`` updates. Padding (shorter episodes of a
batch) is masked out of both the state and the loss.
"""

from __future__ import annotations

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


def count_chunks(episodes, batch_size: int, sequence_length: int, order=None) -> int:
    """Number of updates in one epoch: per batch of episodes (in ``order``), its longest in sequence chunks."""
    order = range(len(episodes)) if order is None else order
    order = list(order)
    total = 0
    for g in range(0, len(order), batch_size):
        longest = max(len(episodes[i]) for i in order[g : g + batch_size])
        total += -(-longest // sequence_length)
    return total


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
    progress=None,
) -> dict:
    """One pass over ``episodes`` (shuffled by ``rng``); returns {"loss": mean per-update loss, "chunks": n}.

    ``progress`` is an optional callable(loss) called after every optimizer step (a tqdm update).
    """
    if not episodes:
        raise ValueError("behaviour cloning needs at least one episode")
    keys = observation_keys(policy.config)
    policy.train()
    order = rng.permutation(len(episodes))
    weighted, updates, chunks = 0.0, 0, 0
    for g in range(0, len(order), batch_size):
        group = [episodes[i] for i in order[g : g + batch_size]]
        augment = EpisodeAugmentation(augmentation, len(group), rng) if augmentation else None
        longest = max(len(ep) for ep in group)
        state = None
        for start in range(0, longest, sequence_length):
            obs, dt, labels, mask, labelled = _chunk(group, keys, start, sequence_length)
            if augment is not None and "image" in obs:
                obs["image"] = augment.apply(obs["image"])
            actions, state = policy.forward_sequence(obs, dt, h0=state, mask=mask)
            loss = action_loss(policy, actions, labels, labelled)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
            optimizer.step()
            state = state.detach()
            n = int(labelled.sum())
            weighted += loss.item() * n
            updates += n
            chunks += 1
            if progress is not None:
                progress(loss.item())
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
