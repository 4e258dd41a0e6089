"""Convert a Hiera or SAM 2 checkpoint (Meta's .pth / .pt or a transformers folder) to hiera-hf: `hiera-hf convert`
as a script, with the same flags (see `--help`).

    python conversion_scripts/convert_to_hf.py --checkpoint hiera_base_224.pth --variant hiera_base_224 \
        --output hiera-base-224
    python conversion_scripts/convert_to_hf.py --checkpoint sam2.1_hiera_tiny.pt --variant sam2.1_hiera_tiny \
        --output sam2.1-hiera-tiny
"""

import sys

from hiera_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
