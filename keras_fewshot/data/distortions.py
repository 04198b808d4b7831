"""Random affine distortions of uint8 images on white paper, with stateless random ops.

Each image gets its own map: a rotation, a shear, a per-axis scale and a translation, each
drawn uniformly from its range and applied with probability `probability` (else neutral),
composed about the image centre and resampled bilinearly; uncovered pixels are white paper.
Users: Koch et al.'s distortions (`koch_distort`) of pairs (`pairs.py`) and training
episodes (`episodes.py`), Santoro et al.'s rotations and translations of sequence images
(`sequences.py`).
"""

import math

import tensorflow as tf

PAPER = 255.0  # the fill of uncovered pixels: white paper


def random_affine(images, seed, *, rotation=0.0, shear=0.0, scale=0.0, shift=0.0,
                  probability=1.0):
    """uint8 [P, s, s, C] -> the same images, each under its own random affine map.

    rotation: degrees, drawn from [-rotation, rotation]; shear: from [-shear, shear] per axis;
    scale: factor drawn from [1 - scale, 1 + scale] per axis; shift: pixels at 105x105
    (Omniglot's resolution; scaled to the image size), from [-shift, shift] per axis.
    """
    return affine_transform(images, affine_parameters(
        tf.shape(images)[0], seed, rotation=rotation, shear=shear, scale=scale, shift=shift,
        probability=probability))


def koch_distort(images, seed):
    """Koch, Zemel & Salakhutdinov (2015, sec. 4.1): rotation in [-10, 10] degrees, shear in
    [-0.3, 0.3], scale in [0.8, 1.2] and shift in [-2, 2] pixels at 105x105, each applied
    with probability 0.5."""
    return random_affine(images, seed, rotation=10.0, shear=0.3, scale=0.2, shift=2.0,
                         probability=0.5)


def affine_parameters(count, seed, *, rotation=0.0, shear=0.0, scale=0.0, shift=0.0,
                      probability=1.0):
    """float32 [count, 7]: the random maps of `random_affine`, one row per image: rotation
    (radians), shear (x, y), scale (x, y), shift (x, y; pixels at 105x105). Drawing them
    apart from `affine_transform` lets a pipeline draw per element and transform per batch.

    A component whose range is empty is not drawn (it would be neutral for every image),
    nor is the coin of `probability` 1; the values drawn are the same either way.
    """
    seeds = tf.random.experimental.stateless_split(seed, 8)

    def sample(i, low, high, width, neutral):
        """Uniform in [low, high) with probability `probability`, else the neutral value."""
        if low == high == neutral:
            return tf.fill([count, width], float(neutral))
        value = tf.random.stateless_uniform([count, width], seeds[2 * i], low, high)
        if probability >= 1.0:  # a uniform draw in [0, 1) is always below it
            return value
        keep = tf.random.stateless_uniform([count, width], seeds[2 * i + 1]) < probability
        return tf.where(keep, value, neutral)

    return tf.concat([sample(0, -rotation, rotation, 1, 0.0) * (math.pi / 180.0),
                      sample(1, -shear, shear, 2, 0.0),
                      sample(2, 1.0 - scale, 1.0 + scale, 2, 1.0),
                      sample(3, -shift, shift, 2, 0.0)], axis=1)


def affine_transform(images, parameters):
    """uint8 [P, s, s, C] and their `affine_parameters` [P, 7] -> the transformed images."""
    size = tf.cast(tf.shape(images)[1], tf.float32)
    theta, shears, scales = parameters[:, 0], parameters[:, 1:3], parameters[:, 3:5]
    shifts = parameters[:, 5:7] * size / 105.0
    cos, sin = tf.cos(theta), tf.sin(theta)
    # Output-to-input map about the image centre: A = R(theta) S(shear) diag(scale).
    a00 = scales[:, 0] * (cos - sin * shears[:, 1])
    a01 = scales[:, 1] * (cos * shears[:, 0] - sin)
    a10 = scales[:, 0] * (sin + cos * shears[:, 1])
    a11 = scales[:, 1] * (sin * shears[:, 0] + cos)
    centre = (size - 1.0) / 2.0
    b0 = centre - a00 * centre - a01 * centre + shifts[:, 0]
    b1 = centre - a10 * centre - a11 * centre + shifts[:, 1]
    transforms = tf.stack([a00, a01, b0, a10, a11, b1], axis=1)
    return tf.cast(tf.round(_bilinear_warp(images, transforms, PAPER)), tf.uint8)


@tf.function(jit_compile=True)
def _bilinear_warp(images, transforms, fill):
    """float32 [P, h, w, C]: each image read at A (col, row) + b for every output pixel
    (transforms [P, 6] = a00 a01 b0 a10 a11 b1), bilinearly; `fill` outside, and for the
    corners outside when a point lies within one pixel of the border: the semantics of
    TensorFlow's ImageProjectiveTransformV3, which has no XLA kernel and was the sequence
    pipeline's bottleneck."""
    shape = tf.shape(images)
    count, height, width = shape[0], shape[1], shape[2]
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32),
                             tf.range(width, dtype=tf.float32), indexing="ij")
    rows, cols = tf.reshape(rows, [1, 1, -1]), tf.reshape(cols, [1, 1, -1])
    t = tf.transpose(transforms)[:, :, None, None]  # [6, P, 1, 1]
    x = t[0] * cols + t[1] * rows + t[2]  # [P, 1, h * w] input coordinates (all channels)
    y = t[3] * cols + t[4] * rows + t[5]
    w, h = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    inside = (x >= -1.0) & (x <= w) & (y >= -1.0) & (y <= h)
    x, y = tf.clip_by_value(x, -1.0, w), tf.clip_by_value(y, -1.0, h)
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = x - x0, y - y0
    # Channel planes with a border of `fill` one pixel wide: it holds every corner a point
    # inside can have. A corner past the last row or column has weight 0.
    planes = tf.pad(tf.transpose(tf.cast(images, tf.float32), [0, 3, 1, 2]),
                    [[0, 0], [0, 0], [1, 1], [1, 1]], constant_values=fill)
    pixels = tf.reshape(planes, [-1])
    plane_size = (height + 2) * (width + 2)
    first = tf.reshape(tf.range(count * shape[3]) * plane_size, [count, -1, 1])
    top_left = (first + (tf.cast(y0, tf.int32) + 1) * (width + 2)
                + tf.cast(x0, tf.int32) + 1)  # [P, C, h * w]
    limit = tf.size(pixels) - 1

    def at(offset):
        return tf.gather(pixels, tf.minimum(top_left + offset, limit))

    top = (1.0 - fx) * at(0) + fx * at(1)
    bottom = (1.0 - fx) * at(width + 2) + fx * at(width + 3)
    out = tf.where(inside, (1.0 - fy) * top + fy * bottom, fill)  # [P, C, h * w]
    return tf.transpose(tf.reshape(out, [count, shape[3], height, width]), [0, 2, 3, 1])
