from __future__ import annotations

import pytest

from jupyter_heroes.decision.energy import (
    MEM_W_PER_GB,
    EnergyError,
    PowerModel,
    from_consumed_energy,
    measured_power_from_slurm,
    parse_consumed_energy,
)


def test_idle_max_model_charges_the_share_of_the_node():
    m = PowerModel.from_dict({"idle_w": 100, "max_w": 400, "cores": 64})
    assert m.node_power_w(64) == 400
    assert m.node_power_w(16) == 100  # a quarter of a fully busy node
    half = PowerModel.from_dict({"idle_w": 100, "max_w": 400, "cores": 64, "utilisation": 0.5})
    assert half.node_power_w(16) == pytest.approx((100 + 300 * 0.5) / 4)
    assert m.node_power_w(128) == 400  # never more than the whole node


def test_tdp_model_with_memory_and_gpus():
    m = PowerModel.from_dict({"tdp_per_core_w": 10, "gpu_w": 300, "gpu_utilisation": 0.5})
    assert m.node_power_w(4, mem_gb=8) == pytest.approx(40 + 8 * MEM_W_PER_GB)
    assert m.node_power_w(4, mem_gb=0, gpus_used=2) == pytest.approx(40 + 2 * 300 * 0.5)
    assert "W/GPU" in m.describe()


def test_generic_model_says_it_is_generic():
    g = PowerModel.generic()
    assert g.node_power_w(2) == 20
    assert "declares no power model" in g.describe()


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"idle_w": 100}, "give both idle_w and max_w"),
        ({}, "give idle_w and max_w"),
        ({"idle_w": 300, "max_w": 200}, "max_w 200 is below idle_w 300"),
        ({"tdp_per_core_w": -1}, r"tdp_per_core_w: expected a number between 0 and inf"),
        ({"tdp_per_core_w": 5, "utilisation": 1.5}, "utilisation: expected a number between 0 and 1"),
        ({"tdp_per_core_w": 5, "watts": 1}, r"unknown field\(s\) \['watts'\]"),
        ({"tdp_per_core_w": "ten"}, "tdp_per_core_w"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_power_models_are_refused(d, message):
    with pytest.raises(EnergyError, match=message):
        PowerModel.from_dict(d)


@pytest.mark.parametrize(
    ("text", "joules"),
    [("5230", 5230.0), ("1.50K", 1500.0), ("12M", 12e6), ("2G", 2e9), ("0", 0.0), ("", None), ("  ", None)],
)
def test_slurm_consumed_energy(text, joules):
    assert parse_consumed_energy(text) == joules


def test_slurm_consumed_energy_is_measured():
    e = from_consumed_energy("3.6M")
    assert e.basis == "measured" and e.kwh == pytest.approx(1.0) and "Slurm" in e.source
    assert from_consumed_energy("") is None
    mp = measured_power_from_slurm("720K", elapsed_s=1200, nodes=2)
    assert mp.node_power_w == pytest.approx(300.0) and mp.runs == 1
    assert measured_power_from_slurm("720K", elapsed_s=0, nodes=2) is None


def test_malformed_consumed_energy():
    with pytest.raises(EnergyError, match="ConsumedEnergy '12 kJ'"):
        parse_consumed_energy("12 kJ")
