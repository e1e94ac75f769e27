"""A silo's part in federated training: the Flower SuperNode that runs fedrag's ClientApp.

The silo node itself never imports the training stack: the SuperNode runs the ClientApp
(``training.client_app``) that the federation's Flower App names, in this environment, with
the silo's directory in its node config. The silo's policy decides whether it takes part.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from federation.config import load_silo_settings
from federation.errors import ConfigError


def supernode_command(
    directory: Path,
    superlink: str,
    *,
    root_certificates: Path | None,
    auth_key: Path | None,
    port: int,
    model_dir: Path | None = None,
) -> list[str]:
    """The ``flower-supernode`` command line that serves this silo's training (``train-node``).

    Raises:
        ConfigError: the silo's policy does not allow training, or TLS is not configured.
    """
    settings = load_silo_settings(directory)
    if not settings.policy.training.allowed:
        raise ConfigError(
            f"silo '{settings.name}' does not take part in training; set policy.training.allowed = true "
            f"in {directory / 'silo.toml'} to allow it (only adapter updates leave the silo)"
        )
    exe = Path(sys.executable).parent / "flower-supernode"
    command = [str(exe) if exe.exists() else (shutil.which("flower-supernode") or "flower-supernode")]
    command += ["--root-certificates", str(root_certificates)] if root_certificates else ["--insecure"]
    command += ["--superlink", superlink, "--port", str(port)]
    node_config = f'silo-dir="{directory.resolve()}"'
    if model_dir is not None:
        node_config += f' model-dir="{model_dir.resolve()}"'
    command += ["--node-config", node_config]
    if auth_key is not None:
        command += ["--auth-supernode-private-key", str(auth_key)]
    return command


__all__ = ["supernode_command"]
