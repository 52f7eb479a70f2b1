#!/usr/bin/env bash
# Installs membershipd as a systemd user service. Idempotent: builds,
# writes the unit with this checkout as its app directory, links it into
# ~/.config/systemd/user/, reloads systemd and enables + starts the service.
#   deploy/install.sh            install or update, then (re)start
#   deploy/install.sh --no-start install only
set -euo pipefail
app=$(cd "$(dirname "$0")/.." && pwd)
cd "$app"

bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target membershipd unibusctl

mkdir -p local_files
chmod 700 local_files
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
mkdir -p "$unit_dir"
rendered="$app/local_files/unibus-membershipd.service"
sed "s|@APP_DIR@|$app|g" deploy/unibus-membershipd.service >"$rendered.tmp"
mv "$rendered.tmp" "$rendered"
ln -sfn "$rendered" "$unit_dir/unibus-membershipd.service"
echo "==> unit linked: $unit_dir/unibus-membershipd.service -> $rendered"

if ! systemctl --user show-environment >/dev/null 2>&1; then
    echo "install.sh: no systemd user session here (systemctl --user failed)." >&2
    echo "  The unit is in place; run 'systemctl --user daemon-reload &&" >&2
    echo "  systemctl --user enable --now unibus-membershipd' from a login session," >&2
    echo "  or run build/src/membershipd directly." >&2
    exit 1
fi
systemctl --user daemon-reload
if [ "${1:-}" = "--no-start" ]; then
    systemctl --user enable unibus-membershipd
else
    systemctl --user enable unibus-membershipd
    systemctl --user restart unibus-membershipd
    systemctl --user --no-pager status unibus-membershipd | head -5 || true
fi
