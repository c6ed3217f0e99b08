"""Pictures a learner reads: training curves, predictions, the dataset browser.

Checked by content: the figure's axes, legends and values (matplotlib artists), the
PNG's own pixels (each class colour present, colours distinct), text sizes. The CLI
ones run on tiny inputs, as subprocesses where the ``python -m`` entry is checked
nowhere else (visualize curves, evaluate), else in-process through the same ``main``
(predict's entry runs as a subprocess in test_checkpoint.py): each subprocess pays
~7 CPU-s of importing torch and torchvision on the 2-core CI machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# matplotlib is a dependency (pyproject); a checkout without it skips here, CI never does.
needs_matplotlib = pytest.mark.skipif(
    find_spec("matplotlib") is None and not os.environ.get("CI"),
    reason="matplotlib is not installed here (a dependency: pip install -e .)")


def _run(*argv: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *argv], cwd=cwd or REPO, env=env, text=True,
                          capture_output=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _has_colour(pixels: np.ndarray, rgb, at_least: int = 20) -> bool:
    return int((pixels == np.asarray(rgb, dtype=np.uint8)).all(-1).sum()) >= at_least


# --------------------------------------------------------------------------- curves
def _log_records(epochs: int = 3, steps_per_epoch: int = 4) -> list[dict]:
    records = [{"type": "start", "args": {"model": "retinanet", "epochs": epochs},
                "train_images": 32, "steps_per_epoch": steps_per_epoch}]
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            step += 1
            records.append({"type": "step", "epoch": epoch, "step": step, "lr": 1e-3 * step / 12,
                            "loss": 3.0 - 0.1 * step,
                            "losses": {"loss_cls": 2.0 - 0.05 * step,
                                       "loss_bbox": 1.0 - 0.05 * step}})
        ap = 0.2 + 0.25 * epoch
        records.append({"type": "epoch", "epoch": epoch, "step": step,
                        "coco": {"AP": ap, "AP50": ap + 0.1, "AP75": ap - 0.05}})
    return records


@needs_matplotlib
def test_curves_show_every_loss_component_lr_and_ap_values_with_axis_titles():
    from reference.visualize import draw_curves

    records = _log_records()
    fig = draw_curves(records)
    ax_loss, ax_lr, ax_ap = fig.axes
    assert (ax_loss.get_xlabel(), ax_loss.get_ylabel()) == ("training step", "loss")
    assert (ax_lr.get_xlabel(), ax_lr.get_ylabel()) == ("training step", "learning rate")
    assert (ax_ap.get_xlabel(), ax_ap.get_ylabel()) == ("epoch", "AP")
    legend = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert legend == ["total", "loss_bbox", "loss_cls", "epoch end"]
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    assert list(lines["loss_cls"].get_ydata()) == pytest.approx(
        [r["losses"]["loss_cls"] for r in records if r["type"] == "step"])
    lr_line = ax_lr.get_lines()[0]  # then the epoch-end lines
    assert list(lr_line.get_xdata()) == list(range(1, 13))
    assert max(lr_line.get_ydata()) == pytest.approx(1e-3)
    assert [t.get_text() for t in ax_ap.get_legend().get_texts()] == ["AP@[.5:.95]", "AP50",
                                                                      "AP75"]
    assert [t.get_text() for t in ax_ap.texts] == ["0.200", "0.450", "0.700"]
    for ax in fig.axes:  # ticks with labels on both axes
        fig.canvas.draw()
        assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert fig._suptitle.get_text() == "retinanet: 32 train images, 4 steps/epoch x 3 epochs"


@needs_matplotlib
def test_curves_of_a_long_run_label_the_best_and_the_last_ap_only():
    from reference.visualize import draw_curves

    records = _log_records(epochs=12, steps_per_epoch=1)
    for r in records:
        if r["type"] == "epoch":  # best at epoch 8 (index 7), lower after
            r["coco"]["AP"] = 0.5 - abs(r["epoch"] - 7) * 0.03
    ax_ap = draw_curves(records).axes[2]
    assert [t.get_text() for t in ax_ap.texts] == ["0.500", "0.380"]
    assert [t.xy[0] for t in ax_ap.texts] == [8, 12]


@needs_matplotlib
@pytest.mark.parametrize("epochs", [1, 2])
def test_curves_of_a_short_run_mark_whole_epochs_only(epochs):
    # a 1-epoch run (the README's short walk) drew epoch ticks 0.60, 0.75, ... 1.80
    from reference.visualize import draw_curves

    fig = draw_curves(_log_records(epochs=epochs))
    fig.canvas.draw()
    ticks = [t for t in fig.axes[2].get_xticks() if 0.5 <= t <= epochs + 0.8]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


@needs_matplotlib
def test_curves_without_evaluation_say_so_and_a_resumed_step_counts_once():
    from reference.visualize import draw_curves

    records = [r for r in _log_records() if r["type"] != "epoch"]
    records.append({**records[2], "loss": 9.0})  # step 2 logged again later: that one counts
    fig = draw_curves(records)
    ax_loss, _, ax_ap = fig.axes
    total = ax_loss.get_lines()[0]
    assert list(total.get_xdata()) == list(range(1, 13))
    assert list(total.get_ydata())[:3] == pytest.approx([2.9, 9.0, 2.7])
    assert "no evaluation logged" in ax_ap.texts[0].get_text()


@needs_matplotlib
def test_curves_cli_writes_a_png_with_the_curve_colours(tmp_path):
    from reference.visualize import PALETTE

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in _log_records()) + "{torn line")
    out = tmp_path / "curves.png"
    done = _run("-m", "reference.visualize", "curves", "--log", str(tmp_path), "--out", str(out))
    assert "wrote" in done.stdout
    pixels = _pixels(out)
    assert pixels.shape == (460, 1500, 3)
    for rgb in [(0, 0, 0), PALETTE[0], PALETTE[1], PALETTE[2]]:  # total, components/AP, lr
        assert _has_colour(pixels, rgb), rgb
    from reference.visualize import main

    with pytest.raises(SystemExit) as exc:
        main(["curves", "--log", str(tmp_path / "nope"), "--out", str(out)])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- boxes drawn
def test_each_class_has_its_own_distinct_colour_and_labels_are_legible_at_128px():
    import torch

    from reference.visualize import class_colour, draw_boxes

    colours = [class_colour(k) for k in range(40)]
    assert len(set(colours)) == 40
    for i in range(20):  # distinct: no two of the first 20 closer than 60 in RGB
        for j in range(i):
            assert math.dist(colours[i], colours[j]) >= 60, (i, j)
    picture = Image.new("RGB", (128, 96), (128, 128, 128))
    boxes = torch.tensor([[4.0, 20, 40, 60], [50, 10, 90, 50], [60, 55, 120, 90]])
    names = ["circle", "square", "triangle", "cross"]
    drawn = draw_boxes(picture, boxes, [0, 1, 3], names, [0.9, 0.8, 0.7])
    assert drawn.info["scale"] == pytest.approx(512 / 96)  # shorter side enlarged to 512
    assert drawn.size == (round(128 * 512 / 96), 512)
    assert drawn.info["font_size"] >= 14  # pixels, TrueType
    assert drawn.info["colours"] == {"circle": colours[0], "square": colours[1],
                                     "cross": colours[3]}
    pixels = np.asarray(drawn)
    for k in (0, 1, 3):
        assert _has_colour(pixels, colours[k], at_least=200), names[k]
    assert not _has_colour(pixels, colours[2], at_least=1)  # no triangle drawn
    # the label text: letter pixels of the contrasting colour inside the label patch
    from reference.visualize import truetype_path
    assert truetype_path() is None or truetype_path().endswith("DejaVuSans.ttf")


def test_draw_boxes_rejects_labels_outside_the_class_names():
    from reference.visualize import draw_boxes

    with pytest.raises(ValueError, match="labels: 4 is not a class index"):
        draw_boxes(Image.new("RGB", (8, 8)), [[0, 0, 4, 4]], [4], ["a", "b"])
    with pytest.raises(ValueError, match="expected 1 labels"):
        draw_boxes(Image.new("RGB", (8, 8)), [[0, 0, 4, 4]], [0, 1], ["a", "b"])


# --------------------------------------------------------------------------- predict, evaluate
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A stand-in detector's checkpoint (tests/test_train.py) on a 12+6 image set at 48 px."""
    from reference.data import SyntheticShapesConfig, ensure_synthetic_dataset
    from reference.train import main

    root = tmp_path_factory.mktemp("pictures")
    data = ensure_synthetic_dataset(
        SyntheticShapesConfig(image_size=48, num_train=12, num_val=6, object_size=(12, 24),
                              objects=(1, 2)), cache_dir=root / "cache")
    sys.path.insert(0, str(REPO / "tests"))
    try:
        assert main(["--model", "test_train:build_standin", "--data-path", str(data),
                     "--output-dir", str(root / "run"), "--min-size", "48", "--max-size", "48",
                     "--batch-size", "4", "--workers", "0", "--device", "cpu", "--epochs", "1",
                     "--no-eval"]) == 0
    finally:
        sys.path.remove(str(REPO / "tests"))
    return data, root / "run"


def _cli(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    env_path = str(REPO / "tests")
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = env_path + (os.pathsep + old if old else "")
    try:
        return _run(*argv, "--model", "test_train:build_standin", check=check)
    finally:
        os.environ["PYTHONPATH"] = old


def test_predict_a_folder_writes_one_picture_per_image_and_coco_results(trained, tmp_path,
                                                                       capsys, monkeypatch):
    from reference import predict
    from reference.data import load_coco
    from reference.evaluate import coco_evaluate

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    data, run = trained
    ann = data / "annotations" / "instances_val2017.json"
    out, dets = tmp_path / "pictures", tmp_path / "detections.json"
    assert predict.main(["--checkpoint", str(run), "--image", str(data / "val2017"),
                         "--out", str(out), "--detections", str(dets), "--ann", str(ann),
                         "--score-threshold", "0", "--device", "cpu",
                         "--model", "test_train:build_standin"]) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [f"00000{k}.png" for k in range(6)]
    with Image.open(out / "000000.png") as im:
        assert im.width == 512  # 48 px enlarged so the labels can be read
    results = json.loads(dets.read_text())
    coco = load_coco(ann)
    by_name = {i["file_name"]: i["id"] for i in coco.dataset["images"]}
    assert len(results) == 6  # the stand-in predicts one box per image
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score", "file_name"}
        assert r["image_id"] == by_name[r["file_name"]] and r["category_id"] in coco.cats
        assert len(r["bbox"]) == 4 and r["bbox"][2] > 0 and r["bbox"][3] > 0
    coco_evaluate(coco, results)  # the file is valid COCO results for its own annotations
    coco.loadRes(str(dets))
    assert "6 detections of 6 images written" in stdout


def test_predict_one_image_and_bad_paths(trained, tmp_path, capsys, monkeypatch):
    from reference import predict

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    data, run = trained
    common = ["--checkpoint", str(run), "--model", "test_train:build_standin", "--device", "cpu"]
    one = tmp_path / "one.png"
    assert predict.main([*common, "--image", str(data / "val2017" / "000001.png"),
                         "--out", str(one)]) == 0
    assert one.is_file() and f"drawn into {one}" in capsys.readouterr().out
    # without --image: the checkpoint's validation images, ids from their annotation file
    val, dets = tmp_path / "val", tmp_path / "val.json"
    assert predict.main([*common, "--out", str(val), "--detections", str(dets)]) == 0
    assert len(list(val.glob("*.png"))) == 6
    ann = json.loads((data / "annotations" / "instances_val2017.json").read_text())
    ids = {i["file_name"]: i["id"] for i in ann["images"]}
    assert {(r["file_name"], r["image_id"]) for r in json.loads(dets.read_text())} == set(
        ids.items())
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, message in [
        (["--image", str(data / "val2017"), "--out", str(tmp_path / "x.png")], "must be a folder"),
        (["--image", str(empty), "--out", str(tmp_path / "o")], "without images"),
        (["--image", str(tmp_path / "nope.png"), "--out", str(one)], "does not exist"),
        (["--image", str(one), "--out", str(tmp_path)], "is a folder"),
        (["--image", str(data / "val2017"), "--out", str(tmp_path / "p"), "--detections",
          str(tmp_path / "d.json"), "--ann", str(tmp_path / "nope.json")], "nope.json"),
    ]:
        with pytest.raises(SystemExit) as exc:
            predict.main([*common, *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err, message


def test_evaluate_prints_header_and_per_class_ap_and_writes_detections(trained, tmp_path):
    data, run = trained
    dets = tmp_path / "detections.json"
    done = _cli("-m", "reference.evaluate", "--checkpoint", str(run), "--out", str(dets))
    lines = done.stdout.splitlines()
    ann = data / "annotations" / "instances_val2017.json"
    assert lines[0].startswith(f"checkpoint  {run} (model test_train:build_standin, epoch 1")
    assert lines[1] == f"annotations {ann}"
    assert lines[2].startswith(f"images      {data / 'val2017'}: 6 images, ")
    device = "cuda" if _cuda() else "cpu"
    assert lines[3].endswith(f"device {device}")  # the default, as train's
    table = lines[lines.index("per category (area all, 100 detections per image):") + 1:]
    assert table[0].split() == ["category", "id", "gts", "AP", "AP50", "AP75"]
    assert [row.split()[0] for row in table[1:5]] == ["circle", "square", "triangle", "cross"]
    results = json.loads(dets.read_text())
    assert len(results) == 6 and {"image_id", "category_id", "bbox", "score"} <= set(results[0])


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


# --------------------------------------------------------------------------- dataset browser
def test_browser_draws_exactly_the_sample_training_gets(trained):
    import torch

    from reference.data import CocoDetection, SeededSamples, build_transforms, sample_seed
    from reference.visualize import browse_sample, class_colour

    data, _ = trained
    ann = data / "annotations" / "instances_train2017.json"
    plain = CocoDetection(data / "train2017", ann, skip_empty=True)
    train_set = CocoDetection(data / "train2017", ann, skip_empty=True,
                              transforms=build_transforms(True, 48, 48))
    flips = set()
    for epoch in (0, 1):
        for index in range(len(plain)):
            sheet = browse_sample(plain, index, 48, 48, seed=3, epoch=epoch)
            _, target = SeededSamples(train_set)[(index, sample_seed(3, epoch, index))]
            assert torch.equal(sheet.info["boxes"], target["boxes"]), (epoch, index)
            flips.add(sheet.info["flipped"])
    assert flips == {True, False}
    assert plain.transforms is None  # left as it was
    pixels = np.asarray(sheet)
    for label in set(plain.records[index]["labels"].tolist()):
        assert _has_colour(pixels, class_colour(label), at_least=100)
    with pytest.raises(ValueError, match="index"):
        browse_sample(plain, len(plain), 48, 48)


def test_browser_cli_writes_one_sheet_per_image(trained, tmp_path, capsys):
    from reference.visualize import main

    data, _ = trained
    out = tmp_path / "browse"
    assert main(["dataset", "--data-path", str(data), "--num", "2", "--epoch", "1",
                 "--out-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["0000_000000.png", "0001_000001.png"]
    with Image.open(written[0]) as im:  # two 384 px panels side by side, 12 px apart
        assert im.width == 2 * 384 + 12
    assert "12 images" in stdout.splitlines()[0] and "wrote 2 pictures" in stdout
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "--ann", str(data / "x.json"), "--out-dir", str(out)])
    assert exc.value.code == 2
