#!/usr/bin/env bash
# Packs the GPU test program and the CLI, self-contained, into one archive for the GPU machine (which has no .NET):
#   tools/gpu/pack.sh [FOLDER]   (default .device-main; the folder must be git-ignored: /.device-*/ is)
# Then run there, carrying FOLDER:  bash tools/gpu/check.sh FOLDER   (docs/gpu-notes.md).
set -euo pipefail
folder=${1:-.device-main}
root=$(git rev-parse --show-toplevel)
publish=$(mktemp -d)
trap 'rm -rf "$publish"' EXIT
cd "$root"
dotnet publish tests/Fathom.Cuda.Tests -c Release -r linux-x64 --self-contained true -o "$publish" > /dev/null
dotnet publish src/Fathom.Cli/Fathom.Cli.csproj -c Release -r linux-x64 --self-contained true -o "$publish" > /dev/null
mkdir -p "$folder"
tar cJf "$folder/app.tar.xz" -C "$publish" .
echo "packed $(du -h "$folder/app.tar.xz" | cut -f1) into $folder/app.tar.xz"
