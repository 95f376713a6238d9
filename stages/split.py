"""DVC stage `split`: a stratified, seeded train/val/test split of the cached videos, written to cache/split.csv."""
import sys
from pathlib import Path

if not __package__:  # run as a file (python stages/split.py): import the project's packages from its folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pipeline.cache import CACHE_PATH, open_cache
from pipeline.split import SPLIT_PATH, split_videos, write_split
from stages import read_params, stage


@stage("split")
def main() -> None:
    params = read_params()
    cache = open_cache(CACHE_PATH)
    parts = split_videos(cache.labels, cache.class_names, params["split"]["val"], params["split"]["test"],
                         params["split"]["seed"])
    write_split(SPLIT_PATH, cache.paths, cache.labels, cache.class_names, parts)
    print(f"{SPLIT_PATH}: " + ", ".join(f"{p} {int((parts == p).sum())}" for p in ("train", "val", "test")))


if __name__ == "__main__":
    main()
