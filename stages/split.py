"""DVC stage `split`: the train/val/test split of the cached clips, written with each clip's group to cache/split.csv.

Random, by group, or official lists (params.yaml: split.*; pipeline.heads.split).
"""
from pipeline.extract.cache import open_cache
from pipeline.errors import ConfigError, DataError
from pipeline.paths import CACHE_PATH, PARAMS, SPLIT_PATH
from pipeline.heads.split import UNUSED, SplitConfig, describe_protocol, make_split
from pipeline.heads.split_file import PARTS, write_split
from stages import config, read_params, stage, untracked_notes

# A split that cannot be made stops `dvc repro` / `dvc exp run` after stage one has replaced the cache: say what is
# left as it was (split.csv is a persisted output, replaced by rename only once a split is made: dvc.yaml) and what
# is not (params.yaml holds the settings that failed, `dvc exp run -S` included)
WORKSPACE = (f"nothing was written: {SPLIT_PATH} and the heads are still those of the previous data, while "
             f"{CACHE_PATH} may already be the new run's (stage one ran first), and {PARAMS} still holds the "
             f"settings that failed. Fix that key or the data and run again, or go back with `git checkout {PARAMS}` "
             f"(all of it: `git checkout {PARAMS} dvc.lock && dvc checkout`)")


@stage("split")
def main() -> None:
    cfg = config(SplitConfig, read_params()["split"], "split")
    cache = open_cache(CACHE_PATH)
    try:
        split = make_split(cache, cfg)
    except (ConfigError, DataError) as e:
        raise type(e)(f"{e}\n  {WORKSPACE}") from e
    write_split(SPLIT_PATH, cache.clip_ids(), cache.labels, cache.class_names, split.parts, split.groups,
                split.grounds)
    for note in untracked_notes([cfg.train_list, cfg.test_list]) + split.notes:
        print(f"split: note: {note}")
    for warning in split.warnings:
        print(f"split: warning: {warning}")
    parts = split.parts
    print(f"{SPLIT_PATH}: " + ", ".join(f"{p} {int((parts == p).sum())}" for p in (*PARTS, UNUSED)
                                        if p != UNUSED or (parts == p).any())
          + f" ({describe_protocol(cfg, split.grouping)})")


if __name__ == "__main__":
    main()
