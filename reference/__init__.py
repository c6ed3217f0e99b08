"""The readable reference implementation of the detection building blocks.

Every protocol name of SPEC.md that the reference implements is importable from
here (``import reference; reference.box_iou(...)``). One module per pipeline stage:
boxes, anchors, coders, assignment, sampling, targets, losses, nms, proposals, roi.

Shape letters, one legend for every file one image passes through (image_list,
backbones, necks, heads, anchors, boxes, assignment, sampling, coders, targets,
losses, nms, proposals, roi, detectors):

    B          images in a batch                 C     foreground classes (C + 1 with background)
    H_l, W_l   height, width of feature level l  A     priors per location (anchors; 1 for points)
    n_l        priors of level l (H_l * W_l * A) N     priors of one image, all levels
    G          gt boxes of one image             P, Q  positives, negatives
    R          RoIs (proposals, sampled RoIs)    K     box groups per row: C class-specific, 1 agnostic
    k          kept candidates or detections     T     loss terms reduced together
"""

from reference.anchors import *  # noqa: F401,F403
from reference.assignment import *  # noqa: F401,F403
from reference.boxes import *  # noqa: F401,F403
from reference.coders import *  # noqa: F401,F403
from reference.losses import *  # noqa: F401,F403
from reference.nms import *  # noqa: F401,F403
from reference.proposals import *  # noqa: F401,F403
from reference.roi import *  # noqa: F401,F403
from reference.sampling import *  # noqa: F401,F403
from reference.targets import *  # noqa: F401,F403
from reference.detectors import DETECTOR_NAMES, ImageList, build_detector  # noqa: F401
from reference.detectors.torchvision_weights import (  # noqa: F401
    load_torchvision_faster_rcnn_weights,
    load_torchvision_retinanet_weights,
)
from reference.detectors.mmdet_weights import load_mmdet_weights  # noqa: F401

__version__ = "0.1.0"

# What the conformance suite reads: the flavours the reference claims and the file
# of deviations it declares (none: the reference is the spec's executable form).
CONFORMANCE = {
    "name": "reference",
    "version": __version__,
    "flavours": ["mmdet", "detectron2", "torchvision"],
}
