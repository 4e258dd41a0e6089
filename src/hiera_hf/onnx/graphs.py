"""Names of the ONNX graphs of an exported folder and of their inputs and outputs (torch-free: shared by the exporter
and the runtime)."""

from __future__ import annotations

INSTALL_HINT = "the ONNX backend needs onnxruntime (and onnx to export): pip install 'hiera-hf[onnx]'"

# Graph file -> (input names, output names, dynamic axes), shared by the exporter and the runtime's checks.
GRAPHS: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, dict[int, str]]]] = {
    "image_encoder": (
        ("pixel_values",),
        ("high_res_features_0", "high_res_features_1", "vision_features", "image_embeddings",
         "vision_position_encoding"),
        {name: {0: "batch"} for name in
         ("pixel_values", "high_res_features_0", "high_res_features_1", "vision_features", "image_embeddings")},
    ),
    "mask_decoder": (
        ("image_embeddings", "high_res_features_0", "high_res_features_1", "point_coords", "point_labels",
         "mask_input", "has_mask_input", "object_score_threshold"),
        ("masks", "iou_scores", "object_score_logits", "object_pointers"),
        {
            "image_embeddings": {0: "images"},
            "high_res_features_0": {0: "images"},
            "high_res_features_1": {0: "images"},
            "point_coords": {0: "prompts", 1: "points"},
            "point_labels": {0: "prompts", 1: "points"},
            "mask_input": {0: "prompts"},
            "has_mask_input": {0: "prompts"},
            "masks": {0: "prompts"},
            "iou_scores": {0: "prompts"},
            "object_score_logits": {0: "prompts"},
            "object_pointers": {0: "prompts"},
        },
    ),
    "memory_attention": (
        ("vision_features", "vision_position_encoding", "memory_features", "memory_temporal_positions",
         "object_pointers", "pointer_frame_offsets", "max_pointer_offset"),
        ("conditioned_features",),
        {
            "memory_features": {0: "objects", 1: "memory_frames"},
            "memory_temporal_positions": {0: "memory_frames"},
            "object_pointers": {0: "objects", 1: "pointers"},
            "pointer_frame_offsets": {0: "pointers"},
            "conditioned_features": {0: "objects"},
        },
    ),
    "mask_prompt": (
        ("vision_features", "high_res_features_0", "high_res_features_1", "input_masks"),
        ("masks", "object_score_logits", "object_pointers"),
        {
            "vision_features": {0: "objects"},
            "high_res_features_0": {0: "objects"},
            "high_res_features_1": {0: "objects"},
            "input_masks": {0: "objects"},
            "masks": {0: "objects"},
            "object_score_logits": {0: "objects"},
            "object_pointers": {0: "objects"},
        },
    ),
    "memory_encoder": (
        ("vision_features", "mask_logits", "object_score_logits", "from_points"),
        ("memory_features", "memory_position_encoding"),
        {
            "vision_features": {0: "frames_or_objects"},
            "mask_logits": {0: "objects"},
            "object_score_logits": {0: "objects"},
            "from_points": {0: "objects"},
            "memory_features": {0: "objects"},
        },
    ),
}
GRAPHS["mask_decoder_multimask"] = GRAPHS["mask_decoder"]
HIERA_GRAPH = "model"


__all__ = ["GRAPHS", "HIERA_GRAPH", "INSTALL_HINT"]
