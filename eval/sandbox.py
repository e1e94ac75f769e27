"""Run untrusted generated code (HumanEval) in a separate, resource-limited process.

Nothing a model writes is ever run, ``eval``-ed or ``exec``-ed in the harness process.
:func:`run_code_check` writes the program to a fresh temporary directory and runs it as
``python -I -B program.py`` with:

* a wall-clock timeout, after which the program's whole process group is killed
  (``SIGKILL``); the group is killed after every run, so processes the program left behind
  do not outlive the check;
* resource limits, set by a tiny launcher process that then ``exec``s the program
  (no ``preexec_fn``, which is unsafe when the harness runs checks from threads):
  address space (``RLIMIT_AS``, ``memory_mb``), CPU seconds (``RLIMIT_CPU``, a backstop to
  the timeout), size of any file written (``RLIMIT_FSIZE``, 10 MiB), open files
  (``RLIMIT_NOFILE``, 64), no core dumps (``RLIMIT_CORE`` 0) and processes/threads
  (``RLIMIT_NPROC``, 32, see below);
* the temporary directory as working directory and ``HOME``/``TMPDIR``, removed afterwards;
* an environment holding only ``PATH`` (the system default), ``LANG`` and those two, so no
  secret of the harness's environment (API keys, tokens) reaches the program; Python's
  isolated mode (``-I``) also ignores ``PYTHON*`` variables and the user site directory.
  The environment's site-packages stay importable (no ``-S``), as in the reference
  HumanEval harness, which runs candidates in its own interpreter; ``-B`` keeps the
  program from writing bytecode caches outside its directory;
* stdin from ``/dev/null``, and stdout/stderr read through pipes of which only the last
  ``max_output_bytes`` of each are kept (a flood is drained and dropped, never buffered).

What it does NOT protect against — this is a guard against accidents and runaway code,
not a security boundary against a determined attacker:

* Same user, same filesystem view: the program can read (and, where the user may, write
  or delete) any file the harness user can, and can signal the harness's other processes.
* Network: there is no network namespace; the program can open sockets.
* ``RLIMIT_NPROC`` counts every process of the *user* and the kernel does not enforce it
  for root (or with ``CAP_SYS_RESOURCE``/``CAP_SYS_ADMIN``). As an unprivileged user a fork
  loop stops at the limit; as root it runs until the timeout kills the process group.
* A process that leaves the group (``os.setsid()``) escapes the final kill.
* Disk: each file is capped, the number of files is not, and there is no quota.
* Limits are per process (``RLIMIT_AS``, ``RLIMIT_CPU``): forked children get their own.

Run the harness as an unprivileged user, inside a container or VM without network, for
anything stronger.

:func:`humaneval_program` and :func:`extract_completion` turn a HumanEval problem and a
model's answer into the program to check.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ExecutionResult", "Status", "extract_completion", "humaneval_program", "run_code_check"]

Status = Literal["passed", "failed", "timeout", "error"]
"""Outcome of a check: ``passed`` (exit status 0), ``failed`` (the program raised or exited
non-zero: a wrong answer), ``timeout`` (wall-clock or CPU limit) or ``error`` (stopped by
another sandbox limit, killed by a signal, or could not be started)."""

FILE_SIZE_LIMIT_BYTES = 10 * 1024 * 1024
OPEN_FILES_LIMIT = 64
PROCESS_LIMIT = 32
MIN_MEMORY_MB = 64
DETAIL_LINES = 20

_POLL_S = 0.02
_DRAIN_S = 1.0
_READ_CHUNK = 65536
_LAUNCH_FAILED = 97
_LAUNCH_MARKER = "sandbox launcher:"

# Runs as `python -I -S -B -c _LAUNCHER AS CPU FSIZE NOFILE NPROC PROGRAM`: set the limits on
# itself, then replace itself with the interpreter running the program, which inherits them.
_LAUNCHER = f"""
import os, resource, sys
def cap(which, soft, hard):
    current = resource.getrlimit(which)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(which, (soft, hard))
try:
    memory, cpu, fsize, nofile, nproc = (int(a) for a in sys.argv[1:6])
    cap(resource.RLIMIT_AS, memory, memory)
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)
    cap(resource.RLIMIT_FSIZE, fsize, fsize)
    cap(resource.RLIMIT_NOFILE, nofile, nofile)
    cap(resource.RLIMIT_CORE, 0, 0)
    cap(resource.RLIMIT_NPROC, nproc, nproc)
    os.execv(sys.executable, [sys.executable, "-I", "-B", sys.argv[6]])
except BaseException as exc:
    sys.stderr.write("{_LAUNCH_MARKER} " + repr(exc) + "\\n")
    sys.stderr.flush()
    os._exit({_LAUNCH_FAILED})
"""

# Last traceback lines that mean a sandbox limit stopped the program, not a wrong answer.
_LIMIT_ERRORS = re.compile(rf"^(MemoryError\b|\w*Error: \[Errno ({errno.EFBIG}|{errno.EMFILE}|{errno.EAGAIN})\])")


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What came of running one program.

    Attributes:
        status: See :data:`Status`.
        detail: Empty when passed; otherwise the reason (timeout, signal) and/or the last
            lines of stderr, e.g. the traceback's ``AssertionError``.
        duration_s: Wall-clock seconds from start to the end of the check.
        stdout: The last ``max_output_bytes`` of the program's stdout (UTF-8, invalid bytes
            replaced).
    """

    status: Status
    detail: str
    duration_s: float
    stdout: str = ""


class _Tail:
    """The last ``limit`` bytes written to a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def run_code_check(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    max_output_bytes: int = 64_000,
) -> ExecutionResult:
    """Run a Python program in a fresh, limited subprocess and report whether it passed.

    The program passes when it exits with status 0 (HumanEval's ``check`` raises
    ``AssertionError`` on a wrong answer). See the module docstring for the limits and for
    what they do not cover.

    Args:
        program: Complete Python source, e.g. from :func:`humaneval_program`.
        timeout_s: Wall-clock seconds before the process group is killed; CPU time is
            capped at ``ceil(timeout_s) + 1`` seconds per process.
        memory_mb: Address-space limit of each process, in MiB.
        max_output_bytes: Bytes kept from the end of each of stdout and stderr.

    Returns:
        The outcome; this function does not raise for anything the program does.

    Raises:
        ValueError: If a limit is out of range (``timeout_s <= 0``, ``memory_mb`` below
            64, ``max_output_bytes < 1``).
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < MIN_MEMORY_MB:
        raise ValueError(f"memory_mb must be at least {MIN_MEMORY_MB}, got {memory_mb}")
    if max_output_bytes < 1:
        raise ValueError(f"max_output_bytes must be positive, got {max_output_bytes}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedrag-sandbox-", ignore_cleanup_errors=True) as workdir:
        script = Path(workdir) / "program.py"
        script.write_text(program, encoding="utf-8")
        command = _command(memory_mb, timeout_s)
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        try:
            proc = subprocess.Popen(  # noqa: S603 (fixed argv: our interpreter, our launcher, our file)
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return ExecutionResult("error", f"could not start the sandbox: {exc}", time.monotonic() - start)
        stdout, stderr = _Tail(max_output_bytes), _Tail(max_output_bytes)
        timed_out = _supervise(proc, start + timeout_s, stdout, stderr)
    duration = time.monotonic() - start
    status, detail = _classify(proc.returncode, timed_out, timeout_s, stderr.text())
    return ExecutionResult(status, detail, duration, stdout.text())


def _command(memory_mb: int, timeout_s: float) -> list[str]:
    """The argv: the launcher with its limits, then the program file (relative to the cwd)."""
    limits = (memory_mb * 1024 * 1024, math.ceil(timeout_s) + 1, FILE_SIZE_LIMIT_BYTES, OPEN_FILES_LIMIT, PROCESS_LIMIT)
    return [sys.executable, "-I", "-S", "-B", "-c", _LAUNCHER, *map(str, limits), "program.py"]


def _supervise(proc: subprocess.Popen[bytes], deadline: float, stdout: _Tail, stderr: _Tail) -> bool:
    """Pump the program's output until it exits or the deadline passes; kill its group.

    Returns:
        Whether the deadline passed first.
    """
    selector = selectors.DefaultSelector()
    for stream, tail in ((proc.stdout, stdout), (proc.stderr, stderr)):
        if stream is not None:
            selector.register(stream, selectors.EVENT_READ, tail)
    timed_out = False
    try:
        while not _has_exited(proc.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if selector.get_map():
                _pump(selector, min(remaining, _POLL_S))
            else:
                time.sleep(min(remaining, _POLL_S))
        # The leader is a zombie (not yet reaped), so its group id cannot have been reused.
        _kill_group(proc.pid)
        drain_until = time.monotonic() + _DRAIN_S
        while selector.get_map() and (left := drain_until - time.monotonic()) > 0:
            _pump(selector, left)
    finally:
        _kill_group(proc.pid)
        selector.close()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()
    return timed_out


def _pump(selector: selectors.BaseSelector, timeout: float) -> None:
    for key, _ in selector.select(timeout):
        chunk = os.read(key.fd, _READ_CHUNK)
        if chunk:
            key.data.add(chunk)
        else:
            selector.unregister(key.fileobj)


def _has_exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (``WNOWAIT``)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail_lines(text: str, lines: int = DETAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _classify(returncode: int | None, timed_out: bool, timeout_s: float, stderr: str) -> tuple[Status, str]:
    """Map how the program ended to a status and a human-readable detail."""
    tail = _tail_lines(stderr)
    if timed_out:
        return "timeout", f"timed out after {timeout_s:g} s" + (f"\n{tail}" if tail else "")
    if returncode == 0:
        return "passed", ""
    if returncode is None:  # pragma: no cover - _supervise always waits
        return "error", "the program's exit status is unknown"
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        if number == signal.SIGXCPU:
            return "timeout", f"exceeded the CPU time limit of {math.ceil(timeout_s) + 1} s"
        return "error", f"killed by signal {name}" + (f"\n{tail}" if tail else "")
    last = tail.splitlines()[-1] if tail else ""
    if returncode == _LAUNCH_FAILED and _LAUNCH_MARKER in tail:
        return "error", tail
    if _LIMIT_ERRORS.match(last):
        return "error", f"stopped by a sandbox limit\n{tail}"
    return "failed", tail or f"exited with status {returncode}"


# --- HumanEval programs ---------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = frozenset({"python", "python3", "py"})
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==")
# Top-level lines that look like code, used to cut prose around an unfenced definition.
_CODE_LINE = re.compile(r"^(?:(?:async\s+)?def\s|class\s|import\s|from\s|@|#|[A-Za-z_]\w*\s*(?:=|\())")


def _definition(entry_point: str) -> re.Pattern[str]:
    return re.compile(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)


def _check_entry_point(entry_point: str) -> None:
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")


def humaneval_program(problem_prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program that checks a completion: solution, the problem's tests, ``check(entry_point)``.

    ``completion`` is either a *body* that continues the prompt (the original HumanEval
    format: the solution is ``prompt + completion``) or *full code* that defines
    ``entry_point`` at top level. Full code is appended after the prompt rather than
    replacing it: the prompt's imports and helper functions (e.g. ``encode_cyclic`` of
    HumanEval/38) stay defined, its docstring-only stub is valid Python, and the
    completion's ``def`` replaces the stub.

    Args:
        problem_prompt: The problem's prompt (imports, signature, docstring).
        completion: A body continuation or full code, e.g. from :func:`extract_completion`.
        test: The problem's test code, defining ``check(candidate)``.
        entry_point: Name of the function under test.

    Returns:
        Python source to pass to :func:`run_code_check`.

    Raises:
        ValueError: If ``entry_point`` is not an identifier.
    """
    _check_entry_point(entry_point)
    if _definition(entry_point).search(completion):
        solution = f"{problem_prompt.rstrip()}\n\n\n{completion}"
    else:
        solution = problem_prompt + completion
    return f"{solution}\n\n{test}\n\ncheck({entry_point})\n"


def extract_completion(answer_text: str, prompt: str, entry_point: str) -> str:
    """Get the code to check from a model's answer, for :func:`humaneval_program`.

    Steps: drop reasoning (``<think>…</think>``, or everything up to a lone ``</think>``);
    take the last fenced block tagged ``python``/``py``, else the last fenced block of any
    kind, else the whole answer (unfenced). Then:

    * code defining ``def <entry_point>(`` at top level is *full code*: returned as is, minus
      an ``if __name__ == "__main__":`` block; when unfenced, prose lines before the first and
      after the last code-looking top-level line are cut;
    * otherwise it is a *body*: when written without indentation it is indented by four
      spaces to continue the prompt's function. An unfenced body that does not parse after
      the prompt is prose, not code, and gives ``""``.

    The code is only parsed (``ast.parse``), never run.

    Args:
        answer_text: The model's full answer.
        prompt: The problem's prompt, which a body continues.
        entry_point: Name of the function the problem asks for.

    Returns:
        Full code or a body continuation; ``""`` when the answer holds no code.

    Raises:
        ValueError: If ``entry_point`` is not an identifier.
    """
    _check_entry_point(entry_point)
    text = _strip_reasoning(answer_text)
    blocks = [(tag.lower(), code) for tag, code in _FENCE.findall(text)]
    python_blocks = [code for tag, code in blocks if tag in _PYTHON_TAGS]
    fenced = bool(blocks)
    code = python_blocks[-1] if python_blocks else blocks[-1][1] if blocks else text
    if not code.strip():
        return ""
    if _definition(entry_point).search(code):
        if not fenced:
            code = _cut_prose(code, entry_point)
        return _drop_main_guard(code).strip("\n").rstrip() + "\n"
    body = _as_body(code)
    if not fenced and not _parses(prompt + body):
        return ""
    return body


def _strip_reasoning(text: str) -> str:
    if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
        text = text.rsplit("</think>", 1)[1]
    return _THINK.sub("", text)


def _as_body(code: str) -> str:
    lines = [line for line in code.splitlines() if line.strip()]
    body = code.strip("\n").rstrip() + "\n"
    if lines and not lines[0][0].isspace():
        body = textwrap.indent(textwrap.dedent(body), "    ")
    return body


def _drop_main_guard(code: str) -> str:
    kept: list[str] = []
    skipping = False
    for line in code.splitlines():
        if _MAIN_GUARD.match(line):
            skipping = True
            continue
        if skipping and (not line.strip() or line[0].isspace()):
            continue
        skipping = False
        kept.append(line)
    return "\n".join(kept)


def _cut_prose(code: str, entry_point: str) -> str:
    lines = code.splitlines()
    definition = _definition(entry_point)
    start = next(i for i, line in enumerate(lines) if definition.match(line))
    while start > 0 and (_CODE_LINE.match(lines[start - 1]) or not lines[start - 1].strip()):
        start -= 1
    end = start
    for i in range(start, len(lines)):
        line = lines[i]
        if line.strip() and not line[0].isspace() and not _CODE_LINE.match(line) and line[0] not in ")]}":
            break
        end = i + 1
    return "\n".join(lines[start:end])


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True
