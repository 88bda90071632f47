#!/bin/bash
# Functions of the first boot, sourced by bootstrap.sh (and by the tests, with fake commands on PATH): reporting the
# boot phase to the head agent, and apt that waits for Ubuntu's own first-boot apt runs. Every setting below can be
# overridden from the environment; bootstrap.sh sets INSTANCE_ID and BOOT_PHASE_URL.
: "$${INSTANCE_ID:=}"
: "$${BOOT_PHASE_URL:=}"  # "" reports nothing
: "$${TOKEN_FILE:=/etc/ray/cluster-token}"
# Ubuntu's first boot runs apt itself (unattended-upgrades, apt-daily, cloud-init's own package steps): apt waits
# this long for their lock, and a failed apt call is tried this many times, waiting longer after each failure.
: "$${APT_LOCK_TIMEOUT_S:=600}"
: "$${APT_LOCK_POLL_S:=5}"
: "$${APT_ATTEMPTS:=5}"
: "$${APT_RETRY_BACKOFF_S:=10}"
: "$${BOOT_PHASE_RETRIES:=2}"

# How far this boot got, told to the head agent (GET /api/clusters/{name} shows it). Best effort: a report that
# cannot be delivered is noted here and the boot goes on. Only the literal phase, the instance id and a detail of
# letters, digits and a little punctuation go into the JSON, so nothing needs escaping.
report_boot_phase() {
  local phase="$$1" detail="$${2:-}"
  [ -n "$$BOOT_PHASE_URL" ] || return 0
  command -v curl >/dev/null 2>&1 || { echo "boot phase $$phase not reported: no curl"; return 0; }
  detail="$${detail//[^A-Za-z0-9 _.:=\/-]/_}"
  local body
  body="$$(printf '{"instance_id":"%s","phase":"%s","detail":"%s"}' "$$INSTANCE_ID" "$$phase" "$$detail")"
  # The Authorization header reaches curl as a config line on its standard input (-K -): printf is a shell builtin,
  # so the token is on no process's command line and in no log.
  if ! printf 'header = "Authorization: Bearer %s"\n' "$$(<"$$TOKEN_FILE")" \
      | curl -K - --silent --show-error --output /dev/null --fail --noproxy '*' --max-time 5 \
          --retry "$$BOOT_PHASE_RETRIES" --retry-connrefused \
          -H 'Content-Type: application/json' --data-raw "$$body" "$$BOOT_PHASE_URL"; then
    echo "boot phase $$phase not reported to $$BOOT_PHASE_URL"
  fi
}

# apt_get waits (bounded) until no other apt or dpkg runs, then runs apt-get with a lock timeout, trying a few
# times: the first-boot apt runs of Ubuntu hold the lock for minutes, and a mirror can fail once. The lock cannot be
# waited on with flock (dpkg uses fcntl locks), hence the timer units, process names and fuser.
other_apt_running() {
  # Both are oneshot units: "activating" while they run, so `is-active --quiet` (true for "active" only) would miss them.
  systemctl is-active apt-daily.service apt-daily-upgrade.service 2>/dev/null \
    | grep -qxE 'active|activating|deactivating|reloading' && return 0
  pgrep -x 'unattended-upgr|apt-get|apt|dpkg' >/dev/null 2>&1 && return 0
  command -v fuser >/dev/null 2>&1 \
    && fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1
}

wait_for_other_apt() {
  local waited_s=0
  while [ "$$waited_s" -lt "$$APT_LOCK_TIMEOUT_S" ]; do
    if ! other_apt_running; then
      return 0
    fi
    if [ "$$waited_s" -eq 0 ]; then
      echo "waiting for another apt or dpkg run to finish (at most $$APT_LOCK_TIMEOUT_S s)"
    fi
    sleep "$$APT_LOCK_POLL_S"
    waited_s=$$((waited_s + APT_LOCK_POLL_S))
  done
  echo "another apt or dpkg run still holds the lock after $$APT_LOCK_TIMEOUT_S s; going on with apt's own lock wait"
}

apt_get() {
  local attempt
  for attempt in $$(seq 1 "$$APT_ATTEMPTS"); do
    wait_for_other_apt
    if apt-get -o DPkg::Lock::Timeout="$$APT_LOCK_TIMEOUT_S" -o Acquire::Retries=3 "$$@"; then
      return 0
    fi
    echo "apt-get $$* failed (attempt $$attempt of $$APT_ATTEMPTS)"
    if [ "$$attempt" -lt "$$APT_ATTEMPTS" ]; then
      sleep $$((attempt * APT_RETRY_BACKOFF_S))
    fi
  done
  return 1
}
