//! Every data source in a sweep: a fused group trains on NumPy data, and a text sweep tokenizes once, into the data
//! cache on the sweep's volume, for all its runs.
use std::path::Path;

use crate::common::{data_py, text, Run};

fn sweep(file: &Path, vol: &Path) -> Run {
    Run::new(["sweep".as_ref(), file.as_os_str(), "--volume".as_ref(), vol.as_os_str(), "--quiet".as_ref()])
}

fn runs(root: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(root.join("runs")).unwrap().flatten().map(|e| e.path()).collect()
}

#[test]
fn a_fused_sweep_trains_on_npz_data_and_a_text_sweep_tokenizes_once_on_its_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    data_py(
        "import sys, numpy as np\nr = np.random.default_rng(0)\nx = r.standard_normal((400, 8)).astype(np.float32)\n\
         y = (x[:, 0] > 0).astype(np.int64)\nnp.savez(sys.argv[1], x_train=x[:300], y_train=y[:300], x_val=x[300:], \
         y_val=y[300:])\n",
        &[d.join("d.npz").as_os_str()],
    );
    let npy = d.join("npy.toml");
    std::fs::write(
        &npy,
        format!(
            "name = \"npy\"\n[base]\ndata = {{ source = \"npy\", path = \"{}\" }}\nmodel = {{ inputs = 8, classes = 2, \
             hidden = [16] }}\ntrain = {{ epochs = 2, batch_size = 50, threads = 1, device = \"cpu\" }}\n\
             [parameters]\n\"optim.lr\" = [0.01, 0.03]\n",
            d.join("d.npz").display()
        ),
    )
    .unwrap();
    let vol = d.join("vol");
    let dry = text(&sweep(&npy, &vol).arg("--dry-run").ok().stdout);
    assert!(dry.contains("fused"), "the two runs train as one fused group: {dry}");
    sweep(&npy, &vol).arg("--workers").arg("1").ok();
    for r in runs(&vol.join("npy")) {
        assert!(r.join("done.json").exists() && r.join("model.safetensors").exists(), "{}", r.display());
    }

    let corpus = d.join("corpus.txt");
    std::fs::write(&corpus, "the quick brown fox jumps over the lazy dog\n".repeat(400)).unwrap();
    let txt = d.join("txt.toml");
    std::fs::write(
        &txt,
        format!(
            "name = \"txt\"\nfuse = \"off\"\n[base]\ndata = {{ source = \"text\", tokenizer = \"chars\", path = \"{}\" }}\n\
             model = {{ kind = \"gpt\", n_layer = 1, n_head = 2, n_embd = 16, block_size = 16 }}\n\
             train = {{ epochs = 1, batch_size = 8, steps_per_epoch = 5, threads = 1, device = \"cpu\" }}\n\
             [parameters]\n\"optim.lr\" = [0.001, 0.003]\n",
            corpus.display()
        ),
    )
    .unwrap();
    sweep(&txt, &vol).arg("--workers").arg("2").env("XDG_CACHE_HOME", d.join("home-cache").to_str().unwrap()).ok();
    for r in runs(&vol.join("txt")) {
        assert!(r.join("done.json").exists(), "{}", r.display());
    }
    let entries: Vec<_> = std::fs::read_dir(vol.join("txt/data")).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "one tokenized entry on the volume for both runs: {entries:?}");
    assert!(!d.join("home-cache/spotrun/data").exists(), "nothing in the user's cache");
}
