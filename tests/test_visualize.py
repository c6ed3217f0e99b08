"""reference.visualize: the pictures are written, sized as documented, and honest.

"Honest" = the positives drawn are exactly the assigner's positives, computed here
independently from reference.AnchorGenerator + MaxIoUAssigner.
"""

import math
import os

import pytest
import torch
from PIL import Image

import reference
from reference import visualize
from reference.visualize import main

GTS = ["10,20,60,70", "70,30,120,90,1"]


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_help_explains_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "anchors" in out and "assign" in out and "xyxy" in out
    with pytest.raises(SystemExit):
        main(["assign", "--help"])
    out = capsys.readouterr().out
    assert "MaxIoUAssigner" in out and "--show-ignored" in out


def test_anchors_all_levels_png_size(tmp_path):
    out = tmp_path / "anchors.png"
    assert main(["anchors", "--flavour", "mmdet", "--out", str(out)]) == 0
    # 5 columns of (panel 300 + 2 * 12 gap); one row: header 48 + title 40 + panel
    # + legend of 9 anchors (15 px a line, + 1 line + 6) + 12 gap.
    assert _png(out) == (5 * 324, 48 + 40 + 300 + 15 * 10 + 6 + 12)


def test_anchors_compare_one_level_png_size(tmp_path):
    out = tmp_path / "diff.png"
    main(["anchors", "--flavour", "mmdet", "--compare", "torchvision", "--level", "0",
          "--panel", "200", "--out", str(out)])
    cell_h = 40 + 200 + 15 * 10 + 6 + 12
    assert _png(out) == (560, 48 + 2 * cell_h)  # one narrow column is widened to 560


def test_base_anchor_table_matches_generator_and_order():
    for flavour in visualize.FLAVOURS:
        gen = reference.retinanet_anchor_preset(flavour).build()
        rows = visualize.base_anchor_table(flavour, 0)
        assert torch.equal(torch.tensor([r["box"] for r in rows]), gen.base_anchors[0])
        for r in rows:  # the label (ratio) matches the box's shape
            x1, y1, x2, y2 = r["box"]
            assert (y2 - y1) / (x2 - x1) == pytest.approx(r["ratio"], rel=0.05)
    # detectron2 is size-outer: k=1 is ratio 1 of the first size; mmdet's k=1 is ratio 0.5
    assert visualize.base_anchor_table("detectron2", 0)[1]["ratio"] == 1.0
    assert visualize.base_anchor_table("mmdet", 0)[1]["ratio"] == 0.5


def test_compare_notes_name_order_and_rounding():
    mm = visualize.base_anchor_table("mmdet", 0)
    d2 = visualize.base_anchor_table("detectron2", 0)
    tv = visualize.base_anchor_table("torchvision", 0)
    notes = visualize._compare_lines(mm, d2, "detectron2")
    assert notes[0] == "same" and notes[1] == "= detectron2 k=3"
    assert any(n.startswith("off") for n in visualize._compare_lines(mm, tv, "torchvision"))


def _independent_positives(image_hw, boxes):
    """RetinaNet (mmdet) assignment written out directly with the reference API."""
    gen = reference.AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0],
                                    octave_base_scale=4, scales_per_octave=3)
    sizes = [(math.ceil(image_hw[0] / s), math.ceil(image_hw[1] / s)) for s in (8, 16, 32, 64, 128)]
    anchors = torch.cat(gen.grid_anchors(sizes))
    valid = torch.cat(gen.valid_flags(sizes, image_hw))
    inside = reference.anchor_inside_flags(anchors, valid, image_hw, allowed_border=-1)
    result = reference.MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0).assign(
        anchors[inside], torch.tensor(boxes, dtype=torch.float32))
    return [int((result.gt_inds == g + 1).sum()) for g in range(len(boxes))]


def test_assign_blank_canvas_png_and_counts(tmp_path, capsys):
    out = tmp_path / "assign.png"
    main(["assign", "--gt", GTS[0], "--gt", GTS[1], "--show-ignored", "--out", str(out)])
    # (128 + 2 * 32 pad) * scale 4; + title 22 + legend 18 per gt + 8
    assert _png(out) == (768, 768 + 22 + 18 * 2 + 8)
    expected = _independent_positives((128, 128), [[10, 20, 60, 70], [70, 30, 120, 90]])
    assert all(n > 0 for n in expected)
    printed = capsys.readouterr().out
    for g, n in enumerate(expected):
        assert f"gt{g} " in printed and f": {n} positive" in printed


def test_positives_drawn_equal_assigner_positives():
    boxes = [[10, 20, 60, 70], [70, 30, 120, 90], [0, 100, 30, 128]]
    result = visualize.assign_retinanet((128, 128), boxes)
    picture = visualize.draw_assignment(Image.new("RGB", (128, 128)), result)
    assert picture.info["positives_drawn"] == result.positives_per_gt()
    assert picture.info["positives_drawn"] == _independent_positives((128, 128), boxes)


def test_assign_dsl_points(tmp_path, capsys):
    out = tmp_path / "dsl.png"
    main(["assign", "--assigner", "dsl", "--gt", GTS[0], "--gt", GTS[1], "--seed", "1",
          "--scale", "2", "--out", str(out)])
    assert _png(out) == (384, 384 + 22 + 18 * 2 + 8)
    result = visualize.assign_dsl((128, 128), [[10, 20, 60, 70], [70, 30, 120, 90]], [0, 1], seed=1)
    assert result.is_points and all(n >= 1 for n in result.positives_per_gt())
    drawn = visualize.draw_assignment(Image.new("RGB", (128, 128)), result).info["positives_drawn"]
    assert drawn == result.positives_per_gt()
    assert f": {drawn[0]} positive" in capsys.readouterr().out


def test_assign_synthetic_image(tmp_path, monkeypatch):
    from reference.data import SyntheticShapesConfig

    monkeypatch.setenv("DETSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(visualize, "SYNTHETIC_CONFIG", SyntheticShapesConfig(num_train=1, num_val=2))
    out = tmp_path / "synthetic.png"
    main(["assign", "--index", "1", "--scale", "2", "--pad", "0", "--out", str(out)])
    picture, boxes, _, _ = visualize.load_synthetic_sample(1, "val")
    assert _png(out) == (256, 256 + 22 + 18 * len(boxes) + 8)


@pytest.mark.parametrize("argv, message", [
    (["anchors", "--flavour", "caffe"], "flavour"),
    (["anchors", "--compare", "caffe"], "compare"),  # names the option given
    (["anchors", "--level", "7"], "--level"),
    (["assign", "--flavour", "caffe", "--gt", "1,2,3,4"], "flavour"),
    (["assign", "--gt", "1,2,3"], "x1,y1,x2,y2"),
    (["assign", "--gt", "1,2,a,4"], "number"),
    (["assign", "--gt", "10,10,5,20"], "x2 > x1"),
    (["assign", "--gt", "1,2,3,nan"], "finite"),
    (["assign", "--gt", "1,2,3,4", "--canvas", "12"], "canvas"),
])
def test_bad_inputs_exit_with_clear_message(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_unwritable_out(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["anchors", "--out", str(tmp_path / "missing" / "a.png")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["anchors", "--out", str(tmp_path)])
    assert "directory" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit):
            main(["anchors", "--out", str(locked / "a.png")])
        assert "not writable" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --out is required
        main(["anchors"])


def test_functions_raise_value_errors():
    with pytest.raises(ValueError, match="flavour"):
        visualize.draw_base_anchors("caffe")
    with pytest.raises(ValueError, match="level"):
        visualize.base_anchor_table("mmdet", 5)
    with pytest.raises(ValueError, match="xyxy"):
        visualize.parse_box("5,5,1,1")
    assert visualize.parse_box(" 1, 2, 3.5, 4 ,2") == ([1.0, 2.0, 3.5, 4.0], 2)
