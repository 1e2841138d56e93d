"""Command-line argument checks that must reject nonsense before a Spark session exists."""

from __future__ import annotations

import re
import socket

import pytest

import spark_jobs.session
from spark_jobs import cli
from spark_jobs.params import RANGES
from spark_jobs.steps import STAGE_PARAMETERS
from spark_jobs.steps import STAGES
from spark_jobs.steps import option_name


class SessionStarted(Exception):
    """Raised by the stand-in for build_session: the command got past its argument checks."""


@pytest.fixture
def session_calls(monkeypatch):
    """Replace build_session with a recorder that raises SessionStarted; yield the call list."""
    calls = []

    def build_session(*args, **kwargs):
        calls.append((args, kwargs))
        raise SessionStarted

    monkeypatch.setattr(spark_jobs.session, "build_session", build_session)
    return calls


@pytest.mark.parametrize(
    ("arguments", "option", "allowed"),
    [
        (["train", "--rank", "0"], "--rank", "[1, 1000]"),
        (["train", "--reg-param", "-0.1"], "--reg-param", "[0, inf)"),
        (["train", "--max-iter", "0"], "--max-iter", "[1, 1000]"),
        (["split", "--test-fraction", "0"], "--test-fraction", "(0, 1)"),
        (["split", "--test-fraction", "1"], "--test-fraction", "(0, 1)"),
        (["recommend", "--top-k", "0"], "--top-k", "[1, 1000]"),
        (["evaluate", "--top-k", "0"], "--top-k", "[1, 1000]"),
        (["tune", "--rank-grid", "8,0"], "--rank-grid", "[1, 1000]"),
        (["tune", "--reg-grid", "0.1,-1"], "--reg-grid", "[0, inf)"),
        (["load", "--max-quarantine-fraction", "1.5"], "--max-quarantine-fraction", "[0, 1]"),
        (["pipeline", "--rank", "0"], "--rank", "[1, 1000]"),
        (["pipeline", "--test-fraction", "1"], "--test-fraction", "(0, 1)"),
    ],
)
def test_cli_rejects_out_of_range_option(
    session_calls, capsys, tmp_path, arguments, option, allowed
):
    code = cli.main([*arguments, "--output", str(tmp_path / "run")])
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert f"invalid value for {option}" in message
    assert f"allowed range is {allowed}" in message


@pytest.mark.parametrize("command", ["split", "pipeline"])
def test_split_method_rejected_with_files(session_calls, capsys, tmp_path, command):
    files = ["--train", str(tmp_path / "u1.base"), "--test", str(tmp_path / "u1.test")]
    arguments = [command, *files, "--split-method", "per-user", "--output", str(tmp_path / "run")]

    code = cli.main(arguments)
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert "--split-method sets how split makes its own split" in message
    assert "--train and --test" in message


def test_cli_rejects_output_inside_source(session_calls, capsys, tmp_path):
    source = tmp_path / "ml-latest-small"
    source.mkdir()

    code = cli.main(["load", "--source", str(source), "--output", str(source / "run")])
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert "invalid value for --output" in message
    assert "inside the input --source" in message


@pytest.mark.parametrize("form", ["file_uri", "localhost_uri", "symlink"])
def test_cli_rejects_output_inside_source_alias(session_calls, capsys, tmp_path, form):
    source = tmp_path / "ml-latest-small"
    source.mkdir()
    link = tmp_path / "link"
    link.symlink_to(source)
    source_option = {
        "file_uri": f"file://{source}",
        "localhost_uri": f"file://localhost{source}",
        "symlink": str(link),
    }[form]

    code = cli.main(["load", "--source", source_option, "--output", str(source / "run")])

    assert code == 2
    assert session_calls == []
    assert "inside the input --source" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["path", "file_uri"])
def test_cli_rejects_output_that_is_file(session_calls, capsys, tmp_path, form):
    existing = tmp_path / "notes.txt"
    existing.write_text("not a run directory\n")
    output = {"path": str(existing), "file_uri": f"file://{existing}"}[form]

    code = cli.main(["explore", "--output", output])
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert f"invalid value for --output: '{output}' is a file" in message


def test_cli_rejects_output_equal_to_s3_source(session_calls, capsys):
    code = cli.main(["pipeline", "--source", "s3://bucket/ml/", "--output", "s3://bucket/ml"])
    assert code == 2
    assert session_calls == []
    assert "inside the input --source" in capsys.readouterr().err


def test_cli_rejects_train_without_test(session_calls, capsys, tmp_path):
    arguments = ["split", "--train", str(tmp_path / "u1.base"), "--output", str(tmp_path / "run")]
    code = cli.main(arguments)
    assert code == 2
    assert session_calls == []
    assert "--train and --test must be given together" in capsys.readouterr().err


def test_cli_rejects_non_numeric_option(session_calls, capsys, tmp_path):
    with pytest.raises(SystemExit) as raised:
        cli.main(["train", "--rank", "ten", "--output", str(tmp_path)])
    assert raised.value.code == 2
    assert session_calls == []
    assert "--rank" in capsys.readouterr().err


def test_cli_starts_session_for_valid_options(session_calls, tmp_path):
    with pytest.raises(SessionStarted):
        cli.main(["train", "--rank", "1", "--reg-param", "0", "--output", str(tmp_path)])
    assert len(session_calls) == 1


def test_cli_output_beside_source_is_allowed(session_calls, tmp_path):
    source = tmp_path / "ml"
    source.mkdir()
    with pytest.raises(SessionStarted):
        cli.main(["load", "--source", str(source), "--output", str(tmp_path / "ml-run")])
    assert len(session_calls) == 1


def test_cli_dataset_name_is_not_a_path(session_calls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SessionStarted):
        cli.main(["load", "--source", "ml-100k", "--output", "ml-100k-run"])
    assert len(session_calls) == 1


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["tune", "--help"])
    assert raised.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--rank-grid RANK_GRID comma-separated ranks searched by tune "
        "(each allowed [1, 1000]; default: 8,16,32)"
    ) in text
    assert "(each allowed [0, inf); default: 0.05,0.1,0.2)" in text
    assert "(allowed [0, 9223372036854775807]; default: 42)" in text


@pytest.mark.parametrize("name", sorted(RANGES))
def test_help_shows_every_range(capsys, name):
    stage = next(stage for stage, names in STAGE_PARAMETERS.items() if name in names)
    with pytest.raises(SystemExit):
        cli.main([stage, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    option = option_name(name)
    # The option's own entry runs from "--name NAME" to the next "--other OTHER".
    after = text.split(f" {option} {name.upper()} ", 1)[1]
    entry = re.split(r" --[a-z-]+ [A-Z_{]", after, maxsplit=1)[0]
    assert f"allowed {RANGES[name].text()}" in entry


@pytest.mark.parametrize("grid", ["8,x", "8,,16", "8,16,"])
def test_bad_grid_names_the_format(capsys, tmp_path, grid):
    with pytest.raises(SystemExit):
        cli.main(["tune", "--output", str(tmp_path), "--rank-grid", grid])
    message = capsys.readouterr().err
    assert f"invalid list '{grid}'" in message
    assert "integers separated by commas" in message


def test_grid_allows_spaces(session_calls, tmp_path):
    with pytest.raises(SessionStarted):
        cli.main(["tune", "--output", str(tmp_path), "--rank-grid", "8, 16"])
    assert len(session_calls) == 1


def test_help_names_tuned_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: tune's choice, or 10 when tune has not run" in text
    assert "default: the value tune used, or 16 when tune has not run" in text


def test_tune_help_gives_plain_sampler_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the value tune used" not in text
    assert "(allowed [1, 1000]; default: 16)" in text


def test_help_lists_allowed_names(capsys):
    with pytest.raises(SystemExit):
        cli.main(["split", "--help"])
    split_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["recommend", "--help"])
    recommend_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    train_help = capsys.readouterr().out

    assert "--split-method {hash,per-user}" in split_help
    assert "--ordering {default,rating,implicit,reranked}" in recommend_help
    assert "--rating-model {als,bayes}" in train_help


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_describes_stage(capsys, stage):
    with pytest.raises(SystemExit) as raised:
        cli.main([stage, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert raised.value.code == 0
    assert cli.STAGE_HELP[stage][1:] + "." in text


def test_top_level_help_for_users(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "example: python -m spark_jobs pipeline --output runs/demo" in text
    assert "``" not in text


def test_evaluate_takes_no_seed(session_calls, capsys, tmp_path):
    with pytest.raises(SystemExit) as raised:
        cli.main(["evaluate", "--output", str(tmp_path), "--seed", "7"])
    message = capsys.readouterr().err
    assert raised.value.code == 2
    assert "unrecognized arguments: --seed 7" in message
    assert "usage: python -m spark_jobs evaluate" in message
    assert session_calls == []


@pytest.mark.parametrize("option", ["--source", "--train", "--test"])
def test_cli_rejects_missing_local_input(session_calls, capsys, tmp_path, option):
    present = tmp_path / "present"
    present.mkdir()
    inputs = {"--source": str(present), "--train": str(present), "--test": str(present)}
    inputs[option] = str(tmp_path / "absent")
    arguments = ["pipeline", "--output", str(tmp_path / "run")]
    for name, value in inputs.items():
        arguments += [name, value]

    code = cli.main(arguments)
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert f"input not found: {option} '{tmp_path / 'absent'}' does not exist" in message


def test_cli_mistyped_source_lists_datasets(session_calls, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["load", "--source", "ml-latst-small", "--output", "run"])
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert "--source 'ml-latst-small' does not exist" in message
    assert "ml-100k" in message
    assert "ml-latest-small" in message


def test_cli_leaves_cluster_paths_to_spark(session_calls, tmp_path, monkeypatch):
    # With a Hadoop configuration a path without a scheme names a file in HDFS.
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    with pytest.raises(SessionStarted):
        cli.main(["load", "--source", "/user/hadoop/ml", "--output", str(tmp_path / "run")])
    assert len(session_calls) == 1


def test_cli_rejects_unreachable_master(session_calls, capsys, tmp_path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    code = cli.main(["explore", "--master", f"spark://127.0.0.1:{port}", "--output", str(tmp_path)])
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert f"failed to connect to the Spark master at 127.0.0.1:{port}" in message


def test_cli_accepts_listening_master(session_calls, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        master = f"spark://127.0.0.1:1,127.0.0.1:{port}"
        with pytest.raises(SessionStarted):
            cli.main(["explore", "--master", master, "--output", str(tmp_path)])
    assert len(session_calls) == 1


def test_cli_rejects_master_without_port(session_calls, capsys, tmp_path):
    code = cli.main(["explore", "--master", "spark://127.0.0.1", "--output", str(tmp_path)])

    assert code == 2
    assert "spark://HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--source", "--train"])
def test_cli_rejects_output_containing_input(session_calls, capsys, tmp_path, option):
    data = tmp_path / "run" / "ratings"
    data.mkdir(parents=True)
    arguments = ["pipeline", "--source", str(data), "--output", str(tmp_path / "run")]
    if option == "--train":
        arguments = ["split", "--train", str(data), "--test", str(data)]
        arguments += ["--output", str(tmp_path / "run")]

    code = cli.main(arguments)
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert f"contains the input {option} '{data}'" in message


def test_cli_rejects_output_under_file(session_calls, capsys, tmp_path):
    (tmp_path / "notes").write_text("a file\n")

    code = cli.main(["explore", "--output", str(tmp_path / "notes" / "run")])
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert f"is under {tmp_path / 'notes'}, which is a file" in message


def test_pipeline_rejects_files_without_source(session_calls, capsys, tmp_path):
    split_file = tmp_path / "u1.base"
    split_file.write_text("1\t1\t5\t0\n")
    arguments = ["pipeline", "--train", str(split_file), "--test", str(split_file)]

    code = cli.main([*arguments, "--output", str(tmp_path / "run")])
    message = capsys.readouterr().err

    assert code == 2
    assert session_calls == []
    assert "--train and --test need --source" in message
