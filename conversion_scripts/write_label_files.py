"""Write the class-name files shipped in `src/hiera_hf/labels/` from well-kept sources (run once; needs timm and
torchvision, the test extra):

    python conversion_scripts/write_label_files.py

- `imagenet-1k.json`: timm's ImageNet-1k class descriptions (the synset lemmas, e.g. "tench, Tinca tinca"), the
  names transformers' and timm's ImageNet classifiers carry.
- `kinetics-400.json`: torchvision's Kinetics-400 action names (`torchvision.models._meta`, the list its video
  classifiers carry).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS_FOLDER = Path(__file__).resolve().parents[1] / "src" / "hiera_hf" / "labels"


def imagenet_1k() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return [info.index_to_description(index) for index in range(info.num_classes())]


def kinetics_400() -> list[str]:
    from torchvision.models._meta import _KINETICS400_CATEGORIES

    return list(_KINETICS400_CATEGORIES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=LABELS_FOLDER, help="folder to write (default: the package's)")
    args = parser.parse_args()
    for name, names, count in (("imagenet-1k", imagenet_1k(), 1000), ("kinetics-400", kinetics_400(), 400)):
        if len(names) != count:  # not distinct: ImageNet has two "crane"s (the bird and the machine)
            raise SystemExit(f"{name}: expected {count} names, got {len(names)}")
        (args.output / f"{name}.json").write_text(json.dumps(names, indent=0, ensure_ascii=False) + "\n", "utf-8")
        print(f"Wrote {args.output / f'{name}.json'}")


if __name__ == "__main__":
    main()
