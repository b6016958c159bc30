"""``infaas sim`` from the command line, on a real data directory (the digits zoo, profiled here) and
on a synthetic catalog: four contenders side by side, byte-identical JSON run to run, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infaas.cli import main


def write_inputs(tmp_path, task: str, app: str = "digits-fast"):
    apps = tmp_path / "apps.json"
    apps.write_text(json.dumps({"apps": [{"name": app, "task": task, "objective": {"latency_ms": 20}}]}))
    trace = tmp_path / "trace.csv"
    rows = [f"{i * 0.01:.6f},{app}" for i in range(1000)]  # 100 req/s for 10 s
    trace.write_text("t_s,app\n" + "\n".join(rows) + "\n")
    return apps, trace


def test_sim_on_the_digits_zoo_prints_four_contenders_and_repeats_byte_for_byte(tmp_path, digits_profiled_dir):
    apps, trace = write_inputs(tmp_path, "digits-classification")
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "infaas.cli",
                "sim",
                "--data-dir",
                str(digits_profiled_dir),
                "--trace",
                str(trace),
                "--apps",
                str(apps),
                "--fleet",
                "workers=2,cores=1",
                "--policy",
                "all",
                "--json",
                str(out),
                "--tail-s",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={"COLUMNS": "160", "PATH": ""},
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    for name in ("infaas", "infaas-original", "static-peak", "static-mean", "goodput", "wall clock"):
        assert name in proc.stdout
    result = json.loads(outs[0])
    assert [c["contender"] for c in result["contenders"]] == ["infaas", "infaas-original", "static-peak", "static-mean"]
    for c in result["contenders"]:
        assert c["requests"] == 1000 and c["served"] + sum(c["violations"].values()) >= 1000
        assert all(v.startswith("digits-") for v in c["apps"]["digits-fast"]["variants"])


def test_sim_on_a_synthetic_catalog_and_its_errors(tmp_path, capsys):
    apps, trace = write_inputs(tmp_path, "task1", "x")
    out = tmp_path / "out.json"
    main(
        [
            "sim",
            "--synthetic",
            "archs=4,variants=3,tasks=2",
            "--trace",
            str(trace),
            "--apps",
            str(apps),
            "--policy",
            "infaas",
            "--json",
            str(out),
            "--tail-s",
            "2",
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    for name in ("violations", "workers", "cost"):
        png = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (run,) = json.loads(out.read_text())["contenders"]
    series = run["series"]
    assert len(series["workers"]) == 12 and sum(series["requests"]) == 1000  # 10 s of trace + 2 s of tail
    assert series["workers"][0] == 2 and run["cost_vs_oracle"] > 1
    assert run["contender"] == "infaas" and all(
        v.startswith(("arch1.", "arch3.")) for v in run["apps"]["x"]["variants"]
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,app\n0.5,x\n0.7,y\n")
    with pytest.raises(SystemExit) as exc:
        main(["sim", "--synthetic", "archs=4,tasks=2", "--trace", str(bad), "--apps", str(apps)])
    assert exc.value.code == 2
    assert "bad.csv:3: app 'y' is not in the apps file" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(SystemExit):
        main(
            ["sim", "--synthetic", "archs=4,tasks=2", "--trace", str(trace), "--apps", str(apps), "--fleet", "cores=0"]
        )
    assert "--fleet: cores must be a whole number of at least 1" in " ".join(capsys.readouterr().err.split())


def test_sim_on_the_readme_catalog_with_a_cpu_and_a_gpu_pool(tmp_path, capsys):
    """The README's hand-written catalog, on a fleet of a CPU and a GPU pool (a short trace of ours)."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples" / "sim"
    trace = tmp_path / "minutes.csv"
    trace.write_text("minute,app,count\n0,moderation,600\n0,thumbnails,300\n")
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}.json"
        main(
            [
                "sim",
                "--catalog",
                str(examples / "catalog.csv"),
                "--minutes",
                str(trace),
                "--apps",
                str(examples / "catalog-apps.json"),
                "--fleet",
                "cpu:workers=2,cores=2,max=6;gpu:workers=1,max=2",
                "--json",
                str(out),
                "--tail-s",
                "5",
            ]
        )
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    printed = " ".join(capsys.readouterr().out.split())
    assert "cpu: 2 worker(s) of 2 core(s)" in printed and "gpu: 1 worker(s)" in printed
    ours = json.loads(outs[0])["contenders"][0]
    assert set(ours["pools"]) == {"cpu", "gpu"} and ours["pools"]["gpu"]["cost_usd"] > 0
    assert set(ours["apps"]["moderation"]["variants"]) == {"resnet50.fp16@gpu"}
    assert ours["violations"]["late"] + ours["violations"]["dropped"] < 30
