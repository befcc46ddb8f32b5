"""TAC read back in bands by child processes equals the one-pass measurement."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from texprod.press.tac import TacError, band_peak, bands, measure_tac

H, W = 1000, 300  # bands of whole 16-row chunks: the last one is short


def write(path, data, tiled: bool, compression="lzw"):
    layout = {"tile": (16, 16)} if tiled else {"rowsperstrip": 16}
    tifffile.imwrite(path, data, photometric="separated", compression=compression,
                     predictor=compression is not None, **layout)
    return path


def cmyk(samples: int = 4, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    return (rng.random((H, W, samples)) * 0.6 * top).astype(dtype)


def test_bands_cover_the_image_in_whole_chunks():
    parts = bands(H, W, 16, workers=4, min_px=1)
    assert len(parts) == 4 and parts[0][0] == 0
    assert all(y % 16 == 0 and rows % 16 == 0 for y, rows in parts[:-1])
    assert [y for y, _ in parts[1:]] == [y + rows for y, rows in parts[:-1]]  # no gap
    assert sum(rows for _, rows in parts) == H
    assert bands(H, W, 16, workers=4, min_px=H * W // 2) == [(0, 512), (512, 488)]
    assert bands(H, W, 16, workers=64) == [(0, H)]  # small: no child processes


@pytest.mark.parametrize("tiled", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_banded_equals_one_pass(tmp_path, tiled, dtype):
    data = cmyk(5, dtype)  # CMYK + a spot ink, which does not count
    top = np.iinfo(dtype).max
    data[990, 7, :4] = top  # the peak, in the last band
    data[400, 3, 4] = top  # the spot channel at full: ignored
    path = write(tmp_path / "p.tif", data, tiled)
    whole = band_peak(path, 0, H, 5)
    banded = measure_tac(path, H, W, 5, 16, workers=3, min_px=1)
    assert banded == whole
    assert (banded.total, banded.x, banded.y) == (4 * top, 7, 990)


def test_ties_go_to_the_topmost_band(tmp_path):
    data = cmyk()
    data[900, 5, :4] = data[20, 9, :4] = 255
    path = write(tmp_path / "t.tif", data, True)
    peak = measure_tac(path, H, W, 4, 16, workers=4, min_px=1)
    assert (peak.x, peak.y) == (9, 20)


def test_a_band_that_cannot_be_decoded_names_the_problem(tmp_path):
    path = write(tmp_path / "cut.tif", cmyk(), tiled=False, compression=None)
    path.write_bytes(path.read_bytes()[:-5000])  # the last strips are short
    with pytest.raises(TacError, match="could not decode"):
        measure_tac(path, H, W, 4, 16, workers=4, min_px=1)
