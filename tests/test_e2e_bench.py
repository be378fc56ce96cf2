"""`lunarfleet bench` for real, in a small variant: every field is there and sane.

No timing assertions: the machine is shared, so only shapes, signs and consistency.
"""

from __future__ import annotations

import importlib.util
import json
import pstats
import statistics
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.browser


def test_bench_quick_writes_rows_and_summary_fields(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    out = tmp_path / "bench.json"
    result = run_cli(
        [
            "bench", "--quick", "--json", str(out), "--tabs", "1,2", "--sims", "4", "--seconds", "0.5",
            "--ppo-rollout", "512", "--ppo-rollouts", "1", "--realtime-tabs", "1", "--original-n-steps", "64",
            "--profile", str(tmp_path / "profile"),
            "--app-port", str(app), "--base-port", str(base),
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == []

    rows = data["rows"]
    for row in rows:
        assert {"mode", "envs", "steps_per_s", "ratio_to_ceiling"} <= set(row)
        assert row["steps_per_s"] > 0 and row["envs"] >= 1
    modes = {(row["mode"], row["tabs"]) for row in rows}
    for kind in ("inline", "subproc", "inline-sims4"):
        assert {(kind, 1), (kind, 2)} <= modes, modes
    assert ("realtime", 1) in modes and ("ppo-tabs", 4) in modes
    by = {(row["mode"], row["tabs"]): row for row in rows}
    assert by[("inline-sims4", 2)]["envs"] == 8 and by[("inline", 2)]["envs"] == 2
    ceilings = {row["envs"]: row["steps_per_s"] for row in rows if row["mode"] == "null"}
    for row in rows:
        if row["mode"] in ("inline", "subproc", "inline-sims4", "realtime"):
            assert row["envs"] in ceilings
            assert row["ratio_to_ceiling"] == pytest.approx(row["steps_per_s"] / ceilings[row["envs"]], rel=1e-2)
            assert row["python_cpu_ms_per_1k"] > 0 and row["browser_cpu_ms_per_1k"] > 0

    assert 0 < data["startup_s_8_tabs"] <= data["pool_ready_s_8_tabs"]
    assert data["startup"]["browser_launched_s"] < data["startup_s_8_tabs"]
    assert 0 < data["pss_mb_per_tab"] <= data["pss_mb_per_tab_max"] < 1000
    assert data["pss_mb_browser_shared"] > 0
    assert data["ppo_fps_tabs"] > 0 and data["ppo_fps_null"] > 0
    assert data["ppo_ratio"] == pytest.approx(data["ppo_fps_tabs"] / data["ppo_fps_null"], rel=1e-2)
    assert data["ppo"]["with_tabs"]["n_envs"] == data["ppo"]["with_null_env"]["n_envs"] == 16  # 4 tabs x 4 sims
    assert data["ppo"]["with_tabs"]["n_steps"] == data["ppo"]["with_null_env"]["n_steps"]
    assert data["realtime"]["1_tabs"]["realtime_steps_per_s"] > 0
    assert set(data["targets"]) == {"collection_4_tabs", "ppo_ratio", "startup_s_8_tabs", "pss_mb_per_tab", "dashboard_cost_percent"}
    dashboard = data["dashboard"]  # (i) at 8 tabs, without and with the dashboard
    assert dashboard["tabs"] == 8 and dashboard["pictures_taken"] >= 8 and dashboard["own_cpu_s"]["pages"] > 0
    assert dashboard["cost_percent"] > 0 and data["targets"]["dashboard_cost_percent"]["value"] == dashboard["cost_percent"]
    assert by[("dashboard-off", 8)]["steps_per_s"] > 0 and by[("dashboard-on", 8)]["steps_per_s"] > 0
    assert "dashboard, 8 tabs: its own CPU" in result.stdout
    assert data["targets"]["collection_4_tabs"]["met"] is None  # no 4-tab rows in this variant
    assert data["fastest_kind"] in ("inline", "subproc", "tie")
    assert "x ceiling" in result.stdout and "start-up: 8 tabs connected" in result.stdout
    # (h) the floor: the echo page at 1 and 4 tabs, and each row against it (1-tab rows: the 1-tab floor)
    floor = {row["tabs"]: row for row in rows if row["mode"] == "floor"}
    assert set(floor) == {1, 4}
    assert data["floor"]["round_trips_per_s"] == floor[4]["steps_per_s"] > 0
    assert data["floor"]["python_us"] == floor[4]["python_cpu_ms_per_1k"] > 0
    assert data["floor"]["browser_us"] == floor[4]["browser_cpu_ms_per_1k"] > 0
    assert data["floor"]["one_tab"]["round_trips_per_s"] == floor[1]["steps_per_s"]
    by_type = data["floor"]["browser_us_by_type"]
    assert by_type["renderer"] > 0 and sum(by_type.values()) == pytest.approx(data["floor"]["browser_us"], abs=1.0)
    one = by[("inline", 1)]
    assert one["x_floor"]["steps_per_s"] == pytest.approx(one["steps_per_s"] / floor[1]["steps_per_s"], rel=1e-2)
    assert one["x_floor"]["python"] == pytest.approx(one["python_cpu_ms_per_1k"] / floor[1]["python_cpu_ms_per_1k"], rel=2e-2)
    assert data["per_step_cpu_us"] == {}  # measured at 4 tabs x 1 simulation: no such row in this variant
    assert "floor (echo page, 4 tabs)" in result.stdout and "x floor" in result.stdout
    # PPO at the original settings: 4 envs as 4 x 1, 2 x 2 and 1 x 4, with tabs and the null env
    for key, tabs, sims in (("ppo_original_settings", 4, 1), ("ppo_original_settings_packed", 2, 2),
                            ("ppo_original_settings_one_tab", 1, 4)):
        p = data[key]
        assert (p["tabs"], p["sims_per_tab"], p["torch_threads"]) == (tabs, sims, 1)
        for run in (p["with_tabs"], p["with_null_env"]):
            assert (run["n_envs"], run["n_steps"], run["batch_size"], run["n_epochs"]) == (4, 64, 64, 10)
            assert run["timesteps"] >= 2 * 4 * 64  # at least 2 rollouts each
        assert p["ratio"] == pytest.approx(p["with_tabs"]["fps"] / p["with_null_env"]["fps"], rel=1e-2)
    # (p) the profiles of each side
    profile = tmp_path / "profile"
    assert "==== the trainer's thread" in (profile / "python-profile.txt").read_text()
    profiled = pstats.Stats(str(profile / "python.pstats")).stats  # type: ignore[attr-defined]
    assert any(path.endswith("tab_link.py") for path, _, _ in profiled)  # the sockets' side, run by that thread
    assert json.loads((profile / "chromium-trace.json").read_text())["traceEvents"]
    assert "busy (top-level tasks) per process" in (profile / "chromium-profile.txt").read_text()
    ray = data["ray"]
    if importlib.util.find_spec("ray") is None:
        assert "not installed" in ray["skipped"]
    else:  # (g) 4 tabs through 2 local Ray hosts, against inline 4 tabs in alternating windows
        assert ray["hosts"] == 2 and ray["tabs_per_host"] == 2 and ray["steps_per_s"] > 0
        assert ray["ray_start_s"] > 0 and ray["hosts_ready_s"] > 0
        pairs = ray["pairs"]
        assert len(pairs) == 3 and all(h > 0 and i > 0 for h, i in pairs)
        assert ray["ratio_to_inline"] == pytest.approx(statistics.median(h / i for h, i in pairs), abs=1e-3)
        assert ray["inline_steps_per_s"] == pytest.approx(statistics.median(i for _, i in pairs), abs=0.1)
        assert "median of 3 pairs of alternating windows" in result.stdout
        assert by[("ray", 4)]["envs"] == 4 and "Ray hosts: 2 x 2 tabs collected" in result.stdout
        # the host actors' Python and Ray's processes in their own column, not the browser's
        assert by[("ray", 4)]["ray_cpu_ms_per_1k"] > 0 and by[("ray", 4)]["browser_cpu_ms_per_1k"] > 0
        assert ray["settle_s"] >= 0
        rounds = ray["empty_rounds"]
        assert rounds["rounds_per_s"] > 0 and rounds["ms_per_round"] == pytest.approx(1e3 / rounds["rounds_per_s"], rel=1e-2)
        assert rounds["ray_cpu_ms_per_round"] > 0 and "Hosts' own round" in result.stdout
        assert ray["round_share_of_step"] == pytest.approx(ray["steps_per_s"] / 4 / rounds["rounds_per_s"], abs=2e-3)  # both rounded
        assert data["ray_ppo"]["fps"] > 0 and data["ray_ppo"]["n_envs"] == 4 and by[("ppo-ray", 4)]["steps_per_s"] > 0
