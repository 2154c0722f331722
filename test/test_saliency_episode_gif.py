"""saliency_episode.gif as a reader sees it: what its action bars command and their range, which picture is which,
and every text inside the frame. PIL draws the text, so the test reads back what was drawn and where."""

import numpy as np
from PIL import Image, ImageDraw

from liquid_control.paths import policies_dir


def _drawn_texts(monkeypatch):
    """(text, its box, the image's size) of every text drawn on a PIL image in the test."""
    drawn, real = [], ImageDraw.ImageDraw.text

    def text(self, xy, text, *args, **kwargs):
        drawn.append((text, self.textbbox(xy, text), self.im.size))
        return real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    return drawn


def test_the_episode_animation_names_the_worlds_actions_and_keeps_its_text_inside_the_frame(tmp_path, monkeypatch):
    """Before: the bars were labelled 'lin' and 'ang' whatever the world, also for the camera balancer's left and
    right wheel torques (cfc_balance_nav), with no range; the caption line was cut off at the right edge of a frame
    two 64-pixel pictures wide ('cfc_balance_nav | camera_noise_0.1 | t=12.6s | tim'), and nothing said which
    picture is the saliency or how it is scaled."""
    from liquid_control.evaluation import saliency
    from liquid_control.evaluation.plan import build_plan
    from liquid_control.evaluation.report import write_saliency

    shipped = policies_dir() / "cfc_balance_nav.pt"  # 32x32 camera, wheel torques
    plan = build_plan(["expert", f"cfc_balance_nav={shipped}"], ["in_distribution", "camera_noise_0.1"], 1)
    rng = np.random.default_rng(0)

    def replay(job):
        steps = 20
        return {
            "images": [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(steps)],
            "actions": [np.array([np.sin(k), -1.5]) for k in range(steps)],  # beyond the limits: drawn at -1
            "times": list(0.65 * np.arange(steps)),
            "states": [],
            "record": {
                "policy": job.policy,
                "training_seed": job.training_seed,
                "shift": job.shift,
                "episode_seed": job.episode_seed,
                "outcome": "timeout",
            },
        }

    monkeypatch.setattr(saliency, "replay", replay)
    drawn = _drawn_texts(monkeypatch)
    lines = write_saliency(plan, str(tmp_path), [])
    assert "![saliency over an episode](saliency_episode.gif)" in "\n".join(lines)
    with Image.open(tmp_path / "saliency_episode.gif") as gif:
        assert gif.n_frames == 20
        size = gif.size
    texts = [text for text, _, _ in drawn]
    assert "left wheel" in texts and "right wheel" in texts, texts
    assert "lin" not in texts and "ang" not in texts
    assert any("-1 to +1" in text for text in texts) and any("saliency" in text for text in texts), texts
    assert any("cfc_balance_nav | camera_noise_0.1" in text for text in texts), texts
    for text, (x0, y0, x1, y1), image_size in drawn:
        assert image_size == size
        assert x0 >= 0 and y0 >= 0 and x1 <= size[0] and y1 <= size[1], (text, (x0, y0, x1, y1), size)
