"""Training augmentations applied identically to an image and its mask.

Images are `(H, W, 3) uint8` RGB, masks `(H, W) uint8` with values {0, 1}. Every function is
pure: it returns new arrays and draws randomness only from the `np.random.Generator` it is given,
so the same seed gives the same output. Geometric transforms warp the mask with
nearest-neighbour interpolation, so it stays exactly {0, 1}; photometric ones leave it alone.
`augment` is what the training data loader calls; the per-transform functions take explicit
parameters so tests (and notebooks) can check each one by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class Flip:
    p_horizontal: float = 0.5  # probability of a left-right flip
    p_vertical: float = 0.5  # probability of an up-down flip (the scope has no "up")


@dataclass(frozen=True)
class Rotate:
    p: float = 0.5  # probability of applying a rotation
    max_degrees: float = 180.0  # degrees; angle drawn from [-max, max]: polyps appear at any orientation


@dataclass(frozen=True)
class Affine:
    p: float = 0.5  # probability of applying a scale + shift
    scale: tuple[float, float] = (0.85, 1.15)  # zoom factor range (1 = unchanged)
    max_shift: float = 0.1  # fraction of the side; shift drawn from [-max, max] on each axis


@dataclass(frozen=True)
class Elastic:
    p: float = 0.1  # probability of applying an elastic deformation
    alpha: float = 8.0  # pixels; largest displacement anywhere in the image
    sigma: float = 16.0  # pixels; smoothness (Gaussian std) of the displacement field


@dataclass(frozen=True)
class BrightnessContrast:
    p: float = 0.5  # probability of applying a brightness/contrast change
    max_brightness: float = 0.2  # fraction of 255 added; drawn from [-max, max]
    max_contrast: float = 0.2  # fractional gain around the image mean; drawn from [-max, max]


@dataclass(frozen=True)
class HueSaturationGamma:
    p: float = 0.3  # probability of applying a colour change
    max_hue_degrees: float = 10.0  # degrees on the hue circle; kept small, mucosa colour carries signal
    max_saturation: float = 0.2  # fractional saturation gain; drawn from [-max, max]
    gamma: tuple[float, float] = (0.8, 1.2)  # exponent range applied to intensities in [0, 1]


@dataclass(frozen=True)
class Blur:
    p: float = 0.1  # probability of a Gaussian blur (stands in for motion/defocus blur)
    max_kernel: int = 5  # pixels; largest odd kernel side, drawn from {3, 5, ..., max}


@dataclass(frozen=True)
class AugmentConfig:
    flip: Flip = field(default_factory=Flip)  # left-right / up-down mirroring
    rotate: Rotate = field(default_factory=Rotate)  # rotation about the centre, degrees
    affine: Affine = field(default_factory=Affine)  # zoom and shift, fraction of the side
    elastic: Elastic = field(default_factory=Elastic)  # smooth local deformation, pixels
    brightness_contrast: BrightnessContrast = field(default_factory=BrightnessContrast)  # fraction of 255
    hue_saturation_gamma: HueSaturationGamma = field(default_factory=HueSaturationGamma)  # colour shift
    blur: Blur = field(default_factory=Blur)  # Gaussian blur, kernel side in pixels
    enabled: bool = True  # false: augment returns its inputs unchanged (e.g. to overfit a batch)


# --- geometric: (image, mask) -> (image, mask) ------------------------------------------------


def hflip(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right. `(H, W, 3) uint8`, `(H, W) uint8` -> same shapes and dtypes."""
    # Contiguous copies: OpenCV and torch.from_numpy reject negative strides.
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


def vflip(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror up-down. `(H, W, 3) uint8`, `(H, W) uint8` -> same shapes and dtypes."""
    return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(mask[::-1])


def _warp(image: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Constant 0 rather than reflect: colonoscopy frames already sit in a black surround, so black
    # corners look like the scope's own vignetting, while reflection would invent mirrored
    # half-polyps at the border that no real frame contains.
    h, w = mask.shape
    out_image = cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    out_mask = cv2.warpAffine(
        mask, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return out_image, out_mask


def _centre(mask: np.ndarray) -> tuple[float, float]:
    # Pixel centres run 0..W-1, so this centre makes a 90-degree turn of a square image exact.
    h, w = mask.shape
    return (w - 1) / 2.0, (h - 1) / 2.0


def rotate(image: np.ndarray, mask: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre, counter-clockwise as displayed for positive `degrees`.

    `(H, W, 3) uint8`, `(H, W) uint8` -> same shapes and dtypes; uncovered corners are 0.
    """
    matrix = cv2.getRotationMatrix2D(_centre(mask), degrees, 1.0)
    return _warp(image, mask, matrix)


def affine(
    image: np.ndarray, mask: np.ndarray, scale: float, shift_x: float, shift_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """Zoom by `scale` about the centre, then shift by `shift_x * W` right and `shift_y * H` down.

    `(H, W, 3) uint8`, `(H, W) uint8` -> same shapes and dtypes; uncovered borders are 0.
    """
    h, w = mask.shape
    matrix = cv2.getRotationMatrix2D(_centre(mask), 0.0, scale)
    matrix[0, 2] += shift_x * w
    matrix[1, 2] += shift_y * h
    return _warp(image, mask, matrix)


def elastic(
    image: np.ndarray, mask: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random deformation: no pixel moves more than `alpha` pixels; `sigma` sets smoothness.

    `(H, W, 3) uint8`, `(H, W) uint8` -> same shapes and dtypes.
    """
    h, w = mask.shape
    # Blurring full-size noise with a wide Gaussian is the slow part of the classic recipe
    # (Simard et al. 2003). A field that smooth has no detail finer than ~sigma/4 pixels, so draw
    # and blur it on a grid `step` times coarser and upsample it linearly: ~16x less work.
    step = max(1, int(sigma // 4))
    small = (h // step + 2, w // step + 2)
    noise = rng.uniform(-1.0, 1.0, size=(2, *small)).astype(np.float32)
    fields = []
    for component in noise:
        smooth = cv2.GaussianBlur(component, (0, 0), sigmaX=max(sigma / step, 0.5))
        fields.append(cv2.resize(smooth, (w, h), interpolation=cv2.INTER_LINEAR))
    dx, dy = fields
    # Normalise so alpha is the largest displacement in pixels, independent of sigma; in the
    # classic recipe the amplitude shrinks as sigma grows, which makes the two hard to tune.
    peak = float(np.sqrt(dx * dx + dy * dy).max())
    gain = alpha / peak if peak > 0 else 0.0
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = grid_x + gain * dx
    map_y = grid_y + gain * dy
    # Displacements are a few pixels, so reflecting at the border shows no mirrored content and
    # avoids the black slivers a constant border would leave.
    out_image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    out_mask = cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    return out_image, out_mask


# --- photometric: image -> image; the mask is never touched --------------------------------------


def _apply_lut(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    lut = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


def adjust_brightness_contrast(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """`(H, W, 3) uint8` -> `(H, W, 3) uint8`: scale by `1 + contrast` about the image mean,
    then add `brightness * 255`; clipped to [0, 255]."""
    # Stretching about the mean (not about 0) keeps overall brightness a separate knob.
    mean = float(image.mean())
    levels = np.arange(256, dtype=np.float32)
    return _apply_lut(image, (levels - mean) * (1.0 + contrast) + mean + 255.0 * brightness)


def adjust_hue_saturation_gamma(
    image: np.ndarray, hue_degrees: float, saturation: float, gamma: float
) -> np.ndarray:
    """`(H, W, 3) uint8` RGB -> `(H, W, 3) uint8`: rotate hue by `hue_degrees`, scale saturation
    by `1 + saturation`, then map each intensity v in [0, 1] to v ** gamma."""
    # Float HSV (hue in [0, 360)) rather than 8-bit HSV, whose hue has 2-degree steps.
    x = image.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_degrees, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + saturation), 0.0, 1.0)
    rgb = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)
    return np.clip(np.rint(255.0 * rgb**gamma), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, kernel: int) -> np.ndarray:
    """Gaussian blur with an odd `kernel` x `kernel` window (1 = unchanged).

    `(H, W, 3) uint8` -> `(H, W, 3) uint8`.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur kernel must be a positive odd number of pixels, got {kernel}")
    if kernel == 1:
        return image.copy()
    return cv2.GaussianBlur(image, (kernel, kernel), 0)


# --- the training pipeline -------------------------------------------------------------------


def augment(
    image: np.ndarray, mask: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply each transform with its probability, parameters drawn uniformly from their ranges.

    `(H, W, 3) uint8` RGB, `(H, W) uint8` {0, 1} -> same shapes and dtypes, mask still {0, 1}.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in size")
    if not config.enabled:
        return image, mask
    c = config
    # Photometric first, geometric last, so the fill that rotation and zoom leave in the corners
    # stays pure black like the scope's surround instead of being brightened or blurred.
    if rng.random() < c.brightness_contrast.p:
        bc = c.brightness_contrast
        brightness = rng.uniform(-bc.max_brightness, bc.max_brightness)
        image = adjust_brightness_contrast(image, brightness, rng.uniform(-bc.max_contrast, bc.max_contrast))
    if rng.random() < c.hue_saturation_gamma.p:
        hsg = c.hue_saturation_gamma
        hue = rng.uniform(-hsg.max_hue_degrees, hsg.max_hue_degrees)
        saturation = rng.uniform(-hsg.max_saturation, hsg.max_saturation)
        image = adjust_hue_saturation_gamma(image, hue, saturation, rng.uniform(*hsg.gamma))
    if rng.random() < c.blur.p and c.blur.max_kernel >= 3:
        image = blur(image, int(rng.choice(np.arange(3, c.blur.max_kernel + 1, 2))))
    if rng.random() < c.flip.p_horizontal:
        image, mask = hflip(image, mask)
    if rng.random() < c.flip.p_vertical:
        image, mask = vflip(image, mask)
    if rng.random() < c.rotate.p:
        image, mask = rotate(image, mask, rng.uniform(-c.rotate.max_degrees, c.rotate.max_degrees))
    if rng.random() < c.affine.p:
        scale = rng.uniform(*c.affine.scale)
        shift_x, shift_y = rng.uniform(-c.affine.max_shift, c.affine.max_shift, size=2)
        image, mask = affine(image, mask, scale, shift_x, shift_y)
    if rng.random() < c.elastic.p:
        image, mask = elastic(image, mask, c.elastic.alpha, c.elastic.sigma, rng)
    return image, mask
