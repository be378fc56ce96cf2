"""`lunarfleet bench`'s printed result: a table of the rows, then a line per figure (each target
met or missed), then the errors and the machine."""

from __future__ import annotations

from orchestrator.bench_results import BenchResult, Row

HEADER = (f"{'mode':<16} {'tabs':>4} {'sims':>4} {'envs':>5} {'steps/s':>10} {'x ceiling':>10} {'py ms/1k':>9} {'browser ms/1k':>13} "
          f"{'ray ms/1k':>9} {'x floor: rate/py/browser':>24}  note")
ORDER = {"floor": -1, "null": 0, "inline": 1, "subproc": 2, "ray": 3, "realtime": 4, "ppo-null": 5, "ppo-inline": 6, "ppo-subproc": 6, "ppo-ray": 6, "ppo-tabs": 7}


def table(result: BenchResult) -> str:
    lines = [HEADER]
    lines += [_row_line(row) for row in sorted(result.rows, key=lambda x: (ORDER.get(x.mode, 3), x.mode, x.envs, x.tabs))]
    lines.append("")
    lines += _target_lines(result)
    lines += _other_lines(result)
    lines.append(
        f"{result.machine.get('cores')} cores, load {result.machine.get('load_before')} -> {result.machine.get('load_after')}; {result.elapsed_s:.0f} s"
    )
    return "\n".join(lines)


def _row_line(row: Row) -> str:
    ratio = "" if row.ratio_to_ceiling is None else f"{row.ratio_to_ceiling:.4f}" if row.ratio_to_ceiling < 0.1 else f"{row.ratio_to_ceiling:.3f}"
    tabs = str(row.tabs) if row.tabs else "-"
    return (
        f"{row.mode:<16} {tabs:>4} {row.sims_per_tab:>4} {row.envs:>5} {row.steps_per_s:>10,.0f} {ratio:>10} "
        f"{_fmt(row.python_cpu_ms_per_1k):>9} {_fmt(row.browser_cpu_ms_per_1k):>13} {_fmt(row.ray_cpu_ms_per_1k):>9} {_x_floor(row):>24}  {row.note}".rstrip()
    )


def by_type_text(us_by_type: dict[str, float]) -> str:
    """Chromium's CPU per step by process type, the largest first: "renderer 228, network 88, ..."."""
    return ", ".join(f"{kind} {us:.0f}" for kind, us in sorted(us_by_type.items(), key=lambda kv: -kv[1]))


def _x_floor(row: Row) -> str:
    x = row.x_floor
    return "/".join(f"{x[k]:.2f}" if k in x else "-" for k in ("steps_per_s", "python", "browser")) if x else ""


def _target_lines(result: BenchResult) -> list[str]:
    """Collection with 4 tabs, PPO with tabs against the null env, start-up and memory per tab."""
    lines = _floor_lines(result)

    def verdict(name: str) -> str:
        met = result.targets.get(name, {}).get("met")
        return "not measured" if met is None else "met" if met else "MISSED"

    c4 = result.collection_4_tabs
    if c4:
        lines.append(f"collection, 4 tabs: {c4['steps_per_s']:,.0f} env-steps/s ({c4['mode']}, {c4['envs']} envs); target >= 8,000: {verdict('collection_4_tabs')}")
    if result.ppo_ratio is not None:
        p = result.ppo
        lines.append(
            f"PPO: {result.ppo_fps_tabs:,.0f} fps with tabs ({p['vec_env']}, {p['tabs']} tabs, {p['with_tabs']['n_envs']} envs) vs "
            f"{result.ppo_fps_null:,.0f} with the null env = {result.ppo_ratio:.2f}x "
            f"({result.ppo_ratio_same_training:.2f}x with equal training times); target >= 0.9x: {verdict('ppo_ratio')}"
        )
    if result.startup_s_8_tabs is not None:
        lines.append(f"start-up: 8 tabs connected {result.startup_s_8_tabs:.2f} s after launch; target <= 5 s: {verdict('startup_s_8_tabs')}")
    if result.pss_mb_per_tab is not None:
        lines.append(
            f"memory: {result.pss_mb_per_tab:.1f} MB PSS per tab (renderer; max {result.pss_mb_per_tab_max:.1f}), "
            f"{result.pss_mb_browser_shared:.0f} MB shared by all tabs; target <= 60 MB: {verdict('pss_mb_per_tab')}"
        )
    d = result.dashboard
    if d:
        lines.append(
            f"dashboard, {d['tabs']} tabs: its own CPU {d['cost_percent']:.2f} % of the run's (pages "
            f"+ server {d['own_cpu_percent_of_a_core']:.1f} %, driver {d['driver_extra_percent_of_a_core']:.1f} % of a core; "
            f"{d['pictures_taken']} pictures); target <= 2 %: {verdict('dashboard_cost_percent')}"
        )
        lines.append(
            f"dashboard, {d['tabs']} tabs: the run's CPU {d['cpu_ms_per_1k_with']:,.1f} ms per 1000 steps with it vs "
            f"{d['cpu_ms_per_1k_without']:,.1f} without ({d['difference_percent']:+.1f} %; windows without it differ by "
            f"{d['noise_percent']:.1f} % among themselves); {d['steps_per_s_with']:,.0f} vs {d['steps_per_s_without']:,.0f} steps/s"
        )
    return lines


def _floor_lines(result: BenchResult) -> list[str]:
    """The floor (echo page), the cost of a step at 4 tabs x 1 simulation against it, and PPO at
    the original app's settings."""
    lines = []
    f = result.floor
    if f:
        by_type = by_type_text(f["browser_us_by_type"])
        lines.append(f"floor (echo page, 4 tabs): {f['round_trips_per_s']:,.0f} round trips/s; per round trip "
                     f"{f['python_us']:.0f} us Python, {f['browser_us']:.0f} us Chromium ({by_type})")
    c = result.per_step_cpu_us
    if c:
        x = c.get("x_floor", {})
        lines.append(f"one step at 4 tabs x 1 simulation: {c['trainer']:.0f} us trainer ({x.get('python', 0):.2f}x floor), "
                     f"{c['browser']:.0f} us Chromium ({x.get('browser', 0):.2f}x); collection {c['steps_per_s']:,.0f} "
                     f"env-steps/s ({x.get('steps_per_s', 0):.2f}x the floor's round trips/s)")
    for key, label in (("ppo_original_settings", "4 tabs x 1"), ("ppo_original_settings_packed", "2 tabs x 2"),
                       ("ppo_original_settings_one_tab", "1 tab x 4")):
        p = getattr(result, key)
        if p:
            lines.append(f"PPO at the original settings ({label} simulations = 4 envs, n_steps {p['with_tabs']['n_steps']:,}, batch 64, 10 epochs, "
                         f"1 torch thread): {p['with_tabs']['fps']:,.0f} fps with tabs vs {p['with_null_env']['fps']:,.0f} "
                         f"with the null env = {p['ratio']:.2f}x")
    return lines


def _other_lines(result: BenchResult) -> list[str]:
    """Real-time against lock-step, vec env start-up and worker memory, the faster kind, errors."""
    lines = []
    for key, rt in result.realtime.items():
        lines.append(
            f"real-time page ({key.replace('_', ' ')}): {rt['realtime_steps_per_s']:,.0f} steps/s vs lock-step "
            f"{rt['lockstep_steps_per_s']:,.0f}: lock-step is {rt['lockstep_gain']:g}x faster"
        )
    for kind, seconds in result.vec_env_start_s_8_tabs.items():
        lines.append(f"start-up: the {kind} vec env for 8 tabs listens after {seconds:.2f} s (pages connect only then)")
    if result.pss_mb_per_subproc_worker_as_train is not None:
        lines.append(f"memory: --vec-env subproc adds a worker process of {result.pss_mb_per_subproc_worker_as_train:.0f} MB PSS per tab")
    elif result.pss_mb_per_subproc_worker is not None:
        lines.append(f"memory: --vec-env subproc adds a worker process of {result.pss_mb_per_subproc_worker:.0f} MB PSS per tab "
                     "(forked from a preloaded server; more as train starts them)")
    ray = result.ray
    if ray.get("skipped"):
        lines.append(f"Ray hosts: not measured ({ray['skipped']})")
    elif ray:
        lines.append(f"Ray hosts: {ray['hosts']} x {ray['tabs_per_host']} tabs collected {ray['steps_per_s']:,.0f} env-steps/s; "
                     f"{ray['ratio_to_inline']:.2f}x inline with {ray['hosts'] * ray['tabs_per_host']} tabs "
                     f"(median of {len(ray['pairs'])} pairs of alternating windows, inline {ray['inline_steps_per_s']:,.0f}); "
                     f"Ray started in {ray['ray_start_s']:.1f} s, hosts had their tabs connected "
                     f"{ray['hosts_ready_s']:.1f} s later, and Ray's own start-up work was over "
                     f"{ray.get('settle_s', 0.0):.1f} s after that (measured from then)")
        rounds = ray.get("empty_rounds")
        if rounds:
            lines.append(f"Hosts' own round (an empty step frame to each host, no tab stepped): {rounds['ms_per_round']:.3f} ms, "
                         f"{rounds['python_cpu_ms_per_round'] + rounds['ray_cpu_ms_per_round']:.3f} ms CPU; "
                         f"{100 * ray['round_share_of_step']:.0f}% of a vec step through the hosts")
    if result.ray_ppo:
        inline = next((row.steps_per_s for row in result.rows if row.mode == "ppo-inline"
                       or (row.mode == "ppo-tabs" and row.sims_per_tab == 1 and row.envs == result.ray_ppo["n_envs"])), None)
        versus = f" vs {inline:,.0f} with inline ({result.ray_ppo['fps'] / inline:.2f}x)" if inline else ""
        lines.append(f"PPO through Ray hosts: {result.ray_ppo['fps']:,.0f} fps (n_steps {result.ray_ppo['n_steps']} x "
                     f"{result.ray_ppo['n_envs']} envs){versus}")
    if result.fastest_kind:
        lines.append(f"faster vec env kind, one simulation per tab (collection summed over tab counts, 10% margin): {result.fastest_kind}")
    for error in result.errors:
        lines.append(f"! {error}")
    return lines


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"
