"""Atomic writes: content, permissions, a failure mid-write, where the temporary file lives."""
import errno
import json
import os
import stat

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from retinanet.models.checkpoint import atomic_torch_save
from retinanet.util.io import atomic_write, write_bytes, write_figure_png, write_json, write_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    """Run the test under each of a few umasks; yield the one in force."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_text_content_and_permissions(tmp_path, umask):
    path = tmp_path / "notes.txt"
    write_text(path, "first\nsecond\n")
    assert path.read_text() == "first\nsecond\n"
    assert mode_of(path) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_replacing_a_file_gives_the_new_file_normal_permissions(tmp_path, umask):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    write_bytes(path, b"\x00\x01new")
    assert path.read_bytes() == b"\x00\x01new"
    assert mode_of(path) == 0o666 & ~umask


def test_checkpoints_are_readable_by_the_group(tmp_path, umask):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"model": {"weight": torch.arange(3.0)}}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["model"]["weight"], torch.arange(3.0))
    assert mode_of(path) == 0o666 & ~umask


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_the_previous_file_and_no_temporary_file(tmp_path, failure):
    path = tmp_path / "summary.json"
    write_json(path, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(type(failure)):
        with atomic_write(path) as stream:
            stream.write('{"epoch": 2, "half')
            stream.flush()
            raise failure
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["summary.json"]


def test_temporary_file_is_in_the_target_folder_until_the_end(tmp_path):
    target = tmp_path / "folder" / "table.csv"
    with atomic_write(target, newline="") as stream:
        stream.write("a,b\r\n")
        stream.flush()
        (temporary,) = os.listdir(tmp_path / "folder")  # the folder is created when missing
        assert temporary.startswith(".table.csv.") and temporary.endswith(".tmp")
        assert os.stat(tmp_path / "folder" / temporary).st_ino == os.fstat(stream.fileno()).st_ino
        assert not target.exists()
    assert os.listdir(tmp_path / "folder") == ["table.csv"]
    assert target.read_bytes() == b"a,b\r\n"


def test_write_json_is_stable_text_ending_in_a_newline(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"b": [1, 2], "a": None})
    assert path.read_text() == '{\n  "a": null,\n  "b": [\n    1,\n    2\n  ]\n}\n'
    write_json(path, {"b": 1, "a": 2}, indent=None, sort_keys=False, separators=(",", ":"))
    assert path.read_text() == '{"b":1,"a":2}\n'
    assert json.loads(path.read_text()) == {"b": 1, "a": 2}


def test_write_figure_png(tmp_path, umask):
    figure = Figure(figsize=(2, 1), dpi=50)
    FigureCanvasAgg(figure)
    figure.subplots().plot([0, 1], [1, 0])
    path = tmp_path / "curves.png"
    write_figure_png(path, figure)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert mode_of(path) == 0o666 & ~umask


def test_only_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "log.txt", mode="a"):
            pass
    assert os.listdir(tmp_path) == []


def test_files_that_are_not_utf8_are_named(tmp_path):
    from retinanet.runs.tables import load_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"epoch": 1, "loss": 1.0}\n')
    (run / "summary.json").write_bytes('{"note": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(ValueError) as info:
        load_run(str(run))
    assert str(info.value).startswith(f"{run / 'summary.json'}: not UTF-8 text (invalid continuation byte at byte 13)")
    (run / "summary.json").write_text("{}")
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 1, "loss": 1.0}\n\xff\n')
    with pytest.raises(ValueError) as info:
        load_run(str(run))
    assert str(info.value).startswith(f"{run / 'metrics.jsonl'}: not UTF-8 text")


def test_a_write_error_names_the_file_the_reason_and_the_space_left(tmp_path, monkeypatch):
    from retinanet.util import io as util_io

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(util_io.os, "fsync", full)
    (tmp_path / "kept.json").write_text('{"old": true}')
    with pytest.raises(util_io.WriteError) as info:
        util_io.write_json(str(tmp_path / "kept.json"), {"new": True})
    assert str(info.value).startswith(f"could not write {tmp_path / 'kept.json'}: No space left on device; ")
    assert str(info.value).endswith(" MB free there") and info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["kept.json"] and (tmp_path / "kept.json").read_text() == '{"old": true}'
    blocker = tmp_path / "kept.json"
    with pytest.raises(util_io.WriteError) as info:
        util_io.write_text(str(blocker / "below" / "x.txt"), "x")
    assert str(info.value).startswith(f"could not write {blocker / 'below' / 'x.txt'}: {blocker} is a file, not a folder")
    assert util_io.output_location_problem(str(tmp_path), "file") == f"{tmp_path} is a folder; name a file"
    assert util_io.output_location_problem(str(blocker / "x" / "y.png")) == f"{blocker} is a file, not a folder"
    assert util_io.output_location_problem(str(tmp_path / "new" / "deeper" / "y.png")) is None
