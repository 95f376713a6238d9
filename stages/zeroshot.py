"""DVC stage `zeroshot`: text embeddings of the cache's class names (the prompt ensemble of zeroshot.templates),
saved as a calibrated zero-shot head that records its templates."""
from pipeline.embed.hub import may_download
from pipeline.extract.cache import open_cache
from pipeline.heads.calibration import CalibrationConfig
from pipeline.heads.training import mean_pool
from pipeline.heads.kinds import FROM_TEXT, HEADS
from pipeline.paths import CACHE_PATH, SPLIT_PATH
from pipeline.heads.split_file import read_split
from pipeline.threads import set_threads
from pipeline.heads.zeroshot import preset_templates, text_embeddings, zeroshot_head
from stages import config, read_params, stage


@stage("zeroshot")
def main() -> None:
    set_threads("stage_two")
    params = read_params()
    calibration = config(CalibrationConfig, params["calibration"], "calibration")
    cache = open_cache(CACHE_PATH)
    model = cache.attrs["encoder_model"]  # named by the cache: fetched only when params.yaml names it too
    templates = preset_templates(params["zeroshot"]["templates"])
    text = text_embeddings(model, cache.class_names, templates, download=may_download(model))
    head = zeroshot_head(text, cache.class_names, cache.attrs)
    # Calibrated as the trained heads are (temperature and "not sure"), on every video it has not seen and that is
    # not kept for the test: a zero-shot head learns from none, so the training part is as unseen as the validation
    # part (the demo's 3 validation videos per class are too few to fit a temperature; with training, 17).
    held = read_split(SPLIT_PATH, cache.clip_ids())
    held = (held == "train") | (held == "val")
    head.calibrate(mean_pool(cache.embeddings[held]), cache.labels[held], calibration.not_sure_below_chance_to_certain)
    head.save(HEADS[FROM_TEXT].file)
    if head.calibration_.temperature_note:
        print(f"zeroshot: note: {head.calibration_.temperature_note}")
    print(f"zero-shot head for {len(cache.class_names)} classes ({len(head.templates)} prompts each) "
          f"saved to {HEADS[FROM_TEXT].file}")


if __name__ == "__main__":
    main()
