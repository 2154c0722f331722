"""What the network looks at: VisualBackProp against a hand computation, and the report's attention figures."""

import numpy as np
import pytest
import torch

from liquid_control.evaluation.saliency import neuron_groups, visual_backprop
from liquid_control.policy.encoders import CameraEncoder


def test_visual_backprop_of_one_convolution_matches_a_hand_computation():
    torch.manual_seed(0)
    encoder = CameraEncoder(12, 12, [3], [4], [2], 4)
    image = torch.randint(0, 256, (1, 12, 12, 3), dtype=torch.uint8)
    with torch.no_grad():
        act = torch.relu(encoder.conv[0](encoder.scale(image)))[0].mean(dim=0).numpy()  # (5, 5)
    want = np.zeros((12, 12))
    for i in range(act.shape[0]):  # every output position spreads its mean activation over its receptive field
        for j in range(act.shape[1]):
            want[2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += act[i, j]
    want = (want - want.min()) / (want.max() - want.min())
    np.testing.assert_allclose(visual_backprop(encoder, image)[0], want, atol=1e-6)


def test_visual_backprop_finds_the_only_bright_object():
    encoder = CameraEncoder(32, 32, [4, 4], [5, 3], [2, 2], 4)
    with torch.no_grad():  # positive filters: activation only where there is light
        for conv in (encoder.conv[0], encoder.conv[2]):
            conv.weight.fill_(0.1)
            conv.bias.zero_()
    image = np.zeros((32, 32, 3), np.uint8)
    image[20:26, 6:12] = 255
    encoder.normalize = "frame"
    saliency = visual_backprop(encoder, image)[0]
    y, x = np.unravel_index(np.argmax(saliency), saliency.shape)
    assert 18 <= y <= 27 and 4 <= x <= 13
    assert saliency[:8, 20:].max() < 0.05  # far from the object: nothing


def test_ncp_neuron_groups_follow_the_state_layout():
    from liquid_control.cells import AutoNCP, CfCCell, LTCCell

    cfc = CfCCell(4, AutoNCP(10, 2, seed=1))
    groups = dict(neuron_groups(cfc))
    w = cfc.wiring
    assert [len(groups[k]) for k in ("inter", "command", "motor")] == [len(layer) for layer in w.layers]
    assert groups["motor"] == list(range(cfc.state_size))[cfc._output_slice]  # CfC: layers side by side
    ltc = LTCCell(4, AutoNCP(10, 2, seed=1))
    assert dict(neuron_groups(ltc))["motor"] == [0, 1]  # LTC: by neuron id, motor neurons first
    assert neuron_groups(CfCCell(4, 8)) == []  # fully connected: no groups


def test_visual_backprop_refuses_images_of_another_size_than_the_encoder_takes():
    encoder = CameraEncoder(32, 32, [4, 4], [5, 3], [2, 2], 4)
    with pytest.raises(ValueError, match=r"takes images \(32, 32, 3\) \(height, width, channels\), got \(64, 64, 3\)"):
        visual_backprop(encoder, np.zeros((64, 64, 3), np.uint8))  # the convolutions alone would take it


def tiny_camera_policy(path, height=32, width=32):
    from liquid_control.policy import Policy, save_policy

    config = {
        "name": "tiny_ncp",
        "world": "LiquidRover-v0",
        "observation": {"image": {"height": height, "width": width}, "vectors": {}, "update_on": "camera"},
        "encoder": {"camera": {"channels": [4, 8], "kernel_sizes": [5, 3], "strides": [2, 2], "features": 8}},
        "core": {"type": "cfc", "units": 8, "wiring": "ncp", "mode": "pure"},
        "action": {"size": 2, "low": [-1.0, -1.0], "high": [1.0, 1.0]},
    }
    torch.manual_seed(1)
    return save_policy(path, Policy.from_config(config), {"seed": 0})


def test_the_saliency_grid_maps_each_policy_on_frames_of_its_own_camera_size(tmp_path, monkeypatch):
    from liquid_control.evaluation import saliency
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_saliency

    square, wide = tiny_camera_policy(tmp_path / "square.pt"), tiny_camera_policy(tmp_path / "wide.pt", 24, 40)
    seen, real = [], saliency.visual_backprop

    def recording(encoder, images):
        seen.append(((encoder.height, encoder.width), np.asarray(images).shape[-3:-1]))
        return real(encoder, images)

    rendered, real_frames = [], saliency.expert_frames

    def rendering(world, shift, seed, env_kwargs, count=1):
        rendered.append(dict(env_kwargs))
        return real_frames(world, shift, seed, env_kwargs, count)

    monkeypatch.setattr(saliency, "visual_backprop", recording)
    monkeypatch.setattr(saliency, "expert_frames", rendering)
    plan = build_plan([f"square={square}", f"wide={wide}"], ["in_distribution", "dusk"], 1)
    for spec in plan.policies:
        spec.env_kwargs["time_limit"] = 3.0
    plan.policies[1].env_kwargs["reorder_lag_s"] = 0.05  # another timeline: it must not pick another episode
    assert "![saliency grid](saliency_grid.png)" in "\n".join(write_saliency(plan, str(tmp_path), []))
    assert {camera for camera, _ in seen} == {(32, 32), (24, 40)}
    assert all(camera == frames for camera, frames in seen), seen  # the wide policy saw 24x40 frames, not 32x32
    first = plan.policies[0].env_kwargs  # the same expert episode in every row: only the camera size differs
    assert all({**kwargs, "render_size": first["render_size"]} == first for kwargs in rendered), rendered


def test_the_grid_frame_is_the_middle_of_the_expert_episode(monkeypatch):
    from liquid_control.evaluation import saliency

    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(116)]
    monkeypatch.setattr(saliency, "replay", lambda job: {"images": frames})
    assert saliency.expert_frames("LiquidRover-v0", "in_distribution", 0, {}, count=1)[0][0, 0, 0] == 58
    assert [f[0, 0, 0] for f in saliency.expert_frames("LiquidRover-v0", "in_distribution", 0, {}, count=3)] == [
        44,
        58,
        72,
    ]


def test_report_writes_the_saliency_grid_animation_and_neuron_traces(tmp_path):
    import matplotlib.image
    from PIL import Image

    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_saliency

    path = tiny_camera_policy(tmp_path / "tiny.pt")
    plan = build_plan(["expert", f"tiny={path}"], ["in_distribution", "dusk", "sensor_rate=2"], 1)
    for spec in plan.policies:
        spec.env_kwargs["time_limit"] = 4.0  # short episodes: this tests the figures, not the policy
    # the tables' record of every episode: success, which a tiny untrained policy's 4 s replay cannot reach. Before,
    # the animated episode's caption stated its replay's outcome alone (the headline report: "(success)" where its
    # results.csv has a timeout), as the example episode's did before 427a37b8
    keys = ("policy", "training_seed", "shift", "episode_seed")
    records = [{**{k: getattr(job, k) for k in keys}, "outcome": "success"} for job in plan.jobs]
    lines = write_saliency(plan, str(tmp_path), records)
    text = "\n".join(lines)
    assert "![saliency grid](saliency_grid.png)" in text and "saliency_episode.gif" in text
    seed = plan.episode_seeds[0]
    caption = f"`tiny` (training seed 0) driving episode {seed} under `dusk`, camera, saliency and actions frame by "
    assert caption + "frame: success in the tables (`results.csv`); replayed alone for the figure, " in text, text
    assert "neuron_traces_tiny.png" in text
    grid = matplotlib.image.imread(tmp_path / "saliency_grid.png")
    assert grid.shape[0] > 150 and grid[..., :3].std() > 0.05
    with Image.open(tmp_path / "saliency_episode.gif") as gif:
        assert gif.n_frames > 5
    assert (tmp_path / "neuron_traces_tiny.png").stat().st_size > 10_000


def tiny_imu_policy(path):
    """An NCP policy without a camera (IMU alone): neuron traces, no saliency."""
    from liquid_control.policy import Policy, save_policy

    config = {
        "name": "tiny_imu_ncp",
        "world": "LiquidRover-v0",
        "observation": {"vectors": {"imu": 6}, "update_on": "imu"},
        "core": {"type": "cfc", "units": 8, "wiring": "ncp", "mode": "pure"},
        "action": {"size": 2, "low": [-1.0, -1.0], "high": [1.0, 1.0]},
    }
    torch.manual_seed(2)
    return save_policy(path, Policy.from_config(config), {"seed": 0})


@pytest.fixture
def attention(monkeypatch):
    """write_saliency without simulating: each replay (the expert's frames, the animated episode, the traces) is 12
    steps of random frames of the job's camera size ending in `replayed_outcome`; returns what the figures were given
    (the grid's columns and rows, each trace figure's column titles, the animated episode's shift)."""
    from liquid_control.evaluation import saliency

    seen = {"grid": [], "traces": {}, "gif": [], "replayed_outcome": "timeout"}
    rng = np.random.default_rng(0)

    def replay(job):
        height, width = job.env_kwargs.get("render_size", (32, 32))
        keys = ("policy", "training_seed", "shift", "episode_seed")
        return {
            "images": [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(12)],
            "actions": [np.zeros(2) for _ in range(12)],
            "times": list(0.1 * np.arange(12)),
            "states": [rng.normal(size=16) for _ in range(12)],
            "record": {**{k: getattr(job, k) for k in keys}, "outcome": seen["replayed_outcome"]},
        }

    real_grid, real_gif, real_save = saliency.plot_saliency_grid, saliency.animate_episode, saliency.save_figure

    def grid(rows, path):
        seen["grid"].append(([name for name, _, _ in rows], list(rows[0][2])))
        return real_grid(rows, path)

    def gif(job, path, *args, **kwargs):
        seen["gif"].append(job.shift)
        return real_gif(job, path, *args, **kwargs)

    def save(fig, path, **kwargs):
        name = path.rsplit("/", 1)[-1]
        if name.startswith("neuron_traces_"):
            seen["traces"][name] = [ax.get_title() for ax in fig.axes if ax.get_title()]
        return real_save(fig, path, **kwargs)

    monkeypatch.setattr(saliency, "replay", replay)
    monkeypatch.setattr(saliency, "plot_saliency_grid", grid)
    monkeypatch.setattr(saliency, "animate_episode", gif)
    monkeypatch.setattr(saliency, "save_figure", save)
    return seen


def test_a_policy_without_a_camera_is_named_and_left_out_of_the_saliency_alone(tmp_path, attention):
    """Before: one policy without a camera (an IMU-only NCP evaluated beside a camera policy) removed the whole
    section: no grid, no animated episode, no neuron traces for either, and nothing said why; an eval of sensor
    shifts alone (no visual shift, no in_distribution) got no neuron traces either."""
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_saliency

    cam, imu = tiny_camera_policy(tmp_path / "cam.pt"), tiny_imu_policy(tmp_path / "imu.pt")
    plan = build_plan(["expert", f"cam={cam}", f"imu={imu}"], ["in_distribution", "dusk"], 1)
    text = "\n".join(write_saliency(plan, str(tmp_path), []))
    assert "## What the networks look at" in text
    assert "No saliency for `imu`: no camera" in text, text
    assert attention["grid"] == [(["cam"], ["in_distribution", "dusk"])]  # the camera policy's row alone
    assert attention["gif"] == ["dusk"] and "![saliency over an episode](saliency_episode.gif)" in text
    assert "![neurons](neuron_traces_cam.png)" in text and "![neurons](neuron_traces_imu.png)" in text
    assert (tmp_path / "neuron_traces_imu.png").stat().st_size > 10_000
    # dusk changes nothing an IMU reads: its traces in the training distribution alone, not a copy beside it
    assert attention["traces"]["neuron_traces_imu.png"] == ["'in_distribution': timeout"]
    assert attention["traces"]["neuron_traces_cam.png"] == ["'in_distribution': timeout", "'dusk': timeout"]

    sensor = tmp_path / "sensor"  # sensor shifts alone: the traces under them, the camera's saliency on their frames
    sensor.mkdir()
    plan = build_plan([f"cam={cam}", f"imu={imu}"], ["sensor_rate=0.5", "sensor_rate=2"], 1)
    text = "\n".join(write_saliency(plan, str(sensor), []))
    assert "No saliency for `imu`: no camera" in text, text
    assert attention["traces"]["neuron_traces_imu.png"] == ["'sensor_rate=0.5': timeout"]
    assert attention["traces"]["neuron_traces_cam.png"] == ["'sensor_rate=0.5': timeout"]
    assert (sensor / "neuron_traces_imu.png").exists() and (sensor / "neuron_traces_cam.png").exists()

    alone = tmp_path / "alone"  # no camera anywhere (the probe's NCP balancer): the traces, and why no saliency
    alone.mkdir()
    plan = build_plan([f"imu={imu}"], ["in_distribution", "sensor_rate=0.5"], 1)
    text = "\n".join(write_saliency(plan, str(alone), []))
    assert "No saliency for `imu`: no camera" in text and "saliency_grid.png" not in text, text
    assert attention["traces"]["neuron_traces_imu.png"] == ["'in_distribution': timeout", "'sensor_rate=0.5': timeout"]


def test_the_attention_figures_put_the_training_distribution_first_and_never_twice(tmp_path, attention):
    """Before: the neuron traces' 'in-distribution' column was the first visual shift listed: `--shift dusk --shift
    in_distribution` drew two identical dusk columns, and the grid's first column was dusk; `--shift dusk` alone
    drew dusk twice."""
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_saliency

    cam = tiny_camera_policy(tmp_path / "cam.pt")
    plan = build_plan([f"cam={cam}"], ["dusk", "in_distribution", "winter"], 1)
    write_saliency(plan, str(tmp_path), [])
    assert attention["grid"] == [(["cam"], ["in_distribution", "dusk", "winter"])]
    assert attention["traces"]["neuron_traces_cam.png"] == ["'in_distribution': timeout", "'dusk': timeout"]
    plan = build_plan([f"cam={cam}"], ["dusk"], 1)
    write_saliency(plan, str(tmp_path), [])
    assert attention["traces"]["neuron_traces_cam.png"] == ["'dusk': timeout"]


def test_the_neuron_traces_give_the_tables_outcome_and_the_replays_where_they_differ(tmp_path, attention):
    """Before: each trace column's title gave the outcome of its lone replay alone ('dusk': collision) where the
    tables counted the episode a success (the probe's robust NCP, episode 20000001), contradicting them unsaid."""
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_saliency

    cam = tiny_camera_policy(tmp_path / "cam.pt")
    plan = build_plan([f"cam={cam}"], ["in_distribution", "dusk"], 1)
    keys = ("policy", "training_seed", "shift", "episode_seed")
    records = [
        {**{k: getattr(job, k) for k in keys}, "outcome": "success" if job.shift == "dusk" else "collision"}
        for job in plan.jobs
    ]
    attention["replayed_outcome"] = "collision"
    text = "\n".join(write_saliency(plan, str(tmp_path), records))
    assert attention["traces"]["neuron_traces_cam.png"] == [
        "'in_distribution': collision",
        "'dusk': success in the tables;\nreplayed alone for the figure, collision",
    ]
    seed = plan.episode_seeds[0]
    assert (
        f"Neuron states of `cam` (NCP: inter, command, motor neurons), episode {seed}: `in_distribution`: collision; "
        "`dusk`: success in the tables; replayed alone for the figure, collision (the tables' episode ran in a batch"
    ) in text, text


def test_a_shift_both_visual_and_of_the_sensors_is_in_every_attention_figure(tmp_path, attention):
    """Before: `lighting=dusk,sensor_rate=0.5` was the example episode's shift (pick_example: 'visual' among its
    kinds) but left out of the grid, the animated episode and the traces (write_saliency: kinds exactly visual)."""
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import pick_example, write_saliency

    cam = tiny_camera_policy(tmp_path / "cam.pt")
    mixed = "lighting=dusk,sensor_rate=0.5"
    plan = build_plan([f"cam={cam}"], ["in_distribution", mixed], 1)
    write_saliency(plan, str(tmp_path), [])
    assert attention["grid"] == [(["cam"], ["in_distribution", mixed])]
    assert attention["gif"] == [mixed] and pick_example(plan).shift == mixed
    assert attention["traces"]["neuron_traces_cam.png"] == ["'in_distribution': timeout", f"'{mixed}': timeout"]
