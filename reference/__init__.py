"""The readable reference implementation of the detection building blocks.

Every protocol name of SPEC.md that the reference implements is importable from
here (``import reference; reference.box_iou(...)``). One module per pipeline stage:
boxes, anchors, coders, assignment, sampling, targets, losses, nms, proposals, roi.
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
from reference.detectors.faster_rcnn import load_torchvision_faster_rcnn_weights  # noqa: F401
from reference.detectors.retinanet import load_torchvision_retinanet_weights  # noqa: F401

__version__ = "0.1.0"

# What the conformance suite reads: the flavours the reference claims and the file
# of deviations it declares (none: the reference is the spec's executable form).
CONFORMANCE = {
    "name": "reference",
    "version": __version__,
    "flavours": ["mmdet", "detectron2", "torchvision"],
}
