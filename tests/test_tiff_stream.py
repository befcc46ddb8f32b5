"""The growing TIFF: libtiff's layout (header, chunks, IFD last), read by independent
readers, and resumable from a recorded prefix with the same bytes."""

from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest
import pyvips
import tifffile

from texprod.press.printfile import TiffOptions, encode_band, print_tags
from texprod.press.tiff_stream import GrowingTiff, header

W, H = 300, 530  # partial tiles and strips at the edges


def chunks_of(array: np.ndarray, options: TiffOptions) -> list[bytes]:
    return encode_band(array, options)


def tags_for(array: np.ndarray, options: TiffOptions, inks=None):
    return print_tags(width=W, height=H, bands=array.shape[2], dtype=array.dtype,
                      options=options, dpi=254.5, icc_profile=None,
                      description='{"texprod": {}}', inks=inks)


def write(path, array, options, bigtiff, chunks=None):
    chunks = chunks or chunks_of(array, options)
    with GrowingTiff(path, bigtiff) as tiff:
        for chunk in chunks:
            tiff.append(chunk)
        tiff.finish(tags_for(array, options, ["Cyan", "Magenta", "Yellow", "Black", "Spot UV"]
                             if array.shape[2] == 5 else None), [len(c) for c in chunks])
    return path


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("layout", ["tiled", "strips"])
@pytest.mark.parametrize(("bands", "dtype"), [(4, np.uint8), (5, np.uint16), (3, np.uint8)])
def test_layout_and_readers(tmp_path, bigtiff, layout, bands, dtype):
    rng = np.random.default_rng(bands)
    array = rng.integers(0, np.iinfo(dtype).max, (H, W, bands), dtype=dtype)
    options = TiffOptions(layout=layout)
    chunks = chunks_of(array, options)
    path = write(tmp_path / "g.tif", array, options, bigtiff, chunks)

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff == bigtiff and len(tif.pages) == 1
        np.testing.assert_array_equal(page.asarray(), array)
        # header, then the chunks contiguous in file order, then the IFD
        first = len(header(bigtiff))
        assert list(page.dataoffsets) == [first + sum(len(c) for c in chunks[:i])
                                          for i in range(len(chunks))]
        assert page.offset >= first + sum(len(c) for c in chunks) and page.offset % 2 == 0
        assert page.resolution == pytest.approx((254.5, 254.5))
        if bands == 5:
            assert page.tags["InkNames"].value.split("\0")[:5] == [
                "Cyan", "Magenta", "Yellow", "Black", "Spot UV"]
    image = pyvips.Image.new_from_file(str(path))
    np.testing.assert_array_equal(image.numpy().reshape(H, W, bands), array)
    # libtiff's own reader decodes every chunk without a complaint
    info = subprocess.run(["tiffinfo", "-D", str(path)], capture_output=True, text=True)
    assert info.returncode == 0 and "Warning" not in info.stderr + info.stdout, info.stderr


def test_a_resumed_file_equals_one_written_at_once(tmp_path):
    array = np.random.default_rng(1).integers(0, 255, (H, W, 4), dtype=np.uint8)
    options = TiffOptions()
    chunks = chunks_of(array, options)
    whole = write(tmp_path / "whole.tif", array, options, False, chunks)

    path = tmp_path / "resumed.tif"
    with GrowingTiff(path, False) as tiff:
        for chunk in chunks[:3]:
            recorded = tiff.append(chunk)
        tiff.append(chunks[3][:100])  # killed mid-chunk: past the recorded prefix
    with GrowingTiff(path, False, resume_at=recorded) as tiff:
        assert tiff.resumed and tiff.size == recorded
        for chunk in chunks[3:]:
            tiff.append(chunk)
        tiff.finish(tags_for(array, options), [len(c) for c in chunks])
    assert path.read_bytes() == whole.read_bytes()


def test_a_file_that_is_not_the_recorded_prefix_starts_afresh(tmp_path):
    path = tmp_path / "other.tif"
    path.write_bytes(b"MM\0*" + b"\0" * 100)  # another header
    with GrowingTiff(path, False, resume_at=50) as tiff:
        assert not tiff.resumed and tiff.size == len(header(False))
    path.write_bytes(header(False) + b"\0" * 10)  # shorter than the record
    with GrowingTiff(path, False, resume_at=50) as tiff:
        assert not tiff.resumed


def test_finish_refuses_a_file_that_does_not_hold_the_chunks(tmp_path):
    array = np.zeros((H, W, 4), np.uint8)
    options = TiffOptions()
    chunks = chunks_of(array, options)
    with GrowingTiff(tmp_path / "short.tif", False) as tiff:
        for chunk in chunks[:-1]:
            tiff.append(chunk)
        with pytest.raises(ValueError, match="chunks recorded"):
            tiff.finish(tags_for(array, options), [len(c) for c in chunks])


def test_header_points_at_the_ifd(tmp_path):
    array = np.zeros((H, W, 4), np.uint8)
    path = write(tmp_path / "h.tif", array, TiffOptions(), False)
    data = path.read_bytes()
    (ifd_at,) = struct.unpack("<I", data[4:8])
    (entries,) = struct.unpack("<H", data[ifd_at: ifd_at + 2])
    codes = [struct.unpack("<H", data[ifd_at + 2 + 12 * i: ifd_at + 4 + 12 * i])[0]
             for i in range(entries)]
    assert codes == sorted(codes) and 256 in codes and 324 in codes
