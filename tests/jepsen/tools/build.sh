#!/bin/sh
# build.sh OUTDIR: compiles the harness's C tools into OUTDIR.
#   nfqdelay   NFQUEUE packet delayer (needs Debian libnetfilter-queue-dev)
# CC and CFLAGS may be overridden from the environment.
set -eu
out=${1:?usage: build.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
cflags=${CFLAGS:--O2 -g -Wall -Wextra -Werror}
mkdir -p "$out"
# shellcheck disable=SC2086
$cc $cflags -o "$out/nfqdelay.tmp" "$here/nfqdelay.c" -lnetfilter_queue
mv "$out/nfqdelay.tmp" "$out/nfqdelay"
echo "built $out/nfqdelay"
