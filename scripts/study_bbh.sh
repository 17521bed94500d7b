#!/usr/bin/env bash
# The BBH study (bench/experiments/study-bbh.yaml), seed by seed, then its report (results/study/study-bbh/).
#   bash scripts/study_bbh.sh [RUN_DIR] [SEEDS]      defaults: runs/study-bbh, "0 1 2 3 4"
#   DONE=0,1 bash scripts/study_bbh.sh runs/study-bbh "2 3 4"    (seeds 0 and 1 already finished in RUN_DIR)
# Each pass runs the seeds so far with --force (the stage keys are per seed, so finished seeds are skipped and a
# killed pass resumes where it stopped); after each pass the report is rewritten, so every finished seed is complete
# in it.
# BBH comes from $BBH_DIR when set, else from the pinned download (needs the network once).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-.venv/bin/bench}
PY=${PYTHON:-.venv/bin/python}
RUN=${1:-runs/study-bbh}
SEEDS=${2:-"0 1 2 3 4"}
OUT=${REPORT_DIR:-results/study/study-bbh}
mkdir -p "$OUT"
HELD="bbh:boolean_expressions,bbh:sports_understanding,bbh:hyperbaton,bbh:web_of_lies,bbh:navigate,bbh:snarks,bbh:disambiguation_qa,bbh:ruin_names,bbh:movie_recommendation,bbh:logical_deduction_three_objects"
TRANSFER="bbh:formal_fallacies,bbh:tracking_shuffled_objects_three_objects"
done_seeds=${DONE:-}
for s in $SEEDS; do
  done_seeds=${done_seeds:+$done_seeds,}$s
  echo "study seeds=$done_seeds start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/wall-times.txt"
  HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} "$BENCH" run --config study-bbh --out "$RUN" "seeds=$done_seeds" --force
  # A finished training's checkpoints only served its resumption: ~1.3 GB per Mixup variant and seed, freed.
  for st in "$RUN"/state/train__*@s"$s".json; do
    [ -e "$st" ] && grep -q '"status": "done"' "$st" || continue
    v=$(basename "$st" .json); rm -rf "$RUN/variants/${v#train__}/checkpoints"
  done
  echo "study seeds=$done_seeds end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/wall-times.txt"
  "$PY" scripts/study_report.py "$RUN" "$OUT" --near-duplicates \
    --group "held-out, 10 trained tasks=$HELD" --group "transfer, 2 BBH tasks=$TRANSFER" \
    --group "all 12 tasks=$HELD,$TRANSFER" \
    --command "bash scripts/study_bbh.sh $RUN \"$SEEDS\"   # = bench run --config study-bbh --out $RUN seeds=0,..,k --force, k = 0..4"
done
