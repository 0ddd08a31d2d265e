"""Every kind of image file decodes to upright uint8 RGB (H, W, 3), and damaged files raise."""
import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from retinanet.data.image_io import (ImageReadError, load_image_rgb, read_image_header, read_image_size,
                                     verify_image_file, write_png)

ORIENTATION_TAG = 0x0112
# A small image whose pixels all differ, so any flip or turn shows: shape (3, 5, 3).
PATTERN = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5


def save_with_orientation(array, path, orientation, **options):
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[ORIENTATION_TAG] = orientation
    image.save(path, exif=exif, **options)


def noisy_jpeg(path, height=120, width=160, **options):
    """Write a JPEG of random pixels (hard to compress, so truncation cuts scan data)."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90, **options)
    return path


def test_rgb_png_keeps_channel_order(tmp_path):
    path = str(tmp_path / "rgb.png")
    Image.fromarray(PATTERN).save(path)
    image = load_image_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (3, 5, 3)
    np.testing.assert_array_equal(image, PATTERN)


def test_rgb_jpeg_keeps_channel_order(tmp_path):
    path = str(tmp_path / "red.jpg")
    Image.new("RGB", (16, 8), (255, 0, 0)).save(path, quality=100)
    image = load_image_rgb(path)
    assert image.shape == (8, 16, 3)
    assert image[..., 0].min() >= 250 and image[..., 1:].max() <= 5


def test_grayscale_is_repeated_into_three_channels(tmp_path):
    path = str(tmp_path / "gray.png")
    Image.fromarray(np.array([[0, 10, 200]], np.uint8), "L").save(path)
    np.testing.assert_array_equal(load_image_rgb(path), [[[0, 0, 0], [10, 10, 10], [200, 200, 200]]])


def test_grayscale_with_alpha_drops_alpha(tmp_path):
    path = str(tmp_path / "gray_alpha.png")
    Image.fromarray(np.array([[[10, 0], [200, 255]]], np.uint8), "LA").save(path)
    np.testing.assert_array_equal(load_image_rgb(path), [[[10, 10, 10], [200, 200, 200]]])


def test_one_bit_image(tmp_path):
    path = str(tmp_path / "bits.png")
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(path)
    np.testing.assert_array_equal(load_image_rgb(path), [[[0, 0, 0], [255, 255, 255]]])


def test_rgba_drops_alpha_without_blending(tmp_path):
    path = str(tmp_path / "rgba.png")
    pixels = np.array([[[10, 20, 30, 0], [40, 50, 60, 128], [70, 80, 90, 255]]], np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)
    np.testing.assert_array_equal(load_image_rgb(path), pixels[..., :3])


def test_palette_png_uses_palette_colours(tmp_path):
    path = str(tmp_path / "palette.png")
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * 759)
    image.putdata([2, 0, 1])
    image.save(path, transparency=1)
    np.testing.assert_array_equal(load_image_rgb(path), [[[70, 80, 90], [10, 20, 30], [40, 50, 60]]])


def test_16_bit_grayscale_keeps_high_byte(tmp_path):
    path = str(tmp_path / "gray16.png")
    values = np.array([[0, 255, 256, 1000, 40000, 65535]], np.uint16)
    assert cv2.imwrite(path, values)
    image = load_image_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (1, 6, 3)
    np.testing.assert_array_equal(image[..., 0], [[0, 0, 1, 3, 156, 255]])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_16_bit_colour_keeps_high_byte_in_rgb_order(tmp_path):
    path = str(tmp_path / "colour16.png")
    rgb = np.array([[[65535, 0, 256], [511, 1000, 40000]]], np.uint16)
    assert cv2.imwrite(path, rgb[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(load_image_rgb(path), rgb >> 8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_transpose(tmp_path, orientation):
    path = str(tmp_path / f"oriented{orientation}.png")
    save_with_orientation(PATTERN, path, orientation)
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    image = load_image_rgb(path)
    np.testing.assert_array_equal(image, expected)
    assert image.shape == ((5, 3, 3) if orientation >= 5 else (3, 5, 3))
    assert read_image_size(path) == (image.shape[1], image.shape[0])


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    path = str(tmp_path / "rotated.jpg")
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red as stored; orientation 6 turns it 90 degrees clockwise
    save_with_orientation(stored, path, 6, quality=95)
    image = load_image_rgb(path)
    assert image.shape == (40, 20, 3)
    assert read_image_size(path) == (20, 40)
    assert read_image_header(path).orientation == 6
    assert image[:15, :, 0].min() >= 240  # the red half is now on top
    assert image[25:, :, 0].max() <= 15


def test_rotated_tiff_is_decoded_upright(tmp_path):
    path = str(tmp_path / "rotated.tif")
    save_with_orientation(PATTERN, path, 8)
    np.testing.assert_array_equal(load_image_rgb(path), np.rot90(PATTERN))
    assert read_image_size(path) == (3, 5)


def test_format_opencv_lacks_is_decoded(tmp_path):
    path = str(tmp_path / "image.tga")
    Image.fromarray(PATTERN).save(path)
    np.testing.assert_array_equal(load_image_rgb(path), PATTERN)


def test_read_image_size_reads_header_only(tmp_path):
    path = str(tmp_path / "truncated.jpg")
    data = open(noisy_jpeg(str(tmp_path / "full.jpg")), "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    assert read_image_size(path) == (160, 120)


def test_truncated_jpeg_raises(tmp_path):
    path = str(tmp_path / "truncated.jpg")
    data = open(noisy_jpeg(str(tmp_path / "full.jpg")), "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    for reader in (load_image_rgb, verify_image_file):
        with pytest.raises(ImageReadError, match="truncated") as caught:
            reader(path)
        assert caught.value.path == path and path in str(caught.value)


def test_jpeg_with_bytes_after_its_end_loads(tmp_path):
    full = noisy_jpeg(str(tmp_path / "full.jpg"))
    path = str(tmp_path / "trailing.jpg")
    open(path, "wb").write(open(full, "rb").read() + b"\0" * 64)
    np.testing.assert_array_equal(load_image_rgb(path), load_image_rgb(full))
    assert verify_image_file(path).width == 160


def test_truncated_png_raises(tmp_path):
    path = str(tmp_path / "truncated.png")
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    open(path, "wb").write(data[: len(data) // 2])
    for reader in (load_image_rgb, verify_image_file):
        with pytest.raises(ImageReadError, match="truncated"):
            reader(path)


def test_complete_files_pass_verification(tmp_path):
    for name in ("ok.png", "ok.bmp", "ok.webp"):
        Image.fromarray(PATTERN).save(tmp_path / name)
        header = verify_image_file(str(tmp_path / name))
        assert (header.width, header.height) == (5, 3)


def test_not_an_image_raises(tmp_path):
    path = str(tmp_path / "notes.jpg")
    open(path, "w").write("this is text, not a picture")
    for reader in (load_image_rgb, read_image_size, verify_image_file):
        with pytest.raises(ImageReadError, match="not an image file") as caught:
            reader(path)
        assert path in str(caught.value)


def test_missing_file_raises(tmp_path):
    path = str(tmp_path / "absent.jpg")
    for reader in (load_image_rgb, read_image_size, verify_image_file):
        with pytest.raises(ImageReadError, match="file not found"):
            reader(path)


def test_write_png_round_trip_matches_opencv(tmp_path):
    bgr = np.ascontiguousarray(PATTERN[..., ::-1])
    path, reference = str(tmp_path / "written.png"), str(tmp_path / "reference.png")
    write_png(path, bgr, compression=6)
    assert cv2.imwrite(reference, bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    assert open(path, "rb").read() == open(reference, "rb").read()
    np.testing.assert_array_equal(load_image_rgb(path), PATTERN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.png", "written.png"]
