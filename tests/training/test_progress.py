"""Progress: plain periodic lines off a terminal, a redrawn bar on one."""

import io

from msmt_tf.training import progress


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_tty(capsys):
    clock = FakeClock()
    p = progress.Progress(total=10, initial=4, every=2, clock=clock)  # stderr, captured: not a TTY
    assert not p.tty
    for step in range(5, 11):
        clock.t += 0.5
        p.update(step, {"g_loss": 1.23456, "d_loss": 0.5})
    p.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert lines == [
        "step 6/10 (60.0%) 0.5 s/step ETA 2s g_loss=1.235 d_loss=0.5",
        "step 8/10 (80.0%) 0.5 s/step ETA 1s g_loss=1.235 d_loss=0.5",
        "step 10/10 (100.0%) 0.5 s/step ETA 0s g_loss=1.235 d_loss=0.5",
    ]


def test_bar_on_a_tty():
    clock = FakeClock()
    out = FakeTTY()
    p = progress.Progress(total=100, initial=0, stream=out, width=10, min_interval=1.0, clock=clock)
    assert p.tty
    clock.t += 2.0
    p.update(10, {"loss": 2.0})
    clock.t += 0.5
    p.update(11, {"loss": 1.0})  # too soon: not redrawn
    p.write("eval: fid 12.3")
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 2
    assert "step  10/100 [#.........]  10% 0.2 s/step ETA 18s loss 2" in text
    assert "loss 1" not in text
    assert text.endswith("eval: fid 12.3\n")


def test_format_duration():
    assert progress.format_duration(12.4) == "12s"
    assert progress.format_duration(460) == "7m40s"
    assert progress.format_duration(3720) == "1h02m"
    assert progress.format_duration(None) == "?"
    assert progress.format_duration(float("nan")) == "?"
