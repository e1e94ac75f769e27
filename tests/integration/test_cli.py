"""The operator's CLI end to end, as a silo operator would run it (real subprocesses)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "FEDRAG_SILO_CHUNKING__MAX_FILE_BYTES": "1000000"}


def fedrag(*args: str | Path, ok: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "federation", *map(str, args)],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=300,
    )
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_federation_and_a_silo_from_scratch(tmp_path: Path) -> None:
    key_id = fedrag("keys", "new", tmp_path / "keys/silo").stdout.strip().splitlines()[-1]
    assert key_id.startswith("ed25519-")
    assert stat.S_IMODE((tmp_path / "keys/silo/private.pem").stat().st_mode) == 0o600
    again = fedrag("keys", "new", tmp_path / "keys/silo", ok=False)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    fedrag("keys", "new", tmp_path / "keys/gw")

    fed = tmp_path / "federation.toml"
    fedrag("federation", "init", fed, "--name", "hospitals")
    fedrag(
        "federation",
        "add-silo",
        fed,
        "--name",
        "clinic",
        "--url",
        "http://127.0.0.1:8101",
        "--public-key",
        tmp_path / "keys/silo/public.pem",
        "--description",
        "clinic notes",
    )
    fedrag("federation", "add-gateway", fed, "--name", "gw", "--public-key", tmp_path / "keys/gw/public.pem")
    shown = json.loads(fedrag("federation", "show", fed, "--json").stdout)
    assert shown["name"] == "hospitals" and shown["embedding"]["dimension"] == 384
    assert shown["silos"][0]["key_id"] == key_id and shown["gateways"][0]["name"] == "gw"
    assert "clinic" in fedrag("federation", "show", fed).stdout

    silo = tmp_path / "silo"
    init = fedrag(
        "silo", "init", silo, "--federation", fed, "--key", tmp_path / "keys/silo/private.pem", "--name", "clinic"
    )
    assert "operator token saved" in init.stdout
    token = (silo / "operator.token").read_text().strip()
    assert token not in init.stdout and token not in (silo / "silo.toml").read_text()
    wrong_key = fedrag(
        "silo",
        "init",
        tmp_path / "other",
        "--federation",
        fed,
        "--key",
        tmp_path / "keys/gw/private.pem",
        "--name",
        "clinic",
        ok=False,
    )
    assert wrong_key.returncode == 1 and "federation lists silo" in wrong_key.stderr
    bad_mode = fedrag(
        "silo",
        "init",
        tmp_path / "other",
        "--federation",
        fed,
        "--key",
        tmp_path / "keys/silo/private.pem",
        "--name",
        "clinic",
        "--search",
        "fuzzy",
        ok=False,
    )
    assert bad_mode.returncode == 1 and "'dense', 'lexical' or 'hybrid'" in bad_mode.stderr
    assert "Traceback" not in bad_mode.stderr
    assert not (tmp_path / "other").exists()
    gw_key = tmp_path / "keys/gw/private.pem"
    no_questions = fedrag("router", "train", "--federation", fed, "--key", gw_key, "--per-silo", "0", ok=False)
    assert no_questions.returncode == 1 and "--per-silo" in no_questions.stderr
    unreachable = fedrag("router", "train", "--federation", fed, "--key", gw_key, "--deadline", "1", ok=False)
    assert unreachable.returncode == 1 and "0 of 1 silos answered" in unreachable.stderr

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "fever.md").write_text("# Fever\n\nA fever is a body temperature above 38 degrees Celsius.\n")
    (docs / "sub" / "rash.txt").write_text("Rash\n\nA rash is a change of the skin's colour or texture.\n")
    (docs / "empty.txt").write_text("")
    (docs / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (docs / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (docs / "huge.txt").write_text("x" * 2_000_000)
    (docs / "cases.jsonl").write_text(
        '{"id": "c1", "title": "Case 1", "text": "Chest pain radiating to the left arm.", '
        '"metadata": {"ward": "cardio"}}\n'
        "{broken json\n"
        '{"id": "c2", "title": "no text"}\n'
    )
    out = fedrag("silo", "ingest", silo, docs).stdout
    assert "added 3," in out
    for needle in (
        "empty.txt: empty",
        "blob.txt: binary",
        "latin1.txt: not valid UTF-8",
        "huge.txt: file is",
        "cases.jsonl:2",
        "cases.jsonl:3",
    ):
        assert needle in out, needle
    assert "added 0, updated 0, unchanged 3" in fedrag("silo", "ingest", silo, docs).stdout

    stats = json.loads(fedrag("silo", "stats", silo).stdout)
    assert stats["documents"] == 3 and stats["chunks"] == stats["index_vectors"] == 3
    assert stats["search"] == "dense"
    card = json.loads(fedrag("silo", "card", silo).stdout)
    assert card["name"] == "clinic" and card["chunk_count"] == 3 and card["centroids"]["rows"] == 3
    assert "Chest pain" not in json.dumps(card)

    assert "deleted sub/rash.txt" in fedrag("silo", "delete", silo, "sub/rash.txt").stdout
    missing = fedrag("silo", "delete", silo, "sub/rash.txt", ok=False)
    assert missing.returncode == 1 and "no document" in missing.stderr
    assert json.loads(fedrag("silo", "stats", silo).stdout)["documents"] == 2


def test_help_explains_every_command() -> None:
    for args in (
        ["--help"],
        ["silo", "--help"],
        ["silo", "init", "--help"],
        ["silo", "search", "--help"],
        ["federation", "add-silo", "--help"],
        ["keys", "new", "--help"],
    ):
        result = fedrag(*args)
        assert "Usage" in result.stdout and len(result.stdout) > 200


def test_help_shows_bracketed_text_literally() -> None:
    """Rich markup must not swallow literal brackets (``[[gateways]]``, ``[policy.training]``) in any help text."""
    import re

    import click
    import typer
    from click.testing import CliRunner

    from federation.cli import _load_part_commands, app

    if not any(group.name == "gateway" for group in app.registered_groups):
        _load_part_commands()  # what `fedrag` does at start
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0

    def walk(command: click.Command, path: list[str]) -> None:
        nonlocal checked
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        found = {m for t in texts for m in re.findall(r"\\?\[[^\]\s]*\]+", t)}
        literals = {m for m in found if not re.match(r"\\?\[/?[a-z ]*\]$", m)}  # not rich styles like [dim]
        if literals:
            shown = runner.invoke(root, [*path, "--help"], terminal_width=400).output
            for literal in literals:
                assert literal.replace("\\", "") in shown, (path, literal)
                checked += 1
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(root, [])
    assert checked >= 1  # gateway serve --key: "listed under [[gateways]]"


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    result = fedrag("silo", "stats", tmp_path / "nowhere", ok=False)
    assert result.returncode == 1 and "fedrag silo init" in result.stderr and "Traceback" not in result.stderr


def test_a_federation_run_by_openvino_embeds_with_it_everywhere(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    cache = {"FEDRAG_CACHE_DIR": str(tmp_path / "cache")}

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return fedrag(*args, env=cache)

    fed = tmp_path / "federation.toml"
    assert "run by openvino" in run("federation", "init", fed, "--name", "fast", "--encoder-backend", "openvino").stdout
    shown = json.loads(run("federation", "show", fed, "--json").stdout)
    assert shown["embedding"]["backend"] == "openvino"
    run("keys", "new", tmp_path / "keys/silo")
    run("federation", "add-silo", fed, "--name", "s", "--url", "http://127.0.0.1:1", "--public-key",
        tmp_path / "keys/silo/public.pem")  # fmt: skip
    run(
        "silo",
        "init",
        tmp_path / "silo",
        "--federation",
        fed,
        "--key",
        tmp_path / "keys/silo/private.pem",
        "--name",
        "s",
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fever.md").write_text("# Fever\n\nA fever is a body temperature above 38 degrees Celsius.\n")
    assert "added 1," in run("silo", "ingest", tmp_path / "silo", docs).stdout
    assert list((tmp_path / "cache" / "openvino").rglob("model.xml")), "the silo embedded with the converted model"
    bad = fedrag(
        "federation", "init", tmp_path / "x.toml", "--name", "x", "--encoder-backend", "onnx", ok=False, env=cache
    )
    assert bad.returncode == 1 and "torch, openvino" in bad.stderr and "Traceback" not in bad.stderr
