"""SAM 2 / SAM 2.1: configuration, presets, the image and video models, the image processor and the video
tracking session (each imported on first use; automatic mask generation lives in `mask_generation`)."""

from .._lazy import lazy_exports

_EXPORTS = {
    "SAM2_PRESETS": ".presets",
    "Dam4SamSettings": ".tracking_strategies",
    "HieraHfSam2ImageProcessor": ".processing_sam2",
    "Sam2Base": ".modeling_sam2",
    "Sam2Config": ".configuration_sam2",
    "Sam2HieraBackbone": ".modeling_sam2",
    "Sam2ImageEmbeddingsOutput": ".modeling_sam2",
    "Sam2ImageProcessor": ".processing_sam2",
    "Sam2ImageSegmentationOutput": ".modeling_sam2",
    "Sam2Model": ".modeling_sam2",
    "Sam2PreTrainedModel": ".modeling_sam2",
    "Sam2Preset": ".presets",
    "Sam2VideoFrameOutput": ".modeling_sam2_video",
    "Sam2VideoFrameResult": ".video_tracking",
    "Sam2VideoModel": ".modeling_sam2_video",
    "Sam2VideoSession": ".video_session",
    "Sam2VisionOutput": ".modeling_sam2",
    "SamuraiSettings": ".tracking_strategies",
    "TextDetector": ".text_prompts",
    "TextTracker": ".text_prompts",
    "segment_text": ".text_prompts",
    "get_sam2_preset": ".presets",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
