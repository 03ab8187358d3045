//! Register ⇄ value conversion for every tag type and byte/word order. Pure functions: reads decode
//! with them, writes and the simulator encode with them, so the two directions cannot drift.
//!
//! Order is two independent switches applied to the big-endian byte string of the value:
//! `swaps_words` reverses the order of the registers, `swaps_bytes` swaps the two bytes inside each
//! register. ABCD = neither, CDAB = words, BADC = bytes, DCBA = both. A tag of one register, a bit
//! of one and a string carry their byte order as ABCD (`AB`) or BADC (`BA`): a device's word order
//! never reaches them (see `firmware_config::Tag::order`).

use firmware_config::{DataType, Scaling, Tag, WordOrder};

use crate::sample::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("tag needs {needed} registers but the answer had {got}")]
    ShortAnswer { needed: usize, got: usize },
    #[error("value {value} does not fit {data_type} (after scaling: {raw})")]
    OutOfRange {
        value: String,
        data_type: &'static str,
        raw: f64,
    },
    #[error("a {tag_type} tag cannot be written with {value}")]
    WrongKind {
        tag_type: &'static str,
        value: String,
    },
    #[error(
        "one bit of a register cannot be written on its own (FC 5/6/15/16 write whole registers)"
    )]
    RegisterBit,
    #[error("a block of {count} values (count) is read-only")]
    Block { count: u16 },
}

/// Decodes a register tag from the registers it occupies (`words.len() >= tag.width()`).
pub fn decode_registers(tag: &Tag, words: &[u16]) -> Result<Value, CodecError> {
    let width = usize::from(tag.width());
    let words = words.get(..width).ok_or(CodecError::ShortAnswer {
        needed: width,
        got: words.len(),
    })?;
    if tag.is_block() {
        let items = words
            .chunks_exact(usize::from(tag.element_width()))
            .map(|element| decode_one(tag, element))
            .collect();
        return Ok(Value::Array(items));
    }
    Ok(decode_one(tag, words))
}

/// Decodes one value from exactly its registers.
fn decode_one(tag: &Tag, words: &[u16]) -> Value {
    let value = match tag.data_type {
        DataType::Bool => {
            // Bit n of the register's value, read in the tag's byte order like a u16.
            let word = u16::from_be_bytes(register_bytes(words[0], tag.order));
            let bit = tag.bit.unwrap_or(0);
            return Value::Bool(word >> bit & 1 == 1);
        }
        DataType::String => return Value::Text(decode_text(words, tag.order, tag.length)),
        DataType::U16 => Raw::Unsigned(u64::from(u16::from_be_bytes(be_bytes::<2>(
            words, tag.order,
        )))),
        DataType::I16 => Raw::Signed(i64::from(i16::from_be_bytes(be_bytes::<2>(
            words, tag.order,
        )))),
        DataType::U32 => Raw::Unsigned(u64::from(u32::from_be_bytes(be_bytes::<4>(
            words, tag.order,
        )))),
        DataType::I32 => Raw::Signed(i64::from(i32::from_be_bytes(be_bytes::<4>(
            words, tag.order,
        )))),
        DataType::U64 => Raw::Unsigned(u64::from_be_bytes(be_bytes::<8>(words, tag.order))),
        DataType::I64 => Raw::Signed(i64::from_be_bytes(be_bytes::<8>(words, tag.order))),
        DataType::F32 => Raw::Float(f64::from(f32::from_be_bytes(be_bytes::<4>(
            words, tag.order,
        )))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(be_bytes::<8>(words, tag.order))),
    };
    value.scaled(tag.scaling)
}

/// Decodes a coil or discrete input.
pub fn decode_bit(bits: &[bool]) -> Result<Value, CodecError> {
    bits.first()
        .map(|b| Value::Bool(*b))
        .ok_or(CodecError::ShortAnswer { needed: 1, got: 0 })
}

/// Encodes an engineering value into the registers of a register tag (the inverse of
/// [`decode_registers`]). Integers are rounded to the nearest raw value after unscaling.
pub fn encode_registers(tag: &Tag, value: &Value) -> Result<Vec<u16>, CodecError> {
    let wrong_kind = || CodecError::WrongKind {
        tag_type: tag.data_type.name(),
        value: value.to_string(),
    };
    if tag.is_block() {
        return Err(CodecError::Block { count: tag.count });
    }
    match (tag.data_type, value) {
        (DataType::Bool, _) => return Err(CodecError::RegisterBit),
        (DataType::String, Value::Text(text)) => {
            return Ok(encode_text(text, tag.order, tag.length))
        }
        (DataType::String, _) | (_, Value::Text(_)) => return Err(wrong_kind()),
        _ => {}
    }
    let engineering = value.as_f64().ok_or_else(wrong_kind)?;
    let raw = match tag.scaling {
        Some(Scaling { scale, offset }) => (engineering - offset) / scale,
        None => engineering,
    };
    // Unscaled 64-bit integers are taken exactly, not through f64.
    let exact_int = |v: &Value| match (v, tag.scaling) {
        (Value::I64(i), None) => Some(i128::from(*i)),
        (Value::U64(u), None) => Some(i128::from(*u)),
        _ => None,
    };
    let out_of_range = || CodecError::OutOfRange {
        value: value.to_string(),
        data_type: tag.data_type.name(),
        raw,
    };
    let int = |min: i128, max: i128| -> Result<i128, CodecError> {
        let v = match exact_int(value) {
            Some(v) => v,
            None if raw.is_finite() => raw.round() as i128,
            None => return Err(out_of_range()),
        };
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(out_of_range())
        }
    };
    let bytes = match tag.data_type {
        DataType::U16 => (int(0, u16::MAX.into())? as u16).to_be_bytes().to_vec(),
        DataType::I16 => (int(i16::MIN.into(), i16::MAX.into())? as i16)
            .to_be_bytes()
            .to_vec(),
        DataType::U32 => (int(0, u32::MAX.into())? as u32).to_be_bytes().to_vec(),
        DataType::I32 => (int(i32::MIN.into(), i32::MAX.into())? as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => (int(0, u64::MAX.into())? as u64).to_be_bytes().to_vec(),
        DataType::I64 => (int(i64::MIN.into(), i64::MAX.into())? as i64)
            .to_be_bytes()
            .to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
        DataType::Bool | DataType::String => return Err(wrong_kind()),
    };
    Ok(words_from_be(&bytes, tag.order))
}

enum Raw {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl Raw {
    fn scaled(self, scaling: Option<Scaling>) -> Value {
        match (self, scaling) {
            (Raw::Unsigned(v), None) => Value::U64(v),
            (Raw::Signed(v), None) => Value::I64(v),
            (Raw::Float(v), None) => Value::F64(v),
            (raw, Some(Scaling { scale, offset })) => {
                let v = match raw {
                    Raw::Unsigned(v) => v as f64,
                    Raw::Signed(v) => v as f64,
                    Raw::Float(v) => v,
                };
                Value::F64(v * scale + offset)
            }
        }
    }
}

/// The value's big-endian bytes, undoing the tag's order.
fn be_bytes<const N: usize>(words: &[u16], order: WordOrder) -> [u8; N] {
    let mut bytes = [0u8; N];
    let count = N / 2;
    for (i, chunk) in bytes.chunks_exact_mut(2).enumerate() {
        let word = if order.swaps_words() {
            words[count - 1 - i]
        } else {
            words[i]
        };
        chunk.copy_from_slice(&register_bytes(word, order));
    }
    bytes
}

/// Registers carrying big-endian `bytes` in the given order.
fn words_from_be(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| {
            if order.swaps_bytes() {
                u16::from_le_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], pair[1]])
            }
        })
        .collect();
    if order.swaps_words() {
        words.reverse();
    }
    words
}

fn register_bytes(word: u16, order: WordOrder) -> [u8; 2] {
    if order.swaps_bytes() {
        word.to_le_bytes()
    } else {
        word.to_be_bytes()
    }
}

/// Text in register order (strings never swap words); NUL and trailing blanks end it.
fn decode_text(words: &[u16], order: WordOrder, length: u16) -> String {
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| register_bytes(*w, order))
        .take(usize::from(length))
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

fn encode_text(text: &str, order: WordOrder, length: u16) -> Vec<u16> {
    let mut bytes: Vec<u8> = text.bytes().take(usize::from(length)).collect();
    bytes.resize(usize::from(length.div_ceil(2)) * 2, 0);
    bytes
        .chunks_exact(2)
        .map(|pair| {
            if order.swaps_bytes() {
                u16::from_le_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], pair[1]])
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::Table;
    use std::time::Duration;
    use WordOrder::*;

    fn tag(data_type: DataType, order: WordOrder) -> Tag {
        Tag {
            name: "t".into(),
            table: Table::HoldingRegister,
            address: 0,
            written_address: 0,
            data_type,
            order,
            bit: None,
            length: 0,
            scaling: None,
            unit: None,
            poll_interval: Duration::from_secs(1),
            count: 1,
        }
    }

    fn decode(data_type: DataType, order: WordOrder, words: &[u16]) -> Value {
        decode_registers(&tag(data_type, order), words).expect("decodes")
    }

    /// Each case: type, order, registers as they arrive on the wire (hand-computed), value.
    #[test]
    fn a_block_decodes_to_an_array_of_scaled_values_in_the_tag_order() {
        let mut t = tag(DataType::I16, ABCD);
        t.count = 3;
        t.scaling = Some(Scaling {
            scale: 0.001,
            offset: 0.0,
        });
        let values = decode_registers(&t, &[1000, (-250i16) as u16, 0, 77]).expect("decodes");
        assert_eq!(
            values,
            Value::Array(vec![Value::F64(1.0), Value::F64(-0.25), Value::F64(0.0)].into())
        );
        let mut t = tag(DataType::F32, CDAB);
        t.count = 2;
        let words: Vec<u16> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| {
                let bits = v.to_bits();
                [bits as u16, (bits >> 16) as u16]
            })
            .collect();
        assert_eq!(
            decode_registers(&t, &words).expect("decodes"),
            Value::Array(vec![Value::F64(1.5), Value::F64(-2.0)].into())
        );
        assert_eq!(
            decode_registers(&t, &words[..3]),
            Err(CodecError::ShortAnswer { needed: 4, got: 3 })
        );
        assert_eq!(
            encode_registers(&t, &Value::F64(1.0)),
            Err(CodecError::Block { count: 2 })
        );
    }

    #[test]
    fn every_type_in_every_order_against_hand_computed_registers() {
        // 16-bit: 0x1234 = 4660; byte-swapped orders see 0x3412.
        for (order, words) in [
            (ABCD, [0x1234]),
            (CDAB, [0x1234]),
            (BADC, [0x3412]),
            (DCBA, [0x3412]),
        ] {
            assert_eq!(
                decode(DataType::U16, order, &words),
                Value::U64(4660),
                "{order:?}"
            );
        }
        // -2 as i16 = 0xFFFE
        assert_eq!(decode(DataType::I16, ABCD, &[0xFFFE]), Value::I64(-2));
        assert_eq!(decode(DataType::I16, BADC, &[0xFEFF]), Value::I64(-2));

        // 32-bit: 0x12345678 = 305419896 → bytes A=12 B=34 C=56 D=78
        let cases32 = [
            (ABCD, [0x1234, 0x5678]),
            (CDAB, [0x5678, 0x1234]),
            (BADC, [0x3412, 0x7856]),
            (DCBA, [0x7856, 0x3412]),
        ];
        for (order, words) in cases32 {
            assert_eq!(
                decode(DataType::U32, order, &words),
                Value::U64(305_419_896),
                "{order:?}"
            );
        }
        // -123456 as i32 = 0xFFFE1DC0
        let cases_i32 = [
            (ABCD, [0xFFFE, 0x1DC0]),
            (CDAB, [0x1DC0, 0xFFFE]),
            (BADC, [0xFEFF, 0xC01D]),
            (DCBA, [0xC01D, 0xFEFF]),
        ];
        for (order, words) in cases_i32 {
            assert_eq!(
                decode(DataType::I32, order, &words),
                Value::I64(-123_456),
                "{order:?}"
            );
        }
        // 12.5f32 = 0x41480000
        let cases_f32 = [
            (ABCD, [0x4148, 0x0000]),
            (CDAB, [0x0000, 0x4148]),
            (BADC, [0x4841, 0x0000]),
            (DCBA, [0x0000, 0x4841]),
        ];
        for (order, words) in cases_f32 {
            assert_eq!(
                decode(DataType::F32, order, &words),
                Value::F64(12.5),
                "{order:?}"
            );
        }
        // 64-bit: 0x0102030405060708
        let cases64 = [
            (ABCD, [0x0102, 0x0304, 0x0506, 0x0708]),
            (CDAB, [0x0708, 0x0506, 0x0304, 0x0102]),
            (BADC, [0x0201, 0x0403, 0x0605, 0x0807]),
            (DCBA, [0x0807, 0x0605, 0x0403, 0x0201]),
        ];
        for (order, words) in cases64 {
            assert_eq!(
                decode(DataType::U64, order, &words),
                Value::U64(0x0102_0304_0506_0708),
                "{order:?}"
            );
        }
        // -2 as i64 = 0xFFFF FFFF FFFF FFFE
        assert_eq!(
            decode(DataType::I64, CDAB, &[0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF]),
            Value::I64(-2)
        );
        assert_eq!(
            decode(DataType::I64, DCBA, &[0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            Value::I64(-2)
        );
        // -1.5f64 = 0xBFF8000000000000
        let cases_f64 = [
            (ABCD, [0xBFF8, 0, 0, 0]),
            (CDAB, [0, 0, 0, 0xBFF8]),
            (BADC, [0xF8BF, 0, 0, 0]),
            (DCBA, [0, 0, 0, 0xF8BF]),
        ];
        for (order, words) in cases_f64 {
            assert_eq!(
                decode(DataType::F64, order, &words),
                Value::F64(-1.5),
                "{order:?}"
            );
        }
    }

    #[test]
    fn register_bits_strings_and_scaling() {
        let mut bit = tag(DataType::Bool, ABCD);
        bit.bit = Some(3);
        assert_eq!(
            decode_registers(&bit, &[0b1000]).expect("bit"),
            Value::Bool(true)
        );
        assert_eq!(
            decode_registers(&bit, &[0b0111]).expect("bit"),
            Value::Bool(false)
        );
        bit.bit = Some(15);
        assert_eq!(
            decode_registers(&bit, &[0x8000]).expect("bit"),
            Value::Bool(true)
        );
        // With swapped bytes a bit is counted in the value as the u16 beside it reads it: the
        // register 0x0080 is 0x8000, so bit 15 is set and bit 7 is not.
        bit.order = BADC;
        assert_eq!(
            decode_registers(&bit, &[0x0080]).expect("bit"),
            Value::Bool(true)
        );
        bit.bit = Some(7);
        assert_eq!(
            decode_registers(&bit, &[0x0080]).expect("bit"),
            Value::Bool(false)
        );
        assert_eq!(
            decode(DataType::U16, BADC, &[0x0080]),
            Value::U64(0x8000),
            "the u16 on the same register agrees"
        );

        let mut text = tag(DataType::String, ABCD);
        text.length = 5;
        // "PUMP1" = 50 55 4D 50 31 (padded with NUL)
        assert_eq!(
            decode_registers(&text, &[0x5055, 0x4D50, 0x3100]).expect("text"),
            Value::Text("PUMP1".into())
        );
        text.order = BADC;
        assert_eq!(
            decode_registers(&text, &[0x5550, 0x504D, 0x0031]).expect("text"),
            Value::Text("PUMP1".into())
        );

        let mut scaled = tag(DataType::I16, ABCD);
        scaled.scaling = Some(Scaling {
            scale: 0.1,
            offset: -40.0,
        });
        // raw 655 → 65.5 - 40 = 25.5
        let Value::F64(v) = decode_registers(&scaled, &[655]).expect("scaled") else {
            panic!("scaled values are f64")
        };
        assert!((v - 25.5).abs() < 1e-9);
    }

    #[test]
    fn short_answer_is_an_error_not_a_panic() {
        assert_eq!(
            decode_registers(&tag(DataType::F64, ABCD), &[1, 2]),
            Err(CodecError::ShortAnswer { needed: 4, got: 2 })
        );
        assert!(decode_bit(&[]).is_err());
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        let values = [
            (DataType::U16, Value::U64(65_535)),
            (DataType::I16, Value::I64(-32_768)),
            (DataType::U32, Value::U64(4_000_000_000)),
            (DataType::I32, Value::I64(-123_456)),
            (DataType::U64, Value::U64(u64::MAX)),
            (DataType::I64, Value::I64(i64::MIN)),
            (DataType::F32, Value::F64(12.5)),
            (DataType::F64, Value::F64(-1.0e300)),
        ];
        for order in [ABCD, CDAB, BADC, DCBA] {
            for (data_type, value) in &values {
                let t = tag(*data_type, order);
                let words = encode_registers(&t, value).expect("encodes");
                assert_eq!(words.len(), usize::from(t.width()));
                assert_eq!(
                    &decode_registers(&t, &words).expect("decodes"),
                    value,
                    "{data_type:?} {order:?}"
                );
            }
        }
        // hand-computed: 12.5 in CDAB
        assert_eq!(
            encode_registers(&tag(DataType::F32, CDAB), &Value::F64(12.5)),
            Ok(vec![0x0000, 0x4148])
        );
        let mut text = tag(DataType::String, BADC);
        text.length = 4;
        assert_eq!(
            encode_registers(&text, &Value::Text("AB".into())),
            Ok(vec![0x4241, 0x0000])
        );
    }

    #[test]
    fn encode_rejects_what_does_not_fit() {
        assert!(matches!(
            encode_registers(&tag(DataType::U16, ABCD), &Value::I64(70_000)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_registers(&tag(DataType::I16, ABCD), &Value::F64(f64::NAN)),
            Err(CodecError::OutOfRange { .. })
        ));
        let mut scaled = tag(DataType::U16, ABCD);
        scaled.scaling = Some(Scaling {
            scale: 0.1,
            offset: 0.0,
        });
        assert_eq!(encode_registers(&scaled, &Value::F64(25.5)), Ok(vec![255]));
        assert!(matches!(
            encode_registers(&tag(DataType::U16, ABCD), &Value::Text("x".into())),
            Err(CodecError::WrongKind { .. })
        ));
        assert_eq!(
            encode_registers(&tag(DataType::Bool, ABCD), &Value::Bool(true)),
            Err(CodecError::RegisterBit)
        );
    }
}
