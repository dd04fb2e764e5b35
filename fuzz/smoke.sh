#!/usr/bin/env bash
# Runs each fuzz target (default: all) for $FUZZ_SECONDS seconds (default 30) with
# --sanitizer none (stable Rust). Installs cargo-fuzz if missing. Exits non-zero if any
# target crashed; the input is then in artifacts/<target>/.
#
#   ./smoke.sh                          # every target, 30 s each
#   FUZZ_SECONDS=3600 ./smoke.sh recovery
#
# The fuzzing corpus is work/<target> (ignored by git): the committed seeds are copied in,
# except the reproducers of open bugs listed in known-bugs.txt.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "FUZZ_SECONDS must be a positive number of seconds, not '$seconds'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: installing it"
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decoder recovery)
fi

known=" $( { grep -v '^[[:space:]]*#' known-bugs.txt || true; } | awk 'NF { print $1 }' | tr '\n' ' ') "

failed=()
for target in "${targets[@]}"; do
    if [ ! -f "fuzz_targets/$target.rs" ]; then
        echo "no fuzz target '$target'" >&2
        exit 2
    fi
    work="work/$target"
    mkdir -p "$work"
    for seed in "corpus/$target"/*; do
        [ -f "$seed" ] || continue
        name="$(basename "$seed")"
        if [[ "$known" == *" $target/$name "* ]]; then
            rm -f "$work/$name"
            continue
        fi
        cp "$seed" "$work/$name"
    done
    echo "=== $target: ${seconds}s"
    if ! cargo fuzz run --sanitizer none "$target" "$work" -- \
        -max_total_time="$seconds" -print_final_stats=1; then
        echo "=== $target: CRASH (see artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
echo "no crash in: ${targets[*]}"
