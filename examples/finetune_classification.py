"""Fine-tune a Hiera classifier from an MAE checkpoint with the `Trainer` and `evaluate`'s accuracy.

    python examples/finetune_classification.py --model_name_or_path mae-out --image_folder train/ \
        --eval_folder val/ --output_dir cls-out --eval_strategy epoch --num_train_epochs 10
    python examples/finetune_classification.py --model_name_or_path mae-out --dataset_name cifar10 \
        --image_column img --label_column label --eval_split test --output_dir cls-out

Folders hold one sub-folder per class (`train/dog/1.jpg`). `--model_name_or_path` is a saved `HieraForPreTraining`
(e.g. the output of `pretrain_mae.py`) or a converted Meta checkpoint; its decoder is dropped. As Meta does for
fine-tuning, the classifier pools the queries 3 times (`--num_query_pool`, the MAE models pool twice; pooling has no
weights). The accuracy metric ships with hiera-hf (`hiera_hf.metrics.load_accuracy`) and works offline. Same
data options and launch modes (`accelerate launch`) as `pretrain_mae.py`. `--lora_r 8` trains LoRA adapters (PEFT) on
every block's `qkv` (`--lora_target_modules`) and the classifier in full: the adapters are saved to
`OUTPUT_DIR/lora_adapter`, the merged model to `OUTPUT_DIR`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from accelerate import PartialState
from pretrain_mae import DataArguments, EpochCallback, build_dataset, collate
from transformers import AutoConfig, HfArgumentParser, Trainer, TrainingArguments, set_seed

from hiera_hf import HieraForImageClassification, HieraForVideoClassification, get_preset
from hiera_hf.hub import resolve_model
from hiera_hf.lora import LoraArguments, merge_for_saving
from hiera_hf.metrics import load_accuracy


@dataclass
class FinetuneArguments:
    model_name_or_path: str = field(
        metadata={"help": "A saved HieraForPreTraining (or Hiera) folder, an official variant name or a Hub repo id."}
    )
    label_column: str = field(default="label", metadata={"help": "Dataset column of the class labels."})
    eval_folder: str | None = field(default=None, metadata={"help": "Evaluation folder (same layout as training)."})
    eval_split: str | None = field(default=None, metadata={"help": "Evaluation split of --dataset_name."})
    num_query_pool: int = field(default=3, metadata={"help": "Query pooling stages of the classifier (Meta: 3)."})
    drop_path_rate: float = field(default=0.1, metadata={"help": "Stochastic depth rate (Meta's fine-tuning: 0.1+)."})
    mean_std_preset: str | None = field(
        default=None,
        metadata={"help": "Preset whose normalisation to use (default: ImageNet / Kinetics by modality)."},
    )


def main(argv: list[str] | None = None) -> Trainer:
    parser = HfArgumentParser((FinetuneArguments, LoraArguments, DataArguments, TrainingArguments))
    args, lora_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    training_args.remove_unused_columns = False
    set_seed(training_args.seed)

    with PartialState().main_process_first():  # an official name is downloaded and converted once
        folder = resolve_model(args.model_name_or_path)
    config = AutoConfig.from_pretrained(folder)
    video = len(config.image_size) == 3
    preset = get_preset(args.mean_std_preset or ("hiera_base_16x224" if video else "hiera_base_224"))
    train, names = build_dataset(
        data_args, config, preset.mean, preset.std, training_args.seed, label_column=args.label_column
    )
    datasets = [train]
    if args.eval_folder or args.eval_split:
        kind = "video_folder" if data_args.video_folder else "image_folder"
        eval_data = (
            replace(data_args, **{kind: args.eval_folder})
            if args.eval_folder
            else replace(data_args, dataset_split=args.eval_split)
        )
        evaluation, eval_names = build_dataset(
            eval_data, config, preset.mean, preset.std, training_args.seed, train=False, label_column=args.label_column
        )
        if eval_names != names:
            raise ValueError(f"Evaluation classes {eval_names} differ from the training classes {names}")
        datasets.append(evaluation)

    model_class = HieraForVideoClassification if video else HieraForImageClassification
    model = model_class.from_pretrained(
        folder,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        num_query_pool=args.num_query_pool,
        drop_path_rate=args.drop_path_rate,
    )
    model = lora_args.apply(model)  # with --lora_r: adapters on every qkv, the classifier trained in full
    accuracy = load_accuracy()

    def compute_metrics(prediction) -> dict[str, float]:
        return accuracy.compute(
            predictions=np.argmax(prediction.predictions, axis=-1), references=prediction.label_ids
        )

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=datasets[1] if len(datasets) > 1 else None,
        data_collator=collate,
        compute_metrics=compute_metrics,
        callbacks=[EpochCallback(*datasets)],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    merge_for_saving(trainer)  # with LoRA: the adapters to output_dir/lora_adapter, the merged model below
    trainer.save_model()
    if trainer.eval_dataset is not None:
        trainer.save_metrics("eval", trainer.evaluate())
    trainer.save_state()
    return trainer


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # before exit: a process group left to exit can abort the rank
