"""The Ray executor's fault handling that needs no cluster: stale probe files, the auth message, the head watch."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from mnistbench.errors import ClusterLost
from mnistbench.run.ray import HeadWatch, SharedProbe, _host, connect_error


def test_the_next_run_removes_probes_left_by_drivers_that_are_gone(tmp_path):
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    old = tmp_path / ".ray-probe-0123456789abcdef"  # an older version's name, from a driver killed by Ray
    gone = tmp_path / f".ray-probe-{_host()}-{dead}-aa"
    live = tmp_path / f".ray-probe-{_host()}-{os.getpid()}-bb"  # a driver still running into this folder
    elsewhere = tmp_path / ".ray-probe-other.host-1-cc"
    stale_elsewhere = tmp_path / ".ray-probe-other.host-2-dd"
    for path in (old, gone, live, elsewhere, stale_elsewhere):
        path.write_text("x")
    week_ago = time.time() - 8 * 86400
    os.utime(stale_elsewhere, (week_ago, week_ago))
    SharedProbe.remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name])
    probe = SharedProbe.create(tmp_path)
    assert probe.sees() and Path(probe.path).name.startswith(f".ray-probe-{_host()}-{os.getpid()}-")
    SharedProbe.remove_stale(tmp_path)
    assert probe.sees()  # this driver's own probe stays
    probe.remove()


def test_a_refused_auth_token_is_named_not_called_unreachable(monkeypatch):
    said = "[W] ... Failed to connect to GCS: InvalidAuthToken: invalid or missing authentication token\n" * 20
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    line = connect_error("10.0.0.1:6379", ConnectionError("Could not find any running Ray instance"), said)
    assert line == ("Ray at 10.0.0.1:6379 refused this driver's authentication (InvalidAuthToken): the cluster wants a token: "
                    "set RAY_AUTH_MODE=token and give this driver the cluster's token (docs/scale-out.md)")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "this driver's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) is not the cluster's" in connect_error("h:1", ConnectionError("x"), said)
    assert connect_error("h:1", ConnectionError("timed out\nmore"), "") == "cannot start or reach Ray at h:1: timed out"


def test_the_head_watch_says_the_head_is_lost_only_when_its_port_stops_answering():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        watch = HeadWatch(server.getsockname())
        watch.check(force=True)  # answers: nothing raised
        assert watch.failures == 0
        address = server.getsockname()
    watch = HeadWatch(address)
    with pytest.raises(ClusterLost, match=rf"lost the Ray cluster: its head at 127.0.0.1:{address[1]} stopped answering"):
        watch.check(force=True)
    HeadWatch(None).check(force=True)  # a Ray Client driver: not watched here
    # A head this host cannot dial at the start (another interface, a proxy) is left to Ray: never called lost by mistake.
    assert HeadWatch.of(None, f"127.0.0.1:{address[1]}").address is None
