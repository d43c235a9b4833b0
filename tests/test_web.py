"""The HTTP side (issue 16 #4): /metrics parsed with prometheus-client's parser, /healthz against a
FakeClock, the token on the dashboard's actions, the read-only server over a state database, and
the ``perpwatch[http]`` extra named when missing.

Every server here is real (uvicorn on 127.0.0.1, a free port) and runs in the same event loop as
the runner, as ``run --http`` does; the cycles are driven by the pipeline's FakeClock.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fakes.pipeline import T0, Pipeline

from perpwatch.live.risk import HALT_FLAG
from perpwatch.live.telemetry import DURATION_BUCKETS, Telemetry

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
parser = pytest.importorskip("prometheus_client.parser")

from perpwatch.web import server  # noqa: E402
from perpwatch.web.backend import Backend  # noqa: E402

TOKEN = "t0ken-for-the-dashboard-0123456789"
H_S = 3600.0

WATCH = """
version: 1
name: watch
interval: 1h
rules:
  - name: hot
    when: funding.close > 0.05
    severity: high
    message: "{symbol} funding {funding.close:.3f}"
  - name: warm
    when: funding.close > 0.02
    for: 3
    severity: low
  - name: buy
    when: funding.close > 0.05
    signal: {side: long, size_usd: 1000}
execute: paper
"""

#: BTC: hot from bar 3 on; ETH: warm (pending) from bar 4 on, never hot.
FUNDING = {"BTC": [0.01, 0.01, 0.01, 0.1, 0.1, 0.1], "ETH": [0.01, 0.01, 0.01, 0.01, 0.03, 0.03]}


def run_cycles(tmp_path, bars: int = 6, before=None) -> tuple[Pipeline, Any]:
    pipe = Pipeline(tmp_path, FUNDING)
    strategy = pipe.strategy(WATCH)
    runner = pipe.runner([strategy], pipe.config(("a",)))
    pipe.cycles(runner, range(bars), before)
    return pipe, runner


def backend_of(pipe: Pipeline, runner: Any, **kw: Any) -> Backend:
    return Backend(
        pipe.store,
        pipe.clock,
        token=kw.pop("token", TOKEN),
        telemetry=runner.telemetry,
        executors=runner.executors,
        strategies=[(job.strategy, job.symbols) for job in runner.jobs],
        **kw,
    )


@asynccontextmanager
async def serving(backend: Backend):
    http = server.make_server(backend, "127.0.0.1", 0)
    task = await server.start(http)
    host, port = server.bound(http)
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", follow_redirects=False) as client:
            yield client
    finally:
        await server.stop(http, task)


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def samples(family: Any, suffix: str = "") -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == family.name + suffix
    }


def test_metrics_in_the_prometheus_text_format(tmp_path):
    outage = {4}

    def before(n: int) -> None:
        pipe.down = n in outage  # the source fails for the cycle of bar 4

    pipe = Pipeline(tmp_path, FUNDING)
    runner = pipe.runner([pipe.strategy(WATCH)], pipe.config(("a",)))
    pipe.cycles(runner, range(6), before)
    backend = backend_of(pipe, runner)

    async def main() -> tuple[str, str]:
        async with serving(backend) as client:
            got = await client.get("/metrics")
            assert got.status_code == 200
            assert got.headers["content-type"].startswith("text/plain")
            first = got.text
            await backend.halt("test")
            return first, (await client.get("/metrics")).text

    text, halted_text = asyncio.run(main())
    m = families(text)
    assert samples(m["perpwatch_cycles"], "_total") == {(): 6.0}
    assert samples(m["perpwatch_cycles_with_failures"], "_total") == {(): 1.0}
    hist = m["perpwatch_cycle_duration_seconds"]
    assert samples(hist, "_count") == {(): 6.0}
    buckets = samples(hist, "_bucket")
    assert len(buckets) == len(DURATION_BUCKETS) + 1 and buckets[(("le", "+Inf"),)] == 6.0
    assert samples(m["perpwatch_fetch_failures"], "_total") == {(("source", "scripted"),): 2.0}  # BTC, ETH
    events = samples(m["perpwatch_events"], "_total")
    stored = {(s, r, k): n for s, r, k, n in pipe.store.event_counts()[0]}
    assert events == {
        (("kind", k), ("rule", r), ("strategy", s)): float(n) for (s, r, k), n in stored.items()
    }
    assert events[(("kind", "fired"), ("rule", "hot"), ("strategy", "watch"))] == 1.0
    assert (("notifier", "a"),) in samples(m["perpwatch_notifier_failures"], "_total")
    assert (("notifier", "a"),) in samples(m["perpwatch_outbox_pending"])
    assert samples(m["perpwatch_last_cycle_timestamp_seconds"]) == {(): pipe.clock.now}
    good = samples(m["perpwatch_last_successful_cycle_timestamp_seconds"])[()]
    assert good == pipe.clock.now  # the last cycle (bar 5) had no fetch failure
    assert samples(m["perpwatch_open_positions"]) == {(("strategy", "watch"),): 1.0}  # BTC long
    assert (("strategy", "watch"),) in samples(m["perpwatch_pnl_usd"])
    assert samples(m["perpwatch_trading_halted"]) == {(): 0.0}
    assert samples(m["perpwatch_healthy"]) == {(): 1.0}
    firing = samples(m["perpwatch_rule_firing"])
    assert firing[(("rule", "hot"), ("strategy", "watch"), ("symbol", "BTC"))] == 1.0
    assert firing[(("rule", "hot"), ("strategy", "watch"), ("symbol", "ETH"))] == 0.0
    assert samples(m["perpwatch_rules"])[(("status", "pending"),)] == 2.0  # warm (for: 3) on BTC and ETH
    assert samples(families(halted_text)["perpwatch_trading_halted"]) == {(): 1.0}


def test_notifier_failures_and_outbox_depth_are_counted(tmp_path):
    pipe = Pipeline(tmp_path, FUNDING)
    runner = pipe.runner([pipe.strategy(WATCH)], pipe.config(("a",)))
    pipe.failing = {"a"}
    pipe.cycles(runner, range(6))
    backend = backend_of(pipe, runner)
    pipe.clock.now += 90

    async def main() -> str:
        async with serving(backend) as client:
            return (await client.get("/metrics")).text

    m = families(asyncio.run(main()))
    failures = samples(m["perpwatch_notifier_failures"], "_total")[(("notifier", "a"),)]
    pending = samples(m["perpwatch_outbox_pending"])[(("notifier", "a"),)]
    assert failures >= 1 and pending >= 1
    assert samples(m["perpwatch_outbox_oldest_age_seconds"])[(("notifier", "a"),)] >= 90


def test_healthz_follows_the_newest_cycle_on_the_fake_clock(tmp_path):
    pipe, runner = run_cycles(tmp_path)
    backend = backend_of(pipe, runner, health_grace=120)
    last = pipe.clock.now

    async def main() -> list[tuple[int, dict]]:
        out = []
        async with serving(backend) as client:
            for offset in (0, 2 * H_S + 120, 2 * H_S + 121):
                pipe.clock.now = last + offset
                got = await client.get("/healthz")
                out.append((got.status_code, got.json()))
        return out

    (ok, body), (edge, _), (stale, stale_body) = asyncio.run(main())
    assert (ok, edge, stale) == (200, 200, 503)
    assert (
        body["status"] == "ok" and body["last_cycle"] == last and body["stale_after_seconds"] == 2 * H_S + 120
    )
    assert stale_body["status"] == "stale" and stale_body["age_seconds"] == 2 * H_S + 121


def test_healthz_before_the_first_cycle_counts_from_the_start():
    t = Telemetry()
    t.start(1000.0, [3_600_000, 14_400_000])
    assert t.interval_seconds == 3600
    assert t.health(1000.0 + 7200 + 60, 60)[0] is True
    assert t.health(1000.0 + 7200 + 61, 60)[0] is False
    assert Telemetry().health(1000.0, 60)[0] is False  # nothing started: never healthy


def test_actions_need_the_token(tmp_path):
    pipe, runner = run_cycles(tmp_path)
    backend = backend_of(pipe, runner)
    form = {"content-type": "application/x-www-form-urlencoded"}

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with serving(backend) as client:
            out["none"] = (await client.post("/halt", content="reason=x", headers=form)).status_code
            out["wrong"] = (
                await client.post("/halt", content="reason=x&token=wrong", headers=form)
            ).status_code
            out["get"] = (await client.get("/halt", params={"token": TOKEN})).status_code
            out["flag_after_refusals"] = pipe.store.get_flag(HALT_FLAG)
            ok = await client.post(
                "/halt", content="reason=by+test", headers={**form, "X-Perpwatch-Token": TOKEN}
            )
            out["ok"] = (ok.status_code, ok.headers.get("location"))
            out["flag"] = pipe.store.get_flag(HALT_FLAG)
            resumed = await client.post("/resume", headers={"Authorization": f"Bearer {TOKEN}"})
            out["resume"] = resumed.status_code
            out["flag_after_resume"] = pipe.store.get_flag(HALT_FLAG)
            bad = await client.post("/mute", content=f"target=nope&for=1h&token={TOKEN}", headers=form)
            out["bad_target"] = (bad.status_code, bad.text)
            bad_for = await client.post(
                "/mute", content=f"target=watch&for=forever&token={TOKEN}", headers=form
            )
            out["bad_for"] = bad_for.status_code
            muted = await client.post(
                "/mute", content=f"target=watch/hot&symbol=btc&for=2h&token={TOKEN}", headers=form
            )
            out["mute"] = muted.status_code
            out["big"] = (
                await client.post("/halt", content="reason=" + "x" * 20_000, headers=form)
            ).status_code
        return out

    out = asyncio.run(main())
    assert out["none"] == 403 and out["wrong"] == 403 and out["get"] == 405
    assert out["flag_after_refusals"] is None
    assert out["ok"] == (303, "/?done=halted")
    assert out["flag"] is not None and out["flag"].endswith(": by test")
    assert out["resume"] == 303 and out["flag_after_resume"] is None
    assert out["bad_target"][0] == 400 and "watch/hot" in out["bad_target"][1]
    assert out["bad_for"] == 400
    assert out["mute"] == 303
    [mute] = pipe.store.mutes(pipe.clock.now)
    assert (mute.target, mute.symbol, mute.until) == ("watch/hot", "BTC", pipe.clock.now + 7200)
    assert out["big"] == 413


def test_no_token_configured_refuses_every_action(tmp_path):
    pipe, runner = run_cycles(tmp_path, bars=2)
    backend = backend_of(pipe, runner, token=None)

    async def main() -> tuple[int, str]:
        async with serving(backend) as client:
            got = await client.post("/halt", headers={"X-Perpwatch-Token": ""})
            return got.status_code, got.text

    status, text = asyncio.run(main())
    assert status == 403 and "no http.token is configured" in text
    assert pipe.store.get_flag(HALT_FLAG) is None


def test_serve_reads_the_snapshot_and_is_read_only(tmp_path):
    pipe, runner = run_cycles(tmp_path)
    live_text = asyncio.run(_get(backend_of(pipe, runner), "/metrics"))
    from perpwatch.live.state import StateStore

    store = StateStore(str(tmp_path / "state.db"))
    try:
        backend = Backend(store, pipe.clock, token=TOKEN, read_only=True)

        async def main() -> tuple[str, int, str]:
            async with serving(backend) as client:
                metrics = (await client.get("/metrics")).text
                refused = await client.post("/halt", headers={"X-Perpwatch-Token": TOKEN})
                page = (await client.get("/")).text
                return metrics, refused.status_code, page

        text, refused, page = asyncio.run(main())
    finally:
        store.close()
    served, live = families(text), families(live_text)
    for name in ("perpwatch_cycles", "perpwatch_fetch_failures", "perpwatch_events", "perpwatch_rule_firing"):
        assert served[name].samples == live[name].samples
    assert samples(served["perpwatch_cycle_duration_seconds"], "_count") == {(): 6.0}
    assert refused == 403 and pipe.store.get_flag(HALT_FLAG) is None
    assert 'id="halt-form"' not in page and "read-only" in page


async def _get(backend: Backend, path: str) -> str:
    async with serving(backend) as client:
        return (await client.get(path)).text


def test_dashboard_filters_and_bad_queries(tmp_path):
    pipe, runner = run_cycles(tmp_path)
    backend = backend_of(pipe, runner)

    async def main() -> tuple[str, str, int]:
        async with serving(backend) as client:
            all_events = (await client.get("/")).text
            only_eth = (await client.get("/", params={"symbol": "ETH", "kind": "fired"})).text
            bad = await client.get("/", params={"limit": "lots"})
            return all_events, only_eth, bad.status_code

    all_events, only_eth, bad = asyncio.run(main())
    assert "BTC funding 0.100" in all_events
    assert "BTC funding" not in only_eth.split('id="events"')[1]
    assert bad == 400


def test_missing_http_extra_is_named(monkeypatch):
    from perpwatch.common.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(MissingExtra) as e:
        server.require_http("perpwatch run --http")
    assert "pip install 'perpwatch[http]'" in str(e.value) and "uvicorn" in str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9000", ("127.0.0.1", 9000)), ("9000", ("127.0.0.1", 9000)),
     ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9464", ("::1", 9464))],
)  # fmt: skip
def test_listen_addresses(text, expected):
    assert server.parse_listen(text) == expected


@pytest.mark.parametrize(("text", "says"), [("127.0.0.1:http", "port"), ("host.example:80", "IP address"),
                                             ("127.0.0.1:70000", "port")])  # fmt: skip
def test_bad_listen_addresses(text, says):
    from perpwatch.common.errors import LocatedError

    with pytest.raises(LocatedError) as e:
        server.parse_listen(text)
    assert says in str(e.value) and text in str(e.value)


def test_telemetry_snapshot_round_trips(tmp_path):
    pipe, runner = run_cycles(tmp_path, bars=3)
    loaded = Telemetry.load(pipe.store)
    assert loaded is not None and loaded.to_json() == runner.telemetry.to_json()
    assert loaded.rules["watch/hot/BTC"]["values"] == {"funding.close": 0.01}
    assert loaded.series["watch/BTC"]["times"][-1] == T0 + 2 * 3_600_000


# ------------------------------------------------------------------------------------------------
# The commands: run --http (a simulation serving while it runs) and serve (a subprocess)

REPLAYED = """\
version: 1
name: replayed
interval: 1h
symbols: [BTC]
rules:
  - name: up
    when: price.close > 0
notify: [file]
"""


def replay_setup(tmp_path, http_block: str = "") -> None:
    data = tmp_path / "data"
    data.mkdir()
    t0 = 1_735_689_600_000  # 2025-01-01T00:00Z
    (data / "BTC_1h.csv").write_text(
        "time,price.close\n" + "".join(f"{t0 + i * 3_600_000},{100 + i}\n" for i in range(30))
    )
    (tmp_path / "s.yaml").write_text(REPLAYED)
    (tmp_path / "perpwatch.yaml").write_text(
        f"sources:\n  replay: {{path: '{data}'}}\nnotifiers:\n  file: {{plugin: jsonl, path: events.jsonl}}\n"
        + http_block
    )


def test_run_http_serves_while_the_run_lasts(tmp_path):
    from helpers import run_perpwatch

    replay_setup(tmp_path)
    result = run_perpwatch(
        "run", "s.yaml", "--state", "state.db", "--simulate-from", "2025-01-01T10:00:00Z",
        "--simulate-to", "2025-01-01T20:00:00Z", "--http", "127.0.0.1:0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "serving /metrics, /healthz and the dashboard on http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_http_bad_address_is_bad_input(tmp_path):
    from helpers import run_perpwatch

    replay_setup(tmp_path)
    result = run_perpwatch("run", "s.yaml", "--once", "--http", "localhost:http", cwd=tmp_path)
    assert result.returncode == 2
    assert "--http: error: 'localhost:http': the port must be a number" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_command_over_a_simulated_database(tmp_path):
    import os
    import queue
    import signal
    import subprocess
    import threading

    from helpers import perpwatch_command, run_perpwatch

    replay_setup(tmp_path, "http:\n  token: ${PW_TOKEN}\n")
    simulated = run_perpwatch(
        "run", "s.yaml", "--state", "state.db", "--simulate-from", "2025-01-01T10:00:00Z",
        "--simulate-to", "2025-01-01T20:00:00Z", cwd=tmp_path, env={"PW_TOKEN": TOKEN},
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    proc = subprocess.Popen(
        [*perpwatch_command(), "serve", "--state", "state.db", "--http", "127.0.0.1:0"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ, "PW_TOKEN": TOKEN},
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    # A thread reads the lines: select() on the pipe would wait for more bytes while the line
    # looked for already sits in the reader's buffer.
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in iter(proc.stderr.readline, "")], daemon=True
    )
    reader.start()
    try:
        url, seen = None, []
        while url is None:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                break
            seen.append(line)
            if line.startswith("perpwatch serve: state.db on http://"):
                url = line.split(" on ")[1].split()[0].rstrip("/")
        assert url is not None, "".join(seen)
        with httpx.Client(base_url=url) as client:
            health = client.get("/healthz")
            m = families(client.get("/metrics").text)
            refused = client.post("/halt", headers={"X-Perpwatch-Token": TOKEN})
            page = client.get("/")
        assert health.status_code == 503 and health.json()["status"] == "stale"  # simulated time is long past
        assert samples(m["perpwatch_cycles"], "_total")[()] >= 10
        assert refused.status_code == 403 and "read-only" in refused.text
        assert page.status_code == 200 and "replayed" in page.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=60)
    err = "".join(lines.get() for _ in range(lines.qsize()))
    assert TOKEN not in "".join(seen) + err
    assert "Traceback" not in err


def test_serve_without_a_database_is_bad_input(tmp_path):
    from helpers import run_perpwatch

    result = run_perpwatch("serve", "--state", "missing.db", cwd=tmp_path)
    assert result.returncode == 2 and "no state database at missing.db" in result.stderr


def test_served_in_the_runners_loop_between_cycles_and_actions_wait_for_the_cycle(tmp_path):
    """As ``run --http`` does: the server and the cycles share one event loop; /metrics follows
    each cycle, and a halt waits while the runner holds its database lock (a cycle's transaction)."""
    pipe = Pipeline(tmp_path, FUNDING)
    runner = pipe.runner([pipe.strategy(WATCH)], pipe.config(("a",)))
    backend = backend_of(pipe, runner, lock=runner.db_lock)

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {"cycles": []}
        async with serving(backend) as client:
            for n in range(6):
                pipe.clock.now = (T0 + (n + 1) * 3_600_000) / 1000
                await runner.run_cycle(pipe.clock.now)
                m = families((await client.get("/metrics")).text)
                out["cycles"].append(samples(m["perpwatch_cycles"], "_total")[()])
                counted = samples(m["perpwatch_events"], "_total")  # added up scrape after scrape
                stored = {
                    (("kind", k), ("rule", r), ("strategy", s)): float(n)
                    for s, r, k, n in pipe.store.event_counts()[0]
                }
                out.setdefault("events", []).append((counted == stored, len(stored)))
            async with runner.db_lock:  # a cycle writing
                halt = asyncio.create_task(client.post("/halt", headers={"X-Perpwatch-Token": TOKEN}))
                for _ in range(3000):  # until the request reached the server and waits for the lock
                    if runner.db_lock._waiters:
                        break
                    await asyncio.sleep(0.01)
                out["waited"] = bool(runner.db_lock._waiters)
                out["during"] = pipe.store.get_flag(HALT_FLAG)
            out["status"] = (await halt).status_code
            out["after"] = pipe.store.get_flag(HALT_FLAG)
        await runner.aclose()
        return out

    out = asyncio.run(main())
    assert out["cycles"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert all(same for same, _ in out["events"]) and out["events"][-1][1] > out["events"][0][1]
    assert out["waited"] and out["during"] is None
    assert out["status"] == 303 and out["after"] is not None


def test_silences_are_listed_and_a_wrong_token_is_never_echoed(tmp_path):
    from perpwatch.live.alertstate import AlertState

    pipe, runner = run_cycles(tmp_path, bars=2)
    AlertState(pipe.store).add_silence(
        {"strategy": ["watch"], "severity": ["low"]}, pipe.clock.now + 3600, "ana", "maintenance"
    )
    pipe.store.mute("watch/hot", "ETH", pipe.clock.now + 600)
    backend = backend_of(pipe, runner)
    wrong = "not-the-token-but-a-guess-0123"

    async def main() -> tuple[str, str]:
        async with serving(backend) as client:
            page = (await client.get("/")).text
            refused = await client.post("/halt", headers={"X-Perpwatch-Token": wrong})
            return page, refused.text

    page, refused = asyncio.run(main())
    mutes = page.split('id="mutes"')[1].split("</table>")[0]
    assert "watch/hot" in mutes and "ETH" in mutes
    assert "strategy=watch severity=low" in mutes and "ana" in mutes and "maintenance" in mutes
    assert wrong not in refused and TOKEN not in refused and TOKEN not in page


def test_a_loopback_server_refuses_other_host_names(tmp_path):
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 cannot read the dashboard."""
    pipe, runner = run_cycles(tmp_path, bars=1)
    backend = backend_of(pipe, runner)

    async def main() -> list[int]:
        async with serving(backend) as client:
            return [
                (await client.get("/healthz", headers={"Host": host})).status_code
                for host in ("evil.example", "evil.example:9464", "localhost:9464", "127.0.0.1")
            ]

    assert asyncio.run(main()) == [400, 400, 200, 200]


@pytest.mark.parametrize(
    "command", [["run", "s.yaml", "--once", "--http", "127.0.0.1:0"], ["serve", "--state", "x.db"]]
)
def test_commands_name_the_http_extra_when_it_is_missing(tmp_path, command):
    import subprocess

    replay_setup(tmp_path)
    code = "import sys; sys.modules['uvicorn'] = None; from perpwatch.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *command], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith("needs uvicorn: pip install 'perpwatch[http]'"), done.stderr


def test_run_serves_at_the_configs_listen_and_never_logs_the_token(tmp_path):
    from helpers import run_perpwatch

    replay_setup(tmp_path, "http:\n  listen: 127.0.0.1:0\n  token: ${PW_TOKEN}\n")
    result = run_perpwatch(
        "--log-level", "debug", "run", "s.yaml", "--state", "state.db", "--simulate-from",
        "2025-01-01T10:00:00Z", "--simulate-to", "2025-01-01T12:00:00Z", cwd=tmp_path, env={"PW_TOKEN": TOKEN},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "serving /metrics, /healthz and the dashboard on http://127.0.0.1:" in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_a_token_written_in_the_config_is_a_secret(tmp_path):
    from perpwatch.live.config import load_config

    (tmp_path / "perpwatch.yaml").write_text(f"http:\n  token: {TOKEN}\n  health_grace: 30\n")
    cfg = load_config(str(tmp_path / "perpwatch.yaml"))
    assert TOKEN in cfg.secrets and cfg.redact(f"x {TOKEN} y") == "x *** y"
    assert cfg.http == {"token": TOKEN, "health_grace": 30}


def test_bad_http_settings_are_located_errors(tmp_path):
    from perpwatch.common.errors import ErrorList
    from perpwatch.live.config import load_config

    (tmp_path / "perpwatch.yaml").write_text("http:\n  health_grace: -5\n  listen_on: 1\n")
    with pytest.raises(ErrorList) as e:
        load_config(str(tmp_path / "perpwatch.yaml"))
    text = "\n".join(err.format() for err in e.value.errors)
    assert "perpwatch.yaml:2:17" in text and "listen_on" in text


def test_an_executor_that_fails_leaves_positions_unknown_not_the_page_broken(tmp_path):
    pipe, runner = run_cycles(tmp_path, bars=5)
    [paper] = runner.executors.values()

    async def broken() -> list:
        raise RuntimeError("database is locked")

    paper.positions = broken  # type: ignore[method-assign]
    backend = backend_of(pipe, runner)

    async def main() -> tuple[int, str, str, int]:
        async with serving(backend) as client:
            page = await client.get("/")
            metrics = await client.get("/metrics")
            return page.status_code, page.text, metrics.text, metrics.status_code

    status, page, text, metrics_status = asyncio.run(main())
    assert status == 200 and metrics_status == 200
    assert "positions unknown (the executor failed to say): paper" in page
    m = families(text)
    assert samples(m["perpwatch_pnl_usd"]) == {}  # unknown: left out, never 0
    assert samples(m["perpwatch_open_positions"]) == {}  # unknown, not 0
