"""Annotation files: the three formats, line-numbered errors, and trimmed clips (segments) through stage one."""
import numpy as np
import pytest

from pipeline.data.annotations import read_annotations, read_class_names
from pipeline.data.lists import match_listed, read_lists
from pipeline.extract.cache import read_cache
from pipeline.errors import DataError
from pipeline.extract.runner import ExtractConfig, extract_features
from tests.conftest import write_video


def touch_videos(root, *paths):
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"not decoded here")


def test_csv_with_segments_groups_and_parts(tmp_path):
    touch_videos(tmp_path, "x/a.mp4", "x/b.mp4")
    (tmp_path / "ann.csv").write_text("path,label,start,end,group,split\n"
                                      "x/a.mp4,run,1,3,s1,train\n"
                                      "x/a.mp4,jump,3,4.5,s1,validate\n"
                                      "x/b.mp4,run,,,s2,test\n")
    videos, classes, problems = read_annotations(tmp_path / "ann.csv", tmp_path)
    assert classes == ["jump", "run"] and problems == []
    assert [(v.path, v.label, v.segment, v.group, v.part) for v in videos] == [
        ("x/a.mp4", "run", (1.0, 3.0), "s1", "train"), ("x/a.mp4", "jump", (3.0, 4.5), "s1", "val"),
        ("x/b.mp4", "run", None, "s2", "test")]


def test_missing_file_and_unknown_class_are_reported_with_their_line(tmp_path):
    touch_videos(tmp_path, "a/1.mp4", "a/2.mp4")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "ann.csv").write_text("path,label\na/1.mp4,a\na/gone.mp4,b\na/2.mp4,c\n")
    with pytest.raises(DataError, match=r"ann.csv \(csv\): 1 bad line:\n  line 4: unknown class 'c'"):
        read_annotations(tmp_path / "ann.csv", tmp_path, tmp_path / "classes.txt")
    (tmp_path / "ann.csv").write_text("path,label\na/1.mp4,a\na/gone.mp4,b\na/2.mp4,a,\n../x.mp4,a\n")
    with pytest.raises(DataError, match=r"line 5: path '../x.mp4' climbs with `..`"):
        read_annotations(tmp_path / "ann.csv", tmp_path, tmp_path / "classes.txt")
    (tmp_path / "ann.csv").write_text("path,label\na/1.mp4,a\na/gone.mp4,b\na/2.mp4,a\n")
    videos, classes, problems = read_annotations(tmp_path / "ann.csv", tmp_path, tmp_path / "classes.txt")
    assert classes == ["a", "b"] and [v.path for v in videos] == ["a/1.mp4", "a/2.mp4"]
    assert problems == [("a/gone.mp4", f"a/gone.mp4: {tmp_path / 'ann.csv'} line 3: no such file under the data "
                                       f"root {str(tmp_path)!r}")]


def test_a_row_with_fields_past_the_header_is_read_by_its_named_fields(tmp_path):
    touch_videos(tmp_path, "a/1.mp4")
    (tmp_path / "ann.csv").write_text("path,label\na/1.mp4,a,extra\n,,\n,,x\n")
    with pytest.raises(DataError, match=r"1 bad line:\n  line 4: no label$"):  # a blank row is skipped, not line 3
        read_annotations(tmp_path / "ann.csv", tmp_path)


def test_mmaction2_list_needs_its_class_names(tmp_path):
    touch_videos(tmp_path, "v/1.avi", "v/2.avi")
    (tmp_path / "list.txt").write_text("v/1.avi 0\nv/2.avi 1\n")
    with pytest.raises(DataError, match="data.classes"):
        read_annotations(tmp_path / "list.txt", tmp_path)
    (tmp_path / "names.txt").write_text("walk\nwave\n")
    videos, classes, _ = read_annotations(tmp_path / "list.txt", tmp_path, tmp_path / "names.txt")
    assert classes == ["walk", "wave"] and [v.label for v in videos] == ["walk", "wave"]
    (tmp_path / "list.txt").write_text("v/1.avi 0\nv/2.avi 2\n")
    with pytest.raises(DataError, match=r"line 2: unknown class 2 \(the class-names file has 2: 0 to 1\)"):
        read_annotations(tmp_path / "list.txt", tmp_path, tmp_path / "names.txt")
    (tmp_path / "list.txt").write_text("just one word\n")
    with pytest.raises(DataError, match="not an annotation file this pipeline reads"):
        read_annotations(tmp_path / "list.txt", tmp_path, tmp_path / "names.txt")


def test_kinetics_trimmed_segments_of_longer_videos(tmp_path, tiny_clip):
    """Kinetics rows: a full download (`<id>.mp4`) sampled inside [time_start, time_end) only, two segments of it
    two rows; a trimmed download (`<id>_<start>_<end>.mp4`) whole. Changing one segment re-encodes that row only."""
    root = tmp_path / "k"
    write_video(root / "full" / "abc.mp4", 60, fps=10.0)  # 6 s
    write_video(root / "trim" / "xyz_000010_000012.mp4", 20, fps=10.0)
    ann = tmp_path / "kinetics.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\n"
                   "jump,abc,1,3,train\nrun,abc,4,6,test\nrun,xyz,10,12,train\nrun,gone,0,10,train\n")
    cfg = ExtractConfig(root=str(root), cache_path=str(tmp_path / "f.h5"), model=tiny_clip, num_frames=4,
                        batch_size=8, device="cpu", workers=0, annotations=str(ann))
    summary = extract_features(cfg, progress=False)
    assert (summary.encoded, summary.reused) == (3, 0)
    assert summary.skipped == [("run/gone_000000_000010.mp4#t=0,10", "run/gone_000000_000010.mp4#t=0,10: "
                                f"{ann} line 5: no such file under the data root {str(root)!r}")]
    cache = read_cache(tmp_path / "f.h5")
    assert cache.clip_ids().tolist() == ["full/abc.mp4#t=1,3", "full/abc.mp4#t=4,6", "trim/xyz_000010_000012.mp4"]
    assert cache.class_names == ["jump", "run"] and cache.labels.tolist() == [0, 1, 1]
    assert cache.group.tolist() == ["abc", "abc", "xyz"] and cache.annotated_part.tolist() == ["train", "test", "train"]
    for (start, end), stamps in zip(cache.segment[:2], cache.timestamps[:2]):
        assert np.all((stamps >= start) & (stamps < end)), (start, end, stamps)
    assert cache.timestamps[2].max() > 1.0  # the trimmed file is sampled whole
    assert not np.allclose(cache.embeddings[0], cache.embeddings[1])

    ann.write_text("label,youtube_id,time_start,time_end,split\n"
                   "jump,abc,1,3,train\nrun,abc,4,5,test\nrun,xyz,10,12,train\n")
    summary = extract_features(cfg, progress=False)
    assert (summary.encoded, summary.reused, summary.skipped) == (1, 2, [])
    again = read_cache(tmp_path / "f.h5")
    assert again.clip_ids()[1] == "full/abc.mp4#t=4,5" and np.all(again.timestamps[1] < 5)
    np.testing.assert_array_equal(again.embeddings[[0, 2]], cache.embeddings[[0, 2]])


def test_a_segment_past_the_end_is_skipped_with_its_reason(tmp_path, tiny_clip):
    write_video(tmp_path / "v" / "a.mp4", 20, fps=10.0)  # 2 s
    (tmp_path / "ann.csv").write_text("path,label,start,end\nv/a.mp4,x,0,1\nv/a.mp4,x,5,6\nv/a.mp4,y,1,2\n")
    cfg = ExtractConfig(root=str(tmp_path), cache_path=str(tmp_path / "f.h5"), model=tiny_clip, num_frames=4,
                        batch_size=8, device="cpu", workers=0, annotations=str(tmp_path / "ann.csv"))
    summary = extract_features(cfg, progress=False)
    assert summary.encoded == 2 and len(summary.skipped) == 1
    name, reason = summary.skipped[0]
    assert name == "v/a.mp4#t=5,6" and reason.startswith("v/a.mp4#t=5,6: the segment [5, 6) s holds no frame")
    assert read_cache(tmp_path / "f.h5").repeated.tolist() == [False, False]
    assert read_cache(tmp_path / "f.h5").skipped_kind == {name: "EmptySegment"}  # its error's type, kept


def test_class_files_as_published_ucf101_classind_and_mmaction2_label_maps(tmp_path):
    """UCF101's classInd.txt (`1 Name`, 1-based, CRLF) is read as names in number order, and its trainlist's
    1-based labels follow it; mmaction2's label map (a name per line, 0-based, BOM) keeps working; 1-based labels
    against a names-only file are said to look 1-based."""
    touch_videos(tmp_path, "A/v_A_g01_c01.avi", "B/v_BStand_g01_c01.avi")
    (tmp_path / "classInd.txt").write_bytes(b"1 A\r\n2 B \r\n")
    # the list spells a name otherwise than the file (UCF101: HandstandPushups, HandStandPushups): found all the same
    (tmp_path / "trainlist01.txt").write_bytes(b"A/v_A_g01_c01.avi 1\r\nB/v_Bstand_g01_c01.avi 2\r\n")
    videos, classes, _ = read_annotations(tmp_path / "trainlist01.txt", tmp_path, tmp_path / "classInd.txt")
    assert classes == ["A", "B"] and [(v.path, v.label) for v in videos] == [("A/v_A_g01_c01.avi", "A"),
                                                                             ("B/v_BStand_g01_c01.avi", "B")]
    (tmp_path / "csv.csv").write_text("path,label\nB/v_BStand_g01_c01.avi,B\n")  # names, not whole lines
    assert read_annotations(tmp_path / "csv.csv", tmp_path, tmp_path / "classInd.txt")[1] == ["A", "B"]
    (tmp_path / "label_map.txt").write_bytes("\ufeffA\nB\n".encode())
    with pytest.raises(DataError, match=r"1 bad line \(the labels run from 1 to 2: they look 1-based.*classInd"):
        read_annotations(tmp_path / "trainlist01.txt", tmp_path, tmp_path / "label_map.txt")
    (tmp_path / "list0.txt").write_text("A/v_A_g01_c01.avi 0\nB/v_BStand_g01_c01.avi 1\n")
    assert [v.label for v in read_annotations(tmp_path / "list0.txt", tmp_path, tmp_path / "label_map.txt")[0]] == [
        "A", "B"]
    with pytest.raises(DataError, match="labels start at 0 but the class-names file numbers its classes from 1"):
        read_annotations(tmp_path / "list0.txt", tmp_path, tmp_path / "classInd.txt")


def test_mmaction2_lists_repeats_read_once_other_formats_named(tmp_path):
    touch_videos(tmp_path, "v/1.mp4", "v/2.mp4")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "names.txt").write_text("a\nb\nc\nd\n")
    (tmp_path / "list.txt").write_text(f"v/1.mp4 0\nv/1.mp4 0\nv/1.mp4 0\n{tmp_path}/v/2.mp4 1\n")
    videos, _, problems = read_annotations(tmp_path / "list.txt", tmp_path, tmp_path / "names.txt")
    assert [(v.path, v.label) for v in videos] == [("v/1.mp4", "a"), ("v/2.mp4", "b")] and problems == []
    (tmp_path / "list.txt").write_text("v/1.mp4 0\nv/1.mp4 2\nv/2.mp4 0 3\nimgs 5 3\n/elsewhere/x.mp4 1\n")
    with pytest.raises(DataError) as e:
        read_annotations(tmp_path / "list.txt", tmp_path, tmp_path / "names.txt")
    message = str(e.value)
    assert "4 bad lines" in message
    assert "line 2: v/1.mp4 is on line 1 as 'a' and here as 'c': one class per video" in message
    assert "line 3: the line is a multi-label video line (path, then several labels), an mmaction2" in message
    assert "line 4: the line is a rawframe list line (frame folder, [offset,] frame count, label)" in message
    assert "line 5: path '/elsewhere/x.mp4' is absolute and not under the data root" in message


def test_kinetics_test_csv_without_labels_is_named(tmp_path):
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nabc,0,10,test\n")
    with pytest.raises(DataError, match="a Kinetics CSV without a label column.*use that as the test part"):
        read_annotations(tmp_path / "test.csv", tmp_path)


def test_a_listed_file_through_a_link_out_of_the_root_is_not_read(tmp_path):
    root, away = tmp_path / "root", tmp_path / "away"
    touch_videos(tmp_path, "root/v/in.mp4", "away/out.mp4")
    (root / "v" / "out.mp4").symlink_to(away / "out.mp4")
    (root / "linked").symlink_to(away)
    (tmp_path / "ann.csv").write_text("path,label\nv/in.mp4,a\nv/out.mp4,a\nlinked/out.mp4,b\n")
    videos, classes, problems = read_annotations(tmp_path / "ann.csv", root)
    assert [v.path for v in videos] == ["v/in.mp4"] and classes == ["a"]
    assert [p for p, _ in problems] == ["v/out.mp4", "linked/out.mp4"]  # in the file's line order
    assert all("a symbolic link out of the data root" in r and "data.follow_links: all" in r for _, r in problems)
    assert len(read_annotations(tmp_path / "ann.csv", root, follow_links="all")[0]) == 3


def test_mmaction2_rawframe_list_is_named_before_asking_for_class_names(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "frame_test_list.txt").write_text("imgs 5 127\nimgs 5 127\n")  # mmaction2's own test data
    with pytest.raises(DataError, match=r"line 1: the line is a rawframe list line .* an mmaction2 format this "
                                        r"pipeline does not read"):
        read_annotations(tmp_path / "frame_test_list.txt", tmp_path)


def test_a_label_in_other_digits_is_a_bad_line_not_a_crash(tmp_path):
    touch_videos(tmp_path, "root/v/in.mp4", "root/v/x.mp4")
    (tmp_path / "names.txt").write_text("a\nb\n")
    (tmp_path / "list.txt").write_text("v/in.mp4 0\nv/x.mp4 \u00b2\n")  # '²'.isdigit() is True, int('²') fails
    with pytest.raises(DataError, match=r"line 2: expected `path label`"):
        read_annotations(tmp_path / "list.txt", tmp_path / "root", tmp_path / "names.txt")


def test_seconds_are_decimal_numbers_and_minus_zero_is_zero(tmp_path):
    touch_videos(tmp_path, "x/a.mp4")
    (tmp_path / "ann.csv").write_text("path,label,start,end\nx/a.mp4,run,0,1\nx/a.mp4,run,-0,1\n")
    with pytest.raises(DataError, match=r"line 3: x/a.mp4#t=0,1 is already on line 2"):  # one clip, named once
        read_annotations(tmp_path / "ann.csv", tmp_path)
    for start, end in (("1_0", "12"), ("nan", "1"), ("0", "inf"), ("0x1", "2")):
        (tmp_path / "ann.csv").write_text(f"path,label,start,end\nx/a.mp4,run,{start},{end}\n")
        with pytest.raises(DataError, match=r"line 2: start and end must be seconds \(a decimal number\)"):
            read_annotations(tmp_path / "ann.csv", tmp_path)
    (tmp_path / "ann.csv").write_text("path,label,start,end\nx/a.mp4,run,1e0,2.5\n")
    assert read_annotations(tmp_path / "ann.csv", tmp_path)[0][0].segment == (1.0, 2.5)


@pytest.mark.parametrize("name, text, line", [
    ("ann.csv", "path,label\nx/a.mp4,run\nx/a.mp4,r\0un\n", "line 3: holds a NUL byte"),
    ("ann.csv", "path,label\nx/\0a.mp4,run\n", "line 2: holds a NUL byte"),
    ("ann.csv", "path,label\nx/a.mp4," + "r" * 200_000 + "\n", "line 2: 200,008 characters, more than the 16,384"),
    ("list.txt", "x/a.mp4 0\n" + "y" * 200_000 + ".mp4 0\n", "line 2: 200,006 characters"),
], ids=["nul-label", "nul-path", "huge-csv-field", "huge-list-line"])
def test_nul_bytes_and_huge_fields_are_refused_by_line_before_any_work(tmp_path, name, text, line):
    touch_videos(tmp_path, "x/a.mp4")
    (tmp_path / "names.txt").write_text("run\n")
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as e:
        read_annotations(tmp_path / name, tmp_path, tmp_path / "names.txt" if name == "list.txt" else "")
    assert f"{tmp_path / name}: 1 bad line:\n  {line}" in str(e.value)


def test_a_quoted_field_that_runs_past_csvs_limit_is_one_error(tmp_path):
    (tmp_path / "ann.csv").write_text('path,label\n"x/a.mp4\n' + ("y" * 1000 + "\n") * 200)
    with pytest.raises(DataError, match=r"ann.csv line \d+: not CSV \(field larger than field limit"):
        read_annotations(tmp_path / "ann.csv", tmp_path)


def test_class_names_with_a_nul_or_twice_are_refused_by_line_without_their_text(tmp_path):
    (tmp_path / "names.txt").write_text("secret-one\nrun\n\nsecret-one\n")
    with pytest.raises(DataError, match=r"names.txt' line 4: the name of line 1 again") as e:
        read_class_names(tmp_path / "names.txt")
    assert "secret" not in str(e.value)
    (tmp_path / "names.txt").write_text("run\nj\0ump\n")
    with pytest.raises(DataError, match=r"names.txt' line 2: holds a NUL byte"):
        read_class_names(tmp_path / "names.txt")


@pytest.mark.parametrize("follow_links", ["inside", "all"])
@pytest.mark.parametrize("kind", ["csv", "mmaction2", "kinetics label", "kinetics id"])
@pytest.mark.parametrize("climb", ["{root}/../outside/secret.mp4", "{root}/a/../../outside/secret.mp4",
                                   "a/../../outside/secret.mp4"])
def test_a_path_that_climbs_out_of_the_root_is_refused_whatever_follow_links_says(tmp_path, follow_links, kind,
                                                                                  climb):
    root = tmp_path / "root"
    touch_videos(tmp_path, "outside/secret.mp4", "outside/x_000000_000010.mp4", "root/a/in.mp4")
    (tmp_path / "names.txt").write_text("run\n")
    path = climb.format(root=root)
    text = {"csv": f"path,label\na/in.mp4,run\n{path},run\n",
            "mmaction2": f"a/in.mp4 0\n{path} 0\n",
            "kinetics label": "label,youtube_id,time_start,time_end\nrun,in,0,10\n../../outside,x,0,10\n",
            "kinetics id": "label,youtube_id,time_start,time_end\nrun,in,0,10\nrun,../../outside/x,0,10\n"}[kind]
    (tmp_path / "ann.txt").write_text(text)
    with pytest.raises(DataError) as e:
        read_annotations(tmp_path / "ann.txt", root, tmp_path / "names.txt" if kind == "mmaction2" else "",
                         follow_links)
    message = str(e.value)
    line = 2 if kind == "mmaction2" else 3  # the climbing row (a CSV has a header line)
    assert "1 bad line" in message and f"line {line}: " in message and "climbs with `..`" in message, message
    assert "follow_links" not in message


def test_errors_name_a_file_outside_the_project_without_its_bytes(tmp_path):
    """data.annotations, data.classes or split.test_list pointing at a secret (/etc/shadow): the file and the
    problem are named, never a line of it."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7::: 7\n")
    for call in (lambda: read_annotations(secret, tmp_path), lambda: read_class_names(secret),
                 lambda: read_lists("", str(secret)), lambda: read_lists(str(secret), "")):
        try:
            listed = call()
        except DataError as e:
            assert str(secret) in str(e) and "SECRET" not in str(e) and "daemon" not in str(e), str(e)
        else:  # a list of one-field lines is a UCF101 test list: what it lists reaches notes by place only
            if isinstance(listed, dict) and listed:
                rows, notes = match_listed(listed, np.array(["a/b.avi"], dtype=object))
                assert rows == {} and "SECRET" not in " ".join(notes) and "line 1" in notes[0]


def test_a_split_file_listing_a_clip_twice_is_refused(tmp_path):
    from pipeline.heads.split_file import read_split

    (tmp_path / "split.csv").write_text("path,part\na.mp4,train\nb.mp4,test\na.mp4,test\n")
    with pytest.raises(DataError, match=r"split.csv line 4: the clip of line 2 again"):
        read_split(tmp_path / "split.csv", np.array(["a.mp4", "b.mp4"], dtype=object))
    (tmp_path / "split.csv").write_text("path,part\na.mp4,train\nb.mp4,test\n")
    assert list(read_split(tmp_path / "split.csv", np.array(["b.mp4", "a.mp4"], dtype=object))) == ["test", "train"]
