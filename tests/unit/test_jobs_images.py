"""A directory of images becomes the single NHWC UINT8 input of an image task."""

import numpy as np
import pytest
from PIL import Image

from infaas.control.jobs import load_images
from infaas.errors import InvalidInput
from infaas.registry import Signature, TensorSpec


def sig(shape, datatype="UINT8"):
    return Signature(
        inputs=(TensorSpec(name="images", datatype=datatype, shape=shape),),
        outputs=(TensorSpec(name="logits", datatype="FP32", shape=(-1, 10)),),
    )


def test_images_are_read_in_name_order_and_resized(tmp_path):
    for i, (w, h) in enumerate([(40, 30), (64, 64), (20, 50)]):
        Image.fromarray(np.full((h, w, 3), 50 * i, np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    inputs, files = load_images(tmp_path, sig((-1, 32, 32, 3)))
    assert files == ["img0.png", "img1.png", "img2.png"]
    x = inputs["images"]
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8
    assert [int(x[i].mean()) for i in range(3)] == [0, 50, 100]


def test_directories_need_an_image_task(tmp_path):
    with pytest.raises(InvalidInput, match="no images"):
        load_images(tmp_path, sig((-1, 32, 32, 3)))
    with pytest.raises(InvalidInput, match="one UINT8 input"):
        load_images(tmp_path, sig((-1, 64), "FP32"))
    with pytest.raises(InvalidInput, match="not a directory"):
        load_images(tmp_path / "missing", sig((-1, 32, 32, 3)))


def test_directory_jobs_read_only_under_the_job_roots(tmp_path):
    from infaas.control.jobs import allowed_directory

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "batch1").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)  # a symlink inside a root that leads out of it
    assert allowed_directory(str(root / "batch1"), [root]) == (root / "batch1").resolve()
    assert allowed_directory("batch1", [root]) == (root / "batch1").resolve()  # relative to a root
    with pytest.raises(InvalidInput, match="directory jobs are off"):
        allowed_directory(str(root / "batch1"), [])
    messages = set()
    for path in (str(outside), str(root / "escape"), str(root / "missing"), "/etc", "../outside", "/nope/x"):
        with pytest.raises(InvalidInput) as exc:
            allowed_directory(path, [root])
        messages.add(exc.value.message.replace(repr(path), "<path>"))
    assert len(messages) == 1  # the same words whether the path exists or not: no oracle
