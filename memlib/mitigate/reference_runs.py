"""Rows of another notebook's committed reference run (``figures/<stem>/metrics.json``), so a later notebook can
put its methods beside earlier ones without rerunning them. Comparable only when both ran the same prompts,
noises and generation settings; otherwise the reason is returned and nothing is compared."""
from __future__ import annotations

import json
from pathlib import Path

SAME_SETTINGS = ("n_gens", "num_steps", "guidance_scale", "heldout_prompts", "seed", "max_prompts_per_group")


def committed_metrics(stem: str, cfg, path: str | Path | None = None) -> tuple[dict | None, dict]:
    """(metrics, {'source', 'commit'}) of notebook ``stem``'s committed run, or (None, {'reason': ...})."""
    from ..paths import repo_root

    path = Path(path) if path else repo_root() / "figures" / stem / "metrics.json"
    info = {"source": f"figures/{stem}/metrics.json"}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, {**info, "reason": f"notebook {stem}'s metrics are missing; run it first"}
    params = doc.get("provenance", {}).get("parameters", {})
    diff = [k for k in SAME_SETTINGS if params.get(k) != getattr(cfg, k)]
    if params.get("testbed_preset", "default") != cfg.testbed.preset:
        diff.append("testbed")
    if diff:
        return None, {**info, "reason": f"notebook {stem} ran with other settings ({', '.join(diff)}); not comparable"}
    return doc["metrics"], {**info, "commit": doc.get("provenance", {}).get("git_commit")}
