//! Reading a dataset from Parquet files (`data.source = "parquet"`), as pandas, polars, pyarrow and Hugging Face
//! `datasets` (`ds.to_parquet`) write them.
//!
//! Owns the file set (`data.path` / `data.val_path`: a file, a directory of `*.parquet`, or a glob in the last path
//! component), the choice of columns (`data.features`: numeric columns, or one list / fixed-size-list column;
//! default every numeric column but `data.target`), the `data.val_fraction` split (seeded by `data.split_seed`,
//! chosen before reading so each row is written once, into its split) and string labels (class indices in sorted
//! order). The plan (rows, width, columns) comes from the files' footers alone; the tensors are then allocated
//! once and filled row group by row group through the crate's low-level column readers: no Arrow arrays, no second
//! copy. Nulls, ragged lists, non-numeric columns and short column chunks are errors naming the file, the key and
//! (for values) the column and row; a panic inside the decoder is caught and reported the same way.
//! Produces [`RawSplits`] for the checks every file source shares. Imports only `config` and its siblings.
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::basic::Type as Physical;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, DataType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnDescPtr;
use tch::{Device, Kind, Tensor};

use super::file::RawSplits;
use super::{DataError, SplitMix64};
use crate::config::{DataConfig, TaskKind};

/// Records per `read_records` call: bounds the batch buffers (a few MB), whatever the row group's size.
const BATCH: usize = 16_384;

/// What a Parquet load gives besides the tensors: notes (conversions) and class names (string labels).
pub(super) struct Extras {
    pub notes: Vec<String>,
    pub class_names: Option<Vec<String>>,
}

/// One file of a split: its reader, rows, and where in the split it starts.
struct Part {
    path: PathBuf,
    key: &'static str,
    reader: SerializedFileReader<File>,
    rows: usize,
}

/// The columns to read, resolved by name in each file.
struct Columns {
    features: Vec<String>,
    /// `Some(width)` when the features are one list column of that many values per row.
    list: Option<i64>,
    target: String,
}

/// Where a file's rows go: all to one split from `start`, or each to its own split (`data.val_fraction`).
#[derive(Clone)]
enum Route {
    All { split: usize, start: i64 },
    Mixed { split: std::rc::Rc<Vec<(u8, i64)>> },
}

/// Reads the train (and val) files into the four tensors.
pub(super) fn read(cfg: &DataConfig) -> Result<(RawSplits, Extras), DataError> {
    let path = cfg.path.clone().unwrap_or_default();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_caught(cfg)));
    caught.unwrap_or_else(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(DataError::Format {
            path,
            message: format!("data.path: the Parquet decoder failed on this data (damaged file?): {text}"),
        })
    })
}

/// Bytes the four tensors will take, from the footers alone (for the memory check before loading).
pub(super) fn planned_bytes(cfg: &DataConfig) -> Option<u64> {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (train, val) = open_all(cfg).ok()?;
        let cols = columns(&train, cfg).ok()?;
        let rows: usize = train.iter().chain(&val).map(|p| p.rows).sum();
        let width = cols.list.unwrap_or(cols.features.len() as i64) as u64;
        Some(rows as u64 * (4 * width + 8))
    }));
    caught.ok().flatten()
}

/// Every file `data.path` and `data.val_path` name, in the order read (the long-lived worker's data cache keys
/// on their sizes and times).
pub(super) fn files(cfg: &DataConfig) -> Result<Vec<PathBuf>, DataError> {
    let mut out = expand(&cfg.path.clone().unwrap_or_default(), "data.path")?;
    if let Some(v) = &cfg.val_path {
        out.extend(expand(v, "data.val_path")?);
    }
    Ok(out)
}

fn read_caught(cfg: &DataConfig) -> Result<(RawSplits, Extras), DataError> {
    let (train, val) = open_all(cfg)?;
    let cols = columns(&train, cfg)?;
    let width = cols.list.unwrap_or(cols.features.len() as i64);
    let (n_train, n_val, routes) = routes(cfg, &train, &val)?;
    let first = &train[0].path;
    let alloc = |shape: &[i64], kind: Kind| {
        Tensor::f_empty(shape, (kind, Device::Cpu)).map_err(|e| DataError::Shape {
            path: first.clone(),
            key: "data.path".into(),
            message: format!("cannot hold {shape:?} {kind:?} in memory: {e}"),
        })
    };
    let regression = cfg.task == TaskKind::Regression;
    let (y_kind, y_shape) = if regression { (Kind::Float, vec![1]) } else { (Kind::Int64, vec![]) };
    let mut x = Vec::new();
    let mut y = Vec::new();
    for n in [n_train, n_val] {
        x.push(alloc(&[n, width], Kind::Float)?);
        y.push(alloc(&[&[n][..], &y_shape].concat(), y_kind)?);
    }
    let mut state =
        Fill { x, y, notes: Vec::new(), strings: HashMap::new(), names: Vec::new(), regression, doubles: Vec::new() };
    for (part, route) in train.iter().chain(&val).zip(routes) {
        for (j, name) in cols.features.iter().enumerate() {
            let dest = if cols.list.is_some() { Dest::XRows(width) } else { Dest::XCol(j as i64) };
            state.column(part, name, "data.features", dest, &route)?;
        }
        state.column(part, &cols.target, "data.target", Dest::Y, &route)?;
    }
    let class_names = state.sort_classes();
    if !state.doubles.is_empty() {
        let shown: Vec<String> = state.doubles.iter().take(8).map(|d| format!("`{d}`")).collect();
        let more =
            if state.doubles.len() > 8 { format!(" and {} more", state.doubles.len() - 8) } else { String::new() };
        state.notes.push(format!("float64 columns {}{more} are held as float32", shown.join(", ")));
    }
    let [x_train, x_val]: [Tensor; 2] = state
        .x
        .try_into()
        .map_err(|_| DataError::Format { path: first.clone(), message: "internal: two splits expected".into() })?;
    let mut y = state.y.into_iter();
    let (y_train, y_val) = (y.next(), y.next());
    let (Some(y_train), Some(y_val)) = (y_train, y_val) else {
        return Err(DataError::Format { path: first.clone(), message: "internal: two splits expected".into() });
    };
    Ok((RawSplits { x_train, y_train, x_val, y_val }, Extras { notes: state.notes, class_names }))
}

/// The train and val file sets, opened, with their row counts from the footers.
fn open_all(cfg: &DataConfig) -> Result<(Vec<Part>, Vec<Part>), DataError> {
    let open = |pattern: &Path, key: &'static str| -> Result<Vec<Part>, DataError> {
        expand(pattern, key)?.into_iter().map(|p| open(p, key)).collect()
    };
    let train = open(&cfg.path.clone().unwrap_or_default(), "data.path")?;
    let val = match &cfg.val_path {
        Some(v) => open(v, "data.val_path")?,
        None => Vec::new(),
    };
    Ok((train, val))
}

fn open(path: PathBuf, key: &'static str) -> Result<Part, DataError> {
    let file = File::open(&path).map_err(|source| DataError::Read { path: path.clone(), source })?;
    let reader = SerializedFileReader::new(file).map_err(|e| DataError::Format {
        path: path.clone(),
        message: format!("{key}: not a readable Parquet file: {e}"),
    })?;
    let meta = reader.metadata();
    let rows: i64 = (0..meta.num_row_groups()).map(|i| meta.row_group(i).num_rows().max(0)).sum();
    if meta.file_metadata().num_rows() != rows || rows < 0 {
        return Err(DataError::Format {
            path,
            message: format!(
                "{key}: the footer says {} rows but its row groups hold {rows} (damaged file?)",
                meta.file_metadata().num_rows()
            ),
        });
    }
    Ok(Part { path, key, reader, rows: rows as usize })
}

/// A file, the `*.parquet` files of a directory (sorted), or a glob whose last component has `*` / `?`.
fn expand(pattern: &Path, key: &str) -> Result<Vec<PathBuf>, DataError> {
    let none =
        |message: String| DataError::Format { path: pattern.to_path_buf(), message: format!("{key}: {message}") };
    let name = pattern.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (dir, glob) = if name.contains(['*', '?']) {
        (pattern.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")), name)
    } else if pattern.is_dir() {
        (pattern, "*.parquet")
    } else {
        return Ok(vec![pattern.to_path_buf()]);
    };
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Read { path: dir.to_path_buf(), source })?;
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| wildcard(glob, n)))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(none(format!("no file matches `{glob}` in {}", dir.display())));
    }
    Ok(out)
}

/// `*` (any run) and `?` (any one character) against a file name.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            (pi, ni) = (pi + 1, ni + 1);
        } else if pi < p.len() && p[pi] == '*' {
            (star, mark, pi) = (Some(pi), ni, pi + 1);
        } else if let Some(s) = star {
            (pi, mark, ni) = (s + 1, mark + 1, mark + 1);
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The leaf column of `part` for the top-level field `name`: its index and descriptor.
fn leaf(part: &Part, name: &str) -> Option<(usize, ColumnDescPtr)> {
    let schema = part.reader.metadata().file_metadata().schema_descr();
    (0..schema.num_columns())
        .map(|i| (i, schema.column(i)))
        .find(|(_, c)| c.path().parts().first().is_some_and(|p| p == name))
}

fn numeric(t: Physical) -> bool {
    matches!(t, Physical::BOOLEAN | Physical::INT32 | Physical::INT64 | Physical::FLOAT | Physical::DOUBLE)
}

/// The feature and target columns, checked against the first file's schema; a list column's width comes from the
/// footers (its values over its rows) and is checked row by row while reading.
fn columns(train: &[Part], cfg: &DataConfig) -> Result<Columns, DataError> {
    let first = &train[0];
    let target = cfg.target.clone().unwrap_or_else(|| "label".into());
    let schema = first.reader.metadata().file_metadata().schema_descr();
    let top: Vec<ColumnDescPtr> = (0..schema.num_columns()).map(|i| schema.column(i)).collect();
    let names: Vec<String> = top.iter().filter_map(|c| c.path().parts().first().cloned()).collect();
    let err = |key: &str, message: String| DataError::Shape { path: first.path.clone(), key: key.into(), message };
    if leaf(first, &target).is_none() {
        return Err(err("data.target", format!("no column `{target}`; the file has: {}", names.join(", "))));
    }
    let features = match &cfg.features {
        Some(f) => f.clone(),
        None => {
            let scalar: Vec<String> = top
                .iter()
                .filter(|c| c.path().parts().len() == 1 && numeric(c.physical_type()) && c.name() != target)
                .map(|c| c.name().to_string())
                .collect();
            let lists: Vec<String> = top
                .iter()
                .filter(|c| c.max_rep_level() > 0 && numeric(c.physical_type()))
                .filter_map(|c| c.path().parts().first().cloned())
                .filter(|n| *n != target)
                .collect();
            match (scalar.is_empty(), lists.len()) {
                (false, _) => scalar,
                (true, 1) => lists,
                _ => {
                    return Err(err(
                        "data.features",
                        format!("no numeric input columns besides `{target}`; the file has: {}", names.join(", ")),
                    ))
                }
            }
        }
    };
    let mut list = None;
    for name in &features {
        let Some((_, c)) = leaf(first, name) else {
            return Err(err("data.features", format!("no column `{name}`; the file has: {}", names.join(", "))));
        };
        if name == &target {
            return Err(err("data.features", format!("`{name}` is also data.target")));
        }
        if !numeric(c.physical_type()) {
            return Err(err(
                "data.features",
                format!(
                    "column `{name}` is {} (not numeric); image or text columns are out of scope",
                    c.physical_type()
                ),
            ));
        }
        if c.max_rep_level() > 0 {
            if features.len() > 1 {
                return Err(err("data.features", format!("`{name}` is a list column: it must be the only feature")));
            }
            list = Some(list_width(train, name)?);
        }
    }
    Ok(Columns { features, list, target })
}

/// Values per row of the list column `name`, from the footers (checked row by row while reading).
fn list_width(train: &[Part], name: &str) -> Result<i64, DataError> {
    let (mut values, mut rows) = (0i64, 0i64);
    for part in train {
        let Some((i, _)) = leaf(part, name) else { continue };
        let meta = part.reader.metadata();
        for g in 0..meta.num_row_groups() {
            values = values.saturating_add(meta.row_group(g).column(i).num_values().max(0));
        }
        rows += part.rows as i64;
    }
    if rows == 0 || values == 0 || values % rows != 0 {
        return Err(DataError::Shape {
            path: train[0].path.clone(),
            key: "data.features".into(),
            message: format!("list column `{name}` holds {values} values over {rows} rows: ragged or empty lists"),
        });
    }
    Ok(values / rows)
}

/// Rows per split and each file's route. Without `data.val_path`, `data.val_fraction` of the rows (at least one,
/// leaving one) go to validation, chosen by a shuffle seeded by `data.split_seed` alone; each split keeps file
/// order.
fn routes(cfg: &DataConfig, train: &[Part], val: &[Part]) -> Result<(i64, i64, Vec<Route>), DataError> {
    let n: usize = train.iter().map(|p| p.rows).sum();
    let all = |parts: &[Part], split: usize| {
        let mut start = 0i64;
        parts
            .iter()
            .map(|p| {
                let r = Route::All { split, start };
                start += p.rows as i64;
                r
            })
            .collect::<Vec<_>>()
    };
    if !val.is_empty() {
        let m: usize = val.iter().map(|p| p.rows).sum();
        return Ok((n as i64, m as i64, [all(train, 0), all(val, 1)].concat()));
    }
    let fraction = cfg.val_fraction.unwrap_or(0.1);
    if n < 2 {
        return Err(DataError::Shape {
            path: train[0].path.clone(),
            key: "data.val_fraction".into(),
            message: format!("{n} rows cannot be split into train and validation"),
        });
    }
    let n_val = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let is_val = split_mask(n, n_val, cfg.split_seed.unwrap_or(0));
    let (mut t, mut v) = (0i64, 0i64);
    let mut out = Vec::with_capacity(train.len());
    let mut row = 0;
    for p in train {
        let split: Vec<(u8, i64)> = is_val[row..row + p.rows]
            .iter()
            .map(|&b| {
                let slot = if b { &mut v } else { &mut t };
                *slot += 1;
                (u8::from(b), *slot - 1)
            })
            .collect();
        row += p.rows;
        out.push(Route::Mixed { split: std::rc::Rc::new(split) });
    }
    Ok((t, v, out))
}

/// `n_val` of `n` rows marked for validation: the first `n_val` of a Fisher-Yates shuffle keyed by `seed` only.
pub(super) fn split_mask(n: usize, n_val: usize, seed: u64) -> Vec<bool> {
    let mut rng = SplitMix64::keyed(&[seed, 0x0073_706c_6974]); // "split"
    let mut idx: Vec<usize> = (0..n).collect();
    let mut mask = vec![false; n];
    for i in 0..n_val.min(n) {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
        mask[idx[i]] = true;
    }
    mask
}

/// Where a column's values go: one column of `x`, whole rows of `x` (a list column of that width), or `y`.
#[derive(Clone, Copy)]
enum Dest {
    XCol(i64),
    XRows(i64),
    Y,
}

/// One batch of a column's values, widened to what the tensors take.
enum Values {
    F(Vec<f32>),
    I(Vec<i64>),
    S(Vec<ByteArray>),
}

/// The tensors being filled, and what reading found on the way.
struct Fill {
    x: Vec<Tensor>,
    y: Vec<Tensor>,
    notes: Vec<String>,
    /// String labels: provisional id by first appearance; sorted at the end.
    strings: HashMap<Vec<u8>, i64>,
    names: Vec<Vec<u8>>,
    regression: bool,
    /// Feature columns stored as float64 (held as float32), for one note.
    doubles: Vec<String>,
}

impl Fill {
    /// Reads column `name` of every row group of `part` into `dest`.
    fn column(&mut self, part: &Part, name: &str, key: &str, dest: Dest, route: &Route) -> Result<(), DataError> {
        let at = |message: String| DataError::Shape { path: part.path.clone(), key: key.into(), message };
        let Some((i, desc)) = leaf(part, name) else {
            return Err(at(format!(
                "no column `{name}` in this file of {} (the first file of data.path has it)",
                part.key
            )));
        };
        let width = match dest {
            Dest::XRows(w) => w,
            _ => 1,
        };
        if matches!(dest, Dest::XRows(_)) != (desc.max_rep_level() > 0) {
            return Err(at(format!("column `{name}` is a list in one file and not in another")));
        }
        let mut row = 0usize;
        let meta = part.reader.metadata();
        for g in 0..meta.num_row_groups() {
            let rows = meta.row_group(g).num_rows().max(0) as usize;
            let group = part.reader.get_row_group(g).map_err(|e| at(format!("row group {g}: {e}")))?;
            let reader = group.get_column_reader(i).map_err(|e| at(format!("column `{name}`: {e}")))?;
            let chunk = Chunk { desc: &desc, rows, width, first_row: row, name };
            chunk.read(reader, &mut |r, v| self.put(dest, route, r, v)).map_err(at)?;
            row += rows;
        }
        if desc.physical_type() == Physical::DOUBLE
            && !matches!(dest, Dest::Y)
            && !self.doubles.iter().any(|d| d == name)
        {
            self.doubles.push(name.to_string());
        }
        Ok(())
    }

    /// Writes one batch (rows from `row` of the file) to its place in the split tensors.
    fn put(&mut self, dest: Dest, route: &Route, row: usize, v: Values) -> Result<(), String> {
        let float = |t: Tensor| t.to_kind(Kind::Float);
        let t = match (dest, v) {
            (Dest::Y, Values::S(s)) if !self.regression => {
                let ids: Vec<i64> = s.iter().map(|b| self.class_id(b.data())).collect();
                Tensor::from_slice(&ids)
            }
            (Dest::Y, Values::F(_)) if !self.regression => {
                return Err("the labels are floats; classification labels must be integers or strings (or set \
                            data.task = \"regression\")"
                    .into())
            }
            (Dest::Y, Values::I(i)) if !self.regression => Tensor::from_slice(&i),
            (_, Values::F(f)) => Tensor::from_slice(&f),
            (_, Values::I(i)) => float(Tensor::from_slice(&i)),
            (_, Values::S(_)) => return Err("the column holds strings, not numbers".into()),
        };
        let width = if let Dest::XRows(w) = dest { w } else { 1 };
        let n = t.numel() as i64 / width;
        let (targets, col) = match dest {
            Dest::Y => (&self.y, None),
            Dest::XCol(j) => (&self.x, Some(j)),
            Dest::XRows(_) => (&self.x, None),
        };
        let pick = |t: Tensor| col.map_or_else(|| t.shallow_clone(), |j| t.select(1, j));
        let shaped = |t: &Tensor, like: &Tensor| t.reshape([&[t.size()[0]][..], &like.size()[1..]].concat());
        match route {
            Route::All { split, start } => {
                let mut dst = pick(targets[*split].narrow(0, start + row as i64, n));
                dst.f_copy_(&t.reshape(dst.size())).map_err(|e| e.to_string())?;
            }
            Route::Mixed { split } => {
                let rows = t.reshape([n, -1]);
                for s in 0..2u8 {
                    let (pos, slots): (Vec<i64>, Vec<i64>) = (0..n)
                        .filter_map(|k| {
                            split.get(row + k as usize).filter(|(b, _)| *b == s).map(|&(_, slot)| (k, slot))
                        })
                        .unzip();
                    if pos.is_empty() {
                        continue;
                    }
                    let mut dst = pick(targets[s as usize].shallow_clone());
                    let sub = shaped(&rows.index_select(0, &Tensor::from_slice(&pos)), &dst);
                    let _ = dst.f_index_copy_(0, &Tensor::from_slice(&slots), &sub).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    fn class_id(&mut self, name: &[u8]) -> i64 {
        if let Some(&id) = self.strings.get(name) {
            return id;
        }
        let id = self.names.len() as i64;
        self.strings.insert(name.to_vec(), id);
        self.names.push(name.to_vec());
        id
    }

    /// String labels: renumbers the provisional ids so class `i` is the `i`-th name in sorted order.
    fn sort_classes(&mut self) -> Option<Vec<String>> {
        if self.names.is_empty() {
            return None;
        }
        let mut order: Vec<usize> = (0..self.names.len()).collect();
        order.sort_by(|&a, &b| self.names[a].cmp(&self.names[b]));
        let mut lut = vec![0i64; order.len()];
        for (new, &old) in order.iter().enumerate() {
            lut[old] = new as i64;
        }
        let lut = Tensor::from_slice(&lut);
        for y in &mut self.y {
            *y = lut.index_select(0, y);
        }
        Some(order.iter().map(|&i| String::from_utf8_lossy(&self.names[i]).into_owned()).collect())
    }
}

/// One column chunk (one row group of one column) to read.
struct Chunk<'a> {
    desc: &'a ColumnDescPtr,
    rows: usize,
    /// Values per row: 1, or a list column's width.
    width: i64,
    /// The row group's first row within its file, for messages.
    first_row: usize,
    name: &'a str,
}

type Sink<'s> = dyn FnMut(usize, Values) -> Result<(), String> + 's;

impl Chunk<'_> {
    fn read(&self, reader: ColumnReader, sink: &mut Sink<'_>) -> Result<(), String> {
        match reader {
            ColumnReader::BoolColumnReader(r) => {
                self.records(r, sink, |v: &[bool]| Values::I(v.iter().map(|&b| i64::from(b)).collect()))
            }
            ColumnReader::Int32ColumnReader(r) => {
                self.records(r, sink, |v: &[i32]| Values::I(v.iter().map(|&x| i64::from(x)).collect()))
            }
            ColumnReader::Int64ColumnReader(r) => self.records(r, sink, |v: &[i64]| Values::I(v.to_vec())),
            ColumnReader::FloatColumnReader(r) => self.records(r, sink, |v: &[f32]| Values::F(v.to_vec())),
            ColumnReader::DoubleColumnReader(r) => {
                self.records(r, sink, |v: &[f64]| Values::F(v.iter().map(|&x| x as f32).collect()))
            }
            ColumnReader::ByteArrayColumnReader(r) => self.records(r, sink, |v: &[ByteArray]| Values::S(v.to_vec())),
            _ => Err(format!("column `{}` is {} (not numeric)", self.name, self.desc.physical_type())),
        }
    }

    /// Reads the chunk's rows batch by batch: a null (or an empty list) is an error naming the row, as is a list row
    /// whose length is not the width, or a chunk with fewer rows than its footer says.
    fn records<T: DataType>(
        &self,
        mut r: ColumnReaderImpl<T>,
        sink: &mut Sink<'_>,
        conv: impl Fn(&[T::T]) -> Values,
    ) -> Result<(), String> {
        let (max_def, max_rep) = (self.desc.max_def_level(), self.desc.max_rep_level());
        let (mut def, mut rep, mut vals) = (Vec::new(), Vec::new(), Vec::new());
        let name = self.name;
        let mut done = 0;
        while done < self.rows {
            def.clear();
            rep.clear();
            vals.clear();
            let row = self.first_row + done;
            let want = BATCH.min(self.rows - done);
            let defs = (max_def > 0).then_some(&mut def);
            let reps = (max_rep > 0).then_some(&mut rep);
            let (records, values, _) =
                r.read_records(want, defs, reps, &mut vals).map_err(|e| format!("column `{name}`, row {row}: {e}"))?;
            if records == 0 {
                return Err(format!(
                    "column `{name}` ends at row {row} of {} (truncated or damaged file)",
                    self.first_row + self.rows
                ));
            }
            let record_of = |level: usize| rep[..=level].iter().filter(|&&r| r == 0).count().saturating_sub(1);
            if let Some(k) = def.iter().position(|&d| d < max_def) {
                let at = row + if max_rep > 0 { record_of(k) } else { k };
                let what = if max_rep > 0 { "a null or an empty list" } else { "null" };
                return Err(format!("column `{name}` holds {what} at row {at} (0-based); fill or drop the nulls"));
            }
            if max_rep > 0 {
                self.check_lengths(&rep, row)?;
            }
            if values != records * self.width as usize {
                return Err(format!("column `{name}`: {values} values for {records} rows from row {row} (damaged?)"));
            }
            sink(row, conv(&vals))?;
            done += records;
        }
        Ok(())
    }

    /// Every list in a batch (delimited by repetition level 0) holds `width` values.
    fn check_lengths(&self, rep: &[i16], row: usize) -> Result<(), String> {
        let mut starts: Vec<usize> = rep.iter().enumerate().filter(|(_, &r)| r == 0).map(|(k, _)| k).collect();
        starts.push(rep.len());
        for (i, w) in starts.windows(2).enumerate() {
            let len = (w[1] - w[0]) as i64;
            if len != self.width {
                return Err(format!(
                    "list column `{}` is ragged: row {} holds {len} values, not {} like the others",
                    self.name,
                    row + i,
                    self.width
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_file_names() {
        assert!(wildcard("*.parquet", "train-00000-of-00002.parquet"));
        assert!(wildcard("train-*.parquet", "train-1.parquet"));
        assert!(!wildcard("train-*.parquet", "test-1.parquet"));
        assert!(wildcard("part?.parquet", "part1.parquet"));
        assert!(!wildcard("part?.parquet", "part12.parquet"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn the_split_depends_on_its_seed_only_and_has_its_size() {
        let a = split_mask(1000, 100, 7);
        assert_eq!(a.iter().filter(|&&b| b).count(), 100);
        assert_eq!(a, split_mask(1000, 100, 7));
        assert_ne!(a, split_mask(1000, 100, 8));
    }
}
