"""transformers' dense-prediction heads on `HieraBackbone` (`backbone_config=HieraConfig(...)`), the table of the
README: each head builds, runs forward and backward at the checkpoints' 224 px and at other sizes (the backbone
resizes its position embeddings), with its loss; UperNet also on a converted checkpoint
(its weights loaded unchanged into the head's backbone)."""

import pytest
import torch
from transformers import (
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    DeformableDetrConfig,
    DeformableDetrForObjectDetection,
    DetrConfig,
    DetrForObjectDetection,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    RTDetrConfig,
    RTDetrForObjectDetection,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from hiera_hf import HieraBackbone, HieraConfig, HieraForImageClassification

pytestmark = pytest.mark.slow  # 16 heads trained a step each (Mask2Former at 320 px): minutes

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def backbone(out_features=STAGES) -> HieraConfig:
    return HieraConfig.from_preset("hiera_tiny_224", out_features=out_features)


DETR = {"use_timm_backbone": False, "use_pretrained_backbone": False, "num_queries": 10}
HEADS = {
    "UperNet": lambda: UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=backbone(), num_labels=3, hidden_size=64, auxiliary_in_channels=384)
    ),
    "Mask2Former": lambda: Mask2FormerForUniversalSegmentation(
        Mask2FormerConfig(backbone_config=backbone(), num_labels=3, num_queries=10, decoder_layers=2)
    ),
    "MaskFormer": lambda: MaskFormerForInstanceSegmentation(
        MaskFormerConfig(backbone_config=backbone(), num_labels=3, num_queries=10)
    ),
    "DETR": lambda: DetrForObjectDetection(DetrConfig(backbone_config=backbone(["stage4"]), num_labels=3, **DETR)),
    "Conditional DETR": lambda: ConditionalDetrForObjectDetection(
        ConditionalDetrConfig(backbone_config=backbone(["stage4"]), num_labels=3, **DETR)
    ),
    "Deformable DETR": lambda: DeformableDetrForObjectDetection(
        DeformableDetrConfig(backbone_config=backbone(), num_feature_levels=4, num_labels=3, **DETR)
    ),
    "RT-DETR": lambda: RTDetrForObjectDetection(
        RTDetrConfig(backbone_config=backbone(STAGES[1:]), encoder_in_channels=[192, 384, 768], num_queries=10)
    ),
}


def _targets(name: str, size: int) -> dict:
    """Training targets of each head's kind for two images of `size` (batch norm in UperNet needs two)."""
    if name == "UperNet":
        return {"labels": torch.randint(0, 3, (2, size, size), generator=torch.Generator().manual_seed(0))}
    if name in ("Mask2Former", "MaskFormer"):
        masks = torch.zeros(2, size, size)
        masks[0, : size // 2], masks[1, size // 2 :] = 1, 1
        return {"mask_labels": [masks, masks.flip(1)], "class_labels": [torch.tensor([0, 2])] * 2}
    box = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])}
    return {"labels": [box, box]}


@pytest.mark.parametrize("size", [224, 320])
@pytest.mark.parametrize("name", list(HEADS))
def test_head_trains_on_hiera_backbone(name, size):
    torch.manual_seed(0)
    model = HEADS[name]().train()
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    outputs = model(pixel_values=pixels, **_targets(name, size))
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    trunk = [p.grad for n, p in model.named_parameters() if "hiera" in n and p.grad is not None]
    assert trunk and any(bool(g.abs().sum() > 0) for g in trunk)  # the backbone learns too
    if name == "UperNet":
        assert outputs.logits.shape == (2, 3, size, size)


def test_backbone_refuses_other_sizes_when_asked():
    model = HieraBackbone(backbone()).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 320, 320)).feature_maps
        assert [tuple(m.shape[-2:]) for m in maps] == [(80, 80), (40, 40), (20, 20), (10, 10)]
        with pytest.raises(ValueError, match="interpolate_pos_encoding"):
            model(torch.randn(1, 3, 320, 320), interpolate_pos_encoding=False)


def test_upernet_on_a_converted_checkpoint(tmp_path):
    """The README's recipe: the head built from the folder's config, its backbone loaded from the folder (a
    converted classifier here; its head is dropped)."""
    torch.manual_seed(0)
    classifier = HieraForImageClassification(HieraConfig.from_preset("hiera_tiny_224", num_labels=5))
    classifier.save_pretrained(tmp_path / "hiera")
    config = UperNetConfig(
        backbone_config=HieraConfig.from_pretrained(tmp_path / "hiera", out_features=STAGES),
        num_labels=3, hidden_size=64, auxiliary_in_channels=384,
    )  # fmt: skip
    model = UperNetForSemanticSegmentation(config)
    model.backbone = HieraBackbone.from_pretrained(tmp_path / "hiera", out_features=STAGES)
    converted = dict(classifier.named_parameters())  # the backbone's are the classifier's but its head and norm
    loaded = dict(model.backbone.named_parameters())
    assert loaded and all(torch.equal(value, converted[name]) for name, value in loaded.items())
    model.eval()
    with torch.no_grad():
        assert model(pixel_values=torch.randn(1, 3, 256, 256)).logits.shape == (1, 3, 256, 256)
