"""The video recorder on a fake tab 1 (no browser): which frames it writes, and when it stops."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.video import CanvasRecorder

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


def jpeg(shade: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, 255 - shade, 90)).save(buffer, format="JPEG", quality=95)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class FakeTab:
    """Answers the recorder's page calls like webapp/bridge.js: frames queued by `play`."""

    def __init__(self) -> None:
        self.on = False
        self.frames: list[list[Any]] = []
        self.calls: list[str] = []
        self.shade = 0
        self.fail_next = False

    def play(self, steps: int, end: bool = False) -> None:
        for i in range(steps):
            if self.on:
                self.shade = (self.shade + 7) % 256
                self.frames.append([jpeg(self.shade), end and i == steps - 1])

    def evaluate(self, script: str) -> Any:
        self.calls.append(script)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("tab 1 has no page right now")
        taken, self.frames = self.frames, []
        if script.startswith("window.lunarfleet.startRecording"):
            self.on, self.frames = True, []
            return True
        if script.startswith("window.lunarfleet.stopRecording"):
            self.on = False
            return taken
        return [self.on, taken]


class FakeFleet:
    def __init__(self, tab: FakeTab) -> None:
        self.pool = self
        self.tab = tab

    def evaluate(self, index: int, script: str) -> str:
        assert index == 0
        return script

    def run(self, script: str, timeout: float) -> Any:
        return self.tab.evaluate(script)


def _frames(path: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert meta["fps"] == 30.0
    return [np.frombuffer(f, dtype=np.uint8) for f in reader]


def _step(recorder: CanvasRecorder, done: bool = False) -> None:
    recorder.on_step(np.array([done, False]), [{}, {}])


def test_it_writes_every_frame_up_to_the_nth_episode_end_and_no_more(tmp_path: Path) -> None:
    tab, said = FakeTab(), []
    recorder = CanvasRecorder(FakeFleet(tab), tmp_path / "v.mp4", timescale=2.0, episodes=2, say=said.append)  # type: ignore[arg-type]
    recorder.start()
    tab.play(40, end=True)  # episode 1: 40 frames, its last one ends it
    _step(recorder, done=True)
    assert recorder.frames == 40 and recorder.episodes_done == 1
    tab.play(25, end=True)
    tab.play(10)  # the next episode's start, past the second end: not filmed
    _step(recorder, done=True)
    assert recorder.frames == 65 and recorder.episodes_done == 2 and not tab.on, "the page was told to stop"
    tab.play(30)
    _step(recorder)
    result = recorder.finish()
    assert result == {"path": str(tmp_path / "v.mp4"), "frames": 65, "seconds": round(65 / 30, 2), "fps": 30.0, "episodes": 2}
    assert len(_frames(tmp_path / "v.mp4")) == 65
    assert any(s.startswith(f"[Video] Wrote {tmp_path / 'v.mp4'}: 65 frames") for s in said)


def test_it_stops_when_the_policy_is_done_and_says_how_many_episodes_it_got(tmp_path: Path) -> None:
    tab, said = FakeTab(), []
    recorder = CanvasRecorder(FakeFleet(tab), tmp_path / "v.mp4", timescale=2.0, episodes=3, say=said.append)  # type: ignore[arg-type]
    recorder.start()
    tab.play(12, end=True)
    recorder.stop()  # evaluate's after_policy: random actions' episodes follow
    assert not tab.on
    tab.play(50)  # random actions: the page no longer records, and nothing is taken
    _step(recorder)
    assert recorder.finish()["frames"] == 12
    assert "1 episode(s) (the evaluation ended before tab 1 finished 3: raise --episodes)" in said[-1]


def test_a_replaced_tab_records_again_and_a_failed_grab_fails_nothing(tmp_path: Path) -> None:
    tab, said = FakeTab(), []
    recorder = CanvasRecorder(FakeFleet(tab), tmp_path / "v.mp4", timescale=4.0, episodes=1, say=said.append)  # type: ignore[arg-type]
    recorder.start()
    tab.play(10)
    tab.fail_next = True  # tab 1 is being replaced
    _step(recorder, done=True)
    assert any("could not take tab 1's frames" in s for s in said)
    tab.on = False  # its new page does not record
    _step(recorder, done=True)
    assert tab.on and any("tab 1 was replaced while recording" in s for s in said)
    tab.play(5, end=True)
    _step(recorder, done=True)
    result = recorder.finish()
    assert result["frames"] == 15, "the frames of the failed grab were taken at the next one"
    assert result["fps"] == 15.0, "timescale 4: a step is 1/15 s"
