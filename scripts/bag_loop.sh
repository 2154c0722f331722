#!/usr/bin/env bash
# The robot loop end to end, in simulation: record expert driving to rosbag2 (MCAP), train a liquid policy from
# those bags alone, check it offline on held-out bags, then drive 50 held-out simulated episodes with it and
# replay a held-out bag through policy_node over DDS. Figures: $OUT/summary.md (and summary.json); with
# DAGGER_ROUNDS, then deploy-record-retrain rounds from the bags: $OUT/rounds.md and rounds.png. A rerun with the
# same settings (kept in $OUT/loop_settings.txt; others are refused) continues an interrupted loop (finished stages
# kept, missing bags recorded, a cut-short replay redone).
#
#   scripts/bag_loop.sh                    # defaults below (~10-25 min on 2 cores)
#   OUT=runs/loop_dart NOISE_STD=0.3 NOISE_CORR=0.9 BURST_RATE=0.3 scripts/bag_loop.sh    # docs/bag_loop/README.md's run
#   python scripts/bag_loop.py publish --out runs/loop_dart --to docs/bag_loop             # keep its small files
#   OUT=runs/loop_dagger DAGGER_ROUNDS=10 scripts/bag_loop.sh   # + ten DAgger rounds from the bags (~40 CPU-min)
#
# Seeds: training bags 100.., validation bags (model selection) 500.., test bags (offline error) 600..; the
# simulated evaluation uses the evaluation seeds 20,000,000.. (liquid-control eval's default): all disjoint.
set -euo pipefail
if [ $# -gt 0 ]; then  # its settings are environment variables: an argument (--help) used to start the whole loop
  case "$1" in -h | --help)
    sed -n '2,15p' "$0" | cut -c3-
    echo; echo "Settings (environment variables) and their defaults:"; grep -E '^[A-Z_]+=\$\{' "$0"
    exit 0 ;;
  esac
  echo "bag_loop: takes no arguments, got '$*'; its settings are environment variables (scripts/bag_loop.sh --help)" >&2
  exit 2
fi

OUT=${OUT:-reports/bag_loop}
CONFIG=${CONFIG:-policies/configs/cfc_ncp_rover.yaml}
EPISODES=${EPISODES:-20}          # recorded expert episodes (training bags)
VAL_EPISODES=${VAL_EPISODES:-3}   # held-out bags for model selection
TEST_EPISODES=${TEST_EPISODES:-5} # held-out bags for the offline error
EVAL_EPISODES=${EVAL_EPISODES:-50}
EPOCHS=${EPOCHS:-100}
SEED=${SEED:-0}                   # training seed
NOISE_STD=${NOISE_STD:-0.0}       # noise injected into the expert's executed command (action units)
NOISE_CORR=${NOISE_CORR:-0.0}
BURST_RATE=${BURST_RATE:-0.0}     # swerves per second in the expert's executed command (recovery demonstrations)
EXPERT_MARGIN=${EXPERT_MARGIN:-}  # clearance (m) the recording expert keeps from trees beyond the rover's radius ("": the training expert's)
AUGMENT=${AUGMENT---augment}      # image augmentation of BC (AUGMENT="" switches it off)
EXTRA_SET=${EXTRA_SET:-}          # further --set KEY=VALUE for training
EVAL_ARGS=${EVAL_ARGS:-}          # further options of the simulated evaluation (e.g. --no-saliency --backend serial)
REPLAY=${REPLAY:-1}               # replay a test bag through policy_node over DDS (0: skip)
RENDER_SIZE=${RENDER_SIZE:-}      # camera height in pixels ("": CONFIG's observation.image; the node does not resize)
RENDER_WIDTH=${RENDER_WIDTH:-}    # camera width in pixels ("": CONFIG's, or square with RENDER_SIZE; 0: square)
TIME_LIMIT=${TIME_LIMIT:-0}       # episode time limit of the recordings (s; 0: the world's)
DAGGER_ROUNDS=${DAGGER_ROUNDS:-0} # then this many deploy-record-retrain rounds (DAgger: the policy drives, the expert
                                  # labels every update and drives a decaying random share; scripts/takeover_rounds.sh)
ROUND_EPISODES=${ROUND_EPISODES:-20}  # supervised episodes per round
ROUND_EPOCHS=${ROUND_EPOCHS:-20}      # fine-tuning epochs per round
ROUND_TIME_LIMIT=${ROUND_TIME_LIMIT:-10}  # s: a supervised episode ends then (fewer labels of a lost target's search)
LC=${LC:-liquid-control}
PYTHON=${PYTHON:-python}

for name in DAGGER_ROUNDS ROUND_EPISODES ROUND_EPOCHS; do  # checked before the loop's first stage, not after it
  case "${!name}" in ''|*[!0-9]*) echo "bag_loop: $name must be a whole number, got '${!name}'" >&2; exit 2 ;; esac
  printf -v "$name" '%d' "$((10#${!name}))"  # 08 is 8
done
if [ "$DAGGER_ROUNDS" -gt 0 ]; then
  [ "$ROUND_EPISODES" -ge 1 ] && [ "$ROUND_EPOCHS" -ge 1 ] ||
    { echo "bag_loop: ROUND_EPISODES and ROUND_EPOCHS must be >= 1 with DAGGER_ROUNDS" >&2; exit 2; }
  [ $((DAGGER_ROUNDS * ROUND_EPISODES)) -le 300 ] ||
    { echo "bag_loop: DAGGER_ROUNDS x ROUND_EPISODES > 300 would reach the validation seeds 500.." >&2; exit 2; }
fi
# the settings that make the loop's results: a rerun into an OUT made with others would keep its bags and run and
# only claim the new settings in the summary (before: EPOCHS=5 NOISE_STD=0.3 after EPOCHS=1 trained nothing, exit 0)
made_with=""
for name in CONFIG EPISODES VAL_EPISODES TEST_EPISODES EVAL_EPISODES EPOCHS SEED NOISE_STD NOISE_CORR BURST_RATE \
  EXPERT_MARGIN AUGMENT EXTRA_SET RENDER_SIZE RENDER_WIDTH TIME_LIMIT; do
  made_with+="$name=${!name}"$'\n'
done
if [ -f "$OUT/loop_settings.txt" ]; then
  differ=$(diff <(cat "$OUT/loop_settings.txt") <(printf '%s' "$made_with")) || true
  [ -z "$differ" ] || {
    was=$(sed -n 's/^< //p' <<<"$differ" | paste -sd ' ')
    now=$(sed -n 's/^> //p' <<<"$differ" | paste -sd ' ')
    echo "bag_loop: $OUT holds a loop made with $was, not $now ($OUT/loop_settings.txt); give another OUT or remove it first" >&2
    exit 2
  }
fi
mkdir -p "$OUT"
[ -f "$OUT/loop_settings.txt" ] || printf '%s' "$made_with" > "$OUT/loop_settings.txt"
settings="OUT=$OUT CONFIG=$CONFIG EPISODES=$EPISODES VAL_EPISODES=$VAL_EPISODES TEST_EPISODES=$TEST_EPISODES EVAL_EPISODES=$EVAL_EPISODES \
EPOCHS=$EPOCHS SEED=$SEED NOISE_STD=$NOISE_STD NOISE_CORR=$NOISE_CORR BURST_RATE=$BURST_RATE EXPERT_MARGIN=$EXPERT_MARGIN AUGMENT=$AUGMENT \
EXTRA_SET=\"$EXTRA_SET\""
if [ -z "$RENDER_SIZE" ]; then  # the policy's camera: recorded at its size, height and width
  camera=$($PYTHON -c 'import sys; from liquid_control.policy import load_config
image = load_config(sys.argv[1])["observation"]["image"] or {}
print(image.get("height", 64), image.get("width", 64))' "$CONFIG")
  RENDER_SIZE=${camera% *}
  RENDER_WIDTH=${RENDER_WIDTH:-${camera#* }}
fi
RENDER_WIDTH=${RENDER_WIDTH:-0}  # RENDER_SIZE given alone: square, as before
record=($LC record --expert --render-size "$RENDER_SIZE" --render-width "$RENDER_WIDTH" --time-limit "$TIME_LIMIT" --no-progress)
[ -z "$EXPERT_MARGIN" ] || record+=(--expert-margin "$EXPERT_MARGIN")
start=$(date +%s)
stage() { echo "[bag_loop $(($(date +%s) - start)) s] $*" >&2; }

# record_missing FOLDER SEED EPISODES [OPTIONS]: the episodes of FOLDER not recorded yet (every one of a new folder).
# A rerun completes an interrupted recording (before: a folder that existed was kept, a loop stopped after 2 of 6
# episodes trained on 2); a bag a killed recording left unfinished stops the loop, named as the one to delete.
record_missing() {
  local folder=$1 first=$2 count=$3 runs i
  shift 3
  runs=$($PYTHON scripts/bag_loop.py missing "$folder" --seed "$first" --episodes "$count") || exit $?
  # shellcheck disable=SC2206
  local pairs=($runs)  # "SEED COUNT" for each run of seeds without a bag
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    "${record[@]}" -o "$folder" --seed "${pairs[i]}" --episodes "${pairs[i + 1]}" "$@"
  done
}
stage "1/5 record $EPISODES expert episodes (+ $VAL_EPISODES validation, $TEST_EPISODES test) to MCAP"
record_missing "$OUT/bags/train" 100 "$EPISODES" \
  --noise-std "$NOISE_STD" --noise-correlation "$NOISE_CORR" --burst-rate "$BURST_RATE"
record_missing "$OUT/bags/validation" 500 "$VAL_EPISODES"
record_missing "$OUT/bags/test" 600 "$TEST_EPISODES"

stage "2/5 train $CONFIG from the training bags ($EPOCHS epochs)"
resume=()
[ -f "$OUT/run/checkpoint.pt" ] && resume=(--resume)
# a finished training is kept as it is (policy.pt, whose SHA-256 the evaluations and rounds record)
# shellcheck disable=SC2086
[ -f "$OUT/run/policy.pt" ] || $LC train --config "$CONFIG" --out "$OUT/run" --seed "$SEED" "${resume[@]}" --no-progress $AUGMENT \
  --bag "$OUT/bags/train/*" --val-bag "$OUT/bags/validation/*" \
  --set "training.epochs_first=$EPOCHS" $EXTRA_SET

stage "3/5 offline error on the test bags"
[ -f "$OUT/offline/offline.json" ] ||
  $LC eval --bag "$OUT/bags/test/*" --policy "bags=$OUT/run/policy.pt" --out "$OUT/offline" --no-progress

stage "4/5 $EVAL_EPISODES held-out simulated episodes"
eval_resume=()
[ -d "$OUT/sim" ] && eval_resume=(--resume)  # an interrupted evaluation continues
# shellcheck disable=SC2086
$LC eval --policy "bags=$OUT/run/policy.pt" --policy expert --episodes "$EVAL_EPISODES" --out "$OUT/sim" \
  --no-progress --no-example "${eval_resume[@]}" $EVAL_ARGS

if [ "$REPLAY" = 1 ] && [ ! -f "$OUT/replay/replay.json" ]; then
  stage "5/5 replay a test bag into policy_node over DDS, record its commands"
  $PYTHON scripts/bag_loop.py replay --policy "$OUT/run/policy.pt" \
    --bag "$(ls -d "$OUT"/bags/test/* | head -1)" --out "$OUT/replay"
fi

$PYTHON scripts/bag_loop.py summary --out "$OUT" --seconds "$(($(date +%s) - start))" --settings "$settings"
cat "$OUT/summary.md"

if [ "$DAGGER_ROUNDS" -gt 0 ]; then
  stage "rounds: $DAGGER_ROUNDS DAgger rounds of $ROUND_EPISODES supervised episodes each (scripts/takeover_rounds.sh)"
  # the recipe of docs/bag_loop/README.md ("Then DAgger rounds from the bags"): every update labelled, the operator driving a
  # random 50, 30, 20, 10, 10, ..% of the updates, short episodes, each round fine-tuning the last. Every setting is
  # given here, none inherited from the caller's environment; EXTRA_SET is never empty (a space without AUGMENT),
  # so takeover_rounds.sh's own default (the photometric augmentation) does not apply
  OUT=$OUT CONFIG=$CONFIG SEED=$SEED EVAL_EPISODES=$EVAL_EPISODES EVAL_ARGS="$EVAL_ARGS" ROUNDS=$DAGGER_ROUNDS \
    EPISODES=$ROUND_EPISODES SHADOW=1 THRESHOLD=10 HOLD_S=1.0 TIME_LIMIT=$ROUND_TIME_LIMIT SHARES="0.5 0.3 0.2 0.1" \
    CONTINUE=1 EPOCHS=$ROUND_EPOCHS SELECT=last RENDER_SIZE=$RENDER_SIZE RENDER_WIDTH=$RENDER_WIDTH EXPERT_MARGIN="$EXPERT_MARGIN" LC=$LC \
    EXTRA_SET="${AUGMENT:+--set training.augmentation=[brightness,contrast,gamma,colour,noise,blur]} $EXTRA_SET" \
    scripts/takeover_rounds.sh
  $PYTHON scripts/bag_loop.py rounds "$OUT" --figure "$OUT/rounds.png" | tee "$OUT/rounds.md"
  stage "done: $OUT/summary.md, $OUT/rounds.md, $OUT/rounds.png"
fi
