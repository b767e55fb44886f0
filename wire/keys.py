"""Ed25519 keys on disk: generate (private key mode 0600, public key PEM beside it), load one,
and load a trust store (a folder of ``<kid>.pem`` public keys)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgetwin.core.errors import ConfigError
from edgetwin.core.files import read_small, write_private


def public_path(private_path: Path) -> Path:
    """Where the public key of ``private_path`` lives: ``agent.key`` -> ``agent.pub.pem``."""
    return private_path.with_name(private_path.stem + ".pub.pem")


def generate(private_path: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new private key (PKCS#8 PEM, mode 0600, no symbolic link followed: see
    ``core.files``) and its public key; return both paths."""
    pub_path = public_path(private_path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(private_path, pem, overwrite=overwrite)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub_path.is_symlink():
        raise FileExistsError(f"{pub_path} is a symbolic link; refusing to write through it")
    pub_path.write_bytes(public)
    return private_path, pub_path


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(read_small(path), password=None)
    except OSError as err:
        raise ConfigError(
            [f"cannot read {path}: {err.strerror} (create one with: edgetwin keygen --out {path})"]
        ) from err
    except ValueError as err:
        raise ConfigError([f"{path} is not a PEM private key: {err}"]) from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError([f"{path} must be an Ed25519 private key"])
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(read_small(path))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def load_trust_dir(folder: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``<kid>.pem`` (or ``<kid>.pub.pem``) in ``folder``, keyed by kid."""
    trust: dict[str, Ed25519PublicKey] = {}
    if not folder.is_dir():
        raise ConfigError([f"{folder}: trust store folder does not exist"])
    for path in sorted(folder.glob("*.pem")):
        kid = path.name.removesuffix(".pem").removesuffix(".pub")
        try:
            trust[kid] = load_public(path)
        except ValueError as err:
            raise ConfigError([f"{path}: {err}"]) from err
    return trust
