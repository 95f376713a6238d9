"""DVC stage `split`: the train/val/test split of the cached clips, written with each clip's group to cache/split.csv.

Random, by group, or official lists (params.yaml: split.*; pipeline.split).
"""
from pipeline.cache import open_cache
from pipeline.paths import CACHE_PATH, SPLIT_PATH
from pipeline.split import UNUSED, SplitConfig, describe_protocol, make_split, write_split
from stages import config, read_params, stage, untracked_notes


@stage("split")
def main() -> None:
    cfg = config(SplitConfig, read_params()["split"], "split")
    cache = open_cache(CACHE_PATH)
    parts, groups, notes = make_split(cache, cfg)
    write_split(SPLIT_PATH, cache.clip_ids(), cache.labels, cache.class_names, parts, groups)
    for note in untracked_notes([cfg.train_list, cfg.test_list]) + notes:
        print(f"split: note: {note}")
    print(f"{SPLIT_PATH}: " + ", ".join(f"{p} {int((parts == p).sum())}" for p in ("train", "val", "test", UNUSED)
                                        if p != UNUSED or (parts == p).any()) + f" ({describe_protocol(cfg)})")


if __name__ == "__main__":
    main()
