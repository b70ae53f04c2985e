"""Every PowerShell script in the repository parses cleanly and follows the script conventions.

No PowerShell runs on the Linux test machines, so a syntax slip in a .ps1 file would
only show on a user's Windows machine; the tree-sitter grammar catches it here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

from background_tasks.launcher.services import windows_task_command, windows_untask_command

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", ".git", "node_modules", "data", "logs", "__pycache__"}
PARSER = Parser(Language(tree_sitter_powershell.language()))


def repo_scripts() -> list[Path]:
    return sorted(
        p for p in PROJECT_ROOT.rglob("*.ps1") if not SKIP_DIRS.intersection(p.relative_to(PROJECT_ROOT).parts)
    )


def syntax_problems(source: bytes) -> list[str]:
    """ERROR and MISSING nodes as ``line:col`` messages (1-based)."""
    problems: list[str] = []
    stack: list[Node] = [PARSER.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            kind = f"missing {node.type!r}" if node.is_missing else "syntax error"
            snippet = source[node.start_byte : node.start_byte + 40].decode("utf-8", "replace").splitlines()
            problems.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1}: {kind} near {snippet[:1]}")
        stack.extend(node.children)
    return sorted(problems)


def test_repository_has_the_windows_scripts() -> None:
    names = {p.name for p in repo_scripts()}
    assert {"Setup-Redis-Windows.ps1", "Start-Celery-Services.ps1", "Stop-Celery-Services.ps1"} <= names


@pytest.mark.parametrize("script", repo_scripts(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_script_parses_without_errors(script: Path) -> None:
    problems = syntax_problems(script.read_bytes())
    assert not problems, f"{script.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("script", repo_scripts(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_script_has_help_param_block_and_stops_on_errors(script: Path) -> None:
    source = script.read_bytes()
    top = list(PARSER.parse(source).root_node.children)
    types = [n.type for n in top]
    assert types[0] == "comment" and b".SYNOPSIS" in top[0].text, "comment-based help must come first"
    assert "param_block" in types, "a param() block is required"
    body = top[types.index("param_block") + 1 :]
    assert body and body[0].type == "statement_list"
    first_statement = body[0].text.splitlines()[0].strip()
    assert first_statement == b"$ErrorActionPreference = 'Stop'"


def test_checker_reports_a_missing_brace_with_its_position() -> None:
    broken = b"function Start-Thing {\n    param([string] $Name)\n    if ($Name {\n        Write-Host $Name\n    }\n"
    problems = syntax_problems(broken)
    assert problems, "the unclosed condition and function must be reported"
    assert all(p.split(":")[0].isdigit() for p in problems)


def test_checker_reports_garbage_tokens() -> None:
    problems = syntax_problems(b"$x = @(1, 2\nWrite-Host ))) }}}\n")
    assert problems
    assert not syntax_problems(b"$x = @(1, 2)\nWrite-Host $x\n")


def test_generated_task_scripts_parse(tmp_path: Path) -> None:
    root = tmp_path / "it's a folder with spaces"
    register = windows_task_command(root)
    assert not syntax_problems(register.encode()), register
    assert "Register-ScheduledTask" in register and "-AtLogOn" in register
    script = str(root / "Start-Celery-Services.ps1").replace("'", "''")  # quoted inside a '...' literal
    assert f'-File "{script}" -SkipInstall' in register
    assert not syntax_problems(windows_untask_command().encode())
