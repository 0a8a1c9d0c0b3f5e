//! Decodes DICOM Part 10 files, DICONDE (ASTM E2339) radiographs included, into planes.
//!
//! DICONDE files are ordinary DICOM files with NDE information object definitions, so one
//! reader serves both; the SOP class is not checked. Supported: native (uncompressed) pixel
//! data in explicit or implicit VR little endian, 1 sample (MONOCHROME1, MONOCHROME2) or 3
//! (RGB, either planar configuration), 8 or 16 bits allocated, any bits stored, signed or
//! unsigned, with RescaleSlope/RescaleIntercept applied; of a multi-frame image only the
//! first frame is read. Compressed, encapsulated or big-endian files are refused with the
//! transfer syntax named. Like every decoder here it keeps the native value range (no
//! windowing, no VOI LUT): declared steps map values.

use std::borrow::Cow;

use dicom_core::Tag;
use dicom_core::value::{DicomValueType, PrimitiveValue, Value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, FileMetaTable, OpenFileOptions};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::decode::check_pixels;
use super::{Limits, Planes};
use crate::{Error, Result};

/// A Part 10 file starts with a 128-byte preamble, then the magic `DICM`.
const PREAMBLE: usize = 128;

/// Explicit VR Big Endian, a retired transfer syntax (spelled out: the dictionary marks its
/// constant deprecated).
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Whether `bytes` is a DICOM Part 10 file (the `DICM` magic after the preamble).
pub(super) fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(PREAMBLE..PREAMBLE + 4) == Some(b"DICM".as_slice())
}

/// Columns, rows and samples per pixel from a DICOM file's header alone.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32, u32)> {
    let format = header(bytes)?;
    Ok((format.columns, format.rows, format.samples))
}

/// The transfer syntax checked and the pixel format read, from the header alone: nothing of
/// the image's size is read or allocated.
fn header(bytes: &[u8]) -> Result<PixelFormat> {
    Ok(header_with_syntax(bytes)?.0)
}

/// [`header`], and whether the data set is explicit VR.
fn header_with_syntax(bytes: &[u8]) -> Result<(PixelFormat, bool)> {
    // The meta group's own parser allocates declared lengths too.
    check_lengths(bytes, true, Scope::Meta)?;
    let meta = FileMetaTable::from_reader(&bytes[PREAMBLE..]).map_err(|e| {
        Error::Decode(format!(
            "invalid DICOM file meta information: {}",
            chain(&e)
        ))
    })?;
    let ts = meta.transfer_syntax();
    check_transfer_syntax(ts)?;
    let explicit = ts == uids::EXPLICIT_VR_LITTLE_ENDIAN;
    check_lengths(bytes, explicit, Scope::Header)?;
    Ok((
        PixelFormat::read(&open(bytes, Until::BeforePixelData)?)?,
        explicit,
    ))
}

/// Refuses a file with an element whose declared length runs past the end of the file.
/// The DICOM parser allocates (and zero-fills) an element's declared length before it reads
/// it: a 402-byte file declaring a 2 GB element took 1.7 GB and 11 s before failing (found by
/// the `image_decode` fuzz target). A walk over the element headers of the meta group
/// (explicit VR) and the data set (`explicit` or implicit VR, little endian), stepping into
/// sequences and items, checks every length against the bytes that remain, over `scope`. A
/// value representation that DICOM does not define is refused too (the parser reads one as a
/// long unknown element).
fn check_lengths(bytes: &[u8], explicit: bool, scope: Scope) -> Result<()> {
    // VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length.
    const LONG_VRS: [&[u8; 2]; 13] = [
        b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
    ];
    // The others, with a 2-byte length.
    const SHORT_VRS: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let cut =
        |at: usize| Error::Decode(format!("a DICOM element header at byte {at} is cut short"));
    let start = PREAMBLE + 4;
    // The meta group ends where its group length (0002,0000), the first element, says; its
    // parser reads every element up to there, whatever its group.
    let meta_end = match (u16_at(start), u16_at(start + 2), u32_at(start + 8)) {
        (Some(2), Some(0), Some(len)) => start.saturating_add(12).saturating_add(len as usize),
        _ => start,
    };
    let mut at = start;
    while at < bytes.len() {
        let group = u16_at(at).ok_or_else(|| cut(at))?;
        let element = u16_at(at + 2).ok_or_else(|| cut(at))?;
        if at < meta_end && group != 0x0002 {
            return Err(Error::Decode(format!(
                "DICOM element ({group:04X},{element:04X}) lies inside the file meta group"
            )));
        }
        if at >= meta_end && matches!(scope, Scope::Meta) {
            return Ok(());
        }
        let (len, header, container) = if group == 0xFFFE {
            // Item and delimiters: no VR, a 4-byte length; an item's content is elements.
            (u32_at(at + 4).ok_or_else(|| cut(at))?, 8, element == 0xE000)
        } else if group == 0x0002 || explicit {
            let vr = bytes.get(at + 4..at + 6).ok_or_else(|| cut(at))?;
            if LONG_VRS.iter().any(|v| v[..] == *vr) {
                (u32_at(at + 8).ok_or_else(|| cut(at))?, 12, vr == b"SQ")
            } else if SHORT_VRS.iter().any(|v| v[..] == *vr) {
                (u32::from(u16_at(at + 6).ok_or_else(|| cut(at))?), 8, false)
            } else {
                return Err(Error::Decode(format!(
                    "DICOM element ({group:04X},{element:04X}) has no valid value \
                     representation ({:?})",
                    String::from_utf8_lossy(vr)
                )));
            }
        } else {
            // Implicit VR: a sequence cannot be told from its header; its items are walked
            // as they come only when its length is undefined.
            (u32_at(at + 4).ok_or_else(|| cut(at))?, 8, false)
        };
        if (group, element) == (0x7FE0, 0x0010) && matches!(scope, Scope::Header) {
            return Ok(());
        }
        at += header;
        if len == u32::MAX || container {
            // Undefined length, or a sequence or item: its content follows as elements.
            continue;
        }
        let len = len as usize;
        if len > bytes.len() - at.min(bytes.len()) {
            return Err(Error::Decode(format!(
                "DICOM element ({group:04X},{element:04X}) declares {len} bytes, but only {} \
                 remain in the file",
                bytes.len().saturating_sub(at)
            )));
        }
        at += len;
    }
    Ok(())
}

/// Decodes the first frame of a DICOM file (the caller has checked the encoded size), with
/// its BitsStored.
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<(Planes, u8)> {
    // The header alone first: the size limit is checked against Rows x Columns before the
    // pixel data is read or anything of the image's size is allocated; then the pixel data's
    // declared length against the file, since the parser allocates it before reading.
    let (format, explicit) = header_with_syntax(bytes)?;
    check_pixels(u64::from(format.columns), u64::from(format.rows), limits)?;
    check_lengths(bytes, explicit, Scope::All)?;
    let object = open(bytes, Until::PixelData)?;
    let data = pixel_data(&object)?;
    Ok((format.decode(&data)?, format.bits_stored as u8))
}

/// Native little-endian transfer syntaxes pass; everything else is refused by UID and name.
fn check_transfer_syntax(uid: &str) -> Result<()> {
    if uid == uids::EXPLICIT_VR_LITTLE_ENDIAN || uid == uids::IMPLICIT_VR_LITTLE_ENDIAN {
        return Ok(());
    }
    let named = match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{uid}, {}", ts.name()),
        None => uid.to_owned(),
    };
    if uid == EXPLICIT_VR_BIG_ENDIAN {
        return Err(Error::Decode(format!(
            "big-endian DICOM (transfer syntax {named}) is not supported; export explicit or implicit VR little endian"
        )));
    }
    Err(Error::Decode(format!(
        "compressed DICOM (transfer syntax {named}) is not supported; export uncompressed (explicit or implicit VR little endian)"
    )))
}

/// How much of a file [`check_lengths`] walks.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// The file meta information group only.
    Meta,
    /// Up to (not into) the pixel data.
    Header,
    /// The whole file.
    All,
}

/// How far to parse the data set.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// Stop before the pixel data element.
    BeforePixelData,
    /// Stop right after it (trailing padding and signatures are not needed).
    PixelData,
}

fn open(bytes: &[u8], until: Until) -> Result<DefaultDicomObject> {
    let options = OpenFileOptions::new().read_preamble(ReadPreamble::Always);
    let options = match until {
        Until::BeforePixelData => options.read_until(tags::PIXEL_DATA),
        Until::PixelData => options.read_to(tags::PIXEL_DATA),
    };
    options
        .from_reader(bytes)
        .map_err(|e| Error::Decode(format!("cannot read the DICOM data set: {}", chain(&e))))
}

/// An error and its causes on one line (the DICOM crates' errors put the detail in
/// `source()`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Photometric {
    /// Minimum value is white: inverted so that, as everywhere else, higher is brighter.
    Monochrome1,
    Monochrome2,
    Rgb,
}

/// The image pixel module: everything needed to read the pixel data.
#[derive(Debug, Clone)]
struct PixelFormat {
    rows: u32,
    columns: u32,
    samples: u32,
    bits_allocated: u32,
    bits_stored: u32,
    signed: bool,
    photometric: Photometric,
    /// RGB only: `true` when the samples are stored as three planes (R..., G..., B...).
    planar: bool,
    frames: u32,
    /// `(slope, intercept)` when the file declares a rescale.
    rescale: Option<(f64, f64)>,
}

impl PixelFormat {
    fn read(obj: &DefaultDicomObject) -> Result<PixelFormat> {
        let rows = uint(obj, tags::ROWS, "Rows")?.ok_or_else(|| missing("Rows"))?;
        let columns = uint(obj, tags::COLUMNS, "Columns")?.ok_or_else(|| missing("Columns"))?;
        if rows == 0 || columns == 0 {
            return Err(Error::Decode(format!(
                "the DICOM image is {columns}x{rows} pixels"
            )));
        }
        let samples = uint(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1);
        if samples != 1 && samples != 3 {
            return Err(Error::Decode(format!(
                "DICOM SamplesPerPixel {samples} is not supported (1 or 3 are)"
            )));
        }
        let bits_allocated = uint(obj, tags::BITS_ALLOCATED, "BitsAllocated")?
            .ok_or_else(|| missing("BitsAllocated"))?;
        if bits_allocated != 8 && bits_allocated != 16 {
            return Err(Error::Decode(format!(
                "DICOM BitsAllocated {bits_allocated} is not supported (8 or 16 are)"
            )));
        }
        let bits_stored = uint(obj, tags::BITS_STORED, "BitsStored")?.unwrap_or(bits_allocated);
        if bits_stored == 0 || bits_stored > bits_allocated {
            return Err(Error::Decode(format!(
                "DICOM BitsStored {bits_stored} does not fit BitsAllocated {bits_allocated}"
            )));
        }
        if let Some(high_bit) = uint(obj, tags::HIGH_BIT, "HighBit")?
            && high_bit + 1 != bits_stored
        {
            return Err(Error::Decode(format!(
                "DICOM HighBit {high_bit} with BitsStored {bits_stored} is not supported (HighBit must be BitsStored - 1)"
            )));
        }
        let signed = match uint(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation")? {
            None | Some(0) => false,
            Some(1) => true,
            Some(other) => {
                return Err(Error::Decode(format!(
                    "DICOM PixelRepresentation {other} is invalid (0 or 1)"
                )));
            }
        };
        let photometric = match text(obj, tags::PHOTOMETRIC_INTERPRETATION)?.as_deref() {
            Some("MONOCHROME1") => Photometric::Monochrome1,
            Some("MONOCHROME2") => Photometric::Monochrome2,
            Some("RGB") => Photometric::Rgb,
            // A missing value (it is required) is read as the plain case for the samples.
            None if samples == 1 => Photometric::Monochrome2,
            None => Photometric::Rgb,
            Some(other) => {
                return Err(Error::Decode(format!(
                    "DICOM PhotometricInterpretation {other} is not supported (MONOCHROME1, MONOCHROME2 and RGB are)"
                )));
            }
        };
        let expected_samples = if photometric == Photometric::Rgb {
            3
        } else {
            1
        };
        if samples != expected_samples {
            return Err(Error::Decode(format!(
                "DICOM PhotometricInterpretation {photometric:?} with SamplesPerPixel {samples}"
            )));
        }
        let planar = samples == 3
            && uint(obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration")?.unwrap_or(0) == 1;
        let frames = uint(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?.unwrap_or(1);
        if frames == 0 {
            return Err(Error::Decode("DICOM NumberOfFrames is 0".into()));
        }
        let slope = float(obj, tags::RESCALE_SLOPE, "RescaleSlope")?;
        let intercept = float(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept")?;
        let rescale = match (slope, intercept) {
            (None, None) => None,
            (s, i) => Some((s.unwrap_or(1.0), i.unwrap_or(0.0))),
        };
        Ok(PixelFormat {
            rows,
            columns,
            samples,
            bits_allocated,
            bits_stored,
            signed,
            photometric,
            planar,
            frames,
            rescale,
        })
    }

    /// Decodes the first frame from the little-endian pixel data bytes.
    fn decode(&self, data: &[u8]) -> Result<Planes> {
        let (h, w, c) = (
            self.rows as usize,
            self.columns as usize,
            self.samples as usize,
        );
        let bytes_per_sample = (self.bits_allocated / 8) as usize;
        let frame_bytes = h * w * c * bytes_per_sample;
        let expected = frame_bytes as u64 * u64::from(self.frames);
        let actual = data.len() as u64;
        // Values of odd length are padded with one byte to an even length.
        if actual != expected && actual != expected + (expected % 2) {
            return Err(Error::Decode(format!(
                "DICOM pixel data holds {actual} bytes but {} frame(s) of {}x{} x {} sample(s) x {} byte(s) need {expected}",
                self.frames, self.columns, self.rows, self.samples, bytes_per_sample
            )));
        }
        let frame = &data[..frame_bytes];
        let bits = self.bits_stored;
        let mask = (1u32 << bits) - 1;
        // Inverting MONOCHROME1 as `min + max - v` over the stored range (`max - v` when
        // unsigned) before the rescale equals inverting over the rescaled range after it.
        let (min, max) = if self.signed {
            (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
        } else {
            (0, i64::from(mask))
        };
        let invert = self.photometric == Photometric::Monochrome1;
        let value = |raw: u32| -> f32 {
            let raw = raw & mask;
            let mut v = if self.signed && raw >> (bits - 1) == 1 {
                i64::from(raw) - (1i64 << bits)
            } else {
                i64::from(raw)
            };
            if invert {
                v = min + max - v;
            }
            match self.rescale {
                None => v as f32,
                Some((slope, intercept)) => (v as f64 * slope + intercept) as f32,
            }
        };
        let interleaved: Vec<f32> = match bytes_per_sample {
            1 => frame.iter().map(|&b| value(u32::from(b))).collect(),
            _ => frame
                .chunks_exact(2)
                .map(|p| value(u32::from(u16::from_le_bytes([p[0], p[1]]))))
                .collect(),
        };
        Ok(if self.planar {
            Planes {
                c,
                h,
                w,
                data: interleaved,
            }
        } else {
            Planes::from_interleaved(c, h, w, interleaved)
        })
    }
}

fn missing(name: &str) -> Error {
    Error::Decode(format!("the DICOM file has no {name}"))
}

/// The element, unless it is absent or empty.
fn present(obj: &DefaultDicomObject, tag: Tag) -> Result<Option<&InMemElement>> {
    let element = obj
        .element_opt(tag)
        .map_err(|e| Error::Decode(format!("cannot read DICOM element {tag}: {}", chain(&e))))?;
    Ok(element.filter(|e| !matches!(e.value(), Value::Primitive(PrimitiveValue::Empty))))
}

fn uint(obj: &DefaultDicomObject, tag: Tag, name: &str) -> Result<Option<u32>> {
    present(obj, tag)?
        .map(|v| {
            v.to_int::<u32>().map_err(|e| {
                Error::Decode(format!(
                    "DICOM {name} {tag} is not a non-negative integer: {e}"
                ))
            })
        })
        .transpose()
}

fn float(obj: &DefaultDicomObject, tag: Tag, name: &str) -> Result<Option<f64>> {
    let Some(v) = present(obj, tag)? else {
        return Ok(None);
    };
    let f = v
        .to_float64()
        .map_err(|e| Error::Decode(format!("DICOM {name} {tag} is not a number: {e}")))?;
    if !f.is_finite() {
        return Err(Error::Decode(format!("DICOM {name} {tag} is {f}")));
    }
    Ok(Some(f))
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> Result<Option<String>> {
    let Some(v) = present(obj, tag)? else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|e| Error::Decode(format!("DICOM element {tag} is not text: {e}")))?;
    Ok(Some(s.trim_matches([' ', '\0']).to_owned()))
}

/// The pixel data as little-endian bytes, however the parser typed it (OB as bytes, OW as
/// 16-bit words; implicit VR files leave the choice to the parser).
fn pixel_data(obj: &DefaultDicomObject) -> Result<Cow<'_, [u8]>> {
    let element = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| Error::Decode(format!("cannot read the DICOM pixel data: {}", chain(&e))))?
        .ok_or_else(|| Error::Decode("the DICOM file has no pixel data (7FE0,0010)".into()))?;
    match element.value() {
        Value::Primitive(PrimitiveValue::U8(b)) => Ok(Cow::Borrowed(&b[..])),
        Value::Primitive(PrimitiveValue::U16(w)) => {
            Ok(Cow::Owned(w.iter().flat_map(|v| v.to_le_bytes()).collect()))
        }
        Value::Primitive(PrimitiveValue::I16(w)) => {
            Ok(Cow::Owned(w.iter().flat_map(|v| v.to_le_bytes()).collect()))
        }
        Value::Primitive(PrimitiveValue::Empty) => Ok(Cow::Borrowed(&[])),
        Value::PixelSequence(_) => Err(Error::Decode(
            "the DICOM pixel data is encapsulated; export uncompressed".into(),
        )),
        other => Err(Error::Decode(format!(
            "the DICOM pixel data has an unexpected type ({:?})",
            other.value_type()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use dicom_core::header::Header;
    use dicom_core::{DataElement, VR};
    use dicom_object::InMemDicomObject;
    use dicom_object::meta::FileMetaTableBuilder;

    use super::*;

    /// The image pixel module of a `cols` x `rows` image.
    fn image(
        rows: u16,
        cols: u16,
        samples: u16,
        bits: u16,
        photometric: &str,
    ) -> Vec<InMemElement> {
        vec![
            DataElement::new(
                tags::SOP_CLASS_UID,
                VR::UI,
                uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
            ),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1"),
            DataElement::new(
                tags::SAMPLES_PER_PIXEL,
                VR::US,
                PrimitiveValue::from(samples),
            ),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric),
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
        ]
    }

    fn words(values: &[u16]) -> InMemElement {
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(values.iter().copied().collect()),
        )
    }

    fn bytes(values: &[u8]) -> InMemElement {
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(values))
    }

    fn put(mut elements: Vec<InMemElement>, element: InMemElement) -> Vec<InMemElement> {
        elements.retain(|e| e.tag() != element.tag());
        elements.push(element);
        elements
    }

    /// A Part 10 file (preamble, `DICM`, meta group, data set) in `ts`.
    fn file(ts: &str, elements: Vec<InMemElement>) -> Vec<u8> {
        let object = InMemDicomObject::from_element_iter(elements)
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
            .unwrap();
        let mut out = Vec::new();
        object.write_all(&mut out).unwrap();
        out
    }

    fn read(bytes: &[u8]) -> Result<Planes> {
        assert!(is_dicom(bytes));
        decode(bytes, &Limits::default()).map(|(planes, _)| planes)
    }

    #[test]
    fn a_16_bit_monochrome2_image_keeps_its_exact_values() {
        let gradient: Vec<u16> = (0..12).map(|i| i * 5_000 + 7).collect();
        let mut elements = image(3, 4, 1, 16, "MONOCHROME2");
        elements.push(words(&gradient));
        let p = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap();
        assert_eq!((p.c, p.h, p.w), (1, 3, 4));
        let expected: Vec<f32> = gradient.iter().map(|&v| f32::from(v)).collect();
        assert_eq!(p.data, expected);
    }

    #[test]
    fn implicit_vr_8_bit_images_read_as_bytes() {
        let values: Vec<u8> = (0..6).map(|i| i * 40).collect();
        let mut elements = image(2, 3, 1, 8, "MONOCHROME2");
        elements.push(bytes(&values));
        let p = read(&file(uids::IMPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap();
        assert_eq!((p.c, p.h, p.w), (1, 2, 3));
        assert_eq!(p.data, vec![0.0, 40.0, 80.0, 120.0, 160.0, 200.0]);
    }

    #[test]
    fn monochrome1_is_inverted_over_the_stored_range_and_unused_high_bits_are_ignored() {
        let mut elements = image(1, 4, 1, 16, "MONOCHROME1");
        elements = put(
            elements,
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
        );
        elements = put(
            elements,
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
        );
        // The last value has garbage above bit 11 (an overlay, in old files).
        elements.push(words(&[0, 100, 4_095, 0xF000 | 5]));
        let p = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap();
        assert_eq!(p.data, vec![4_095.0, 3_995.0, 0.0, 4_090.0]);
    }

    #[test]
    fn signed_values_and_the_rescale_are_applied() {
        let mut elements = image(1, 3, 1, 16, "MONOCHROME2");
        elements = put(
            elements,
            DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(1u16),
            ),
        );
        elements.push(DataElement::new(tags::RESCALE_SLOPE, VR::DS, "2"));
        elements.push(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"));
        elements.push(words(&[(-1_000i16) as u16, 0, 1_000]));
        let p = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap();
        assert_eq!(p.data, vec![-3_024.0, -1_024.0, 976.0]);

        // An unsigned image with a fractional slope.
        let mut elements = image(1, 2, 1, 16, "MONOCHROME2");
        elements.push(DataElement::new(tags::RESCALE_SLOPE, VR::DS, "0.5"));
        elements.push(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "10"));
        elements.push(words(&[60_000, 3]));
        let p = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap();
        assert_eq!(p.data, vec![30_010.0, 11.5]);
    }

    #[test]
    fn rgb_reads_both_planar_configurations() {
        let mut elements = image(1, 2, 3, 8, "RGB");
        elements.push(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
        elements.push(bytes(&[1, 2, 3, 4, 5, 6]));
        let p = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements.clone())).unwrap();
        assert_eq!((p.c, p.h, p.w), (3, 1, 2));
        assert_eq!(p.data, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        elements = put(
            elements,
            DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(1u16),
            ),
        );
        let p = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap();
        assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn only_the_first_frame_of_a_multi_frame_image_is_read() {
        let mut elements = image(1, 2, 1, 16, "MONOCHROME2");
        elements.push(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, "3"));
        elements.push(words(&[1, 2, 3, 4, 5, 6]));
        let p = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap();
        assert_eq!(p.data, vec![1.0, 2.0]);
    }

    /// A file meta group declaring `ts`, followed by bytes that are not a native data set.
    fn meta_only(ts: &str) -> Vec<u8> {
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(ts)
            .media_storage_sop_class_uid(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
            .media_storage_sop_instance_uid("2.25.1")
            .build()
            .unwrap();
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        meta.write(&mut out).unwrap();
        out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
        out
    }

    #[test]
    fn compressed_and_unknown_transfer_syntaxes_are_refused_by_uid() {
        let err = read(&meta_only(uids::JPEG_BASELINE8_BIT)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Decode(_)), "{err}");
        assert!(
            msg.contains("compressed DICOM (transfer syntax 1.2.840.10008.1.2.4.50")
                && msg.contains("export uncompressed"),
            "{msg}"
        );
        let err = read(&meta_only("1.2.999.1")).unwrap_err();
        assert!(
            err.to_string()
                .contains("compressed DICOM (transfer syntax 1.2.999.1)"),
            "{err}"
        );
        let err = read(&meta_only(EXPLICIT_VR_BIG_ENDIAN)).unwrap_err();
        assert!(err.to_string().contains("big-endian"), "{err}");
    }

    #[test]
    fn the_pixel_limit_is_checked_from_the_header_before_the_pixel_data() {
        let mut elements = image(60_000, 60_000, 1, 16, "MONOCHROME2");
        elements.push(words(&[0, 0]));
        let mut bytes = file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements);
        let err = read(&bytes).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
        // Still refused for its size, not for its (cut) pixel data, which is never read.
        bytes.truncate(bytes.len() - 2);
        let err = read(&bytes).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
    }

    #[test]
    fn short_or_truncated_pixel_data_is_a_decode_error() {
        let mut elements = image(4, 4, 1, 16, "MONOCHROME2");
        elements.push(words(&[7; 10]));
        let err = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("holds 20 bytes") && msg.contains("need 32"),
            "{msg}"
        );

        let mut elements = image(4, 4, 1, 16, "MONOCHROME2");
        elements.push(words(&[7; 16]));
        let mut bytes = file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements);
        bytes.truncate(bytes.len() - 10);
        let err = read(&bytes).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err}");
    }

    #[test]
    fn unsupported_pixel_formats_are_named() {
        let mut elements = image(1, 2, 3, 8, "YBR_FULL");
        elements.push(bytes(&[0; 6]));
        let err = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap_err();
        assert!(err.to_string().contains("YBR_FULL"), "{err}");

        let mut elements = image(1, 1, 1, 32, "MONOCHROME2");
        elements.push(words(&[0, 0]));
        let err = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap_err();
        assert!(err.to_string().contains("BitsAllocated 32"), "{err}");

        let elements = image(1, 1, 1, 8, "MONOCHROME2");
        let err = read(&file(uids::EXPLICIT_VR_LITTLE_ENDIAN, elements)).unwrap_err();
        assert!(err.to_string().contains("no pixel data"), "{err}");
    }

    #[test]
    fn only_the_magic_after_the_preamble_marks_a_dicom_file() {
        assert!(!is_dicom(b"DICM"));
        assert!(!is_dicom(&[0u8; 200]));
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        assert!(is_dicom(&bytes));
        assert!(matches!(read(&bytes), Err(Error::Decode(_))));
    }
}
