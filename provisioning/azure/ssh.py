"""SSH keys for cluster VMs: the config's public key, or a generated pair whose private key is returned once."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def generate_ssh_keypair(comment: str = "ray-serverless-autoscaler") -> tuple[str, str]:
    """A new ed25519 pair: (public key in OpenSSH format, private key in OpenSSH PEM). Nothing is stored."""
    private_key = Ed25519PrivateKey.generate()
    public_openssh = (
        private_key.public_key()
        .public_bytes(encoding=serialization.Encoding.OpenSSH, format=serialization.PublicFormat.OpenSSH)
        .decode()
    )
    private_pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode()
    return f"{public_openssh} {comment}", private_pem


def derived_public_key(seed: bytes, comment: str = "ray-serverless-autoscaler-no-login") -> str:
    """A public key derived from `seed` (same seed, same key), for VMs whose config names no key.

    Azure requires a key when password login is off, and a retried launch must PUT the same VM body, so the key
    cannot be random per call. Its private half is never formed outside this function.
    """
    private_key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
    public_openssh = (
        private_key.public_key()
        .public_bytes(encoding=serialization.Encoding.OpenSSH, format=serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{public_openssh} {comment}"
