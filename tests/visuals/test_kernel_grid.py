"""The kernel views of convtrain.visuals.grids: geometry, colours, scalings, selection and labels,
each checked against the documented formula computed here (and labels against Pillow's own
rendering of the text), never against a picture the code drew before."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from convtrain.errors import InternalError
from convtrain.visuals.grids import kernel_grid

WHITE, RED, BLUE, ORANGE = (255, 255, 255), (178, 24, 43), (33, 102, 172), (217, 72, 1)
BLACK, FRAME_GREY_MAP = (0, 0, 0), (255, 140, 0)
SEP, CELL_GAP, LABEL = 2, 6, 12


def aimed_cols(n, k):
    """The columns the explicit-scale tests choose (about 4 tiles per tile row, no empty row)."""
    cols = min(n, max(1, round(math.sqrt(4 * n / k))))
    return math.ceil(n / math.ceil(n / cols))


def layout(n, k, kh, kw, scale, labels=1, cols=None):
    """The documented geometry for ``cols`` columns (default: :func:`aimed_cols`)."""
    cols = cols or aimed_cols(n, k)
    rows = math.ceil(n / cols)
    gap = SEP if k == 1 else CELL_GAP
    cell_w, cell_h = k * kw * scale + (k - 1) * SEP, labels * LABEL + kh * scale
    return dict(rows=rows, cols=cols, gap=gap, cell_w=cell_w, cell_h=cell_h,
                height=rows * (cell_h + gap) + gap, width=cols * (cell_w + gap) + gap)


def text_width(text):
    """Pixels of a label: Pillow's advance of the text, rounded up, and a 1 px margin."""
    return math.ceil(ImageFont.load_default().getlength(text)) + 1


CARD = (367, 215)  # a TensorBoard 2.21 Time Series card's image box, measured in Chromium


def auto_layout(n, k, kh, kw, labels=1, channels=0, min_tile=0):
    """The documented automatic layout, by trying every scale and column count: the largest
    scale (tiles <= 48 px) at which the grid fits the card, over the column counts that leave
    no row empty; then the fewest empty cells, then the most columns. The labels (filters
    0..n-1; channels 0..channels-1 when labels == 2) must fit, and tiles be at least min_tile
    px: the smallest scale they allow."""
    need = math.ceil((max(text_width(f"f{i}") for i in range(n)) - (k - 1) * SEP) / (k * kw))
    if labels == 2:
        need = max(need, math.ceil(max(text_width(f"c{i}") for i in range(channels)) / kw))
    need = max(1, need, math.ceil(min_tile / max(kh, kw)))  # tiles of at least min_tile px
    candidates = [c for c in range(1, n + 1) if math.ceil(n / math.ceil(n / c)) == c]
    fits = [(s, -c * math.ceil(n / c), c) for c in candidates
            for s in range(1, 48 // max(kh, kw) + 1)
            if layout(n, k, kh, kw, s, labels, c)["width"] <= CARD[0]
            and layout(n, k, kh, kw, s, labels, c)["height"] <= CARD[1]]
    if fits and max(fits)[0] >= need:
        scale, _, cols = max(fits)
    else:
        def overflow(c):
            g = layout(n, k, kh, kw, need, labels, c)
            return max(g["width"] / CARD[0], g["height"] / CARD[1])
        scale, cols = need, min(candidates, key=lambda c: (overflow(c), -c))
    return dict(layout(n, k, kh, kw, scale, labels, cols), scale=scale)


def tile(img, geo, i, j, kh, kw, scale):
    """Tile j of cell i, downsampled back to one pixel per weight."""
    r, c = divmod(i, geo["cols"])
    y = geo["gap"] + r * (geo["cell_h"] + geo["gap"]) + LABEL
    x = geo["gap"] + c * (geo["cell_w"] + geo["gap"]) + j * (kw * scale + SEP)
    block = img[y:y + kh * scale, x:x + kw * scale]
    # nearest-neighbour upscaling: every pixel of a weight's square is the same
    assert np.all(block == block[::scale, ::scale].repeat(scale, 0).repeat(scale, 1))
    return block[::scale, ::scale]


def diverging(v):
    """Independent colour formula: white -> red for v > 0, white -> blue for v < 0."""
    v = np.clip(np.asarray(v, np.float64), -1, 1)[..., None]
    end = np.where(v >= 0, np.array(RED, float), np.array(BLUE, float))
    return np.round(np.array(WHITE, float) + np.abs(v) * (end - np.array(WHITE, float)))


def luma(rgb):
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


# --- geometry ----------------------------------------------------------------------------
@pytest.mark.parametrize(("f", "c", "k", "top"), [
    (16, 1, 3, 4),   # a first layer on grey images: one tile per filter
    (6, 1, 5, 4),
    (1, 1, 3, 4),
    (3, 4, 3, 4),    # all 4 channels fit: one cell of 4 tiles per filter
    (32, 16, 3, 4),  # 4 of 16 channels per filter, channel labels under the tiles
    (5, 2, 7, 1),
])
def test_grid_size_tiles_and_separators_follow_the_formula(f, c, k, top):
    w = np.random.default_rng(0).normal(size=(f, c, k, k))
    shown = 1 if c == 1 else min(c, top)
    img = kernel_grid(w, scale=3, cols=aimed_cols(f, shown), top_channels=top, rgb=False)
    geo = layout(f, shown, k, k, 3, labels=2 if c > top else 1)
    assert img.dtype == np.uint8 and img.shape == (geo["height"], geo["width"], 3)
    # separators: the outer border and every gap between cells is the frame colour
    gap = geo["gap"]
    assert np.all(img[:gap] == BLACK) and np.all(img[:, :gap] == BLACK)
    assert np.all(img[-gap:] == BLACK) and np.all(img[:, -gap:] == BLACK)
    for col in range(1, geo["cols"]):
        x = gap + col * (geo["cell_w"] + gap) - gap
        assert np.all(img[:, x:x + gap] == BLACK)
    for row in range(1, geo["rows"]):
        y = gap + row * (geo["cell_h"] + gap) - gap
        assert np.all(img[y:y + gap] == BLACK)
    # between the tiles of one cell: SEP px of frame colour, tiles of equal size
    if shown > 1:
        r = gap + LABEL
        for j in range(1, shown):
            x = gap + j * (k * 3 + SEP) - SEP
            assert np.all(img[r:r + k * 3, x:x + SEP] == BLACK)
    for i in range(f):
        assert tile(img, geo, i, shown - 1, k, k, 3).shape == (k, k, 3)


def test_grids_fit_a_tensorboard_card_when_the_labels_allow():
    for f, c, k in ((16, 1, 3), (32, 16, 3), (64, 64, 3), (8, 1, 5), (6, 3, 7), (32, 1, 3)):
        h, w = kernel_grid(np.ones((f, c, k, k)), rgb=False).shape[:2]
        assert w <= CARD[0] and h <= CARD[1], (f, c, k)


def test_automatic_scale_is_the_largest_integer_within_a_card_and_48px_tiles():
    # 16 one-channel 3x3 filters: 6 x 3 cells of 48 px tiles (the cap) fit; 8 x 2 only 42 px
    geo = auto_layout(16, 1, 3, 3)
    assert (geo["rows"], geo["cols"], geo["scale"]) == (3, 6, 16)
    assert kernel_grid(np.ones((16, 1, 3, 3))).shape[:2] == (geo["height"], geo["width"])
    # 32 filters, their 2 strongest of 16 channels: the channel labels ("c15") need 18 px
    # tiles; 8 x 4 cells of them fit the card
    geo = auto_layout(32, 2, 3, 3, labels=2, channels=16)
    assert (geo["rows"], geo["cols"], geo["scale"]) == (4, 8, 6)
    assert kernel_grid(np.ones((32, 16, 3, 3))).shape[:2] == (geo["height"], geo["width"])
    # 4 channels of each of 32 filters cannot fit: the labels' scale, the least overflow
    geo = auto_layout(32, 4, 3, 3, labels=2, channels=16)
    img = kernel_grid(np.ones((32, 16, 3, 3)), top_channels=4)
    assert img.shape[:2] == (geo["height"], geo["width"]) and geo["scale"] == 6
    assert img.shape[0] > CARD[1] or img.shape[1] > CARD[0]


# --- colours and scalings ----------------------------------------------------------------
def test_zero_is_white_plus_max_red_minus_max_blue_and_the_separator_contrasts():
    w = np.array([[[[-2.0, 0.0, 2.0], [1.0, -1.0, 0.0]]]])  # one filter, one channel, 2x3
    img = kernel_grid(w, scaling="layer", scale=1, cols=1)
    px = tile(img, layout(1, 1, 2, 3, 1), 0, 0, 2, 3, 1)
    assert [tuple(p) for p in px[0]] == [BLUE, WHITE, RED]
    # half the limit: half-way from white to the end colour, rounded
    assert tuple(px[1, 0]) == tuple(np.round((np.array(WHITE) + np.array(RED)) / 2).astype(int))
    assert tuple(px[1, 1]) == tuple(np.round((np.array(WHITE) + np.array(BLUE)) / 2).astype(int))
    # the separator (black) is far from white, red and blue alike
    for colour in (WHITE, RED, BLUE):
        assert abs(luma(colour) - luma(BLACK)) >= 70


def test_grey_colour_map_and_its_orange_frame():
    w = np.array([[[[-3.0, 0.0, 3.0]]]])
    img = kernel_grid(w, scaling="layer", colormap="grey", scale=1, cols=1)
    px = tile(img, layout(1, 1, 1, 3, 1), 0, 0, 1, 3, 1)
    assert [tuple(p) for p in px[0]] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    assert tuple(img[0, 0]) == FRAME_GREY_MAP  # contrasts with black, grey and white
    for colour in ((0, 0, 0), (255, 255, 255)):
        assert abs(luma(colour) - luma(FRAME_GREY_MAP)) >= 90


def test_per_filter_scaling_spans_all_input_channels_of_a_filter():
    # filter 0: channel 0 reaches 2, channel 1 only 1; filter 1 is 10x weaker than filter 0
    f0 = np.stack([np.full((2, 2), 2.0), np.full((2, 2), 1.0)])
    w = np.stack([f0, -0.1 * f0])
    img = kernel_grid(w, scaling="per_filter", scale=2, cols=2)
    geo = layout(2, 2, 2, 2, 2)
    assert np.all(tile(img, geo, 0, 0, 2, 2, 2) == RED)  # 2 / 2: full colour
    half_red = diverging(0.5)
    assert np.all(tile(img, geo, 0, 1, 2, 2, 2) == half_red)  # 1 / 2, not stretched to 1
    assert np.all(tile(img, geo, 1, 0, 2, 2, 2) == BLUE)  # the weak filter at full colour too
    assert np.all(tile(img, geo, 1, 1, 2, 2, 2) == diverging(-0.5))


def test_layer_scaling_shares_one_limit_and_fixed_scaling_keeps_the_given_one():
    f0 = np.stack([np.full((2, 2), 2.0), np.full((2, 2), 1.0)])
    w = np.stack([f0, -0.1 * f0])
    geo = layout(2, 2, 2, 2, 2)
    layer = kernel_grid(w, scaling="layer", scale=2, cols=2)
    assert np.all(tile(layer, geo, 1, 0, 2, 2, 2) == diverging(-0.2 / 2))
    fixed = kernel_grid(w, scaling="fixed", limit=4.0, scale=2, cols=2)
    assert np.all(tile(fixed, geo, 0, 0, 2, 2, 2) == diverging(2 / 4))
    assert np.all(tile(fixed, geo, 1, 1, 2, 2, 2) == diverging(-0.1 / 4))
    # beyond the fixed limit: full colour (clipped), and the same weights at a doubled size
    # get twice as far from white: growth shows
    grown = kernel_grid(2 * w, scaling="fixed", limit=1.0, scale=2, cols=2)
    assert np.all(tile(grown, geo, 0, 0, 2, 2, 2) == RED)
    twice = kernel_grid(2 * w, scaling="fixed", limit=4.0, scale=2, cols=2)
    assert np.all(tile(twice, geo, 0, 1, 2, 2, 2) == diverging(2 / 4))
    assert np.all(tile(fixed, geo, 0, 1, 2, 2, 2) == diverging(1 / 4))
    with pytest.raises(InternalError, match="fixed scaling needs a limit"):
        kernel_grid(w, scaling="fixed")


def test_all_zero_weights_are_white_not_a_division_by_zero():
    for scaling, limit in (("layer", None), ("per_filter", None), ("fixed", 0.0)):
        img = kernel_grid(np.zeros((2, 1, 3, 3)), scaling=scaling, limit=limit, scale=1, cols=2)
        assert np.all(tile(img, layout(2, 1, 3, 3, 1), 1, 0, 3, 3, 1) == WHITE)


def test_rgb_first_layer_is_one_colour_tile_per_filter_with_zero_mid_grey():
    w = np.zeros((5, 3, 2, 2))
    w[1, 0] = 1.0   # filter 1: pure +red channel
    w[1, 2] = -1.0  # ... and -blue
    img = kernel_grid(w, scaling="layer", scale=2, cols=3)
    geo = layout(5, 1, 2, 2, 2)
    assert img.shape == (geo["height"], geo["width"], 3)
    assert np.all(tile(img, geo, 0, 0, 2, 2, 2) == (128, 128, 128))  # 127.5 rounds to 128
    assert np.all(tile(img, geo, 1, 0, 2, 2, 2) == (255, 128, 0))
    with pytest.raises(InternalError, match="3 input channels"):
        kernel_grid(np.zeros((4, 2, 3, 3)), rgb=True)


def test_magnitude_map_for_changes_is_white_to_orange():
    delta = np.array([[[[0.0, -1.0, 2.0]]]])
    img = kernel_grid(delta, scaling="layer", colormap="magnitude", scale=1, cols=1)
    px = tile(img, layout(1, 1, 1, 3, 1), 0, 0, 1, 3, 1)
    half = tuple(np.round((np.array(WHITE) + np.array(ORANGE)) / 2).astype(int))
    assert [tuple(p) for p in px[0]] == [WHITE, half, ORANGE]  # |-1| / 2 is half-way


# --- what is shown -----------------------------------------------------------------------
def test_the_strongest_filters_are_shown_in_filter_order_when_there_are_too_many():
    rng = np.random.default_rng(1)
    norms = rng.permutation(np.arange(1.0, 11.0))  # filter f has L2 norm norms[f]
    w = norms[:, None, None, None] * np.full((10, 1, 2, 2), 0.5)  # ||0.5 * ones(2x2)|| = 1
    img = kernel_grid(w, scaling="fixed", limit=10.0, max_filters=4, scale=4, cols=4)
    chosen = sorted(np.argsort(-norms)[:4])
    geo = layout(4, 1, 2, 2, 4)
    assert img.shape == (geo["height"], geo["width"], 3)
    for i, f in enumerate(chosen):
        assert np.all(tile(img, geo, i, 0, 2, 2, 4) == diverging(norms[f] * 0.5 / 10))
        assert label_text_matches(img, geo, i, f"f{f}")


def test_many_channels_show_each_filters_strongest_first_and_label_them():
    c = 6
    w = np.zeros((2, c, 2, 2))
    w[0] = np.arange(1, c + 1)[:, None, None] * 0.1         # filter 0: channel 5 strongest
    w[1] = np.array([3, 9, 1, 4, 2, 8])[:, None, None] * -0.1  # filter 1: 1, 5, 3 strongest
    img = kernel_grid(w, scaling="per_filter", top_channels=3, scale=4, cols=2)
    geo = layout(2, 3, 2, 2, 4, labels=2)
    assert img.shape == (geo["height"], geo["width"], 3)
    for i, channels in ((0, [5, 4, 3]), (1, [1, 5, 3])):
        limit = np.abs(w[i]).max()  # over all 6 channels, shown or not
        for j, ch in enumerate(channels):
            assert np.all(tile(img, geo, i, j, 2, 2, 4) == diverging(w[i, ch, 0, 0] / limit))
            assert label_text_matches(img, geo, i, f"c{ch}", tile_index=j, tile_width=8)
        assert label_text_matches(img, geo, i, f"f{i}")


def pillow_text(text, width):
    """Pillow's default font drawn at (1, 0) on a LABEL-high band, independently of convtrain."""
    canvas = Image.new("L", (width, LABEL), 0)
    ImageDraw.Draw(canvas).text((1, 0), text, fill=255, font=ImageFont.load_default())
    return np.asarray(canvas)


def label_text_matches(img, geo, i, text, tile_index=None, tile_width=None):
    """Whether the band of cell i (the filter band above, or the channel band under tile
    ``tile_index`` of ``tile_width`` px) shows ``text``: text pixels light, background black."""
    r, c = divmod(i, geo["cols"])
    y = geo["gap"] + r * (geo["cell_h"] + geo["gap"])
    x = geo["gap"] + c * (geo["cell_w"] + geo["gap"])
    width = geo["cell_w"]
    if tile_index is not None:
        y += geo["cell_h"] - LABEL
        x += tile_index * (tile_width + SEP)
        width = tile_width
    band = img[y:y + LABEL, x:x + width].astype(int)
    expected = pillow_text(text, width)
    ink = expected > 200
    return bool(ink.any() and np.all(band[ink].min(axis=1) > 150)
                and np.all(band[expected == 0] == 0))


def test_labels_are_filter_indices_in_pillows_default_font():
    img = kernel_grid(np.ones((12, 1, 5, 5)), scale=5, cols=6)
    geo = layout(12, 1, 5, 5, 5)
    for i in range(12):
        assert label_text_matches(img, geo, i, f"f{i}")
    assert not label_text_matches(img, geo, 3, "f8")


def test_bad_arguments_are_bugs_named():
    with pytest.raises(InternalError, match=r"expected \(F, C, kh, kw\)"):
        kernel_grid(np.zeros((3, 3)))
    with pytest.raises(InternalError, match="scaling"):
        kernel_grid(np.zeros((1, 1, 3, 3)), scaling="log")
    with pytest.raises(InternalError, match="colormap"):
        kernel_grid(np.zeros((1, 1, 3, 3)), colormap="jet")
