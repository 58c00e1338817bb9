//! Reading a dataset from NumPy arrays (`data.source = "npy"`): an `.npz` archive (`np.savez`, stored or
//! deflated) or a directory of `NAME.npy` files, one per config name (`data.x_train`, `data.y_train`, `data.x_val`,
//! `data.y_val`).
//!
//! Owns the `.npy` header (a small Python-literal dict, parsed here), the dtype table and the size checks: the
//! header's shape times the item size must be exactly the bytes the file (or the archive entry) holds, checked
//! before anything is allocated; a deflated entry may not claim more than deflate's largest ratio allows. Each
//! array is read straight into its tensor's bytes (no file buffer, no second copy) except where a conversion is
//! needed: Fortran order (one transposing copy), float64 (held as float32, with a note) and unsigned integers
//! wider than a byte. Object arrays need pickle and are refused, never unpickled.
//! Produces [`RawSplits`] for the checks every file source shares (`Dataset::check`). Imports only `config`,
//! `ffi` (to read into a new tensor's bytes) and its siblings.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

use super::file::{check_shape, target_role, RawSplits, Role};
use super::DataError;
use crate::config::DataConfig;

/// Largest `.npy` header accepted (numpy writes well under 1 KiB; version 2/3 headers may be longer).
const MAX_HEADER: usize = 1 << 20;

/// Deflate's largest compression ratio (a 258-byte match in about 2 bits): a deflated entry claiming more
/// uncompressed bytes than this allows is damaged, and is refused before its size is allocated.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Header {
    /// How the bytes are stored: the kind to read them as, plus what to do after.
    pub dtype: Dtype,
    pub fortran: bool,
    pub shape: Vec<i64>,
    /// Bytes before the data (magic, version, length and the dict).
    pub len: u64,
}

/// A NumPy dtype spotrun reads: the raw kind its bytes form, its item size, and whether the bytes need a swap
/// (big-endian) or a widening (unsigned ints wider than a byte, read as the signed kind of the same size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dtype {
    pub raw: Kind,
    pub size: usize,
    pub big_endian: bool,
    pub unsigned: bool,
    pub bool: bool,
}

/// The four arrays, plus notes on conversions made (float64 held as float32, ...).
pub(super) fn read(path: &Path, cfg: &DataConfig) -> Result<(RawSplits, Vec<String>), DataError> {
    let read_err = |source: std::io::Error| DataError::Read { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mut notes = Vec::new();
    let y = target_role(cfg);
    let names = [
        ("data.x_train", &cfg.x_train, Role::Inputs),
        ("data.y_train", &cfg.y_train, y),
        ("data.x_val", &cfg.x_val, Role::Inputs),
        ("data.y_val", &cfg.y_val, y),
    ];
    let mut out = Vec::with_capacity(4);
    if meta.is_dir() {
        for (key, name, role) in names {
            out.push(read_npy_file(&path.join(format!("{name}.npy")), key, name, role, &mut notes)?);
        }
    } else {
        let file = File::open(path).map_err(read_err)?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "not an .npz archive ({e}); data.source = \"npy\" reads an .npz (np.savez) or a directory of \
                 .npy files (data.path)"
            ),
        })?;
        for (key, name, role) in names {
            out.push(read_npz_entry(&mut zip, path, key, name, role, &mut notes)?);
        }
    }
    let mut it = out.into_iter();
    let mut next = || it.next().unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)));
    Ok((RawSplits { x_train: next(), y_train: next(), x_val: next(), y_val: next() }, notes))
}

/// Bytes the four tensors will take once converted (float64 as float32, labels as int64), from the headers
/// alone; `None` when a header cannot be read (loading then says why).
pub(super) fn planned_bytes(cfg: &DataConfig) -> Option<u64> {
    let path = cfg.path.as_deref()?;
    let y = target_role(cfg);
    let names = [(&cfg.x_train, Role::Inputs), (&cfg.y_train, y), (&cfg.x_val, Role::Inputs), (&cfg.y_val, y)];
    let mut total = 0u64;
    let mut zip = if path.is_dir() { None } else { Some(zip::ZipArchive::new(File::open(path).ok()?).ok()?) };
    for (name, role) in names {
        let header = match zip.as_mut() {
            None => {
                let file = path.join(format!("{name}.npy"));
                let len = std::fs::metadata(&file).ok()?.len();
                read_header(&mut File::open(&file).ok()?, len).ok()?
            }
            Some(z) => {
                let mut f = z.by_name(&format!("{name}.npy")).ok()?;
                let size = f.size();
                read_header(&mut f, size).ok()?
            }
        };
        let elements = data_bytes(&header).ok()? / header.dtype.size as u64;
        let held = match (role, header.dtype.raw) {
            (Role::Labels, _) => 8,
            (Role::Inputs, Kind::Half | Kind::Uint8) if !header.dtype.unsigned => header.dtype.size as u64,
            _ => 4,
        };
        total = total.saturating_add(elements.saturating_mul(held));
    }
    Some(total)
}

/// One `NAME.npy` of a directory: the header's size must be the file's.
fn read_npy_file(file: &Path, key: &str, name: &str, role: Role, notes: &mut Vec<String>) -> Result<Tensor, DataError> {
    let mut f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = file.parent().unwrap_or(Path::new("."));
            return Err(DataError::MissingTensor {
                path: dir.to_path_buf(),
                key: key.into(),
                name: format!("{name}.npy"),
                have: listing(dir),
            });
        }
        Err(source) => return Err(DataError::Read { path: file.to_path_buf(), source }),
    };
    let len = f.metadata().map_err(|source| DataError::Read { path: file.to_path_buf(), source })?.len();
    let at = |message: String| DataError::Shape { path: file.to_path_buf(), key: key.into(), message };
    let header = read_header(&mut f, len).map_err(at)?;
    let data = data_bytes(&header).map_err(at)?;
    if header.len + data != len {
        return Err(at(format!(
            "the header describes {data} bytes of {:?} but the file holds {} after it (truncated or corrupted?)",
            header.shape,
            len.saturating_sub(header.len)
        )));
    }
    load(&mut f, &header, file, key, name, role, notes)
}

/// One `NAME.npy` entry of an `.npz`: its header's size must be the entry's, and a deflated entry's size must be
/// within deflate's ratio of its compressed size.
fn read_npz_entry(
    zip: &mut zip::ZipArchive<File>,
    path: &Path,
    key: &str,
    name: &str,
    role: Role,
    notes: &mut Vec<String>,
) -> Result<Tensor, DataError> {
    let at = |message: String| DataError::Shape { path: path.to_path_buf(), key: key.into(), message };
    let entry = format!("{name}.npy");
    if !zip.file_names().any(|n| n == entry) {
        let mut have: Vec<&str> = zip.file_names().map(|n| n.strip_suffix(".npy").unwrap_or(n)).collect();
        have.sort_unstable();
        return Err(DataError::MissingTensor {
            path: path.into(),
            key: key.into(),
            name: name.into(),
            have: have.join(", "),
        });
    }
    let mut f = zip.by_name(&entry).map_err(|e| at(format!("entry `{entry}`: {e}")))?;
    let (size, packed) = (f.size(), f.compressed_size());
    match f.compression() {
        zip::CompressionMethod::Stored if size != packed => {
            return Err(at(format!("entry `{entry}` is stored but its sizes differ ({size} vs {packed} bytes)")));
        }
        zip::CompressionMethod::Stored => {}
        zip::CompressionMethod::Deflated if size / MAX_DEFLATE_RATIO > packed => {
            return Err(at(format!("entry `{entry}` claims {size} bytes from {packed} compressed (damaged archive)")));
        }
        zip::CompressionMethod::Deflated => {}
        other => {
            return Err(at(format!(
                "entry `{entry}` is compressed with {other}; spotrun reads stored or deflated entries \
                 (np.savez / np.savez_compressed)"
            )));
        }
    }
    let header = read_header(&mut f, size).map_err(|m| at(format!("entry `{entry}`: {m}")))?;
    let data = data_bytes(&header).map_err(|m| at(format!("entry `{entry}`: {m}")))?;
    if header.len + data != size {
        return Err(at(format!(
            "entry `{entry}`: the header describes {data} bytes of {:?} but the entry holds {} (truncated or \
             corrupted?)",
            header.shape,
            size.saturating_sub(header.len)
        )));
    }
    let t = load(&mut f, &header, path, key, name, role, notes)?;
    // One more read reaches the entry's end, where the zip reader checks its CRC-32.
    let mut end = [0u8; 1];
    match f.read(&mut end) {
        Ok(0) => Ok(t),
        Ok(_) => Err(at(format!("entry `{entry}` holds more bytes than its header describes"))),
        Err(e) => Err(at(format!("entry `{entry}`: {e}"))),
    }
}

/// The names in a directory, for a "missing array" message.
fn listing(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".npy")).map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() {
        "no .npy files".into()
    } else {
        names.join(", ")
    }
}

/// Bytes of data the header describes (checked for overflow).
fn data_bytes(h: &Header) -> Result<u64, String> {
    h.shape
        .iter()
        .try_fold(h.dtype.size as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {:?} overflows", h.shape))
}

/// Reads the magic, version and header dict from `r` (positioned at the start), checking lengths against
/// `total` (the bytes available) before allocating.
pub(super) fn read_header(r: &mut impl Read, total: u64) -> Result<Header, String> {
    let mut pre = [0u8; 10];
    r.read_exact(&mut pre).map_err(|_| format!("{total} bytes is too short for a .npy header"))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (no \\x93NUMPY magic)".into());
    }
    let (dict_len, pre_len) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            let mut more = [0u8; 2];
            r.read_exact(&mut more).map_err(|_| "truncated .npy header".to_string())?;
            (u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize, 12)
        }
        v => return Err(format!(".npy format version {v} is not one spotrun reads (1, 2 or 3)")),
    };
    if dict_len > MAX_HEADER || (pre_len + dict_len) as u64 > total {
        return Err(format!("header length {dict_len} does not fit a {total}-byte array"));
    }
    let mut dict = vec![0u8; dict_len];
    r.read_exact(&mut dict).map_err(|_| "truncated .npy header".to_string())?;
    let dict = std::str::from_utf8(&dict).map_err(|_| "the .npy header is not text".to_string())?;
    let (dtype, fortran, shape) = parse_dict(dict)?;
    Ok(Header { dtype, fortran, shape, len: (pre_len + dict_len) as u64 })
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`: the three keys numpy writes, in any order.
fn parse_dict(d: &str) -> Result<(Dtype, bool, Vec<i64>), String> {
    let bad = || format!("bad .npy header `{}`", d.trim());
    let value = |key: &str| -> Option<&str> {
        let at = d.find(&format!("'{key}'"))? + key.len() + 2;
        d[at..].trim_start().strip_prefix(':').map(str::trim_start)
    };
    let descr = value("descr").ok_or_else(bad)?;
    let descr = match descr.strip_prefix('\'') {
        Some(rest) => &rest[..rest.find('\'').ok_or_else(bad)?],
        None => return Err("is a structured (record) array; save one plain numeric array per name".into()),
    };
    let fortran = match value("fortran_order").ok_or_else(bad)? {
        v if v.starts_with("True") => true,
        v if v.starts_with("False") => false,
        _ => return Err(bad()),
    };
    let shape = value("shape").and_then(|v| v.strip_prefix('(')).ok_or_else(bad)?;
    let shape = &shape[..shape.find(')').ok_or_else(bad)?];
    let shape: Vec<i64> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<i64>().ok().filter(|&n| n >= 0))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    Ok((dtype(descr)?, fortran, shape))
}

/// The dtype table: `<f4`, `|u1`, `>i8`, `|b1`, ...
fn dtype(descr: &str) -> Result<Dtype, String> {
    let (order, code) = descr.split_at(descr.len().min(1));
    let big_endian = order == ">";
    if !matches!(order, "<" | ">" | "|" | "=") {
        return Err(format!("dtype '{descr}' is not one spotrun reads"));
    }
    let (raw, size, unsigned, bool) = match code {
        "f2" => (Kind::Half, 2, false, false),
        "f4" => (Kind::Float, 4, false, false),
        "f8" => (Kind::Double, 8, false, false),
        "i1" => (Kind::Int8, 1, false, false),
        "i2" => (Kind::Int16, 2, false, false),
        "i4" => (Kind::Int, 4, false, false),
        "i8" => (Kind::Int64, 8, false, false),
        "u1" => (Kind::Uint8, 1, false, false),
        "u2" => (Kind::Int16, 2, true, false),
        "u4" => (Kind::Int, 4, true, false),
        "u8" => (Kind::Int64, 8, true, false),
        "b1" => (Kind::Uint8, 1, false, true),
        c if c.starts_with('O') => {
            return Err("is an object array, which needs pickle: spotrun never unpickles (it runs code); save a \
                        numeric array (e.g. np.asarray(a, dtype=np.float32))"
                .into())
        }
        _ => {
            return Err(format!(
                "dtype '{descr}' is not one spotrun reads (float16/32/64, int8/16/32/64, uint8/16/32/64, bool)"
            ))
        }
    };
    Ok(Dtype { raw, size, big_endian: big_endian && size > 1, unsigned, bool })
}

/// Reads the data after the header straight into a new tensor, then makes it what `role` holds.
fn load(
    r: &mut impl Read,
    h: &Header,
    path: &Path,
    key: &str,
    name: &str,
    role: Role,
    notes: &mut Vec<String>,
) -> Result<Tensor, DataError> {
    let at = |message: String| DataError::Shape { path: path.to_path_buf(), key: key.into(), message };
    check_shape(&h.shape, role, name).map_err(at)?;
    // Fortran order: the bytes are the transpose's C-order bytes.
    let stored: Vec<i64> = if h.fortran { h.shape.iter().rev().copied().collect() } else { h.shape.clone() };
    let size = h.dtype.size;
    let t = crate::ffi::cpu_tensor_filled(&stored, h.dtype.raw, |bytes| {
        r.read_exact(bytes)?;
        if h.dtype.big_endian {
            bytes.chunks_exact_mut(size).for_each(<[u8]>::reverse);
        }
        Ok::<(), std::io::Error>(())
    })
    .map_err(|e| at(e.to_string()))?
    .map_err(|e| at(format!("reading `{name}`: {e} (truncated or corrupted?)")))?;
    let t = if h.fortran {
        let dims: Vec<i64> = (0..stored.len() as i64).rev().collect();
        t.permute(dims.as_slice()).contiguous()
    } else {
        t
    };
    let t = widen(t, h.dtype).map_err(at)?;
    convert(t, role, name, notes).map_err(at)
}

/// Unsigned integers wider than a byte were read as the signed kind of their size: reinterpret them.
fn widen(t: Tensor, d: Dtype) -> Result<Tensor, String> {
    Ok(match (d.unsigned, d.raw) {
        (true, Kind::Int16) => t.to_kind(Kind::Int).bitwise_and(0xFFFF),
        (true, Kind::Int) => t.to_kind(Kind::Int64).bitwise_and(0xFFFF_FFFF),
        (true, Kind::Int64) if t.numel() > 0 && t.min().int64_value(&[]) < 0 => {
            return Err("holds uint64 values above 2^63 - 1, which spotrun cannot hold".into())
        }
        _ => t,
    })
}

/// What each role holds: inputs float32/float16/uint8 (others as float32), labels int64, targets float32 `[N, D]`.
fn convert(t: Tensor, role: Role, name: &str, notes: &mut Vec<String>) -> Result<Tensor, String> {
    let kind = t.kind();
    if kind == Kind::Double {
        notes.push(format!("`{name}` is float64; spotrun holds it as float32"));
    }
    Ok(match role {
        Role::Inputs if matches!(kind, Kind::Float | Kind::Half | Kind::Uint8) => t,
        Role::Inputs => t.to_kind(Kind::Float),
        Role::Labels if t.is_floating_point() => {
            return Err(format!(
                "labels `{name}` are {kind:?}; classification labels must be integers (or set data.task = \
                 \"regression\" for float targets)"
            ))
        }
        Role::Labels => t.to_kind(Kind::Int64),
        Role::Targets => {
            let n = t.size()[0];
            t.to_kind(Kind::Float).reshape([n, -1])
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn npy(dict: &str) -> Vec<u8> {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend((dict.len() as u16).to_le_bytes());
        v.extend(dict.as_bytes());
        v
    }

    #[test]
    fn headers_numpy_writes_parse() {
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n");
        let h = read_header(&mut b.as_slice(), 1000).unwrap();
        assert_eq!((h.dtype.raw, h.fortran, h.shape.clone(), h.len), (Kind::Float, false, vec![3, 4], b.len() as u64));
        let b = npy("{'descr': '>u2', 'fortran_order': True, 'shape': (5,), }");
        let h = read_header(&mut b.as_slice(), 1000).unwrap();
        assert!(h.fortran && h.dtype.big_endian && h.dtype.unsigned);
        assert_eq!(h.shape, [5]);
        let b = npy("{'descr': '|b1', 'fortran_order': False, 'shape': (), }");
        assert_eq!(read_header(&mut b.as_slice(), 1000).unwrap().shape, Vec::<i64>::new());
    }

    #[test]
    fn object_structured_and_oversized_headers_are_refused() {
        let b = npy("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }");
        assert!(read_header(&mut b.as_slice(), 1000).unwrap_err().contains("pickle"));
        let b = npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }");
        assert!(read_header(&mut b.as_slice(), 1000).unwrap_err().contains("structured"));
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
        assert!(read_header(&mut b.as_slice(), 20).unwrap_err().contains("does not fit"));
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }");
        assert!(read_header(&mut b.as_slice(), 1000).is_err());
        let h = Header { dtype: dtype("<f8").unwrap(), fortran: false, shape: vec![i64::MAX, 4], len: 0 };
        assert!(data_bytes(&h).is_err());
    }
}
