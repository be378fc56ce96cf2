"""A resource sample as TensorBoard scalars (`resources/...`), recorded through SB3's logger, so
speed, memory and restarts can be lined up with the reward curves of the same run."""

from __future__ import annotations

from orchestrator.sample import Sample


def tensorboard_scalars(sample: Sample) -> dict[str, float]:
    """The sample as flat `resources/...` scalars for SB3's logger (TensorBoard)."""
    alive_workers = [w for w in sample.workers if w.alive]
    scalars = {
        "resources/system_cpu_percent": sample.system["cpu_percent"],
        "resources/system_mem_available_mb": sample.system["mem_available_mb"],
        "resources/trainer_cpu_percent": sample.trainer.cpu_percent,
        "resources/trainer_rss_mb": sample.trainer.rss_mb,
        "resources/workers_cpu_percent": sum(w.cpu_percent for w in alive_workers),
        "resources/workers_rss_mb": sum(w.rss_mb for w in alive_workers),
        "resources/browser_cpu_percent": sample.browser.cpu_percent + sample.helpers.cpu_percent,
        "resources/chromium_pss_mb": sample.chromium_pss_mb,
    }
    for row in sample.tabs:
        scalars[f"resources/tab{row.tab}_cpu_percent"] = row.cpu_percent
        scalars[f"resources/tab{row.tab}_pss_mb"] = row.pss_mb or 0.0
        scalars[f"resources/tab{row.tab}_steps_per_s"] = row.steps_per_s
        scalars[f"resources/tab{row.tab}_restarts"] = float(row.restarts)
    return scalars
