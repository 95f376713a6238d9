"""DVC stage `index`: the search index beside the cache (cache/features.index.h5), rebuilt when the cache changes.

Each clip's mean-pooled unit vector, and beyond search.exact_up_to clips faiss IVF lists (pipeline.tools.search_index).
"""
from pipeline.paths import CACHE_PATH, SEARCH_INDEX
from pipeline.tools.search_index import IndexConfig, build_index_file
from stages import config, read_params, stage


@stage("index")
def main() -> None:
    cfg = config(IndexConfig, read_params()["search"], "search")
    print(build_index_file(CACHE_PATH, SEARCH_INDEX, cfg))


if __name__ == "__main__":
    main()
