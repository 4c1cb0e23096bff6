#!/usr/bin/env bash
# Build `dwell` and the statically linked `dwell-agent`, and put them side by
# side in target/<profile>/ (the daemon looks for the agent next to itself).
#   scripts/build.sh            # release build
#   PROFILE=dev scripts/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
target=$(rustc -vV | sed -n 's/^host: //p')
cargo build --profile "$profile" -p dwell
# The agent runs as PID 1 inside sandboxes whose root is not the host's:
# link it statically (crt-static works on the gnu target). An explicit
# --target keeps the flag away from build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile "$profile" -p dwell-agent --target "$target"
out=${CARGO_TARGET_DIR:-target}
cp "$out/$target/$dir/dwell-agent" "$out/$dir/dwell-agent"
echo "built $out/$dir/dwell and $out/$dir/dwell-agent"
