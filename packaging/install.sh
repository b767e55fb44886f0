#!/usr/bin/env bash
# Install EdgeTwin as a systemd service, offline: from a bundle folder of wheels
# (packaging/bundle.sh makes one) or from this source tree.
#
#   sudo packaging/install.sh [--wheels DIR] [--prefix /opt/edgetwin] [--no-start]
#
# Creates the `edgetwin` system user, a virtualenv in PREFIX/venv (pip --no-index: no network),
# /etc/edgetwin (config, keys; 0750), /var/lib/edgetwin (outbox, rule state), the unit file, and
# a signing key if none exists. The config is copied from the example only when missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix=/opt/edgetwin
wheels=""
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -z "$wheels" ] && [ -d "$here/wheels" ] && wheels="$here/wheels"   # inside a bundle
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "install.sh: Python 3.11 or newer is needed" >&2; exit 1; }

id edgetwin >/dev/null 2>&1 || useradd --system --home /var/lib/edgetwin --shell /usr/sbin/nologin edgetwin
getent group dialout >/dev/null && usermod -aG dialout edgetwin || true

python3 -m venv "$prefix/venv"
if [ -n "$wheels" ]; then
  "$prefix/venv/bin/pip" install --no-index --find-links "$wheels" "edgetwin[${EXTRAS:-opcua,iec104,dnp3,dlms}]"
else
  "$prefix/venv/bin/pip" install "$here/..[${EXTRAS:-opcua,iec104,dnp3,dlms}]"
fi
mkdir -p "$prefix/docs"
for docs in "$here/docs" "$here/../docs"; do
  [ -d "$docs" ] && cp -r "$docs/." "$prefix/docs/" && break
done

install -d -m 0750 -o root -g edgetwin /etc/edgetwin /etc/edgetwin/keys
install -d -m 0750 -o edgetwin -g edgetwin /var/lib/edgetwin
if [ ! -f /etc/edgetwin/edgetwin.toml ]; then
  sed -e 's|^data_dir = .*|data_dir = "/var/lib/edgetwin"|' \
      -e 's|^key_file = .*|key_file = "/etc/edgetwin/keys/agent.key"|' \
      "$here/edgetwin.example.toml" > /etc/edgetwin/edgetwin.toml
  chmod 0640 /etc/edgetwin/edgetwin.toml && chgrp edgetwin /etc/edgetwin/edgetwin.toml
  echo "install.sh: wrote /etc/edgetwin/edgetwin.toml from the example: edit it for this site"
fi
if [ ! -f /etc/edgetwin/keys/agent.key ]; then
  "$prefix/venv/bin/edgetwin" keygen --out /etc/edgetwin/keys/agent.key
  chgrp edgetwin /etc/edgetwin/keys/agent.key && chmod 0640 /etc/edgetwin/keys/agent.key
  echo "install.sh: new signing key; give central systems /etc/edgetwin/keys/agent.pub.pem"
fi
sed "s|/opt/edgetwin|$prefix|g" "$here/systemd/edgetwin.service" > /etc/systemd/system/edgetwin.service
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable edgetwin.service
  [ "$start" -eq 1 ] && systemctl restart edgetwin.service
  systemctl --no-pager status edgetwin.service || true
else
  echo "install.sh: systemd is not running here; the unit is in /etc/systemd/system"
fi
