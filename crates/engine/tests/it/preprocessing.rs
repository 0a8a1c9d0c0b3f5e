//! Declared preprocessing through the public API: DICOM radiographs, windowing, and tiling of
//! synthetic images, a real weld tile and a whole weld film.

use dicom_core::header::Header;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use image::{GenericImageView, ImageBuffer, Luma};
use vigil_core::bundle::preprocess::validate;
use vigil_core::bundle::{Layout, ResizeFilter, Step};
use vigil_engine::preprocess::{Limits, Pipeline, Tensor, TileGrid};
use vigil_engine::{Batch, Error};

const NCHW: Step = Step::Layout {
    order: Layout::Nchw,
};

fn pipeline(steps: Vec<Step>) -> Pipeline {
    Pipeline::from_steps(steps, Limits::default())
}

/// A grey DICOM Part 10 file in explicit VR little endian; `extra` elements replace the
/// defaults of the same tag.
fn dicom(
    rows: u16,
    cols: u16,
    bits: u16,
    pixels: PrimitiveValue,
    extra: Vec<InMemElement>,
) -> Vec<u8> {
    let mut elements: Vec<InMemElement> = vec![
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
        ),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.42"),
        DataElement::new(tags::MODALITY, VR::CS, "DX"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        DataElement::new(
            tags::PIXEL_DATA,
            if bits == 8 { VR::OB } else { VR::OW },
            pixels,
        ),
    ];
    for e in extra {
        elements.retain(|d| d.tag() != e.tag());
        elements.push(e);
    }
    let object = InMemDicomObject::from_element_iter(elements)
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap();
    let mut out = Vec::new();
    object.write_all(&mut out).unwrap();
    out
}

fn words(values: impl IntoIterator<Item = u16>) -> PrimitiveValue {
    PrimitiveValue::U16(values.into_iter().collect())
}

/// 64 x 32, 16-bit: `x * 1000 + y * 7`, up to 63,217 (above the signed 16-bit range).
fn gradient(x: u32, y: u32) -> u16 {
    (x * 1_000 + y * 7) as u16
}

fn gradient_dicom() -> Vec<u8> {
    let values = (0..32).flat_map(|y| (0..64).map(move |x| gradient(x, y)));
    dicom(32, 64, 16, words(values), vec![])
}

#[test]
fn a_16_bit_dicom_radiograph_decodes_to_its_exact_values() {
    let t = pipeline(vec![Step::Decode, Step::Grey, NCHW])
        .run(&gradient_dicom())
        .unwrap();
    assert_eq!(t.shape, [1, 1, 32, 64]);
    for y in 0..32 {
        for x in 0..64 {
            assert_eq!(
                t.data[(y * 64 + x) as usize],
                f32::from(gradient(x, y)),
                "({x}, {y})"
            );
        }
    }
}

#[test]
fn a_windowed_16_bit_dicom_lies_in_0_1() {
    let window = pipeline(vec![
        Step::Decode,
        Step::Grey,
        Step::Window {
            center: 30_000.0,
            width: 20_000.0,
        },
        NCHW,
    ])
    .run(&gradient_dicom())
    .unwrap();
    assert!(window.data.iter().all(|v| (0.0..=1.0).contains(v)));
    // (0, 0) = 0 lies below the window, (63, 0) = 63,000 above it, (30, 0) = 30,000 at its
    // centre and (25, 0) = 25,000 a quarter of the way in.
    assert_eq!(window.data[0], 0.0);
    assert_eq!(window.data[63], 1.0);
    assert_eq!(window.data[30], 0.5);
    assert_eq!(window.data[25], 0.25);

    let stretched = pipeline(vec![
        Step::Decode,
        Step::Grey,
        Step::PercentileWindow {
            low: 0.0,
            high: 100.0,
        },
        NCHW,
    ])
    .run(&gradient_dicom())
    .unwrap();
    let (lo, hi) = (0.0, f32::from(gradient(63, 31)));
    for (v, x) in stretched
        .data
        .iter()
        .zip((0..32).flat_map(|y| (0..64).map(move |x| f32::from(gradient(x, y)))))
    {
        assert!((v - (x - lo) / (hi - lo)).abs() < 1e-6, "{v} for {x}");
    }
}

#[test]
fn monochrome1_dicom_is_inverted_and_rescaled_through_the_pipeline() {
    let bytes = dicom(
        1,
        3,
        8,
        PrimitiveValue::from(vec![0u8, 55, 255]),
        vec![
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1"),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, "2"),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-10"),
        ],
    );
    let t = pipeline(vec![Step::Decode, Step::Grey, NCHW])
        .run(&bytes)
        .unwrap();
    assert_eq!(t.data, vec![500.0, 390.0, -10.0]);
}

#[test]
fn a_compressed_dicom_is_refused_naming_its_transfer_syntax() {
    // A JPEG 2000 file: the refusal comes from the file meta group alone.
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::JPEG2000_LOSSLESS)
        .media_storage_sop_class_uid(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
        .media_storage_sop_instance_uid("2.25.42")
        .build()
        .unwrap();
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    meta.write(&mut bytes).unwrap();
    bytes.extend_from_slice(&[0; 64]);
    let err = pipeline(vec![Step::Decode, Step::Grey, NCHW])
        .run(&bytes)
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("compressed DICOM (transfer syntax 1.2.840.10008.1.2.4.90")
            && msg.contains("export uncompressed"),
        "{msg}"
    );
}

#[test]
fn a_dicom_over_the_pixel_limit_is_refused_before_its_pixels_are_read() {
    // The header claims 4000 x 4000; the pixel data (two words) would be a decode error if
    // it were read.
    let bytes = dicom(4_000, 4_000, 16, words([0, 0]), vec![]);
    let limited = Pipeline::from_steps(
        vec![Step::Decode, Step::Grey, NCHW],
        Limits {
            max_encoded_bytes: 1 << 20,
            max_pixels: 1_000_000,
        },
    );
    let err = limited.run(&bytes).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge(m) if m.contains("16000000 pixels")),
        "{err}"
    );
    let err = limited.run(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    let small = Limits {
        max_encoded_bytes: 100,
        max_pixels: 1 << 30,
    };
    let err = Pipeline::from_steps(vec![Step::Decode, Step::Grey, NCHW], small)
        .run(&bytes)
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
}

#[test]
fn truncated_dicom_pixel_data_is_a_decode_error() {
    let steps = || vec![Step::Decode, Step::Grey, NCHW];
    let short = dicom(8, 8, 16, words(0..60), vec![]);
    let err = pipeline(steps()).run(&short).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.contains("holds 120 bytes") && m.contains("need 128")),
        "{err}"
    );
    let full = gradient_dicom();
    let err = pipeline(steps())
        .run(&full[..full.len() - 100])
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
}

fn png16(w: u32, h: u32, f: impl Fn(u32, u32) -> u16) -> Vec<u8> {
    let img = ImageBuffer::from_fn(w, h, |x, y| Luma([f(x, y)]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Every pixel of a 300 x 130 image is distinct, so a tile shows exactly where it came from.
fn distinct(x: u32, y: u32) -> u16 {
    (y * 300 + x) as u16
}

fn tile(size: u32, stride: u32) -> Step {
    Step::Tile { size, stride }
}

#[test]
fn a_300x130_image_tiles_with_the_last_column_and_row_moved_back() {
    let img = png16(300, 130, distinct);
    let p = pipeline(vec![Step::Decode, Step::Grey, tile(128, 64), NCHW]);
    assert!(p.tiles());
    let out = p.run_tiles(&img).unwrap();
    let xs = [0, 64, 128, 172];
    let ys = [0, 2];
    assert_eq!(
        out.grid,
        TileGrid {
            image_width: 300,
            image_height: 130,
            tile_size: 128,
            positions: ys
                .iter()
                .flat_map(|&y| xs.iter().map(move |&x| (x, y)))
                .collect(),
            columns: 4,
            rows: 2,
        }
    );
    assert_eq!(out.tiles.len(), 8);
    for (t, &(x0, y0)) in out.tiles.iter().zip(&out.grid.positions) {
        assert_eq!(t.shape, [1, 1, 128, 128]);
        for y in 0..128 {
            for x in 0..128 {
                assert_eq!(
                    t.data[(y * 128 + x) as usize],
                    f32::from(distinct(x0 + x, y0 + y)),
                    "tile at ({x0}, {y0}), pixel ({x}, {y})"
                );
            }
        }
    }
    // A tiling pipeline is not run as one image.
    let err = p.run(&img).unwrap_err();
    assert!(err.to_string().contains("use run_tiles"), "{err}");
    // An image smaller than the tiles is refused with a way out.
    let err = pipeline(vec![Step::Decode, Step::Grey, tile(256, 64), NCHW])
        .run_tiles(&img)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Preprocess(m) if m.contains("add `pad`")),
        "{err}"
    );
    // ... which `pad` provides: 256 x 256, the image centred in it.
    let padded = pipeline(vec![
        Step::Decode,
        Step::Grey,
        Step::Pad {
            width: 256,
            height: 256,
            value: -1.0,
        },
        tile(256, 64),
        NCHW,
    ])
    .run_tiles(&img)
    .unwrap();
    assert_eq!(padded.grid.positions, vec![(0, 0), (44, 0)]);
    assert_eq!(
        (padded.grid.image_width, padded.grid.image_height),
        (300, 256)
    );
    assert_eq!(padded.tiles[0].data[62 * 256 + 5], -1.0);
    assert_eq!(
        padded.tiles[0].data[63 * 256 + 5],
        f32::from(distinct(5, 0))
    );
}

fn mean_and_variance(t: &Tensor) -> (f64, f64) {
    let n = t.data.len() as f64;
    let mean = t.data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = t
        .data
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var)
}

#[test]
fn the_steps_after_tile_apply_to_each_tile() {
    let img = png16(300, 130, distinct);
    let out = pipeline(vec![
        Step::Decode,
        Step::Grey,
        tile(128, 64),
        Step::Standardize { eps: 1e-6 },
        NCHW,
    ])
    .run_tiles(&img)
    .unwrap();
    for (t, pos) in out.tiles.iter().zip(&out.grid.positions) {
        let (mean, var) = mean_and_variance(t);
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{pos:?}: mean {mean} var {var}"
        );
    }

    let out = pipeline(vec![
        Step::Decode,
        Step::Grey,
        tile(128, 64),
        Step::PercentileWindow {
            low: 0.0,
            high: 100.0,
        },
        NCHW,
    ])
    .run_tiles(&img)
    .unwrap();
    for (t, pos) in out.tiles.iter().zip(&out.grid.positions) {
        let lo = t.data.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = t.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(
            (lo, hi),
            (0.0, 1.0),
            "{pos:?}: each tile is stretched on its own"
        );
    }

    let out = pipeline(vec![
        Step::Decode,
        Step::Grey,
        tile(128, 64),
        Step::Resize {
            width: 32,
            height: 32,
            filter: ResizeFilter::Bilinear,
        },
        NCHW,
    ])
    .run_tiles(&img)
    .unwrap();
    assert_eq!(
        out.grid.tile_size, 128,
        "the grid describes the cut, not the resize"
    );
    assert!(out.tiles.iter().all(|t| t.shape == [1, 1, 32, 32]));
}

#[test]
fn a_real_weld_tile_cut_64_by_64_gives_its_quadrants() {
    let path = super::testdata().join("weld/RRT-106R_x0000_y0035.png");
    let bytes = std::fs::read(&path).unwrap();
    let source = image::open(&path).unwrap().to_luma8();
    let out = pipeline(vec![Step::Decode, Step::Grey, tile(64, 64), NCHW])
        .run_tiles(&bytes)
        .unwrap();
    assert_eq!(out.grid.positions, vec![(0, 0), (64, 0), (0, 64), (64, 64)]);
    assert_eq!((out.grid.columns, out.grid.rows), (2, 2));
    for (t, &(x0, y0)) in out.tiles.iter().zip(&out.grid.positions) {
        let quadrant: Vec<f32> = source
            .view(x0, y0, 64, 64)
            .pixels()
            .map(|(_, _, p)| f32::from(p[0]))
            .collect();
        assert_eq!(t.data, quadrant, "quadrant at ({x0}, {y0})");
        // The same region cut with `crop` is the same tensor.
        let crop = pipeline(vec![
            Step::Decode,
            Step::Grey,
            Step::Crop {
                x: x0,
                y: y0,
                width: 64,
                height: 64,
            },
            NCHW,
        ])
        .run(&bytes)
        .unwrap();
        assert_eq!(&crop, t);
    }
}

/// A whole digitised film (3512 x 366) cut into the weld model's 128 x 128 input: the
/// pipeline validates against the real model's manifest and the tiles stack into a batch.
#[test]
fn a_whole_weld_film_tiles_into_model_inputs() {
    let steps = vec![
        Step::Decode,
        Step::Grey,
        tile(128, 64),
        Step::Standardize { eps: 1e-6 },
        NCHW,
    ];
    let input = super::manifest(steps.clone()).inputs[0].clone();
    validate(&steps, &input).unwrap();
    let mut wrong = steps.clone();
    wrong[2] = tile(96, 64);
    let err = validate(&wrong, &input).unwrap_err();
    assert!(err.to_string().contains("96x96 tiles"), "{err}");

    let film = std::fs::read(super::testdata().join("weld/films/bam5.png")).unwrap();
    let out = pipeline(steps).run_tiles(&film).unwrap();
    assert_eq!((out.grid.image_width, out.grid.image_height), (3512, 366));
    // x: 0, 64, ..., 3328, then 3384 (= 3512 - 128); y: 0, 64, 128, 192, then 238.
    assert_eq!((out.grid.columns, out.grid.rows), (54, 5));
    assert_eq!(out.tiles.len(), 270);
    assert_eq!(out.grid.positions[53], (3384, 0));
    assert_eq!(out.grid.positions.last(), Some(&(3384, 238)));
    let refs: Vec<&Tensor> = out.tiles.iter().take(16).collect();
    assert_eq!(Batch::stack(&refs).unwrap().shape, [16, 1, 128, 128]);

    // The bottom-right tile holds the film's bottom-right corner.
    let raw = pipeline(vec![Step::Decode, Step::Grey, tile(128, 64), NCHW])
        .run_tiles(&film)
        .unwrap();
    let source = image::load_from_memory(&film).unwrap().to_luma8();
    let corner: Vec<f32> = source
        .view(3384, 238, 128, 128)
        .pixels()
        .map(|(_, _, p)| f32::from(p[0]))
        .collect();
    assert_eq!(raw.tiles.last().unwrap().data, corner);
}

#[test]
fn an_observing_pipeline_measures_the_decoded_image_in_its_own_bit_depth() {
    // The same picture at 8 and 16 bits: the statistics agree once scaled by the depth, and
    // a later `scale` step (which maps values) does not change them.
    let steps = || {
        vec![
            Step::Decode,
            Step::Grey,
            Step::Scale {
                factor: 1.0 / 255.0,
            },
            NCHW,
        ]
    };
    let png8 = {
        let img = ImageBuffer::from_fn(64, 32, |x, _| Luma([if x < 32 { 40u8 } else { 200u8 }]));
        let mut out = Vec::new();
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let img16 = png16(64, 32, |x, _| if x < 32 { 40 * 257 } else { 200 * 257 });
    let plain = pipeline(steps()).run_tiles(&png8).unwrap();
    assert_eq!(
        plain.stats, None,
        "statistics are only computed when asked for"
    );
    let a = pipeline(steps()).observing().run_tiles(&png8).unwrap();
    let b = pipeline(steps()).observing().run_tiles(&img16).unwrap();
    assert_eq!(a.tiles, plain.tiles, "observing does not change the tensor");
    let (a, b) = (a.stats.unwrap(), b.stats.unwrap());
    assert_eq!(
        (a.bit_depth, b.bit_depth, a.width, a.height),
        (8, 16, 64, 32)
    );
    assert!((a.mean - 120.0 / 255.0).abs() < 1e-6, "{}", a.mean);
    assert!((a.mean - b.mean).abs() < 1e-6 && (a.contrast - b.contrast).abs() < 1e-6);
}

// Found by the image_decode fuzz target: a 402-byte DICOM file whose (0028,0103) element was
// mutated to VR UN with a 2 GB length made the DICOM parser allocate and zero-fill 2 GB (1.7 GB
// RSS, 11 s) before failing. Every declared length is now checked against the file first.
#[test]
fn a_dicom_element_longer_than_the_file_is_refused_before_anything_is_allocated() {
    let p = pipeline(vec![Step::Decode, Step::Grey, NCHW]);
    // The second: a file meta element whose VR the fuzzer garbled, read as a 3.5 GB value; the
    // third: an element of group 000A inside the meta group, which its parser read as well.
    for (file, says) in [
        ("dicom-2gb-element.dcm", "remain in the file"),
        ("dicom-meta-bad-vr.dcm", "no valid value representation"),
        (
            "dicom-meta-foreign-element.dcm",
            "inside the file meta group",
        ),
    ] {
        let bytes = std::fs::read(crate::testdata().join("fuzz").join(file)).unwrap();
        let err = p.peak_bytes(&bytes).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{file}: {err}");
        assert!(err.to_string().contains(says), "{file}: {err}");
        let err = p.run(&bytes).unwrap_err();
        assert!(err.to_string().contains(says), "{file}: {err}");
    }
    // The well-formed file it was mutated from still decodes.
    let good = gradient_dicom();
    p.run(&good).unwrap();
    p.peak_bytes(&good).unwrap();
}
