#!/usr/bin/env bash
# Deploy-record-retrain rounds after scripts/bag_loop.sh (docs/real_robot.md, "Deploy, record the policy,
# repeat"): in each round the latest policy drives new simulated episodes while the expert supervises it and
# takes over where it errs (`liquid-control record --expert --policy`, HG-DAgger); by default only the operator's
# commands become labels (SHADOW=1: every update's; SHARES: the operator also drives a random share, DAgger). The
# policy is then trained again from every bag so far (CONTINUE=1: fine-tuned from the round's driver) and drives
# the same EVAL_EPISODES held-out episodes. A rerun continues: finished rounds, recordings and trainings are kept.
#
#   OUT=runs/loop_base ROUNDS=2 scripts/takeover_rounds.sh     # after OUT=runs/loop_base scripts/bag_loop.sh
#   OUT=runs/loop_base ROUNDS=6 SHADOW=1 THRESHOLD=10 TIME_LIMIT=10 SHARES="0.5 0.3 0.2 0.1" CONTINUE=1 EPOCHS=20 \
#     SELECT=last scripts/takeover_rounds.sh      # DAgger: every update labelled, a random operator share, fine-tuning
#
# Seeds: round k records episodes 200 + EPISODES (k - 1) ..; training, validation and test bags are bag_loop's
# (100.., 500.., 600..), the evaluation episodes the same 20,000,000.. as bag_loop's: disjoint while
# ROUNDS x EPISODES <= 300 (checked). The bags are recorded by the training expert at the policy's camera size.
set -euo pipefail
if [ $# -gt 0 ]; then  # its settings are environment variables: an argument (--help) used to start the whole loop
  case "$1" in -h | --help)
    sed -n '2,15p' "$0" | cut -c3-
    echo; echo "Settings (environment variables) and their defaults:"; grep -E '^[A-Z_]+=\$\{' "$0"
    exit 0 ;;
  esac
  echo "takeover_rounds: takes no arguments, got '$*'; its settings are environment variables (scripts/takeover_rounds.sh --help)" >&2
  exit 2
fi

OUT=${OUT:?set OUT to a finished scripts/bag_loop.sh folder (with bags/ and run/policy.pt)}
CONFIG=${CONFIG:-policies/configs/cfc_ncp_rover.yaml}
ROUNDS=${ROUNDS:-2}
EPISODES=${EPISODES:-20}          # supervised episodes per round
EVAL_EPISODES=${EVAL_EPISODES:-50}
EPOCHS=${EPOCHS:-60}
SEED=${SEED:-0}                   # training seed
THRESHOLD=${THRESHOLD:-0.5}       # the operator takes over where the commands differ by more (action units)
HOLD_S=${HOLD_S:-1.0}             # and keeps control at least this long
SHADOW=${SHADOW:-0}               # 1: the operator labels every update, driving or not (record --shadow; DAgger)
TIME_LIMIT=${TIME_LIMIT:-0}       # s; 0: the world's (25 s). Shorter: fewer labels of a search for a lost target
SELECT=${SELECT:-validation}      # validation: the epoch of least loss on bag_loop's validation bags; last: the last
SHARES=${SHARES:-}                # operator share per round, e.g. "0.5 0.3 0.2 0.1" (record --operator-share: DAgger's
                                  # beta, the operator drives that share of updates at random; the last repeats; "": 0)
CONTINUE=${CONTINUE:-0}           # 1: each round fine-tunes the previous round's policy (train --init-from) for
                                  # EPOCHS epochs, as DAgger continues training, instead of training from scratch
EXTRA_SET=${EXTRA_SET:-"--set training.augmentation=[brightness,contrast,gamma,colour,noise,blur]"}
RENDER_SIZE=${RENDER_SIZE:-}      # camera height of the recordings in pixels ("": the driving policy's own)
RENDER_WIDTH=${RENDER_WIDTH:-}    # camera width ("": the driving policy's own, or RENDER_SIZE's square; 0: square)
EXPERT_MARGIN=${EXPERT_MARGIN:-}  # the supervising expert's clearance from trees (m; "": the training expert's)
EVAL_ARGS=${EVAL_ARGS:-}          # further options of each round's simulated evaluation (e.g. --backend serial)
LC=${LC:-liquid-control}

[ -f "$OUT/run/policy.pt" ] || { echo "takeover_rounds: $OUT/run/policy.pt not found (run scripts/bag_loop.sh first)" >&2; exit 2; }
case "$SELECT" in validation) val=(--val-bag "$OUT/bags/validation/*") ;; last) val=() ;;
  *) echo "takeover_rounds: SELECT must be validation or last, got '$SELECT'" >&2; exit 2 ;; esac
read -r -a shares <<< "$SHARES"
for share in "${shares[@]}"; do  # checked now, not at the round that first uses it
  awk -v s="$share" 'BEGIN { exit !(s ~ /^([0-9]*[.])?[0-9]+$/ && s + 0 <= 1) }' ||
    { echo "takeover_rounds: SHARES must be numbers in [0, 1] separated by spaces, got '$SHARES'" >&2; exit 2; }
done
for name in SHADOW CONTINUE; do
  case "${!name}" in 0|1) ;; *) echo "takeover_rounds: $name must be 0 or 1, got '${!name}'" >&2; exit 2 ;; esac
done
for name in ROUNDS EPISODES EPOCHS EVAL_EPISODES; do
  case "${!name}" in ''|*[!0-9]*) echo "takeover_rounds: $name must be a whole number, got '${!name}'" >&2; exit 2 ;; esac
  printf -v "$name" '%d' "$((10#${!name}))"  # 08 is 8
done
[ $((ROUNDS * EPISODES)) -le 300 ] || { echo "takeover_rounds: ROUNDS x EPISODES > 300 would reach the validation seeds 500.." >&2; exit 2; }
policy="$OUT/run/policy.pt"
bags=("$OUT/bags/train/*")
start=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
  dir="$OUT/round_$round"
  first=$((200 + EPISODES * (round - 1)))
  echo "[takeover_rounds $(($(date +%s) - start)) s] round $round: $policy drives $EPISODES episodes (seeds $first..), the expert supervising" >&2
  [ -f "$dir.record.txt" ] || rm -rf "$dir/takeover"  # an interrupted recording: record the round again
  if [ ! -d "$dir/takeover" ]; then
    record_opts=()
    size_opts=()  # none: record --expert renders the driving policy's own camera size
    [ -z "$RENDER_SIZE" ] || size_opts=(--render-size "$RENDER_SIZE")
    [ -z "$RENDER_WIDTH" ] || size_opts+=(--render-width "$RENDER_WIDTH")
    [ "$SHADOW" = 1 ] && record_opts=(--shadow)
    [ -z "$EXPERT_MARGIN" ] || record_opts+=(--expert-margin "$EXPERT_MARGIN")
    if [ "${#shares[@]}" -gt 0 ]; then  # this round's share: the schedule's, its last value repeating
      index=$((round - 1 < ${#shares[@]} ? round - 1 : ${#shares[@]} - 1))
      record_opts+=(--operator-share "${shares[$index]}")
    fi
    $LC record --expert --policy "$policy" -o "$dir/takeover" --episodes "$EPISODES" --seed "$first" \
      --takeover-threshold "$THRESHOLD" --takeover-hold-s "$HOLD_S" "${record_opts[@]}" --time-limit "$TIME_LIMIT" \
      "${size_opts[@]}" --no-progress > "$dir.record.tmp"
    mv "$dir.record.tmp" "$dir.record.txt"
  fi
  cat "$dir.record.txt"
  bags+=("$dir/takeover/*")
  if [ -f "$dir/sim/results.csv" ]; then  # a finished round (rerun with more ROUNDS): its policy drives the next
    policy="$dir/run/policy.pt"
    continue
  fi
  bag_args=()
  for pattern in "${bags[@]}"; do bag_args+=(--bag "$pattern"); done
  train_opts=()
  [ -d "$dir/run" ] && train_opts=(--resume)  # an interrupted training continues (a new or empty folder: starts)
  [ "$CONTINUE" = 1 ] && train_opts+=(--init-from "$policy")  # the policy that drove this round
  # shellcheck disable=SC2086
  # --label-max-wait-s 0: a label only where the operator commanded at that frame (the simulated operator answers
  # at once); the default 0.5 s would also give the updates the policy drove just before a takeover its command.
  # A finished training is kept: resuming it would rewrite policy.pt, whose SHA-256 the evaluation resumes by
  [ -f "$dir/run/policy.pt" ] || $LC train --config "$CONFIG" --out "$dir/run" --seed "$SEED" "${train_opts[@]}" --no-progress "${bag_args[@]}" \
    "${val[@]}" --label-max-wait-s 0 --set "training.epochs_first=$EPOCHS" $EXTRA_SET
  eval_resume=()
  [ -d "$dir/sim" ] && eval_resume=(--resume)  # an evaluation that was interrupted continues
  # shellcheck disable=SC2086
  $LC eval --policy "round$round=$dir/run/policy.pt" --episodes "$EVAL_EPISODES" --out "$dir/sim" --no-progress \
    --no-example --no-saliency "${eval_resume[@]}" $EVAL_ARGS
  policy="$dir/run/policy.pt"
done
echo "[takeover_rounds $(($(date +%s) - start)) s] done" >&2
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: $(tail -n 1 "$OUT/round_$round.record.txt")"
  awk -F, -v r="$round" 'NR > 1 { n++; k += ($7 == "True") } END { printf "round %s: %d/%d held-out episodes reach the target\n", r, k, n }' \
    "$OUT/round_$round/sim/results.csv"
done
