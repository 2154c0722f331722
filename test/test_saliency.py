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
