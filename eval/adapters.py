"""LoRA adapters an evaluation run answers with (``fedrag eval run --lora NAME=FILE``).

The embedded llama.cpp server is started with each adapter (``fedrag llm serve --lora``) and
every answer of the run comes from the first one, the default adapter (the gateway's
``llm.lora_adapter``, public name ``fedrag:NAME``). With ``--llm-url`` the server there must
serve the same files in the same order (llama.cpp selects an adapter by its position).

An adapter is identified by its file's SHA-256: it is part of the run's identity
(``OUT/run.json``), so answers of the base model and of an adapter, or of two versions of one
adapter file, are never mixed in one output directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoraAdapter", "adapter_identity", "parse_lora"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoraAdapter:
    """A llama.cpp LoRA adapter file (GGUF) served beside the base model.

    Attributes:
        name: the adapter's name (the gateway asks for it as ``fedrag:NAME``).
        path: the GGUF file.
        sha256: the file's SHA-256 (hex), read when the option is parsed.
    """

    name: str
    path: Path
    sha256: str


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def parse_lora(spec: str) -> LoraAdapter:
    """Parse one ``NAME=FILE`` option and hash the file.

    Raises:
        ValueError: not ``NAME=FILE``, a name that cannot be a model name (empty, with ``=``,
            ``:``, ``/`` or spaces), or a file that cannot be read.
    """
    name, sep, file = spec.partition("=")
    name, file = name.strip(), file.strip()
    if not sep or not name or not file:
        raise ValueError(f"--lora {spec!r}: expected NAME=FILE")
    if any(ch in name for ch in ":/ \t") or not name.isprintable():
        raise ValueError(f"--lora {spec!r}: the name must not contain ':', '/' or spaces")
    path = Path(file).expanduser()
    try:
        sha256 = _file_sha256(path)
    except OSError as exc:
        raise ValueError(f"--lora {spec!r}: cannot read {path}: {exc.strerror or exc}") from exc
    return LoraAdapter(name=name, path=path.resolve(), sha256=sha256)


def adapter_identity(adapters: Sequence[LoraAdapter]) -> list[dict[str, str]]:
    """What of the adapters decides the answers: names (the first answers) and file hashes, in order.

    Raises:
        ValueError: two adapters with the same name.
    """
    names = [a.name for a in adapters]
    if len(set(names)) != len(names):
        raise ValueError(f"--lora names an adapter twice: {', '.join(names)}")
    return [{"name": a.name, "sha256": a.sha256} for a in adapters]
