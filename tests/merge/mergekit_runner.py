"""Run mergekit on several recipes in one process (executed with the mergekit venv's python).

Usage: python mergekit_runner.py JOBS.json  -- JOBS is a list of [recipe.yaml, out_dir].
Not a test module: it imports mergekit, which lmbricks' own environment does not have.
"""

import json
import sys

import yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions


def main() -> None:
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    for recipe, out in jobs:
        with open(recipe) as fh:
            config = MergeConfiguration.model_validate(yaml.safe_load(fh))
        run_merge(config, out, MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
        print("done", out, flush=True)


if __name__ == "__main__":
    main()
