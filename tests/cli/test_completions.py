"""The committed shell completion scripts match the app, and they complete."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from geoclass.cli.completions import SCRIPT_FILES, completion_script
from geoclass.cli.completions import main as completions_main

COMPLETIONS = Path(__file__).resolve().parents[2] / "completions"
REGENERATE = "python -m geoclass.cli.completions"


@pytest.mark.parametrize("shell", sorted(SCRIPT_FILES))
def test_committed_script_is_what_the_app_generates(shell: str) -> None:
    path = COMPLETIONS / SCRIPT_FILES[shell]
    assert path.is_file(), f"{path} is missing; run: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == completion_script(shell), (
        f"{path} is stale; run: {REGENERATE}"
    )


def test_check_mode_agrees() -> None:
    assert completions_main([str(COMPLETIONS), "--check"]) == 0


def test_check_mode_reports_a_stale_script(tmp_path: Path) -> None:
    for name in SCRIPT_FILES.values():
        shutil.copy(COMPLETIONS / name, tmp_path / name)
    (tmp_path / SCRIPT_FILES["bash"]).write_text("# old\n", encoding="utf-8")
    assert completions_main([str(tmp_path), "--check"]) == 1
    assert completions_main([str(tmp_path)]) == 0
    assert completions_main([str(tmp_path), "--check"]) == 0


def test_zsh_script_starts_with_compdef() -> None:
    assert completion_script("zsh").startswith("#compdef geoclass\n")


def test_unknown_shell() -> None:
    with pytest.raises(ValueError, match="unknown shell"):
        completion_script("tcsh")


def _geoclass_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a ``geoclass`` launcher for this interpreter first."""
    launcher = tmp_path / "bin" / "geoclass"
    launcher.parent.mkdir()
    launcher.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c "from geoclass.cli.app import main; main()" "$@"\n',
        encoding="utf-8",
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ)
    env["PATH"] = f"{launcher.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_app_emits_the_same_script_as_the_console_script(tmp_path: Path) -> None:
    env = _geoclass_on_path(tmp_path)
    env["_GEOCLASS_COMPLETE"] = "source_bash"
    out = subprocess.run(["geoclass"], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == completion_script("bash").strip()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("geoclass pr", {"predict"}),
        ("geoclass predict --dev", {"--device"}),
        ("geoclass predict --device ", {"auto", "cpu", "cuda"}),
        ("geoclass mosaic --method ", {"first", "last", "max-confidence"}),
    ],
)
def test_bash_script_completes(tmp_path: Path, words: str, expected: set[str]) -> None:
    env = _geoclass_on_path(tmp_path)
    script = COMPLETIONS / SCRIPT_FILES["bash"]
    trailing_empty_word = ' ""' if words.endswith(" ") else ""
    program = (
        f'source "{script}"\n'
        f"COMP_WORDS=({words}{trailing_empty_word})\n"
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "_geoclass_completion geoclass\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", program], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected
