"""DVC stage `split`: a stratified, seeded train/val/test split of the cached videos, written to cache/split.csv."""
import sys

import yaml

from pipeline.cache import open_cache
from pipeline.split import split_videos, write_split

CACHE, SPLIT = "cache/features.h5", "cache/split.csv"


def main() -> None:
    params = yaml.safe_load(open("params.yaml"))["split"]
    cache = open_cache(CACHE)
    try:
        parts = split_videos(cache.labels, cache.class_names, params["val"], params["test"], params["seed"])
    except ValueError as e:
        sys.exit(f"split: {e}")
    write_split(SPLIT, cache.paths, cache.labels, cache.class_names, parts)
    print(f"{SPLIT}: " + ", ".join(f"{p} {int((parts == p).sum())}" for p in ("train", "val", "test")))


if __name__ == "__main__":
    main()
