"""`carpool bench` options: defaults, and bad input refused with the bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from carpool_bench import command
from tests.support.pods import free_port

pytestmark = pytest.mark.unit


def test_defaults_are_the_documented_grid() -> None:
    args = command.build_parser().parse_args([])
    assert args.strategies == ["single_request", "batch_optimized", "adaptive"]
    assert args.concurrency == [1, 8, 64]
    assert (args.duration, args.warmup, args.max_batch_size) == (5.0, 2.0, 32)
    assert (args.rounds, args.reference_every, args.reference_seconds) == (3, 3, 1.0)
    assert args.texts is None and args.seed is None and args.texts_file is None  # 256 generated, seed 0
    assert args.url == "http://127.0.0.1:8000" and args.model == "minilm" and not args.spawn


def test_lists_are_parsed_deduplicated_and_sorted() -> None:
    args = command.build_parser().parse_args(["--concurrency", "64, 1,8,1", "--strategies", "adaptive"])
    assert args.concurrency == [1, 8, 64] and args.strategies == ["adaptive"]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        pytest.param(["--strategies", "fastest"], "'fastest'", id="unknown-strategy"),
        pytest.param(["--concurrency", "0,8"], "'0,8'", id="zero-concurrency"),
        pytest.param(["--concurrency", "eight"], "'eight'", id="not-a-number"),
        pytest.param(["--duration", "0"], "'0'", id="zero-duration"),
        pytest.param(["--warmup", "-1"], "'-1'", id="negative-warm-up"),
        pytest.param(["--timeout", "soon"], "'soon'", id="not-a-duration"),
        pytest.param(["--rounds", "0"], "'0'", id="no-rounds"),
        pytest.param(["--reference-every", "two"], "'two'", id="reference-every-not-a-number"),
    ],
)
def test_bad_options_are_refused_naming_the_value(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--model", "=x"], "--model takes NAME or NAME=PATH, got '=x'", id="bad-model"),
        pytest.param(["--max-batch-size", "0"], "--max-batch-size and --texts must be >= 1", id="batch-0"),
    ],
)
def test_bad_values_exit_1_with_a_message(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.main([*argv, "--output", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_a_server_that_is_not_running_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert command.main(["--url", url, "--output", str(tmp_path)]) == 1
    assert f"{url}/health is not 200: start carpool serve, or use --spawn" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        pytest.param("", [], "mine.txt holds no texts (it is empty or blank)", id="empty"),
        pytest.param('{"text": "ok"}\n{"txt": "x"}\n', [], "mine.txt, line 2: expected", id="bad-line"),
        pytest.param("ok\n", ["--texts", "10"], "with --texts-file give neither", id="with-texts"),
        pytest.param("ok\n", ["--seed", "3"], "with --texts-file give neither", id="with-seed"),
        pytest.param(b"caf\xe9\n", [], "mine.txt is not UTF-8 text", id="not-utf-8"),
    ],
)
def test_a_texts_file_the_bench_cannot_use_exits_1_before_anything_starts(
    content: str | bytes, extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine.txt"
    if isinstance(content, bytes):
        mine.write_bytes(content)
    else:
        mine.write_text(content)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the file is refused before the server is asked
    argv = ["--url", url, "--texts-file", str(mine), *extra, "--output", str(tmp_path / "out")]
    assert command.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "/health" not in err


def test_a_missing_texts_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.jsonl"
    assert command.main(["--texts-file", str(missing), "--output", str(tmp_path)]) == 1
    assert (
        f"cannot read --texts-file: [Errno 2] No such file or directory: '{missing}'"
        in capsys.readouterr().err
    )
