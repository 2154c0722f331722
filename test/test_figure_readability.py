"""What a reader of the committed figures sees: titles inside the picture, axes that say what and in which unit,
legends off the data, a saliency overlay that says what bright means. Read back from the matplotlib objects."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from liquid_control.figures import pyplot


@pytest.fixture
def drawn(monkeypatch):
    """The figures drawn in the test, kept open (save_figure closes them) and closed at the end."""
    plt = pyplot()
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    monkeypatch.undo()
    for figure in kept:
        plt.close(figure)


def _extent(fig, artist):
    fig.canvas.draw()
    return artist.get_window_extent(fig.canvas.get_renderer())


def _cells(policies, shifts):
    from liquid_control.evaluation.summary import CellSummary

    return [
        CellSummary(p, s, 4, 2, 0.5, (0.2, 0.8), 0.0, None, 0.0, None, 0.0, 10.0, 1.0, {0: 0.5})
        for p in policies
        for s in shifts
    ]


def test_the_title_of_a_narrow_success_figure_is_inside_the_picture(tmp_path, drawn):
    """Before: a report of one shift (docs/bag_loop/sim_success_by_shift.png) drew a 4-inch figure under a one-line
    7-inch title, cut off at both sides: 'shift (mean over training seeds, 95% CI: bootstrap over seeds, th'."""
    from liquid_control.evaluation.report import plot_success_by_shift

    plot_success_by_shift(
        _cells(["bags", "expert"], ["in_distribution"]),
        {"": ["bags", "expert"]},
        ["in_distribution"],
        str(tmp_path / "bars.png"),
    )
    (fig,) = drawn
    title = fig._suptitle
    box = _extent(fig, title)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    assert "95% CI" in title.get_text() and "then episodes" in title.get_text()  # wrapped, not shortened


def test_the_sensor_timing_axis_does_not_say_that_every_policy_was_trained_at_1x(tmp_path, drawn):
    """Before: every panel's x axis said '(trained at 1x)', also the robustness-recipe panel's, whose policies were
    trained on rates and jitters drawn per episode (docs/ood_report/success_vs_sensor_timing.png)."""
    from liquid_control.evaluation.report import plot_sweeps

    panels = {"as configured": ["cfc"], "with the robustness recipes": ["cfc_robust"]}
    shifts = ["in_distribution", "sensor_rate=0.5", "sensor_rate=2"]
    plot_sweeps(_cells(["cfc", "cfc_robust"], shifts), panels, shifts, str(tmp_path / "sweep.png"))
    (fig,) = drawn
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels == ["sensor_rate factor (1x: the world's default timing)"] * 2
    assert "95% CI" in fig._suptitle.get_text()


def test_the_saliency_grid_has_a_colour_bar_saying_what_bright_means(tmp_path, drawn):
    """Before: the heat map over the frames had no scale, and each map is scaled to its own range, so a dim map and
    a strong one looked alike with nothing in the figure to say so."""
    from liquid_control.evaluation.saliency import plot_saliency_grid
    from liquid_control.policy.encoders import CameraEncoder

    class Policy:
        camera = CameraEncoder(16, 16, [4, 4], [3, 3], [2, 2], 8)

    frames = {s: np.full((16, 16, 3), 90, np.uint8) for s in ("in_distribution", "dusk")}
    plot_saliency_grid([("p", Policy(), frames), ("q", Policy(), frames)], str(tmp_path / "grid.png"))
    (fig,) = drawn
    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(bars) == 1
    bar = bars[0]._colorbar
    assert bar.cmap.name == "inferno" and (bar.norm.vmin, bar.norm.vmax) == (0, 1)
    assert "saliency" in bars[0].get_xlabel() and "own" in bars[0].get_xlabel()
    scale = _extent(fig, bars[0])
    for ax in fig.axes:
        if ax is not bars[0]:
            assert not scale.overlaps(_extent(fig, ax))
    label = bars[0].xaxis.label.get_window_extent(fig.canvas.get_renderer())
    assert label.x0 >= 0 and label.x1 <= fig.bbox.width and label.y0 >= 0


def test_the_example_episode_says_what_its_axes_and_actions_are(tmp_path, drawn, monkeypatch):
    """Before: the trajectory panel of example_episode.png had numbers on both axes and no label or unit, and the
    actions were 'action[0]', 'action[1]' on an axis 'action', with nothing of what they command or their range."""
    from liquid_control.evaluation import episode
    from liquid_control.evaluation.report import plot_example_episode

    def run_episode(job, recorder):
        for k in range(5):
            obs = {"dt": np.array([0.1]), "image": np.zeros((8, 8, 3), np.uint8)}
            recorder(obs, np.array([0.5, -0.1]), {"position": np.array([0.1 * k, -0.2 * k]), "target": [1, -1]}, None)
        return {"outcome": "success", "return": 1.0}

    monkeypatch.setattr(episode, "run_episode", run_episode)
    job = SimpleNamespace(policy="cfc", training_seed=0, shift="winter", episode_seed=7, world="LiquidRover-v0")
    plot_example_episode(job, str(tmp_path / "example.png"))
    (fig,) = drawn
    trajectory = [ax for ax in fig.axes if ax.get_title() == "trajectory (world frame)"]
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in trajectory] == [("x (m)", "y (m)")]
    (actions,) = [ax for ax in fig.axes if ax.get_xlabel() == "sim time (s)"]
    assert [t.get_text() for t in actions.get_legend().get_texts()] == ["action[0]: linear", "action[1]: angular"]
    assert "-1 to 1" in actions.get_ylabel()


def test_the_offline_plot_legend_covers_no_command(tmp_path, drawn):
    """Before: the legend sat in the upper right corner of the first command's axes, over the recorded command's
    last second (docs/bag_loop/offline_plots_bags__episode_600.png)."""
    from liquid_control.evaluation.offline import _plot

    t = np.linspace(0.0, 8.0, 81)
    both = np.stack([np.full_like(t, 0.95), np.sin(t)], axis=1)  # near the top of the axes all along
    result = {"time": t, "label": both, "action": both * 0.9, "reset": np.zeros(len(t), bool)}
    names = ["linear (m/s)", "angular (rad/s)"]
    _plot(tmp_path / "plot.png", result, [1.0, 1.0], "bags on episode_600: loss 0.0272", names)
    (fig,) = drawn
    legend = fig.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["recorded", "policy"]
    box = _extent(fig, legend)
    assert not any(box.overlaps(_extent(fig, ax)) for ax in fig.axes)
    assert not box.overlaps(_extent(fig, fig.axes[0].title)) and not box.overlaps(_extent(fig, fig.axes[0]._left_title))
    assert box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def test_the_bag_loop_runs_figure_says_its_episode_count_and_its_interval(tmp_path, drawn):
    """Before: scripts/bag_loop.py compare labelled the axis 'success, 50 held-out episodes' whatever the runs'
    episode count, and said nothing of the error bars (docs/bag_loop/success_by_run.png: 95% Wilson intervals)."""
    import importlib.util
    import json
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bag_loop", root / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)
    summary = json.loads((root / "docs" / "bag_loop" / "summary.json").read_text())
    summary["simulated_episodes"]["bags"].update(success=3, episodes=8, ci95=[0.14, 0.69])
    (tmp_path / "loop_a").mkdir()
    (tmp_path / "loop_a" / "summary.json").write_text(json.dumps(summary))
    bag_loop.compare([str(tmp_path / "loop_a")], str(tmp_path / "runs.png"))
    (fig,) = drawn
    label = fig.axes[0].get_ylabel()
    assert "8 held-out" in label and "50" not in label and "95% CI" in label
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"


def test_the_view_picture_keeps_its_labels_apart_and_its_legend_off_the_commands(tmp_path, drawn):
    """Before (docs/viewing.png): in the robot close-up the labels of nearby frames ('camera, camera_optical' and
    'base_link, imu') were written over each other and the axes had no unit; the cmd_vel legend, in the lower right
    corner, hid the angular command."""
    from geometry_msgs.msg import Twist
    from std_msgs.msg import String
    from test_ros_tf import EXPECTED_ROBOTS, robot_static_transforms, stamped_transform
    from tf2_msgs.msg import TFMessage

    from liquid_control.ros import robot_description as rd
    from liquid_control.ros import view

    robot = rd.describe(rd.nominal_model("LiquidRover-v0"), EXPECTED_ROBOTS["LiquidRover-v0"])
    rec = view.Recording(frame_prefix="")
    rec.add("robot_description", String(data=rd.to_urdf(robot, "")), 0.0)
    rec.add("/tf_static", TFMessage(transforms=robot_static_transforms(robot)), 0.0)
    for k in range(40):  # facing -x, as the committed picture's rover at its end
        pose = stamped_transform("odom", "base_link", (-0.15 * k, -0.1 * k, 0.05), (0.0, 0.0, 0.0, 1.0))
        rec.add("/tf", TFMessage(transforms=[pose]), 0.1 * k)
        rec.add("cmd_vel", Twist(), 0.1 * k)
        rec.commands[-1] = (0.1 * k, 0.9, -1.4 if k > 30 else 0.0)  # the angular command low at the end
    view.render_snapshot(rec, tmp_path / "view.png")
    (fig,) = drawn
    close_up = next(ax for ax in fig.axes if ax.get_title().startswith("robot at its last pose"))
    assert (close_up.get_xlabel(), close_up.get_ylabel()) == ("x (m)", "y (m)")
    labels = [_extent(fig, text) for text in close_up.texts]
    assert len(labels) >= 2
    for i, a in enumerate(labels):
        assert not any(a.overlaps(b) for b in labels[i + 1 :]), [t.get_text() for t in close_up.texts]
    commands = next(ax for ax in fig.axes if ax.get_title().startswith("cmd_vel"))
    legend = commands.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["linear.x (m/s)", "angular.z (rad/s)"]
    box = _extent(fig, legend)
    assert not any(box.overlaps(_extent(fig, ax)) for ax in fig.axes) and box.x1 <= fig.bbox.width


def _seen_with(kind: str, color) -> np.ndarray:
    """CIELAB of ``color`` as seen with full protanopia or deuteranopia (Machado, Oliveira, Fernandes 2009)."""
    from matplotlib.colors import to_rgb

    deficiency = {
        "protanopia": [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ],
        "deuteranopia": [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ],
    }[kind]
    srgb = np.asarray(to_rgb(color))
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(np.asarray(deficiency) @ linear, 0.0, 1.0)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("kind", ["protanopia", "deuteranopia"])
def test_policies_drawn_alike_but_for_colour_differ_also_to_a_red_green_colour_blind_reader(tmp_path, drawn, kind):
    """Before: the bars took matplotlib's default colours; cfc (orange) and cfc_ncp (green), side by side in every
    group of docs/ood_report/success_by_shift.png, differ by 4.6 CIELAB units to a protanope: the same colour."""
    from matplotlib.colors import to_hex

    from liquid_control.evaluation.report import plot_success_by_shift

    policies = [f"p{i}" for i in range(11)]
    plot_success_by_shift(
        _cells(policies, ["in_distribution"]), {"": policies}, ["in_distribution"], str(tmp_path / "b.png")
    )
    (fig,) = drawn
    bars = [c for c in fig.axes[0].containers if hasattr(c, "patches") and c.get_label() in policies]
    looks = [(to_hex(c.patches[0].get_facecolor()), c.patches[0].get_hatch()) for c in bars]
    assert len(looks) == 11
    for (a, hatch_a), (b, hatch_b) in itertools.combinations(looks, 2):
        if hatch_a == hatch_b:  # told apart by colour alone
            assert np.linalg.norm(_seen_with(kind, a) - _seen_with(kind, b)) > 12, (a, b)


def test_neuron_traces_of_the_two_episodes_share_each_rows_range(tmp_path, drawn, monkeypatch):
    """Before: each panel of neuron_traces_*.png took its own vertical range, so the training-distribution column
    and the shifted one, drawn side by side to be compared, could show the same height for different states."""
    from liquid_control.evaluation import agents, saliency

    monkeypatch.setattr(agents, "load_cached_policy", lambda path, sha: SimpleNamespace(core=None))
    monkeypatch.setattr(saliency, "neuron_groups", lambda core: [("inter", [0, 1]), ("command", [2]), ("motor", [3])])
    scale = {"in_distribution": 1.0, "dusk": 5.0}  # the shift drives the states five times as far

    def replay(job):
        times = np.arange(20) * 0.1
        states = [scale[job.shift] * np.sin(t + np.arange(4)) for t in times]
        return {"times": list(times), "states": states, "record": {"outcome": "success"}}

    monkeypatch.setattr(saliency, "replay", replay)
    jobs = [
        SimpleNamespace(policy="cfc_ncp", training_seed=0, episode_seed=1, shift=s, checkpoint="c", checkpoint_sha="h")
        for s in scale
    ]
    saliency.plot_neuron_traces(jobs, str(tmp_path / "traces.png"))
    (fig,) = drawn
    rows = np.array(fig.axes).reshape(3, 2)
    for left, right in rows:
        assert left.get_ylim() == right.get_ylim()
    assert rows[0, 0].get_ylabel() == "inter state\n(2 neurons)"


def test_the_titles_of_one_column_attention_figures_are_inside_the_picture(tmp_path, drawn, monkeypatch):
    """Before: with one visual shift (`eval --shift in_distribution`) the saliency grid and the neuron traces are
    one column wide, narrower than their one-line titles, which were cut off at both sides ('lBackProp saliency
    (same frames in each col'); 27d6a2a8 wrapped only the success and timing figures' titles."""
    from liquid_control.evaluation import agents, saliency
    from liquid_control.policy.encoders import CameraEncoder

    class Policy:
        camera = CameraEncoder(16, 16, [4, 4], [3, 3], [2, 2], 8)

    frames = {"in_distribution": np.zeros((16, 16, 3), np.uint8)}
    saliency.plot_saliency_grid([("p", Policy(), frames)], str(tmp_path / "grid.png"))
    monkeypatch.setattr(agents, "load_cached_policy", lambda path, sha: SimpleNamespace(core=None))
    monkeypatch.setattr(saliency, "neuron_groups", lambda core: [("inter", [0]), ("command", [1]), ("motor", [2])])
    times = list(np.arange(5) * 0.1)
    monkeypatch.setattr(
        saliency, "replay", lambda job: {"times": times, "states": [np.zeros(3)] * 5, "record": {"outcome": "success"}}
    )
    job = SimpleNamespace(
        policy="cfc_ncp",
        training_seed=0,
        episode_seed=20000000,
        shift="in_distribution",
        checkpoint="c",
        checkpoint_sha="h",
    )
    saliency.plot_neuron_traces([job], str(tmp_path / "traces.png"))
    for fig in drawn:
        box = _extent(fig, fig._suptitle)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, fig._suptitle.get_text()
        for ax in fig.axes:  # above the column titles, not over them
            assert not box.overlaps(_extent(fig, ax.title)) or not ax.get_title(), ax.get_title()


@pytest.mark.parametrize("kind", ["protanopia", "deuteranopia"])
def test_the_bag_loop_rounds_figure_draws_its_seeds_in_colours_a_colour_blind_reader_tells_apart(tmp_path, drawn, kind):
    """Before: scripts/bag_loop.py rounds drew its training seeds in matplotlib's default blue, orange and green
    (docs/bag_loop_dagger/rounds.png): orange and green are one colour to a protanope."""
    import importlib.util
    import json
    import pathlib

    from matplotlib.colors import to_hex

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bag_loop", root / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)
    outs = []
    for seed in range(3):
        for where in ("sim", "round_1/sim"):
            folder = tmp_path / f"seed{seed}" / where
            folder.mkdir(parents=True)
            rows = [
                {"policy": "bags", "shift": "in_distribution", "episode_seed": e, "success": (e + seed) % 2 == 0}
                for e in range(6)
            ]
            (folder / "results.json").write_text(json.dumps(rows))
        outs.append(str(tmp_path / f"seed{seed}"))
    bag_loop.rounds(outs, str(tmp_path / "rounds.png"))
    (fig,) = drawn
    seeds = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("seed")]
    assert [line.get_label() for line in seeds] == ["seed0", "seed1", "seed2"]
    looks = [(to_hex(line.get_color()), line.get_linestyle()) for line in seeds]
    for (a, style_a), (b, style_b) in itertools.combinations(looks, 2):
        if style_a == style_b:
            assert np.linalg.norm(_seen_with(kind, a) - _seen_with(kind, b)) > 12, (a, b)


def test_the_bag_loop_figures_have_a_title_whole_intervals_at_100_percent_and_their_legend_beside_the_data(
    tmp_path, drawn
):
    """Before: scripts/bag_loop.py compare put its legend in the upper right corner of the axes, over the last run's
    bar top and interval when it came near 100%, and rounds put it in the lower right corner, over a seed that fell
    back in the last rounds; both cut the axes at 1.0, so an interval reaching 100% lost half its cap to the frame,
    and neither figure had a title."""
    import importlib.util
    import json
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bag_loop", root / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)
    summary = json.loads((root / "docs" / "bag_loop" / "summary.json").read_text())
    runs = []
    for name, successes, interval in (("loop_a", 25, [0.36, 0.64]), ("loop_b", 50, [0.93, 1.0])):
        summary["simulated_episodes"]["bags"].update(success=successes, episodes=50, ci95=interval)
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        runs.append(str(tmp_path / name))
    bag_loop.compare(runs, str(tmp_path / "runs.png"))
    seeds = []
    for seed, last in ((0, True), (1, False)):  # seed 1 falls back to 0% in the last round
        for r, where in enumerate(("sim", "round_1/sim", "round_2/sim")):
            folder = tmp_path / f"seed{seed}" / where
            folder.mkdir(parents=True)
            won = last if r == 2 else r == 1
            rows = [{"policy": "bags", "shift": "in_distribution", "episode_seed": e, "success": won} for e in range(6)]
            (folder / "results.json").write_text(json.dumps(rows))
        seeds.append(str(tmp_path / f"seed{seed}"))
    bag_loop.rounds(seeds, str(tmp_path / "rounds.png"))
    assert len(drawn) == 2
    for fig in drawn:
        (ax,) = fig.axes
        assert ax.get_title(), "no title"
        assert ax.get_ylim()[1] > 1.0  # an interval's cap at 100% drawn whole
        legend = _extent(fig, ax.get_legend())
        assert not legend.overlaps(_extent(fig, ax.patch)), ax.get_title()
        assert legend.x1 <= fig.bbox.width and legend.y0 >= 0


def test_the_augmentation_sheet_says_what_it_shows(tmp_path, drawn):
    """Before: scripts/augmentation_sheet.py (docs/augmentations.png) had panel titles only ('brightness', 'noise'):
    no title saying that they are one camera frame under each training augmentation, nor where their ranges are."""
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("augmentation_sheet", root / "scripts" / "augmentation_sheet.py")
    sheet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sheet)
    assert sheet.main(["--out", str(tmp_path / "sheet.png")]) == 0
    (fig,) = drawn
    title = fig._suptitle.get_text() if fig._suptitle else ""
    assert "training.augmentation" in title and "seed 3" in title and "docs/training.md" in title, title
    box = _extent(fig, fig._suptitle)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
