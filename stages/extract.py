"""DVC stage `extract` (stage one): the videos of data.root -> CLIP frame embeddings in cache/features.h5.

The videos are those under data.root, one folder per class, or those the annotation file data.annotations names."""
from pipeline.extract import ExtractConfig, extract_features
from pipeline.threads import set_threads
from stages import config, read_params, stage, untracked_notes


def extract_config(params: dict) -> ExtractConfig:
    """Stage one's settings from params.yaml (data, encoder.model, extract): also the app's, for zero-shot."""
    return config(ExtractConfig, params["extract"], "extract", root=params["data"]["root"],
                  annotations=params["data"]["annotations"], classes=params["data"]["classes"],
                  model=params["encoder"]["model"])


@stage("extract")
def main() -> None:
    set_threads("extract")
    cfg = extract_config(read_params())
    for note in untracked_notes([cfg.annotations, cfg.classes], cfg.root):
        print(f"extract: note: {note}")
    print(extract_features(cfg))


if __name__ == "__main__":
    main()
