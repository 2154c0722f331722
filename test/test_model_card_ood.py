"""The OOD section of a model card is read from an evaluation's results, paired by episode seed."""

import json

import pytest

from liquid_control.training.model_card import ood_section


def test_ood_section_counts_successes_and_discordant_pairs(tmp_path):
    def rec(shift, seed, success, policy="robust"):
        return {"policy": policy, "shift": shift, "episode_seed": seed, "success": success}

    records = [rec("in_distribution", s, s != 3) for s in range(5)]  # 4/5
    records += [rec("dusk", s, s in (0, 3)) for s in range(5)]  # 2/5: seed 3 only at dusk, 1, 2, 4 only in-dist
    records += [rec("dusk", s, True, policy="other") for s in range(5)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(records))
    card = ood_section(path, "robust")
    assert card["shifts"]["in_distribution"]["success"] == 0.8
    dusk = card["shifts"]["dusk"]
    assert dusk["success"] == 0.4 and dusk["episodes"] == 5 and dusk["episode_seeds"] == "0..4"
    assert dusk["paired_with_in_distribution"] == {"episodes": 5, "only_here": 1, "only_in_distribution": 3}
    assert dusk["ci95"] == pytest.approx([0.1176, 0.7693], abs=1e-4)  # Wilson 2/5
    with pytest.raises(ValueError, match="no episodes of policy 'missing'"):
        ood_section(path, "missing")
