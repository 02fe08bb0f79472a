//! Rectangular inference: declaring a model's input height and width free, in the ONNX bytes themselves.
//!
//! A fully convolutional detector (YOLOX: slices to the end, upsampling by scale factors, reshapes to
//! `[1, 85, -1]`) computes any input whose sides are multiples of its largest stride, but its export pins the
//! input to one size (416×416), and ONNX Runtime refuses any other. A 16:9 camera letterboxed into that
//! square is 44 % padding: 182 of 416 rows the model convolves for nothing. With the dimensions declared
//! free, perch feeds 416×256 instead (the picture rounded up to the stride), a 38 % smaller input.
//!
//! The edit touches only shape declarations, which are hints: the input's two spatial dimensions become
//! symbolic (`height`, `width`), every output dimension but the batch becomes symbolic, and the intermediate
//! `value_info` hints (shapes computed for 416×416) are dropped. The weights and the graph are untouched,
//! and the file's checksum is verified before this runs. Only manifests that declare `rectangular = true`
//! get it: the model author vouches that the graph has no size baked into it.
//!
//! The protobuf is edited with a few lines of wire-format code rather than a generated ONNX schema: only
//! the messages on the path (model → graph → input/output → type → tensor type → shape → dimension) are
//! decoded and re-encoded; every other field is copied byte for byte. (A `prost` schema of those few
//! messages would silently drop every field it does not declare — weights included — and the full ONNX
//! schema would add a protobuf compiler to the build for one edit.)

/// Why a model could not be made rectangular.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    #[error("the model is not a valid ONNX protobuf ({0})")]
    Malformed(&'static str),
    #[error("the model has no graph input named {0:?}")]
    NoInput(String),
    #[error("the model's input {0:?} does not have 4 dimensions")]
    Rank(String),
}

// ONNX field numbers on the path.
const MODEL_GRAPH: u32 = 7;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const VALUE_INFO_NAME: u32 = 1;
const VALUE_INFO_TYPE: u32 = 2;
const TYPE_TENSOR: u32 = 1;
const TENSOR_SHAPE: u32 = 2;
const SHAPE_DIM: u32 = 1;
const DIM_PARAM: u32 = 2;

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// One field of a message: its number, wire type and the bytes after its key (for length-delimited
/// fields, the contents without the length).
struct Field<'a> {
    number: u32,
    wire: u8,
    value: &'a [u8],
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, ShapeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or(ShapeError::Malformed("truncated varint"))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ShapeError::Malformed("varint too long"))
}

fn fields(msg: &[u8]) -> Result<Vec<Field<'_>>, ShapeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let key = varint(msg, &mut pos)?;
        let (number, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let start = pos;
        let end = match wire {
            WIRE_VARINT => {
                varint(msg, &mut pos)?;
                pos
            }
            WIRE_I64 => pos + 8,
            WIRE_I32 => pos + 4,
            WIRE_LEN => {
                let len = varint(msg, &mut pos)? as usize;
                let s = pos;
                pos = s.checked_add(len).ok_or(ShapeError::Malformed("length overflow"))?;
                if pos > msg.len() {
                    return Err(ShapeError::Malformed("field runs past its message"));
                }
                out.push(Field { number, wire, value: &msg[s..pos] });
                continue;
            }
            _ => return Err(ShapeError::Malformed("unsupported wire type")),
        };
        if end > msg.len() {
            return Err(ShapeError::Malformed("field runs past its message"));
        }
        pos = end;
        out.push(Field { number, wire, value: &msg[start..end] });
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put(out: &mut Vec<u8>, number: u32, wire: u8, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
    if wire == WIRE_LEN {
        put_varint(out, value.len() as u64);
    }
    out.extend_from_slice(value);
}

/// Re-encodes `msg` with `edit` deciding, field by field: `None` keeps the field as it is, `Some(None)`
/// drops it, `Some(Some(bytes))` replaces a length-delimited field's contents.
fn rewrite(msg: &[u8], mut edit: impl FnMut(&Field<'_>) -> Result<Option<Option<Vec<u8>>>, ShapeError>) -> Result<Vec<u8>, ShapeError> {
    let mut out = Vec::with_capacity(msg.len());
    for f in fields(msg)? {
        match edit(&f)? {
            None => put(&mut out, f.number, f.wire, f.value),
            Some(None) => {}
            Some(Some(v)) => put(&mut out, f.number, WIRE_LEN, &v),
        }
    }
    Ok(out)
}

/// A `Dimension` message naming a symbolic dimension.
fn symbolic(name: &str) -> Vec<u8> {
    let mut d = Vec::new();
    put(&mut d, DIM_PARAM, WIRE_LEN, name.as_bytes());
    d
}

/// The `ValueInfoProto` `vi` with its tensor dimensions renamed by `name_of(index, rank)` (`None`: kept).
fn rename_dims(vi: &[u8], name_of: &dyn Fn(usize, usize) -> Option<String>) -> Result<(Vec<u8>, usize), ShapeError> {
    let mut rank = 0;
    let out = rewrite(vi, |f| {
        if f.number != VALUE_INFO_TYPE || f.wire != WIRE_LEN {
            return Ok(None);
        }
        let ty = rewrite(f.value, |t| {
            if t.number != TYPE_TENSOR || t.wire != WIRE_LEN {
                return Ok(None);
            }
            let tensor = rewrite(t.value, |s| {
                if s.number != TENSOR_SHAPE || s.wire != WIRE_LEN {
                    return Ok(None);
                }
                rank = fields(s.value)?.iter().filter(|d| d.number == SHAPE_DIM).count();
                let mut i = 0;
                let shape = rewrite(s.value, |d| {
                    if d.number != SHAPE_DIM {
                        return Ok(None);
                    }
                    i += 1;
                    Ok(name_of(i - 1, rank).map(|n| Some(symbolic(&n))))
                })?;
                Ok(Some(Some(shape)))
            })?;
            Ok(Some(Some(tensor)))
        })?;
        Ok(Some(Some(ty)))
    })?;
    Ok((out, rank))
}

fn value_info_name(vi: &[u8]) -> Result<Option<&[u8]>, ShapeError> {
    Ok(fields(vi)?.into_iter().find(|f| f.number == VALUE_INFO_NAME && f.wire == WIRE_LEN).map(|f| f.value))
}

/// The model `onnx` with the spatial dimensions of its input `input` made free: `hw` gives their indices
/// (2 and 3 for NCHW, 1 and 2 for NHWC). See the module documentation for what else changes.
pub fn free_spatial_dims(onnx: &[u8], input: &str, hw: (usize, usize)) -> Result<Vec<u8>, ShapeError> {
    let mut found = false;
    let out = rewrite(onnx, |m| {
        if m.number != MODEL_GRAPH || m.wire != WIRE_LEN {
            return Ok(None);
        }
        let graph = rewrite(m.value, |g| match (g.number, g.wire) {
            (GRAPH_INPUT, WIRE_LEN) if value_info_name(g.value)? == Some(input.as_bytes()) => {
                let (vi, rank) = rename_dims(g.value, &|i, _| {
                    if i == hw.0 {
                        Some("height".into())
                    } else if i == hw.1 {
                        Some("width".into())
                    } else {
                        None
                    }
                })?;
                if rank != 4 {
                    return Err(ShapeError::Rank(input.into()));
                }
                found = true;
                Ok(Some(Some(vi)))
            }
            (GRAPH_OUTPUT, WIRE_LEN) => {
                let name = String::from_utf8_lossy(value_info_name(g.value)?.unwrap_or_default()).into_owned();
                Ok(Some(Some(rename_dims(g.value, &|i, _| (i > 0).then(|| format!("{name}_{i}")))?.0)))
            }
            (GRAPH_VALUE_INFO, _) => Ok(Some(None)),
            _ => Ok(None),
        })?;
        Ok(Some(Some(graph)))
    })?;
    if !found {
        return Err(ShapeError::NoInput(input.into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            put(&mut out, *n, WIRE_LEN, v);
        }
        out
    }

    fn dim_value(v: u64) -> Vec<u8> {
        let mut d = Vec::new();
        put_varint(&mut d, 1 << 3);
        put_varint(&mut d, v);
        d
    }

    fn value_info(name: &str, dims: &[u64]) -> Vec<u8> {
        let shape = msg(&dims.iter().map(|d| (SHAPE_DIM, dim_value(*d))).collect::<Vec<_>>());
        let mut tensor = Vec::new();
        put_varint(&mut tensor, 1 << 3); // elem_type = FLOAT
        put_varint(&mut tensor, 1);
        put(&mut tensor, TENSOR_SHAPE, WIRE_LEN, &shape);
        msg(&[(VALUE_INFO_NAME, name.as_bytes().to_vec()), (VALUE_INFO_TYPE, msg(&[(TYPE_TENSOR, tensor)]))])
    }

    /// The dimensions of `vi`, as written: a number, or a name.
    fn dims(vi: &[u8]) -> Vec<String> {
        let ty = fields(vi).unwrap().into_iter().find(|f| f.number == VALUE_INFO_TYPE).unwrap().value;
        let tensor = fields(ty).unwrap().into_iter().find(|f| f.number == TYPE_TENSOR).unwrap().value;
        let shape = fields(tensor).unwrap().into_iter().find(|f| f.number == TENSOR_SHAPE).unwrap().value;
        fields(shape)
            .unwrap()
            .into_iter()
            .map(|d| {
                let f = &fields(d.value).unwrap()[0];
                if f.number == DIM_PARAM { String::from_utf8(f.value.to_vec()).unwrap() } else { varint(f.value, &mut 0).unwrap().to_string() }
            })
            .collect()
    }

    fn model() -> Vec<u8> {
        let node = msg(&[(1, b"x".to_vec())]); // graph.node: kept as it is
        let graph = msg(&[
            (1, node),
            (GRAPH_INPUT, value_info("weights", &[16, 3, 3, 3])),
            (GRAPH_INPUT, value_info("images", &[1, 3, 416, 416])),
            (GRAPH_OUTPUT, value_info("output", &[1, 3549, 85])),
            (GRAPH_VALUE_INFO, value_info("hidden", &[1, 16, 208, 208])),
        ]);
        let mut m = Vec::new();
        put_varint(&mut m, 1 << 3); // ir_version = 6
        put_varint(&mut m, 6);
        put(&mut m, MODEL_GRAPH, WIRE_LEN, &graph);
        m
    }

    #[test]
    fn the_inputs_spatial_dims_and_the_outputs_become_free_and_the_rest_is_kept() {
        let out = free_spatial_dims(&model(), "images", (2, 3)).unwrap();
        let top = fields(&out).unwrap();
        assert_eq!((top[0].number, varint(top[0].value, &mut 0).unwrap()), (1, 6), "ir_version kept");
        let graph = fields(top[1].value).unwrap();
        let of = |n: u32| graph.iter().filter(|f| f.number == n).map(|f| f.value).collect::<Vec<_>>();
        assert_eq!(of(1), [b"\x0a\x01x".as_slice()], "nodes copied byte for byte");
        let inputs = of(GRAPH_INPUT);
        assert_eq!(dims(inputs[0]), ["16", "3", "3", "3"], "another input is untouched");
        assert_eq!(dims(inputs[1]), ["1", "3", "height", "width"]);
        assert_eq!(dims(of(GRAPH_OUTPUT)[0]), ["1", "output_1", "output_2"]);
        assert!(of(GRAPH_VALUE_INFO).is_empty(), "intermediate shape hints are dropped");
        // NHWC: the spatial dims are 1 and 2.
        let out = free_spatial_dims(&model(), "images", (1, 2)).unwrap();
        let graph = fields(fields(&out).unwrap()[1].value).unwrap();
        assert_eq!(dims(graph.iter().filter(|f| f.number == GRAPH_INPUT).nth(1).unwrap().value), ["1", "height", "width", "416"]);
    }

    #[test]
    fn a_missing_input_and_broken_bytes_are_refused() {
        assert_eq!(free_spatial_dims(&model(), "pixels", (2, 3)), Err(ShapeError::NoInput("pixels".into())));
        assert_eq!(free_spatial_dims(&model(), "weights", (2, 3)).map(|_| ()), Ok(()), "a 4-d input is accepted");
        let mut cut = model();
        cut.truncate(cut.len() - 3);
        assert!(matches!(free_spatial_dims(&cut, "images", (2, 3)), Err(ShapeError::Malformed(_))));
        let three_d = {
            let graph = msg(&[(GRAPH_INPUT, value_info("images", &[1, 416, 416]))]);
            msg(&[(MODEL_GRAPH, graph)])
        };
        assert_eq!(free_spatial_dims(&three_d, "images", (1, 2)), Err(ShapeError::Rank("images".into())));
    }
}
