"""Discovery: links that stay inside the data root, any depth without recursion, class files' order for folders."""
import os

import pytest

from pipeline.data.discover import discover_videos, find_video_files
from pipeline.errors import ConfigError, DataError


def touch(root, *paths):
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"not decoded here")


def test_links_out_of_the_root_are_reported_not_followed(tmp_path):
    root = tmp_path / "root"
    touch(tmp_path, "root/a/x.mp4", "away/y.mp4", "away/deeper/z.mp4")
    (root / "everything").symlink_to("/")  # a class folder that is the whole machine (issue 26)
    (root / "a" / "away").symlink_to(tmp_path / "away")
    (root / "a" / "y.mp4").symlink_to("../../away/y.mp4")
    (root / "b").mkdir()
    (root / "b" / "to_a").symlink_to("../a")  # inside: followed, but a is walked once, under its real name
    (root / "a" / "up").symlink_to("..")  # a loop: ends
    videos, classes, problems = discover_videos(root)
    assert [v.path for v in videos] == ["a/x.mp4"] and classes == ["a"]
    assert [p for p, _ in problems] == ["a/away", "a/y.mp4", "everything"]
    assert all("a symbolic link out of the data root" in r and "not followed" in r for _, r in problems)
    assert "(to /)" in dict(problems)["everything"]
    (root / "everything").unlink()
    inside_a = find_video_files(root / "a")  # a folder searched (clip-har-predict FOLDER): no data.* setting named
    assert [(p.name, r) for p, r in inside_a.problems] == [
        ("away", f"a symbolic link out of the folder searched (to {tmp_path / 'away'}): not followed"),
        ("up", f"a symbolic link out of the folder searched (to {root}): not followed"),
        ("y.mp4", f"a symbolic link out of the folder searched (to {tmp_path / 'away' / 'y.mp4'}): not followed")]
    linked = find_video_files(root / "a", follow_links="all")  # the same tree, every link followed
    assert sorted(p.name for p in linked.files) == ["x.mp4", "y.mp4", "y.mp4", "z.mp4"]
    with pytest.raises(ConfigError, match="data.follow_links must be one of"):
        find_video_files(root, follow_links="yes")


def test_a_deep_tree_is_walked_without_recursion(tmp_path):
    """1,100 nested folders: os.walk's recursion stopped the run with a RecursionError traceback."""
    (tmp_path / "c").mkdir()
    fd = _descend(tmp_path / "c", 0, make=True)
    os.close(os.open("clip.mp4", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    try:
        videos, classes, problems = discover_videos(tmp_path)
        assert classes == ["c"] and len(videos) == 1 and videos[0].path.count("/") == 1101 and problems == []
    finally:  # pytest's own clean-up (shutil.rmtree) recurses, and would fail on this tree: remove it from below
        for top in range(DEPTH - 100, -1, -100):
            fd = _descend(tmp_path / "c", top)
            below = DEPTH - top if top == DEPTH - 100 else 100
            if top == DEPTH - 100:
                os.unlink("/".join(["d"] * below + ["clip.mp4"]), dir_fd=fd)
            for k in range(below, 0, -1):
                os.rmdir("/".join(["d"] * k), dir_fd=fd)
            os.close(fd)


DEPTH = 1100  # past Python's recursion limit (1,000)


def _descend(top, depth: int, make: bool = False) -> int:
    """A descriptor of the folder `depth` levels of `d` below top (made when `make`: DEPTH levels), opened one level
    at a time: paths stay short however deep the tree."""
    fd = os.open(top, os.O_RDONLY)
    for _ in range(DEPTH if make else depth):
        if make:
            os.mkdir("d", dir_fd=fd)
        deeper = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    return fd


def test_data_classes_orders_the_class_folders(tmp_path):
    touch(tmp_path, "Typing/v1.avi", "HandStandPushups/v2.avi", "ApplyEyeMakeup/v3.avi")
    order = ["Typing", "ApplyEyeMakeup", "HandstandPushups", "Zumba"]  # classInd's spelling, its order
    videos, classes, _ = discover_videos(tmp_path, order)
    assert classes == order and {v.path: v.label for v in videos}["HandStandPushups/v2.avi"] == "HandstandPushups"
    with pytest.raises(DataError, match=r"1 class folders under .* are not among them: Typing"):
        discover_videos(tmp_path, ["ApplyEyeMakeup", "HandstandPushups"])
