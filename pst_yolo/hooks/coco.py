"""COCO scoring: each detection of pst_yolo's own COCO runs records the path of its image.

Wraps ``pred_to_json`` (``DetectionValidator`` and the validators built on it: segment, pose, obb) on one validator
object, for one run, and only for runs of :func:`pst_yolo.coco.run_val`, which installs :func:`record_im_file` as its
``on_val_start`` callback. The wrapper calls Ultralytics' method unchanged, then adds ``im_file`` (the image's path,
as in the dataset's ``im_files``) to the detections that call appended. Why no official extension point serves:
Ultralytics keys a detection's image by file name and stem only (``file_name``, ``image_id``), so two images that share
a name in different folders cannot be told apart afterwards, and no callback sees the image of each detection (a batch
callback sees the batch's images and the detections of all of them, not which detection is whose). The class, and
every other validator (a stock ``yolo val save_json=True`` included), is left as it is.
"""

from __future__ import annotations

from ._common import HOOK, PER_RUN, qualified, target

__all__ = ("record_im_file", "register")

PARAMS = ("self", "predn", "pbatch")  # DetectionValidator.pred_to_json(self, predn, pbatch)


def register() -> None:
    """Check, at import, that the method :func:`record_im_file` wraps per run has the expected signature."""
    from ultralytics.models.yolo.detect import DetectionValidator

    target(DetectionValidator, "pred_to_json", PARAMS)
    PER_RUN[f"{qualified(DetectionValidator)}.pred_to_json"] = DetectionValidator


def record_im_file(validator) -> None:
    """``on_val_start`` callback: this validator's ``pred_to_json`` also records each detection's ``im_file``.

    Args:
        validator (ultralytics.models.yolo.detect.DetectionValidator): The validator of the run; only this object is
            changed (an instance attribute that shadows the class's method).
    """
    target(type(validator), "pred_to_json", PARAMS)
    to_json = validator.pred_to_json
    if getattr(to_json, HOOK, False):  # already recording
        return

    def pred_to_json(predn, pbatch):
        """Ultralytics' ``pred_to_json``, then ``im_file`` on each detection it appended."""
        start = len(validator.jdict)
        to_json(predn, pbatch)
        if pbatch.get("im_file") is not None:
            for d in validator.jdict[start:]:
                d["im_file"] = str(pbatch["im_file"])

    setattr(pred_to_json, HOOK, True)
    validator.pred_to_json = pred_to_json
