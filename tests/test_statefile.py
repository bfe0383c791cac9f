"""Where a run's state file goes: private, fresh per run, locked while in use,
never replacing anything it should not."""

import fcntl
import os
import stat
import threading

import pytest

from emu import statefile
from emu.machine import MachineError
from emu.statefile import claim, last_run, record_last_run, state_dir


@pytest.fixture
def sdir(tmp_path, monkeypatch):
    d = tmp_path / "states"
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(d))
    return d


def _state_file(path, magic=statefile.MAGIC):
    path.write_bytes(magic + b"\0" * 100)
    return path


def test_default_is_private_fresh_and_locked(sdir):
    sf = claim(None)
    st_dir, st = os.stat(sdir), os.stat(sf.path)
    assert stat.S_IMODE(st_dir.st_mode) == 0o700 and stat.S_IMODE(st.st_mode) == 0o600
    assert sf.path.parent == sdir and sf.path.name == f"run-{os.getpid()}.state"
    fd = os.open(sf.path, os.O_RDONLY)
    with pytest.raises(BlockingIOError):  # held for the run
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    sf2 = claim(None)  # a second run of this pid: another name, the first untouched
    assert sf2.path != sf.path and sf.path.exists()
    sf.close()
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the run
    os.close(fd)
    sf2.close()


def test_prune_keeps_live_and_last_runs(sdir):
    live, old, last = claim(None), claim(None), claim(None)
    old.close()
    last.close()
    record_last_run(last.path)
    assert last_run() == last.path
    new = claim(None)
    assert live.path.exists() and last.path.exists() and new.path.exists() and not old.path.exists()
    live.close()
    new.close()


def test_state_dir_must_be_private(tmp_path, monkeypatch):
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(d))
    with pytest.raises(MachineError, match="not a private directory of yours"):
        state_dir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(link))
    with pytest.raises(MachineError, match="symbolic link"):
        state_dir()


def test_explicit_path_rules(tmp_path, sdir):
    new = claim(tmp_path / "a.state")
    assert stat.S_IMODE(os.stat(new.path).st_mode) == 0o600
    os.pwrite(new.fd, statefile.MAGIC, 0)  # as booting the machine does
    old = _state_file(tmp_path / "old.state")
    with pytest.raises(MachineError, match="exists; pass --overwrite"):
        claim(old)
    with pytest.raises(MachineError, match="state file of a live run"):
        claim(new.path, overwrite=True)
    new.close()
    replaced = claim(new.path, overwrite=True)  # no run holds it now
    assert replaced.path.exists()
    replaced.close()
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(MachineError, match="not a ksm-emu state file"):
        claim(notes, overwrite=True)
    assert notes.read_text() == "keep me"
    with pytest.raises(MachineError, match="names a directory"):
        claim(str(tmp_path / "dir") + "/")
    assert not (tmp_path / "dir").exists()
    with pytest.raises(MachineError, match="is a directory"):
        claim(tmp_path, overwrite=True)


def test_special_files_refused_without_blocking(tmp_path, sdir):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(_state_file(tmp_path / "target.state"))
    result = {}

    def go():
        for p in (fifo, link, "/dev/null"):
            try:
                claim(p, overwrite=True)
            except MachineError as e:
                result[str(p)] = str(e)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "claim blocked on a special file"
    assert "is a FIFO" in result[str(fifo)] and "is a symbolic link" in result[str(link)]
    assert "character device" in result["/dev/null"]
    assert (tmp_path / "target.state").read_bytes().startswith(statefile.MAGIC)


def test_last_run_missing(sdir):
    with pytest.raises(MachineError, match="no run recorded"):
        last_run()
