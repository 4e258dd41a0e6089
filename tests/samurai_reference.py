"""Run SAMURAI's official video predictor (PyPI `absolutely-not-samurai`, whose module is also named `sam2`) on a
folder of JPEG frames and save what the parity tests compare. Run in a subprocess with SAMURAI's install folder
first on `PYTHONPATH` (see `samurai_helpers.run_samurai`), never imported next to Meta's `sam2`.

    python samurai_reference.py REQUEST.json

The request names the official-format checkpoint (Meta's state dict layout), the frames, the image size, the
SAMURAI settings to override (hydra `++model.NAME=VALUE`), the prompt and the output `.npz`. The output holds, per
frame tracked (in order): the mask logits at the video's resolution, the object-score logit, and after each of the
model's mask-head calls the Kalman state SAMURAI keeps on the model (`kf_mean`, `kf_covariance`, `stable_frames`),
with the branch it took (0: start, 1: building up, 2: Kalman-weighted choice, -1: no multimask output).
"""

import json
import sys

import numpy as np
import torch


def main(request_path: str) -> None:
    request = json.loads(open(request_path).read())
    import sam2
    import sam2.utils.misc as samurai_misc
    from sam2.build_sam import build_sam2_video_predictor

    if "site-packages" in sam2.__file__:
        raise RuntimeError(f"Imported Meta's sam2 ({sam2.__file__}), not SAMURAI's: put its folder first on PYTHONPATH")
    overrides = [f"++model.image_size={request['image_size']}"]
    overrides += [f"++model.{name}={value}" for name, value in request["settings"].items()]
    predictor = build_sam2_video_predictor(
        "configs/samurai/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", hydra_overrides_extra=overrides
    )
    state = torch.load(request["checkpoint"], map_location="cpu", weights_only=True)["model"]
    predictor.load_state_dict(state, strict=True)
    predictor.eval()
    samurai_misc.get_connected_components = _connected_components  # its CUDA op's contract, on the CPU

    calls = []
    forward_heads = predictor._forward_sam_heads

    def recorded(*args, **kwargs):
        multimask = kwargs.get("multimask_output", args[5] if len(args) > 5 else False)
        before = predictor.stable_frames
        started = predictor.kf_mean is not None
        outputs = forward_heads(*args, **kwargs)
        if not multimask:
            branch = -1
        elif not started or before == 0:
            branch = 0
        elif before < predictor.stable_frames_threshold:
            branch = 1
        else:
            branch = 2
        calls.append(
            {
                "branch": branch,
                "stable_frames": predictor.stable_frames,
                "kf_mean": np.asarray(predictor.kf_mean, dtype=np.float64) if predictor.kf_mean is not None else None,
                "kf_covariance": (
                    np.asarray(predictor.kf_covariance, dtype=np.float64)
                    if predictor.kf_covariance is not None
                    else None
                ),
                "best_iou": float(outputs[7].reshape(-1)[0]),
                "object_score": float(outputs[6].reshape(-1)[0]),
            }
        )
        return outputs

    predictor._forward_sam_heads = recorded
    prompt = request["prompt"]
    with torch.inference_mode():
        inference = predictor.init_state(request["frames"], offload_video_to_cpu=True)
        if "box" in prompt:
            predictor.add_new_points_or_box(inference, 0, 1, box=prompt["box"])
        else:
            predictor.add_new_points_or_box(inference, 0, 1, points=prompt["points"], labels=prompt["labels"])
        prompt_calls = len(calls)
        logits, frames = [], []
        for frame_idx, _, masks in predictor.propagate_in_video(inference):
            frames.append(frame_idx)
            logits.append(masks[:, 0].float().numpy())
    np.savez(
        request["output"],
        frames=np.asarray(frames),
        mask_logits=np.stack(logits),
        prompt_calls=prompt_calls,
        branch=np.asarray([c["branch"] for c in calls]),
        stable_frames=np.asarray([c["stable_frames"] for c in calls]),
        has_kalman=np.asarray([c["kf_mean"] is not None for c in calls]),
        kf_mean=np.stack([c["kf_mean"] if c["kf_mean"] is not None else np.zeros(8) for c in calls]),
        kf_covariance=np.stack(
            [c["kf_covariance"] if c["kf_covariance"] is not None else np.zeros((8, 8)) for c in calls]
        ),
        best_iou=np.asarray([c["best_iou"] for c in calls]),
        object_score=np.asarray([c["object_score"] for c in calls]),
    )


def _connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8-connected labels and component areas of `(N, 1, H, W)` binary masks (the CUDA op's documented contract)."""
    from scipy import ndimage

    labels = np.zeros(mask.shape, dtype=np.int32)
    areas = np.zeros(mask.shape, dtype=np.int32)
    for index, image in enumerate(mask.bool().numpy()):
        labels[index, 0], _ = ndimage.label(image[0], structure=np.ones((3, 3), dtype=int))
        counts = np.bincount(labels[index, 0].ravel())
        counts[0] = 0
        areas[index, 0] = counts[labels[index, 0]]
    return torch.from_numpy(labels), torch.from_numpy(areas)


if __name__ == "__main__":
    main(sys.argv[1])
