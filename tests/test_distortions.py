"""keras_fewshot.data.distortions against a numpy re-computation of the affine map."""

import math

import numpy as np
import tensorflow as tf

from keras_fewshot.data.distortions import affine_parameters, affine_transform


def numpy_affine(image, theta, shear, scale, shift):
    """One [s, s, 1] image under A = R(theta) S(shear) diag(scale) about the centre, then a
    shift in pixels at 105x105; bilinear, white paper outside."""
    size = image.shape[0]
    rotate = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    transform = rotate @ np.array([[1.0, shear[0]], [shear[1], 1.0]]) @ np.diag(scale)
    centre = (size - 1) / 2
    padded = np.pad(image[..., 0].astype(float), 1, constant_values=255.0)
    out = np.empty((size, size))
    for row in range(size):
        for col in range(size):
            x, y = transform @ (np.array([col, row]) - centre) + centre + np.array(shift) * size / 105
            if not (-1 <= x <= size and -1 <= y <= size):
                out[row, col] = 255.0
                continue
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0

            def at(r, c):
                return padded[min(r, size) + 1, min(c, size) + 1]
            out[row, col] = ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                             + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))
    return out


def test_affine_transform_is_the_bilinear_affine_map(rng):
    images = rng.integers(0, 256, (3, 12, 12, 1), dtype=np.uint8)
    parameters = np.array([[0.2, 0.0, 0.0, 1.0, 1.0, 9.0, -4.0],  # rotation, shifts
                           [-0.1, 0.3, -0.2, 0.9, 1.1, 0.0, 0.0],  # shear and scale
                           [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]], np.float32)  # identity
    warped = affine_transform(images, parameters).numpy()
    for image, p, out in zip(images, parameters, warped):
        expected = numpy_affine(image, p[0], p[1:3], p[3:5], p[5:7])
        np.testing.assert_allclose(out[..., 0], expected, atol=0.51 + 1e-3)
    np.testing.assert_array_equal(warped[2], images[2])
    colour = np.concatenate([images, 255 - images, images // 2], axis=-1)  # 3 channels
    for c, plane in enumerate((warped, 255 - images, images // 2)):
        expected = plane if c == 0 else affine_transform(plane, parameters).numpy()
        np.testing.assert_array_equal(
            affine_transform(colour, parameters).numpy()[..., c:c + 1], expected)


def test_affine_parameters_draw_in_their_ranges_and_skip_empty_ones():
    seed = tf.constant([3, 4], tf.int64)
    p = affine_parameters(500, seed, rotation=10.0, shift=5.0).numpy()
    assert np.abs(p[:, 0]).max() <= math.radians(10.0) and np.abs(p[:, 5:]).max() <= 5.0
    assert p[:, 0].std() > 0.05 and p[:, 5:].std() > 1.0
    np.testing.assert_array_equal(p[:, 1:5], [[0.0, 0.0, 1.0, 1.0]] * 500)  # neutral
    half = affine_parameters(500, seed, rotation=10.0, shift=5.0, probability=0.5).numpy()
    assert 0.35 < (half[:, 0] == 0).mean() < 0.65  # the rest keep the neutral value
    kept = half[:, 0] != 0
    np.testing.assert_array_equal(half[kept, 0], p[kept, 0])  # the same draws, by seed
