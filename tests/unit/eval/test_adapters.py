"""``fedrag eval run --lora NAME=FILE``: option parsing and the run identity it keeps honest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from eval.adapters import adapter_identity, parse_lora
from eval.configs import select_configs
from eval.runner import RunOptions, write_run_file
from federation.errors import ConfigError

pytestmark = pytest.mark.unit


def _adapter_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(content)
    return path


def _options(out: Path, *specs: str) -> RunOptions:
    return RunOptions(
        out=out,
        configs=tuple(select_configs("fed-all")),
        llm_configs=frozenset(),
        llm_url=None,
        lora_adapters=tuple(parse_lora(s) for s in specs),
    )


def test_parse_lora_reads_name_and_hashes_the_file(tmp_path: Path) -> None:
    path = _adapter_file(tmp_path, "fed", b"GGUF adapter bytes")
    adapter = parse_lora(f" fed = {path}")
    assert adapter.name == "fed"
    assert adapter.path == path.resolve()
    assert adapter.sha256 == hashlib.sha256(b"GGUF adapter bytes").hexdigest()


@pytest.mark.parametrize("spec", ["fed", "=x.gguf", "fed=", "fe:d=x.gguf", "a b=x.gguf", "a/b=x.gguf"])
def test_parse_lora_refuses_malformed_options(spec: str) -> None:
    with pytest.raises(ValueError, match="--lora"):
        parse_lora(spec)


def test_parse_lora_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_lora(f"fed={tmp_path / 'absent.gguf'}")


def test_adapter_identity_refuses_a_name_twice(tmp_path: Path) -> None:
    path = _adapter_file(tmp_path, "a", b"a")
    with pytest.raises(ValueError, match="twice"):
        adapter_identity([parse_lora(f"x={path}"), parse_lora(f"x={path}")])


def test_identity_has_adapters_only_when_given_and_the_first_answers(tmp_path: Path) -> None:
    a, b = _adapter_file(tmp_path, "a", b"first"), _adapter_file(tmp_path, "b", b"second")
    base = _options(tmp_path / "out")
    assert "lora" not in base.identity() and base.default_adapter is None
    with_adapters = _options(tmp_path / "out", f"fed={a}", f"one={b}")
    assert with_adapters.default_adapter == "fed"
    assert with_adapters.identity()["lora"] == [
        {"name": "fed", "sha256": hashlib.sha256(b"first").hexdigest()},
        {"name": "one", "sha256": hashlib.sha256(b"second").hexdigest()},
    ]


def test_a_run_directory_never_mixes_adapters(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = _adapter_file(tmp_path, "fed", b"round 1")
    write_run_file(_options(out, f"fed={path}"))
    write_run_file(_options(out, f"fed={path}"))  # the same adapter file resumes
    with pytest.raises(ConfigError, match="lora"):
        write_run_file(_options(out))  # the base model
    path.write_bytes(b"round 2")  # the same name, another adapter
    with pytest.raises(ConfigError, match="lora"):
        write_run_file(_options(out, f"fed={path}"))
    base_out = tmp_path / "base"
    write_run_file(_options(base_out))
    with pytest.raises(ConfigError, match="lora"):
        write_run_file(_options(base_out, f"fed={path}"))
