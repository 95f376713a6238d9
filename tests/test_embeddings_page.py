"""The app's Embeddings page under Streamlit's AppTest: the demo-like project, groups, no cache, 5,000 classes."""
import json
import shutil
import tracemalloc

import numpy as np
import yaml
from streamlit.testing.v1 import AppTest

from pipeline.extract.cache import RANDOM_ENCODER_NOTE, read_cache
from pipeline.heads.split import write_split
from tests.conftest import APP, APP_RUN_S, committed_params
from tests.test_inspect import hand_cache

CONTAINER_PX = 800  # the page's column at a 1280-pixel window with the sidebar open (wide layout)


def embeddings_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=APP_RUN_S)
    at.run()
    at.switch_page("embeddings_page.py").run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list[dict]:
    """The page's Vega-Lite specs."""
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def table_widths(at: AppTest) -> list[list]:
    """Per dataframe, the width each of its columns is given (None: sized to its content)."""
    out = []
    for d in at.dataframe:
        config = json.loads(d.proto.columns)
        out.append([config.get(c, {}).get("width") for c in d.value.columns])
    return out


def test_embeddings_page_loads_under_apptest(project, monkeypatch):
    monkeypatch.chdir(project)
    at = embeddings_page()
    assert at.title[0].value == "Embeddings"
    assert RANDOM_ENCODER_NOTE in [w.value for w in at.warning]  # the project's tiny CLIP is random
    assert [m.value for m in at.metric][:3] == ["9", "3", "4"]
    assert at.selectbox[0].value == "clapping/clapping_0.mp4"
    assert sum(len(col.get("image")) for col in at.columns) == 4  # the chosen video's frames, from its file
    # every table fits its container: each column has a width, and they add up to less than the page's column
    widths = table_widths(at)
    assert widths and all(None not in w and sum(w) <= CONTAINER_PX for w in widths), widths
    specs = charts(at)
    assert len(specs) == 3  # the map, the frame-to-class similarity, the centroid heat map
    for spec in specs[:2]:  # every class in the legend, whole names, distinct colours
        colour = spec["encoding"]["color"]
        assert colour["scale"]["domain"] == ["clapping", "sitting", "walking"]
        assert len(set(colour["scale"]["range"])) == 3
        assert colour["legend"]["labelLimit"] == 0 and colour["legend"]["symbolLimit"] == 0
    assert specs[0]["encoding"]["x"]["title"] == "principal component 1"
    at.selectbox[0].set_value("walking/walking_2.mp4").run()
    assert not at.exception
    at.radio[0].set_value("tsne").run()
    assert not at.exception and any("no split yet" in m.value for m in at.markdown)
    assert charts(at)[0]["encoding"]["x"]["title"] == "t-SNE 1"


def test_embeddings_page_reports_groups_found_in_more_than_one_split_part(project, tmp_path, monkeypatch):
    """With a split whose groups hold several clips (here: a class each), the page lists the groups that straddle
    split parts, as `inspect --outliers` does."""
    shutil.copytree(project, tmp_path / "p")
    cache = read_cache(tmp_path / "p" / "cache" / "features.h5")
    parts = np.array(["test" if p.endswith("_1.mp4") else "train" for p in cache.paths])
    groups = np.array([f"{cache.class_names[y]}/take" for y in cache.labels])
    write_split(tmp_path / "p" / "cache" / "split.csv", cache.clip_ids(), cache.labels, cache.class_names, parts,
                groups)
    monkeypatch.chdir(tmp_path / "p")  # another folder: the page's caches (keyed by absolute path) see a new cache
    at = embeddings_page()
    assert any("Groups in more than one split part (leakage)**: 3" in m.value for m in at.markdown)
    straddling = [d.value for d in at.dataframe if "group" in d.value.columns][0]
    assert sorted(straddling["group"]) == ["clapping/take", "sitting/take", "walking/take"]
    assert straddling[["train", "test"]].values.tolist() == [[2, 1]] * 3


def test_embeddings_page_without_a_cache(tmp_path, monkeypatch):
    # a project folder (params.yaml as committed) without a cache: the app stays here, whatever the checkout holds
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params()))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(APP, default_timeout=APP_RUN_S)
    at.run()
    at.switch_page("embeddings_page.py").run()
    assert not at.exception and "dvc repro extract" in at.info[0].value


def test_embeddings_page_with_5000_classes_is_bounded(tmp_path, monkeypatch):
    """5,000 classes (6,000 videos of 16 dims): no C x C table or Styler, each class's nearest classes instead, the
    frame-to-class chart on 10 classes, no legend; the page's peak memory under a C x C float32 matrix (100 MB)."""
    classes = 5000
    rng = np.random.default_rng(0)
    (tmp_path / "cache").mkdir()
    labels = np.concatenate([np.arange(classes), np.arange(1000)])  # 1,000 classes of two videos
    hand_cache(tmp_path / "cache", rng.normal(size=(len(labels), 16)), labels,
               names=[f"class_{c:04d}_with_a_long_name" for c in range(classes)])
    (tmp_path / "cache" / "f.h5").rename(tmp_path / "cache" / "features.h5")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params()))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(APP, default_timeout=APP_RUN_S)
    at.run()  # the Predict page (the default) first: its imports are not the Embeddings page's memory
    tracemalloc.start()
    try:
        at.switch_page("embeddings_page.py").run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric][:2] == ["6000", "5000"]
    nearest = [d.value for d in at.dataframe if "nearest classes (cosine)" in d.value.columns][0]
    assert len(nearest) == classes and nearest["nearest classes (cosine)"].str.count(" · ").eq(2).all()
    assert any("each class's three nearest" in c.value for c in at.caption)
    specs = charts(at)
    assert len(specs) == 2 and specs[0]["encoding"]["color"]["legend"] is None  # the map and the frame chart only
    assert len(specs[1]["encoding"]["color"]["scale"]["domain"]) == 10
    assert all(None not in w and sum(w) <= CONTAINER_PX for w in table_widths(at))
    assert peak < 100e6, peak
