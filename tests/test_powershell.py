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
COMMON = "MidasCommon.ps1"
START, STOP = PROJECT_ROOT / "Start-Celery-Services.ps1", PROJECT_ROOT / "Stop-Celery-Services.ps1"


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
    assert {"Setup-Redis-Windows.ps1", "Start-Celery-Services.ps1", "Stop-Celery-Services.ps1", COMMON} <= names


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


# --------------------------------------------------------------------------
# Start and Stop share MidasCommon.ps1; Stop installs nothing
# --------------------------------------------------------------------------


def nodes(source: bytes, kind: str) -> list[Node]:
    """Every node of ``kind`` in the script, in source order."""
    found: list[Node] = []
    stack: list[Node] = [PARSER.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.type == kind:
            found.append(node)
        stack.extend(reversed(node.children))
    return found


def command_words(command: Node) -> list[str]:
    """A command's name and bare words, lower-cased (``& $py -m pip install`` gives ``$py, pip, install``)."""
    words = []
    for child in command.children:
        if child.type in ("command_name", "command_name_expr"):
            words.append(child.text.decode().lower())
        elif child.type == "command_elements":
            words += [e.text.decode().lower() for e in child.children if e.type == "generic_token"]
    return words


def dot_sourced(source: bytes) -> list[str]:
    """What the script's top level dot-sources (``. (Join-Path $PSScriptRoot 'X.ps1')``), as written."""
    top = PARSER.parse(source).root_node
    found = []
    for command in nodes(source, "command"):
        operator = command.children[0]
        inside_function = any(p.type == "function_statement" for p in ancestors(command, top))
        if operator.type == "command_invokation_operator" and operator.text == b"." and not inside_function:
            found.append(command.children[1].text.decode())
    return found


def ancestors(node: Node, root: Node) -> list[Node]:
    chain = []
    while node.parent is not None and node != root:
        node = node.parent
        chain.append(node)
    return chain


INSTALL_WORDS = {"pip", "pip.exe", "pip3", "install", "ensurepip", "venv", "winget", "initialize-venv"}


def install_calls(source: bytes) -> list[str]:
    """Commands that install or create something: pip, venv, winget, or Start's Initialize-Venv."""
    return [c.text.decode() for c in nodes(source, "command") if INSTALL_WORDS.intersection(command_words(c))]


def defined_functions(source: bytes) -> set[str]:
    names = (c for n in nodes(source, "function_statement") for c in n.children if c.type == "function_name")
    return {name.text.decode().lower() for name in names}


def test_start_and_stop_dot_source_the_common_helper() -> None:
    assert (PROJECT_ROOT / COMMON).is_file()
    for script in (START, STOP):
        sourced = dot_sourced(script.read_bytes())
        assert sourced == [f"(Join-Path $PSScriptRoot '{COMMON}')"], f"{script.name}: {sourced}"
    assert dot_sourced(b"function F { . (Join-Path $PSScriptRoot 'x.ps1') }\n") == []


def test_stop_installs_nothing_and_start_still_does() -> None:
    assert install_calls(STOP.read_bytes()) == [], "Stop must not install"
    assert install_calls((PROJECT_ROOT / COMMON).read_bytes()) == [], "Stop runs all of MidasCommon.ps1"
    start = install_calls(START.read_bytes())
    assert any("pip install" in call for call in start), start
    assert "Initialize-Venv -Preferred $Python" in start


def test_the_shared_part_is_written_once() -> None:
    common = defined_functions((PROJECT_ROOT / COMMON).read_bytes())
    assert {"assert-venvpython", "invoke-midaslauncher"} <= common
    for script in (START, STOP):
        source = script.read_bytes()
        assert not common & defined_functions(source), f"{script.name} redefines what MidasCommon.ps1 has"
        words = [w for c in nodes(source, "command") for w in command_words(c)]
        assert "assert-venvpython" in words and "invoke-midaslauncher" in words
    assert defined_functions(STOP.read_bytes()) == set()


def test_stop_runs_the_launchers_stop_after_checking_for_the_venv() -> None:
    commands = [c.text.decode() for c in nodes(STOP.read_bytes(), "command")]
    check = next(i for i, c in enumerate(commands) if c.startswith("Assert-VenvPython"))
    run = commands.index("Invoke-MidasLauncher -Action stop -Services $Services")
    assert check < run
    assert "Start-Celery-Services.ps1 creates it" in commands[check]
    common = (PROJECT_ROOT / COMMON).read_text()
    assert "& $VenvPython -m background_tasks.services $Action @Services" in common
