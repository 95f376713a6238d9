"""DVC stage `zeroshot`: text embeddings of the cache's class names (prompt ensemble), saved as a zero-shot head."""
import sys
from pathlib import Path

if not __package__:  # run as a file (python stages/zeroshot.py): import the project's packages from its folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pipeline.cache import CACHE_PATH, open_cache
from pipeline.heads import HEAD_FILES, CalibrationConfig, calibrate, mean_pool, save_linear
from pipeline.split import SPLIT_PATH, read_split
from pipeline.threads import set_threads
from pipeline.zeroshot import text_embeddings, zeroshot_head
from stages import config, read_params, stage


@stage("zeroshot")
def main() -> None:
    set_threads("stage_two")
    params = read_params()
    calibration = config(CalibrationConfig, params["calibration"], "calibration")
    cache = open_cache(CACHE_PATH)
    emb = text_embeddings(cache.attrs["encoder_model"], cache.class_names)
    head = zeroshot_head(emb, cache.class_names, cache.attrs)
    val = read_split(SPLIT_PATH, cache.clip_ids()) == "val"  # no training, but its temperature is fitted like the others'
    calibrate(head, mean_pool(cache.embeddings[val]), cache.labels[val], calibration.not_sure_below_chance_to_certain)
    save_linear(HEAD_FILES["zeroshot"], head.model.state_dict(), head.meta)
    if head.meta["temperature_note"]:
        print(f"zeroshot: note: {head.meta['temperature_note']}")
    print(f"zero-shot head for {len(cache.class_names)} classes ({len(head.meta['templates'])} prompts each) "
          f"saved to {HEAD_FILES['zeroshot']}")


if __name__ == "__main__":
    main()
