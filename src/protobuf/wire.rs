//! Protobuf wire format: varints and tagged fields.

/// One field occurrence as it is on the wire.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl Payload<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            Payload::Varint(_) => 0,
            Payload::Fixed64(_) => 1,
            Payload::Bytes(_) => 2,
            Payload::Fixed32(_) => 5,
        }
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

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint overflows 64 bits".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated field")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field: (tag, payload).
    pub fn field(&mut self) -> Result<(u32, Payload<'a>), String> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if tag == 0 {
            return Err("field number 0".into());
        }
        let payload = match key & 7 {
            0 => Payload::Varint(self.varint()?),
            1 => Payload::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "truncated fixed64")?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                Payload::Bytes(self.take(len)?)
            }
            5 => Payload::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "truncated fixed32")?)),
            w => return Err(format!("unsupported wire type {w} (field {tag})")),
        };
        Ok((tag, payload))
    }
}

/// Every field of a message, in wire order.
pub fn fields(buf: &[u8]) -> Result<Vec<(u32, Payload<'_>)>, String> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.field()?);
    }
    Ok(out)
}

/// The last occurrence of a field (proto's last-one-wins for scalars).
pub fn last<'a>(fields: &[(u32, Payload<'a>)], tag: u32) -> Option<Payload<'a>> {
    fields.iter().rev().find(|(t, _)| *t == tag).map(|(_, p)| *p)
}
