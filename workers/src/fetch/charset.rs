//! Turning a page's bytes into text. The encoding is taken, in this order, from a
//! byte order mark, the `charset` of the `Content-Type` header, and a
//! `<meta charset>` / `<meta http-equiv="Content-Type">` in the first 1024 bytes
//! (the HTML standard's prescan window); UTF-8 otherwise. Besides UTF-8 and UTF-16
//! (by BOM), the single-byte encodings shops in our markets still use are decoded:
//! windows-1251 (Cyrillic) and windows-1252 (which the WHATWG Encoding standard
//! also uses for `iso-8859-1` and `us-ascii`). Other labels fall back to UTF-8 with
//! replacement characters: prices are ASCII digits, so such a page still reads.
//!
//! (reqwest's own `text_with_charset` cannot be used: it reads the whole body
//! without a cap, and its decoder crate is not ours to call.)

/// An encoding this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextEncoding {
    Utf8,
    Utf16LittleEndian,
    Utf16BigEndian,
    Windows1251,
    Windows1252,
}

impl TextEncoding {
    /// The encoding a `charset` label names (WHATWG labels, case-insensitive), if it
    /// is one this module decodes.
    pub(crate) fn for_label(label: &str) -> Option<Self> {
        let label = label
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_ascii_lowercase();
        match label.as_str() {
            "utf-8" | "utf8" | "unicode-1-1-utf-8" | "unicode11utf8" | "unicode20utf8"
            | "x-unicode20utf8" => Some(Self::Utf8),
            "utf-16le" | "utf-16" | "ucs-2" | "unicode" | "csunicode" | "iso-10646-ucs-2"
            | "unicodefeff" => Some(Self::Utf16LittleEndian),
            "utf-16be" | "unicodefffe" => Some(Self::Utf16BigEndian),
            "windows-1251" | "cp1251" | "x-cp1251" => Some(Self::Windows1251),
            "windows-1252" | "cp1252" | "x-cp1252" | "iso-8859-1" | "iso8859-1" | "iso88591"
            | "iso_8859-1" | "iso_8859-1:1987" | "latin1" | "l1" | "cp819" | "ibm819"
            | "csisolatin1" | "iso-ir-100" | "us-ascii" | "ascii" | "ansi_x3.4-1968" => {
                Some(Self::Windows1252)
            }
            _ => None,
        }
    }
}

/// windows-1251 bytes 0x80..=0xBF; 0xC0..=0xFF are U+0410..=U+044F in order.
const WINDOWS_1251_HIGH: [u16; 64] = [
    0x0402, 0x0403, 0x201A, 0x0453, 0x201E, 0x2026, 0x2020, 0x2021, 0x20AC, 0x2030, 0x0409, 0x2039,
    0x040A, 0x040C, 0x040B, 0x040F, 0x0452, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x0098, 0x2122, 0x0459, 0x203A, 0x045A, 0x045C, 0x045B, 0x045F, 0x00A0, 0x040E, 0x045E, 0x0408,
    0x00A4, 0x0490, 0x00A6, 0x00A7, 0x0401, 0x00A9, 0x0404, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x0407,
    0x00B0, 0x00B1, 0x0406, 0x0456, 0x0491, 0x00B5, 0x00B6, 0x00B7, 0x0451, 0x2116, 0x0454, 0x00BB,
    0x0458, 0x0405, 0x0455, 0x0457,
];

/// windows-1252 bytes 0x80..=0x9F; 0xA0..=0xFF are the same code points (Latin-1).
const WINDOWS_1252_C1: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn decode_single_byte(bytes: &[u8], high_half: impl Fn(u8) -> u16) -> String {
    bytes
        .iter()
        .map(|&byte| {
            if byte < 0x80 {
                char::from(byte)
            } else {
                char::from_u32(u32::from(high_half(byte))).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
        })
        .collect()
}

fn decode_utf16(bytes: &[u8], little_endian: bool) -> String {
    let units = bytes.chunks(2).map(|pair| match (pair, little_endian) {
        ([low, high], true) | ([high, low], false) => u16::from_le_bytes([*low, *high]),
        // An odd last byte: a truncated unit.
        _ => 0xFFFD,
    });
    char::decode_utf16(units)
        .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

fn decode_with(encoding: TextEncoding, bytes: &[u8]) -> String {
    match encoding {
        TextEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        TextEncoding::Utf16LittleEndian => decode_utf16(bytes, true),
        TextEncoding::Utf16BigEndian => decode_utf16(bytes, false),
        TextEncoding::Windows1251 => decode_single_byte(bytes, |byte| match byte {
            0x80..=0xBF => WINDOWS_1251_HIGH[usize::from(byte - 0x80)],
            _ => 0x0410 + u16::from(byte - 0xC0),
        }),
        TextEncoding::Windows1252 => decode_single_byte(bytes, |byte| match byte {
            0x80..=0x9F => WINDOWS_1252_C1[usize::from(byte - 0x80)],
            _ => u16::from(byte),
        }),
    }
}

/// The `charset` parameter of a `Content-Type` value, if any.
pub(crate) fn charset_parameter(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// The charset a `<meta>` element in the first 1024 bytes declares: either
/// `<meta charset="…">` or `<meta http-equiv="Content-Type" content="…; charset=…">`.
/// A deliberately small prescan: it looks for `charset=` inside `<meta` tags only.
fn meta_charset(bytes: &[u8]) -> Option<TextEncoding> {
    let window = &bytes[..bytes.len().min(1024)];
    // The prescan only looks at ASCII, so a lossy view is enough.
    let head = String::from_utf8_lossy(window).to_ascii_lowercase();
    let mut rest = head.as_str();
    while let Some(start) = rest.find("<meta") {
        let tag_and_after = &rest[start + 5..];
        let tag = &tag_and_after[..tag_and_after.find('>').unwrap_or(tag_and_after.len())];
        if let Some(position) = tag.find("charset") {
            let value = tag[position + "charset".len()..]
                .trim_start()
                .strip_prefix('=')
                .map(str::trim_start)
                .unwrap_or_default()
                .trim_start_matches(['"', '\'']);
            let label: String = value
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
                .collect();
            if let Some(encoding) = TextEncoding::for_label(&label) {
                // A page that says UTF-16 in a meta element is ASCII-compatible
                // bytes, so it is not UTF-16 (the HTML standard's rule).
                return Some(match encoding {
                    TextEncoding::Utf16LittleEndian | TextEncoding::Utf16BigEndian => {
                        TextEncoding::Utf8
                    }
                    other => other,
                });
            }
        }
        rest = tag_and_after;
    }
    None
}

/// Decodes a (capped) body as the module documentation describes.
pub(crate) fn decode_body(bytes: &[u8], content_type: Option<&str>) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return decode_with(TextEncoding::Utf8, rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return decode_with(TextEncoding::Utf16LittleEndian, rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return decode_with(TextEncoding::Utf16BigEndian, rest);
    }
    let declared_in_header = content_type.and_then(charset_parameter);
    let header_encoding = declared_in_header.and_then(TextEncoding::for_label);
    if let (Some(label), None) = (declared_in_header, header_encoding) {
        tracing::debug!(
            charset = label,
            "a charset this scraper does not decode; reading UTF-8"
        );
    }
    let encoding = header_encoding
        .or_else(|| meta_charset(bytes))
        .unwrap_or(TextEncoding::Utf8);
    decode_with(encoding, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_the_default_and_a_bom_is_stripped() {
        assert_eq!(decode_body("Ціна 3 199 ₴".as_bytes(), None), "Ціна 3 199 ₴");
        assert_eq!(
            decode_body(b"\xEF\xBB\xBFok", Some("text/html; charset=windows-1251")),
            "ok"
        );
    }

    #[test]
    fn windows_1251_from_the_header_decodes_cyrillic() {
        // "Ціна: 3199 грн" in windows-1251.
        let bytes = b"\xD6\xB3\xED\xE0: 3199 \xE3\xF0\xED";
        assert_eq!(
            decode_body(bytes, Some("text/html; charset=Windows-1251")),
            "Ціна: 3199 грн"
        );
        assert_eq!(
            decode_body(
                b"\xA5\xB4\xAA\xBA\xAF\xBF\xB9",
                Some("text/html;charset=\"cp1251\"")
            ),
            "ҐґЄєЇї№"
        );
    }

    #[test]
    fn a_meta_charset_is_honoured_when_the_header_says_nothing() {
        let page = b"<html><head><meta charset=\"windows-1251\"><title>\xD6\xB3\xED\xE0</title>";
        assert!(decode_body(page, Some("text/html")).contains("<title>Ціна</title>"));
        let page =
            b"<meta http-equiv='Content-Type' content='text/html; charset=iso-8859-1'>\xA3\x80 5";
        assert!(decode_body(page, None).ends_with("£€ 5"));
    }

    #[test]
    fn the_header_wins_over_the_meta_element() {
        let page = "<meta charset=\"windows-1251\">Preis: 5 €".as_bytes();
        assert!(decode_body(page, Some("text/html; charset=utf-8")).ends_with("Preis: 5 €"));
    }

    #[test]
    fn utf16_with_a_bom_decodes() {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend("Preis 5".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(decode_body(&bytes, None), "Preis 5");
    }

    #[test]
    fn an_unknown_charset_reads_as_utf8_with_replacements() {
        assert_eq!(
            decode_body(b"123 \xFF", Some("text/html; charset=shift_jis")),
            "123 \u{FFFD}"
        );
    }
}
