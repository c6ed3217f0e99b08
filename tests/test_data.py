"""Datasets, the synthetic shapes set, transforms and aspect-ratio batching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reference.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CocoDetection,
    DatasetError,
    GroupedBatchSampler,
    SyntheticShapesConfig,
    aspect_ratio_group_ids,
    build_transforms,
    collate_lists,
    ensure_synthetic_dataset,
    load_coco,
    resolve_data_paths,
)

TINY = SyntheticShapesConfig(image_size=48, num_train=6, num_val=3, object_size=(12, 24),
                             objects=(1, 3))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(TINY, cache_dir=tmp_path_factory.mktemp("cache"))


# --------------------------------------------------------------------------- synthetic set
def test_synthetic_dataset_is_byte_for_byte_deterministic(tiny_root, tmp_path):
    again = ensure_synthetic_dataset(TINY, cache_dir=tmp_path)
    assert again.name == tiny_root.name
    assert _digest(again) == _digest(tiny_root)


def test_synthetic_dataset_is_written_once_and_reused(tiny_root):
    before = (tiny_root / "DONE").stat().st_mtime_ns
    assert ensure_synthetic_dataset(TINY, cache_dir=tiny_root.parent) == tiny_root
    assert (tiny_root / "DONE").stat().st_mtime_ns == before


def test_a_different_seed_gives_a_different_folder_and_images(tiny_root, tmp_path):
    other = ensure_synthetic_dataset(SyntheticShapesConfig(**{**TINY.__dict__, "seed": 1}),
                                     cache_dir=tmp_path)
    assert other.name != tiny_root.name
    assert _digest(other) != _digest(tiny_root)


def test_cache_directory_comes_from_detspec_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DETSPEC_CACHE", str(tmp_path / "c"))
    from reference.data import default_cache_dir
    assert default_cache_dir() == tmp_path / "c"


def test_synthetic_boxes_are_tight_around_the_drawn_shapes(tiny_root):
    coco = load_coco(tiny_root / "annotations" / "instances_train2017.json")
    assert [c["name"] for c in coco.dataset["categories"]] == [
        "circle", "square", "triangle", "cross"]
    for ann in coco.dataset["annotations"]:
        if ann["category_id"] != 2:  # squares fill their box exactly
            continue
        info = coco.imgs[ann["image_id"]]
        pixels = np.asarray(Image.open(tiny_root / "train2017" / info["file_name"]))
        x, y, w, h = ann["bbox"]
        inside = pixels[y:y + h, x:x + w].reshape(-1, 3)
        colours, counts = np.unique(inside, axis=0, return_counts=True)
        # The top-most shape covers its whole box unless a later shape overlaps it.
        assert counts.max() >= 0.6 * w * h
        assert w >= 12 and h >= 12


def test_default_data_paths_use_the_synthetic_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("DETSPEC_CACHE", str(tmp_path))
    paths = resolve_data_paths(synthetic=TINY)
    assert paths.synthetic
    assert Path(paths.train_ann).name == "instances_train2017.json"
    assert Path(paths.val_images).name == "val2017"


def test_incomplete_explicit_paths_name_the_missing_flags():
    with pytest.raises(DatasetError, match="--val-ann, --val-images"):
        resolve_data_paths(train_ann="a.json", train_images="imgs")


# --------------------------------------------------------------------------- COCO files
def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_missing_annotation_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_coco(tmp_path / "instances_missing.json")


def test_corrupt_annotation_file_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "broken.json", '{"images": [')
    with pytest.raises(DatasetError, match="broken.json.*not valid JSON"):
        load_coco(path)


def test_annotation_file_without_coco_lists_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "a.json", {"images": [], "annotations": []})
    with pytest.raises(DatasetError, match="'categories'"):
        load_coco(path)
    path = _write(tmp_path / "b.json", {"images": [], "categories": [],
                                        "annotations": [{"image_id": 1, "category_id": 1,
                                                         "bbox": [1, 2, 3]}]})
    with pytest.raises(DatasetError, match=r"bbox \[x, y, w, h\]"):
        load_coco(path)


def _tiny_coco(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(images / "a.png")
    Image.new("RGB", (20, 20), (10, 20, 30)).save(images / "b.png")
    ann = _write(tmp_path / "ann.json", {
        "images": [{"id": 5, "file_name": "a.png", "width": 40, "height": 20},
                   {"id": 9, "file_name": "b.png", "width": 20, "height": 20}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [20, 0, 30, 10], "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 3, "bbox": [0, 10, 8, 8], "iscrowd": 1},
            {"id": 4, "image_id": 5, "category_id": 7, "bbox": [5, 5, 0, 4], "iscrowd": 0},
            {"id": 5, "image_id": 9, "category_id": 7, "bbox": [50, 50, 4, 4], "iscrowd": 0},
        ]})
    return images, ann


def test_coco_records_map_ids_to_labels_crowds_to_ignore_and_drop_degenerates(tmp_path,
                                                                               caplog):
    images, ann = _tiny_coco(tmp_path)
    ds = CocoDetection(images, ann)
    assert ds.label_to_cat_id == [3, 7] and ds.class_names == ["three", "seven"]
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 40)
    # [20, 0, 30, 10] is clipped to the 40 px wide image: x2 = 40
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20, 0, 40, 10]]
    assert target["labels"].tolist() == [1, 0]
    assert target["ignore_boxes"].tolist() == [[0, 10, 8, 18]]
    assert target["image_id"] == 5 and target["orig_size"].tolist() == [20, 40]
    # zero width, and a box entirely outside its image
    assert ds.dropped_degenerate == 2
    assert "dropped 2 degenerate boxes" in caplog.text
    assert len(ds) == 2
    assert len(CocoDetection(images, ann, skip_empty=True)) == 1


def test_unreadable_image_is_a_clear_error(tmp_path):
    images, ann = _tiny_coco(tmp_path)
    (images / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="a.png"):
        CocoDetection(images, ann)[0]


# --------------------------------------------------------------------------- transforms
def test_resize_keeps_the_ratio_and_scales_boxes(tmp_path):
    images, ann = _tiny_coco(tmp_path)
    ds = CocoDetection(images, ann, transforms=build_transforms(False, 40, 60))
    image, target = ds[0]
    # shorter side 20 -> 40 would make the longer 80 > 60: scale = 60 / 40 = 1.5
    assert image.shape == (3, 30, 60)
    assert target["boxes"].tolist() == [[3, 4.5, 18, 12], [30, 0, 60, 15]]
    assert target["ignore_boxes"].tolist() == [[0, 15, 12, 27]]
    assert target["size"].tolist() == [30, 60]


def test_normalisation_uses_the_imagenet_mean_and_std(tmp_path):
    images, ann = _tiny_coco(tmp_path)
    ds = CocoDetection(images, ann, transforms=build_transforms(False, 20, 40))
    image, _ = ds[0]
    expected = [(v / 255 - m) / s for v, m, s in zip((10, 20, 30), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(image[:, 0, 0], torch.tensor(expected), atol=1e-5)


def test_flip_moves_boxes_with_the_image():
    flip = build_transforms(True, 20, 40)
    from torchvision import tv_tensors
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, 3:8, 2:12] = 255
    boxes = tv_tensors.BoundingBoxes([[2, 3, 12, 8]], format="XYXY", canvas_size=(20, 40))
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        out_image, out = flip(tv_tensors.Image(image), {"boxes": boxes})
        box = out["boxes"][0].tolist()
        seen.add(tuple(box))
        x1, y1, x2, y2 = (int(v) for v in box)
        bright = out_image[0] > 0  # inside the box the (normalised) pixel is bright
        assert bright[y1:y2, x1:x2].all() and bright.sum() == (x2 - x1) * (y2 - y1)
    assert seen == {(2.0, 3.0, 12.0, 8.0), (28.0, 3.0, 38.0, 8.0)}


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="min_size=0"):
        build_transforms(True, 0, 10)


# --------------------------------------------------------------------------- batching
def test_aspect_ratio_groups_use_log_spaced_edges_between_half_and_two():
    # factor 1: edges 0.5, 1, 2 -> groups 0 (<0.5), 1 [0.5, 1), 2 [1, 2), 3 (>=2)
    assert aspect_ratio_group_ids([0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0], 1) == [
        0, 1, 1, 2, 2, 3, 3]
    assert aspect_ratio_group_ids([0.3, 5.0], -1) == [0, 0]
    assert max(aspect_ratio_group_ids(np.linspace(0.1, 10, 50), 3)) == 7  # 2k + 2 groups


def test_grouped_batches_share_a_group_and_cover_every_index_once():
    group_ids = [0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0]
    sampler = list(range(11))
    batches = list(GroupedBatchSampler(sampler, group_ids, batch_size=3))
    assert len(batches) == len(GroupedBatchSampler(sampler, group_ids, 3)) == 4
    assert sorted(i for b in batches for i in b) == sampler
    full = [b for b in batches if len(b) == 3]
    assert all(len({group_ids[i] for i in b}) == 1 for b in full[:3])
    # group 1 fills first (at index 4), then group 0 (at 5), then group 1 again;
    # the leftovers of group 0 come last
    assert batches == [[1, 3, 4], [0, 2, 5], [6, 8, 9], [7, 10]]


def test_grouped_batch_count_is_ceil_of_samples_over_batch_size_whatever_the_groups():
    rng = np.random.default_rng(0)
    for n in (1, 7, 16, 33):
        groups = rng.integers(0, 4, size=n).tolist()
        assert len(list(GroupedBatchSampler(range(n), groups, 4))) == -(-n // 4)


def test_collate_returns_lists_without_padding():
    a, b = torch.zeros(3, 4, 5), torch.zeros(3, 6, 2)
    images, targets = collate_lists([(a, {"i": 1}), (b, {"i": 2})])
    assert images[0] is a and images[1] is b and targets == [{"i": 1}, {"i": 2}]


# --------------------------------------------------------------------------- files from others
def test_annotations_without_iscrowd_area_or_id_get_defaults_and_evaluate(tmp_path):
    from reference.evaluate import coco_evaluate

    path = _write(tmp_path / "bare.json", {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 40, 40]},
                        {"image_id": 1, "category_id": 1, "bbox": [30, 30, 20, 10]}]})
    coco = load_coco(path)
    anns = coco.dataset["annotations"]
    assert [a["iscrowd"] for a in anns] == [0, 0] and [a["area"] for a in anns] == [1600, 200]
    assert len({a["id"] for a in anns}) == 2
    detections = [{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9}
                  for a in anns]
    assert coco_evaluate(coco, detections)["AP"] == pytest.approx(1.0)


def test_annotations_of_unknown_categories_or_images_are_counted_and_logged(tmp_path, caplog):
    images, _ = _tiny_coco(tmp_path)
    ann = _write(tmp_path / "unknown.json", {
        "images": [{"id": 5, "file_name": "a.png", "width": 40, "height": 20}],
        "categories": [{"id": 7, "name": "seven"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 10, 5]},
            {"id": 2, "image_id": 5, "category_id": 99, "bbox": [2, 3, 10, 5]},
            {"id": 3, "image_id": 42, "category_id": 7, "bbox": [2, 3, 10, 5]},
            {"id": 4, "image_id": 43, "category_id": 7, "bbox": [2, 3, 10, 5]}]})
    ds = CocoDetection(images, ann)
    assert ds.dropped == {"degenerate": 0, "unknown_category": 1, "unknown_image": 2}
    assert "dropped 1 annotations whose category_id" in caplog.text
    assert "dropped 2 annotations whose image_id" in caplog.text


def test_an_image_of_another_size_than_its_annotation_is_an_error_naming_it(tmp_path):
    images, _ = _tiny_coco(tmp_path)
    ann = _write(tmp_path / "big.json", {
        "images": [{"id": 5, "file_name": "a.png", "width": 192, "height": 160}],
        "categories": [{"id": 7, "name": "seven"}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 7, "bbox": [100, 3, 80, 50]}]})
    with pytest.raises(DatasetError, match=r"a.png' is 40x20 but the annotation file says 192x160"):
        CocoDetection(images, ann)[0]


def test_sixteen_bit_png_is_scaled_to_eight_bits_not_clipped_white(tmp_path):
    from reference.data import load_rgb

    values = np.array([[0, 257 * 128], [65535, 257 * 10]], dtype=np.uint16)  # (2, 2)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # what PIL makes of a 16-bit grayscale PNG
    rgb = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert rgb.shape == (2, 2, 3)
    assert rgb[..., 0].tolist() == [[0, 128], [255, 10]] and (rgb[..., 1] == rgb[..., 0]).all()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "P+transparency", "CMYK", "1"])
def test_every_common_image_mode_loads_as_rgb(tmp_path, mode):
    from reference.data import load_rgb

    base = Image.new("RGB", (6, 4), (200, 40, 40) if mode != "1" else (255, 255, 255))
    if mode == "P+transparency":
        picture = base.convert("P")
        picture.info["transparency"] = 0
        path = tmp_path / "p.png"
        picture.save(path, transparency=0)
    else:
        picture = base.convert(mode)
        path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
        picture.save(path)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (6, 4)
    expected = np.asarray(base.convert(mode.split("+")[0]).convert("RGB"))
    np.testing.assert_allclose(np.asarray(rgb, dtype=int), expected.astype(int), atol=2)


def test_a_dataset_image_in_sixteen_bits_trains_on_its_real_pixels(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.full((20, 40), 257 * 100, dtype=np.uint16)).save(images / "a.png")
    ann = _write(tmp_path / "a.json", {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 20}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]})
    image, _ = CocoDetection(images, ann)[0]
    assert image.unique().tolist() == [100]
