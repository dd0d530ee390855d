//! QR codes of real certificates: render, read back, verify.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use vaxcamp_certify::qr::{self, QUIET_ZONE, TerminalInk};
use vaxcamp_certify::{Limits, QrError, verify_certificate, verify_registration};

#[test]
fn certificate_png_decodes_and_verifies() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    for module_px in [2, 4, 8] {
        let png = qr::to_png(&text, module_px).unwrap();
        let read = qr::decode_png(&png).unwrap();
        assert_eq!(read, text, "module_px {module_px}");
        let verified = verify_certificate(&read, &trust(), None, NOW, &Limits::default()).unwrap();
        assert_eq!(verified.content, certificate());
    }
}

#[test]
fn pass_png_decodes_and_verifies() {
    let text = reg_signer().sign_registration(&pass()).unwrap();
    let read = qr::decode_png(&qr::to_png(&text, 4).unwrap()).unwrap();
    assert_eq!(
        verify_registration(&read, &trust(), NOW, &Limits::default())
            .unwrap()
            .content,
        pass()
    );
}

#[test]
fn png_is_greyscale_with_quiet_zone() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let code = qr::encode(&text).unwrap();
    assert_eq!(code.error_correction_level(), qrcode::EcLevel::Q);
    let png = qr::to_png(&text, 3).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let side = (code.width() + 2 * QUIET_ZONE) as u32 * 3;
    assert_eq!((info.width, info.height), (side, side));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    // The quiet zone (first 4 modules of rows and columns) is white; the finder pattern's
    // corner just inside it is black.
    let px = |x: u32, y: u32| buf[(y * side + x) as usize];
    for i in 0..(QUIET_ZONE as u32 * 3) {
        assert_eq!(px(i, i), 255);
        assert_eq!(px(i, side - 1 - i), 255);
    }
    let corner = QUIET_ZONE as u32 * 3;
    assert_eq!(px(corner, corner), 0);
}

#[test]
fn svg_and_terminal() {
    let text = cert_signer().sign_certificate(&certificate()).unwrap();
    let svg = qr::to_svg(&text).unwrap();
    assert!(svg.contains("<svg") && svg.contains("#000000"));
    let width = qr::encode(&text).unwrap().width();
    for (out, ink) in [
        (qr::to_terminal(&text).unwrap(), TerminalInk::LightModules),
        (
            qr::to_terminal_with(&text, TerminalInk::DarkModules).unwrap(),
            TerminalInk::DarkModules,
        ),
    ] {
        let lines: Vec<&str> = out.lines().collect();
        let side = width + 2 * qr::TERMINAL_QUIET_ZONE;
        assert_eq!(lines.len(), side.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == side));
        assert!(
            out.chars()
                .all(|c| matches!(c, '▀' | '▄' | '█' | ' ' | '\n'))
        );
        // The quiet zone row is inked only when light modules are drawn.
        let first = lines[0];
        match ink {
            TerminalInk::LightModules => assert!(first.chars().all(|c| c == '█')),
            TerminalInk::DarkModules => assert!(first.chars().all(|c| c == ' ')),
        }
    }
}

#[test]
fn lowercase_is_refused_not_mangled() {
    assert!(matches!(
        qr::to_svg("vc1:abc"),
        Err(QrError::NotAlphanumeric('v'))
    ));
    assert!(matches!(
        qr::to_terminal("VC1:\n"),
        Err(QrError::NotAlphanumeric('\n'))
    ));
}
