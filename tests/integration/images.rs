//! `data.source = "images"`: an ImageFolder tree made with the data venv's Pillow (three classes of coloured,
//! noisy shapes at many sizes and aspect ratios, as PNG and JPEG, plus a greyscale, an RGBA, a palette, a 16-bit
//! PNG and an EXIF-rotated JPEG) decoded by spotrun, checked against Pillow's own pipeline, trained on with the
//! CNN, cached, resumed after SIGKILL; bad folders and images exit 2 naming the file and the key; class names are
//! recorded in the run (`classes.json`) and in `model.safetensors` metadata (also for Parquet string labels).
use std::path::{Path, PathBuf};

use crate::common::{data_py, text, Run};

/// `python MAKE ROOT N_TRAIN N_VAL`: `ROOT/{train,val}/{circle,square,triangle}/NNN.{png,jpg}` (sides 18..70,
/// class colour + shape + noise), and in `train/circle` the odd ones: `grey.png` (L), `rgba.png` (alpha 128),
/// `palette.png` (P, 16 colours), `grey16.png` (I;16), `exif6.jpg` (64×32 stored, EXIF orientation 6: 32×64 shown).
pub(crate) const MAKE: &str = r#"
import sys, os, numpy as np
from PIL import Image, ImageDraw
root, n_train, n_val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
classes = {"circle": (220, 40, 40), "square": (40, 200, 60), "triangle": (50, 70, 230)}
def draw(name, w, h):
    img = Image.fromarray(rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    m = min(w, h)
    x0, y0 = (w - m) // 2 + m // 8, (h - m) // 2 + m // 8
    x1, y1 = x0 + 3 * m // 4, y0 + 3 * m // 4
    if name == "circle":
        d.ellipse([x0, y0, x1, y1], fill=classes[name])
    elif name == "square":
        d.rectangle([x0, y0, x1, y1], fill=classes[name])
    else:
        d.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=classes[name])
    a = np.asarray(img).astype(np.int16) + rng.integers(-20, 21, size=(h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
for split, n in [("train", n_train), ("val", n_val)]:
    for name in classes:
        os.makedirs(os.path.join(root, split, name), exist_ok=True)
        for i in range(n):
            img = draw(name, int(rng.integers(18, 70)), int(rng.integers(18, 70)))
            if i % 2 == 0:
                img.save(os.path.join(root, split, name, f"{i:03d}.png"))
            else:
                img.save(os.path.join(root, split, name, f"{i:03d}.jpg"), quality=92)
d = os.path.join(root, "train", "circle")
img = draw("circle", 60, 40)
img.convert("L").save(os.path.join(d, "grey.png"))
a = np.asarray(img.convert("RGBA")).copy(); a[..., 3] = 128
Image.fromarray(a).save(os.path.join(d, "rgba.png"))
img.convert("P", palette=Image.ADAPTIVE, colors=16).save(os.path.join(d, "palette.png"))
Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257 + 100).save(os.path.join(d, "grey16.png"))
ex = Image.new("RGB", (1, 1)).getexif(); ex[0x0112] = 6
draw("circle", 64, 32).save(os.path.join(d, "exif6.jpg"), quality=95, exif=ex)
"#;

/// `python REF ROOT ENTRY C H W`: Pillow's pipeline for every training image, in spotrun's order (classes sorted,
/// files sorted), compared with the entry's `x_train`: `ImageOps.exif_transpose`; 16-bit scaled to 8-bit
/// (`round(v * 255 / 65535)`; Pillow's own `convert` clips I;16 instead); `convert("RGB")` (alpha dropped, grey
/// replicated, palette expanded) or `convert("L")`; torchvision 0.26's `F.resize(img, max(H, W))` on a PIL image
/// (`img.resize(size, Image.BILINEAR)`, no reducing_gap) and `F.center_crop` (offsets `int(round(d / 2.0))`).
/// Prints `{file name or png/jpg: [max abs diff, mean abs diff]}` with the worst PNG and JPEG, and the EXIF image
/// against the reference without the transpose.
const REFERENCE: &str = r#"
import sys, os, json, glob, numpy as np
from PIL import Image, ImageOps
root, entry, C, H, W = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
raw = open(os.path.join(entry, "data.safetensors"), "rb").read()
n = int.from_bytes(raw[:8], "little"); hdr = json.loads(raw[8:8 + n])
e = hdr["x_train"]; a, b = e["data_offsets"]
x = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.uint8).reshape(e["shape"])
classes = sorted(os.listdir(os.path.join(root, "train")))
files = [f for c in classes for f in sorted(glob.glob(os.path.join(root, "train", c, "*")))]
assert x.shape == (len(files), C, H, W), (x.shape, len(files))
def ref(f, transpose=True):
    im = Image.open(f)
    if transpose:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I"):
        im = Image.fromarray(np.round(np.asarray(im).astype(np.float64) * 255 / 65535).astype(np.uint8))
    im = im.convert("RGB" if C == 3 else "L")
    w, h = im.size; s = max(H, W)
    size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    im = im.resize(size, Image.BILINEAR, reducing_gap=None)
    top, left = int(round((size[1] - H) / 2.0)), int(round((size[0] - W) / 2.0))
    a = np.asarray(im.crop((left, top, left + W, top + H)))
    return (a[None] if C == 1 else a.transpose(2, 0, 1)).astype(np.int16)
def diff(i, transpose=True):
    d = np.abs(x[i].astype(np.int16) - ref(files[i], transpose))
    return [int(d.max()), float(d.mean())]
out = {"png": [0, 0.0], "jpg": [0, 0.0]}
for i, f in enumerate(files):
    name = os.path.basename(f)
    if name[0].isdigit():
        k = name.rsplit(".", 1)[1]
        out[k] = [max(out[k][0], diff(i)[0]), max(out[k][1], diff(i)[1])]
    else:
        out[name] = diff(i)
out["exif6.jpg untransposed"] = diff(files.index(os.path.join(root, "train", "circle", "exif6.jpg")), False)
print(json.dumps(out))
"#;

/// Makes the image tree under `dir/images` (once) and returns it.
fn images(dir: &Path, n_train: usize, n_val: usize) -> PathBuf {
    let root = dir.join("images");
    if !root.exists() {
        let (t, v) = (n_train.to_string(), n_val.to_string());
        data_py(MAKE, &[root.as_os_str(), t.as_ref(), v.as_ref()]);
    }
    root
}

/// The `--set`s of a small CNN run on the image tree at `root`, cached under `dir/cache`.
fn cnn_sets(root: &Path, dir: &Path) -> Vec<String> {
    vec![
        "data.source=images".into(),
        format!("data.path=\"{}\"", root.display()),
        format!("data.cache_dir=\"{}\"", dir.join("cache").display()),
        "data.shape=[3, 16, 16]".into(),
        "model.kind=cnn".into(),
        "model.channels=[8, 16]".into(),
        "model.hidden=[32]".into(),
        "train.batch_size=16".into(),
        "train.threads=2".into(),
        "train.epochs=4".into(),
    ]
}

fn train(run: &Path, sets: &[String]) -> String {
    let r = Run::new(["train".to_string(), "--run-dir".into(), run.display().to_string()]);
    text(&sets.iter().fold(r, |r, s| r.set(s)).ok().stderr)
}

/// The `__metadata__` of a safetensors file, parsed from its JSON header.
fn safetensors_metadata(path: &Path) -> serde_json::Value {
    let raw = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&raw[8..8 + n]).unwrap();
    header["__metadata__"].clone()
}

/// The final `val_accuracy` of a run.
fn final_accuracy(run: &Path) -> f64 {
    let m = crate::common::metrics(run);
    m.last().unwrap()["val_accuracy"].as_f64().unwrap()
}

#[test]
fn an_image_folder_trains_above_0_9_records_its_classes_and_the_second_run_uses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let root = images(tmp.path(), 40, 10);
    let sets = cnn_sets(&root, tmp.path());
    let first = tmp.path().join("first");
    let err = train(&first, &sets);
    assert!(err.contains("data: decoded 155 images into"), "{err}");
    assert!(err.contains("0=circle, 1=square, 2=triangle"), "{err}");
    // Colour and shape per class: an easy task; 30 validation images, so 0.9 allows 3 mistakes.
    let acc = final_accuracy(&first);
    assert!(acc >= 0.9, "val_accuracy {acc}");
    let names = serde_json::json!(["circle", "square", "triangle"]);
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("classes.json")).unwrap()).unwrap();
    assert_eq!(recorded, names);
    let meta = safetensors_metadata(&first.join("model.safetensors"));
    let in_weights: serde_json::Value = serde_json::from_str(meta["spotrun.classes"].as_str().unwrap()).unwrap();
    assert_eq!(in_weights, names, "{meta}");

    // Same folder and settings: read from the cache, nothing decoded, same data (fingerprint) and same result.
    let second = tmp.path().join("second");
    let err = train(&second, &sets);
    assert!(err.contains("data: cached in") && !err.contains("decoded"), "{err}");
    assert_eq!(
        std::fs::read(first.join("model.safetensors")).unwrap(),
        std::fs::read(second.join("model.safetensors")).unwrap(),
        "a run on cached tensors trains the same weights"
    );

    // torchvision's Normalize after ToTensor, per batch on the device: trains as well.
    let mut norm = sets.clone();
    norm.extend(["data.mean=[0.3, 0.3, 0.3]".into(), "data.std=[0.25, 0.25, 0.25]".into()]);
    let normalised = tmp.path().join("normalised");
    train(&normalised, &norm);
    let acc = final_accuracy(&normalised);
    assert!(acc >= 0.9, "val_accuracy {acc} with data.mean / data.std");
    assert_ne!(
        std::fs::read(first.join("model.safetensors")).unwrap(),
        std::fs::read(normalised.join("model.safetensors")).unwrap(),
        "data.mean / data.std change what the model sees"
    );
}

#[test]
fn decoded_images_match_pillows_exif_transpose_resize_and_centre_crop() {
    let tmp = tempfile::tempdir().unwrap();
    let root = images(tmp.path(), 6, 2);
    let config = tmp.path().join("i.toml");
    std::fs::write(&config, "[data]\nsource = \"images\"\n[model]\nkind = \"cnn\"\n").unwrap();
    for (c, h, w) in [(3, 16, 16), (1, 12, 20), (3, 24, 10)] {
        let out = Run::new(["prepare", config.to_str().unwrap()])
            .set(&format!("data.path=\"{}\"", root.display()))
            .set(&format!("data.cache_dir=\"{}\"", tmp.path().join("cache").display()))
            .set(&format!("data.shape=[{c}, {h}, {w}]"))
            .ok();
        let entry = text(&out.stdout).trim().to_string();
        let args = [root.display().to_string(), entry, c.to_string(), h.to_string(), w.to_string()];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let d: serde_json::Value = serde_json::from_str(&data_py(REFERENCE, &args)).unwrap();
        let at = |k: &str| (d[k][0].as_i64().unwrap(), d[k][1].as_f64().unwrap());
        // PNG: the same pixels decoded; the triangle filter differs only in rounding (Pillow rounds its horizontal
        // pass to uint8 in fixed point, image-rs keeps f32): at most 2 levels anywhere (1 observed).
        for k in ["png", "grey.png", "rgba.png", "palette.png", "grey16.png"] {
            assert!(at(k).0 <= 2, "[{c}, {h}, {w}] {k}: {d}");
        }
        // JPEG: zune-jpeg vs libjpeg-turbo (IDCT and chroma upsampling) adds a few levels at edges (6 observed);
        // on average under one level.
        for k in ["jpg", "exif6.jpg"] {
            assert!(at(k).0 <= 12 && at(k).1 <= 1.0, "[{c}, {h}, {w}] {k}: {d}");
        }
        // The EXIF rotation is applied: without it the reference is far off (mean 7-8 levels observed).
        assert!(at("exif6.jpg untransposed").1 >= 4.0, "[{c}, {h}, {w}]: {d}");
    }
}

#[test]
fn bad_image_folders_exit_2_naming_the_file_and_the_key_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = images(tmp.path(), 4, 2);
    let cache = tmp.path().join("cache");
    let config = tmp.path().join("i.toml");
    std::fs::write(&config, "[data]\nsource = \"images\"\nshape = [3, 8, 8]\n[model]\nkind = \"cnn\"\n").unwrap();
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        let o = std::process::Command::new("cp").arg("-r").arg(&good).arg(&to).status().unwrap();
        assert!(o.success());
        to
    };
    let truncated = copy("truncated");
    let victim = truncated.join("train/square/003.jpg");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 3]).unwrap();
    let not_png = copy("not_png");
    let fake = not_png.join("val/triangle/000.png");
    std::fs::write(&fake, "this is not a PNG\n").unwrap();
    let no_val = copy("no_val");
    std::fs::remove_dir_all(no_val.join("val")).unwrap();
    let stray = copy("stray");
    std::fs::create_dir(stray.join("val/hexagon")).unwrap();
    std::fs::copy(good.join("val/circle/000.png"), stray.join("val/hexagon/000.png")).unwrap();
    let empty_class = copy("empty_class");
    std::fs::create_dir(empty_class.join("train/star")).unwrap();
    std::fs::write(empty_class.join("train/star/notes.txt"), "no images here").unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_classes = tmp.path().join("no_classes");
    std::fs::create_dir_all(no_classes.join("train")).unwrap();
    let p = |d: &Path| format!("data.path=\"{}\"", d.display());
    let s = |d: &Path| d.display().to_string();
    let cases: Vec<(Vec<String>, String, &str)> = vec![
        (vec![p(&truncated)], s(&victim), "data.path"),
        (vec![p(&not_png)], s(&fake), "data.path"),
        (vec![p(&no_val)], s(&no_val.join("val")), "data.path"),
        (vec![p(&stray)], s(&stray.join("val/hexagon")), "data.path"),
        (vec![p(&empty_class)], s(&empty_class.join("train/star")), "data.path"),
        (vec![p(&empty)], s(&empty.join("train")), "data.path"),
        (vec![p(&no_classes)], s(&no_classes.join("train")), "data.path"),
        (vec![p(&tmp.path().join("missing"))], s(&tmp.path().join("missing")), "data.path"),
        (vec![p(&good), "data.shape=[2, 8, 8]".into()], s(&config), "data.shape"),
        (vec![p(&good), "data.mean=[0.5]".into()], s(&config), "data.mean"),
        (vec![p(&good), "data.std=[0.5, 0.0, 0.5]".into()], s(&config), "data.std"),
        // 23 images of 3 × 65535 × 65535 bytes: refused before decoding, from the count alone.
        (vec![p(&good), "data.shape=[3, 65535, 65535]".into()], s(&good), "data.path"),
    ];
    crate::common::refused_by_prepare_and_train(&config, &cache, tmp.path(), &cases);
    // With data.skip_bad = true the broken files are left out and counted; the rest trains.
    for (dir, file) in [(&truncated, &victim), (&not_png, &fake)] {
        let run = tmp.path().join(format!("skip-{}", dir.file_name().unwrap().to_string_lossy()));
        let r = Run::new(["train", config.to_str().unwrap(), "--run-dir", run.to_str().unwrap()])
            .set(&p(dir))
            .set(&format!("data.cache_dir=\"{}\"", cache.display()))
            .set("data.skip_bad=true")
            .set("train.epochs=1");
        let err = text(&r.ok().stderr);
        let line = err.lines().find(|l| l.contains("skipped 1 image(s)")).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(&file.display().to_string()), "{line}");
        // 4 + 2 per class and split, 5 odd ones in train/circle: 23 images, one of them broken.
        assert!(err.contains("data: decoded 22 images"), "{err}");
    }
}

#[test]
fn an_image_run_killed_after_a_commit_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let root = images(tmp.path(), 40, 10);
    let mut sets = cnn_sets(&root, tmp.path());
    sets.extend(["train.epochs=2".into(), "train.log_every=0".into(), "data.mean=[0.5, 0.4, 0.3]".into()]);
    let base: Vec<&str> = sets.iter().map(String::as_str).collect();
    crate::resume::kill_and_term_resume_exactly(&base);
}

#[test]
fn parquet_string_labels_are_recorded_as_class_names_too() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.parquet");
    data_py(
        r#"
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
rng = np.random.default_rng(1)
y = np.array(["pear", "apple", "fig"])[np.arange(300) % 3]
x = rng.standard_normal((300, 4)).astype(np.float32) + (np.arange(300) % 3)[:, None]
pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "label": y}), sys.argv[1])
"#,
        &[file.as_os_str()],
    );
    let run = tmp.path().join("run");
    let sets = [
        "data.source=parquet".to_string(),
        format!("data.path=\"{}\"", file.display()),
        "data.val_fraction=0.2".into(),
        "model.hidden=[8]".into(),
        "train.epochs=1".into(),
    ];
    train(&run, &sets);
    let names = serde_json::json!(["apple", "fig", "pear"]);
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("classes.json")).unwrap()).unwrap();
    assert_eq!(recorded, names);
    let meta = safetensors_metadata(&run.join("model.safetensors"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(meta["spotrun.classes"].as_str().unwrap()).unwrap(), names);
}
