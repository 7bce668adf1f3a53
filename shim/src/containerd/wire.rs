//! A minimal, bounds-checked protobuf wire-format reader, for the messages the protos
//! crate does not generate: the legacy runc options (`options.rs`) and containerd's
//! bootstrap protocol (`bootstrap_protocol.rs`). Never panics on any input; every
//! malformed encoding is an error that says where.

/// Nesting limit for skipped groups, so hostile input cannot recurse deeply.
const MAX_GROUP_DEPTH: usize = 64;

/// What is wrong with an encoding, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A field holds another wire type than its declared type needs.
    #[error("field {field}: expected {expected}, got {got}")]
    WrongType {
        field: u32,
        /// The type wanted, with its article (`a bool`, `bytes`).
        expected: &'static str,
        /// The wire type found.
        got: &'static str,
    },
    /// A string field that is not UTF-8.
    #[error("field {field}: string is not valid UTF-8")]
    NotUtf8 { field: u32 },
    /// The input ends inside a varint.
    #[error("truncated varint at byte {at}")]
    TruncatedVarint { at: usize },
    /// A varint's 10th byte carries bits past 64.
    #[error("varint overflows 64 bits at byte {at}")]
    VarintOverflow { at: usize },
    /// A varint longer than 10 bytes.
    #[error("varint too long at byte {at}")]
    VarintTooLong { at: usize },
    /// A length-delimited or fixed field longer than what is left.
    #[error("field at byte {at} wants {want} bytes, only {left} left")]
    Short { at: usize, want: u64, left: usize },
    /// Field number 0, or above 2^29 - 1.
    #[error("invalid field number {field} at byte {at}")]
    InvalidField { field: u64, at: usize },
    /// Groups nested beyond the reader's limit.
    #[error("groups nested too deeply")]
    GroupsTooDeep,
    /// A group without its end-group.
    #[error("unterminated group (field {field})")]
    UnterminatedGroup { field: u32 },
    /// A group closed by another field's end-group.
    #[error("group {field} closed by end-group of field {closed_by}")]
    MismatchedEndGroup { field: u32, closed_by: u32 },
    /// An end-group outside any group.
    #[error("unexpected end-group for field {field}")]
    UnexpectedEndGroup { field: u32 },
    /// Wire type 6 or 7.
    #[error("invalid wire type {wire_type} for field {field}")]
    InvalidWireType { wire_type: u8, field: u32 },
}

/// One field's payload.
pub enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
    /// A (deprecated) group, already skipped.
    Group,
}

impl<'a> Value<'a> {
    fn name(&self) -> &'static str {
        match self {
            Value::Varint(_) => "varint",
            Value::Fixed64 => "fixed64",
            Value::Bytes(_) => "length-delimited",
            Value::Fixed32 => "fixed32",
            Value::Group => "group",
        }
    }

    pub fn bool(&self, field: u32) -> Result<bool, WireError> {
        match self {
            Value::Varint(v) => Ok(*v != 0),
            other => Err(WireError::WrongType {
                field,
                expected: "a bool",
                got: other.name(),
            }),
        }
    }

    /// proto3 `uint32`: the varint truncated to 32 bits, as protobuf does.
    // Why the cast: truncation is the decoding protobuf specifies.
    #[allow(clippy::cast_possible_truncation)]
    pub fn uint32(&self, field: u32) -> Result<u32, WireError> {
        match self {
            Value::Varint(v) => Ok(*v as u32),
            other => Err(WireError::WrongType {
                field,
                expected: "a uint32",
                got: other.name(),
            }),
        }
    }

    /// proto3 `int32` and enums: the varint truncated to 32 bits, read as signed, as
    /// protobuf does (a negative value travels as a 10-byte varint).
    // Why the casts: truncation, then the bits read as signed, is the decoding protobuf
    // specifies.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    pub fn int32(&self, field: u32) -> Result<i32, WireError> {
        match self {
            Value::Varint(v) => Ok(*v as u32 as i32),
            other => Err(WireError::WrongType {
                field,
                expected: "an int32",
                got: other.name(),
            }),
        }
    }

    pub fn bytes(&self, field: u32) -> Result<&'a [u8], WireError> {
        match self {
            Value::Bytes(b) => Ok(b),
            other => Err(WireError::WrongType {
                field,
                expected: "bytes",
                got: other.name(),
            }),
        }
    }

    pub fn string(&self, field: u32) -> Result<String, WireError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| WireError::NotUtf8 { field })
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(WireError::TruncatedVarint { at: self.pos })?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(WireError::VarintOverflow { at: self.pos - 1 });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        // The 10th byte either ended the varint or failed the overflow check.
        Err(WireError::VarintTooLong { at: self.pos })
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError::Short {
                at: start,
                want: n,
                left: self.buf.len() - start,
            })?;
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let at = self.pos;
        let key = self.varint()?;
        let invalid = WireError::InvalidField {
            field: key >> 3,
            at,
        };
        let field = u32::try_from(key >> 3)
            .ok()
            .filter(|&f| f != 0 && f < 1 << 29)
            .ok_or(invalid)?;
        // The mask keeps 3 bits.
        Ok((field, (key & 7) as u8))
    }

    /// Reads the payload of a field of `wire_type`, skipping groups.
    fn payload(&mut self, field: u32, wire_type: u8, depth: usize) -> Result<Value<'a>, WireError> {
        match wire_type {
            0 => Ok(Value::Varint(self.varint()?)),
            1 => self.take(8).map(|_| Value::Fixed64),
            2 => {
                let n = self.varint()?;
                Ok(Value::Bytes(self.take(n)?))
            }
            3 => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(WireError::GroupsTooDeep);
                }
                loop {
                    if self.pos >= self.buf.len() {
                        return Err(WireError::UnterminatedGroup { field });
                    }
                    let (f, wt) = self.key()?;
                    if wt == 4 {
                        if f != field {
                            return Err(WireError::MismatchedEndGroup {
                                field,
                                closed_by: f,
                            });
                        }
                        return Ok(Value::Group);
                    }
                    self.payload(f, wt, depth + 1)?;
                }
            }
            4 => Err(WireError::UnexpectedEndGroup { field }),
            5 => self.take(4).map(|_| Value::Fixed32),
            other => Err(WireError::InvalidWireType {
                wire_type: other,
                field,
            }),
        }
    }

    /// The next field, or `None` at the end of the buffer.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let (field, wire_type) = self.key()?;
        let v = self.payload(field, wire_type, 0)?;
        Ok(Some((field, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, u64)>, WireError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some((f, v)) = r.next_field()? {
            out.push((
                f,
                if let Value::Varint(n) = v {
                    n
                } else {
                    u64::MAX
                },
            ));
        }
        Ok(out)
    }

    #[test]
    fn negative_int32_is_a_ten_byte_varint() {
        // Field 3 = -4 as Go's protobuf encodes an int32 enum (LOG_LEVEL_DEBUG).
        let buf = [
            0x18, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        let mut r = Reader::new(&buf);
        let (field, v) = r.next_field().unwrap().unwrap();
        assert_eq!((field, v.int32(field).unwrap()), (3, -4));
        assert!(r.next_field().unwrap().is_none());
        // The 32-bit form some encoders use truncates to the same value.
        let buf = [0x18, 0xfc, 0xff, 0xff, 0xff, 0x0f];
        let (field, v) = Reader::new(&buf).next_field().unwrap().unwrap();
        assert_eq!(v.int32(field).unwrap(), -4);
        assert!(v.string(field).is_err());
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(fields(&[0x08]).is_err()); // truncated varint
        assert!(fields(&[0x0a, 0x05, b'a']).is_err()); // short bytes
        assert!(fields(&[0x00, 0x01]).is_err()); // field 0
        assert!(fields(&[0x0f]).is_err()); // wire type 7
        assert_eq!(fields(&[0x08, 0x96, 0x01]).unwrap(), vec![(1, 150)]);
    }

    #[test]
    fn errors_say_what_and_where() {
        let msg = |buf: &[u8]| fields(buf).unwrap_err().to_string();
        assert_eq!(msg(&[0x08]), "truncated varint at byte 1");
        assert_eq!(
            msg(&[0x0a, 0x05, b'a']),
            "field at byte 2 wants 5 bytes, only 1 left"
        );
        assert_eq!(msg(&[0x00, 0x01]), "invalid field number 0 at byte 0");
        assert_eq!(msg(&[0x0f]), "invalid wire type 7 for field 1");
        assert_eq!(msg(&[0x0c]), "unexpected end-group for field 1");
        assert_eq!(msg(&[0x0b]), "unterminated group (field 1)");
        assert_eq!(msg(&[0x0b, 0x14]), "group 1 closed by end-group of field 2");
        let (field, v) = Reader::new(&[0x08, 0x01]).next_field().unwrap().unwrap();
        assert_eq!(
            v.bytes(field).unwrap_err().to_string(),
            "field 1: expected bytes, got varint"
        );
        let (field, v) = Reader::new(&[0x0a, 0x01, 0xff])
            .next_field()
            .unwrap()
            .unwrap();
        assert_eq!(
            v.string(field).unwrap_err().to_string(),
            "field 1: string is not valid UTF-8"
        );
    }
}
