"""A core of one's own (docs/ARCHITECTURE.md, "Cells"): the page's example registers, runs in LiquidRNN, saves and
loads; a core type nobody registered says how to register one."""

import re
from pathlib import Path

import pytest
import torch

from liquid_control.cells import core as cells_core
from liquid_control.cells import load_model, save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def example():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    part = text[text.index("A core of your own") : text.index("\n## Worlds")]
    (code,) = re.findall(r"^```python\n(.*?)^```", part, flags=re.S | re.M)
    namespace = {"__name__": "own_core_example"}
    yield code, namespace
    cells_core.CORE_TYPES.pop("leaky", None)


def test_the_documented_core_of_ones_own_runs_saves_and_loads(example, tmp_path):
    code, namespace = example
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)
    outputs, h_n = namespace["outputs"], namespace["h_n"]
    assert outputs.shape == (2, 50, 8) and h_n.shape == (2, 8)
    torch.testing.assert_close(outputs[:, -1], h_n)  # its output is its state
    core = namespace["rnn"].cell
    save_model(tmp_path / "leaky.pt", core)
    loaded = load_model(tmp_path / "leaky.pt")
    assert type(loaded).__name__ == "LeakyCore" and loaded.config() == core.config()
    x, dt = torch.randn(1, 4, 3), torch.full((1, 4), 0.1)
    torch.testing.assert_close(loaded.forward_sequence(x, dt)[0], core.forward_sequence(x, dt)[0])


def test_an_unregistered_core_type_says_how_to_register_one(tmp_path):
    with pytest.raises(ValueError, match=r"unknown core type 'leaky'; known: cfc, .*register_core\(name\)"):
        cells_core.build_core({"type": "leaky", "input_size": 3, "hidden_size": 8})


def test_a_core_type_name_another_class_holds_is_refused(example):
    """Before: @register_core("cfc") on a class of one's own replaced the package's CfC for every policy loaded
    after it (policies/cfc_rover.pt built its core as the user's class), and a second "leaky" class replaced the
    first without a word. The same class defined again (a reloaded module, a notebook cell run twice) is taken."""
    from liquid_control.cells import CfCCell, RecurrentCore, register_core

    with pytest.raises(ValueError, match=r"register_core\('cfc'\): the core type 'cfc' is liquid_control\.cells\."):

        @register_core("cfc")
        class MyCfC(RecurrentCore):
            pass

    assert cells_core.CORE_TYPES["cfc"] is CfCCell
    code, namespace = example
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)  # run twice: the same class again
    exec(compile(code, "ARCHITECTURE.md", "exec"), {"__name__": "__main__"})  # the script, beside its module
    with pytest.raises(ValueError, match=r"the core type 'leaky' is __main__\.LeakyCore's; register Other"):

        @register_core("leaky")
        class Other(RecurrentCore):
            pass


def test_a_policy_config_naming_a_core_of_ones_own_says_where_it_runs(example):
    """A registered core named in a policy config met only 'unknown value'; a plain typo gets no such hint."""
    from liquid_control.paths import policies_dir
    from liquid_control.policy import PolicyConfigError, load_config, validate_config

    code, namespace = example
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)
    config = load_config(policies_dir() / "configs" / "cfc_rover.yaml")
    hint = "a core of your own (register_core) runs in your own training loop, not in a policy config"
    for kind, said in (("leaky", True), ("transformer", False)):
        config["core"] = {"type": kind, "units": 8}
        with pytest.raises(PolicyConfigError, match=rf"core\.type: unknown value '{kind}'") as caught:
            validate_config(config)
        assert (hint in str(caught.value)) == said, caught.value
