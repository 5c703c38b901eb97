"""read_inputs: every supported file kind written here by Pillow / NumPy / the IDX test writer,
checked against the written pixels and hand formulas; every bad input one line naming it."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convtrain.errors import DataError, InternalError
from convtrain.inference.inputs import read_inputs
from tests.data.test_data import idx_bytes

GREY = (1, 8, 8)
RGB = (3, 8, 8)
FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def pixels_u8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def scaled(values, pixel_max, full_scale=255):
    """What the docs promise: the file's fraction of its full scale times pixel_max."""
    return (np.asarray(values, np.float64) / full_scale * pixel_max).astype(np.float32)


def read(spec, shape=GREY, pixel_max=255, **kwargs):
    return read_inputs(spec, input_shape=shape, pixel_max=pixel_max, **kwargs)


def refused(spec, *, shape=GREY, pixel_max=255, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read(spec, shape, pixel_max, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- images ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pixel_max", [255, 16])
def test_grey_png_is_exact_in_the_datasets_scale(tmp_path, pixel_max):
    grey = pixels_u8((8, 8))
    inputs = read(save(tmp_path / "a.png", grey), pixel_max=pixel_max)
    assert inputs.names == ("a.png",) and inputs.pixels.dtype == np.float32
    if pixel_max == 255:  # the MNIST scale: the stored bytes themselves
        np.testing.assert_array_equal(inputs.pixels, grey[None, None])
    else:  # digits: 255 -> 16
        np.testing.assert_allclose(inputs.pixels, scaled(grey, 16)[None, None], rtol=1e-6)
        assert inputs.pixels.max() <= 16


def test_sixteen_bit_grey_png_uses_its_full_scale(tmp_path):
    deep = np.random.default_rng(1).integers(0, 65536, size=(8, 8)).astype(np.uint16)
    path = save(tmp_path / "deep.png", deep)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    np.testing.assert_allclose(read(path).pixels[0, 0], scaled(deep, 255, 65535), rtol=1e-6)


def test_rgb_png_is_exact_channels_first(tmp_path):
    rgb = pixels_u8((8, 8, 3))
    inputs = read(save(tmp_path / "c.png", rgb), RGB)
    np.testing.assert_array_equal(inputs.pixels[0], rgb.transpose(2, 0, 1))


def test_alpha_is_composited_over_black(tmp_path):
    rgba = pixels_u8((8, 8, 4), seed=2)
    got = read(save(tmp_path / "rgba.png", rgba), RGB).pixels[0]
    alpha = rgba[..., 3:].astype(np.float64) / 255
    np.testing.assert_allclose(got, (rgba[..., :3] * alpha).transpose(2, 0, 1), rtol=1e-6,
                               atol=1e-4)
    grey_alpha = pixels_u8((8, 8, 2), seed=3)
    path = tmp_path / "la.png"
    Image.fromarray(grey_alpha, mode="LA").save(path)
    expected = grey_alpha[..., 0] * (grey_alpha[..., 1] / 255)
    np.testing.assert_allclose(read(path).pixels[0, 0], expected, rtol=1e-6, atol=1e-4)


def test_palette_png_with_and_without_transparency(tmp_path):
    palette = pixels_u8((4, 3), seed=4)  # 4 colours
    indices = np.random.default_rng(5).integers(0, 4, size=(8, 8)).astype(np.uint8)
    picture = Image.fromarray(indices, mode="P")
    picture.putpalette(palette.ravel().tolist())
    picture.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read(tmp_path / "p.png", RGB).pixels[0],
                                  palette[indices].transpose(2, 0, 1))
    picture.save(tmp_path / "pt.png", transparency=2)  # colour 2 fully transparent
    expected = palette[indices].astype(np.float32) * (indices != 2)[..., None]
    np.testing.assert_array_equal(read(tmp_path / "pt.png", RGB).pixels[0],
                                  expected.transpose(2, 0, 1))


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_within_compression_tolerance(tmp_path, mode):
    ramp = np.add.outer(np.arange(8) * 12, np.arange(8) * 9).astype(np.uint8) + 20
    image = ramp if mode == "L" else np.stack([ramp, ramp[::-1], ramp.T], axis=-1)
    target = GREY if mode == "L" else RGB
    path = tmp_path / "x.jpg"
    Image.fromarray(image).convert(mode).save(path, quality=95, subsampling=0)
    assert Image.open(path).mode == mode
    got = read(path, target).pixels[0]
    expected = image[None] if mode == "L" else image.transpose(2, 0, 1)
    np.testing.assert_allclose(got, expected, atol=6)


def test_rgb_to_grey_is_the_601_luma_and_grey_to_rgb_repeats(tmp_path):
    rgb = pixels_u8((8, 8, 3), seed=6).astype(np.float64)
    save(tmp_path / "rgb.png", rgb.astype(np.uint8))
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(read(tmp_path / "rgb.png").pixels[0, 0], luma, rtol=1e-6)
    # Pillow's own grey conversion agrees up to its rounding to integers
    pil_grey = np.asarray(Image.open(tmp_path / "rgb.png").convert("L"), np.float64)
    assert np.abs(read(tmp_path / "rgb.png").pixels[0, 0] - pil_grey).max() <= 0.5 + 1e-4
    grey = pixels_u8((8, 8), seed=7)
    got = read(save(tmp_path / "g.png", grey), RGB).pixels[0]
    np.testing.assert_array_equal(got, np.stack([grey] * 3))


def test_resize_is_pillows_bilinear_filter(tmp_path):
    big = pixels_u8((20, 13), seed=8)
    path = save(tmp_path / "big.png", big)
    message = refused(path, pixel_max=16)
    assert "(1, 20, 13)" in message and "(1, 8, 8)" in message and "predict.resize=true" in message
    got = read(path, pixel_max=16, resize=True).pixels[0, 0]
    # Pillow's resize of the 8-bit file itself: equal up to its fixed-point 8-bit arithmetic
    pil = np.asarray(Image.open(path).resize((8, 8), Image.Resampling.BILINEAR), np.float64)
    assert np.abs(got - pil * 16 / 255).max() <= 16 / 255
    bicubic = np.asarray(Image.open(path).resize((8, 8), Image.Resampling.BICUBIC), np.float64)
    assert np.abs(got - bicubic * 16 / 255).max() > 3 * 16 / 255  # the filter matters


def test_resize_of_a_stored_array_and_upscaling(tmp_path):
    small = np.random.default_rng(9).uniform(0, 255, size=(2, 5, 6)).astype(np.float32)
    np.save(tmp_path / "s.npy", small)
    got = read(tmp_path / "s.npy", resize=True).pixels
    assert got.shape == (2, 1, 8, 8)
    for image, plane in zip(got, small):
        pil = np.asarray(Image.fromarray(plane).resize((8, 8), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(image[0], pil, rtol=1e-6)
        assert plane.min() - 1e-3 <= image.min() and image.max() <= plane.max() + 1e-3


# --- arrays and IDX ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape, names", [
    ((8, 8), ["a.npy"]),
    ((1, 8, 8), ["a.npy"]),
    ((4, 8, 8), ["a.npy[0]", "a.npy[1]", "a.npy[2]", "a.npy[3]"]),
    ((2, 1, 8, 8), ["a.npy[0]", "a.npy[1]"]),
])
def test_npy_layouts_are_taken_as_stored(tmp_path, shape, names):
    array = np.random.default_rng(10).uniform(0, 16, size=shape).astype(np.float64)
    np.save(tmp_path / "a.npy", array)
    inputs = read(tmp_path / "a.npy", pixel_max=16)
    assert list(inputs.names) == names
    np.testing.assert_array_equal(inputs.pixels, array.reshape(-1, *GREY).astype(np.float32))


def test_a_three_d_array_is_one_image_when_its_first_axis_is_the_channel_count(tmp_path):
    rgb = pixels_u8((3, 8, 8), seed=11)
    np.save(tmp_path / "one.npy", rgb)
    inputs = read(tmp_path / "one.npy", RGB)
    assert inputs.names == ("one.npy",)
    np.testing.assert_array_equal(inputs.pixels[0], rgb)
    greys = pixels_u8((5, 8, 8), seed=12)  # 5 grey images for an RGB model: repeated
    np.save(tmp_path / "five.npy", greys)
    inputs = read(tmp_path / "five.npy", RGB)
    assert len(inputs) == 5
    np.testing.assert_array_equal(inputs.pixels, np.repeat(greys[:, None], 3, axis=1))


def test_npz_picks_its_only_array_or_x_or_images(tmp_path):
    a, b = pixels_u8((2, 8, 8), seed=13), pixels_u8((3, 8, 8), seed=14)
    np.savez(tmp_path / "one.npz", anything=a)
    np.savez(tmp_path / "x.npz", labels=np.arange(2), x=a)
    np.savez_compressed(tmp_path / "images.npz", labels=np.arange(3), images=b)
    np.testing.assert_array_equal(read(tmp_path / "one.npz").pixels[:, 0], a)
    np.testing.assert_array_equal(read(tmp_path / "x.npz").pixels[:, 0], a)
    assert read(tmp_path / "images.npz").names == ("images.npz[0]", "images.npz[1]",
                                                   "images.npz[2]")
    np.savez(tmp_path / "both.npz", x=a, images=b)
    assert "both 'x' and 'images'" in refused(tmp_path / "both.npz")
    np.savez(tmp_path / "two.npz", a=a, b=b)
    message = refused(tmp_path / "two.npz")
    assert "two.npz" in message and "'a', 'b'" in message and "'x' or 'images'" in message
    np.savez(tmp_path / "none.npz")
    assert "holds no array" in refused(tmp_path / "none.npz")


@pytest.mark.parametrize("name, compress", [("imgs-idx3-ubyte", False), ("imgs.idx", False),
                                            ("imgs-idx3-ubyte.gz", True)])
def test_idx_files_through_the_idx_reader(tmp_path, name, compress):
    images = pixels_u8((3, 8, 8), seed=15)
    payload = idx_bytes(images, 0x08)
    (tmp_path / name).write_bytes(gzip.compress(payload) if compress else payload)
    inputs = read(tmp_path / name)
    assert inputs.names == tuple(f"{name}[{i}]" for i in range(3))
    np.testing.assert_array_equal(inputs.pixels[:, 0], images)


@pytest.mark.skipif(not FASHION_TEST.exists(), reason="no Fashion-MNIST copy on this machine")
def test_the_real_fashion_mnist_test_file():
    inputs = read(FASHION_TEST, (1, 28, 28))
    assert inputs.pixels.shape == (10000, 1, 28, 28) and inputs.names[-1].endswith("[9999]")
    with gzip.open(FASHION_TEST) as f:  # the format read by hand: 16 header bytes, then pixels
        raw = np.frombuffer(f.read()[16:], np.uint8).reshape(10000, 28, 28)
    np.testing.assert_array_equal(inputs.pixels[:, 0], raw)


# --- where the files are -----------------------------------------------------------------------
def test_directory_glob_and_list(tmp_path):
    save(tmp_path / "b.png", np.zeros((8, 8), np.uint8))  # the smallest file: sorted by name
    for name, seed in (("a.png", 2), ("c.jpeg", 3)):
        save(tmp_path / name, pixels_u8((8, 8), seed))
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / ".hidden.png", pixels_u8((8, 8)))
    np.save(tmp_path / "z.npy", np.zeros((2, 8, 8)))
    assert read(tmp_path).names == ("a.png", "b.png", "c.jpeg", "z.npy[0]", "z.npy[1]")
    assert read(str(tmp_path / "*.png")).names == ("a.png", "b.png")
    both = read([tmp_path / "b.png", str(tmp_path / "*.npy")])
    assert both.names == ("b.png", "z.npy[0]", "z.npy[1]")
    np.testing.assert_array_equal(both.pixels[0, 0], np.zeros((8, 8)))
    np.testing.assert_array_equal(read(tmp_path).pixels[0, 0], pixels_u8((8, 8), 2))


def test_same_file_names_in_two_directories_show_their_paths(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        save(tmp_path / folder / "x.png", pixels_u8((8, 8)))
    names = read(str(tmp_path / "*" / "x.png")).names
    assert names == (str(tmp_path / "one" / "x.png"), str(tmp_path / "two" / "x.png"))


# --- bad inputs: one line naming the file and what was expected --------------------------------
def test_missing_empty_and_unmatched(tmp_path):
    assert refused(tmp_path / "gone.png") == f"{tmp_path / 'gone.png'}: no such file or directory"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    message = refused(tmp_path / "empty")
    assert message.startswith(str(tmp_path / "empty")) and "PNG, JPEG, .npy, .npz or IDX" in message
    message = refused(str(tmp_path / "*.png"))
    assert message.startswith(str(tmp_path / "*.png")) and "matches no" in message
    assert "not a supported input" in refused(tmp_path / "empty" / "readme.txt")
    with pytest.raises(DataError, match="no inputs given"):
        read([])


def test_files_that_are_not_what_their_name_says(tmp_path):
    (tmp_path / "text.png").write_text("hello")
    assert refused(tmp_path / "text.png") == (f"{tmp_path / 'text.png'}: not a PNG or JPEG image "
                                              "(Pillow cannot identify it)")
    save(tmp_path / "anim.png", pixels_u8((8, 8)), format="GIF")
    assert "not a PNG or JPEG" in refused(tmp_path / "anim.png")
    save(tmp_path / "cut.png", pixels_u8((64, 64)))
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    assert refused(tmp_path / "cut.png").startswith(f"{tmp_path / 'cut.png'}: cannot read the image")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    assert refused(tmp_path / "bad.npy").startswith(
        f"{tmp_path / 'bad.npy'}: cannot read it as a NumPy array file")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated zip")
    assert "bad.npz: cannot read it as a NumPy array file" in refused(tmp_path / "bad.npz")
    (tmp_path / "labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    assert "labels-idx1-ubyte: array of shape (2,)" in refused(tmp_path / "labels-idx1-ubyte")
    (tmp_path / "junk.gz").write_bytes(b"not gzip, not IDX")
    assert "junk.gz: bad IDX magic number" in refused(tmp_path / "junk.gz")


@pytest.mark.parametrize("array, expected", [
    (np.array([None, 1], dtype=object), "cannot read it as a NumPy array file"),
    (np.zeros((8, 8), bool), "dtype bool; expected integer or float pixels"),
    (np.zeros((8, 8), np.complex64), "dtype complex64"),
    (np.zeros(8), "shape (8,); expected (H, W), (C, H, W), (N, H, W) or (N, C, H, W)"),
    (np.zeros((1, 1, 1, 8, 8)), "shape (1, 1, 1, 8, 8)"),
    (np.zeros((0, 8, 8)), "array of shape (0, 8, 8) is empty"),
    (np.full((8, 8), np.nan), "64 NaN or infinite value(s)"),
    (np.array([[np.inf] + [0.0] * 7] * 8), "8 NaN or infinite"),
    (np.full((8, 8), -0.5), "values -0.5 .. -0.5, expected raw pixels within 0 .. 255"),
    (np.full((8, 8), 255.5), "not normalised"),
    (np.zeros((2, 4, 8, 8)), "(4, 8, 8) (C, H, W), the model expects (1, 8, 8): only grey and RGB"),
    (np.zeros((8, 8, 3)), "looks channels last"),
])
def test_bad_arrays(tmp_path, array, expected):
    np.save(tmp_path / "bad.npy", array)
    message = refused(tmp_path / "bad.npy")
    assert message.startswith(f"{tmp_path / 'bad.npy'}: ") and expected in message


@pytest.mark.parametrize("array, shape", [(np.zeros((8, 8, 3)), GREY), (np.zeros((8, 8, 1)), GREY),
                                          (np.zeros((2, 8, 8, 3)), RGB)])
def test_channels_last_arrays_are_refused_even_with_resize(tmp_path, array, shape):
    """np.asarray of a Pillow image is (H, W, C): read channels first it would be H images of
    shape (W, C) -- garbage that resize would make fit. The hint is np.moveaxis only."""
    np.save(tmp_path / "hwc.npy", array)
    for resize in (False, True):
        message = refused(tmp_path / "hwc.npy", shape=shape, resize=resize)
        assert "np.moveaxis(array, -1, -3)" in message and "predict.resize" not in message


def test_a_mix_of_sizes_names_the_odd_file_and_resize_stacks_it(tmp_path):
    save(tmp_path / "a.png", pixels_u8((8, 8)))
    save(tmp_path / "b.png", pixels_u8((9, 7)))
    message = refused(tmp_path)
    assert message.startswith(f"{tmp_path / 'b.png'}: image of shape (1, 9, 7)")
    assert read(tmp_path, resize=True).pixels.shape == (2, 1, 8, 8)


def test_an_image_for_a_model_of_other_channel_counts(tmp_path):
    save(tmp_path / "a.png", pixels_u8((8, 8)))
    assert "the model expects 2" in refused(tmp_path / "a.png", shape=(2, 8, 8))
    with pytest.raises(InternalError):
        read(tmp_path / "a.png", shape=(8, 8))
