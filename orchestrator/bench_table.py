"""`lunarfleet bench`'s printed result: a table of the rows, then a line per figure (each target
met or missed), then the errors and the machine."""

from __future__ import annotations

from orchestrator.bench_results import BenchResult, Row

HEADER = f"{'mode':<16} {'tabs':>4} {'sims':>4} {'envs':>5} {'steps/s':>10} {'x ceiling':>10} {'py ms/1k':>9} {'browser ms/1k':>13} {'ray ms/1k':>9}  note"
ORDER = {"null": 0, "inline": 1, "subproc": 2, "ray": 3, "realtime": 4, "ppo-null": 5, "ppo-inline": 6, "ppo-subproc": 6, "ppo-ray": 6, "ppo-tabs": 7}


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
        f"{_fmt(row.python_cpu_ms_per_1k):>9} {_fmt(row.browser_cpu_ms_per_1k):>13} {_fmt(row.ray_cpu_ms_per_1k):>9}  {row.note}".rstrip()
    )


def _target_lines(result: BenchResult) -> list[str]:
    """Collection with 4 tabs, PPO with tabs against the null env, start-up and memory per tab."""
    lines = []

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
        versus = (f" = {ray['ratio_to_inline']:.2f}x inline with {ray['hosts'] * ray['tabs_per_host']} tabs "
                  f"({ray['inline_steps_per_s']:,.0f})" if ray.get("ratio_to_inline") is not None else "")
        lines.append(f"Ray hosts: {ray['hosts']} x {ray['tabs_per_host']} tabs collected {ray['steps_per_s']:,.0f} env-steps/s"
                     f"{versus}; Ray started in {ray['ray_start_s']:.1f} s, hosts had their tabs connected "
                     f"{ray['hosts_ready_s']:.1f} s later, and Ray's own start-up work was over "
                     f"{ray.get('settle_s', 0.0):.1f} s after that (measured from then)")
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
