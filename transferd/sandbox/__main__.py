"""`python -m transferd.sandbox [--json] ...` (the same as `transferd sandbox`)."""

import argparse

from transferd.sandbox.cli import add_arguments, main

parser = argparse.ArgumentParser(prog="transferd sandbox", description="Run the Gencove-compatible sandbox.")
add_arguments(parser)
raise SystemExit(main(parser.parse_args()))
