"""What the network looks at: VisualBackProp saliency over the camera input, and neuron activity traces.

VisualBackProp (Bojarski et al. 2018, the method of the liquid drone-navigation paper): the channel-averaged
ReLU feature map of the deepest convolution is scaled up through the convolutions (a transposed convolution
with all-ones kernels of each layer's size and stride) and multiplied on the way with each shallower layer's
averaged map, down to the input resolution. Bright pixels are those that keep activation alive through every
layer: what the encoder passes on to the recurrent core. It reads the CNN only, so it is the same for any
recurrent state, and it costs one forward pass.

Figures written by the evaluation report (`liquid-control eval`, `report.write_saliency`):

- ``saliency_grid.png``: one column per visual shift (the training distribution first), a top row with the
  camera frames and one row per policy with a camera; every policy sees the *same* frames (from the privileged
  expert's episode with the same episode seed, rendered at its own camera size), so the rows differ only by what
  each network attends to;
- ``saliency_episode.gif``: one policy's own episode under a visual shift, frame by frame with its saliency and
  actions;
- ``neuron_traces_<policy>.png``: the recurrent state of each NCP policy, with a camera or without (inter, command,
  motor neurons) over one episode in the training distribution and under a shift (``report.trace_shifts``).
"""

from __future__ import annotations

import numpy as np
import torch

from liquid_control.evaluation.plan import EpisodeJob
from liquid_control.figures import fit_suptitle, pyplot, save_figure


def visual_backprop(encoder, images) -> np.ndarray:
    """Saliency (N, H, W) in [0, 1] of a ``CameraEncoder`` for uint8 images (N, H, W, 3)."""
    images = torch.as_tensor(np.asarray(images))
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or tuple(images.shape[1:]) != (encoder.height, encoder.width, 3):
        # the convolutions alone would take any size: a map of an image the network never sees
        raise ValueError(
            f"visual_backprop: the encoder takes images ({encoder.height}, {encoder.width}, 3) (height, width, "
            f"channels), got {tuple(images.shape[1:])}"
        )
    convs = [m for m in encoder.conv if isinstance(m, torch.nn.Conv2d)]
    maps = []
    with torch.no_grad():
        x = encoder.scale(images)
        for layer in encoder.conv:
            x = layer(x)
            if isinstance(layer, torch.nn.ReLU):
                maps.append(x.mean(dim=1, keepdim=True))
        if len(maps) != len(convs):
            raise ValueError("visual_backprop expects a camera encoder of Conv2d + ReLU pairs")
        mask = maps[-1]
        sizes = [tuple(images.shape[1:3])] + [tuple(m.shape[2:]) for m in maps[:-1]]
        for i in range(len(convs) - 1, -1, -1):
            conv, target = convs[i], sizes[i]
            k, s = conv.kernel_size, conv.stride
            natural = ((mask.shape[2] - 1) * s[0] + k[0], (mask.shape[3] - 1) * s[1] + k[1])
            padding = (target[0] - natural[0], target[1] - natural[1])
            ones = torch.ones(1, 1, *k, dtype=mask.dtype)
            mask = torch.nn.functional.conv_transpose2d(mask, ones, stride=s, output_padding=padding)
            if i > 0:
                mask = mask * maps[i - 1]
        mask = mask[:, 0]
        low = mask.flatten(1).min(dim=1).values[:, None, None]
        high = mask.flatten(1).max(dim=1).values[:, None, None]
        return ((mask - low) / (high - low).clamp_min(1e-12)).numpy()


OVERLAY_MAP = "inferno"
SCALE_LABEL = "saliency (each map scaled to its own 0-1)"  # visual_backprop: min-max per frame


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGB float image in [0, 1]: the camera frame, dimmed, under a heat map of the saliency."""
    import matplotlib

    heat = matplotlib.colormaps[OVERLAY_MAP](saliency)[..., :3]
    base = np.asarray(image, dtype=np.float64) / 255.0
    return np.clip((1 - alpha) * base + alpha * heat, 0.0, 1.0)


def replay(job: EpisodeJob) -> dict:
    """Re-run one episode (deterministic) recording frames, actions, times and the recurrent states."""
    from liquid_control.evaluation.episode import run_episode

    trace = {"images": [], "actions": [], "times": [], "states": []}
    clock = [0.0, False]

    def recorder(obs, action, info, state):
        if clock[1]:
            clock[0] += float(np.asarray(obs["dt"]).reshape(-1)[0])
        clock[1] = True
        if action is None:
            return
        if "image" in obs:
            trace["images"].append(np.asarray(obs["image"]).copy())
        trace["actions"].append(np.asarray(action, dtype=np.float64))
        trace["times"].append(clock[0])
        if state is not None:
            trace["states"].append(np.asarray(state, dtype=np.float64).reshape(-1).copy())

    trace["record"] = run_episode(job, recorder=recorder)
    return trace


def expert_frames(world: str, shift: str, episode_seed: int, env_kwargs: dict, count: int = 1) -> list[np.ndarray]:
    """``count`` camera frames spread evenly inside the middle half of the privileged expert's episode (one:
    its middle frame), the same for every policy of these world settings (``env_kwargs``: camera size...)."""
    job = EpisodeJob("expert", 0, shift, episode_seed, world, None, None, dict(env_kwargs))
    images = replay(job)["images"]
    if not images:
        return []
    picks = (np.linspace(0.25, 0.75, num=count + 2)[1:-1] * len(images)).round().astype(int)
    return [images[min(i, len(images) - 1)] for i in picks]


def plot_saliency_grid(policies: list[tuple[str, object, dict]], path: str) -> str:
    """Rows: camera, then one per (name, Policy, frames: shift -> uint8 frame as that policy's world renders it);
    columns: the shifts of the first policy's frames (every policy has them; the camera row shows the first's)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    plt = pyplot()
    frames = policies[0][2]
    shifts = list(frames)
    rows = 1 + len(policies)
    bar = 0.85  # inches at the bottom for the colour bar: what bright means
    fig, axes = plt.subplots(
        rows, len(shifts), figsize=(1.45 * len(shifts) + 1.4, 1.45 * rows + 0.4 + bar), squeeze=False
    )
    for c, shift in enumerate(shifts):
        axes[0, c].imshow(frames[shift])
        axes[0, c].set_title(shift, fontsize=7)
    for r, (_, policy, own) in enumerate(policies, start=1):
        saliency = visual_backprop(policy.camera, np.stack([own[s] for s in shifts]))
        for c, shift in enumerate(shifts):
            axes[r, c].imshow(overlay(own[shift], saliency[c]))
    for r in range(rows):
        axes[r, 0].set_ylabel(
            "camera" if r == 0 else policies[r - 1][0], fontsize=7, rotation=0, ha="right", va="center"
        )
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    inch = 1 / fig.get_figheight()  # the title a fixed distance from the top, above the columns' titles
    # wrapped where wider than the figure (one visual shift: one column), the columns below it however many lines
    title = fit_suptitle(fig, "VisualBackProp saliency (same frames in each column)", 9, y=1 - 0.08 * inch, va="top")
    lines = title.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi
    fig.tight_layout(rect=(0, bar * inch, 1, 1 - (0.15 + lines) * inch))
    scale = fig.add_axes((0.2, 0.5 * inch, 0.6, 0.12 * inch))
    fig.colorbar(ScalarMappable(Normalize(0, 1), OVERLAY_MAP), cax=scale, orientation="horizontal")
    scale.set_xlabel(SCALE_LABEL, fontsize=7)
    scale.tick_params(labelsize=6)
    save_figure(fig, path, dpi=110)
    return path


def animate_episode(
    job: EpisodeJob,
    path: str,
    action_labels: tuple[str, ...] = (),
    max_frames: int = 60,
    fps: int = 6,
    scale: int = 2,
) -> tuple[str, dict]:
    """GIF of one policy episode: camera frame | its saliency, with a bar for each action (drawn with PIL: a few
    milliseconds per frame). ``action_labels``: what each action commands (``report.action_names`` of the world;
    ``action[i]`` for one without). Every text is kept inside the frame: the canvas is widened where a line is
    wider than the two pictures (a 32-pixel camera, a long policy or shift name)."""
    from PIL import Image, ImageDraw

    from liquid_control.evaluation.agents import load_cached_policy

    trace = replay(job)
    policy = load_cached_policy(job.checkpoint, job.checkpoint_sha)
    images = trace["images"]
    picks = np.unique(np.linspace(0, len(images) - 1, num=min(max_frames, len(images))).round().astype(int))
    saliency = visual_backprop(policy.camera, np.stack([images[i] for i in picks]))
    actions, times = np.stack(trace["actions"]), np.asarray(trace["times"])
    record = trace["record"]
    labels = [action_labels[d] if d < len(action_labels) else f"action[{d}]" for d in range(actions.shape[1])]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = lambda text: int(np.ceil(measure.textlength(text)))  # noqa: E731
    line = 11  # pixels per line of PIL's default font
    titles = lambda t: [f"{job.policy} | {job.shift}", f"t={t:.1f}s | {record['outcome']} (this replay)"]  # noqa: E731
    notes = ["left: camera, right: saliency (each frame's own 0-1)", "bars: action, -1 to +1 (the world's limits)"]
    label_width = max(width(label) for label in labels) + 6
    scale = max(scale, -(-96 // images[0].shape[1]))  # a 32-pixel camera drawn 96 pixels wide, not 64
    pair_width = 2 * images[0].shape[1] * scale
    canvas_width = max(pair_width, label_width + 60, *(width(text) + 4 for text in titles(times.max()) + notes))
    header, footer = 2 + line * 2, 4 + line * (len(labels) + len(notes))
    frames = []
    for k, i in enumerate(picks):
        pair = np.concatenate([images[i] / 255.0, overlay(images[i], saliency[k])], axis=1)
        pair = np.repeat(np.repeat((pair * 255).astype(np.uint8), scale, axis=0), scale, axis=1)
        canvas = Image.new("RGB", (canvas_width, pair.shape[0] + header + footer), "white")
        canvas.paste(Image.fromarray(pair), ((canvas_width - pair_width) // 2, header))
        draw = ImageDraw.Draw(canvas)
        for n, title in enumerate(titles(times[i])):
            draw.text((2, 1 + line * n), title, fill="black")
        top = header + pair.shape[0] + 3
        left, right = label_width, canvas_width - 3
        mid = (left + right) // 2
        for d, label in enumerate(labels):
            y = top + line * d
            draw.text((2, y - 2), label, fill="black")
            draw.rectangle((left, y, right, y + 8), outline=(190, 190, 190))  # its ends: -1 and +1
            draw.line((mid, y, mid, y + 8), fill="grey")
            end = mid + int(np.clip(actions[i, d], -1.0, 1.0) * (right - mid))
            draw.rectangle((min(mid, end), y + 1, max(mid, end), y + 7), fill=(200, 80, 20))
        for n, note in enumerate(notes):
            draw.text((2, top + line * (len(labels) + n)), note, fill="dimgrey")
        frames.append(canvas)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path, record


def neuron_groups(core) -> list[tuple[str, list[int]]]:
    """(label, state indices) of an NCP core's inter, command and motor neurons ([] without a 3-layer wiring)."""
    from liquid_control.cells import NCP

    wiring = getattr(core, "wiring", None)
    if not isinstance(wiring, NCP) or len(wiring.layers) != 3:
        return []
    layers = wiring.layers
    labels = ("inter", "command", "motor")
    if getattr(core, "core_type", "") == "cfc":  # the state is the layers' states side by side
        groups, start = [], 0
        for label, layer in zip(labels, layers):
            groups.append((label, list(range(start, start + len(layer)))))
            start += len(layer)
        return groups
    return [(label, list(layer)) for label, layer in zip(labels, layers)]  # LTC: the state is indexed by neuron id


def plot_neuron_traces(jobs: list[EpisodeJob], path: str, outcome=None) -> tuple[str, list[dict]] | None:
    """Neuron activity of one NCP policy over the episodes ``jobs`` (e.g. in-distribution and dusk), one column each.
    ``outcome(record) -> str``: a column's outcome as its title states it (default: the replay's; the report gives
    the tables' too where the replay, run alone, ended otherwise: ``report.example_outcome``)."""
    from liquid_control.evaluation.agents import load_cached_policy

    policy = load_cached_policy(jobs[0].checkpoint, jobs[0].checkpoint_sha)
    groups = neuron_groups(policy.core)
    if not groups:
        return None
    traces = [replay(job) for job in jobs]
    plt = pyplot()
    # a row's axes share their range: the columns (training distribution, a shift) are there to be compared
    fig, axes = plt.subplots(
        len(groups), len(jobs), figsize=(4.2 * len(jobs), 1.7 * len(groups) + 0.6), squeeze=False, sharey="row"
    )
    for c, (job, trace) in enumerate(zip(jobs, traces)):
        states, times = np.stack(trace["states"]), np.asarray(trace["times"])
        for r, (label, index) in enumerate(groups):
            ax = axes[r, c]
            ax.plot(times, states[:, index], lw=0.8)
            ax.set_ylabel(f"{label} state\n({len(index)} neurons)", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
        said = outcome(trace["record"]) if outcome else trace["record"]["outcome"]
        axes[0, c].set_title(f"'{job.shift}': " + said.replace("; ", ";\n"), fontsize=8)
        axes[-1, c].set_xlabel("sim time (s)", fontsize=7)
    fit_suptitle(  # one column (one visual shift) is narrower than the title
        fig,
        f"{jobs[0].policy} (training seed {jobs[0].training_seed}): neuron states, episode {jobs[0].episode_seed}",
        12,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path, [t["record"] for t in traces]
