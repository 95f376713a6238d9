"""The app's Embeddings page under Streamlit's AppTest: the demo-like project, groups, no cache, 5,000 classes."""
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from app.common import shown_name
from pipeline.errors import CacheError, DataError, UserError
from pipeline.extract.cache import RANDOM_ENCODER_NOTE, read_cache, write_cache
from pipeline.tools.inspector import load, source_file
from pipeline.heads.split_file import write_split
from tests.apptest_helpers import app_at_page
from tests.conftest import APP, APP_RUN_S, committed_params
from tests.test_inspect import hand_cache

CONTAINER_PX = 800  # the page's column at a 1280-pixel window with the sidebar open (wide layout)


def embeddings_page() -> AppTest:
    return app_at_page("embeddings_page.py")


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


def equal_units(spec: dict) -> bool:
    """Whether a scatter's spec draws one unit as many pixels across as up (its domains over its size)."""
    (x0, x1), (y0, y1) = (spec["encoding"][a]["scale"]["domain"] for a in ("x", "y"))
    return abs((x1 - x0) / spec["width"] - (y1 - y0) / spec["height"]) < 1e-9 * max(x1 - x0, y1 - y0)


def test_long_paths_share_the_tables_width_and_are_said_to_be_cut():
    from app.embeddings_page import TABLE_W, equal_axes, text_widths
    short = pd.DataFrame({"a": ["x/1.mp4"], "b": ["x/2.mp4"], "similarity": [0.5]})
    assert text_widths(short, ("a", "b"), {}) == ({"a": 76, "b": 76}, [])  # whole: 7 characters and padding
    long = pd.DataFrame({"a": ["x/1.mp4"], "b": ["recordings/" * 20 + "2.mp4"], "similarity": [0.5]})
    widths, cut = text_widths(long, ("a", "b"), {"similarity": 90})
    assert widths["a"] == 76 and 76 + widths["b"] + 90 == TABLE_W and cut == ["b"]  # b takes the room left
    # a flat cloud of points: a wide, low chart (not a square one stretching it up)
    (_, (y0, y1)), (width, height) = equal_axes(np.array([0.0, 10.0]), np.array([0.0, 3.0]))
    assert width > height and abs((y1 - y0) / height - 11 / width) < 1e-9


def with_params(project, tmp_path) -> Path:
    """A copy of the project with params.yaml (as committed, data.root its videos): where the page reads frames."""
    shutil.copytree(project, tmp_path / "p")
    (tmp_path / "p" / "params.yaml").write_text(yaml.safe_dump(committed_params(data={"root": "data"})))
    return tmp_path / "p"


def test_embeddings_page_loads_under_apptest(project, tmp_path, monkeypatch):
    monkeypatch.chdir(with_params(project, tmp_path))
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
    from app.embeddings_page import MAP_PX, TABLE_W, legend_label_px
    for spec, px in zip(specs[:2], (MAP_PX, TABLE_W)):  # every class in the legend, distinct colours, names as long
        colour = spec["encoding"]["color"]  # as three columns of the chart's width allow (whole on hover)
        assert colour["scale"]["domain"] == ["clapping", "sitting", "walking"]
        assert len(set(colour["scale"]["range"])) == 3
        assert colour["legend"]["labelLimit"] == legend_label_px(px) >= 150 and colour["legend"]["symbolLimit"] == 0
    assert specs[0]["encoding"]["x"]["title"] == "principal component 1"
    assert equal_units(specs[0])  # the map is not squashed: a unit as long across as up
    heat = specs[2]  # square cells, every class named on both axes (Vega may not drop one for room)
    assert heat["width"] == heat["height"] and all(
        heat["encoding"][a]["axis"]["labelOverlap"] is False for a in ("x", "y"))
    # every path in the tables whole: each path column at least as wide as its longest path
    for d, w in zip(at.dataframe, table_widths(at)):
        for c, width in zip(d.value.columns, w):
            if c in ("path", "a", "b", "group"):
                assert width >= d.value[c].str.len().max() * 7, (c, width)
    assert not any("too long for the table" in c.value for c in at.caption)
    at.selectbox[0].set_value("walking/walking_2.mp4").run()
    assert not at.exception
    at.radio[0].set_value("tsne").run()
    assert not at.exception and any("no split yet" in m.value for m in at.markdown)
    assert charts(at)[0]["encoding"]["x"]["title"] == "t-SNE 1" and equal_units(charts(at)[0])


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
    assert "dvc repro extract" in embeddings_page().info[0].value


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


def images(at: AppTest) -> int:
    return sum(len(col.get("image")) for col in at.columns)


def test_frames_are_read_only_under_the_projects_data_root(project, tmp_path, monkeypatch):
    """A cache whose data_root says / and whose paths name a file outside the project (absolute, climbing out with
    .., or a link out of the data root) gets no frame drawn: videos are read only under params.yaml's data.root."""
    root = with_params(project, tmp_path)
    secret = tmp_path / "outside" / "secret.mp4"
    secret.parent.mkdir()
    shutil.copy(root / "data" / "sitting" / "sitting_0.mp4", secret)
    (root / "data" / "clapping" / "link.mp4").symlink_to(secret)
    cache = read_cache(root / "cache" / "features.h5")
    cache.attrs["data_root"] = "/"
    cache.paths[:3] = [str(secret), "../../outside/secret.mp4", "clapping/link.mp4"]
    write_cache(root / "cache" / "features.h5", cache)
    monkeypatch.chdir(root)
    at = embeddings_page()
    shown = {}
    for path in cache.paths[:4]:
        at.selectbox[0].set_value(path).run()
        assert not at.exception, at.exception
        shown[path] = (images(at), [c.value for c in at.caption if "Frames not shown" in c.value])
    assert shown[cache.paths[3]] == (4, [])  # a video under the data root: its frames
    for path in cache.paths[:3]:
        count, said = shown[path]
        assert count == 0 and len(said) == 1, (path, shown[path])
    assert "outside the data root" in shown[str(secret)][1][0] and "symbolic link" in shown["clapping/link.mp4"][1][0]


def test_source_file_refuses_every_way_out(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "v.mp4").write_bytes(b"x")
    (tmp_path / "data" / "a" / "in.mp4").symlink_to(tmp_path / "data" / "a" / "v.mp4")  # a link inside: fine
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.mp4").write_bytes(b"x")
    (tmp_path / "data" / "out").symlink_to(tmp_path / "elsewhere")  # a folder linked out of the data root
    root = tmp_path / "data"
    assert source_file(root, "a/v.mp4") == source_file(root, "a/./b/../v.mp4") == (root / "a" / "v.mp4").resolve()
    assert source_file(root, "a/in.mp4") == (root / "a" / "v.mp4").resolve()
    for path in ("/etc/passwd", "../x.mp4", "a/../../x.mp4", "out/secret.mp4", "a/\0.mp4"):
        with pytest.raises(DataError, match="not read"):
            source_file(root, path)


MARKDOWN = "![pixel](http://203.0.113.7/pixel.png) [a link](http://203.0.113.7/) www.example.com :red[red] $x^2$"


def test_strings_from_a_cache_are_shown_literally(project, tmp_path, monkeypatch):
    """A cache's encoder, fingerprint, sampling, preprocessing and class names holding Markdown are shown as text:
    each Markdown character escaped in every caption, warning and error (the browser test checks what Chromium
    does with them)."""
    root = with_params(project, tmp_path)
    cache = read_cache(root / "cache" / "features.h5")
    cache.attrs.update({k: MARKDOWN for k in ("encoder_model", "encoder_fingerprint", "sampling", "preprocess")})
    cache.class_names[0] = MARKDOWN
    write_cache(root / "cache" / "features.h5", cache)
    monkeypatch.chdir(root)
    at = embeddings_page()
    texts = [e.value for kind in ("caption", "markdown", "warning", "error", "info") for e in at.get(kind)]
    assert any(shown_name(MARKDOWN) in t for t in texts)  # the fingerprint's line, escaped
    assert not [t for t in texts if "](" in t or "![" in t or "www.example" in t or ":red[" in t]


def test_a_cache_refused_at_the_door_is_one_error_on_the_page(tmp_path, monkeypatch):
    """The page shows whatever the cache's door refuses (here a CacheError quoting Markdown) as one st.error, shown
    literally, and stops: no traceback."""
    (tmp_path / "cache").mkdir()
    hand_cache(tmp_path / "cache", np.eye(4)[[0, 1]], [0, 1])
    (tmp_path / "cache" / "f.h5").rename(tmp_path / "cache" / "features.h5")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params()))
    monkeypatch.chdir(tmp_path)

    def refuse(path, split=None):
        raise CacheError(f"{path}: labels out of range {MARKDOWN}")
    monkeypatch.setattr("pipeline.tools.inspector.load", refuse)
    monkeypatch.setattr("app.common.load", refuse)
    at = embeddings_page()
    assert [e.value for e in at.error] == [shown_name(f"{Path('cache/features.h5').absolute()}: labels out of range "
                                                      f"{MARKDOWN}")]
    assert not at.get("vega_lite_chart")


@pytest.mark.parametrize("crafted", ["label 99", "label -1", "NaN embeddings"])
def test_crafted_rows_are_one_error_on_the_page(crafted, tmp_path, monkeypatch):
    """Labels outside the class list and NaN embeddings are refused when the cache is opened (pipeline.extract.cache,
    issue 34 item 8), and the page shows that one line with st.error."""
    (tmp_path / "cache").mkdir()
    cache = hand_cache(tmp_path / "cache", np.eye(4)[[0, 1, 2]], [0, 1, 1])
    if crafted.startswith("label"):
        cache.labels[1] = int(crafted.split()[1])
    else:
        cache.embeddings[2, 0, 0] = np.nan
    write_cache(tmp_path / "cache" / "features.h5", cache)
    if crafted.startswith("label"):  # refused at the door; embeddings are checked finite as they are read
        with pytest.raises(UserError):
            load(tmp_path / "cache" / "features.h5")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params()))
    monkeypatch.chdir(tmp_path)
    at = embeddings_page()
    assert len(at.error) == 1
