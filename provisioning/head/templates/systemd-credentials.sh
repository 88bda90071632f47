#!/bin/bash
# Run by bootstrap.sh as root: gives the Ray units of this $node_role the cluster token on a systemd without
# LoadCredential= (added in systemd 247; Ubuntu 20.04 has 245). From 247 on, the units' own LoadCredential= does it
# and this writes nothing. Either way the unit's process finds the token in "$$CREDENTIALS_DIRECTORY/cluster-token",
# readable by the unit's user only; the token itself is never on a command line or in a log.
# Usage: systemd-credentials.sh UNIT_DIR   (where the units are: /etc/systemd/system)
set -euo pipefail
unit_dir="$$1"
FIRST_SYSTEMD_WITH_LOAD_CREDENTIAL=247

systemd_version="$$(systemctl --version | awk 'NR == 1 {print $$2}')"
systemd_version="$${systemd_version%%[!0-9]*}"  # "252~rc1" -> "252"
if [ -n "$$systemd_version" ] && [ "$$systemd_version" -ge "$$FIRST_SYSTEMD_WITH_LOAD_CREDENTIAL" ]; then
  echo "systemd $$systemd_version has LoadCredential=: no drop-in needed"
  exit 0
fi
echo "systemd $${systemd_version:-of unknown version} has no LoadCredential=: a root ExecStartPre copies the token"
units=($credential_units)
for unit in "$${units[@]}"; do
  mkdir -p "$$unit_dir/$$unit.service.d"
  cat >"$$unit_dir/$$unit.service.d/10-credentials-before-systemd-247.conf" <<DROP_IN
[Service]
# This systemd ignores LoadCredential= (with a warning). Instead a root ("+") ExecStartPre copies the root-only token
# into the unit's runtime directory (tmpfs, mode 0700, owned by $ssh_user, removed when the unit stops).
RuntimeDirectory=$$unit-credentials
RuntimeDirectoryMode=0700
ExecStartPre=+/usr/bin/install -m 0400 -o $ssh_user /etc/ray/cluster-token /run/$$unit-credentials/cluster-token
Environment=CREDENTIALS_DIRECTORY=/run/$$unit-credentials
DROP_IN
  echo "wrote $$unit_dir/$$unit.service.d/10-credentials-before-systemd-247.conf"
done
