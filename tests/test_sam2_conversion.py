"""The SAM 2 converter: `hiera-hf convert` on Meta's `.pt` files (every official variant, strict keys, bad files,
verification, card, atomic output, push, official-name download into the cache) and on transformers-format folders
(parity with transformers' `Sam2Model`).

Model parity for every variant is tested in test_sam2_image.py on the converted state dict; here the eight variants
are checked at the state-dict level (on the meta device: keys and shapes of the whole video model), and the full
pipeline, verification included, runs on sam2.1_hiera_tiny.
"""

import json
import os
import re
import stat
from pathlib import Path

import pytest
import sam2  # noqa: F401  (the reference; a missing package must fail, not skip)
import torch
import transformers
from accelerate import init_empty_weights
from sam2.build_sam import build_sam2
from sam2_helpers import meta_model

from hiera_hf import SAM2_PRESETS, Sam2Config, Sam2Model, checkpoints, hub
from hiera_hf.cli import main
from hiera_hf.conversion import (
    convert_meta_sam2_state_dict,
    convert_sam2,
    convert_transformers_sam2_state_dict,
    export,
    sam2_config_from_transformers,
)
from hiera_hf.conversion.hiera import build_model
from hiera_hf.conversion.verify import TOLERANCE
from hiera_hf.sam2.modeling_sam2_video import Sam2VideoModel

TINY = "sam2.1_hiera_tiny"
TOL = {"atol": 1e-4, "rtol": 1e-4}  # rtol for the large-magnitude mask logits


@pytest.mark.parametrize("name", list(SAM2_PRESETS))
def test_every_variant_converts_strictly(name):
    """Meta's full model (image + video) for every official config, on the meta device: every key is renamed and
    the whole video model takes exactly these keys and shapes."""
    with init_empty_weights():
        meta = build_sam2(SAM2_PRESETS[name].meta_config, ckpt_path=None, device="meta")
    state = meta.state_dict()
    converted = convert_meta_sam2_state_dict(state)
    assert len(converted) == len(state) - 3  # four point embeddings become one table
    model, notes = build_model(Sam2VideoModel, Sam2Config.from_preset(name), converted)
    assert set(model.state_dict()) == set(converted) and not notes
    assert ("no_obj_embed_spatial" in converted) == name.startswith("sam2.1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Meta's sam2.1 tiny with random weights saved as an official `.pt`."""
    path = tmp_path_factory.mktemp("sam2") / f"{TINY}.pt"
    meta = meta_model(TINY)
    torch.save({"model": meta.state_dict()}, path)
    return path, meta.state_dict()


def card_figures(card: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"^\| (.+?) \| ([0-9.e+-]+) \|$", card, re.M)}


def test_convert_cli_end_to_end(tiny, tmp_path, monkeypatch):
    checkpoint, meta_state = tiny
    calls = []
    monkeypatch.setattr(export, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id)))
    monkeypatch.setattr(
        export, "upload_folder", lambda **kw: calls.append(("upload", kw["repo_id"], kw["folder_path"]))
    )
    output = tmp_path / "out"
    assert main(["convert", "--checkpoint", str(checkpoint), "--variant", TINY, "--output", str(output),
                 "--no-progress", "--push-to-hub", "me/sam2-tiny"]) == 0  # fmt: skip
    assert calls == [("create", "me/sam2-tiny"), ("upload", "me/sam2-tiny", str(output))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left
    assert sorted(p.name for p in output.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "preprocessor_config.json"
    ]  # fmt: skip
    umask = os.umask(0)
    os.umask(umask)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in output.iterdir())  # none left private

    # One folder, every weight: the video model loads it with nothing missing or left over, holding Meta's tensors.
    video, info = Sam2VideoModel.from_pretrained(output, output_loading_info=True)
    assert not any(info.values()), info
    expected = convert_meta_sam2_state_dict(meta_state)
    assert set(video.state_dict()) == set(expected)
    assert all(torch.equal(value, expected[key]) for key, value in video.state_dict().items())
    assert type(Sam2Model.from_pretrained(output)) is Sam2Model

    card = (output / "README.md").read_text()
    front_matter = card.split("---")[1]
    for line in ("license: apache-2.0", "library_name: hiera-hf", "pipeline_tag: mask-generation", "- sam2"):
        assert line in front_matter
    assert f"`{TINY}`" in card and "facebook/sam2.1-hiera-tiny" in card and "SAM2ImagePredictor" in card
    figures = card_figures(card)
    assert len(figures) == 9 and all(error <= TOLERANCE for error in figures.values()), figures
    assert "mask logits / max |logit| (box)" in figures and "object-score logits (points)" in figures

    processor = json.loads((output / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "HieraHfSam2ImageProcessor"
    assert processor["size"] == {"height": 1024, "width": 1024}
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["image_std"] == [0.229, 0.224, 0.225]
    assert processor["do_resize"] and processor["do_rescale"] and processor["do_normalize"]


def test_bad_checkpoints_fail_clearly_and_write_nothing(tiny, tmp_path, capsys):
    checkpoint, meta_state = tiny
    files = tmp_path / "files"
    files.mkdir()
    (files / "corrupt.pt").write_bytes(checkpoint.read_bytes()[:100_000])  # truncated
    torch.save({"model_state": {"x": torch.zeros(1)}}, files / "hiera_layout.pt")
    torch.save({"model": {**meta_state, "image_encoder.trunk.extra": torch.zeros(1)}}, files / "extra.pt")
    missing = {k: v for k, v in meta_state.items() if k != "image_encoder.trunk.blocks.0.attn.qkv.weight"}
    torch.save({"model": missing}, files / "missing.pt")
    cases = [
        ("corrupt.pt", TINY, "not a readable PyTorch checkpoint"),
        ("hiera_layout.pt", TINY, "expected a dict with a 'model' entry"),
        ("extra.pt", TINY, "Unknown keys in SAM 2 checkpoint: image_encoder.trunk.extra"),
        ("missing.pt", TINY, "missing keys: hiera.blocks.0.attn.qkv.weight"),
        (checkpoint, "sam2.1_hiera_small", "does not hold a sam2.1_hiera_small but matches sam2.1_hiera_tiny"),
        (checkpoint, "sam3_hiera_tiny", "Unknown variant 'sam3_hiera_tiny'; Hiera variants: "),
    ]
    for file, variant, message in cases:
        output = tmp_path / "out"
        assert main(["convert", "--checkpoint", str(files / file), "--variant", variant, "--output", str(output),
                     "--no-progress", "--no-verify"]) == 1  # fmt: skip
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (file, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["files"]
    assert main(["convert", "--variant", TINY, "--checkpoint-name", "x", "--output", str(tmp_path / "o")]) == 1
    assert "--checkpoint-name applies to Hiera only" in capsys.readouterr().err


def test_official_name_download_and_cache(tiny, tmp_path, monkeypatch, no_network):
    """`--model sam2.1_hiera_tiny`: downloaded once from Meta's URL, converted into the cache, reused; offline the
    error names the `--model DIR` alternative. Verification is switched off here as if `sam2` were missing (the
    card then says so); it runs in the end-to-end test."""
    checkpoint, _ = tiny
    monkeypatch.setenv("HIERA_HF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(export, "find_spec", lambda name: None)
    downloads = no_network
    with pytest.raises(ConnectionError, match="sam2.1_hiera_tiny is not in the cache.*--model DIR"):
        hub.resolve_model(TINY)
    url = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    assert downloads == [url]

    def from_disk(url, dst, progress=True):
        downloads.append(url)
        Path(dst).write_bytes(checkpoint.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", from_disk)
    folder = hub.resolve_model(TINY, progress=False)
    assert folder == tmp_path / "cache" / "models" / TINY
    assert hub.resolve_model(TINY) == folder and downloads == [url, url]  # reused, no second download
    card = (folder / "README.md").read_text()
    assert "Not verified" in card and url in card
    assert checkpoints.download_checkpoint("sam2_hiera_large").name == "sam2_hiera_large.pt"
    assert downloads[-1] == "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"
    with pytest.raises(ValueError, match="one official checkpoint"):
        checkpoints.download_checkpoint(TINY, "mae_in1k")


# ---------------------------------------------------------------------------------------------------------------
# transformers-format folders
# ---------------------------------------------------------------------------------------------------------------

SIZE = 512  # a small input keeps transformers' model and ours cheap


def transformers_config(video: bool):
    common = {
        "vision_config": transformers.Sam2VisionConfig(
            backbone_config=transformers.Sam2HieraDetConfig(image_size=[SIZE, SIZE]),
            backbone_feature_sizes=[[SIZE // 4] * 2, [SIZE // 8] * 2, [SIZE // 16] * 2],
        ),
        "prompt_encoder_config": {"image_size": SIZE},
    }
    if video:
        return transformers.Sam2VideoConfig(
            **common, image_size=SIZE, memory_attention_rope_feat_sizes=[SIZE // 16] * 2
        )
    return transformers.Sam2Config(**common)


def random_transformers_model(model_class, config):
    """transformers' model with random weights; biases, norms, embeddings and tokens get noise too (their
    initial zeros/ones would leave paths untested)."""
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim <= 1 or re.search(r"embed|token|positional", name):
                param.add_(torch.randn_like(param) * 0.1)
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


@pytest.fixture(scope="module")
def transformers_video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "sam2-video"
    random_transformers_model(transformers.Sam2VideoModel, transformers_config(video=True)).save_pretrained(folder)
    return folder


def test_from_transformers_matches_transformers_sam2(transformers_video_folder, tmp_path):
    output = tmp_path / "out"
    assert main(["convert", "--from-transformers", str(transformers_video_folder), "--output", str(output),
                 "--no-progress"]) == 0  # fmt: skip
    figures = card_figures((output / "README.md").read_text())
    assert len(figures) == 9 and all(error <= TOLERANCE for error in figures.values()), figures
    _, info = Sam2VideoModel.from_pretrained(output, output_loading_info=True)
    assert not any(info.values()), info

    ours = Sam2Model.from_pretrained(output).eval()
    reference = transformers.Sam2Model.from_pretrained(transformers_video_folder).eval()
    assert ours.config.image_size == SIZE and ours.config.depths == (1, 2, 7, 2)
    pixel_values = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    prompts = [
        ({"input_points": torch.tensor([[[[100.0, 200.0], [300.0, 50.0]]], [[[400.0, 400.0], [10.0, 20.0]]]]),
          "input_labels": torch.tensor([[[1, 0]], [[1, 1]]])}, True),
        ({"input_boxes": torch.tensor([[[50.0, 60.0, 300.0, 400.0]], [[0.0, 0.0, 200.0, 100.0]]]),
          "input_points": torch.tensor([[[[120.0, 130.0]]], [[[20.0, 30.0]]]]),
          "input_labels": torch.tensor([[[0]], [[1]]])}, False),
    ]  # fmt: skip
    with torch.no_grad():
        embeddings = ours.get_image_embeddings(pixel_values)
        theirs_embeddings = reference.get_image_embeddings(pixel_values)
        torch.testing.assert_close(embeddings.image_embeddings, theirs_embeddings[-1], **TOL)
        for prompt, multimask in prompts:
            mine = ours(**embeddings, **prompt, multimask_output=multimask)
            theirs = reference(image_embeddings=theirs_embeddings, **prompt, multimask_output=multimask)
            torch.testing.assert_close(mine.pred_masks, theirs.pred_masks, **TOL)
            torch.testing.assert_close(mine.iou_scores, theirs.iou_scores, **TOL)
            torch.testing.assert_close(mine.object_score_logits, theirs.object_score_logits, **TOL)


def test_failed_verification_writes_nothing(transformers_video_folder, tmp_path, monkeypatch):
    """A conversion error that only the outputs reveal (one convolution off by 1e-2) fails the verification. The check is
    the same for Meta's reference (see the end-to-end test); transformers' smaller model keeps this one cheap."""
    real = export.convert_transformers_sam2_state_dict

    def corrupted(state_dict):
        converted = real(state_dict)
        converted["mask_decoder.conv_s0.weight"] = converted["mask_decoder.conv_s0.weight"] + 1e-2
        return converted

    monkeypatch.setattr(export, "convert_transformers_sam2_state_dict", corrupted)
    with pytest.raises(ValueError, match="differs from transformers' Sam2Model.*high-res features 0"):
        convert_sam2(tmp_path / "out", from_transformers=transformers_video_folder, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_from_transformers_image_only_and_bad_configs(tmp_path):
    """An image-only transformers `Sam2Model` converts (its card says the video model cannot load it); settings our
    model cannot represent, and differing copies of the prompt encoder's random features, are refused."""
    image_only = tmp_path / "hf-image"
    random_transformers_model(transformers.Sam2Model, transformers_config(video=False)).save_pretrained(image_only)
    output = convert_sam2(tmp_path / "out", from_transformers=image_only, progress=False)
    assert "`Sam2VideoModel` cannot load it" in (output / "README.md").read_text()
    assert type(Sam2Model.from_pretrained(output)) is Sam2Model

    config = transformers_config(video=True).to_dict()
    config["memory_fuser_intermediate_dim"] = 512
    with pytest.raises(ValueError, match="memory_fuser_intermediate_dim=512 \\(must be 1024\\)"):
        sam2_config_from_transformers(config)
    with pytest.raises(ValueError, match="model_type 'hiera'"):
        sam2_config_from_transformers({"model_type": "hiera"})
    state = transformers.Sam2Model(transformers_config(video=False)).state_dict()
    state["shared_image_embedding.positional_embedding"] = state["shared_image_embedding.positional_embedding"] + 1
    with pytest.raises(ValueError, match="uses one matrix for both"):
        convert_transformers_sam2_state_dict(state)
