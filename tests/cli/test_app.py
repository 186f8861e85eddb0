"""The CLI shell: commands, global options, error mapping, option parsing and rendering."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner, Result

import geoclass
from geoclass.cli.app import app, main
from geoclass.cli.options import (
    AmpOpt,
    BandsOpt,
    BatchSizeOpt,
    DeviceOpt,
    GroupOpt,
    WorkersOpt,
    check_exclusive,
    parse_bands,
    parse_groups,
)
from geoclass.cli.render import make_progress_callback, not_implemented, print_json
from geoclass.errors import (
    ConfigError,
    GeoclassError,
    InputNotFoundError,
    Interrupted,
    ModelError,
)
from geoclass.progress import ProgressEvent, Reporter

COMMANDS = ["tile", "train", "eval", "predict", "sample", "mosaic"]

# Minimal valid arguments per command, and the options each command's --help must name.
MINIMAL_ARGS = {
    "tile": ["scene.tif", "-o", "chips"],
    "train": ["chips", "--model", "resnet18", "-o", "run"],
    "eval": ["chips"],
    "predict": ["scene.tif", "-o", "map.tif"],
    "sample": ["map.tif", "-n", "500", "-o", "sample.gpkg"],
    "mosaic": ["a.tif", "b.tif", "-o", "mosaic.tif"],
}
KEY_OPTIONS = {
    "tile": [
        "--output",
        "--labels",
        "--label-field",
        "--classes",
        "--size",
        "--stride",
        "--bands",
        "--task",
        "--min-labelled",
        "--max-nodata",
        "--val-fraction",
        "--block-size",
        "--seed",
        "--overwrite",
        "--resume",
    ],
    "train": [
        "--model",
        "--output",
        "--val",
        "--val-split",
        "--split",
        "--epochs",
        "--batch-size",
        "--lr",
        "--weight-decay",
        "--amp",
        "--weights",
        "--pretrained",
        "--label-smoothing",
        "--class-weights",
        "--patience",
        "--augment",
        "--no-augment",
        "--cutmix",
        "--workers",
        "--resume",
        "--seed",
        "--device",
        "--group",
        "--radiometry",
        "--val-fraction",
        "--json",
    ],
    "eval": [
        "--model",
        "--split",
        "--report",
        "--plots",
        "--json",
        "--group",
        "--batch-size",
        "--workers",
        "--device",
    ],
    "predict": [
        "--output",
        "--model",
        "--bands",
        "--stride",
        "--overlap",
        "--batch-size",
        "--workers",
        "--device",
        "--amp",
        "--tta",
        "--probabilities",
        "--confidence",
        "--vector",
        "--min-area",
        "--simplify",
        "--preview",
        "--cog",
        "--resume",
        "--overwrite",
        "--json",
    ],
    "sample": [
        "--output",
        "--points",
        "--allocation",
        "--min-per-class",
        "--expected-accuracy",
        "--nodata",
        "--seed",
        "--overwrite",
        "--json",
    ],
    "mosaic": ["--output", "--method", "--crs", "--res", "--vrt", "--overwrite"],
}
# Commands whose body is still a stub; remove a name here when its command lands.


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    return CliRunner()


def invoke(runner: CliRunner, args: list[str], **env: str) -> Result:
    return runner.invoke(app, args, prog_name="geoclass", env=env or None)


@pytest.fixture
def extra_command(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Register a throw-away ``boom`` command on the real app (removed after the test)."""
    monkeypatch.setattr(app, "registered_commands", list(app.registered_commands))

    def add(body: Callable[[], None]) -> None:
        app.command("boom")(body)

    yield add


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


# --- commands and help ------------------------------------------------------------------------


def test_help_lists_the_commands_in_workflow_order(runner: CliRunner) -> None:
    result = invoke(runner, ["--help"])
    assert result.exit_code == 0, result.output
    commands_panel = result.stdout[result.stdout.index("Commands") :]
    positions = [commands_panel.find(f"│ {name} ") for name in COMMANDS]
    assert all(p >= 0 for p in positions), result.stdout
    assert positions == sorted(positions)
    for option in ("--quiet", "--verbose", "--version"):
        assert option in result.stdout


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = invoke(runner, [])
    assert "Usage" in result.output
    assert "predict" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_names_its_options(runner: CliRunner, command: str) -> None:
    result = invoke(runner, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"geoclass {command}" in result.stdout
    for option in KEY_OPTIONS[command]:
        assert option in result.stdout, f"{command} --help does not mention {option}"


def test_short_help_flag(runner: CliRunner) -> None:
    assert invoke(runner, ["predict", "-h"]).exit_code == 0


def test_version(runner: CliRunner) -> None:
    result = invoke(runner, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"geoclass {geoclass.__version__}\n"


def test_main_exits_with_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"geoclass {geoclass.__version__}\n"


# --- errors -> one line and an exit code ------------------------------------------------------


def test_not_implemented_through_main(capsys: pytest.CaptureFixture[str], extra_command) -> None:
    extra_command(lambda: not_implemented("boom"))
    with pytest.raises(SystemExit) as exit_info:
        main(["boom"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == "error: geoclass boom is not implemented yet"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputNotFoundError("scene.tif does not exist"), 1),
        (ModelError("unknown model 'resnet19'; did you mean 'resnet18'?"), 1),
        (ConfigError("--stride must not exceed the window size"), 2),
        (GeoclassError("something [in brackets] went wrong"), 1),
    ],
)
def test_geoclass_error_gives_one_line_and_its_exit_code(
    runner: CliRunner, extra_command, error: GeoclassError, code: int
) -> None:
    def boom() -> None:
        raise error

    extra_command(boom)
    result = invoke(runner, ["boom"])
    assert result.exit_code == code
    assert one_line(result.stderr) == f"error: {error}"
    assert "Traceback" not in result.output


def test_long_error_message_stays_on_one_line(runner: CliRunner, extra_command) -> None:
    message = "cannot read " + "/very/long/path" * 20 + ".tif"

    def boom() -> None:
        raise InputNotFoundError(message)

    extra_command(boom)
    result = invoke(runner, ["boom"])
    assert one_line(result.stderr) == f"error: {message}"


def test_verbose_shows_the_traceback(runner: CliRunner, extra_command) -> None:
    def boom() -> None:
        raise InputNotFoundError("scene.tif does not exist")

    extra_command(boom)
    result = invoke(runner, ["--verbose", "boom"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == "error: scene.tif does not exist"


def test_interrupted_prints_how_to_resume_and_exits_130(runner: CliRunner, extra_command) -> None:
    def boom() -> None:
        raise Interrupted("stopped after epoch 3; continue with: geoclass train --resume run")

    extra_command(boom)
    result = invoke(runner, ["boom"])
    assert result.exit_code == 130
    line = one_line(result.stderr)
    assert "geoclass train --resume run" in line


def test_keyboard_interrupt_exits_130_with_one_line(runner: CliRunner, extra_command) -> None:
    def boom() -> None:
        raise KeyboardInterrupt

    extra_command(boom)
    result = invoke(runner, ["boom"])
    assert result.exit_code == 130
    assert one_line(result.stderr).startswith("interrupted")


def test_a_bug_is_not_disguised(runner: CliRunner, extra_command) -> None:
    def boom() -> None:
        raise RuntimeError("a bug")

    extra_command(boom)
    result = invoke(runner, ["boom"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_unknown_command_and_option_are_usage_errors(runner: CliRunner) -> None:
    assert invoke(runner, ["frobnicate"]).exit_code == 2
    assert (
        invoke(runner, ["predict", "scene.tif", "-o", "m.tif", "--no-such-option"]).exit_code == 2
    )
    assert invoke(runner, ["predict", "scene.tif"]).exit_code == 2  # -o missing


@pytest.mark.parametrize("bands", ["4,x", "4;3;2", "0,1", "1,1", "-1", "", "1.5"])
def test_bad_bands_text_is_a_usage_error(runner: CliRunner, bands: str) -> None:
    result = invoke(runner, ["predict", "scene.tif", "-o", "map.tif", "--bands", bands])
    assert result.exit_code == 2
    assert "--bands" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["-q", "-v", "predict", "s.tif", "-o", "m.tif"],
        ["predict", "s.tif", "-o", "m.tif", "--stride", "32", "--overlap", "0.5"],
        ["predict", "s.tif", "-o", "m.tif", "--resume", "--overwrite"],
        ["predict", "s.tif", "-o", "m.tif", "--min-area", "100"],
        ["predict", "s.tif", "-o", "m.tif", "--device", "tpu"],
        ["predict", "s.tif", "-o", "m.tif", "--amp", "maybe"],
        ["predict", "s.tif", "-o", "m.tif", "--overlap", "1.5"],
        ["train", "chips"],  # --model/-o required unless --resume
        ["train", "--model", "cnn", "-o", "run"],  # DATA required unless --resume
        ["eval", "chips", "--group", "agri"],
        ["mosaic", "a.tif", "-o", "m.tif", "--method", "average"],
        ["tile", "s.tif", "-o", "chips", "--task", "detect"],
    ],
)
def test_contradictory_or_invalid_options_exit_2(runner: CliRunner, args: list[str]) -> None:
    result = invoke(runner, args)
    assert result.exit_code == 2, result.output
    assert "not implemented" not in result.output


@pytest.mark.parametrize("data", [[], ["chips"]])
def test_train_resume_needs_no_data_model_or_output(runner: CliRunner, data: list[str]) -> None:
    result = invoke(runner, ["train", *data, "--resume", "run"])
    assert "--model" not in result.stderr
    assert "Missing argument" not in result.stderr
    assert result.exit_code == 1
    assert "no training run to resume" in result.stderr


# --- colour -----------------------------------------------------------------------------------


def test_force_color_colours_the_error_line(runner: CliRunner, extra_command) -> None:
    extra_command(lambda: not_implemented("boom"))
    result = invoke(runner, ["boom"], FORCE_COLOR="1", TERM="xterm-256color")
    assert "\x1b[" in result.stderr


def test_no_color_leaves_no_ansi_escapes(runner: CliRunner, extra_command) -> None:
    extra_command(lambda: not_implemented("boom"))
    result = invoke(runner, ["boom"], NO_COLOR="1", FORCE_COLOR="1", TERM="xterm-256color")
    assert result.exit_code == 2
    assert "\x1b" not in result.output
    assert one_line(result.stderr) == "error: geoclass boom is not implemented yet"
    help_result = invoke(runner, ["predict", "--help"], NO_COLOR="1")
    assert "\x1b" not in help_result.output


# --- option parsers ---------------------------------------------------------------------------


def test_parse_bands() -> None:
    assert parse_bands("4,3,2") == [4, 3, 2]
    assert parse_bands(" 1, 2 ,3 ") == [1, 2, 3]
    assert parse_bands("7") == [7]
    assert parse_bands(None) is None
    assert parse_bands([3, 2, 1]) == [3, 2, 1]
    with pytest.raises(typer.BadParameter, match="counted from 1"):
        parse_bands("red,green")


def test_shared_options_parse_into_python_values(runner: CliRunner, extra_command) -> None:
    seen: dict[str, object] = {}

    def boom(
        bands: BandsOpt = None,
        device: DeviceOpt = "auto",
        amp: AmpOpt = "auto",
        groups: GroupOpt = None,
        workers: WorkersOpt = None,
        batch_size: BatchSizeOpt = 64,
    ) -> None:
        seen.update(
            bands=bands,
            device=device,
            amp=amp,
            groups=groups,
            workers=workers,
            batch_size=batch_size,
        )

    extra_command(boom)
    args = [
        "boom",
        "--bands",
        "4,3,2",
        "--device",
        "cpu",
        "--amp",
        "off",
        "-j",
        "2",
        "-b",
        "8",
        "--group",
        "agri=AnnualCrop,PermanentCrop",
        "--group",
        "water=River",
    ]
    result = invoke(runner, args)
    assert result.exit_code == 0, result.output
    assert seen == {
        "bands": [4, 3, 2],
        "device": "cpu",
        "amp": "off",
        "groups": ["agri=AnnualCrop,PermanentCrop", "water=River"],
        "workers": 2,
        "batch_size": 8,
    }
    assert invoke(runner, ["boom"]).exit_code == 0
    assert seen["bands"] is None and seen["groups"] is None


def test_parse_groups() -> None:
    assert parse_groups("agri=AnnualCrop,PermanentCrop") == {
        "agri": ["AnnualCrop", "PermanentCrop"]
    }
    assert parse_groups(["agri=AnnualCrop, PermanentCrop", "water=River,SeaLake"]) == {
        "agri": ["AnnualCrop", "PermanentCrop"],
        "water": ["River", "SeaLake"],
    }
    assert parse_groups("a=X;b=Y,Z") == {"a": ["X"], "b": ["Y", "Z"]}
    assert parse_groups(None) == {}
    for bad in ["agri", "=A,B", "agri=", "a=X;a=Y", "a=X,X"]:
        with pytest.raises(typer.BadParameter):
            parse_groups(bad)


def test_check_exclusive() -> None:
    check_exclusive(stride=None, overlap=0.5)
    check_exclusive(resume=False, overwrite=True)
    with pytest.raises(typer.BadParameter):
        check_exclusive(stride=32, overlap=0.5)


# --- rendering --------------------------------------------------------------------------------


def run_events(quiet: bool, terminal: bool, events: Callable[[Reporter], None]) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=100, color_system=None)
    callback, live = make_progress_callback(quiet, console=console)
    with live:
        events(Reporter(callback))
    return buffer.getvalue()


def some_work(report: Reporter) -> None:
    report.info("reading 3 windows")
    report.start("tile", total=3)
    for _ in range(3):
        report.advance("tile")
    report.end("tile")
    report.warn("12% of the scene is nodata")
    report.metrics("epoch", {"epoch": 1, "loss": 0.51234, "acc": 0.8, "lr": 1e-4})
    report.metrics("epoch", {"epoch": 2, "loss": 0.4, "acc": 0.85, "lr": 1e-4})


def test_progress_without_terminal_prints_plain_lines() -> None:
    out = run_events(quiet=False, terminal=False, events=some_work)
    lines = out.splitlines()
    assert "note: reading 3 windows" in lines
    assert "warning: 12% of the scene is nodata" in lines
    assert any(line.startswith("tile: 3 in ") for line in lines)
    assert sum("loss" in line for line in lines) == 1  # one header for both epochs
    assert any("0.5123" in line for line in lines)
    assert "\r" not in out and "━" not in out


def test_progress_quiet_shows_only_warnings() -> None:
    out = run_events(quiet=True, terminal=True, events=some_work)
    assert out.splitlines() == ["warning: 12% of the scene is nodata"]


def test_progress_on_a_terminal_draws_bars() -> None:
    def work(report: Reporter) -> None:
        report.start("predict", total=4)
        report.advance("predict", 4)
        report.end("predict")
        report.start("val", total=None)  # unknown total
        report.advance("val", 2)
        report.end("val")
        report.advance("never-started")

    out = run_events(quiet=False, terminal=True, events=work)
    assert "predict" in out and "4/4" in out
    assert "val" in out


def test_progress_callback_restarts_a_reused_task() -> None:
    def work(report: Reporter) -> None:
        for _ in range(3):
            report.start("train", total=2)
            report.advance("train", 2)
            report.end("train")

    out = run_events(quiet=False, terminal=False, events=work)
    assert out.count("train: 2 in") == 3


def test_progress_event_kinds_cover_the_protocol() -> None:
    callback, live = make_progress_callback(True, console=Console(file=io.StringIO()))
    with live:
        for kind in ("start", "advance", "end", "message", "metrics"):
            callback(ProgressEvent(kind, task="t"))  # type: ignore[arg-type]


def test_print_json_is_plain_json_on_stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    print_json(
        {"path": Path("out/map.tif"), "accuracy": 0.93, "f1": math.nan, "classes": ("a", "b")}
    )
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "\x1b" not in captured.out
    assert json.loads(captured.out) == {
        "path": "out/map.tif",
        "accuracy": 0.93,
        "f1": None,
        "classes": ["a", "b"],
    }
