"""bench/protocol.py: the equal-time protocols run each missing run once, under the name it is reported by."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

# bench/ is a folder of scripts, not a package: load the module by path, leaving sys.path alone.
_spec = importlib.util.spec_from_file_location(
    "bench_protocol", Path(__file__).resolve().parents[2] / "bench" / "protocol.py"
)
protocol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protocol)


def test_a_variant_is_the_medattn_arm_under_its_own_name_with_each_setting():
    arms = protocol.variant_arms(["plain", "medattn"], ['single:model="pranet";multi_scale=false'])
    assert arms == [
        ("plain", []),
        ("medattn", []),
        ("medattn", ["--name", "single", "--set", "model", '"pranet"', "--set", "multi_scale", "false"]),
    ]


def test_spread_is_mean_and_population_sd_and_one_seed_is_its_value():
    assert protocol.spread([0.5, 0.7]) == "0.600 ± 0.100"
    assert protocol.spread([0.25]) == "0.250"


def test_a_result_is_written_where_the_protocol_looks_for_it(tmp_path, capsys):
    args = argparse.Namespace(
        dataset="endo_soft", data_seed=1000, arm="medattn", name="single", set=[("multi_scale", "false")],
        seed=2, seconds=120.0,
    )  # fmt: skip
    path = protocol.write_result(args, tmp_path, {"steps": 10, "dice": 0.5}, ("dice",))
    assert path == tmp_path / "endo_soft_s1000" / "single_seed2.json"
    result = json.loads(path.read_text())
    assert result["arm"] == "single" and result["options"] == {"multi_scale": False}
    assert result["seconds"] == 120.0 and result["steps"] == 10
    assert json.loads(capsys.readouterr().out) == {"arm": "single", "seed": 2, "dice": 0.5}


def test_the_protocol_skips_runs_that_have_a_result(tmp_path, monkeypatch):
    done = tmp_path / "endo_soft_s1" / "plain_seed0.json"
    done.parent.mkdir()
    done.write_text("{}")
    commands = []
    monkeypatch.setattr(protocol.subprocess, "run", lambda command, check: commands.append(command))
    arms = [("plain", []), ("medattn", [])]
    protocol.run_protocol("bench.py", tmp_path, ["endo_soft"], [0, 1], arms, data_seed=1, seconds=60.0)
    ran = [(c[c.index("--arm") + 1], c[c.index("--seed") + 1]) for c in commands]
    assert ran == [("medattn", "0"), ("plain", "1"), ("medattn", "1")]
