"""Tiny random open-vocabulary detectors saved as transformers folders, their tokenizers made offline from a few
words (no Hub access), for `pipeline("zero-shot-object-detection", model=folder)`; and a stand-in detector with
fixed boxes per frame."""

import json
from pathlib import Path

import torch

WORDS = ["a", "dog", "cat", "red", "mug", "square", "the"]


def grounding_dino_folder(folder: Path, seed: int = 0) -> Path:
    """A Grounding DINO (Swin backbone, 1-layer BERT text encoder, 32-wide transformer) with a BERT tokenizer of
    `WORDS`, saved with its processor in `folder`."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    backbone = SwinConfig(
        embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    text = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )  # fmt: skip
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10,
        num_feature_levels=3, encoder_n_points=1, decoder_n_points=1, max_text_len=16, use_timm_backbone=False,
        use_pretrained_backbone=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    GroundingDinoProcessor(image_processor, BertTokenizer(str(folder / "vocab.txt"))).save_pretrained(folder)
    return folder


def owlv2_folder(folder: Path, seed: int = 0) -> Path:
    """An OWLv2 (1-layer, 16-wide text and vision towers, 32 px input) with a CLIP tokenizer of `WORDS` (whole-word
    tokens, no merges), saved with its processor in `folder`."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder.mkdir(parents=True, exist_ok=True)
    # OWL-ViT treats a query whose first token is id 0 as padding: "!" holds id 0, as in CLIP's own vocabulary.
    tokens = ["!", "<|startoftext|>", "<|endoftext|>", *(f"{word}</w>" for word in WORDS)]
    tokens += sorted({letter for word in WORDS for letter in word})
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tower = dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    config = Owlv2Config(
        text_config=dict(tower, vocab_size=len(tokens), max_position_embeddings=16, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0),
        vision_config=dict(tower, image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(config).eval().save_pretrained(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    Owlv2Processor(Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return folder


class FixedDetector:
    """A stand-in for a zero-shot-object-detection pipeline: on the image whose top-left red value is `t` (the test
    videos mark their frames so), the detections `boxes[t]`, a list of `(label, (x0, y0, x1, y1), score)`, for the
    labels asked, at least `threshold` (default 0.1, the pipeline's); `frames` lists the frames it was run on."""

    def __init__(self, boxes: dict[int, list[tuple[str, tuple[float, float, float, float], float]]]):
        self.boxes, self.frames = boxes, []

    def __call__(self, image, candidate_labels, threshold: float = 0.1) -> list[dict]:
        frame_idx = int(image.getpixel((0, 0))[0])
        self.frames.append(frame_idx)
        return [
            {"score": score, "label": label, "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box))}
            for label, box, score in self.boxes.get(frame_idx, [])
            if label in candidate_labels and score >= threshold
        ]
