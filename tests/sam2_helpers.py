"""Shared SAM 2 test helpers: Meta's image and video models with random weights, saved as an official `.pt`,
converted and loaded."""

import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2, build_sam2_video_predictor

from hiera_hf import Sam2Config, Sam2Model, Sam2VideoModel
from hiera_hf.conversion import convert_meta_sam2_state_dict
from hiera_hf.sam2.modeling_sam2 import VIDEO_ONLY_KEYS
from hiera_hf.sam2.presets import get_sam2_preset

# A small SAM 2.1 for fast CPU steps: 64x64 inputs (4x4 image embeddings, 16x16 low-resolution masks).
TINY = {
    "image_size": 64,
    "embed_dim": 16,
    "num_heads": (1, 1, 2, 2),
    "depths": (1, 1, 1, 1),
    "window_sizes": (4, 4, 2, 2),
    "global_attention_blocks": (2,),
    "window_position_embedding_background_size": (4, 4),
    "fpn_hidden_size": 32,
    "decoder_num_heads": 2,
    "decoder_mlp_dim": 64,
    "iou_head_hidden_dim": 32,
    "memory_attention_num_layers": 1,
    "memory_attention_feedforward_dim": 64,
    "memory_encoder_hidden_size": 16,
}


def tiny_config(**kwargs) -> Sam2Config:
    """`TINY` (and `kwargs`) over the sam2.1_hiera_tiny preset."""
    return Sam2Config.from_preset("sam2.1_hiera_tiny", **{**TINY, **kwargs})


def meta_model(name: str, seed: int = 0, image_size: int = 1024) -> torch.nn.Module:
    """Meta's model with random weights (at `image_size` through a hydra override). Meta zero-initialises biases,
    LayerNorm shifts, position embeddings and some tokens; every such tensor gets random values so that no path is
    trivially zero."""
    torch.manual_seed(seed)
    overrides = [] if image_size == 1024 else [f"++model.image_size={image_size}"]
    model = build_sam2(
        get_sam2_preset(name).meta_config, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides
    )
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param.ndim <= 1 or re.search(r"pos_embed|token|embed", param_name):
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def write_folder(meta: torch.nn.Module, name: str, path, **config_overrides) -> tuple:
    """Save Meta's weights as an official `.pt`, read it back safely, convert it and write a folder holding all
    converted weights (image and video) and the preset's config (with `config_overrides`).
    Returns (folder, converted state dict)."""
    checkpoint = path / f"{name}.pt"
    torch.save({"model": meta.state_dict()}, checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    converted = convert_meta_sam2_state_dict(state)
    folder = path / name
    Sam2Config.from_preset(name, **config_overrides).save_pretrained(folder)
    save_file(
        {k: v.contiguous() for k, v in converted.items()}, folder / "model.safetensors", metadata={"format": "pt"}
    )
    return folder, converted


def load_ours(folder, converted: dict, **kwargs) -> Sam2Model:
    """Load our model and check that the folder's keys are exactly ours plus the video model's."""
    model, info = Sam2Model.from_pretrained(folder, output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    ours = set(model.state_dict())
    video = {k for k in converted if any(re.match(p, k) for p in VIDEO_ONLY_KEYS)}
    assert ours | video == set(converted) and not ours & video
    return model.eval()


def scipy_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A CPU stand-in for Meta's CUDA `get_connected_components` (same contract): 8-connected components of binary
    masks `(N, 1, H, W)`; returns per-pixel component labels and component areas, both 0 off the mask."""
    import numpy as np
    from scipy import ndimage

    labels, areas = [], []
    for plane in mask[:, 0].cpu().numpy().astype(bool):
        label, _ = ndimage.label(plane, structure=np.ones((3, 3), dtype=int))
        counts = np.bincount(label.ravel())
        counts[0] = 0
        labels.append(label)
        areas.append(counts[label])
    return torch.from_numpy(np.stack(labels))[:, None], torch.from_numpy(np.stack(areas))[:, None]


def write_mp4(path, frames, container_options=None, codec_options=None):
    """Encode RGB `uint8` frames `(H, W, 3)` as an MPEG-4 file at 4 frames/s (PyAV); returns `path`."""
    import av

    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("mpeg4", rate=4, options=codec_options or {})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


# The real test media: $HIERA_HF_MEDIA, or `shared/media` beside the checkout (the README's layout).
MEDIA_FOLDER = Path(os.environ.get("HIERA_HF_MEDIA") or Path(__file__).resolve().parents[2] / "shared" / "media")


def media(name: str) -> str:
    """Path of a real test image or video in `MEDIA_FOLDER`."""
    if not (MEDIA_FOLDER / name).is_file():
        raise FileNotFoundError(f"{name} is not in {MEDIA_FOLDER} (set HIERA_HF_MEDIA to the media folder)")
    return str(MEDIA_FOLDER / name)


@torch.no_grad()
def randomize_meta_weights(meta: torch.nn.Module, score_shift: float) -> None:
    """Meta initialises biases and LayerNorm shifts to zero and the layer scales to 1e-6: randomise every 1-D tensor
    so that no path is trivially zero. Random weights also give every object about the same object score: spread
    the scores (x30) and shift them by `-score_shift` so that objects come out both present and absent."""
    for parameter in meta.parameters():
        if parameter.ndim <= 1:
            parameter.add_(0.1 * torch.randn_like(parameter))
    score_layer = meta.sam_mask_decoder.pred_obj_score_head.layers[2]
    score_layer.weight.mul_(30.0)
    score_layer.bias.sub_(score_shift)


def load_converted(meta: torch.nn.Module, config: Sam2Config, folder) -> tuple[Sam2VideoModel, dict]:
    """Convert Meta's weights into a folder and load it with `from_pretrained`; returns (model, loading info)."""
    config.save_pretrained(folder)
    converted = convert_meta_sam2_state_dict(meta.state_dict())
    save_file(
        {k: v.contiguous() for k, v in converted.items()}, folder / "model.safetensors", metadata={"format": "pt"}
    )
    return Sam2VideoModel.from_pretrained(folder, output_loading_info=True)


def meta_video_predictor(meta_config: str, image_size: int, *overrides: str) -> torch.nn.Module:
    """Meta's `SAM2VideoPredictor` of `meta_config` at `image_size` (hydra `overrides` appended), built after
    `torch.manual_seed(0)` with Meta's own initialisation."""
    torch.manual_seed(0)
    return build_sam2_video_predictor(
        meta_config,
        ckpt_path=None,
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={image_size}", *overrides],
    )


def upcast_memory(meta: torch.nn.Module) -> None:
    """Meta's predictor stores memories in bfloat16 and hands them to memory attention as they are, which fails on
    the CPU for some paths (reverse tracking with no pointers): give its memory attention float32 memories (ours
    rounds its stored memories to bfloat16 the same way)."""
    forward = meta.memory_attention.forward

    def upcast(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return forward(
            curr=curr, memory=memory.float(), curr_pos=curr_pos, memory_pos=memory_pos,
            num_obj_ptr_tokens=num_obj_ptr_tokens,
        )  # fmt: skip

    meta.memory_attention.forward = upcast


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two binary masks (1.0 when both are empty)."""
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


AMG_SIZE = 512  # model input of the automatic-mask-generation tests
# Thresholds for the random-weight model of `amg_models`: predicted IoUs are ~0.49-0.53, stability scores ~0.4-0.6.
AMG_FILTERS = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.45}


def amg_models(root: Path) -> dict:
    """Meta's sam2.1 tiny at `AMG_SIZE` with random weights and its hypernetwork outputs scaled by 30 (so that mask
    logits spread out and some masks pass the filters), ours converted from it into a folder under `root`, and
    dog.jpg: `{"meta", "ours", "folder", "image"}`."""
    name = "sam2.1_hiera_tiny"
    meta = meta_model(name, image_size=AMG_SIZE)
    with torch.no_grad():
        for mlp in meta.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
            mlp.layers[-1].bias.mul_(30)
    folder, converted = write_folder(meta, name, root, image_size=AMG_SIZE)
    image = np.asarray(Image.open(media("dog.jpg")).convert("RGB"))  # 500x331
    return {"meta": meta, "ours": load_ours(folder, converted), "folder": folder, "image": image}


def meta_generate(meta, image, output_mode: str = "coco_rle", **settings) -> list[dict]:
    """Meta's `SAM2AutomaticMaskGenerator` records of `image` at `AMG_SIZE`."""
    generator = SAM2AutomaticMaskGenerator(meta, output_mode=output_mode, **settings)
    scale = AMG_SIZE // 4
    generator.predictor._bb_feat_sizes = [(scale, scale), (scale // 2, scale // 2), (scale // 4, scale // 4)]
    return generator.generate(image)


def _segmentation(record: dict) -> np.ndarray:
    """A record's mask as a boolean array (COCO RLE decoded with pycocotools, imported only then)."""
    if isinstance(record["segmentation"], np.ndarray):
        return record["segmentation"].astype(bool)
    from pycocotools import mask as coco_mask

    return coco_mask.decode(record["segmentation"]).astype(bool)


def assert_same_records(ours: list[dict], meta: list[dict]) -> None:
    """Same number of masks; each of Meta's matched by click and predicted IoU; masks (binary, or decoded from COCO
    RLE) with IoU >= 0.999 (logits agree to 1e-4, so only pixels at the threshold may flip), same box and crop."""
    assert len(ours) == len(meta) > 0
    unmatched = list(ours)
    for reference in meta:
        candidates = [r for r in unmatched if r["point_coords"] == reference["point_coords"]]
        record = min(candidates, key=lambda r: abs(r["predicted_iou"] - reference["predicted_iou"]))
        unmatched.remove(record)
        assert abs(record["predicted_iou"] - reference["predicted_iou"]) < 1e-4
        # Stability is a ratio of pixel counts: one flipped pixel in ~50k moves it by ~2e-5.
        assert abs(record["stability_score"] - reference["stability_score"]) < 1e-3
        ours_mask, meta_mask = _segmentation(record), _segmentation(reference)
        assert (ours_mask & meta_mask).sum() / (ours_mask | meta_mask).sum() >= 0.999
        assert abs(record["area"] - reference["area"]) <= 0.001 * reference["area"]
        np.testing.assert_allclose(record["bbox"], reference["bbox"], atol=1)
        assert record["crop_box"] == reference["crop_box"]


def assert_pipeline_matches_meta(output: dict, meta: list[dict]) -> None:
    """Each of Meta's masks matched by predicted IoU (1e-4) with a mask of the mask-generation pipeline's `output`
    of IoU >= 0.999 (see `assert_same_records`), one to one."""
    assert len(output["masks"]) == len(meta) > 0
    unmatched = list(range(len(meta)))
    for mask, score in zip(output["masks"], output["scores"].tolist()):
        index = min(unmatched, key=lambda i: abs(meta[i]["predicted_iou"] - score))
        unmatched.remove(index)
        assert abs(meta[index]["predicted_iou"] - score) < 1e-4
        mask, reference = np.asarray(mask), _segmentation(meta[index])
        assert (mask & reference).sum() / (mask | reference).sum() >= 0.999
