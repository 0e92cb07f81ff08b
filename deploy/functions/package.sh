#!/usr/bin/env bash
# Assembles a publishable Azure Functions app per service: the folder under deploy/functions/
# (host.json and a function.json per function, written by `platform functions`) with the
# service's Linux binary beside host.json, zipped into target/functions/<service>.zip.
#
#   bash deploy/functions/package.sh [service ...]        (default: all four)
#
# Publish with: az functionapp deployment source config-zip -g $RG -n <app> --src target/functions/<service>.zip
# (Flex Consumption: az functionapp deploy --src-path ... --type zip)
set -euo pipefail
cd "$(dirname "$0")/../.."
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(catalog orders sync notifications)

# The folders must say what the code declares: regenerate, then build.
cargo run --quiet --release --locked -p platform -- functions --out deploy/functions \
  --only "$(IFS=,; echo "${services[*]}")" >/dev/null
for service in "${services[@]}"; do
  cargo build --profile dist --locked -p "$service"
  stage="target/functions/$service"
  rm -rf "$stage" "$stage.zip"
  mkdir -p "$stage"
  cp -R "deploy/functions/$service/." "$stage/"
  cp "target/dist/$service" "$stage/$service"
  (cd "$stage" && python3 -c 'import shutil, sys; shutil.make_archive(sys.argv[1], "zip", ".")' "../$service")
  echo "target/functions/$service.zip"
done
