"""DVC stage `extract` (stage one): videos under data.root -> CLIP frame embeddings in cache/features.h5."""
import sys

import yaml

from pipeline.extract import ExtractConfig, extract_features
from pipeline.threads import set_threads


def main() -> None:
    set_threads("extract")
    params = yaml.safe_load(open("params.yaml"))
    cfg = ExtractConfig(root=params["data"]["root"], model=params["encoder"]["model"], **params["extract"])
    try:
        summary = extract_features(cfg)
    except (ValueError, OSError) as e:  # bad configuration, input or disk: one clear message, no traceback
        sys.exit(f"extract: {e}")
    print(summary)


if __name__ == "__main__":
    main()
