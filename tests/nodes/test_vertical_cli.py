"""``cipherseg vertical join`` refuses bad input before contacting any service: clear
messages, exit code 2, no output file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cipherseg.cli import app


def _invoke(tmp_path: Path, csv: str, *extra: str) -> tuple[int, str]:
    terms = {"protocol": "kmeans-vertical", "session": "v" * 32, "nodes": ["mall", "cafe"],
             "n_clusters": 3, "features": [["recency"], ["visits", "spend"]],
             "context": {"phone_region": "CN"}}
    (tmp_path / "terms.json").write_text(json.dumps(terms))
    (tmp_path / "data.csv").write_text(csv)
    (tmp_path / "t").write_text("x" * 32 + "\n")
    (tmp_path / "t").chmod(0o600)
    r = CliRunner().invoke(app, [
        "vertical", "join", "--terms", str(tmp_path / "terms.json"), "--node", "cafe",
        "--data", str(tmp_path / "data.csv"), "--manager", "http://127.0.0.1:9",
        "--manager-token-file", str(tmp_path / "t"), "--centre", "http://127.0.0.1:9",
        "--centre-token-file", str(tmp_path / "t"), "--out", str(tmp_path / "out.csv"),
        *extra])
    assert not (tmp_path / "out.csv").exists()
    flat = "".join(ch for ch in r.output if ch not in "│╭╮╰╯─")  # rich's error box
    return r.exit_code, " ".join(flat.split())


@pytest.mark.parametrize(("csv", "extra", "message"), [
    ("phone,visits\n13812345678,1\n", (), "no column(s) spend"),
    ("phone,visits,spend\n13812345678,1,x\n", (), "line 2: a column named in the terms is "
                                                  "not a number"),
    ("phone,visits,spend\n13812345678,1,nan\n", (), "not a finite number"),
    ("phone,visits,spend\n13812345678,1,2\n13812345678,3,4\n", (), "not unique"),
    ("phone,visits,spend\n13812345678,1,2\n+8613812345678,3,4\n", (),
     "same phone number"),
    ("phone,visits,spend\n12345,1,2\n", (), "line 2: not a valid phone number"),
    ("phone,visits,spend\n13812345678,-1,2\n", ("--log1p",), "--log1p needs values >= 0"),
])
def test_bad_data_is_refused_before_anything_is_sent(tmp_path: Path, csv: str,
                                                     extra: tuple[str, ...],
                                                     message: str) -> None:
    code, out = _invoke(tmp_path, csv, *extra)
    assert code == 2 and message in out, out


def test_a_node_not_in_the_terms_is_refused(tmp_path: Path) -> None:
    code, out = _invoke(tmp_path, "phone,visits,spend\n13812345678,1,2\n", "--node", "east")
    assert code == 2 and "not named in these terms" in out, out
