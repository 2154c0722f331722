#!/usr/bin/env bash
# Carry an unfinished headline experiment from one machine (or sitting) to the next.
#
#   scripts/headline_state.sh save RUN_DIR STATE_DIR      # keep what --resume needs from RUN_DIR
#   scripts/headline_state.sh restore STATE_DIR RUN_DIR   # put it back, then continue with --resume:
#   liquid-control eval --experiment headline --seeds K --episodes 30 --out RUN_DIR --workers 2 --resume
#
# Kept: each finished training run's config.yaml, metrics.csv and policy.pt (a run without its policy.pt is
# unfinished and trains again from its start), the episode log (episodes.jsonl, gzipped; a half-written
# last line is dropped by --resume), provenance.json (the report lists every earlier part and its time) and
# provenance.sitting.json (the parts cut short since the last report, counted to their last minute). --resume
# then skips every run and episode kept here and checks that the configs and checkpoints are the ones asked
# for. The collected training data and the training checkpoints are not kept: they are only needed to
# continue an interrupted training run, which is cheaper to redo.
set -euo pipefail

usage() {
    sed -n '4,6p' "$0" | sed 's/^# //' >&2
    exit 2
}
case "${1:-}" in -h | --help) # asked for: on stdout, status 0 (a usage mistake gets it on stderr, status 2)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
[ $# -eq 3 ] || usage
action=$1 from=$2 to=$3
[ "$action" = save ] || [ "$action" = restore ] || usage
[ -d "$from" ] || { echo "headline_state.sh: $from: no such folder" >&2; exit 2; }

case "$action" in
save)
    [ -f "$from/episodes.jsonl" ] || [ -d "$from/train" ] || {
        echo "headline_state.sh: $from holds no headline experiment (no episodes.jsonl, no train/)" >&2
        exit 2
    }
    finished=$(find "$from/train" -mindepth 3 -maxdepth 3 -path '*/seed_*/policy.pt' 2>/dev/null | sort)
    [ -n "$finished" ] || { # before: an eval report's folder (episodes.jsonl, no train/) gave an empty state, exit 0
        echo "headline_state.sh: $from holds no finished training runs (no train/<arch>/seed_<k>/policy.pt): nothing to save" >&2
        exit 2
    }
    mkdir -p "$to"
    runs=0
    while IFS= read -r policy; do
        run=$(dirname "$policy")
        rel=${run#"$from"/}
        mkdir -p "$to/$rel"
        for f in config.yaml metrics.csv policy.pt; do # policy.pt last; each copied then renamed, so a copy
            cp "$run/$f" "$to/$rel/.$f.tmp" #         cut short never replaces a finished run's file
            mv "$to/$rel/.$f.tmp" "$to/$rel/$f"
        done
        runs=$((runs + 1))
    done <<< "$finished"
    episodes=0
    if [ -f "$from/episodes.jsonl" ]; then
        gzip -c "$from/episodes.jsonl" > "$to/episodes.jsonl.gz.tmp"
        mv "$to/episodes.jsonl.gz.tmp" "$to/episodes.jsonl.gz"
        episodes=$(wc -l < "$from/episodes.jsonl")
    fi
    # The record of the parts cut short first, then provenance.json: a run writing its report meanwhile writes
    # provenance.json before it removes the record, and a resume lists a part found in both only once.
    if cp "$from/provenance.sitting.json" "$to/.provenance.sitting.json.tmp" 2> /dev/null; then
        mv "$to/.provenance.sitting.json.tmp" "$to/provenance.sitting.json"
    else # none in the run (a finished report removes it): none in the state either
        rm -f "$to/.provenance.sitting.json.tmp" "$to/provenance.sitting.json"
    fi
    if [ -f "$from/provenance.json" ]; then
        cp "$from/provenance.json" "$to/.provenance.json.tmp"
        mv "$to/.provenance.json.tmp" "$to/provenance.json"
    fi
    echo "headline_state.sh: kept $runs finished training runs and $episodes logged episodes in $to"
    ;;
restore)
    for f in episodes.jsonl train provenance.json provenance.sitting.json; do
        [ ! -e "$to/$f" ] || {
            echo "headline_state.sh: $to/$f exists; restore into a new folder (nothing overwritten)" >&2
            exit 2
        }
    done
    mkdir -p "$to"
    if [ -d "$from/train" ]; then
        cp -r "$from/train" "$to/"
    fi
    for f in provenance.json provenance.sitting.json; do
        if [ -f "$from/$f" ]; then
            cp "$from/$f" "$to/"
        fi
    done
    if [ -f "$from/episodes.jsonl.gz" ]; then
        gzip -dc "$from/episodes.jsonl.gz" > "$to/.episodes.jsonl.tmp"
        mv "$to/.episodes.jsonl.tmp" "$to/episodes.jsonl"
    fi
    echo "headline_state.sh: restored $from into $to; continue with --out $to --resume"
    ;;
esac
