"""Mean IoU of binary masks (promptable segmentation: one predicted mask per prompt), as an `evaluate` metric
shipped with hiera-hf (no Hub access).

Load it with `hiera_hf.metrics.load_mean_iou()`. Each pair's IoU counts 1 when both masks are empty (as DAVIS's J);
the result is the mean over pairs. For class-wise semantic-segmentation mIoU use
`load_semantic_mean_iou()`.
"""

import datasets
import evaluate
import numpy as np

from hiera_hf.metrics.j_and_f import region_similarity

_DESCRIPTION = "Mean IoU: the average intersection over union of predicted and reference binary masks."
_INPUTS = """
Args:
    predictions (`list` of `(H, W)` binary arrays): predicted masks.
    references (`list` of `(H, W)` binary arrays): ground-truth masks of the same shapes.
Returns:
    `{"mean_iou": float}`
"""


class MeanIoU(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        mask = datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": mask, "references": mask}),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        if not len(predictions):
            raise ValueError("Give at least one prediction")
        ious = []
        for prediction, reference in zip(predictions, references):
            prediction, reference = np.asarray(prediction), np.asarray(reference)
            if prediction.shape != reference.shape or prediction.ndim != 2:
                raise ValueError(
                    f"Each prediction and reference must be an (H, W) mask of the same shape, got {prediction.shape} "
                    f"and {reference.shape}"
                )
            ious.append(region_similarity(prediction, reference))
        return {"mean_iou": float(np.mean(ious))}
