//! Cutting a whole radiograph into tiles on a grid, for the `tile` step. The grid is kept
//! with the tiles so that scores can be laid back over the film (heat maps).

use super::{Error, Limits, Planes, Result, TILE_PIXEL_FACTOR, TileGrid};

/// Cuts `size` x `size` tiles on a `stride` grid, the last column and row moved back to end
/// at the image edge.
pub(super) fn tile(
    img: &Planes,
    size: u32,
    stride: u32,
    limits: &Limits,
) -> Result<(Vec<Planes>, TileGrid)> {
    if size == 0 || stride == 0 || stride > size {
        return Err(Error::Preprocess(format!(
            "`tile` needs size > 0 and stride in 1..=size, got size {size} and stride {stride}"
        )));
    }
    let s = size as usize;
    if img.w < s || img.h < s {
        return Err(Error::Preprocess(format!(
            "cannot cut {s}x{s} tiles from a {}x{} image; add `pad` before `tile`",
            img.w, img.h
        )));
    }
    let xs = tile_starts(img.w, s, stride as usize);
    let ys = tile_starts(img.h, s, stride as usize);
    let count = (xs.len() * ys.len()) as u64;
    let total = count.saturating_mul((s * s) as u64);
    let allowed = limits.max_pixels.saturating_mul(TILE_PIXEL_FACTOR);
    if total > allowed {
        return Err(Error::TooLarge(format!(
            "{count} tiles of {s}x{s} from a {}x{} image hold {total} pixels; the limit is {allowed} ({TILE_PIXEL_FACTOR} x max pixels); use a larger stride",
            img.w, img.h
        )));
    }
    let mut tiles = Vec::with_capacity(xs.len() * ys.len());
    let mut positions = Vec::with_capacity(tiles.capacity());
    for &y in &ys {
        for &x in &xs {
            tiles.push(img.region(x, y, s, s));
            positions.push((x as u32, y as u32));
        }
    }
    let grid = TileGrid {
        image_width: img.w as u32,
        image_height: img.h as u32,
        tile_size: size,
        positions,
        columns: xs.len() as u32,
        rows: ys.len() as u32,
    };
    Ok((tiles, grid))
}

/// Tile starts along one side of `len >= size` pixels: every `stride`, then one more ending
/// at the edge unless the last already does.
pub(super) fn tile_starts(len: usize, size: usize, stride: usize) -> Vec<usize> {
    let last = len - size;
    let mut starts: Vec<usize> = (0..=last).step_by(stride).collect();
    if starts.last() != Some(&last) {
        starts.push(last);
    }
    starts
}
