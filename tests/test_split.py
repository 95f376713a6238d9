"""The split (random, by group, official lists) and its CSV."""
import dataclasses

import numpy as np
import pytest

from pipeline.extract.cache import empty_cache
from pipeline.errors import ConfigError, DataError
from pipeline.heads.split import SplitConfig, describe_protocol, make_split, split_videos
from pipeline.heads.split_file import read_split, write_split

NAMES = ["a", "b", "c"]


def labels_of(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_split_is_stratified_and_deterministic():
    labels = labels_of([20, 20, 40])
    parts = split_videos(labels, NAMES, 0.15, 0.15, seed=0)
    assert parts.shape == (80,)
    for c, n in enumerate([20, 20, 40]):
        mine = parts[labels == c]
        assert (mine == "test").sum() == round(n * 0.15) and (mine == "val").sum() == round(n * 0.15)
        assert (mine == "train").sum() == n - 2 * round(n * 0.15)
    np.testing.assert_array_equal(parts, split_videos(labels, NAMES, 0.15, 0.15, seed=0))
    assert not np.array_equal(parts, split_videos(labels, NAMES, 0.15, 0.15, seed=1))


def test_small_classes_get_at_least_one_video_per_part():
    parts = split_videos(labels_of([3, 4, 10]), NAMES, 0.15, 0.15, seed=0)
    for c in range(3):
        mine = parts[labels_of([3, 4, 10]) == c]
        assert {"train", "val", "test"} <= set(mine)


def test_classes_too_small_are_named():
    with pytest.raises(DataError, match=r"too small.*a \(2\).*c \(1\)"):
        split_videos(labels_of([2, 5, 1]), NAMES, 0.15, 0.15, seed=0)
    parts = split_videos(labels_of([2, 5, 1]), NAMES, 0.0, 0.0, seed=0)  # no held-out parts: nothing to split
    assert set(parts) == {"train"}


@pytest.mark.parametrize("val,test", [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions_are_rejected(val, test):
    with pytest.raises(ConfigError, match="fractions"):
        split_videos(labels_of([5, 5, 5]), NAMES, val, test, seed=0)


def test_csv_round_trip_and_stale_split(tmp_path):
    labels = labels_of([5, 5, 5])
    paths = np.array([f"{NAMES[y]}/v{i}.mp4" for i, y in enumerate(labels)], object)
    parts = split_videos(labels, NAMES, 0.2, 0.2, seed=0)
    write_split(tmp_path / "split.csv", paths, labels, NAMES, parts)
    assert (tmp_path / "split.csv").read_text().splitlines()[0] == "path,label,part,group,grouped_by"
    np.testing.assert_array_equal(read_split(tmp_path / "split.csv", paths[::-1]), parts[::-1])
    with pytest.raises(DataError, match="older than the cache"):
        read_split(tmp_path / "split.csv", np.append(paths, "a/new.mp4"))
    with pytest.raises(DataError, match="no split"):
        read_split(tmp_path / "none.csv", paths)


def ucf_cache(classes=("ApplyEyeMakeup", "HandStandPushups", "Typing"), groups=7, clips=3):
    """A cache's metadata named like UCF101: <Class>/v_<Class>_g<GG>_c<CC>.avi, several clips per group."""
    paths = [f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c in classes for g in range(1, groups + 1)
             for k in range(1, clips + 1)]
    labels = np.repeat(np.arange(len(classes)), groups * clips)
    return fake_cache(paths, labels, list(classes))


def fake_cache(paths, labels, names, group=None, part=None):
    n = len(paths)
    cache = empty_cache(2, 4, {}, names)
    return dataclasses.replace(cache, paths=np.array(paths, object), labels=np.asarray(labels, np.int64),
                               content_hash=np.array(paths, object), segment=np.full((n, 2), np.nan),
                               group=np.array(group or [""] * n, object),
                               annotated_part=np.array(part or [""] * n, object))


def test_the_default_is_todays_random_split():
    cache = ucf_cache()
    split = make_split(cache, SplitConfig())
    np.testing.assert_array_equal(split.parts, split_videos(cache.labels, cache.class_names, 0.15, 0.15, 0))
    # UCF101's naming is recognised, so the record tells the truth: the random split puts groups on two sides
    assert split.groups[0] == "ApplyEyeMakeup/01" and split.grouping.startswith("UCF101's source videos")
    assert len(split.notes) == 1 and split.notes[0].endswith("groups: " + split.grouping)
    assert "groups have clips in more than one part" in split.notes[0] and "split.method group" in split.notes[0]
    plain = fake_cache([f"a/{i}.mp4" for i in range(6)], [0] * 6, ["a"])
    split = make_split(plain, SplitConfig(val=0.2, test=0.2))
    assert split.groups.tolist() == plain.paths.tolist() and split.notes == [] and split.grouping.startswith("file")


@pytest.mark.parametrize("seed", range(5))
def test_group_split_never_puts_a_group_on_two_sides(seed):
    cache = ucf_cache()
    cfg = SplitConfig(method="group", group_pattern=r"_g(\d+)_", seed=seed, val=0.2, test=0.3)
    split = make_split(cache, cfg)
    parts, groups = split.parts, split.groups
    assert groups[0] == "ApplyEyeMakeup/01" and len(set(groups)) == 21
    for g in set(groups):
        assert len(set(parts[groups == g])) == 1, g
    for c in range(3):
        assert {"train", "val", "test"} <= set(parts[cache.labels == c])
    if seed == 0:  # a random split of the same clips does put groups on two sides: the leakage this prevents
        random = make_split(cache, SplitConfig(group_pattern=r"_g(\d+)_")).parts
        assert any(len(set(random[groups == g])) > 1 for g in set(groups))
        assert not np.array_equal(parts, make_split(cache, SplitConfig(**{**vars(cfg), "seed": 1})).parts)


def test_group_errors_name_the_setting():
    cache = ucf_cache()
    with pytest.raises(ConfigError, match=r"finds no group in 63 file names, e\.g\. ApplyEyeMakeup/v_"):
        make_split(cache, SplitConfig(method="group", group_pattern=r"_x(\d+)_"))
    with pytest.raises(ConfigError, match="no capture group"):
        make_split(cache, SplitConfig(method="group", group_pattern=r"_g\d+_"))
    with pytest.raises(DataError, match=r"too few groups.*ApplyEyeMakeup \(2 groups\)"):
        make_split(ucf_cache(groups=2), SplitConfig(method="group", group_pattern=r"_g(\d+)_"))
    with pytest.raises(ConfigError, match="split.method must be one of"):
        make_split(cache, SplitConfig(method="official"))


def test_lists_reproduce_ucf101_official_lists_exactly(tmp_path):
    """UCF101 split 1: groups 1-2 test, the rest train (trainlist lines carry a 1-based class index); the lists
    spell one class as UCF101's do (HandstandPushups), unlike its files."""
    cache = ucf_cache()
    train, test = [], []
    for p in cache.paths:
        listed = p.replace("HandStandPushups/", "HandstandPushups/")
        (test if "_g01_" in p or "_g02_" in p else train).append(listed)
    (tmp_path / "trainlist01.txt").write_text("".join(f"{p} {i % 3 + 1}\r\n" for i, p in enumerate(train)))
    (tmp_path / "testlist01.txt").write_text("".join(f"{p}\r\n" for p in test) + "Typing/v_Typing_g01_c09.avi\n")
    cfg = SplitConfig(method="lists", train_list=str(tmp_path / "trainlist01.txt"),
                      test_list=str(tmp_path / "testlist01.txt"), group_pattern=r"_g(\d+)_", val=0.2)
    split = make_split(cache, cfg)
    parts, groups, notes = split.parts, split.groups, split.notes
    is_test = np.array(["_g01_" in p or "_g02_" in p for p in cache.paths])
    np.testing.assert_array_equal(parts == "test", is_test)
    assert set(parts[~is_test]) == {"train", "val"}
    for g in set(groups):
        assert len(set(parts[groups == g])) == 1, g  # validation carved from train by group
    assert notes == ["1 listed video is not in the cache (missing or skipped), e.g. the one of "
                     f"{tmp_path / 'testlist01.txt'} line {len(test) + 1}"]  # the file's place, not its bytes
    assert "testlist01.txt" in describe_protocol(cfg) and "official lists" in describe_protocol(cfg)


def test_lists_read_hmdb51_split_files(tmp_path):
    names = ["brush_hair", "cartwheel"]
    paths = [f"{c}/{c}_clip{i}.avi" for c in names for i in range(6)]
    cache = fake_cache(paths, np.repeat([0, 1], 6), names)
    for c in names:  # clips 0-1 test (2), 2 unused (0), 3-5 train (1)
        (tmp_path / f"{c}_test_split1.txt").write_text(
            "".join(f"{c}_clip{i}.avi {2 if i < 2 else 0 if i == 2 else 1} \n" for i in range(6)))
    cfg = SplitConfig(method="lists", test_list=str(tmp_path / "*_test_split1.txt"), val=0.3)
    split = make_split(cache, cfg)
    parts, notes = split.parts, split.notes
    assert notes == []
    for c in range(2):
        mine = parts[cache.labels == c]
        assert mine[:3].tolist() == ["test", "test", "unused"] and set(mine[3:]) == {"train", "val"}
    (tmp_path / "brush_hair_test_split1.txt").write_text("a.avi 3\n")
    with pytest.raises(DataError, match=r"brush_hair_test_split1.txt line 1: expected `video.avi 0\|1\|2`"):
        make_split(cache, cfg)
    with pytest.raises(DataError, match="matches no file"):
        make_split(cache, SplitConfig(method="lists", test_list=str(tmp_path / "*_test_split9.txt")))


def test_lists_from_the_annotations_split_column():
    paths = [f"a/{i}.mp4" for i in range(8)] + [f"b/{i}.mp4" for i in range(8)]
    part = (["train"] * 6 + ["test"] * 2) * 2
    group = [f"src{i // 2}" for i in range(16)]  # two clips per source video
    cache = fake_cache(paths, np.repeat([0, 1], 8), ["a", "b"], group, part)
    split = make_split(cache, SplitConfig(method="lists", val=0.3))
    parts, groups = split.parts, split.groups
    assert (parts == "test").tolist() == [p == "test" for p in part] and set(parts[np.array(part) == "train"]) == {
        "train", "val"}
    for g in set(groups):
        assert len(set(parts[groups == g])) == 1, g
    with pytest.raises(ConfigError, match="split column"):
        make_split(fake_cache(paths, np.repeat([0, 1], 8), ["a", "b"]), SplitConfig(method="lists"))


def test_split_csv_keeps_clip_ids_and_groups(tmp_path):
    ids = np.array(["v/a.mp4#t=1,3", "v/a.mp4#t=3,5", "v/b.mp4"], object)
    write_split(tmp_path / "s.csv", ids, np.array([0, 0, 1]), NAMES, np.array(["train", "train", "test"]),
                np.array(["a", "a", "b"]))
    assert read_split(tmp_path / "s.csv", ids[::-1], "group").tolist() == ["b", "a", "a"]
    (tmp_path / "old.csv").write_text("path,label,part\nv/b.mp4,b,test\n")
    with pytest.raises(DataError, match="no 'group' column"):
        read_split(tmp_path / "old.csv", ids[2:], "group")


def split_lists(tmp_path, cache, train, test, **cfg):
    (tmp_path / "train.txt").write_text("".join(f"{p} 1\r\n" for p in train))
    (tmp_path / "test.txt").write_text("".join(f"{p}\r\n" for p in test))
    return make_split(cache, SplitConfig(method="lists", train_list=str(tmp_path / "train.txt"),
                                         test_list=str(tmp_path / "test.txt"), **cfg))


def test_lists_without_a_pattern_group_ucf101_by_its_names_and_say_so(tmp_path):
    """The silent leak of issue 28: val carved from train per file put clips of one group on both sides."""
    cache = ucf_cache()
    test = [p for p in cache.paths if "_g01_" in p]
    split = split_lists(tmp_path, cache, [p for p in cache.paths if p not in test], test, val=0.3)
    for g in set(split.groups):
        assert len(set(split.parts[split.groups == g])) == 1, g
    assert len(set(split.groups)) == 21 and split.notes == [] and set(split.grounds) == {"UCF101"}
    write_split(tmp_path / "split.csv", cache.clip_ids(), cache.labels, cache.class_names, split.parts, split.groups,
                split.grounds)  # the record the inspector reads says what the groups came from
    assert set(read_split(tmp_path / "split.csv", cache.clip_ids(), "grouped_by")) == {"UCF101"}
    protocol = describe_protocol(SplitConfig(method="lists", test_list="test.txt"), split.grouping)
    assert "val 0.15 of train by UCF101's source videos (v_<Class>_g<NN>_c<NN>)" in protocol
    # most names UCF101's but not all: refused with the pattern to set (a random split only says so)
    odd = fake_cache([*cache.paths, "Typing/extra.avi"], [*cache.labels, 2], cache.class_names)
    with pytest.raises(ConfigError, match=r"63 of 64 file names follow UCF101's naming .* 1 do not \(e\.g\. "
                                          r"Typing/extra\.avi\): set split\.group_pattern .*'_g\(\\\\d\+\)_c"):
        split_lists(tmp_path, odd, [p for p in cache.paths if p not in test], test)
    assert "do not" in make_split(odd, SplitConfig()).grouping


def test_hmdb51_names_group_by_their_source_video():
    names = [f"{src}_brush_hair_{'f' if k else 'u'}_nm_np1_{'fr' if k else 'ba'}_goo_{k}.avi"
             for src in ("April_09", "Brushing_Hair_with_Beautiful_Girl", "#20_Rhythm", "Aussie_Jumps")
             for k in range(3)]
    cache = fake_cache([f"brush_hair/{n}" for n in names], [0] * 12, ["brush_hair"])
    split = make_split(cache, SplitConfig(method="group", val=0.25, test=0.25))
    assert split.groups[0] == "brush_hair/April_09_brush_hair" and len(set(split.groups)) == 4
    assert split.grouping.startswith("HMDB51's source videos")
    for g in set(split.groups):
        assert len(set(split.parts[split.groups == g])) == 1


def test_group_by_stem_and_folder_need_no_regex():
    paths = [f"a/rec{r}_part{k}.mp4" for r in range(4) for k in range(3)] + [f"b/take-{r}-{k}.mp4" for r in range(4)
                                                                             for k in range(3)]
    cache = fake_cache(paths, [0] * 12 + [1] * 12, ["a", "b"])
    split = make_split(cache, SplitConfig(method="group", group_by="stem", val=0.25, test=0.25))
    assert split.groups[:4].tolist() == ["a/rec0", "a/rec0", "a/rec0", "a/rec1"] and split.groups[12] == "b/take-0"
    assert len(set(split.groups)) == 8 and "split.group_by stem" in split.grouping
    nested = fake_cache([f"a/rec{i // 3}/{i}.mp4" for i in range(12)], [0] * 12, ["a"])
    assert len(set(make_split(nested, SplitConfig(method="group", group_by="folder", val=0.25, test=0.25)).groups)) == 4
    with pytest.raises(ConfigError, match="split.group_by must be one of"):
        make_split(cache, SplitConfig(group_by="stems"))
    with pytest.raises(ConfigError, match="not both"):
        make_split(cache, SplitConfig(group_by="stem", group_pattern="(rec)"))


def test_identical_content_lands_in_one_part_and_two_labels_are_warned():
    paths = [f"a/{i}.mp4" for i in range(6)] + [f"b/{i}.mp4" for i in range(6)]
    cache = fake_cache(paths, [0] * 6 + [1] * 6, ["a", "b"])
    content = cache.content_hash.copy()
    content[[1, 2]] = "same"  # a copy and a hard link of one clip in class a
    content[7] = content[0]  # the same bytes filed under class b as well
    cache = dataclasses.replace(cache, content_hash=content)
    for seed in range(6):
        for method in ("group", "random"):  # the default random split keeps identical content in one part too
            split = make_split(cache, SplitConfig(val=0.2, test=0.2, seed=seed, method=method))
            assert split.parts[1] == split.parts[2] and split.parts[0] == split.parts[7], (method, seed)
    split = make_split(cache, SplitConfig(val=0.2, test=0.2, seed=3, method="group"))
    assert split.groups[1] == split.groups[2] == "a/1.mp4" and "identical content kept together" in split.grouping
    assert split.grounds[[0, 1, 2, 3, 7]].tolist() == ["file", "file", "content", "file", "content"]
    assert any("2 groups joined others holding identical content" in n and "a/1.mp4 = a/2.mp4" in n
               for n in split.notes)
    assert split.warnings == ["the same content under two classes (1 clip): a/0.mp4 (a) and b/1.mp4 (b)"]


def test_list_paths_match_across_prefixes_and_extensions_with_a_note(tmp_path):
    cache = ucf_cache(groups=4, clips=2)
    listed = [f"{'./' if i % 2 else 'UCF-101/'}{p[:-4]}.AVI" for i, p in enumerate(cache.paths)]
    mp4 = fake_cache([p[:-4] + ".mp4" for p in cache.paths], cache.labels, cache.class_names)
    split = split_lists(tmp_path, mp4, [p for p in listed if "_g01_" not in p], [p for p in listed if "_g01_" in p])
    assert ((split.parts == "test") == np.array(["_g01_" in p for p in mp4.paths])).all()
    assert split.notes[0].startswith("12 listed paths matched once their leading folders were dropped (e.g. UCF-101/")
    assert "24 listed paths matched a cached file of another extension" in split.notes[1]
    other = fake_cache([p.replace("_c", "_x") for p in mp4.paths], cache.labels, cache.class_names)
    with pytest.raises(DataError, match=r"none of the 6 test videos .* paths such as 'UCF-101/ApplyEyeMakeup/"
                                        r"v_ApplyEyeMakeup_g01_c01\.AVI' \(.*test.txt line 1\), the cache holds paths "
                                        r"such as 'ApplyEyeMakeup/v_"):
        split_lists(tmp_path, other, listed[6:8], [p for p in listed if "_g01_" in p], group_by="file")


def test_lists_that_cannot_be_right_say_why(tmp_path):
    cache = ucf_cache(groups=4, clips=2)
    train, test = [p for p in cache.paths if "_g01_" not in p], [p for p in cache.paths if "_g01_" in p]
    split_lists(tmp_path, cache, train, test)  # writes train.txt with class numbers, test.txt without
    with pytest.raises(ConfigError, match="look swapped: the lines of .*train.txt carry a class number"):
        make_split(cache, SplitConfig(method="lists", train_list=str(tmp_path / "test.txt"),
                                      test_list=str(tmp_path / "train.txt")))
    names = ["brush_hair", "cartwheel"]
    hmdb = fake_cache([f"{c}/{c}_clip{i}.avi" for c in names for i in range(6)], np.repeat([0, 1], 6), names)
    (tmp_path / "brush_hair_test_split1.txt").write_text("".join(f"brush_hair_clip{i}.avi {1 + (i < 2)} \n"
                                                                 for i in range(6)))
    with pytest.raises(DataError, match=r"HMDB51 split files of 1 classes, and 1 of the cache's 2 classes have "
                                        r"none \(cartwheel\).*glob"):
        make_split(hmdb, SplitConfig(method="lists", test_list=str(tmp_path / "brush_hair_test_split1.txt")))
    kinetics = fake_cache([f"a/{i}.mp4" for i in range(4)], [0] * 4, ["a"], part=["val"] * 4)
    with pytest.raises(DataError, match=r"marks no clip 'test' \(it marks val 4\).*Kinetics numbers are reported"):
        make_split(kinetics, SplitConfig(method="lists"))


def test_a_split_that_cannot_be_made_says_what_state_the_workspace_is_in(tmp_path, monkeypatch):
    """A too-small dataset under `dvc exp run`: stage one has replaced the cache, the split stops; its error says
    that nothing of the split was written and how to go back."""
    import yaml

    import stages.split
    from pipeline.extract.cache import write_cache
    from tests.conftest import committed_params

    n = 4
    cache = dataclasses.replace(
        fake_cache([f"{c}/{i}.mp4" for c in "ab" for i in range(2)], [0, 0, 1, 1], ["a", "b"]),
        embeddings=np.zeros((n, 2, 4), np.float32), frame_indices=np.zeros((n, 2), np.int64),
        timestamps=np.zeros((n, 2)), fps=np.ones(n), frame_count=np.full(n, 2), duration=np.ones(n),
        repeated=np.zeros(n, bool), decode_errors=np.zeros(n, np.int64), file_size=np.ones(n, np.int64),
        mtime_ns=np.ones(n, np.int64))
    write_cache(tmp_path / "cache" / "features.h5", cache)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        stages.split.main()
    assert str(stopped.value).startswith("split: error: classes too small to split")
    assert "nothing was written" in str(stopped.value) and "git checkout params.yaml dvc.lock && dvc checkout" in str(
        stopped.value)
    assert not (tmp_path / "cache" / "split.csv").exists()


def test_split_csv_cells_never_run_in_a_spreadsheet_and_read_back_exactly(tmp_path):
    """OWASP's rule in cache/split.csv: a cell starting with = + - @ (or ') gets a leading ', which read_split takes
    back off: labels, paths and groups map back exactly."""
    import csv
    paths = np.array(["-a.mp4", "=HYPERLINK(\"http://x\")/b.mp4", "'=c.mp4", "plain/d.mp4"], object)
    names = ["=x", "@SUM(A1)", "+cmd|' /C calc'!A0", "walk"]
    groups = np.array(["@g", "-1+2", "'q", "g"], object)
    write_split(tmp_path / "split.csv", paths, np.arange(4), names, np.array(["train", "val", "test", "train"]),
                groups)
    with open(tmp_path / "split.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    cells = [c for row in rows for c in row]
    assert [c for c in cells if c[:1] in tuple("=+-@\t\r")] == []  # no cell a spreadsheet runs
    assert rows[0][:2] == ["'-a.mp4", "'=x"] and rows[2][0] == "''=c.mp4" and rows[3] == ["plain/d.mp4", "walk",
                                                                                       "train", "g", ""]
    assert read_split(tmp_path / "split.csv", paths).tolist() == ["train", "val", "test", "train"]
    assert read_split(tmp_path / "split.csv", paths, "group").tolist() == groups.tolist()
    assert read_split(tmp_path / "split.csv", paths, "label").tolist() == names


def test_a_part_that_is_not_a_part_is_refused_in_one_line(tmp_path):
    paths = np.array(["a.mp4", "b.mp4"], object)
    write_split(tmp_path / "split.csv", paths, np.array([0, 0]), ["a"], np.array(["train", "TEST\x1b[2J"]))
    with pytest.raises(DataError, match=r"part is 'TEST\\\\x1b\[2J', not train, val, test or unused"):
        read_split(tmp_path / "split.csv", paths)


def test_a_split_with_no_video_in_a_part_a_stage_needs_is_one_line(tmp_path):
    """A hand-edited split.csv with every row train: evaluate needs a test part (and train, baseline a train
    part); said in one line naming the part, never a crash further on."""
    paths = np.array(["a.mp4", "b.mp4"], object)
    write_split(tmp_path / "split.csv", paths, np.array([0, 0]), ["a"], np.array(["train", "train"]))
    assert list(read_split(tmp_path / "split.csv", paths, needs=("train",))) == ["train", "train"]
    with pytest.raises(DataError, match="puts no video in the test part: re-run `dvc repro split`"):
        read_split(tmp_path / "split.csv", paths, needs=("train", "test"))
