"""`azray status NAME --watch` in a real terminal: tmux runs it, capture-pane reads the screen, send-keys types Ctrl-C.

The API is the loopback stand-in of the unit tests; the test changes what it answers and checks that the one view on
the screen is redrawn in place (never a second copy scrolled below), and that Ctrl-C ends the watch with exit code 0.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit.test_cli_fake_api import FakeApi, Reply, cluster_view, event, node, serving

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREEN_TIMEOUT_S = 20.0
HEADER = "azray status demo ·"


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    with serving() as api:
        yield api


class Terminal:
    """One tmux session on a private server socket, so nothing else's tmux is touched."""

    def __init__(self, command: str) -> None:
        self.socket = f"azray-test-{uuid.uuid4().hex[:8]}"
        self.tmux("new-session", "-d", "-s", "watch", "-x", "160", "-y", "60", "-c", str(REPO_ROOT), command)

    def tmux(self, *arguments: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *arguments], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "watch")

    def wait_for(self, what: str, condition: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + SCREEN_TIMEOUT_S
        screen = self.screen()
        while not condition(screen):
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what}; it shows:\n{screen}")
            time.sleep(0.2)
            screen = self.screen()
        return screen

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)


@pytest.fixture
def terminal() -> Iterator[Callable[[str], Terminal]]:
    if shutil.which("tmux") is None:
        reason = "tmux is not installed (apt-get install -y tmux): the live view cannot be checked in a terminal"
        print(reason)
        pytest.skip(reason)
    opened: list[Terminal] = []

    def open_terminal(command: str) -> Terminal:
        opened.append(Terminal(command))
        return opened[-1]

    yield open_terminal
    for each in opened:
        each.close()


def view_with_workers(count: int) -> Reply:
    nodes = [node("h1", "head", "ray_running", is_head=True)]
    nodes += [node(f"worker-{index}", "cpu", "ray_running") for index in range(count)]
    events = [event("launch", f"launched worker-{index}", instance_id=f"worker-{index}") for index in range(count)]
    return Reply(200, cluster_view(nodes=nodes, events=events))


def test_status_watch_redraws_in_place_and_ctrl_c_exits_0(fake_api, terminal, tmp_path):
    fake_api.on("GET", "/clusters/demo", view_with_workers(1))
    command = (
        f"env XDG_CONFIG_HOME={tmp_path} {sys.executable} -m azray --url {fake_api.url} "
        "status demo --watch --interval 0.3; echo EXIT=$?; sleep 60"
    )
    screen = terminal(command)
    first = screen.wait_for("the first view", lambda text: "worker-0" in text)
    assert "worker-1" not in first

    fake_api.on("GET", "/clusters/demo", view_with_workers(2))
    second = screen.wait_for("the redrawn view", lambda text: "worker-1" in text)
    assert second.count(HEADER) == 1, f"the view was printed again instead of redrawn:\n{second}"
    assert second.count("Nodes by type and status") == 1

    screen.tmux("send-keys", "-t", "watch", "C-c")
    ended = screen.wait_for("the exit code", lambda text: "EXIT=" in text)
    assert "EXIT=0" in ended
    assert "Traceback" not in ended
