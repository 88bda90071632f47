"""What azray keeps on the user's machine, per control plane and cluster, under $XDG_CONFIG_HOME/azray (else
~/.config/azray):

- keys/<control plane>/<cluster>.pem: the SSH private key the API generated at create time and returns only once
  (mode 0600, in 0700 folders); `attach`, `dashboard`, `submit` and `exec` use it for Azure clusters;
- clusters/<control plane>/<cluster>.json: from the config given to `up`, how to reach the head (the SSH user, whether
  SSH is open and to whom), since the API does not return the config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azray.target import Target

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
DEFAULT_SSH_USER = "ubuntu"  # Ray's default for Azure, and the API's


def config_home(environ: Mapping[str, str] | None = None) -> Path:
    environment = os.environ if environ is None else environ
    base = environment.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "azray"


def _private_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    path.chmod(PRIVATE_FOLDER_MODE)  # mkdir's mode is masked by the umask, and an existing folder keeps its own
    return path


def key_path(target: Target, cluster: str) -> Path:
    return config_home() / "keys" / target.folder_name / f"{cluster}.pem"


def notes_path(target: Target, cluster: str) -> Path:
    return config_home() / "clusters" / target.folder_name / f"{cluster}.json"


def _write_private(path: Path, text: str) -> None:
    """Written to a 0600 file created next to it, then renamed over it: the key is never readable by others."""
    _private_folder(path.parent)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    partial.replace(path)


def save_private_key(target: Target, cluster: str, private_key: str) -> tuple[Path, bool]:
    """Save the key returned by the create answer; (where, whether it replaced an earlier cluster's key)."""
    path = key_path(target, cluster)
    replaced = path.exists()
    _write_private(path, private_key if private_key.endswith("\n") else private_key + "\n")
    return path, replaced


def saved_key(target: Target, cluster: str) -> Path | None:
    path = key_path(target, cluster)
    return path if path.is_file() else None


@dataclass(frozen=True)
class ClusterNotes:
    """How to reach the head, from the config `up` sent (the API does not return the config)."""

    ssh_user: str = DEFAULT_SSH_USER
    ssh_allowed_cidrs: tuple[str, ...] = ()
    use_internal_ips: bool = False
    known: bool = False  # False: `up` did not run on this machine for this cluster

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ClusterNotes:
        auth = config.get("auth") if isinstance(config.get("auth"), dict) else {}
        provider = config.get("provider") if isinstance(config.get("provider"), dict) else {}
        assert isinstance(auth, dict)
        assert isinstance(provider, dict)
        cidrs = provider.get("ssh_allowed_cidrs") or []
        return cls(
            ssh_user=str(auth.get("ssh_user") or DEFAULT_SSH_USER),
            ssh_allowed_cidrs=tuple(str(c) for c in cidrs) if isinstance(cidrs, list) else (),
            use_internal_ips=bool(provider.get("use_internal_ips", False)),
            known=True,
        )

    @property
    def ssh_open(self) -> bool:
        return bool(self.ssh_allowed_cidrs)


def save_notes(target: Target, cluster: str, notes: ClusterNotes) -> Path:
    path = notes_path(target, cluster)
    body = {
        "ssh_user": notes.ssh_user,
        "ssh_allowed_cidrs": list(notes.ssh_allowed_cidrs),
        "use_internal_ips": notes.use_internal_ips,
    }
    _write_private(path, json.dumps(body, indent=2) + "\n")
    return path


def load_notes(target: Target, cluster: str) -> ClusterNotes:
    try:
        body = json.loads(notes_path(target, cluster).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ClusterNotes()
    if not isinstance(body, dict):
        return ClusterNotes()
    return ClusterNotes.from_config({"auth": {"ssh_user": body.get("ssh_user")}, "provider": body})


def forget_cluster(target: Target, cluster: str) -> list[Path]:
    """After `down`: the key and notes of a deleted cluster are of no use; returns what was removed."""
    removed = []
    for path in (key_path(target, cluster), notes_path(target, cluster)):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
