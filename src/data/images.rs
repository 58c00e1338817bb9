//! `data.source = "images"`: an image folder decoded once into uint8 `[N, C, H, W]` tensors, cached.
//!
//! Owns the layout (torchvision's `ImageFolder`: `data.path/train/<class>/…` and `data.path/val/<class>/…`, class
//! folders in sorted name order from `train/`, `.png` / `.jpg` / `.jpeg` files in sorted path order, searched
//! recursively, other files ignored), the decode of one image ([`decode_image`]: EXIF orientation, the channel
//! rule, torchvision's `Resize(max(H, W))` + `CenterCrop([H, W])`), decoding every image in parallel into a tensor
//! allocated once, and the cache entry (`images-<key>`: `data.safetensors` with the four tensors, and `meta.json`
//! with the class names, written last). The key covers every image's path, size and modification time, the
//! shape, `data.skip_bad` and this module's [`VERSION`]. Decoders are bounded by [`image::Limits`] and a panic
//! inside one is caught and becomes an error naming the file. Imports `config` and its siblings `cache`, `file`
//! and `text` (the progress bar).
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::cache::{self, Key, Scratch};
use super::file::RawSplits;
use super::DataError;
use crate::config::DataConfig;

/// Bumped when the entry's format or the decode rules change.
const VERSION: u32 = 1;
/// The file the tensors are cached in.
const TENSORS: &str = "data.safetensors";
/// Largest image side a decoder accepts, and the most it may allocate for one image.
const MAX_SIDE: u32 = 1 << 14;
const MAX_ALLOC: u64 = 256 << 20;
/// Largest safetensors header read back from a cache entry.
const MAX_HEADER: u64 = 1 << 20;

/// Where a decoded image goes: channels and the crop's height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
}

impl ImageShape {
    /// Bytes of one decoded sample.
    pub fn len(&self) -> usize {
        self.channels as usize * self.height as usize * self.width as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn of(cfg: &DataConfig) -> Result<ImageShape, DataError> {
        match cfg.shape.as_deref() {
            Some(&[c @ (1 | 3), h, w]) if h > 0 && w > 0 && h <= 65_535 && w <= 65_535 => {
                Ok(ImageShape { channels: c as u32, height: h as u32, width: w as u32 })
            }
            other => Err(DataError::Input {
                path: cfg.path.clone().unwrap_or_default(),
                key: "data.shape".into(),
                message: format!("must be [C, H, W] with C = 1 or 3, got {other:?}"),
            }),
        }
    }
}

/// The folder as listed: class names (sorted) and each split's files with their class index.
pub(crate) struct Listing {
    pub classes: Vec<String>,
    pub train: Vec<(PathBuf, i64)>,
    pub val: Vec<(PathBuf, i64)>,
}

/// `meta.json` of an image entry (written last: its presence marks the entry complete).
#[derive(Debug, Serialize, Deserialize)]
struct ImagesMeta {
    classes: Vec<String>,
    shape: [u32; 3],
    train: usize,
    val: usize,
    /// Files skipped with `data.skip_bad = true`, with why.
    skipped: Vec<(PathBuf, String)>,
}

/// A prepared image folder: the entry, and whether this call decoded it.
pub(crate) struct PreparedImages {
    pub dir: PathBuf,
    pub made: bool,
    pub images: usize,
}

impl PreparedImages {
    /// `data: decoded N images into DIR` or `data: cached in DIR`, for the console.
    pub(crate) fn describe(&self) -> String {
        if self.made {
            format!("data: decoded {} images into {}", self.images, self.dir.display())
        } else {
            format!("data: cached in {} ({} images)", self.dir.display(), self.images)
        }
    }
}

/// What [`load`] gives: the tensors, the class names, notes, and the entry.
pub(crate) struct Loaded {
    pub raw: RawSplits,
    pub classes: Vec<String>,
    pub notes: Vec<String>,
    pub prepared: PreparedImages,
}

fn input_err(path: &Path, message: String) -> DataError {
    DataError::Input { path: path.to_path_buf(), key: "data.path".into(), message }
}

const LAYOUT: &str = "data.source = \"images\" reads DATA/train/<class>/*.png|jpg|jpeg and DATA/val/<class>/… \
                      (torchvision's ImageFolder layout)";

/// Lists `data.path`: classes from `train/` (sorted), then every image of both splits.
pub(crate) fn list(cfg: &DataConfig) -> Result<Listing, DataError> {
    let root = cfg.path.clone().unwrap_or_default();
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(input_err(&root, format!("is not a folder; {LAYOUT}"))),
        Err(e) => return Err(input_err(&root, format!("cannot be read ({e}); {LAYOUT}"))),
    }
    let train_dir = root.join("train");
    let classes = class_dirs(&train_dir)?;
    if classes.is_empty() {
        return Err(input_err(&train_dir, format!("has no class folders; {LAYOUT}")));
    }
    let train = split_files(&train_dir, &classes, &classes)?;
    let val_dir = root.join("val");
    let val_classes = class_dirs(&val_dir)?;
    if val_classes.is_empty() {
        return Err(input_err(&val_dir, format!("has no class folders; {LAYOUT}")));
    }
    if let Some(c) = val_classes.iter().find(|c| classes.binary_search(c).is_err()) {
        return Err(input_err(
            &val_dir.join(c),
            format!("class `{c}` is not in train/ (train has: {})", classes.join(", ")),
        ));
    }
    let val = split_files(&val_dir, &val_classes, &classes)?;
    Ok(Listing { classes, train, val })
}

/// The class folders of a split (non-hidden directories), sorted; a missing split folder is an error.
fn class_dirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| input_err(dir, format!("cannot be read ({e}); {LAYOUT}")))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| input_err(dir, format!("cannot be listed: {e}")))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || !path.is_dir() {
            continue;
        }
        let name = name.into_string().map_err(|_| input_err(&path, "class folder names must be UTF-8".into()))?;
        out.push(name);
    }
    out.sort();
    Ok(out)
}

/// Every image of each class folder (sorted), labelled by its index in `all`; a class with none is an error.
fn split_files(dir: &Path, classes: &[String], all: &[String]) -> Result<Vec<(PathBuf, i64)>, DataError> {
    let mut out = Vec::new();
    for name in classes {
        let label = all.binary_search(name).unwrap_or_default() as i64;
        let class_dir = dir.join(name);
        // Image files, recursively; extensions compared case-insensitively, as torchvision does.
        let mut files = super::cache::files_under(&class_dir, &|p| is_image_name(p))
            .map_err(|e| input_err(&class_dir, format!("cannot be listed: {e}")))?;
        if files.is_empty() {
            return Err(input_err(&class_dir, "holds no .png, .jpg or .jpeg files (an empty class)".into()));
        }
        files.sort();
        out.extend(files.into_iter().map(|f| (f, label)));
    }
    Ok(out)
}

fn is_image_name(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
}

/// Bytes the tensors will take (`N × C × H × W` plus int64 labels), from the listing alone, for the memory check
/// before decoding; `None` when the folder cannot be listed (loading then reports why).
pub(crate) fn planned_bytes(cfg: &DataConfig) -> Option<u64> {
    let shape = ImageShape::of(cfg).ok()?;
    let l = list(cfg).ok()?;
    Some((l.train.len() + l.val.len()) as u64 * (shape.len() as u64 + 8))
}

/// The entry's directory for `cfg` and its listing.
fn entry(cfg: &DataConfig, listing: &Listing, shape: ImageShape) -> Result<PathBuf, DataError> {
    let mut key = Key::new("images", VERSION);
    key.part(&[shape.channels, shape.height, shape.width].map(u32::to_le_bytes).concat());
    key.part(&[u8::from(cfg.skip_bad.unwrap_or(false))]);
    for (split, files) in [("train", &listing.train), ("val", &listing.val)] {
        key.part(split.as_bytes());
        for (f, label) in files {
            key.file(f, "data.path")?;
            key.part(&label.to_le_bytes());
        }
    }
    Ok(cache::root(cfg).join(key.finish("images")))
}

/// Where `cfg`'s entry is (or would be), without decoding.
pub(crate) fn entry_dir(cfg: &DataConfig) -> Result<PathBuf, DataError> {
    entry(cfg, &list(cfg)?, ImageShape::of(cfg)?)
}

/// Decodes `cfg`'s images into the cache unless the entry is there (`spotrun prepare`).
pub(crate) fn prepare(cfg: &DataConfig, progress: bool) -> Result<PreparedImages, DataError> {
    load(cfg, progress).map(|l| l.prepared)
}

/// The tensors of `cfg`'s image folder: read from the cache entry, or decoded (then cached).
pub(crate) fn load(cfg: &DataConfig, progress: bool) -> Result<Loaded, DataError> {
    let shape = ImageShape::of(cfg)?;
    let listing = list(cfg)?;
    let dir = entry(cfg, &listing, shape)?;
    if cache::complete(&dir) {
        let (raw, meta) = read_entry(&dir)?;
        let images = meta.train + meta.val;
        let notes = skipped_note(&meta.skipped);
        return Ok(Loaded { raw, classes: meta.classes, notes, prepared: PreparedImages { dir, made: false, images } });
    }
    let root = cfg.path.clone().unwrap_or_default();
    let total = (listing.train.len() + listing.val.len()) as u64;
    let bar = super::text::bar(progress, total, "decoding images");
    let skip = cfg.skip_bad.unwrap_or(false);
    let (x_train, y_train, mut skipped) = decode_split(&listing.train, shape, &root, skip, &bar)?;
    let (x_val, y_val, more) = decode_split(&listing.val, shape, &root, skip, &bar)?;
    bar.finish_and_clear();
    skipped.extend(more);
    let meta = ImagesMeta {
        classes: listing.classes,
        shape: [shape.channels, shape.height, shape.width],
        train: y_train.size()[0] as usize,
        val: y_val.size()[0] as usize,
        skipped,
    };
    check_nonempty(&root, &meta)?;
    let raw = RawSplits { x_train, y_train, x_val, y_val };
    write_entry(cfg, &dir, &raw, &meta)?;
    let notes = skipped_note(&meta.skipped);
    let images = meta.train + meta.val;
    Ok(Loaded { raw, classes: meta.classes, notes, prepared: PreparedImages { dir, made: true, images } })
}

/// After skipping, each split must still hold an image.
fn check_nonempty(root: &Path, meta: &ImagesMeta) -> Result<(), DataError> {
    for (n, split) in [(meta.train, "train"), (meta.val, "val")] {
        if n == 0 {
            return Err(input_err(
                &root.join(split),
                format!("no image decoded ({} skipped with data.skip_bad = true)", meta.skipped.len()),
            ));
        }
    }
    Ok(())
}

fn skipped_note(skipped: &[(PathBuf, String)]) -> Vec<String> {
    let Some((first, why)) = skipped.first() else { return Vec::new() };
    vec![format!(
        "data.skip_bad = true: skipped {} image(s) that do not decode (first: {}: {why})",
        skipped.len(),
        first.display()
    )]
}

/// One split decoded in parallel into a uint8 tensor allocated once (`[N, C, H, W]`), with its labels. A file
/// that does not decode is an error naming it, or (`skip`) left out and listed.
type Split = (Tensor, Tensor, Vec<(PathBuf, String)>);

fn decode_split(
    files: &[(PathBuf, i64)],
    shape: ImageShape,
    root: &Path,
    skip: bool,
    bar: &indicatif::ProgressBar,
) -> Result<Split, DataError> {
    let n = files.len() as i64;
    let dims = [n, shape.channels as i64, shape.height as i64, shape.width as i64];
    let per = shape.len();
    let mut failures: Vec<Option<String>> = Vec::new();
    let x = crate::ffi::cpu_tensor_filled(&dims, Kind::Uint8, |bytes| {
        failures = bytes
            .par_chunks_mut(per.max(1))
            .zip(files.par_iter())
            .map(|(out, (path, _))| {
                let r = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"));
                let r = r.and_then(|b| decode_into(&b, shape, out));
                bar.inc(1);
                r.err()
            })
            .collect();
        compact(bytes, per, &failures);
        Ok::<(), DataError>(())
    })
    .map_err(|e| input_err(root, format!("cannot hold {dims:?} uint8 in memory: {e}")))??;
    let bad: Vec<(PathBuf, String)> =
        files.iter().zip(&failures).filter_map(|((p, _), f)| f.clone().map(|why| (p.clone(), why))).collect();
    if let (Some((path, why)), false) = (bad.first(), skip) {
        return Err(DataError::Input {
            path: path.clone(),
            key: "data.path".into(),
            message: format!(
                "is not a readable image ({why}); data.path = {}; set data.skip_bad = true to skip such files",
                root.display()
            ),
        });
    }
    let labels: Vec<i64> = files.iter().zip(&failures).filter(|(_, f)| f.is_none()).map(|((_, l), _)| *l).collect();
    let kept = labels.len() as i64;
    let x = if kept == n { x } else { x.narrow(0, 0, kept) };
    Ok((x, Tensor::from_slice(&labels), bad))
}

/// Moves the samples that decoded to the front, in order (the failed ones' slots are overwritten).
fn compact(bytes: &mut [u8], per: usize, failures: &[Option<String>]) {
    let mut to = 0;
    for (i, f) in failures.iter().enumerate() {
        if f.is_none() {
            if to != i {
                bytes.copy_within(i * per..(i + 1) * per, to * per);
            }
            to += 1;
        }
    }
}

/// Decodes one PNG or JPEG file's bytes to `shape` as uint8 CHW (what the dataset holds for it): EXIF orientation
/// applied; the channel rule (Pillow's `convert("RGB")`: grey replicated, palette expanded, alpha dropped; or
/// ITU-R 601-2 luma for one channel; 16-bit scaled to 8 bits first); the shorter side resized to `max(H, W)` with a
/// triangle (bilinear, antialiased) filter and the result centre-cropped to `H × W`, as torchvision's `Resize` +
/// `CenterCrop` on a PIL image. The decoders are bounded ([`image::Limits`]: sides up to 16384, 256 MiB); a panic
/// inside one is caught and returned as an error.
pub fn decode_image(bytes: &[u8], shape: ImageShape) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; shape.len()];
    decode_into(bytes, shape, &mut out).map(|_| out)
}

/// [`decode_caught`] with a decoder's panic caught; the error is one line (decoders' messages may hold newlines).
fn decode_into(bytes: &[u8], shape: ImageShape, out: &mut [u8]) -> Result<(), String> {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_caught(bytes, shape, out)));
    let one_line = |e: String| e.split_whitespace().collect::<Vec<_>>().join(" ");
    caught.map(|r| r.map_err(one_line)).unwrap_or_else(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(one_line(format!("the image decoder panicked: {text}")))
    })
}

fn decode_caught(bytes: &[u8], shape: ImageShape, out: &mut [u8]) -> Result<(), String> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return Err("not a PNG or JPEG file".into());
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let orientation =
        image::ImageDecoder::orientation(&mut decoder).unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    let (w, h) = (img.width(), img.height());
    let (rw, rh) = resized_size(w, h, shape);
    let (top, left) = (half_even(rh - shape.height), half_even(rw - shape.width));
    let rgb = img.into_rgb8();
    if shape.channels == 3 {
        let resized = image::imageops::resize(&rgb, rw, rh, FilterType::Triangle);
        write_chw(resized.as_raw(), 3, rw, (top, left), shape, out);
    } else {
        let grey = luma(&rgb);
        let resized = image::imageops::resize(&grey, rw, rh, FilterType::Triangle);
        write_chw(resized.as_raw(), 1, rw, (top, left), shape, out);
    }
    Ok(())
}

/// ITU-R 601-2 luma, as PIL's `convert("L")`: `(R·19595 + G·38470 + B·7471 + 0x8000) >> 16`. A grey image
/// (replicated into RGB) comes back unchanged, since the weights sum to 65536.
fn luma(rgb: &RgbImage) -> image::GrayImage {
    let (w, h) = rgb.dimensions();
    let px: Vec<u8> = rgb
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
        .collect();
    image::GrayImage::from_raw(w, h, px).unwrap_or_default()
}

/// Copies the `H × W` window at `(top, left)` of an interleaved (HWC) image `width` pixels wide into CHW `out`.
fn write_chw(src: &[u8], c: usize, width: u32, (top, left): (u32, u32), shape: ImageShape, out: &mut [u8]) {
    let (h, w, width) = (shape.height as usize, shape.width as usize, width as usize);
    for ch in 0..c {
        for y in 0..h {
            let row = ((top as usize + y) * width + left as usize) * c + ch;
            let dst = &mut out[(ch * h + y) * w..(ch * h + y + 1) * w];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = src[row + x * c];
            }
        }
    }
}

/// torchvision's `Resize(s)` with `s = max(H, W)` (an int: the shorter side becomes `s`, the longer
/// `int(s * long / short)`), so the `H × W` crop always fits.
fn resized_size(w: u32, h: u32, shape: ImageShape) -> (u32, u32) {
    let s = shape.height.max(shape.width);
    let scale = |long: u32, short: u32| ((s as f64 * long as f64 / short as f64) as u32).max(s);
    if w <= h {
        (s, scale(h, w))
    } else {
        (scale(w, h), s)
    }
}

/// `int(round(d / 2.0))` in Python (half to even), as torchvision's `center_crop` places the crop.
fn half_even(d: u32) -> u32 {
    let q = d / 2;
    if d % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Writes the entry: the four tensors as one safetensors file, then `meta.json`; renames it into place.
fn write_entry(cfg: &DataConfig, dir: &Path, raw: &RawSplits, meta: &ImagesMeta) -> Result<(), DataError> {
    let root = cache::root(cfg);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let scratch = Scratch::new(&root, &name)?;
    let path = scratch.dir.join(TENSORS);
    let tensors = [("x_train", &raw.x_train), ("y_train", &raw.y_train), ("x_val", &raw.x_val), ("y_val", &raw.y_val)];
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, t) in &tensors {
        let dtype = if t.kind() == Kind::Uint8 { "U8" } else { "I64" };
        let len = t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": dtype, "shape": t.size(), "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        f.write_all(&(text.len() as u64).to_le_bytes())?;
        f.write_all(&text)?;
        for (_, t) in &tensors {
            let host = t.contiguous();
            f.write_all(crate::ffi::host_bytes(&host).unwrap_or_default())?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    write().map_err(|e| cache::cache_err(&path, e))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| cache::cache_err(dir, std::io::Error::other(e)))?;
    scratch.write(cache::DONE, &json)?;
    scratch.publish(dir)
}

/// Reads an entry back: each tensor read straight from the file into its own storage (the data is in memory
/// once); anything inconsistent is an error naming the entry.
fn read_entry(dir: &Path) -> Result<(RawSplits, ImagesMeta), DataError> {
    let bad = |path: &Path, message: String| DataError::Format {
        path: path.to_path_buf(),
        message: format!("damaged data-cache entry ({message}); delete {} and run again", dir.display()),
    };
    let meta_path = dir.join(cache::DONE);
    let bytes = std::fs::read(&meta_path).map_err(|source| DataError::Read { path: meta_path.clone(), source })?;
    let meta: ImagesMeta = serde_json::from_slice(&bytes).map_err(|e| bad(&meta_path, e.to_string()))?;
    let path = dir.join(TENSORS);
    let mut f = std::fs::File::open(&path).map_err(|source| DataError::Read { path: path.clone(), source })?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| bad(&path, e.to_string()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n + 8 > file_len {
        return Err(bad(&path, format!("header length {n}")));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text).map_err(|e| bad(&path, e.to_string()))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| bad(&path, e.to_string()))?;
    let mut read = |name: &str, kind: Kind| -> Result<Tensor, DataError> {
        let e = header.get(name).ok_or_else(|| bad(&path, format!("no tensor `{name}`")))?;
        let shape: Vec<i64> = serde_json::from_value(e["shape"].clone()).map_err(|e| bad(&path, e.to_string()))?;
        let offsets: [u64; 2] =
            serde_json::from_value(e["data_offsets"].clone()).map_err(|e| bad(&path, e.to_string()))?;
        let want = shape.iter().map(|&d| d.max(0) as u64).product::<u64>() * kind.elt_size_in_bytes() as u64;
        if offsets[1].checked_sub(offsets[0]) != Some(want) || 8 + n + offsets[1] > file_len {
            return Err(bad(&path, format!("tensor `{name}` does not fit the file")));
        }
        f.seek(SeekFrom::Start(8 + n + offsets[0])).map_err(|e| bad(&path, e.to_string()))?;
        crate::ffi::cpu_tensor_filled(&shape, kind, |b| f.read_exact(b))
            .map_err(|e| bad(&path, e.to_string()))?
            .map_err(|e| bad(&path, e.to_string()))
    };
    let raw = RawSplits {
        x_train: read("x_train", Kind::Uint8)?,
        y_train: read("y_train", Kind::Int64)?,
        x_val: read("x_val", Kind::Uint8)?,
        y_val: read("y_val", Kind::Int64)?,
    };
    Ok((raw, meta))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SQ: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };

    /// torchvision 0.26 `F.resize(img, 32)` then `F.center_crop(img, [32, 32])` on PIL images of these sizes
    /// (width, height) give these resized sizes and crop offsets (top, left).
    #[test]
    fn resize_and_crop_follow_torchvision() {
        assert_eq!(resized_size(64, 48, SQ), (42, 32)); // int(32 * 64 / 48) = 42
        assert_eq!(resized_size(48, 64, SQ), (32, 42));
        assert_eq!(resized_size(100, 100, SQ), (32, 32));
        assert_eq!(resized_size(10, 7, SQ), (45, 32)); // int(45.71)
        assert_eq!(resized_size(33, 32, SQ), (33, 32));
        let wide = ImageShape { channels: 3, height: 16, width: 40 };
        assert_eq!(resized_size(50, 50, wide), (40, 40), "shorter side to max(H, W)");
        // round(d / 2) in Python: half to even
        assert_eq!([0, 1, 2, 3, 4, 5, 10, 11].map(half_even), [0, 0, 1, 2, 2, 2, 5, 6]);
    }

    #[test]
    fn compact_keeps_order_of_the_good_samples() {
        let mut b = vec![1, 1, 2, 2, 3, 3, 4, 4];
        compact(&mut b, 2, &[Some("x".into()), None, Some("y".into()), None]);
        assert_eq!(&b[..4], &[2, 2, 4, 4]);
    }

    #[test]
    fn luma_is_pils_and_leaves_grey_alone() {
        let img = RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 77, 77, 77]).unwrap();
        // PIL: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0)) is 76 for red, 150 for green
        assert_eq!(luma(&img).as_raw(), &[76, 150, 77]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_image(b"not an image at all", SQ).is_err());
        assert!(decode_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", SQ).is_err());
        assert!(decode_image(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], SQ).is_err());
    }
}
