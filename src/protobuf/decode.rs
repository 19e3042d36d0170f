//! Protobuf message -> Kubernetes JSON, driven by the schema table.

use std::borrow::Cow;

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::schema::{Card, F_INLINE, F_KEEP_ZERO, F_OMIT_ZERO_MSG, Field, Schema, Special, Ty};
use super::wire::{self, Payload, Reader};

/// Nesting limit for messages (and protobuf objects inside RawExtensions):
/// a hostile body cannot exhaust the stack.
const MAX_DEPTH: usize = 200;

/// `time.Time{}.Unix()` in Go: the zero time, which Kubernetes shows as null.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

pub const MAGIC: &[u8] = b"k8s\0";

/// `k8s\0` + runtime.Unknown -> JSON object with apiVersion and kind.
pub fn envelope(schema: &Schema, bytes: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("protobuf objects nested too deeply".into());
    }
    let rest = bytes.strip_prefix(MAGIC).ok_or("not a Kubernetes protobuf body (missing k8s\\0 magic)")?;
    let fields = wire::fields(rest)?;
    let type_meta = concat(&fields, 1)?.unwrap_or_default();
    let tm = wire::fields(&type_meta)?;
    let api_version = string_field(&tm, 1)?;
    let kind = string_field(&tm, 2)?;
    let raw = match wire::last(&fields, 2) {
        Some(Payload::Bytes(b)) => b,
        None => &[],
        Some(_) => return Err("runtime.Unknown raw: wrong wire type".into()),
    };
    let encoding = string_field(&fields, 3)?;
    if !encoding.is_empty() {
        return Err(format!("unsupported protobuf contentEncoding {encoding:?}"));
    }
    if kind.is_empty() {
        return Err("protobuf body has no kind".into());
    }
    let idx = schema.root(&api_version, &kind)?;
    let Value::Object(obj) = message(schema, idx, raw, depth + 1)? else {
        return Err(format!("kind {kind:?} does not decode to an object"));
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(kind));
    out.extend(obj);
    Ok(Value::Object(out))
}

fn string_field(fields: &[(u32, Payload<'_>)], tag: u32) -> Result<String, String> {
    match wire::last(fields, tag) {
        None => Ok(String::new()),
        Some(Payload::Bytes(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(_) => Err(format!("field {tag}: wrong wire type for a string")),
    }
}

/// All occurrences of a length-delimited field, concatenated: decoding the
/// concatenation is protobuf's merge of repeated occurrences of a message.
fn concat<'a>(fields: &[(u32, Payload<'a>)], tag: u32) -> Result<Option<Cow<'a, [u8]>>, String> {
    let mut out: Option<Cow<'a, [u8]>> = None;
    for (t, p) in fields {
        if *t != tag {
            continue;
        }
        let Payload::Bytes(b) = p else {
            return Err(format!("field {tag}: wrong wire type for a message"));
        };
        out = Some(match out {
            None => Cow::Borrowed(*b),
            Some(prev) => {
                let mut v = prev.into_owned();
                v.extend_from_slice(b);
                Cow::Owned(v)
            }
        });
    }
    Ok(out)
}

/// One message in its JSON form.
pub fn message(schema: &Schema, idx: usize, buf: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("protobuf messages nested too deeply".into());
    }
    let m = &schema.messages[idx];
    let ctx = |e: String| format!("{}: {e}", m.name);
    match m.special {
        Special::Object => object(schema, idx, buf, depth).map(Value::Object),
        Special::Quantity => {
            let f = wire::fields(buf).map_err(ctx)?;
            let s = string_field(&f, 1).map_err(ctx)?;
            Ok(Value::String(if s.is_empty() { "0".into() } else { s }))
        }
        Special::IntOrString => {
            let f = wire::fields(buf).map_err(ctx)?;
            let ty = varint_field(&f, 1).map_err(ctx)?;
            if ty == 1 {
                Ok(Value::String(string_field(&f, 3).map_err(ctx)?))
            } else {
                Ok(Value::from(varint_field(&f, 2).map_err(ctx)? as i32))
            }
        }
        Special::Time | Special::MicroTime => {
            if buf.is_empty() {
                return Ok(Value::Null);
            }
            let f = wire::fields(buf).map_err(ctx)?;
            let secs = varint_field(&f, 1).map_err(ctx)? as i64;
            let nanos = varint_field(&f, 2).map_err(ctx)? as i32;
            time(secs, nanos, m.special == Special::MicroTime).map_err(ctx)
        }
        Special::Duration => {
            let f = wire::fields(buf).map_err(ctx)?;
            Ok(Value::String(go_duration(varint_field(&f, 1).map_err(ctx)? as i64)))
        }
        Special::RawJson => {
            let f = wire::fields(buf).map_err(ctx)?;
            let raw = concat(&f, 1).map_err(ctx)?.unwrap_or_default();
            raw_json(schema, &raw, depth).map_err(ctx)
        }
        Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
            schema_or(schema, idx, buf, depth).map_err(ctx)
        }
        Special::Array => {
            let f = wire::fields(buf).map_err(ctx)?;
            let mut items = Vec::new();
            for (t, p) in &f {
                if *t == 1 {
                    items.push(scalar(Ty::String, *p).map_err(ctx)?);
                }
            }
            Ok(if items.is_empty() { Value::Null } else { Value::Array(items) })
        }
    }
}

fn varint_field(fields: &[(u32, Payload<'_>)], tag: u32) -> Result<u64, String> {
    match wire::last(fields, tag) {
        None => Ok(0),
        Some(Payload::Varint(v)) => Ok(v),
        Some(_) => Err(format!("field {tag}: wrong wire type for a varint")),
    }
}

/// runtime.RawExtension, meta.v1.FieldsV1, apiextensions JSON: embedded JSON
/// (or, in a RawExtension, an embedded protobuf object).
fn raw_json(schema: &Schema, raw: &[u8], depth: usize) -> Result<Value, String> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(MAGIC) {
        return envelope(schema, raw, depth + 1);
    }
    serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))
}

/// JSONSchemaPropsOrArray / OrBool / OrStringArray, as their Go MarshalJSON.
fn schema_or(schema: &Schema, idx: usize, buf: &[u8], depth: usize) -> Result<Value, String> {
    let m = &schema.messages[idx];
    let f = wire::fields(buf)?;
    let sub = |tag: u32, parts: Option<Cow<'_, [u8]>>| -> Result<Option<Value>, String> {
        let Some(parts) = parts else { return Ok(None) };
        let field = m.field(tag).ok_or_else(|| format!("schema lacks field {tag}"))?.1;
        message(schema, field.msg, &parts, depth + 1).map(Some)
    };
    match m.special {
        Special::SchemaOrArray => {
            // 1: schema, 2: jSONSchemas (repeated)
            let field = m.field(2).ok_or("schema lacks field 2")?.1;
            let mut items = Vec::new();
            for (t, p) in &f {
                if *t == 2 {
                    let Payload::Bytes(b) = p else { return Err("field 2: wrong wire type".into()) };
                    items.push(message(schema, field.msg, b, depth + 1)?);
                }
            }
            if !items.is_empty() {
                return Ok(Value::Array(items));
            }
            Ok(sub(1, concat(&f, 1)?)?.unwrap_or(Value::Null))
        }
        Special::SchemaOrBool => {
            // 1: allows, 2: schema
            if let Some(s) = sub(2, concat(&f, 2)?)? {
                return Ok(s);
            }
            Ok(Value::Bool(varint_field(&f, 1)? != 0))
        }
        _ => {
            // 1: schema, 2: property (repeated string)
            let mut items = Vec::new();
            for (t, p) in &f {
                if *t == 2 {
                    items.push(scalar(Ty::String, *p)?);
                }
            }
            if !items.is_empty() {
                return Ok(Value::Array(items));
            }
            Ok(sub(1, concat(&f, 1)?)?.unwrap_or(Value::Null))
        }
    }
}

/// Per-field accumulator while reading a message.
enum Acc<'a> {
    Empty,
    Scalar(Payload<'a>),
    Parts(Vec<&'a [u8]>),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

fn object(schema: &Schema, idx: usize, buf: &[u8], depth: usize) -> Result<Map<String, Value>, String> {
    let m = &schema.messages[idx];
    let mut acc: Vec<Acc<'_>> = m.fields.iter().map(|_| Acc::Empty).collect();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, p) = r.field().map_err(|e| format!("{}: {e}", m.name))?;
        let Some((i, f)) = m.field(tag) else {
            continue; // unknown field: newer server types
        };
        let err = |e: String| format!("{}.{}: {e}", m.name, f.json);
        match f.card {
            Card::Optional if f.ty == Ty::Message => {
                let Payload::Bytes(b) = p else { return Err(err("wrong wire type for a message".into())) };
                match &mut acc[i] {
                    Acc::Parts(parts) => parts.push(b),
                    slot => *slot = Acc::Parts(vec![b]),
                }
            }
            Card::Optional => {
                check_wire(f.ty, p).map_err(err)?;
                acc[i] = Acc::Scalar(p);
            }
            Card::Repeated => {
                if !matches!(acc[i], Acc::List(_)) {
                    acc[i] = Acc::List(Vec::new());
                }
                let Acc::List(list) = &mut acc[i] else { unreachable!() };
                match (f.ty, p) {
                    (Ty::Message, Payload::Bytes(b)) => list.push(message(schema, f.msg, b, depth + 1)?),
                    (Ty::Message, _) => return Err(err("wrong wire type for a message".into())),
                    (ty, Payload::Bytes(b)) if packable(ty) => unpack(ty, b, list).map_err(err)?,
                    (ty, p) => list.push(scalar(ty, p).map_err(err)?),
                }
            }
            Card::Map => {
                let Payload::Bytes(b) = p else { return Err(err("wrong wire type for a map entry".into())) };
                let (k, v) = map_entry(schema, f, b, depth).map_err(err)?;
                if !matches!(acc[i], Acc::Map(_)) {
                    acc[i] = Acc::Map(Map::new());
                }
                let Acc::Map(map) = &mut acc[i] else { unreachable!() };
                map.insert(k, v);
            }
        }
    }

    let mut out = Map::new();
    for (f, a) in m.fields.iter().zip(acc) {
        let err = |e: String| format!("{}.{}: {e}", m.name, f.json);
        match a {
            Acc::Empty => {}
            Acc::Scalar(p) => {
                let v = scalar(f.ty, p).map_err(err)?;
                if f.flags & F_KEEP_ZERO != 0 || !is_zero(&v) {
                    out.insert(f.json.clone(), v);
                }
            }
            Acc::Parts(parts) => {
                let bytes: Cow<'_, [u8]> =
                    if parts.len() == 1 { Cow::Borrowed(parts[0]) } else { Cow::Owned(parts.concat()) };
                let v = message(schema, f.msg, &bytes, depth + 1)?;
                if f.flags & F_INLINE != 0 {
                    if let Value::Object(o) = v {
                        out.extend(o);
                    }
                    continue;
                }
                if f.flags & F_OMIT_ZERO_MSG != 0 && (v.is_null() || v.as_object().is_some_and(Map::is_empty)) {
                    continue;
                }
                out.insert(f.json.clone(), v);
            }
            Acc::List(list) => {
                out.insert(f.json.clone(), Value::Array(list));
            }
            Acc::Map(map) => {
                out.insert(f.json.clone(), Value::Object(map));
            }
        }
    }
    Ok(out)
}

fn map_entry(schema: &Schema, f: &Field, buf: &[u8], depth: usize) -> Result<(String, Value), String> {
    let fields = wire::fields(buf)?;
    let key = string_field(&fields, 1)?;
    let value = if f.ty == Ty::Message {
        let parts = concat(&fields, 2)?.unwrap_or_default();
        message(schema, f.msg, &parts, depth + 1)?
    } else {
        match wire::last(&fields, 2) {
            Some(p) => scalar(f.ty, p)?,
            None => zero(f.ty),
        }
    };
    Ok((key, value))
}

fn packable(ty: Ty) -> bool {
    !matches!(ty, Ty::String | Ty::Bytes | Ty::Message)
}

fn unpack(ty: Ty, buf: &[u8], out: &mut Vec<Value>) -> Result<(), String> {
    let mut r = Reader::new(buf);
    match ty {
        Ty::Double | Ty::Float => {
            let size = if ty == Ty::Double { 8 } else { 4 };
            if !buf.len().is_multiple_of(size) {
                return Err("truncated packed field".into());
            }
            for chunk in buf.chunks_exact(size) {
                let p = if size == 8 {
                    Payload::Fixed64(u64::from_le_bytes(chunk.try_into().map_err(|_| "bad chunk")?))
                } else {
                    Payload::Fixed32(u32::from_le_bytes(chunk.try_into().map_err(|_| "bad chunk")?))
                };
                out.push(scalar(ty, p)?);
            }
        }
        _ => {
            while !r.is_empty() {
                out.push(scalar(ty, Payload::Varint(r.varint()?))?);
            }
        }
    }
    Ok(())
}

fn check_wire(ty: Ty, p: Payload<'_>) -> Result<(), String> {
    let want = match ty {
        Ty::String | Ty::Bytes | Ty::Message => 2,
        Ty::Int32 | Ty::Int64 | Ty::Uint32 | Ty::Uint64 | Ty::Bool => 0,
        Ty::Double => 1,
        Ty::Float => 5,
    };
    if p.wire_type() != want {
        return Err(format!("wire type {} where {want} was expected", p.wire_type()));
    }
    Ok(())
}

fn scalar(ty: Ty, p: Payload<'_>) -> Result<Value, String> {
    check_wire(ty, p)?;
    Ok(match (ty, p) {
        (Ty::String, Payload::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Ty::Bytes, Payload::Bytes(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        (Ty::Int32, Payload::Varint(v)) => Value::from(v as i32),
        (Ty::Int64, Payload::Varint(v)) => Value::from(v as i64),
        (Ty::Uint32, Payload::Varint(v)) => Value::from(v as u32),
        (Ty::Uint64, Payload::Varint(v)) => Value::from(v),
        (Ty::Bool, Payload::Varint(v)) => Value::Bool(v != 0),
        (Ty::Double, Payload::Fixed64(v)) => float(f64::from_bits(v))?,
        (Ty::Float, Payload::Fixed32(v)) => float(f64::from(f32::from_bits(v)))?,
        _ => return Err(format!("{ty:?} cannot be read from wire type {}", p.wire_type())),
    })
}

fn float(f: f64) -> Result<Value, String> {
    Number::from_f64(f).map(Value::Number).ok_or_else(|| format!("{f} has no JSON form"))
}

fn zero(ty: Ty) -> Value {
    match ty {
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Double | Ty::Float => Value::from(0.0),
        Ty::Message => Value::Object(Map::new()),
        _ => Value::from(0),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// meta.v1.Time (seconds, as Kubernetes reads it) or MicroTime (microseconds), UTC.
fn time(secs: i64, nanos: i32, micro: bool) -> Result<Value, String> {
    let (secs, nanos) = (
        secs.checked_add(i64::from(nanos).div_euclid(1_000_000_000)).ok_or("timestamp out of range")?,
        i64::from(nanos).rem_euclid(1_000_000_000) as u32,
    );
    if secs == GO_ZERO_TIME_UNIX && (nanos == 0 || !micro) {
        return Ok(Value::Null);
    }
    let t = chrono::DateTime::from_timestamp(secs, if micro { nanos } else { 0 }).ok_or("timestamp out of range")?;
    if !(0..=9999).contains(&chrono::Datelike::year(&t)) {
        return Err("timestamp year outside of [0,9999]".into());
    }
    let s =
        if micro { t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string() } else { t.format("%Y-%m-%dT%H:%M:%SZ").to_string() };
    Ok(Value::String(s))
}

/// Go's time.Duration.String(): "1h2m3s", "1.5s", "300ms", "0s".
pub fn go_duration(d: i64) -> String {
    fn frac(buf: &mut [u8], mut w: usize, mut v: u64, prec: usize) -> (usize, u64) {
        let mut print = false;
        for _ in 0..prec {
            let digit = v % 10;
            print = print || digit != 0;
            if print {
                w -= 1;
                buf[w] = digit as u8 + b'0';
            }
            v /= 10;
        }
        if print {
            w -= 1;
            buf[w] = b'.';
        }
        (w, v)
    }
    fn int(buf: &mut [u8], mut w: usize, mut v: u64) -> usize {
        if v == 0 {
            w -= 1;
            buf[w] = b'0';
        }
        while v > 0 {
            w -= 1;
            buf[w] = (v % 10) as u8 + b'0';
            v /= 10;
        }
        w
    }
    if d == 0 {
        return "0s".into();
    }
    let mut buf = [0u8; 32];
    let mut w = buf.len();
    let mut u = d.unsigned_abs();
    if u < 1_000_000_000 {
        w -= 1;
        buf[w] = b's';
        w -= 1;
        let prec = if u < 1_000 {
            buf[w] = b'n';
            0
        } else if u < 1_000_000 {
            w -= 1;
            buf[w..w + 2].copy_from_slice("µ".as_bytes());
            3
        } else {
            buf[w] = b'm';
            6
        };
        (w, u) = frac(&mut buf, w, u, prec);
        w = int(&mut buf, w, u);
    } else {
        w -= 1;
        buf[w] = b's';
        (w, u) = frac(&mut buf, w, u, 9);
        w = int(&mut buf, w, u % 60);
        u /= 60;
        if u > 0 {
            w -= 1;
            buf[w] = b'm';
            w = int(&mut buf, w, u % 60);
            u /= 60;
            if u > 0 {
                w -= 1;
                buf[w] = b'h';
                w = int(&mut buf, w, u);
            }
        }
    }
    if d < 0 {
        w -= 1;
        buf[w] = b'-';
    }
    String::from_utf8_lossy(&buf[w..]).into_owned()
}
