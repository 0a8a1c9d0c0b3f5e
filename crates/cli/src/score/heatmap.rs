//! Defect heat maps for whole radiographs: the film in grey with each tile's score laid over
//! it in red (where tiles overlap, the highest score wins), so an inspector sees where the
//! model looked, not only its verdict.

use std::path::Path;

use anyhow::Context as _;
use image::{Rgb, RgbImage};
use vigil_engine::preprocess::TileGrid;

use super::inputs::Input;

/// Writes `<dir>/<file stem>.heatmap.png` for one film.
pub fn write(dir: &Path, input: &Input, grid: &TileGrid, scores: &[f32]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (w, h) = (grid.image_width.max(1), grid.image_height.max(1));
    // The film itself as the background when the image crate can read it (DICOM cannot be
    // shown here; those get a neutral background).
    let base = image::open(&input.path).ok().map(|img| {
        image::imageops::resize(&img.to_luma8(), w, h, image::imageops::FilterType::Triangle)
    });
    let mut heat = vec![0f32; (w * h) as usize];
    for (&(x0, y0), &s) in grid.positions.iter().zip(scores) {
        for y in y0..(y0 + grid.tile_size).min(h) {
            for x in x0..(x0 + grid.tile_size).min(w) {
                let cell = &mut heat[(y * w + x) as usize];
                *cell = cell.max(s);
            }
        }
    }
    let out = RgbImage::from_fn(w, h, |x, y| {
        let g = base
            .as_ref()
            .map_or(96.0, |b| f32::from(b.get_pixel(x, y).0[0]));
        let a = heat[(y * w + x) as usize].clamp(0.0, 1.0) * 0.7;
        let mix = |c: f32| ((1.0 - a) * g + a * c).round().clamp(0.0, 255.0) as u8;
        Rgb([mix(255.0), mix(0.0), mix(0.0)])
    });
    let stem = input
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "film".into());
    let path = dir.join(format!("{stem}.heatmap.png"));
    out.save(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
