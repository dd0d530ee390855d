//! QR rendering (SVG, PNG, terminal) and decoding (PNG) of `VC1:` / `RG1:` texts.
//!
//! The text is encoded in **alphanumeric mode** only: Base45's alphabet is exactly the QR
//! alphanumeric set, so generic phone scanners read it back as plain text, and it packs 5.5 bits
//! per character instead of 8. Error correction is **Q** (25 % recoverable), falling back to
//! **M** only when the text does not fit a version-40 code at Q.
//!
//! Encoding costs a few milliseconds: render on demand and cache, never on the ingest path.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use qrcode::bits::Bits;
use qrcode::render::svg;
use qrcode::{Color, EcLevel, QrCode, Version};

/// Quiet zone around image renderings, in modules (the QR standard asks for 4).
pub const QUIET_ZONE: usize = 4;
/// Quiet zone in terminal output, in modules. 2 is what scanners need in practice and keeps a
/// typical certificate inside 80–90 columns.
pub const TERMINAL_QUIET_ZONE: usize = 2;
/// Largest PNG module size accepted by [`to_png`], in pixels.
pub const MAX_MODULE_PX: u32 = 32;
/// Largest PNG file [`decode_png`] looks at, in bytes.
pub const MAX_PNG_BYTES: usize = 16 * 1024 * 1024;
/// Largest image side [`decode_png`] accepts, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// QR rendering or decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// A character outside the QR alphanumeric set (0-9, A-Z, space, `$%*+-./:`).
    #[error("character {0:?} cannot be encoded in QR alphanumeric mode")]
    NotAlphanumeric(char),
    /// Too long even for a version-40 code at level M.
    #[error("text of {0} characters does not fit in a QR code")]
    TooLong(usize),
    /// `module_px` is 0 or above [`MAX_MODULE_PX`].
    #[error("module size {0} px is outside 1..={MAX_MODULE_PX}")]
    BadModuleSize(u32),
    /// The PNG could not be read (corrupt, unsupported, or over the size limits).
    #[error("cannot read the PNG image: {0}")]
    Png(String),
    /// The image holds no readable QR code.
    #[error("no readable QR code in the image")]
    NotFound,
    /// PNG encoding failed.
    #[error("cannot write the PNG image: {0}")]
    Encode(String),
}

const ALPHANUMERIC: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

/// Bits an alphanumeric segment of `n` characters needs in `version` (ISO 18004 §7.4.4).
fn alphanumeric_bits(n: usize, version: i16) -> usize {
    let count_bits = match version {
        1..=9 => 9,
        10..=26 => 11,
        _ => 13,
    };
    4 + count_bits + 11 * (n / 2) + 6 * (n % 2)
}

/// The QR code for `text`: alphanumeric mode, smallest version at level Q, else at level M.
pub fn encode(text: &str) -> Result<QrCode, QrError> {
    if let Some(c) = text
        .chars()
        .find(|c| !c.is_ascii() || !ALPHANUMERIC.contains(&(*c as u8)))
    {
        return Err(QrError::NotAlphanumeric(c));
    }
    let data = text.as_bytes();
    for ec in [EcLevel::Q, EcLevel::M] {
        for v in 1..=40i16 {
            let mut bits = Bits::new(Version::Normal(v));
            let Ok(capacity) = bits.max_len(ec) else {
                continue;
            };
            if alphanumeric_bits(data.len(), v) > capacity {
                continue;
            }
            if bits.push_alphanumeric_data(data).is_err() || bits.push_terminator(ec).is_err() {
                continue;
            }
            if let Ok(code) = QrCode::with_bits(bits, ec) {
                return Ok(code);
            }
        }
    }
    Err(QrError::TooLong(text.len()))
}

/// Module matrix with a light quiet zone of `qz` modules: `true` = dark. Row-major, square.
fn matrix(code: &QrCode, qz: usize) -> (usize, Vec<bool>) {
    let w = code.width();
    let side = w + 2 * qz;
    let mut out = vec![false; side * side];
    for (i, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let (y, x) = (i / w, i % w);
            out[(y + qz) * side + x + qz] = true;
        }
    }
    (side, out)
}

/// SVG document (black on white, 8-unit modules, 4-module quiet zone).
pub fn to_svg(text: &str) -> Result<String, QrError> {
    let code = encode(text)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(8, 8)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// 8-bit greyscale PNG, `module_px` pixels per module (1..=32), 4-module quiet zone.
pub fn to_png(text: &str, module_px: u32) -> Result<Vec<u8>, QrError> {
    if !(1..=MAX_MODULE_PX).contains(&module_px) {
        return Err(QrError::BadModuleSize(module_px));
    }
    let code = encode(text)?;
    let (side, modules) = matrix(&code, QUIET_ZONE);
    let px = module_px as usize;
    let width = side * px;
    // Build one pixel row per module row and repeat it: cheaper than per-pixel work.
    let mut pixels = Vec::with_capacity(width * width);
    let mut row = Vec::with_capacity(width);
    for y in 0..side {
        row.clear();
        for &dark in &modules[y * side..(y + 1) * side] {
            row.extend(std::iter::repeat_n(if dark { 0u8 } else { 255u8 }, px));
        }
        for _ in 0..px {
            pixels.extend_from_slice(&row);
        }
    }
    let side_px = u32::try_from(width).map_err(|_| QrError::Encode("image too large".into()))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side_px, side_px);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder
        .write_header()
        .map_err(|e| QrError::Encode(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| QrError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| QrError::Encode(e.to_string()))?;
    Ok(out)
}

/// Which modules the terminal draws with block characters (the terminal's foreground colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalInk {
    /// Draw the light modules and quiet zone: correct on a dark-background terminal with light
    /// text (the common case), where the undrawn cells show as the dark modules.
    LightModules,
    /// Draw the dark modules: correct on a light-background terminal with dark text.
    DarkModules,
}

/// Terminal rendering with Unicode half blocks (`▀ ▄ █` and space), two module rows per line,
/// for a dark-background terminal ([`TerminalInk::LightModules`]).
pub fn to_terminal(text: &str) -> Result<String, QrError> {
    to_terminal_with(text, TerminalInk::LightModules)
}

/// Terminal rendering choosing which modules are drawn. Each line ends with `\n`.
pub fn to_terminal_with(text: &str, ink: TerminalInk) -> Result<String, QrError> {
    let code = encode(text)?;
    let (side, modules) = matrix(&code, TERMINAL_QUIET_ZONE);
    let inked = |y: usize, x: usize| -> bool {
        // Rows past the bottom (odd side) count as quiet zone, i.e. light.
        let dark = y < side && modules[y * side + x];
        match ink {
            TerminalInk::LightModules => !dark,
            TerminalInk::DarkModules => dark,
        }
    };
    let mut out = String::with_capacity((side + 1) * side.div_ceil(2) * 3);
    for y in (0..side).step_by(2) {
        for x in 0..side {
            out.push(match (inked(y, x), inked(y + 1, x)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// Read the first QR code in a PNG image and return its text.
///
/// Refuses files over [`MAX_PNG_BYTES`] and images over [`MAX_IMAGE_SIDE`] on a side before
/// decoding pixels. Any colour type and bit depth is accepted (converted to 8-bit grey;
/// transparency is flattened onto white).
pub fn decode_png(png_bytes: &[u8]) -> Result<String, QrError> {
    if png_bytes.len() > MAX_PNG_BYTES {
        return Err(QrError::Png(format!(
            "file is {} bytes, over the {MAX_PNG_BYTES}-byte limit",
            png_bytes.len()
        )));
    }
    let (width, height, luma) = read_grey(png_bytes)?;
    // rqrr is not fuzzed by us; a panic deep in it on a hostile image must not take the caller
    // down, so it is contained here and reported as "not found".
    let found = catch_unwind(AssertUnwindSafe(|| {
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
            luma.get(y * width + x).copied().unwrap_or(255)
        });
        image
            .detect_grids()
            .into_iter()
            .find_map(|grid| grid.decode().ok().map(|(_meta, content)| content))
    }));
    match found {
        Ok(Some(text)) => Ok(text),
        _ => Err(QrError::NotFound),
    }
}

/// Decode a PNG into 8-bit luma, enforcing the size limits.
fn read_grey(png_bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), QrError> {
    let side = MAX_IMAGE_SIDE as usize;
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(png_bytes),
        // Enough for a maximal RGBA image at 16 bits per channel, no more.
        png::Limits {
            bytes: side * side * 8 + (1 << 20),
        },
    );
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| QrError::Png(e.to_string()))?;
    let (w, h) = (reader.info().width, reader.info().height);
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(QrError::Png(format!(
            "image is {w}x{h}, outside 1..={MAX_IMAGE_SIDE} pixels per side"
        )));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| QrError::Png("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| QrError::Png(e.to_string()))?;
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(QrError::Png("palette image was not expanded".into()));
        }
    };
    let (w, h) = (frame.width as usize, frame.height as usize);
    let line = frame.line_size;
    if frame.bit_depth != png::BitDepth::Eight || line < w * channels || buf.len() < line * h {
        return Err(QrError::Png(
            "unexpected pixel layout after conversion".into(),
        ));
    }
    let mut luma = Vec::with_capacity(w * h);
    for row in buf.chunks_exact(line).take(h) {
        for px in row[..w * channels].chunks_exact(channels) {
            let (grey, alpha) = match *px {
                [g] => (u32::from(g), 255),
                [g, a] => (u32::from(g), u32::from(a)),
                [r, g, b] => (rgb_luma(r, g, b), 255),
                [r, g, b, a] => (rgb_luma(r, g, b), u32::from(a)),
                _ => (255, 255),
            };
            // Composite onto white so a transparent background reads as light.
            let value = (grey * alpha + 255 * (255 - alpha)) / 255;
            luma.push(u8::try_from(value).unwrap_or(255));
        }
    }
    Ok((w, h, luma))
}

fn rgb_luma(r: u8, g: u8, b: u8) -> u32 {
    // ITU-R BT.601 weights in integer form.
    (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b)) / 1000
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TEXT: &str = "VC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH-R6IOO6+IDOEZHR:5WPQ0+GN+N0+N+/J";

    #[test]
    fn rejects_non_alphanumeric() {
        assert_eq!(to_svg("vc1:abc"), Err(QrError::NotAlphanumeric('v')));
        assert!(matches!(to_png("É", 4), Err(QrError::NotAlphanumeric('É'))));
        assert!(matches!(to_png(TEXT, 0), Err(QrError::BadModuleSize(0))));
        assert!(matches!(to_png(TEXT, 33), Err(QrError::BadModuleSize(33))));
    }

    #[test]
    fn level_q_then_m() {
        let code = encode(TEXT).unwrap();
        assert_eq!(code.error_correction_level(), EcLevel::Q);
        // 2420 alphanumeric characters is the version-40 capacity at Q; one more needs M.
        let long = "A".repeat(2421);
        assert_eq!(encode(&long).unwrap().error_correction_level(), EcLevel::M);
        assert_eq!(
            encode(&"A".repeat(2420)).unwrap().error_correction_level(),
            EcLevel::Q
        );
        assert!(matches!(
            encode(&"A".repeat(3392)),
            Err(QrError::TooLong(3392))
        ));
    }

    #[test]
    fn png_round_trip() {
        let png = to_png(TEXT, 4).unwrap();
        assert_eq!(decode_png(&png).unwrap(), TEXT);
    }

    #[test]
    fn terminal_matches_modules() {
        let code = encode(TEXT).unwrap();
        let (side, modules) = matrix(&code, TERMINAL_QUIET_ZONE);
        for ink in [TerminalInk::LightModules, TerminalInk::DarkModules] {
            let out = to_terminal_with(TEXT, ink).unwrap();
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), side.div_ceil(2));
            for (i, line) in lines.iter().enumerate() {
                assert_eq!(line.chars().count(), side);
                for (x, c) in line.chars().enumerate() {
                    let (top, bottom) = match c {
                        '█' => (true, true),
                        '▀' => (true, false),
                        '▄' => (false, true),
                        ' ' => (false, false),
                        other => panic!("unexpected {other:?}"),
                    };
                    let dark_top = modules[2 * i * side + x];
                    let dark_bottom = 2 * i + 1 < side && modules[(2 * i + 1) * side + x];
                    let want = |dark: bool| match ink {
                        TerminalInk::LightModules => !dark,
                        TerminalInk::DarkModules => dark,
                    };
                    assert_eq!((top, bottom), (want(dark_top), want(dark_bottom)));
                }
            }
        }
    }

    #[test]
    fn svg_is_a_document() {
        let svg = to_svg(TEXT).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn decode_refuses_garbage() {
        assert!(matches!(decode_png(b"not a png"), Err(QrError::Png(_))));
        assert!(matches!(decode_png(&[]), Err(QrError::Png(_))));
        // A blank image decodes but holds no code.
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 64, 64);
        enc.set_color(png::ColorType::Rgba);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[255u8; 64 * 64 * 4]).unwrap();
        w.finish().unwrap();
        assert_eq!(decode_png(&out), Err(QrError::NotFound));
    }
}
