//! Serde representation of file contents without a base64 dependency:
//! `{"text": "..."}` for valid UTF-8, `{"hex": "..."}` otherwise.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize)]
enum ReprOut<'a> {
    #[serde(rename = "text")]
    Text(&'a str),
    #[serde(rename = "hex")]
    Hex(String),
}

#[derive(Deserialize)]
enum ReprIn {
    #[serde(rename = "text")]
    Text(String),
    #[serde(rename = "hex")]
    Hex(String),
}

pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => ReprOut::Text(text),
        Err(_) => ReprOut::Hex(encode_hex(bytes)),
    }
    .serialize(serializer)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    match ReprIn::deserialize(deserializer)? {
        ReprIn::Text(text) => Ok(text.into_bytes()),
        ReprIn::Hex(hex) => decode_hex(&hex).map_err(D::Error::custom),
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("hex content has odd length {}", hex.len()));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        char::from(c).to_digit(16).map(|d| d as u8).ok_or_else(|| format!("invalid hex digit {:?}", char::from(c)))
    };
    hex.as_bytes().chunks_exact(2).map(|pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_all_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        let hex = encode_hex(&all);
        assert_eq!(&hex[..6], "000102");
        assert_eq!(decode_hex(&hex).unwrap(), all);
        assert_eq!(decode_hex(&hex.to_uppercase()).unwrap(), all);
        assert!(decode_hex("0g").is_err());
        assert!(decode_hex("é0").is_err());
    }
}
