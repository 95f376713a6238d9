"""DVC stage `extract` (stage one): the videos of data.root -> CLIP frame embeddings in cache/features.h5.

The videos are those under data.root, one folder per class, or those the annotation file data.annotations names."""
import os

# Before torch loads OpenMP (libgomp reads this once, at load): an idle OpenMP thread sleeps instead of spinning.
# Between the encoder's calls the spinning threads took the cores from the decode workers: 2,000 tiny clips took
# 292 s with them, 61 s without (bench/per_file.py, on the shared 2-core machine under load).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pipeline.extract.runner import ExtractConfig, extract_features  # noqa: E402
from pipeline.threads import set_threads  # noqa: E402
from stages import config, read_params, stage, untracked_notes  # noqa: E402


def extract_config(params: dict) -> ExtractConfig:
    """Stage one's settings from params.yaml (data, encoder.model, extract): also the app's, for zero-shot."""
    return config(ExtractConfig, params["extract"], "extract", root=params["data"]["root"],
                  annotations=params["data"]["annotations"], classes=params["data"]["classes"],
                  follow_links=params["data"]["follow_links"], model=params["encoder"]["model"])


@stage("extract")
def main() -> None:
    set_threads("extract")
    cfg = extract_config(read_params())
    for note in untracked_notes([cfg.annotations, cfg.classes], cfg.root):
        print(f"extract: note: {note}")
    print(extract_features(cfg))


if __name__ == "__main__":
    main()
