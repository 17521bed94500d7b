"""`bench run`: contamination -> dynamics -> train each variant -> generate per task -> judge/score -> tables and plots.

Every stage's output is keyed by a hash of everything that determines it (``state/<stage>.json`` holds the key and
whether the stage finished). A re-run skips finished stages whose key is unchanged, re-runs the ones whose inputs
changed, and finishes a half-done stage from where it stopped: training resumes from its last checkpoint, and
generations and judgments already made are served by the run's content-addressed cache (``cache.sqlite``), so no
finished judge call or generation is repeated after Ctrl-C or kill -9.

Modules: :mod:`.selection` (variants, seeds, tasks), :mod:`.context` (what stages share, paths), :mod:`.keys`
(stage keys), :mod:`.graph` (the stage list), :mod:`.state` (state files), :mod:`.stages` (each stage's body),
:mod:`.runner` (walks the graph), :mod:`.planning` (``--dry-run``), :mod:`.command` (``bench run`` end to end).
"""
from ..provenance import git_commit, hardware, package_versions
from .command import check_out_dir, provenance, run_pipeline
from .context import RunContext
from .graph import Stage, build_stages
from .planning import plan
from .runner import Runner
from .selection import SEED_SEP, run_tasks, run_variants
from .state import STATE

__all__ = ["RunContext", "Runner", "SEED_SEP", "STATE", "Stage", "build_stages", "check_out_dir", "git_commit",
           "hardware", "package_versions", "plan", "provenance", "run_pipeline", "run_tasks", "run_variants"]
