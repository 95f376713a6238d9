"""DVC stage `zeroshot`: text embeddings of the cache's class names (prompt ensemble), saved as a zero-shot head."""
import sys

import yaml

from pipeline.cache import open_cache
from pipeline.heads import HEAD_FILES, calibrate, mean_pool, save_linear
from pipeline.split import read_split
from pipeline.zeroshot import text_embeddings, zeroshot_head

CACHE, SPLIT = "cache/features.h5", "cache/split.csv"


def main() -> None:
    params = yaml.safe_load(open("params.yaml"))
    cache = open_cache(CACHE)
    try:
        emb = text_embeddings(cache.attrs["encoder_model"], cache.class_names)
    except ValueError as e:
        sys.exit(f"zeroshot: {e}")
    head = zeroshot_head(emb, cache.class_names, cache.attrs)
    val = read_split(SPLIT, cache.paths) == "val"  # no training, but its temperature is fitted like the others'
    calibrate(head, mean_pool(cache.embeddings[val]), cache.labels[val], params["calibration"]["not_sure_below"])
    save_linear(HEAD_FILES["zeroshot"], head.model.state_dict(), head.meta)
    print(f"zero-shot head for {len(cache.class_names)} classes ({len(head.meta['templates'])} prompts each) "
          f"saved to {HEAD_FILES['zeroshot']}")


if __name__ == "__main__":
    main()
