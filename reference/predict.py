"""Draw a trained detector's detections on an image.

    python -m reference.predict --checkpoint runs/train/checkpoint.pth \\
        --image a.jpg --out a.png [--score-threshold 0.5]

The image goes through the same resize and normalisation as validation; the boxes
are scaled back to the file's own size and drawn on the original pixels with
``torchvision.utils.draw_bounding_boxes``, labelled "class score".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes

__all__ = ["predict_image", "draw_detections"]


@torch.no_grad()
def predict_image(model: torch.nn.Module, picture: Image.Image, min_size: int, max_size: int,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Detections for one PIL image, boxes (K, 4) xyxy in the image's own pixels."""
    from reference.data import build_transforms

    image = v2.functional.pil_to_tensor(picture.convert("RGB"))  # (3, H, W) uint8
    resized = build_transforms(False, min_size, max_size)(image)  # (3, h, w) float
    model.eval()
    output = model([resized.to(device)])[0]
    scale_y = image.shape[-2] / resized.shape[-2]
    scale_x = image.shape[-1] / resized.shape[-1]
    boxes = output["boxes"].float().cpu() * torch.tensor([scale_x, scale_y, scale_x, scale_y])
    return {"boxes": boxes, "scores": output["scores"].cpu(), "labels": output["labels"].cpu()}


def draw_detections(picture: Image.Image, detections: dict, class_names: list[str],
                    score_threshold: float = 0.5) -> Image.Image:
    """The image with the detections scoring >= ``score_threshold`` drawn on it."""
    image = v2.functional.pil_to_tensor(picture.convert("RGB"))
    keep = detections["scores"] >= score_threshold
    boxes = detections["boxes"][keep]
    labels = [f"{class_names[int(k)]} {float(s):.2f}"
              for k, s in zip(detections["labels"][keep], detections["scores"][keep])]
    drawn = draw_bounding_boxes(image, boxes, labels=labels, colors="red", width=2)
    return v2.functional.to_pil_image(drawn)


def main(argv: list[str] | None = None) -> int:
    from reference.checkpoint import CheckpointError, load_model_from_checkpoint

    parser = argparse.ArgumentParser(prog="python -m reference.predict",
                                     description="Draw the detections of a checkpoint on "
                                     "an image.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pth from training")
    parser.add_argument("--image", required=True, help="input image (any format PIL reads)")
    parser.add_argument("--out", required=True, help="output image path (e.g. out.png)")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="draw detections scoring at least this")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                        help="only for a checkpoint of your own module:function builder: "
                        "name it here to allow importing it (a name read from the file is "
                        "never imported)")
    args = parser.parse_args(argv)

    if not Path(args.image).is_file():
        parser.error(f"--image {args.image!r} does not exist")
    try:
        model, checkpoint = load_model_from_checkpoint(args.checkpoint, args.device,
                                                       trusted_builder=args.model)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from reference.data import DatasetError, load_rgb
    try:
        picture = load_rgb(args.image)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = checkpoint["data"]
    detections = predict_image(model, picture, data["min_size"], data["max_size"], args.device)
    drawn = draw_detections(picture, detections, checkpoint["class_names"], args.score_threshold)
    drawn.save(args.out)
    shown = int((detections["scores"] >= args.score_threshold).sum())
    print(f"{shown} detections drawn into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
