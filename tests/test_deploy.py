"""deploy/ (issue 16 #5): the systemd unit and the Dockerfile hold what a 24/7 service needs.

Docker cannot run here, so the Dockerfile is parsed (instructions, continuation lines) and its
HEALTHCHECK command is run for real against a local perpwatch server answering 200 and then 503;
the unit is parsed and, when ``systemd-analyze`` is installed, verified by it.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from perpwatch.api.registry import load_registry
from perpwatch.live.config import load_config

DEPLOY = ROOT / "deploy"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / "perpwatch.service").read_text())
    return parser


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_the_unit_runs_perpwatch_as_a_hardened_non_root_service():
    service = unit()["Service"]
    assert service["User"] not in ("", "root", "0") and service["Group"] == service["User"]
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["StateDirectory"] == "perpwatch"
    assert service["WorkingDirectory"] == "/var/lib/perpwatch"  # the state database's directory
    assert service["EnvironmentFile"].startswith("/etc/perpwatch/")
    exec_start = service["ExecStart"].split()
    assert exec_start[1] == "run" and exec_start[exec_start.index("--http") + 1] == "127.0.0.1:9464"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
    assert "StartLimitBurst" in unit()["Unit"]  # [Unit], where systemd reads it
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
    text = (DEPLOY / "perpwatch.service").read_text()
    assert "TOKEN=" not in text and "API_KEY=" not in text  # secrets only in the EnvironmentFile


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path):
    """Every directive known, in its section; the ExecStart binary swapped for one that exists."""
    text = (DEPLOY / "perpwatch.service").read_text()
    (tmp_path / "perpwatch.service").write_text(
        text.replace("/opt/perpwatch/venv/bin/perpwatch", "/bin/true")
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "perpwatch.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_the_dockerfile_is_slim_non_root_with_a_volume_and_a_healthcheck():
    steps = dockerfile()
    bases = [args for word, args in steps if word == "FROM"]
    assert bases and all(b.split()[0].startswith("python:") and b.split()[0].endswith("-slim") for b in bases)
    final = len(steps) - 1 - [w for w, _ in steps][::-1].index("FROM")
    last_stage = steps[final:]
    users = [args for word, args in last_stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    user_at = max(i for i, (w, _) in enumerate(last_stage) if w == "USER")
    assert all(w != "RUN" for w, _ in last_stage[user_at:])  # nothing runs as root after it
    volumes = [json.loads(args) for word, args in last_stage if word == "VOLUME"]
    assert ["/var/lib/perpwatch"] in volumes
    assert ("WORKDIR", "/var/lib/perpwatch") in last_stage  # the default state path lands on the volume
    assert ("EXPOSE", "9464") in last_stage
    [health] = [args for word, args in last_stage if word == "HEALTHCHECK"]
    assert "/healthz" in health and "--interval=" in health
    cmd = json.loads(next(args for word, args in last_stage if word == "CMD"))
    entry = json.loads(next(args for word, args in last_stage if word == "ENTRYPOINT"))
    assert entry == ["perpwatch"] and cmd[0] == "run" and cmd[cmd.index("--http") + 1] == "0.0.0.0:9464"
    assert cmd[-1].startswith("/opt/perpwatch/strategies/")
    assert any(w == "RUN" and "perpwatch[http]" in a for w, a in last_stage)


def test_the_image_default_config_loads():
    cfg = load_config(str(DEPLOY / "perpwatch.yaml"), load_registry())
    assert cfg.state == "perpwatch.db"
    assert (ROOT / "strategies" / "derivatives-monitor.yaml").exists()  # the image's default strategy
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for copied in (
        "pyproject.toml",
        "engine/",
        "plugins/",
        "schemas/",
        "strategies/",
        "deploy/perpwatch.yaml",
    ):
        assert f"!{copied}" in ignored


def test_the_healthcheck_command_follows_healthz(tmp_path: Path):
    """The HEALTHCHECK's own command, pointed at a local server: exit 0 on 200, 1 on 503."""
    pytest.importorskip("uvicorn")
    from fakes.pipeline import Pipeline

    from perpwatch.web import server
    from perpwatch.web.backend import Backend

    [health] = [args for word, args in dockerfile() if word == "HEALTHCHECK"]
    argv = json.loads(health.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    pipe = Pipeline(tmp_path, {"BTC": [0.01, 0.02]})
    runner = pipe.runner(
        [
            pipe.strategy(
                "version: 1\nname: w\ninterval: 1h\nrules:\n  - name: r\n    when: funding.close > 1\n"
            )
        ],
        pipe.config(),
    )
    pipe.cycles(runner, range(2))
    backend = Backend(pipe.store, pipe.clock, telemetry=runner.telemetry)

    async def main() -> list[int]:
        http = server.make_server(backend, "127.0.0.1", 0)
        task = await server.start(http)
        _, port = server.bound(http)
        script = argv[2].replace("127.0.0.1:9464", f"127.0.0.1:{port}")
        codes = []
        try:
            for offset in (0.0, 3 * 3600.0):
                pipe.clock.now += offset
                proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
                codes.append(await proc.wait())
        finally:
            await server.stop(http, task)
        return codes

    assert asyncio.run(main()) == [0, 1]
