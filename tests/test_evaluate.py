"""COCO bbox evaluation: hand-checkable AP values on tiny annotation files."""

from __future__ import annotations

import json

import pytest
import torch

from reference.data import load_coco
from reference.evaluate import STAT_NAMES, coco_evaluate, format_summary, predict_coco_results


def _write_coco(path, images, annotations, categories=(1, 2)):
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": w, "height": h}
                   for i, (w, h) in images.items()],
        "annotations": [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": crowd}
                        for k, (img, cat, bbox, crowd) in enumerate(annotations)],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
    }
    path.write_text(json.dumps(coco))
    return load_coco(path)


@pytest.fixture
def gt(tmp_path):
    # Three medium-size boxes (area 40*40 = 1600 is between 32^2 and 96^2).
    return _write_coco(tmp_path / "gt.json", {1: (200, 100), 2: (100, 100)}, [
        (1, 1, [10, 10, 40, 40], 0),
        (1, 2, [100, 20, 40, 40], 0),
        (2, 1, [50, 50, 40, 40], 0),
    ])


def _perfect(coco):
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "bbox": a["bbox"], "score": 0.9} for a in coco.dataset["annotations"]]


def test_perfect_detections_give_ap_one(gt):
    stats = coco_evaluate(gt, _perfect(gt))
    assert list(stats) == list(STAT_NAMES)
    for name in ("AP", "AP50", "AP75", "APm", "AR1", "AR10", "AR100", "ARm"):
        assert stats[name] == pytest.approx(1.0), name
    # No small or large ground truth: pycocotools reports -1 there.
    for name in ("APs", "APl", "ARs", "ARl"):
        assert stats[name] == -1.0, name


def test_no_detections_give_ap_zero(gt):
    stats = coco_evaluate(gt, [])
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_half_recall_with_full_precision_gives_51_of_101_recall_points(gt):
    # Category 1 has 2 gts; we find one of them (plus a miss elsewhere at lower score).
    # Category 2 has 1 gt, found. Category 1: precision 1 up to recall 0.5, then
    # nothing -> 51 of the 101 recall thresholds (0, 0.01, ..., 0.5) have precision 1.
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [150, 50, 20, 20], "score": 0.5},
        {"image_id": 1, "category_id": 2, "bbox": [100, 20, 40, 40], "score": 0.9},
    ]
    stats = coco_evaluate(gt, dets)
    assert stats["AP"] == pytest.approx((51 / 101 + 1.0) / 2)
    assert stats["AR100"] == pytest.approx((0.5 + 1.0) / 2)


def test_crowd_ground_truth_is_ignored_not_missed(tmp_path):
    coco = _write_coco(tmp_path / "crowd.json", {1: (100, 100)}, [
        (1, 1, [10, 10, 40, 40], 0),
        (1, 1, [50, 50, 40, 40], 1),  # crowd: neither a miss nor needed
    ])
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [52, 52, 36, 36], "score": 0.8}]
    assert coco_evaluate(coco, dets)["AP"] == pytest.approx(1.0)


def test_summary_has_the_standard_twelve_lines(gt, capsys):
    stats = coco_evaluate(gt, _perfect(gt), verbose=True)
    printed = capsys.readouterr().out.rstrip("\n").splitlines()
    assert printed == format_summary(stats).splitlines()
    assert len(printed) == 12
    assert printed[0] == (" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | "
                          "maxDets=100 ] = 1.000")


def test_summary_matches_what_pycocotools_prints(gt, capsys):
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    stats = coco_evaluate(gt, _perfect(gt)[:2])
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(_perfect(gt)[:2]), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        evaluator.summarize()
    assert format_summary(stats).splitlines() == buffer.getvalue().rstrip("\n").splitlines()
    assert list(stats.values()) == pytest.approx(list(evaluator.stats))


def test_detection_for_an_unknown_image_is_a_clear_error(gt):
    with pytest.raises(ValueError, match="image_id=99"):
        coco_evaluate(gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1],
                            "score": 1.0}])
    with pytest.raises(ValueError, match="score"):
        coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])


def test_path_to_a_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        coco_evaluate(bad, [])


def test_predictions_are_scaled_back_to_the_original_size_as_xywh():
    class Fixed(torch.nn.Module):
        def forward(self, images):
            return [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
                     "scores": torch.tensor([0.7]), "labels": torch.tensor([1])}
                    for _ in images]

    # The resized image is half the original in height and a quarter in width.
    target = {"image_id": 7, "orig_size": torch.tensor([200, 400]),
              "size": torch.tensor([100, 100])}
    loader = [([torch.zeros(3, 100, 100)], [target])]
    (result,) = predict_coco_results(Fixed(), loader, label_to_cat_id=[5, 9], device="cpu")
    assert result == {"image_id": 7, "category_id": 9, "bbox": [40.0, 40.0, 80.0, 80.0],
                      "score": pytest.approx(0.7)}


def test_per_category_ap_is_each_category_alone_and_averages_to_ap(tmp_path):
    from reference.evaluate import coco_evaluate_per_class, format_per_class

    coco = _write_coco(tmp_path / "gt3.json", {1: (200, 100), 2: (100, 100)}, [
        (1, 1, [10, 10, 40, 40], 0),
        (1, 2, [100, 20, 40, 40], 0),
        (2, 1, [50, 50, 40, 40], 0),
    ], categories=(1, 2, 7))
    dets = [  # category 1: one of its 2 gts found first -> 51/101; category 2: perfect
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [150, 50, 20, 20], "score": 0.5},
        {"image_id": 1, "category_id": 2, "bbox": [100, 20, 40, 40], "score": 0.9},
    ]
    stats, rows = coco_evaluate_per_class(coco, dets)
    assert [(r["category_id"], r["name"], r["gts"]) for r in rows] == [
        (1, "c1", 2), (2, "c2", 1), (7, "c7", 0)]
    assert rows[0]["AP"] == pytest.approx(51 / 101) and rows[0]["AP50"] == pytest.approx(51 / 101)
    assert rows[1]["AP"] == pytest.approx(1.0) and rows[1]["AP75"] == pytest.approx(1.0)
    assert all(v != v for v in (rows[2]["AP"], rows[2]["AP50"]))  # no gt: nan, not 0
    assert stats["AP"] == pytest.approx((rows[0]["AP"] + rows[1]["AP"]) / 2)
    table = format_per_class(rows).splitlines()
    assert table[0].split() == ["category", "id", "gts", "AP", "AP50", "AP75"]
    assert table[1].split() == ["c1", "1", "2", "0.505", "0.505", "0.505"]
    assert table[3].split() == ["c7", "7", "0", "-", "-", "-"]
