"""`python -m hiera_hf.app [--model NAME_OR_DIR] [--host H] [--port N] [--device D]`: the same as `hiera-hf app`."""

import argparse

from .arguments import add_app_arguments, run_app

parser = argparse.ArgumentParser(prog="python -m hiera_hf.app", description="The interactive SAM 2 app.")
add_app_arguments(parser)
run_app(parser.parse_args())
