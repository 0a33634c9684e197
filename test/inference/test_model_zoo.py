"""The model zoo: downloads from a real HTTP server on 127.0.0.1 (never the internet), real files, the real cache.

Broken-off downloads are resumed with a Range request, a wrong checksum is refused, a pulled model is
reused, --from-file takes a file fetched by hand, and no failure leaves anything half-written in the
cache. The full-size checkpoint is the Mask2Former R50 Cityscapes file rebuilt from the official-code
fixture (../shared/fixtures/official) in the model-zoo .pkl container.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

from ros_seg.cli import main
from ros_seg.inference.model_zoo import file_digests, pull, zoo_dir, zoo_weights
from ros_seg.inference.resumable_download import DownloadInterrupted, download_part
from ros_seg.inference.weights_source import RANDOM_WEIGHTS, demo_checkpoint, resolve_weights
from ros_seg.inference.zoo_catalogue import ENTRIES, ZooError, zoo_entry
from ros_seg.models.class_metadata import class_metadata
from ros_seg.models.load import load_model
from ros_seg.models.registry import load_model_config

from official_reference import (
    M2F,
    PANOPTIC_SEGFORMER,
    PROSCALE,
    rule_weights,
    write_detectron2_checkpoint,
    write_mmcv_checkpoint,
    write_model_zoo_pickle,
)
from zoo_server import ServedFiles, file_server

M2F_ZOO = "m2f_r50_cityscapes_panoptic"
MiB = 1 << 20


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ROS_SEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "zoo"


def cache_files(cache: Path) -> list[str]:
    """Every file in the zoo cache (the lock files aside), relative."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def m2f_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official-format Mask2Former R50 Cityscapes checkpoint (model-zoo .pkl, 265 MB)."""
    path = tmp_path_factory.mktemp("official") / "model_final_4ab90c.pkl"
    write_model_zoo_pickle(rule_weights(M2F), path)
    return path


def test_catalogue_entries_name_ros_seg_models_and_label_sets() -> None:
    names = [entry.name for entry in ENTRIES]
    assert len(set(names)) == len(names)
    for entry in ENTRIES:
        config = load_model_config(entry.model)
        assert config.dataset == entry.dataset, entry.name
        assert entry.task in ("panoptic", "semantic")
        assert entry.url is None or entry.url.startswith("https://")
        if entry.md5_prefix:  # Mask2Former: the md5 prefix is the file name's hash part
            assert entry.file_name == f"model_final_{entry.md5_prefix}.pkl"
    assert {class_metadata(e.dataset).num_classes for e in ENTRIES} == {19, 133, 150, 65}


def test_interrupted_download_is_resumed_with_a_range_request(tmp_path: Path) -> None:
    payload = os.urandom(3 * MiB + 123)
    served = ServedFiles({"/f.bin": payload}, cut_after=[MiB])
    part = tmp_path / "f.bin.part"
    with file_server(served) as base:
        with pytest.raises(DownloadInterrupted, match=f"after {MiB} of {len(payload)} bytes"):
            download_part(f"{base}/f.bin", part, progress=False)
        assert part.read_bytes() == payload[:MiB]
        assert download_part(f"{base}/f.bin", part, progress=False) == len(payload)
    assert served.requests == [("/f.bin", None), ("/f.bin", f"bytes={MiB}-")]
    assert part.read_bytes() == payload


def test_server_without_range_support_sends_the_whole_file_again(tmp_path: Path) -> None:
    payload = os.urandom(2 * MiB)
    served = ServedFiles({"/f.bin": payload}, cut_after=[MiB // 2], honour_range=False)
    part = tmp_path / "f.bin.part"
    with file_server(served) as base:
        with pytest.raises(DownloadInterrupted):
            download_part(f"{base}/f.bin", part, progress=False)
        download_part(f"{base}/f.bin", part, progress=False)
    assert served.requests[1] == ("/f.bin", f"bytes={MiB // 2}-")
    assert part.read_bytes() == payload


def test_wrong_checksum_is_refused_and_nothing_stays_in_the_cache(cache: Path, capsys: pytest.CaptureFixture) -> None:
    entry = zoo_entry(M2F_ZOO)
    served = ServedFiles({f"/mirror/{entry.file_name}": os.urandom(MiB)})
    with file_server(served) as base:
        code = main(["zoo", "pull", M2F_ZOO, "--mirror", f"{base}/mirror", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"official {entry.file_name} has an MD5 starting with {entry.md5_prefix}" in err
    assert cache_files(cache) == []
    with pytest.raises(ZooError, match=f"run `ros-seg zoo pull {M2F_ZOO}`"):
        zoo_weights(M2F_ZOO)


def test_download_given_up_keeps_only_the_part_file_and_says_how_to_resume(cache: Path) -> None:
    entry = zoo_entry(M2F_ZOO)
    payload = os.urandom(2 * MiB)
    served = ServedFiles({f"/{entry.file_name}": payload}, cut_after=[MiB])
    with file_server(served) as base:
        with pytest.raises(ZooError, match=f"{MiB} bytes are kept .* run `ros-seg zoo pull {M2F_ZOO}` again"):
            pull(entry, mirror=base, retries=0, progress=False)
    assert cache_files(cache) == [f"downloads/{entry.file_name}.part"]
    with pytest.raises(ZooError, match="is not in the cache"):
        zoo_weights(M2F_ZOO)


def test_truncated_file_without_published_checksum_is_refused_by_name(cache: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """Panoptic SegFormer's authors publish no checksum: a file cut short fails the conversion, in one line."""
    name = "panoptic_segformer_r50_coco_panoptic"
    whole = tmp_path / "whole.pth"
    torch.save({"meta": {}, "state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, whole)
    cut = tmp_path / zoo_entry(name).file_name
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert main(["zoo", "pull", name, "--from-file", str(cut)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert error.startswith("ros-seg zoo: error: ") and f"is not a checkpoint of zoo model '{name}'" in error
    assert "is it a complete checkpoint?" in error
    assert cache_files(cache) == []


def test_a_second_pull_of_the_same_model_at_once_is_refused(cache: Path) -> None:
    zoo_dir()
    with open(cache / f".{M2F_ZOO}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running pull holds it
        with pytest.raises(ZooError, match=f"another `ros-seg zoo pull {M2F_ZOO}` is running"):
            pull(M2F_ZOO, progress=False)
    assert cache_files(cache) == []


@pytest.mark.parametrize("name, message", [
    ("no_such_model", "unknown zoo model 'no_such_model': choose one of m2f_r50_cityscapes_panoptic"),
    ("proscale_r50_333_coco_panoptic", "no direct download link .* --from-file r50_proscale_3_3_3_coco.pth"),
])
def test_pull_refusals_are_one_line_and_write_nothing(name: str, message: str, cache: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["zoo", "pull", name]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert cache_files(cache) == []


def test_list_json_names_every_entry(capsys: pytest.CaptureFixture) -> None:
    assert main(["zoo", "list", "--json", "-"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in listed["models"]}
    assert list(rows) == [entry.name for entry in ENTRIES]
    assert rows[M2F_ZOO]["classes"] == 19 and rows[M2F_ZOO]["published"] == {"PQ": 62.1, "AP": 37.3, "mIoU": 77.5}
    assert rows["m2f_r50_ade20k_panoptic"]["classes"] == 150
    assert rows["m2f_r50_mapillary_vistas_panoptic"]["classes"] == 65
    assert not any(row["cached"] for row in rows.values())


def test_weights_settings_resolve_as_documented(cache: Path) -> None:
    demo = resolve_weights("", "pem_stdc1")
    assert demo.path == demo_checkpoint() and "synthetic" in demo.warning
    assert "ros-seg zoo pull m2f_r50_cityscapes_panoptic" in demo.warning
    assert resolve_weights(RANDOM_WEIGHTS, "pem_r50").path is None
    with pytest.raises(ValueError, match="model 'pem_r50' has no default weights"):
        resolve_weights("", "pem_r50")
    with pytest.raises(ValueError, match="is a m2f_r50 checkpoint, but model 'pem_stdc1' was requested"):
        resolve_weights(f"zoo:{M2F_ZOO}", "pem_stdc1")
    with pytest.raises(ZooError, match=f"not in the cache .* `ros-seg zoo pull {M2F_ZOO}`"):
        resolve_weights(f"zoo:{M2F_ZOO}", "m2f_r50")
    with pytest.raises(ZooError, match="unknown zoo model 'nope'"):
        resolve_weights("zoo:nope", "")


def test_pull_resumes_verifies_converts_once_and_reuses(m2f_pickle: Path, cache: Path, tmp_path: Path) -> None:
    """The whole path with a full-size file: a broken-off transfer resumed within the pull, the MD5 prefix
    checked, the conversion equal to `ros-seg convert`'s, the cache reused without a request."""
    payload = m2f_pickle.read_bytes()
    entry = dataclasses.replace(zoo_entry(M2F_ZOO), md5_prefix=file_digests(m2f_pickle).md5[:6])
    served = ServedFiles({f"/{entry.file_name}": payload}, cut_after=[len(payload) // 3])
    lines: list[str] = []
    with file_server(served) as base:
        started = time.perf_counter()
        path = pull(dataclasses.replace(entry, url=f"{base}/{entry.file_name}"), progress=False, say=lines.append)
        seconds = time.perf_counter() - started
        path_of = f"/{entry.file_name}"
        assert served.requests == [(path_of, None), (path_of, f"bytes={len(payload) // 3}-")]
        assert any(line.startswith(f"resuming {base}") for line in lines)
        assert pull(dataclasses.replace(entry, url=f"{base}{path_of}"), progress=False, say=lines.append) == path
        assert len(served.requests) == 2, "a pulled model is reused: no request"
    print(f"pull of {len(payload)} bytes over loopback, one resume, convert and store: {seconds:.1f} s")
    assert seconds < 30, "issue 24: converting a checkpoint takes under 30 s on 2 cores"
    assert path == zoo_weights(M2F_ZOO) == cache / f"{M2F_ZOO}.pt"
    assert cache_files(cache) == [f"{M2F_ZOO}.pt", f"{M2F_ZOO}.pt.sha256"], "the download is deleted once converted"
    reference = tmp_path / "convert.pt"
    assert main(["convert", "--from-official", str(m2f_pickle), "--model", "m2f_r50", "--out", str(reference)]) == 0
    pulled, converted = load_model(weights=path), load_model(weights=reference)
    assert pulled.config.name == "m2f_r50" and pulled.metadata.num_classes == 19
    assert all(torch.equal(a, b) for a, b in zip(pulled.model.state_dict().values(),
                                                 converted.model.state_dict().values()))
    out = tmp_path / "segmented"
    assert main(["segment", "--synthetic", "--size", "128x256", "--weights", f"zoo:{M2F_ZOO}", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert json.loads((out / "segments.json").read_text())["weights"] == str(path)


@pytest.mark.parametrize("command", [["segment", "--synthetic", "--out", "OUT"], ["bench", "--model", "m2f_r50"],
                                     ["eval", "--model", "m2f_r50", "--data", "DATA", "--out", "OUT"],
                                     ["export", "--out", "OUT/m.onnx"], ["replay", "BAG", "--out", "OUT"]])
def test_commands_take_zoo_weights_only_from_the_cache(command: list[str], capsys: pytest.CaptureFixture) -> None:
    """--weights zoo:NAME of a model not pulled here: one line naming the pull command, nothing downloaded."""
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--weights", f"zoo:{M2F_ZOO}"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument --weights: zoo model '{M2F_ZOO}' is not in the cache" in err
    assert f"run `ros-seg zoo pull {M2F_ZOO}`" in err


@pytest.mark.slow
def test_from_file_takes_a_hand_download_and_refuses_another_models_file(m2f_pickle: Path, cache: Path,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """PRO-SCALE's authors publish no checksum: the file is checked by converting it. The Mask2Former
    Cityscapes file (19 classes, another encoder) is refused with the tensors that do not fit; the
    PRO-SCALE COCO file is taken."""
    name = "proscale_r50_333_coco_panoptic"
    assert main(["zoo", "pull", name, "--from-file", str(m2f_pickle)]) == 2
    err = capsys.readouterr().err
    assert f"is not a checkpoint of zoo model '{name}' (proscale_r50_333_coco)" in err
    assert cache_files(cache) == []
    official = tmp_path / "r50_proscale_3_3_3_coco.pth"
    write_detectron2_checkpoint(rule_weights(PROSCALE), official)
    assert main(["zoo", "pull", name, "--from-file", str(official)]) == 0
    assert official.is_file(), "the user's file is left where it was"
    loaded = load_model(weights=zoo_weights(name))
    assert loaded.config.name == "proscale_r50_333_coco" and loaded.metadata.num_classes == 133


@pytest.mark.slow
def test_panoptic_segformer_is_pulled_from_a_mirror_and_checked_by_converting(cache: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """The real catalogue entry through the command, the file served by the local server as a mirror: no
    checksum is published, so the conversion (every one of the 955 tensors must fit) is the check."""
    name = "panoptic_segformer_r50_coco_panoptic"
    entry = zoo_entry(name)
    official = tmp_path / entry.file_name
    write_mmcv_checkpoint(rule_weights(PANOPTIC_SEGFORMER), official)
    served = ServedFiles({f"/mirror/{entry.file_name}": official.read_bytes()})
    with file_server(served) as base:
        assert main(["zoo", "pull", name, "--mirror", f"{base}/mirror", "--no-progress"]) == 0
    assert "the authors publish no checksum" in capsys.readouterr().err
    assert cache_files(cache) == [f"{name}.pt", f"{name}.pt.sha256"]
    loaded = load_model(weights=zoo_weights(name))
    assert loaded.config.name == "panoptic_segformer_r50_coco" and loaded.metadata.num_classes == 133
    assert main(["zoo", "list", "--json", "-"]) == 0
    listed = {row["name"]: row["cached"] for row in json.loads(capsys.readouterr().out)["models"]}
    assert [n for n, cached in listed.items() if cached] == [name]
