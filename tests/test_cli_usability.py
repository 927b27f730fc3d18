"""The CLI's help, errors and output for a user: examples and default values in every --help, --version, clear
errors for a mistyped store or a lost LATEST, `models fetch` without network, quiet logs and page progress."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from flows.cli.parser import build_parser

REPO = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_help_has_examples_and_values_not_setting_names() -> None:
    for name, parser in _commands().items():
        text = parser.format_help()
        assert "examples:" in text and "mmrag " + name in text, name
        if name != "finetune":  # its flags are the fine-tuning work's own
            assert "settings." not in text, (name, [ln for ln in text.splitlines() if "settings." in ln])
    index = " ".join(_commands()["index"].format_help().split())
    assert "s3://" in index and "default: ./.store" in index
    snapshots = next(a for a in _commands()["snapshots"]._actions if isinstance(a, argparse._SubParsersAction))
    assert "(default: 5)" in " ".join(snapshots.choices["gc"].format_help().split())
    assert "default: 10" in _commands()["query"].format_help()


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("mmrag ")


def test_deploy_and_worker_help_say_the_convention() -> None:
    for name in ("deploy", "worker"):
        text = " ".join(_commands()[name].format_help().split())
        assert "work pool" in text and "registers nothing" in text, name


def test_snapshots_of_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    typo = str(tmp_path / "typo")
    for argv in (["snapshots", "list"], ["snapshots", "verify"], ["snapshots", "show"]):
        assert main([*argv, "--store", typo]) == 2, argv
        err = capsys.readouterr()
        assert f"store {typo} does not exist" in err.err and "None" not in err.out, argv


def test_snapshots_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["snapshots", "list", "--json", "--store", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["snapshots", "verify", "--store", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "None: FAILED" not in out.out and "no snapshot published" in out.err


def test_a_lost_latest_names_the_newest_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for sid in ("20260101T000000000000Z", "20260102T000000000000Z"):
        (tmp_path / "snapshots" / sid).mkdir(parents=True)
        (tmp_path / "snapshots" / sid / "manifest.json").write_text("{}")
    assert main(["snapshots", "show", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "LATEST is missing" in err and "--snapshot 20260102T000000000000Z" in err
    assert "run `mmrag index` first" not in err.split(",")[0]


def test_serve_warns_of_a_missing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    import httpx
    import uvicorn

    from mmrag_core.config import Settings
    from mmrag_core.service import create_app
    from tests.live_server import live_server

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    typo = tmp_path / "typo"
    assert main(["serve", "--store", str(typo)]) == 0
    assert f"WARNING: store {typo} does not exist" in capsys.readouterr().err
    with live_server(create_app(Settings(store=str(typo), service_poll_seconds=0))) as url:
        health = httpx.get(url + "/healthz")
    assert health.status_code == 503 and health.json()["detail"] == f"store {typo} does not exist"


def test_models_fetch_without_network_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there: as with no network
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "models", "fetch", "--to", str(tmp_path / "m")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "cannot reach the model hub 127.0.0.1:9" in proc.stderr
    assert not (tmp_path / "m").exists()
    text = _commands()["models"].format_help()
    assert "fetch" in text and "mmrag models fetch --to" in text


def test_hub_mode_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrag_core.models import hub

    monkeypatch.setattr(hub, "_decided", [])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: pytest.fail("no probe when the env decides"))
    assert hub.settle_hub_mode() is True
    monkeypatch.setattr(hub, "_decided", [])
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: False)
    assert hub.settle_hub_mode() is True and os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: pytest.fail("probed once per process"))
    assert hub.settle_hub_mode() is True


def test_library_noise_is_filtered(caplog: pytest.LogCaptureFixture) -> None:
    from tasks.worker_logs import quiet_library_logs

    quiet_library_logs()
    import bm25s  # noqa: F401 - sets its logger to DEBUG on import; the filter still drops its DEBUG lines

    with caplog.at_level(logging.DEBUG):
        logging.getLogger("bm25s").debug("Building index from IDs")
        logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        logging.getLogger("bm25s").warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]


def test_plain_progress_lines_are_few(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from flows.cli import index

    monkeypatch.setattr(index, "_plain_last", [-1.0, float("-inf")])
    for step in range(10):  # a large document's pages, within one document and a few seconds
        index.progress_bar(step / 10, 2, 1.0, pages=step)
    index.progress_bar(1.0, 2, 2.0, pages=12)
    index.progress_bar(2.0, 2, 3.0, pages=20)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "\x1b" not in "".join(lines)
    assert lines[-1].endswith("2/2 docs, 3 s, ETA 0m00s (20 pages)")


def test_bounded_results_ticks_while_waiting() -> None:
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tasks.backpressure import bounded_results

    ticks = []
    with ThreadPoolExecutor(2) as pool:
        out = list(bounded_results(lambda n, x: pool.submit(time.sleep, x), [0.35, 0.35], 2,
                                   tick=lambda: ticks.append(1), every=0.1))
    assert out == [None, None] and len(ticks) >= 2


def test_unsupported_files_are_skipped_not_failed() -> None:
    from tasks.artifacts import summary_markdown

    failures = [{"source_uri": "/c/notes.docx", "page": None, "stage": "discover",
                 "reason": "unsupported file type '.docx' (not in include patterns)"},
                {"source_uri": "/c/empty.pdf", "page": None, "stage": "discover", "reason": "empty file (0 bytes)"}]
    manifest = {"id": "S", "parent": None, "source": "/c", "failures": failures, "models": {}, "spaces": {},
                "counts": {"documents": 1, "documents_failed": 1, "items": 1, "items_by_kind": {"chunk": 1}},
                "stats": {"changes": {"added": 3}}}
    md = summary_markdown({"published": True, "manifest": manifest}, "/s")
    assert "| skipped (unsupported type) | 1 |" in md and "| discover | 1 |" in md
