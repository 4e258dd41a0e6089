"""MAE pre-training of Hiera (images or videos) with the `Trainer`.

Runs unchanged on one process or several:

    python examples/pretrain_mae.py --image_folder photos/ --output_dir mae-out --max_steps 1000
    accelerate launch --num_processes 4 examples/pretrain_mae.py --image_folder photos/ --output_dir mae-out
    python examples/pretrain_mae.py --dataset_name cifar10 --image_column img --output_dir mae-out
    python examples/pretrain_mae.py --video_folder clips/ --preset mae_hiera_base_16x224 --output_dir mae-out

Every `--reconstruction_steps` steps the main process writes `reconstructions/step_N.png`: for a few fixed inputs,
the original, what the encoder sees, and the reconstruction (predicted patches pasted over the visible ones).
Needs `torchvision` (augmentation), `datasets` for `--dataset_name` and `av` for videos. All other options are the
`TrainingArguments` (e.g. `--per_device_train_batch_size`, `--learning_rate`, `--save_steps`, `--bf16`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed

from hiera_hf import HieraConfig, HieraForPreTraining, get_preset
from hiera_hf.file_types import IMAGE_EXTENSIONS
from hiera_hf.hub import resolve_model
from hiera_hf.io_utils import atomic_write

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm"}


@dataclass
class DataArguments:
    image_folder: str | None = field(default=None, metadata={"help": "Folder of images (searched recursively)."})
    video_folder: str | None = field(default=None, metadata={"help": "Folder of video files (searched recursively)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A `datasets` dataset (Hub name or local path)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    dataset_split: str = field(default="train", metadata={"help": "The dataset split to train on."})
    image_column: str = field(default="image", metadata={"help": "The dataset column holding the images."})
    frame_stride: int = field(default=4, metadata={"help": "Videos: sample every n-th frame (Meta uses 4)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})

    def __post_init__(self):
        given = [name for name in ("image_folder", "video_folder", "dataset_name") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                f"Give exactly one of --image_folder, --video_folder, --dataset_name (got {given or 'none'})"
            )
        if self.frame_stride < 1:
            raise ValueError(f"--frame_stride must be >= 1, got {self.frame_stride}")


@dataclass
class ModelArguments:
    preset: str = field(
        default="mae_hiera_base_224", metadata={"help": "An `mae_hiera_*` preset to train from scratch."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue from a saved HieraForPreTraining (folder, mae_* variant name or Hub repo id)."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "JSON of HieraConfig fields to override, e.g. '{\"drop_path_rate\": 0.1}'."}
    )
    mask_ratio: float | None = field(
        default=None, metadata={"help": "Fraction of mask units hidden (preset's default)."}
    )
    reconstruction_steps: int = field(
        default=500, metadata={"help": "Write a reconstruction PNG every N steps (0: never)."}
    )
    parameter_checksums: bool = field(
        default=False, metadata={"help": "Each process writes a checksum of its final parameters (replica check)."}
    )


# -- data ---------------------------------------------------------------------------------------------------------


def image_transform(size: tuple[int, int], mean, std, train: bool = True) -> v2.Compose:
    """Training: Meta's MAE augmentation (random resized crop at scale 0.2-1, bicubic; horizontal flip). Evaluation:
    resize to size * 256 / 224 and centre crop, as Meta's notebooks. Then normalisation. Images or `(T, C, H, W)`
    clips (one crop for all frames)."""
    if train:
        spatial = [
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        resize = [int(s * 256 / 224) for s in size]
        spatial = [v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(size)]
    return v2.Compose([v2.ToImage(), *spatial, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class ClipTransform:
    """All frames `(T, C, H, W)` -> a clip `(C, num_frames, H', W')`: `num_frames` frames `stride` apart from a
    random start (evaluation: the centred start; short videos repeat their last frame), then `spatial`."""

    def __init__(self, num_frames: int, stride: int, spatial, train: bool = True):
        self.num_frames, self.stride, self.spatial, self.train = num_frames, stride, spatial, train

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        room = max(0, len(frames) - (self.num_frames - 1) * self.stride - 1)
        start = int(torch.randint(room + 1, ())) if self.train else room // 2
        picks = [min(start + i * self.stride, len(frames) - 1) for i in range(self.num_frames)]
        return self.spatial(frames[picks]).transpose(0, 1)


def list_files(folder: str, extensions: set[str]) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in extensions)
    if not files:
        raise ValueError(f"No files with extensions {sorted(extensions)} under {folder}")
    return files


def load_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def load_video(path: Path) -> torch.Tensor:
    """Every frame of a video file, `(T, C, H, W)` uint8."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError(f"No video frames in {path}")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


class Augmented(Dataset):
    """`{"pixel_values": transform(load(i))[, "labels": labels[i]]}`, or `transform(load(i))` itself when it is a
    dict (e.g. `{"pixel_values": ..., "labels": ...}` of an image and its mask, transformed together).

    The random augmentation of sample `i` is seeded by `(seed, epoch, i)`: a run resumed from a checkpoint sees the
    same crops as the original run, and the global random state, which draws the MAE masks, is left untouched (the
    `Trainer` restores it on resume). `epoch` is set by `EpochCallback`.
    """

    def __init__(self, items: list, load, transform, seed: int, labels: list[int] | None = None):
        self.items, self.load, self.transform, self.seed, self.labels = items, load, transform, seed, labels
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        item = self.load(self.items[index])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index) % 2**63)
            output = self.transform(item)
        example = output if isinstance(output, dict) else {"pixel_values": output}
        if self.labels is not None:
            example["labels"] = self.labels[index]
        return example


class EpochCallback(TrainerCallback):
    """Tells `Augmented` datasets the current epoch (also when resuming in the middle of one)."""

    def __init__(self, *datasets: Augmented):
        self.datasets = datasets

    def on_epoch_begin(self, args, state, control, **kwargs):
        for dataset in self.datasets:
            dataset.epoch = math.floor(state.epoch + 1e-6)


def build_dataset(
    data: DataArguments, config: HieraConfig, mean, std, seed: int, train: bool = True, label_column: str | None = None
) -> tuple[Augmented, list[str] | None]:
    """The dataset named by `data`, and its class names when `label_column` is given (for folders: the name of
    each file's parent folder, e.g. `root/dog/1.jpg` is a "dog")."""
    spatial = image_transform(tuple(config.image_size[-2:]), mean, std, train)
    if bool(data.video_folder) != config.is_video:
        raise ValueError(
            "--video_folder goes with a video preset (e.g. mae_hiera_base_16x224), images with an image one"
        )
    names = labels = None
    if data.video_folder or data.image_folder:
        video = bool(data.video_folder)
        items = list_files(data.video_folder or data.image_folder, VIDEO_EXTENSIONS if video else IMAGE_EXTENSIONS)
        load = load_video if video else load_image
        transform = ClipTransform(config.image_size[0], data.frame_stride, spatial, train) if video else spatial
        if label_column is not None:
            names = sorted({path.parent.name for path in items})
            labels = [names.index(path.parent.name) for path in items]
    else:
        import datasets

        items = datasets.load_dataset(data.dataset_name, data.dataset_config_name, split=data.dataset_split)
        for column in (data.image_column, label_column):
            if column is not None and column not in items.column_names:
                raise ValueError(f"Column {column!r} is not in the dataset's columns {items.column_names}")
        if label_column is not None:
            feature = items.features[label_column]
            names = list(feature.names) if hasattr(feature, "names") else sorted(set(items[label_column]))
            labels = (
                items[label_column] if hasattr(feature, "names") else [names.index(v) for v in items[label_column]]
            )
        column = data.image_column
        items, load, transform = range(len(items)), lambda i, rows=items: rows[i][column].convert("RGB"), spatial
    if data.max_train_samples is not None:
        items = items[: data.max_train_samples]
        labels = labels[: data.max_train_samples] if labels is not None else None
    return Augmented(items, load, transform, seed, labels), names


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    batch = {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([example["labels"] for example in examples])
    return batch


# -- reconstructions -----------------------------------------------------------------------------------------------


def reconstruction_grid(model: HieraForPreTraining, pixel_values: torch.Tensor, mean, std) -> Image.Image:
    """One row per input (images) or three rows of frames per input (videos): original, masked, reconstruction."""
    noise = torch.rand(pixel_values.shape[0], model.config.num_mask_units, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = model(pixel_values, noise=noise.to(pixel_values.device))
        original = model.reconstruct(pixel_values, outputs.labels)  # the targets' frames (time-strided for videos)
        hidden = model.unpatchify(outputs.loss_mask[..., None].expand_as(outputs.logits).to(original.dtype))
        predicted = model.reconstruct(pixel_values, outputs.logits)
    panels = [original, original * (1 - hidden), predicted * hidden + original * (1 - hidden)]
    shape = (1, -1) + (1,) * (original.ndim - 2)
    mean, std = (torch.tensor(v, dtype=original.dtype).view(shape) for v in (mean, std))
    rows = []
    for i in range(original.shape[0]):
        clips = [(panel[i : i + 1] * std + mean).clamp(0, 1)[0] for panel in panels]
        if original.ndim == 4:  # images: one row of three panels
            rows.append(torch.cat(clips, dim=-1))
        else:  # videos (C, T, H, W): one row of frames per panel
            rows.extend(torch.cat(clip.unbind(1), dim=-1) for clip in clips)
    grid = torch.cat(rows, dim=-2)
    return Image.fromarray((grid.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8))


class ReconstructionCallback(TrainerCallback):
    """Writes `output_dir/reconstructions/step_N.png` every `every` steps, on the main process."""

    def __init__(self, pixel_values: torch.Tensor, every: int, mean, std):
        self.pixel_values, self.every, self.mean, self.std = pixel_values, every, mean, std

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every <= 0 or state.global_step % self.every or not state.is_world_process_zero:
            return
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            image = reconstruction_grid(model, self.pixel_values.to(device), self.mean, self.std)
        finally:
            model.train(was_training)
        path = Path(args.output_dir) / "reconstructions" / f"step_{state.global_step}.png"
        atomic_write(path, lambda partial: image.save(partial, format="PNG"))


# -- main ----------------------------------------------------------------------------------------------------------


def parameter_checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def write_parameter_checksum(model: torch.nn.Module, training_args: TrainingArguments) -> None:
    """`output_dir/parameter_checksum_rank<N>.txt`: replicas of a distributed run must write the same one."""
    path = Path(training_args.output_dir) / f"parameter_checksum_rank{training_args.process_index}.txt"
    checksum = f"{parameter_checksum(model)}\n"
    atomic_write(path, lambda partial: Path(partial).write_text(checksum))


def main(argv: list[str] | None = None) -> Trainer:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    training_args.remove_unused_columns = False  # `with_transform` datasets need their raw image column
    set_seed(training_args.seed)

    if model_args.model_name_or_path:
        with PartialState().main_process_first():  # an official name is downloaded and converted once
            folder = resolve_model(model_args.model_name_or_path)
        model = HieraForPreTraining.from_pretrained(folder)
    else:
        overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
        model = HieraForPreTraining(HieraConfig.from_preset(model_args.preset, **overrides))
    if model_args.mask_ratio is not None:
        model.num_kept_units(model_args.mask_ratio)  # validates the ratio before training starts
        model.config.mask_ratio = model_args.mask_ratio
    preset = get_preset(model_args.preset)
    dataset, _ = build_dataset(data_args, model.config, preset.mean, preset.std, training_args.seed)

    callbacks = [EpochCallback(dataset)]
    if model_args.reconstruction_steps > 0:
        preview = collate([dataset[i] for i in range(min(4, len(dataset)))])["pixel_values"]
        callbacks.append(ReconstructionCallback(preview, model_args.reconstruction_steps, preset.mean, preset.std))
    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collate, callbacks=callbacks
    )
    # Every rank draws different masks (the model was built, identically, before this).
    torch.manual_seed(training_args.seed + training_args.process_index)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    if model_args.parameter_checksums:
        write_parameter_checksum(model, training_args)
    return trainer


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # before exit: a process group left to exit can abort the rank
